//! Measurements behind `dsgw engine bench`: memory bandwidth of this machine, decode speed and
//! the bytes it reads, DeepSeek Sparse Attention against dense attention at long contexts,
//! prefill speed, and the prefix cache's effect on time to first token.

use std::time::{Duration, Instant};

use crate::backend::{Backend, WeightFormat};
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::model::{Logits, Model};

/// Bytes per second of a plain large copy on every core, as decode uses them (the machine's
/// practical memory bandwidth), counting both the read and the write.
pub fn copy_bandwidth(bytes: usize) -> f64 {
    use rayon::prelude::*;
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(rayon::current_num_threads());
    let copy = |dst: &mut [u8]| {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    };
    copy(&mut dst); // fault the pages in first
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        copy(&mut dst);
        std::hint::black_box(&dst);
        best = best.min(t.elapsed());
    }
    2.0 * bytes as f64 / best.as_secs_f64()
}

/// Weight bytes one decode step reads: every attention and dense weight, the routed experts a
/// token picks plus the shared one, one embedding row, the LM head; matrices at `format`'s
/// width, vectors (norms, the embedding row) in f32.
pub fn weight_bytes_per_token(c: &ModelConfig, format: WeightFormat) -> usize {
    let h = c.hidden_size;
    let (nope, rope, v, r) = (
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    );
    let heads = c.num_heads;
    // (matrix values, vector values)
    let q = match c.q_lora_rank {
        Some(rank) => (h * rank + rank * heads * (nope + rope), rank),
        None => (h * heads * (nope + rope), 0),
    };
    let attn = (
        q.0 + h * (r + rope) + heads * (nope + v) * r + heads * v * h,
        q.1 + r,
    );
    let indexer = c.indexer.as_ref().map_or((0, 0), |ix| {
        (
            c.q_lora_rank.unwrap_or(0) * ix.n_heads * ix.head_dim
                + h * ix.head_dim
                + ix.n_heads * h,
            2 * ix.head_dim,
        )
    });
    let (mut matrices, mut vectors) = (h * c.vocab_size, 2 * h);
    for layer in 0..c.num_layers {
        matrices += attn.0 + indexer.0;
        vectors += attn.1 + indexer.1 + 2 * h;
        matrices += match (&c.moe, c.is_moe_layer(layer)) {
            (Some(m), true) => {
                m.n_routed_experts * h
                    + (m.experts_per_token + m.n_shared_experts) * 3 * h * m.intermediate_size
            }
            _ => 3 * h * c.intermediate_size,
        };
    }
    matrices * format.bytes() + vectors * 4
}

/// KV bytes one decode step reads at `context` cached tokens: the latent and rope key of every
/// attended position, and (with the indexer) every position's indexer key.
pub fn kv_bytes_per_token(c: &ModelConfig, context: usize, sparse: bool) -> usize {
    let attended = match (&c.indexer, sparse) {
        (Some(ix), true) => context.min(ix.topk),
        _ => context,
    };
    let index = match (&c.indexer, sparse) {
        (Some(ix), true) => context * ix.head_dim,
        _ => 0,
    };
    (attended * (c.kv_lora_rank + c.qk_rope_head_dim) + index) * 4 * c.num_layers
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecodeResult {
    pub context: usize,
    pub seconds_per_token: f64,
    pub bytes_per_token: usize,
}

/// Decodes `tokens` tokens after a synthetic cache of `context` tokens; time per token.
pub fn decode<B: Backend>(
    model: &Model<B>,
    context: usize,
    tokens: usize,
    sparse: bool,
) -> DecodeResult {
    let mut cache: KvCache<B> = model.new_cache();
    if context > 0 {
        cache.fill_synthetic(model.backend(), context, 17);
    }
    let vocab = model.config.vocab_size as u32;
    // One warm-up step, then the timed ones.
    model.forward(&[3], &mut cache, Logits::Last);
    let started = Instant::now();
    for i in 0..tokens {
        model.forward(&[(i as u32 * 7919) % vocab], &mut cache, Logits::Last);
    }
    let per_token = started.elapsed().as_secs_f64() / tokens as f64;
    DecodeResult {
        context,
        seconds_per_token: per_token,
        bytes_per_token: weight_bytes_per_token(&model.config, model.backend().weight_format())
            + kv_bytes_per_token(&model.config, context, sparse),
    }
}

/// Prefill throughput for one prompt of `len` tokens, in tokens per second.
pub fn prefill<B: Backend>(model: &Model<B>, len: usize) -> f64 {
    let vocab = model.config.vocab_size as u32;
    let prompt: Vec<u32> = (0..len as u32).map(|i| (i * 7919 + 1) % vocab).collect();
    let mut cache = model.new_cache();
    let started = Instant::now();
    model.forward(&prompt, &mut cache, Logits::Last);
    len as f64 / started.elapsed().as_secs_f64()
}
