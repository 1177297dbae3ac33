//! The model's hyper-parameters, read from a Hugging Face `config.json` as published
//! (`model_type` `deepseek_v32`, or `deepseek_v3`, which is the same without the indexer).
//! Fields the engine does not use are ignored; fields it cannot honour are errors.

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("config.json: unsupported {field}: {value}")]
    Unsupported { field: &'static str, value: String },
    #[error("config.json: {0}")]
    Invalid(String),
}

/// YaRN context extension, as DeepSeek configures it (`rope_scaling`, type `yarn`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Yarn {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    #[serde(default = "default_beta_fast")]
    pub beta_fast: f64,
    #[serde(default = "default_beta_slow")]
    pub beta_slow: f64,
    #[serde(default = "one")]
    pub mscale: f64,
    #[serde(default)]
    pub mscale_all_dim: f64,
}

fn default_beta_fast() -> f64 {
    32.0
}
fn default_beta_slow() -> f64 {
    1.0
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    moe_intermediate_size: usize,
    num_hidden_layers: usize,
    #[serde(default)]
    first_k_dense_replace: usize,
    #[serde(default = "one_usize")]
    moe_layer_freq: usize,
    num_attention_heads: usize,
    q_lora_rank: Option<usize>,
    kv_lora_rank: usize,
    qk_nope_head_dim: usize,
    qk_rope_head_dim: usize,
    v_head_dim: usize,
    #[serde(default)]
    n_routed_experts: Option<usize>,
    #[serde(default)]
    n_shared_experts: Option<usize>,
    #[serde(default)]
    num_experts_per_tok: Option<usize>,
    #[serde(default = "one_usize")]
    n_group: usize,
    #[serde(default = "one_usize")]
    topk_group: usize,
    #[serde(default = "one")]
    routed_scaling_factor: f64,
    #[serde(default = "yes")]
    norm_topk_prob: bool,
    #[serde(default = "sigmoid")]
    scoring_func: String,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    index_n_heads: Option<usize>,
    #[serde(default)]
    index_head_dim: Option<usize>,
    #[serde(default)]
    index_topk: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    quantization_config: Option<Quantization>,
}

fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn sigmoid() -> String {
    "sigmoid".to_owned()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}

/// FP8 block quantisation as DeepSeek's checkpoints declare it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Quantization {
    pub quant_method: String,
    #[serde(default)]
    pub fmt: Option<String>,
    #[serde(default)]
    pub weight_block_size: Option<Vec<usize>>,
}

/// The lightning indexer of DeepSeek Sparse Attention.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexerConfig {
    pub n_heads: usize,
    pub head_dim: usize,
    /// Positions each query keeps.
    pub topk: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub experts_per_token: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub routed_scaling_factor: f32,
    pub norm_topk_prob: bool,
    pub intermediate_size: usize,
}

/// Validated hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub first_k_dense: usize,
    pub moe_layer_freq: usize,
    pub num_heads: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub moe: Option<MoeConfig>,
    pub indexer: Option<IndexerConfig>,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub yarn: Option<Yarn>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub fp8_block: Option<(usize, usize)>,
}

impl ModelConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let unsupported = |field, value: &str| ConfigError::Unsupported {
            field,
            value: value.to_owned(),
        };
        let with_indexer = match raw.model_type.as_str() {
            "deepseek_v32" => true,
            "deepseek_v3" => false,
            other => return Err(unsupported("model_type", other)),
        };
        if raw.scoring_func != "sigmoid" {
            return Err(unsupported("scoring_func", &raw.scoring_func));
        }
        let yarn = match &raw.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("type")
                    .or_else(|| v.get("rope_type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                if kind != "yarn" {
                    return Err(unsupported("rope_scaling.type", kind));
                }
                Some(serde_json::from_value::<Yarn>(v.clone())?)
            }
        };
        let moe = match (raw.n_routed_experts, raw.num_experts_per_tok) {
            (Some(n), Some(k)) if n > 0 => {
                if n % raw.n_group != 0 || raw.topk_group > raw.n_group || k > n {
                    return Err(ConfigError::Invalid(format!(
                        "MoE: {n} experts, {k} per token, n_group {}, topk_group {} are inconsistent",
                        raw.n_group, raw.topk_group
                    )));
                }
                Some(MoeConfig {
                    n_routed_experts: n,
                    n_shared_experts: raw.n_shared_experts.unwrap_or(0),
                    experts_per_token: k,
                    n_group: raw.n_group,
                    topk_group: raw.topk_group,
                    routed_scaling_factor: raw.routed_scaling_factor as f32,
                    norm_topk_prob: raw.norm_topk_prob,
                    intermediate_size: raw.moe_intermediate_size,
                })
            }
            _ => None,
        };
        let indexer = if with_indexer {
            match (raw.index_n_heads, raw.index_head_dim, raw.index_topk) {
                (Some(n_heads), Some(head_dim), Some(topk)) => {
                    if head_dim < raw.qk_rope_head_dim {
                        return Err(ConfigError::Invalid(format!(
                            "index_head_dim {head_dim} is smaller than qk_rope_head_dim {}",
                            raw.qk_rope_head_dim
                        )));
                    }
                    Some(IndexerConfig {
                        n_heads,
                        head_dim,
                        topk,
                    })
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "deepseek_v32 needs index_n_heads, index_head_dim and index_topk".into(),
                    ));
                }
            }
        } else {
            None
        };
        let fp8_block = match &raw.quantization_config {
            None => None,
            Some(q) if q.quant_method == "fp8" => {
                if let Some(fmt) = &q.fmt
                    && fmt != "e4m3"
                {
                    return Err(unsupported("quantization_config.fmt", fmt));
                }
                match q.weight_block_size.as_deref() {
                    Some([r, c]) => Some((*r, *c)),
                    None => Some((128, 128)),
                    Some(other) => {
                        return Err(unsupported(
                            "quantization_config.weight_block_size",
                            &format!("{other:?}"),
                        ));
                    }
                }
            }
            Some(q) => {
                return Err(unsupported(
                    "quantization_config.quant_method",
                    &q.quant_method,
                ));
            }
        };
        if raw.qk_rope_head_dim % 2 != 0 {
            return Err(ConfigError::Invalid("qk_rope_head_dim must be even".into()));
        }
        let eos_token_ids = match &raw.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(ids)) => ids
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|n| n as u32)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            first_k_dense: raw.first_k_dense_replace,
            moe_layer_freq: raw.moe_layer_freq.max(1),
            num_heads: raw.num_attention_heads,
            q_lora_rank: raw.q_lora_rank,
            kv_lora_rank: raw.kv_lora_rank,
            qk_nope_head_dim: raw.qk_nope_head_dim,
            qk_rope_head_dim: raw.qk_rope_head_dim,
            v_head_dim: raw.v_head_dim,
            moe,
            indexer,
            rms_norm_eps: raw.rms_norm_eps as f32,
            rope_theta: raw.rope_theta,
            yarn,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            fp8_block,
        })
    }

    /// Whether layer `i` uses the mixture of experts (else a dense MLP).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.is_some() && i >= self.first_k_dense && i % self.moe_layer_freq == 0
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Softmax scale of MLA: `qk_head_dim^-0.5`, times `mscale^2` under YaRN.
    pub fn attention_scale(&self) -> f32 {
        let base = (self.qk_head_dim() as f64).powf(-0.5);
        let m = self
            .yarn
            .as_ref()
            .map_or(1.0, |y| yarn_mscale(y.factor, y.mscale_all_dim));
        (base * m * m) as f32
    }
}

/// YaRN's attention temperature correction.
pub fn yarn_mscale(factor: f64, mscale: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}
