//! Timings on the GPU, with device events after warm-up: the copy bandwidth every kernel is
//! measured against, MLA decode and the indexer at V3.2's shapes, cuBLAS GEMMs, and a random
//! V3.2-shaped model sized to fill the GPU, end to end.

use serde::Serialize;

use crate::backend::cuda::{Cuda, DeviceBuf};
use crate::backend::{Backend, KV_BLOCK, Paged, Selection, WeightFormat};
use crate::config::ModelConfig;
use crate::model::Model;
use crate::tooling::tiny::TinySpec;

/// A device-to-device copy of 1 GiB, counting its reads and its writes: what a kernel that
/// streams memory can reach at best.
pub(super) fn copy_gb_per_s(cuda: &Cuda) -> f64 {
    let floats = 256 << 20;
    let src = cuda.random(floats, 1, 0.0, 1.0);
    let mut dst = cuda.alloc(floats);
    let ms = cuda.time_ms(2, 10, || cuda.copy(&src, &mut dst));
    2.0 * (floats * 4) as f64 / (ms * 1e-3) / 1e9
}

#[derive(Debug, Serialize)]
pub struct AttentionTiming {
    pub context: usize,
    pub dense_ms: f64,
    /// Bytes of latent cache read per dense decode step over its time.
    pub dense_gb_per_s: f64,
    pub dense_share_of_copy: f64,
    /// Indexer + top-k + sparse attention over the selected positions.
    pub dsa_ms: f64,
    pub dsa_speedup: f64,
    pub indexer_positions_per_s: f64,
}

/// One decode query against a cache of V3.2's shapes: 128 heads over latent 512 + rope 64, an
/// indexer of 64 heads x 128 choosing the top 2048.
struct DecodeStep {
    q_lat: DeviceBuf,
    q_pe: DeviceBuf,
    /// The cache, in blocks of KV_BLOCK rows as the model keeps it.
    latent: Vec<DeviceBuf>,
    k_pe: Vec<DeviceBuf>,
    index_q: DeviceBuf,
    index_w: DeviceBuf,
    index_k: Vec<DeviceBuf>,
    position: [usize; 1],
}

impl DecodeStep {
    const HEADS: usize = 128;
    const R: usize = 512;
    const P: usize = 64;
    const INDEX_HEADS: usize = 64;
    const INDEX_DIM: usize = 128;
    const TOPK: usize = 2048;

    fn new(cuda: &Cuda, context: usize) -> Self {
        let draw = |n, seed| cuda.random(n, seed + context as u64, 0.0, 1.0);
        let blocks = |width: usize, seed: u64| -> Vec<DeviceBuf> {
            (0..context.div_ceil(KV_BLOCK) as u64)
                .map(|b| draw(KV_BLOCK * width, (seed << 32) + b))
                .collect()
        };
        Self {
            q_lat: draw(Self::HEADS * Self::R, 1),
            q_pe: draw(Self::HEADS * Self::P, 2),
            latent: blocks(Self::R, 3),
            k_pe: blocks(Self::P, 4),
            index_q: draw(Self::INDEX_HEADS * Self::INDEX_DIM, 5),
            index_w: draw(Self::INDEX_HEADS, 6),
            index_k: blocks(Self::INDEX_DIM, 7),
            position: [context - 1],
        }
    }

    fn paged<'a>(&self, blocks: &'a [DeviceBuf]) -> Paged<'a, DeviceBuf> {
        Paged {
            blocks: blocks.iter().collect(),
            len: self.position[0] + 1,
        }
    }

    fn attend(&self, cuda: &Cuda, selection: Selection<'_>) -> DeviceBuf {
        cuda.mla_attention(
            &self.q_lat,
            &self.q_pe,
            &self.paged(&self.latent),
            &self.paged(&self.k_pe),
            Self::HEADS,
            Self::R,
            Self::P,
            &self.position,
            selection,
            1.0 / ((Self::R + Self::P) as f32).sqrt(),
        )
    }

    fn index_scores(&self, cuda: &Cuda) -> DeviceBuf {
        cuda.indexer_scores(
            &self.index_q,
            &self.index_w,
            &self.paged(&self.index_k),
            Self::INDEX_HEADS,
            Self::INDEX_DIM,
            &self.position,
            1.0 / (Self::INDEX_DIM as f32).sqrt(),
        )
    }

    /// DeepSeek Sparse Attention's whole step: score, select, attend to the selection.
    fn sparse(&self, cuda: &Cuda) -> DeviceBuf {
        let selected = cuda.topk(&self.index_scores(cuda), self.position[0] + 1, Self::TOPK);
        self.attend(cuda, Selection::Sparse(&selected))
    }
}

pub(super) fn attention(cuda: &Cuda, context: usize, copy_gb_per_s: f64) -> AttentionTiming {
    let step = DecodeStep::new(cuda, context);
    let dense_ms = cuda.time_ms(3, 10, || {
        step.attend(cuda, Selection::Causal);
    });
    let indexer_ms = cuda.time_ms(3, 10, || {
        step.index_scores(cuda);
    });
    let dsa_ms = cuda.time_ms(2, 10, || {
        step.sparse(cuda);
    });
    let bytes = (context * (DecodeStep::R + DecodeStep::P) * 4) as f64;
    let dense_gb_per_s = bytes / (dense_ms * 1e-3) / 1e9;
    AttentionTiming {
        context,
        dense_ms,
        dense_gb_per_s,
        dense_share_of_copy: dense_gb_per_s / copy_gb_per_s,
        dsa_ms,
        dsa_speedup: dense_ms / dsa_ms,
        indexer_positions_per_s: context as f64 / (indexer_ms * 1e-3),
    }
}

/// TFLOP/s of an `n`-cube product through [`Backend::matmul`] with `cuda`'s weight format (bf16
/// includes converting the activations).
pub(super) fn gemm_tflops(cuda: &Cuda, n: usize) -> f64 {
    let x = cuda.random(n * n, 8, 0.0, 1.0);
    let w = cuda.random_weight(n * n, 9, 0.01);
    let ms = cuda.time_ms(1, 5, || {
        cuda.matmul(&x, &w, n, n, n);
    });
    2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12
}

#[derive(Debug, Serialize)]
pub struct DecodeTiming {
    pub context: usize,
    pub dsa_tokens_per_s: f64,
    pub dense_tokens_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelTiming {
    pub layers: usize,
    pub moe_layers: usize,
    pub experts: usize,
    pub weight_gib: f64,
    pub free_gib_before: f64,
    pub prompt_tokens: usize,
    pub time_to_first_token_dsa_s: f64,
    pub time_to_first_token_dense_s: f64,
    pub decode: Vec<DecodeTiming>,
}

const GIB: usize = 1 << 30;

/// Room kept free besides the weights and the cache: a 4096-token prefill's activations at
/// V3.2's widths peak at about 6 GiB (the 128-head query latents and MLA's partial sums are
/// 1 GiB each), plus cuBLAS workspaces and the allocator's slack.
const ACTIVATIONS: usize = 10 * GIB;

/// The V3.2-shaped model that fills what is free of the GPU with bf16 weights, leaving room for
/// one cache of `longest` tokens and a prefill's activations.
pub fn sized_spec(free: usize, longest: usize) -> Option<TinySpec> {
    let reserve = ACTIVATIONS;
    let weights = free.checked_sub(reserve)?;
    // The cache grows with the layers: size once, take its cache off, size again.
    let first = TinySpec::v32_within(weights, 2)?;
    let spec = TinySpec::v32_within(weights.checked_sub(first.kv_bytes(longest))?, 2)?;
    Some(TinySpec {
        max_position_embeddings: longest + 1024,
        ..spec
    })
}

/// Time to first token of a `prompt`-token prefill, and decode speed after synthetic caches of
/// each of `contexts`, with DSA and with dense attention.
pub(super) fn end_to_end(
    cuda: Cuda,
    contexts: &[usize],
    prompt: usize,
) -> Result<ModelTiming, String> {
    let cuda = cuda.with_weights(WeightFormat::Bf16);
    let (free, _) = cuda.memory();
    let longest = contexts.iter().copied().max().unwrap_or(prompt).max(prompt);
    let spec = sized_spec(free, longest).ok_or_else(|| {
        format!(
            "{:.1} GiB free: too little for the smallest V3.2-shaped model",
            free as f64 / GIB as f64
        )
    })?;
    let config =
        ModelConfig::from_json(&spec.config_json().to_string()).map_err(|e| e.to_string())?;
    eprintln!(
        "device check: a {}-layer V3.2-shaped model ({} MoE layers of {} experts, {:.1} GiB of weights)",
        spec.num_layers,
        spec.num_layers - spec.first_k_dense,
        spec.n_routed_experts,
        spec.device_bytes(2) as f64 / GIB as f64
    );
    let mut model = Model::synthesize(config, cuda, 5);
    let indexer = model.config.indexer.clone();
    crate::tooling::bench::prefill(&model, 256); // warm-up: cuBLAS picks its kernels
    let ttft = |model: &Model<Cuda>| prompt as f64 / crate::tooling::bench::prefill(model, prompt);
    let time_to_first_token_dsa_s = ttft(&model);
    model.config.indexer = None;
    let time_to_first_token_dense_s = ttft(&model);
    let mut decode = Vec::new();
    for &context in contexts {
        eprintln!("device check: decoding after {context} tokens");
        model.config.indexer = indexer.clone();
        let sparse = crate::tooling::bench::decode(&model, context, 8, true);
        model.config.indexer = None;
        let dense = crate::tooling::bench::decode(&model, context, 8, false);
        decode.push(DecodeTiming {
            context,
            dsa_tokens_per_s: 1.0 / sparse.seconds_per_token,
            dense_tokens_per_s: 1.0 / dense.seconds_per_token,
        });
    }
    Ok(ModelTiming {
        layers: spec.num_layers,
        moe_layers: spec.num_layers - spec.first_k_dense,
        experts: spec.n_routed_experts,
        weight_gib: spec.device_bytes(2) as f64 / GIB as f64,
        free_gib_before: free as f64 / GIB as f64,
        prompt_tokens: prompt,
        time_to_first_token_dsa_s,
        time_to_first_token_dense_s,
        decode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timed_model_fills_an_h200_and_leaves_room_for_a_128k_cache() {
        // An idle H200 reports about 140 GB free.
        let free = 140_000_000_000;
        let spec = sized_spec(free, 131_072).expect("fits");
        assert_eq!(spec.n_routed_experts, 256);
        assert!(spec.num_layers >= 6, "{} layers", spec.num_layers);
        let used = spec.device_bytes(2) + spec.kv_bytes(131_072);
        assert!(used + ACTIVATIONS <= free, "{used} of {free}");
        assert!(
            used > free * 4 / 5,
            "uses most of the GPU: {used} of {free}"
        );
        assert_eq!(spec.max_position_embeddings, 131_072 + 1024);
        // A 24 GB card still gets a model, with fewer experts.
        assert!(sized_spec(24_000_000_000, 32_768).is_some());
        assert!(sized_spec(4 * GIB, 4096).is_none());
    }
}
