//! The KV cache of one sequence: per layer, the 512-d MLA latent and the 64-d rope key of every
//! token (the absorbed form never expands per-head keys or values), plus the indexer's key.

use crate::backend::Backend;
use crate::config::ModelConfig;

pub struct LayerCache<B: Backend> {
    /// `(len, kv_lora_rank)`
    pub latent: B::Buf,
    /// `(len, qk_rope_head_dim)`
    pub k_pe: B::Buf,
    /// `(len, index_head_dim)`, for DeepSeek Sparse Attention.
    pub index_k: Option<B::Buf>,
}

pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerCache<B>>,
    len: usize,
    /// Row widths: latent, rope key, indexer key.
    widths: (usize, usize, Option<usize>),
}

impl<B: Backend> std::fmt::Debug for KvCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache").field("len", &self.len).finish()
    }
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, config: &ModelConfig) -> Self {
        let layers = (0..config.num_layers)
            .map(|_| LayerCache {
                latent: backend.upload(&[]),
                k_pe: backend.upload(&[]),
                index_k: config.indexer.as_ref().map(|_| backend.upload(&[])),
            })
            .collect();
        Self {
            layers,
            len: 0,
            widths: (
                config.kv_lora_rank,
                config.qk_rope_head_dim,
                config.indexer.as_ref().map(|i| i.head_dim),
            ),
        }
    }

    /// Fills an empty cache with `len` tokens of synthetic rows (unit-scale values from `seed`),
    /// so decode can be measured at long contexts without a prefill that long. Benchmarks only:
    /// the rows do not come from any text.
    pub fn fill_synthetic(&mut self, backend: &B, len: usize, seed: u64) {
        assert!(self.is_empty(), "fill_synthetic needs an empty cache");
        let (r, p, ix) = self.widths;
        // Drawn on the backend (a GPU fills a 128K-token cache in milliseconds), one stream per
        // layer and part.
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let stream = seed.wrapping_add(3 * i as u64);
            backend.append_rows(
                &mut layer.latent,
                &backend.random(len * r, stream, 0.0, 1.0),
            );
            backend.append_rows(
                &mut layer.k_pe,
                &backend.random(len * p, stream + 1, 0.0, 1.0),
            );
            if let (Some(k), Some(w)) = (layer.index_k.as_mut(), ix) {
                backend.append_rows(k, &backend.random(len * w, stream + 2, 0.0, 1.0));
            }
        }
        self.len = len;
    }

    /// A copy of the first `len` tokens (for the prefix cache).
    pub fn prefix(&self, backend: &B, len: usize) -> Self {
        assert!(len <= self.len, "prefix longer than the cache");
        let (r, p, ix) = self.widths;
        let layers = self
            .layers
            .iter()
            .map(|l| LayerCache {
                latent: backend.prefix(&l.latent, len * r),
                k_pe: backend.prefix(&l.k_pe, len * p),
                index_k: l
                    .index_k
                    .as_ref()
                    .map(|k| backend.prefix(k, len * ix.expect("indexer width"))),
            })
            .collect();
        Self {
            layers,
            len,
            widths: self.widths,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Bytes held per cached token across all layers (f32).
    pub fn bytes_per_token(config: &ModelConfig) -> usize {
        let per_layer = config.kv_lora_rank
            + config.qk_rope_head_dim
            + config.indexer.as_ref().map_or(0, |i| i.head_dim);
        per_layer * config.num_layers * std::mem::size_of::<f32>()
    }
}
