//! The KV cache of one sequence: per layer, the 512-d MLA latent and the 64-d rope key of every
//! token (the absorbed form never expands per-head keys or values), plus the indexer's key.
//!
//! Rows live in fixed blocks of [`KV_BLOCK`] tokens on the backend (device memory on CUDA),
//! reference-counted: a prefix of a cache ([`KvCache::prefix`]) shares its blocks instead of
//! copying them, which is how the prefix cache hands a stored prompt to a new request for free.
//! A block is written only while one cache holds it; writing into a shared one copies it first.

use std::sync::Arc;

use crate::backend::{Backend, KV_BLOCK, Paged};
use crate::config::ModelConfig;

/// [`KV_BLOCK`] tokens of one layer: each part is `KV_BLOCK` rows of its width.
struct Block<B: Backend> {
    latent: B::Buf,
    k_pe: B::Buf,
    index_k: Option<B::Buf>,
}

/// New rows of one layer for `n` tokens: `latent (n, r)`, `k_pe (n, p)`, `index_k (n, d)`,
/// taken from `first` on in each buffer.
pub struct Rows<'a, B: Backend> {
    pub latent: &'a B::Buf,
    pub k_pe: &'a B::Buf,
    pub index_k: Option<&'a B::Buf>,
    pub first: usize,
    pub n: usize,
}

/// Row widths: latent, rope key, indexer key.
#[derive(Debug, Clone, Copy)]
struct Widths {
    latent: usize,
    k_pe: usize,
    index_k: Option<usize>,
}

impl<B: Backend> Block<B> {
    fn empty(backend: &B, w: Widths) -> Self {
        Self {
            latent: backend.zeros(KV_BLOCK * w.latent),
            k_pe: backend.zeros(KV_BLOCK * w.k_pe),
            index_k: w.index_k.map(|d| backend.zeros(KV_BLOCK * d)),
        }
    }

    fn copy(&self, backend: &B, w: Widths) -> Self {
        let mut copy = Self::empty(backend, w);
        backend.copy_rows(&mut copy.latent, 0, &self.latent, 0, KV_BLOCK, w.latent);
        backend.copy_rows(&mut copy.k_pe, 0, &self.k_pe, 0, KV_BLOCK, w.k_pe);
        if let (Some(dst), Some(src), Some(d)) =
            (copy.index_k.as_mut(), self.index_k.as_ref(), w.index_k)
        {
            backend.copy_rows(dst, 0, src, 0, KV_BLOCK, d);
        }
        copy
    }
}

pub struct KvCache<B: Backend> {
    /// Per layer, its blocks in order.
    layers: Vec<Vec<Arc<Block<B>>>>,
    len: usize,
    widths: Widths,
}

impl<B: Backend> std::fmt::Debug for KvCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache").field("len", &self.len).finish()
    }
}

impl<B: Backend> KvCache<B> {
    pub fn new(config: &ModelConfig) -> Self {
        Self {
            layers: (0..config.num_layers).map(|_| Vec::new()).collect(),
            len: 0,
            widths: Widths {
                latent: config.kv_lora_rank,
                k_pe: config.qk_rope_head_dim,
                index_k: config.indexer.as_ref().map(|i| i.head_dim),
            },
        }
    }

    /// Writes `rows` for positions `len..len + n` of `layer` (the model writes every layer
    /// before [`KvCache::advance`] moves `len` on). A block shared with another cache is copied
    /// before it is written.
    pub fn write(&mut self, backend: &B, layer: usize, rows: &Rows<'_, B>) {
        let w = self.widths;
        let end = self.len + rows.n;
        while self.layers[layer].len() * KV_BLOCK < end {
            self.layers[layer].push(Arc::new(Block::empty(backend, w)));
        }
        let mut at = self.len;
        while at < end {
            let (index, offset) = (at / KV_BLOCK, at % KV_BLOCK);
            let count = (KV_BLOCK - offset).min(end - at);
            let from = rows.first + at - self.len;
            let slot = &mut self.layers[layer][index];
            if Arc::get_mut(slot).is_none() {
                *slot = Arc::new(slot.copy(backend, w));
            }
            let block = Arc::get_mut(slot).expect("a block this cache alone holds");
            backend.copy_rows(
                &mut block.latent,
                offset,
                rows.latent,
                from,
                count,
                w.latent,
            );
            backend.copy_rows(&mut block.k_pe, offset, rows.k_pe, from, count, w.k_pe);
            if let (Some(dst), Some(src), Some(d)) =
                (block.index_k.as_mut(), rows.index_k, w.index_k)
            {
                backend.copy_rows(dst, offset, src, from, count, d);
            }
            at += count;
        }
    }

    /// `layer`'s cached rows through `rows` tokens (the written ones included).
    fn paged<'a>(
        &'a self,
        layer: usize,
        rows: usize,
        part: impl Fn(&'a Block<B>) -> &'a B::Buf,
    ) -> Paged<'a, B::Buf> {
        Paged {
            blocks: self.layers[layer]
                .iter()
                .take(rows.div_ceil(KV_BLOCK))
                .map(|b| part(b))
                .collect(),
            len: rows,
        }
    }

    /// `layer`'s latent rows `(rows, kv_lora_rank)`.
    pub fn latent(&self, layer: usize, rows: usize) -> Paged<'_, B::Buf> {
        self.paged(layer, rows, |b| &b.latent)
    }

    /// `layer`'s rope-key rows `(rows, qk_rope_head_dim)`.
    pub fn k_pe(&self, layer: usize, rows: usize) -> Paged<'_, B::Buf> {
        self.paged(layer, rows, |b| &b.k_pe)
    }

    /// `layer`'s indexer-key rows `(rows, index_head_dim)`.
    pub fn index_k(&self, layer: usize, rows: usize) -> Paged<'_, B::Buf> {
        self.paged(layer, rows, |b| {
            b.index_k
                .as_ref()
                .expect("a cache of a model with an indexer")
        })
    }

    /// Fills an empty cache with `len` tokens of synthetic rows (unit normals from `seed`, drawn
    /// on the backend), so decode can be measured at long contexts without a prefill that long.
    /// Benchmarks only: the rows do not come from any text.
    pub fn fill_synthetic(&mut self, backend: &B, len: usize, seed: u64) {
        assert!(self.is_empty(), "fill_synthetic needs an empty cache");
        let w = self.widths;
        for (i, blocks) in self.layers.iter_mut().enumerate() {
            for b in 0..len.div_ceil(KV_BLOCK) {
                let stream = seed
                    .wrapping_add((i as u64) << 40)
                    .wrapping_add(3 * b as u64);
                let draw = |width: usize, s: u64| backend.random(KV_BLOCK * width, s, 0.0, 1.0);
                blocks.push(Arc::new(Block {
                    latent: draw(w.latent, stream),
                    k_pe: draw(w.k_pe, stream + 1),
                    index_k: w.index_k.map(|d| draw(d, stream + 2)),
                }));
            }
        }
        self.len = len;
    }

    /// The first `len` tokens, sharing this cache's blocks (no copy).
    pub fn prefix(&self, len: usize) -> Self {
        assert!(len <= self.len, "prefix longer than the cache");
        Self {
            layers: self
                .layers
                .iter()
                .map(|blocks| blocks[..len.div_ceil(KV_BLOCK)].to_vec())
                .collect(),
            len,
            widths: self.widths,
        }
    }

    /// Whether `other` holds the very blocks of this cache's first `len` tokens (shared, not
    /// copied).
    #[cfg(test)]
    pub(crate) fn shares_prefix(&self, other: &Self, len: usize) -> bool {
        let blocks = len.div_ceil(KV_BLOCK);
        self.layers.iter().zip(&other.layers).all(|(a, b)| {
            a.len() >= blocks
                && b.len() >= blocks
                && a[..blocks]
                    .iter()
                    .zip(&b[..blocks])
                    .all(|(x, y)| Arc::ptr_eq(x, y))
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::tooling::tiny::TinySpec;

    fn config() -> ModelConfig {
        ModelConfig::from_json(&TinySpec::tiny(300).config_json().to_string()).expect("config")
    }

    /// Rows whose values say which token they belong to.
    fn rows_for(tokens: std::ops::Range<usize>, width: usize) -> Vec<f32> {
        tokens
            .flat_map(|t| (0..width).map(move |i| (t * 1000 + i) as f32))
            .collect()
    }

    fn write_tokens(cache: &mut KvCache<Cpu>, tokens: std::ops::Range<usize>) {
        let w = cache.widths;
        let n = tokens.len();
        let latent = rows_for(tokens.clone(), w.latent);
        let k_pe = rows_for(tokens.clone(), w.k_pe);
        let index_k = rows_for(tokens, w.index_k.expect("indexer"));
        for layer in 0..cache.layers.len() {
            cache.write(
                &Cpu,
                layer,
                &Rows {
                    latent: &latent,
                    k_pe: &k_pe,
                    index_k: Some(&index_k),
                    first: 0,
                    n,
                },
            );
        }
        cache.advance(n);
    }

    fn row(paged: &Paged<'_, Vec<f32>>, s: usize, width: usize) -> Vec<f32> {
        paged.blocks[s / KV_BLOCK][(s % KV_BLOCK) * width..][..width].to_vec()
    }

    #[test]
    fn rows_land_in_blocks_across_block_boundaries() {
        let mut cache = KvCache::<Cpu>::new(&config());
        write_tokens(&mut cache, 0..50);
        write_tokens(&mut cache, 50..51);
        write_tokens(&mut cache, 51..200);
        assert_eq!(cache.len(), 200);
        let w = cache.widths;
        for layer in 0..cache.layers.len() {
            assert_eq!(cache.layers[layer].len(), 4);
            let latent = cache.latent(layer, 200);
            let index_k = cache.index_k(layer, 200);
            assert_eq!(latent.blocks.len(), 4);
            for s in [0, 49, 50, 63, 64, 127, 128, 199] {
                assert_eq!(row(&latent, s, w.latent), rows_for(s..s + 1, w.latent));
                let d = w.index_k.expect("indexer");
                assert_eq!(row(&index_k, s, d), rows_for(s..s + 1, d));
            }
        }
    }

    #[test]
    fn a_prefix_shares_blocks_and_writing_copies_only_the_shared_block_written() {
        let mut original = KvCache::<Cpu>::new(&config());
        write_tokens(&mut original, 0..150);
        let mut taken = original.prefix(100);
        assert!(taken.shares_prefix(&original, 100));
        assert_eq!(taken.len(), 100);
        // Token 100 falls in the second block, still shared: the copy keeps rows 64..100 and
        // leaves the original's rows 100..150 as they were.
        let latent_new: Vec<f32> = vec![-1.0; config().kv_lora_rank];
        let k_pe_new: Vec<f32> = vec![-1.0; config().qk_rope_head_dim];
        let index_new: Vec<f32> = vec![-1.0; 32];
        for layer in 0..taken.layers.len() {
            taken.write(
                &Cpu,
                layer,
                &Rows {
                    latent: &latent_new,
                    k_pe: &k_pe_new,
                    index_k: Some(&index_new),
                    first: 0,
                    n: 1,
                },
            );
        }
        taken.advance(1);
        let w = original.widths;
        assert!(taken.shares_prefix(&original, 64));
        assert!(!taken.shares_prefix(&original, 65));
        let mine = taken.latent(0, 101);
        let theirs = original.latent(0, 150);
        assert_eq!(row(&mine, 100, w.latent), latent_new);
        assert_eq!(row(&theirs, 100, w.latent), rows_for(100..101, w.latent));
        assert_eq!(row(&mine, 99, w.latent), rows_for(99..100, w.latent));
        assert_eq!(row(&mine, 10, w.latent), rows_for(10..11, w.latent));
    }
}
