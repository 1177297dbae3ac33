//! Building a model's weights on a backend: from a checkpoint, every name and shape checked
//! ([`Model::load`]), or drawn on the backend itself for a random model too large to write out
//! ([`Model::synthesize`], for device benchmarks). One assembly walks the architecture for both.

use super::{Attention, Ffn, Indexer, Layer, Mlp, Model, Moe, QProj};
use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::ModelConfig;
use crate::rope::RopeTables;

/// Where weights come from. Names are Hugging Face's; shapes are `(rows, cols)` as stored.
trait Source<B: Backend> {
    fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<B::Weight, CheckpointError>;
    /// f32 values the model reads directly: norm weights and biases, the embedding table.
    fn vector(&self, name: &str, shape: &[usize]) -> Result<B::Buf, CheckpointError>;
    /// The MoE gate's correction bias (host side; zeros when a checkpoint has none).
    fn correction_bias(&self, name: &str, experts: usize) -> Result<Vec<f32>, CheckpointError>;
    /// MLA's absorbed up-projections from `kv_b_proj (heads * (nope + v), r)`: `W_UK (heads,
    /// nope, r)` and `W_UV` transposed per head, `(heads, r, v)`.
    fn absorbed(
        &self,
        name: &str,
        heads: usize,
        nope: usize,
        v: usize,
        r: usize,
    ) -> Result<(B::Weight, B::Weight), CheckpointError>;
    /// `lm_head.weight`, or the embedding when the config ties them and there is no head.
    fn lm_head(&self, c: &ModelConfig) -> Result<B::Weight, CheckpointError>;
}

struct Checkpointed<'a, B: Backend> {
    ckpt: &'a Checkpoint,
    backend: &'a B,
}

impl<B: Backend> Source<B> for Checkpointed<'_, B> {
    fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<B::Weight, CheckpointError> {
        Ok(self
            .backend
            .upload_weight(&self.ckpt.load(name, &shape)?.data))
    }

    fn vector(&self, name: &str, shape: &[usize]) -> Result<B::Buf, CheckpointError> {
        Ok(self.backend.upload(&self.ckpt.load(name, shape)?.data))
    }

    fn correction_bias(&self, name: &str, experts: usize) -> Result<Vec<f32>, CheckpointError> {
        if self.ckpt.contains(name) {
            Ok(self.ckpt.load(name, &[experts])?.data)
        } else {
            Ok(vec![0.0; experts])
        }
    }

    fn absorbed(
        &self,
        name: &str,
        heads: usize,
        nope: usize,
        v: usize,
        r: usize,
    ) -> Result<(B::Weight, B::Weight), CheckpointError> {
        let kv_b = self.ckpt.load(name, &[heads * (nope + v), r])?;
        let mut w_uk = Vec::with_capacity(heads * nope * r);
        let mut w_uv = vec![0f32; heads * r * v];
        for h in 0..heads {
            let block = &kv_b.data[h * (nope + v) * r..][..(nope + v) * r];
            w_uk.extend_from_slice(&block[..nope * r]);
            for j in 0..v {
                for k in 0..r {
                    w_uv[h * r * v + k * v + j] = block[(nope + j) * r + k];
                }
            }
        }
        Ok((
            self.backend.upload_weight(&w_uk),
            self.backend.upload_weight(&w_uv),
        ))
    }

    fn lm_head(&self, c: &ModelConfig) -> Result<B::Weight, CheckpointError> {
        let name = if c.tie_word_embeddings && !self.ckpt.contains("lm_head.weight") {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        self.matrix(name, [c.vocab_size, c.hidden_size])
    }
}

/// Random weights drawn on the backend, each tensor from its own stream (a hash of its name and
/// the seed), scaled like [`crate::tooling::tiny`]'s so activations stay O(1) through the layers.
struct Drawn<'a, B: Backend> {
    backend: &'a B,
    seed: u64,
}

impl<B: Backend> Drawn<'_, B> {
    fn stream(&self, name: &str) -> u64 {
        // FNV-1a: stable across builds and platforms, unlike `std`'s hasher.
        name.bytes()
            .fold(0xcbf2_9ce4_8422_2325 ^ self.seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

impl<B: Backend> Source<B> for Drawn<'_, B> {
    fn matrix(&self, name: &str, [rows, cols]: [usize; 2]) -> Result<B::Weight, CheckpointError> {
        let std = 1.0 / (cols as f32).sqrt();
        Ok(self
            .backend
            .random_weight(rows * cols, self.stream(name), std))
    }

    fn vector(&self, name: &str, shape: &[usize]) -> Result<B::Buf, CheckpointError> {
        let len = shape.iter().product();
        let (mean, std) = if name.ends_with(".bias") {
            (0.0, 0.1)
        } else if name.contains("embed_tokens") {
            (0.0, 1.0)
        } else {
            (1.0, 0.1)
        };
        Ok(self.backend.random(len, self.stream(name), mean, std))
    }

    fn correction_bias(&self, name: &str, experts: usize) -> Result<Vec<f32>, CheckpointError> {
        Ok(crate::random::normals(experts, self.stream(name), 0.0, 0.5))
    }

    fn absorbed(
        &self,
        name: &str,
        heads: usize,
        nope: usize,
        v: usize,
        r: usize,
    ) -> Result<(B::Weight, B::Weight), CheckpointError> {
        // Both halves of `kv_b_proj` have fan-in r.
        let std = 1.0 / (r as f32).sqrt();
        let uk = self.stream(&format!("{name}/uk"));
        let uv = self.stream(&format!("{name}/uv"));
        Ok((
            self.backend.random_weight(heads * nope * r, uk, std),
            self.backend.random_weight(heads * r * v, uv, std),
        ))
    }

    fn lm_head(&self, c: &ModelConfig) -> Result<B::Weight, CheckpointError> {
        self.matrix("lm_head.weight", [c.vocab_size, c.hidden_size])
    }
}

fn mlp<B: Backend>(
    src: &impl Source<B>,
    prefix: &str,
    hidden: usize,
    intermediate: usize,
) -> Result<Mlp<B>, CheckpointError> {
    Ok(Mlp {
        gate: src.matrix(
            &format!("{prefix}.gate_proj.weight"),
            [intermediate, hidden],
        )?,
        up: src.matrix(&format!("{prefix}.up_proj.weight"), [intermediate, hidden])?,
        down: src.matrix(
            &format!("{prefix}.down_proj.weight"),
            [hidden, intermediate],
        )?,
        intermediate,
    })
}

fn layer<B: Backend>(
    src: &impl Source<B>,
    c: &ModelConfig,
    i: usize,
) -> Result<Layer<B>, CheckpointError> {
    let (hidden, heads) = (c.hidden_size, c.num_heads);
    let (nope, rope, v, r) = (
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    );
    let p = format!("model.layers.{i}");
    let q = match c.q_lora_rank {
        Some(rank) => QProj::LowRank {
            a: src.matrix(&format!("{p}.self_attn.q_a_proj.weight"), [rank, hidden])?,
            norm: src.vector(&format!("{p}.self_attn.q_a_layernorm.weight"), &[rank])?,
            b: src.matrix(
                &format!("{p}.self_attn.q_b_proj.weight"),
                [heads * (nope + rope), rank],
            )?,
            rank,
        },
        None => QProj::Full(src.matrix(
            &format!("{p}.self_attn.q_proj.weight"),
            [heads * (nope + rope), hidden],
        )?),
    };
    let (w_uk, w_uv) = src.absorbed(
        &format!("{p}.self_attn.kv_b_proj.weight"),
        heads,
        nope,
        v,
        r,
    )?;
    let indexer = match &c.indexer {
        None => None,
        Some(ix) => {
            let rank = c.q_lora_rank.ok_or_else(|| {
                CheckpointError::Missing("q_lora_rank (the indexer reads the query latent)".into())
            })?;
            let ip = format!("{p}.self_attn.indexer");
            Some(Indexer {
                wq_b: src.matrix(
                    &format!("{ip}.wq_b.weight"),
                    [ix.n_heads * ix.head_dim, rank],
                )?,
                wk: src.matrix(&format!("{ip}.wk.weight"), [ix.head_dim, hidden])?,
                k_norm_weight: src.vector(&format!("{ip}.k_norm.weight"), &[ix.head_dim])?,
                k_norm_bias: src.vector(&format!("{ip}.k_norm.bias"), &[ix.head_dim])?,
                weights_proj: src
                    .matrix(&format!("{ip}.weights_proj.weight"), [ix.n_heads, hidden])?,
            })
        }
    };
    let attn = Attention {
        q,
        kv_a: src.matrix(
            &format!("{p}.self_attn.kv_a_proj_with_mqa.weight"),
            [r + rope, hidden],
        )?,
        kv_norm: src.vector(&format!("{p}.self_attn.kv_a_layernorm.weight"), &[r])?,
        w_uk,
        w_uv,
        o: src.matrix(&format!("{p}.self_attn.o_proj.weight"), [hidden, heads * v])?,
        indexer,
    };
    let ffn = match (&c.moe, c.is_moe_layer(i)) {
        (Some(moe), true) => Ffn::Moe(Moe {
            gate: src.matrix(
                &format!("{p}.mlp.gate.weight"),
                [moe.n_routed_experts, hidden],
            )?,
            correction_bias: src.correction_bias(
                &format!("{p}.mlp.gate.e_score_correction_bias"),
                moe.n_routed_experts,
            )?,
            experts: (0..moe.n_routed_experts)
                .map(|e| {
                    mlp(
                        src,
                        &format!("{p}.mlp.experts.{e}"),
                        hidden,
                        moe.intermediate_size,
                    )
                })
                .collect::<Result<_, _>>()?,
            shared: (moe.n_shared_experts > 0)
                .then(|| {
                    mlp(
                        src,
                        &format!("{p}.mlp.shared_experts"),
                        hidden,
                        moe.intermediate_size * moe.n_shared_experts,
                    )
                })
                .transpose()?,
        }),
        _ => Ffn::Dense(mlp(src, &format!("{p}.mlp"), hidden, c.intermediate_size)?),
    };
    Ok(Layer {
        input_norm: src.vector(&format!("{p}.input_layernorm.weight"), &[hidden])?,
        attn,
        post_norm: src.vector(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
        ffn,
    })
}

impl<B: Backend> Model<B> {
    /// Loads every weight of `ckpt` onto `backend`, checking names and shapes.
    pub fn load(ckpt: &Checkpoint, backend: B) -> Result<Self, CheckpointError> {
        let source = Checkpointed {
            ckpt,
            backend: &backend,
        };
        let parts = assemble(&source, &ckpt.config)?;
        Ok(Self::from_parts(ckpt.config.clone(), backend, parts))
    }

    /// A model of `config`'s architecture with random weights drawn on `backend` from `seed`:
    /// no checkpoint, so its size is bounded only by the backend's memory (device benchmarks of
    /// V3.2-shaped models).
    pub fn synthesize(config: ModelConfig, backend: B, seed: u64) -> Self {
        let source = Drawn {
            backend: &backend,
            seed,
        };
        let parts = assemble(&source, &config).expect("drawn weights cannot be missing");
        Self::from_parts(config, backend, parts)
    }

    fn from_parts(config: ModelConfig, backend: B, parts: Parts<B>) -> Self {
        let max_positions = config.max_position_embeddings;
        let tables = RopeTables::new(&config, max_positions);
        Self {
            norm: parts.norm,
            embed: parts.embed,
            lm_head: parts.lm_head,
            layers: parts.layers,
            rope_cos: backend.upload(&tables.cos),
            rope_sin: backend.upload(&tables.sin),
            max_positions,
            config,
            backend,
        }
    }
}

struct Parts<B: Backend> {
    embed: B::Buf,
    layers: Vec<Layer<B>>,
    norm: B::Buf,
    lm_head: B::Weight,
}

fn assemble<B: Backend>(
    src: &impl Source<B>,
    c: &ModelConfig,
) -> Result<Parts<B>, CheckpointError> {
    Ok(Parts {
        layers: (0..c.num_layers)
            .map(|i| layer(src, c, i))
            .collect::<Result<_, _>>()?,
        embed: src.vector("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?,
        lm_head: src.lm_head(c)?,
        norm: src.vector("model.norm.weight", &[c.hidden_size])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::Logits;
    use crate::tooling::tiny::TinySpec;

    fn tiny_config() -> ModelConfig {
        let spec = TinySpec::tiny(512);
        ModelConfig::from_json(&spec.config_json().to_string()).expect("tiny config")
    }

    #[test]
    fn a_synthesized_model_is_a_pure_function_of_its_seed() {
        let tokens = [5u32, 17, 300, 2, 511, 9];
        let run = |seed| {
            let model = Model::synthesize(tiny_config(), Cpu, seed);
            model.forward(&tokens, &mut model.new_cache(), Logits::All)
        };
        let a = run(3);
        assert_eq!(a.len(), tokens.len() * 512);
        assert!(a.iter().all(|v| v.is_finite()));
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        // Activations stay O(1): logits neither vanish nor blow up through the layers.
        let rms = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
        assert!((0.05..50.0).contains(&rms), "logit rms {rms}");
    }

    #[test]
    fn tensors_draw_from_distinct_streams() {
        let source = Drawn {
            backend: &Cpu,
            seed: 1,
        };
        let a = source.stream("model.layers.0.mlp.gate_proj.weight");
        let b = source.stream("model.layers.0.mlp.up_proj.weight");
        let c = Drawn {
            backend: &Cpu,
            seed: 2,
        }
        .stream("model.layers.0.mlp.gate_proj.weight");
        assert!(a != b && a != c && b != c);
    }
}
