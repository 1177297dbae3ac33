//! The numeric kernels the model is written against, and the backends that implement them.
//!
//! Buffers belong to the backend (host memory for the CPU, device memory for CUDA) and are plain
//! row-major f32 arrays; shapes are passed explicitly and documented on each method as
//! `(rows, cols)`. The model never touches a buffer's contents directly, so a CUDA backend slots in
//! by implementing this trait, without changes to the model code.

pub mod cpu;
pub mod cuda;

use crate::model::gate::MoeGate;

/// Which positions each query attends to.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Every cached position up to the query's own (dense causal attention).
    Causal,
    /// DeepSeek Sparse Attention: for query `t`, the positions in `selected[t]`.
    Sparse(&'a [Vec<u32>]),
}

/// Rotary embedding layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(x[2i], x[2i+1])`: MLA's layout.
    Interleaved,
    /// Pairs `(x[i], x[i + d/2])`: the indexer's layout (NeoX style).
    HalfSplit,
}

/// Rows per KV-cache block: caches are allocated, shared with the prefix cache and copied on
/// write in blocks of this many tokens (DeepSeek's cache unit).
pub use dsgw_kernels::launch::KV_BLOCK;

/// Cached rows of one width in blocks of [`KV_BLOCK`] rows: row `s` is row `s % KV_BLOCK` of
/// `blocks[s / KV_BLOCK]`. Blocks are allocated whole; the last may be partly written.
#[derive(Debug)]
pub struct Paged<'a, T> {
    pub blocks: Vec<&'a T>,
    /// Rows written.
    pub len: usize,
}

/// How a backend stores weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    #[default]
    F32,
    /// bfloat16 (half the memory and bandwidth); products accumulate in f32.
    Bf16,
}

impl WeightFormat {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 => 2,
        }
    }
}

pub trait Backend: Send + Sync + 'static {
    type Buf: Send + Sync;
    /// A weight matrix, the right-hand side of [`Backend::matmul`] and [`Backend::head_matmul`],
    /// in the backend's [`WeightFormat`].
    type Weight: Send + Sync;

    fn name(&self) -> &'static str;
    fn upload(&self, data: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// `len` zeros.
    fn zeros(&self, len: usize) -> Self::Buf {
        self.upload(&vec![0.0; len])
    }
    /// How this backend holds weight matrices.
    fn weight_format(&self) -> WeightFormat {
        WeightFormat::F32
    }
    /// A weight matrix from f32 values (rounded to the backend's weight format).
    fn upload_weight(&self, data: &[f32]) -> Self::Weight;

    /// `len` values from N(mean, std²), value `i` a pure function of `(seed, i)`
    /// ([`crate::random::normal_at`]), so every backend draws the same ones (to a few ulp: each
    /// device's `log` and `cos` round in their own way). Synthetic models and
    /// caches are made with it; a device backend draws them where they are used.
    fn random(&self, len: usize, seed: u64, mean: f32, std: f32) -> Self::Buf {
        self.upload(&crate::random::normals(len, seed, mean, std))
    }
    /// A weight matrix of [`Backend::random`] values.
    fn random_weight(&self, len: usize, seed: u64, std: f32) -> Self::Weight {
        self.upload_weight(&crate::random::normals(len, seed, 0.0, std))
    }
    /// The MoE gate for every token of `logits (tokens, experts)`: each token's chosen experts
    /// and weights, as [`MoeGate::route`] selects them.
    fn route(&self, logits: &Self::Buf, gate: &MoeGate<'_>) -> Vec<Vec<(usize, f32)>> {
        self.download(logits)
            .chunks_exact(gate.config.n_routed_experts)
            .map(|row| gate.route(row))
            .collect()
    }

    /// Rows of `table (vocab, dim)` for `ids`: `(ids.len(), dim)`.
    fn embed(&self, table: &Self::Buf, ids: &[u32], dim: usize) -> Self::Buf;
    /// `x (n, k) · w (m, k)ᵀ -> (n, m)`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight, n: usize, k: usize, m: usize) -> Self::Buf;
    /// Per head: `x (n, heads, k) · w[h] (k, m) -> (n, heads, m)`, with `w (heads, k, m)`.
    fn head_matmul(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        n: usize,
        heads: usize,
        k: usize,
        m: usize,
    ) -> Self::Buf;
    /// Row-wise RMSNorm of `x (rows, dim)`.
    fn rms_norm(&self, x: &Self::Buf, weight: &Self::Buf, dim: usize, eps: f32) -> Self::Buf;
    /// Row-wise LayerNorm (with bias) of `x (rows, dim)`.
    fn layer_norm(
        &self,
        x: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        dim: usize,
        eps: f32,
    ) -> Self::Buf;
    /// Columns `[start, start + len)` of `x (rows, cols)`, with a row stride of `cols`: `(rows, len)`.
    /// With `groups > 1`, the row is `groups` blocks of `cols / groups` and the columns are taken
    /// from each block (per-head slices): `(rows, groups * len)`.
    fn slice_cols(
        &self,
        x: &Self::Buf,
        cols: usize,
        groups: usize,
        start: usize,
        len: usize,
    ) -> Self::Buf;
    /// Concatenates per row: `a (rows, ca)` and `b (rows, cb)` -> `(rows, ca + cb)`.
    fn concat_cols(&self, a: &Self::Buf, ca: usize, b: &Self::Buf, cb: usize) -> Self::Buf;
    /// Rotates `x (rows, heads * head_dim)` in place: in each head, the first `rope_dim` values.
    /// `cos`/`sin` are `(max_position, rope_dim / 2)`; row `r` sits at `positions[r]`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        heads: usize,
        head_dim: usize,
        rope_dim: usize,
        positions: &[usize],
        cos: &Self::Buf,
        sin: &Self::Buf,
        style: RopeStyle,
    );
    /// `silu(gate) * up`, element-wise.
    fn silu_mul(&self, gate: &Self::Buf, up: &Self::Buf) -> Self::Buf;
    /// `x += y`, element-wise.
    fn add_assign(&self, x: &mut Self::Buf, y: &Self::Buf);
    /// `out[rows[i]] += scale[i] * y[i]` for each row `i` of `y (rows.len(), dim)`.
    fn scatter_add_rows(
        &self,
        out: &mut Self::Buf,
        y: &Self::Buf,
        rows: &[usize],
        scale: &[f32],
        dim: usize,
    );
    /// Rows `rows` of `x (_, dim)`.
    fn gather_rows(&self, x: &Self::Buf, rows: &[usize], dim: usize) -> Self::Buf;
    /// Stacks row blocks of equal width.
    fn concat_rows(&self, parts: &[Self::Buf]) -> Self::Buf;
    /// Copies rows `[from, from + count)` of `src` over rows `[at, at + count)` of `dst`, both
    /// of `width`-wide rows (writing new tokens into a cache block, copying a shared block).
    #[allow(clippy::too_many_arguments)]
    fn copy_rows(
        &self,
        dst: &mut Self::Buf,
        at: usize,
        src: &Self::Buf,
        from: usize,
        count: usize,
        width: usize,
    );
    /// Multi-query attention over the MLA latent cache (the absorbed form).
    /// `q_lat (n, heads, r)` and `q_pe (n, heads, p)` against the cached `c (len, r)` and
    /// `k_pe (len, p)`;
    /// query `t` sits at position `positions[t]` and sees the positions `selection` allows.
    /// Returns the attention-weighted latent `(n, heads, r)`.
    #[allow(clippy::too_many_arguments)]
    fn mla_attention(
        &self,
        q_lat: &Self::Buf,
        q_pe: &Self::Buf,
        c: &Paged<'_, Self::Buf>,
        k_pe: &Paged<'_, Self::Buf>,
        heads: usize,
        r: usize,
        p: usize,
        positions: &[usize],
        selection: Selection<'_>,
        scale: f32,
    ) -> Self::Buf;
    /// Lightning-indexer scores `(n, len)`: `sum_h w[t,h] * relu(q[t,h] · k[s]) * scale` for
    /// `s <= positions[t]`, `-inf` after. `q (n, heads, d)`, `w (n, heads)`, the cached
    /// `k (len, d)`.
    #[allow(clippy::too_many_arguments)]
    fn indexer_scores(
        &self,
        q: &Self::Buf,
        w: &Self::Buf,
        k: &Paged<'_, Self::Buf>,
        heads: usize,
        d: usize,
        positions: &[usize],
        scale: f32,
    ) -> Self::Buf;
    /// For each row of `scores (n, len)`, the indices of its `k` largest finite values, ascending.
    fn topk(&self, scores: &Self::Buf, len: usize, k: usize) -> Vec<Vec<u32>>;
}
