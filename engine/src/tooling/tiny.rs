//! Small random models of the full architecture, written in Hugging Face layout: every mechanism
//! active (several MoE groups, a non-zero correction bias, an indexer top-k below typical prompt
//! lengths, YaRN), sized by a [`TinySpec`].

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

use crate::random::SplitMix;

/// Sizes of a generated model.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub moe_intermediate_size: usize,
    pub num_layers: usize,
    pub first_k_dense: usize,
    pub num_heads: usize,
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub n_routed_experts: usize,
    pub experts_per_token: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub index_n_heads: usize,
    pub index_head_dim: usize,
    pub index_topk: usize,
    pub max_position_embeddings: usize,
}

impl TinySpec {
    /// A model that runs in milliseconds; the vocabulary covers the V3.2 tokenizer's ids.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            moe_intermediate_size: 32,
            num_layers: 3,
            first_k_dense: 1,
            num_heads: 4,
            q_lora_rank: 32,
            kv_lora_rank: 32,
            qk_nope_head_dim: 16,
            qk_rope_head_dim: 8,
            v_head_dim: 16,
            n_routed_experts: 8,
            experts_per_token: 2,
            n_group: 4,
            topk_group: 2,
            index_n_heads: 4,
            index_head_dim: 32,
            index_topk: 16,
            max_position_embeddings: 8192,
        }
    }

    /// A model big enough that its weights leave the CPU caches (about 400 MB in f32), for the
    /// decode-bandwidth and long-context benchmarks; DeepSeek-V3.2's attention shapes
    /// (kv_lora 512, rope 64, nope 128, index head 128, index_topk 2048) at fewer heads and layers.
    pub fn bench() -> Self {
        Self {
            vocab_size: 32_000,
            hidden_size: 1024,
            intermediate_size: 2816,
            moe_intermediate_size: 512,
            num_layers: 4,
            first_k_dense: 1,
            num_heads: 16,
            q_lora_rank: 384,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            n_routed_experts: 16,
            experts_per_token: 2,
            n_group: 4,
            topk_group: 2,
            index_n_heads: 8,
            index_head_dim: 128,
            index_topk: 2048,
            max_position_embeddings: 65_536 + 1024,
        }
    }

    /// DeepSeek-V3.2's shapes (vocabulary 129,280, hidden 7168, 128 heads, latent 512 + rope
    /// 64, indexer 64 x 128 with top-2048, 3 dense layers then MoE layers of 256 experts of
    /// 2048 with 8 groups, top-4 groups, top-8 experts) at `dense + moe` layers.
    pub fn v32(dense: usize, moe: usize, experts: usize) -> Self {
        Self {
            vocab_size: 129_280,
            hidden_size: 7168,
            intermediate_size: 18_432,
            moe_intermediate_size: 2048,
            num_layers: dense + moe,
            first_k_dense: dense,
            num_heads: 128,
            q_lora_rank: 1536,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            n_routed_experts: experts,
            experts_per_token: 8,
            n_group: 8,
            topk_group: 4,
            index_n_heads: 64,
            index_head_dim: 128,
            index_topk: 2048,
            max_position_embeddings: 163_840,
        }
    }

    /// The largest V3.2-shaped model whose weights (matrices at `weight_bytes` per value, the
    /// embedding table and norms in f32) take at most `budget` bytes: V3.2's three dense layers
    /// and as many 256-expert MoE layers as fit (V3.2 has 58), halving the experts (down to 16)
    /// only when not even one such layer fits. `None` when not even the smallest fits.
    pub fn v32_within(budget: usize, weight_bytes: usize) -> Option<Self> {
        let mut experts = 256;
        while experts >= 16 {
            let fits = |moe| Self::v32(3, moe, experts).device_bytes(weight_bytes) <= budget;
            if fits(1) {
                // Layers cost the same each: grow until the next one would not fit.
                let moe = (1..58).take_while(|&m| fits(m + 1)).last().unwrap_or(0) + 1;
                return Some(Self::v32(3, moe, experts));
            }
            experts /= 2;
        }
        None
    }

    /// Bytes of every weight on a device that keeps matrices at `weight_bytes` per value and
    /// vectors and the embedding table (gathered by row) in f32.
    pub fn device_bytes(&self, weight_bytes: usize) -> usize {
        self.tensors()
            .iter()
            .map(|(name, shape, _)| {
                let n: usize = shape.iter().product();
                if shape.len() == 1 || name.contains("embed_tokens") {
                    4 * n
                } else {
                    weight_bytes * n
                }
            })
            .sum()
    }

    /// Bytes of one sequence's KV cache at `context` tokens (f32 latent, rope key and indexer
    /// key per layer).
    pub fn kv_bytes(&self, context: usize) -> usize {
        4 * context
            * self.num_layers
            * (self.kv_lora_rank + self.qk_rope_head_dim + self.index_head_dim)
    }

    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["DeepseekV32ForCausalLM"],
            "model_type": "deepseek_v32",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hidden_layers": self.num_layers,
            "first_k_dense_replace": self.first_k_dense,
            "moe_layer_freq": 1,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_heads,
            "q_lora_rank": self.q_lora_rank,
            "kv_lora_rank": self.kv_lora_rank,
            "qk_nope_head_dim": self.qk_nope_head_dim,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "v_head_dim": self.v_head_dim,
            "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": 1,
            "num_experts_per_tok": self.experts_per_token,
            "n_group": self.n_group,
            "topk_group": self.topk_group,
            "routed_scaling_factor": 2.5,
            "scoring_func": "sigmoid",
            "topk_method": "noaux_tc",
            "norm_topk_prob": true,
            "index_n_heads": self.index_n_heads,
            "index_head_dim": self.index_head_dim,
            "index_topk": self.index_topk,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_scaling": {
                "type": "yarn", "factor": 4.0, "original_max_position_embeddings": self.max_position_embeddings / 4,
                "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0
            },
            "tie_word_embeddings": false,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "torch_dtype": "float32",
        })
    }

    /// Every tensor name and shape of the checkpoint, in Hugging Face layout.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Init)> {
        let (h, heads) = (self.hidden_size, self.num_heads);
        let qk = self.qk_nope_head_dim + self.qk_rope_head_dim;
        let mut t = vec![
            (
                "model.embed_tokens.weight".to_owned(),
                vec![self.vocab_size, h],
                Init::Normal(1.0),
            ),
            ("model.norm.weight".to_owned(), vec![h], Init::Norm),
            (
                "lm_head.weight".to_owned(),
                vec![self.vocab_size, h],
                Init::Linear,
            ),
        ];
        let mut add = |name: String, shape: Vec<usize>, init: Init| t.push((name, shape, init));
        let mlp = |add: &mut dyn FnMut(String, Vec<usize>, Init), p: &str, inter: usize| {
            add(
                format!("{p}.gate_proj.weight"),
                vec![inter, h],
                Init::Linear,
            );
            add(format!("{p}.up_proj.weight"), vec![inter, h], Init::Linear);
            add(
                format!("{p}.down_proj.weight"),
                vec![h, inter],
                Init::Linear,
            );
        };
        for i in 0..self.num_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            add(format!("{p}.input_layernorm.weight"), vec![h], Init::Norm);
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                Init::Norm,
            );
            add(
                format!("{a}.q_a_proj.weight"),
                vec![self.q_lora_rank, h],
                Init::Linear,
            );
            add(
                format!("{a}.q_a_layernorm.weight"),
                vec![self.q_lora_rank],
                Init::Norm,
            );
            add(
                format!("{a}.q_b_proj.weight"),
                vec![heads * qk, self.q_lora_rank],
                Init::Linear,
            );
            add(
                format!("{a}.kv_a_proj_with_mqa.weight"),
                vec![self.kv_lora_rank + self.qk_rope_head_dim, h],
                Init::Linear,
            );
            add(
                format!("{a}.kv_a_layernorm.weight"),
                vec![self.kv_lora_rank],
                Init::Norm,
            );
            add(
                format!("{a}.kv_b_proj.weight"),
                vec![
                    heads * (self.qk_nope_head_dim + self.v_head_dim),
                    self.kv_lora_rank,
                ],
                Init::Linear,
            );
            add(
                format!("{a}.o_proj.weight"),
                vec![h, heads * self.v_head_dim],
                Init::Linear,
            );
            add(
                format!("{a}.indexer.wq_b.weight"),
                vec![self.index_n_heads * self.index_head_dim, self.q_lora_rank],
                Init::Linear,
            );
            add(
                format!("{a}.indexer.wk.weight"),
                vec![self.index_head_dim, h],
                Init::Linear,
            );
            add(
                format!("{a}.indexer.k_norm.weight"),
                vec![self.index_head_dim],
                Init::Norm,
            );
            add(
                format!("{a}.indexer.k_norm.bias"),
                vec![self.index_head_dim],
                Init::Normal(0.1),
            );
            add(
                format!("{a}.indexer.weights_proj.weight"),
                vec![self.index_n_heads, h],
                Init::Linear,
            );
            if i < self.first_k_dense {
                mlp(&mut add, &format!("{p}.mlp"), self.intermediate_size);
            } else {
                add(
                    format!("{p}.mlp.gate.weight"),
                    vec![self.n_routed_experts, h],
                    Init::Linear,
                );
                add(
                    format!("{p}.mlp.gate.e_score_correction_bias"),
                    vec![self.n_routed_experts],
                    Init::Normal(0.5),
                );
                for e in 0..self.n_routed_experts {
                    mlp(
                        &mut add,
                        &format!("{p}.mlp.experts.{e}"),
                        self.moe_intermediate_size,
                    );
                }
                mlp(
                    &mut add,
                    &format!("{p}.mlp.shared_experts"),
                    self.moe_intermediate_size,
                );
            }
        }
        t
    }
}

/// How a generated tensor is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with this standard deviation.
    Normal(f32),
    /// Normal scaled by `1/sqrt(fan_in)`, so activations stay O(1).
    Linear,
    /// Around 1 (norm weights).
    Norm,
}

fn fill(shape: &[usize], init: Init, rng: &mut SplitMix) -> Vec<f32> {
    let n: usize = shape.iter().product();
    match init {
        Init::Normal(std) => (0..n).map(|_| rng.normal() * std).collect(),
        Init::Linear => {
            let scale = 1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt();
            (0..n).map(|_| rng.normal() * scale).collect()
        }
        Init::Norm => (0..n).map(|_| 1.0 + 0.1 * rng.normal()).collect(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TinyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("writing safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
}

/// Writes `config.json` and `model.safetensors` (f32) for `spec` into `dir`.
pub fn write_model(dir: &Path, spec: &TinySpec, seed: u64) -> Result<(), TinyError> {
    write_model_as(dir, spec, seed, Dtype::F32)
}

/// [`write_model`] with the tensors stored as `dtype` (`F32` or `BF16`): a bf16 checkpoint
/// holds exactly the values a bf16 backend computes with, so f32 and bf16 backends can be
/// compared on the same weights.
pub fn write_model_as(
    dir: &Path,
    spec: &TinySpec,
    seed: u64,
    dtype: Dtype,
) -> Result<(), TinyError> {
    assert!(
        matches!(dtype, Dtype::F32 | Dtype::BF16),
        "tiny models are f32 or bf16"
    );
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&spec.config_json()).expect("JSON"),
    )?;
    let mut rng = SplitMix::new(seed);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = spec
        .tensors()
        .into_iter()
        .map(|(name, shape, init)| {
            let values = fill(&shape, init, &mut rng);
            let bytes = if dtype == Dtype::BF16 {
                values
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect()
            } else {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            (name, shape, bytes)
        })
        .collect();
    let views: BTreeMap<String, TensorView<'_>> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(dtype, shape.clone(), bytes).expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_owned(),
        "pt".to_owned(),
    )]));
    safetensors::serialize_to_file(views, metadata, &dir.join("model.safetensors"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sized_model_fills_its_budget_with_v32_layers() {
        let gib = 1usize << 30;
        // An H200's worth: three dense layers and five 256-expert layers in bf16.
        let spec = TinySpec::v32_within(120 * gib, 2).expect("fits");
        assert_eq!(
            (spec.first_k_dense, spec.num_layers, spec.n_routed_experts),
            (3, 8, 256)
        );
        assert!(spec.device_bytes(2) <= 120 * gib);
        let one_more = TinySpec::v32(3, spec.num_layers - 2, 256);
        assert!(one_more.device_bytes(2) > 120 * gib);
        // f32 weights take twice the room: fewer layers.
        let f32_spec = TinySpec::v32_within(120 * gib, 4).expect("fits");
        assert!(f32_spec.num_layers < spec.num_layers);
        // A small GPU gets fewer experts rather than nothing.
        let small = TinySpec::v32_within(24 * gib, 2).expect("fits");
        assert!(small.n_routed_experts < 256 && small.n_routed_experts >= 16);
        assert!(small.device_bytes(2) <= 24 * gib);
        assert!(TinySpec::v32_within(gib, 2).is_none());
    }

    #[test]
    fn a_bf16_checkpoint_holds_the_rounded_values() {
        let dir = std::env::temp_dir().join(format!("dsgw-tiny-bf16-{}", std::process::id()));
        let spec = TinySpec::tiny(300);
        write_model(&dir.join("f32"), &spec, 4).expect("write");
        write_model_as(&dir.join("bf16"), &spec, 4, Dtype::BF16).expect("write");
        let f = crate::checkpoint::Checkpoint::open(&dir.join("f32")).expect("open");
        let b = crate::checkpoint::Checkpoint::open(&dir.join("bf16")).expect("open");
        let name = "model.layers.0.self_attn.q_a_proj.weight";
        let shape = [spec.q_lora_rank, spec.hidden_size];
        let exact = f.load(name, &shape).expect("load").data;
        let rounded = b.load(name, &shape).expect("load").data;
        for (x, y) in exact.iter().zip(&rounded) {
            assert_eq!(*y, half::bf16::from_f32(*x).to_f32());
        }
        assert_ne!(exact, rounded);
        std::fs::remove_dir_all(&dir).ok();
    }
}
