//! The CPU backend: host `Vec<f32>` buffers, rayon across cores, inner loops written so the
//! compiler vectorises them (fixed-width accumulators, `chunks_exact`). Weight matrices are f32
//! ([`Cpu`]) or bf16 ([`CpuBf16`]: activations rounded to bf16 before each product, f32
//! accumulation, the CUDA backend's default arithmetic, and half the bytes to read).

mod products;

use rayon::prelude::*;

pub use products::dot;
use products::{axpy, bf16_bits};

use super::{Backend, KV_BLOCK, Paged, RopeStyle, Selection, WeightFormat};

/// The CPU backend, with bf16 weight matrices when `BF16`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend<const BF16: bool>;

/// f32 throughout.
pub type Cpu = CpuBackend<false>;
/// The value of [`Cpu`] (a type alias does not name a unit struct's value).
#[allow(non_upper_case_globals)]
pub const Cpu: Cpu = CpuBackend;

/// bf16 weight matrices, as the CUDA backend keeps them by default.
pub type CpuBf16 = CpuBackend<true>;
/// The value of [`CpuBf16`].
#[allow(non_upper_case_globals)]
pub const CpuBf16: CpuBf16 = CpuBackend;

/// A weight matrix on the host.
#[derive(Debug, Clone)]
pub enum CpuWeight {
    F32(Vec<f32>),
    /// bf16 bits.
    Bf16(Vec<u16>),
}

/// Cached row `s` of a paged cache of `width`-wide rows.
#[inline]
fn cached_row<'a>(paged: &Paged<'a, Vec<f32>>, s: usize, width: usize) -> &'a [f32] {
    &paged.blocks[s / KV_BLOCK][(s % KV_BLOCK) * width..][..width]
}

/// Cached positions per parallel task in attention and indexer kernels.
const POS_BLOCK: usize = 512;

/// Partial softmax state over a block of positions, for all heads of one query.
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
    acc: Vec<f32>,
}

impl<const BF16: bool> Backend for CpuBackend<BF16> {
    type Buf = Vec<f32>;
    type Weight = CpuWeight;

    fn name(&self) -> &'static str {
        if BF16 { "cpu-bf16" } else { "cpu" }
    }

    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn weight_format(&self) -> WeightFormat {
        if BF16 {
            WeightFormat::Bf16
        } else {
            WeightFormat::F32
        }
    }

    fn upload_weight(&self, data: &[f32]) -> CpuWeight {
        if BF16 {
            CpuWeight::Bf16(bf16_bits(data))
        } else {
            CpuWeight::F32(data.to_vec())
        }
    }

    fn embed(&self, table: &Vec<f32>, ids: &[u32], dim: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &id in ids {
            out.extend_from_slice(&table[id as usize * dim..][..dim]);
        }
        out
    }

    fn matmul(&self, x: &Vec<f32>, w: &CpuWeight, n: usize, k: usize, m: usize) -> Vec<f32> {
        match w {
            CpuWeight::F32(w) => products::matmul(x, w, n, k, m),
            CpuWeight::Bf16(w) => products::matmul(&products::rounded_to_bf16(x), w, n, k, m),
        }
    }

    fn head_matmul(
        &self,
        x: &Vec<f32>,
        w: &CpuWeight,
        n: usize,
        heads: usize,
        k: usize,
        m: usize,
    ) -> Vec<f32> {
        match w {
            CpuWeight::F32(w) => products::head_matmul(x, w, n, heads, k, m),
            CpuWeight::Bf16(w) => {
                products::head_matmul(&products::rounded_to_bf16(x), w, n, heads, k, m)
            }
        }
    }

    fn rms_norm(&self, x: &Vec<f32>, weight: &Vec<f32>, dim: usize, eps: f32) -> Vec<f32> {
        let mut out = x.clone();
        out.par_chunks_mut(dim).for_each(|row| {
            let ms = dot(row, row) / dim as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for (v, w) in row.iter_mut().zip(weight) {
                *v = *v * inv * w;
            }
        });
        out
    }

    fn layer_norm(
        &self,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        dim: usize,
        eps: f32,
    ) -> Vec<f32> {
        let mut out = x.clone();
        out.par_chunks_mut(dim).for_each(|row| {
            let mean = row.iter().sum::<f32>() / dim as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *v = (*v - mean) * inv * w + b;
            }
        });
        out
    }

    fn slice_cols(
        &self,
        x: &Vec<f32>,
        cols: usize,
        groups: usize,
        start: usize,
        len: usize,
    ) -> Vec<f32> {
        let width = cols / groups;
        let mut out = Vec::with_capacity(x.len() / cols * groups * len);
        for row in x.chunks_exact(cols) {
            for block in row.chunks_exact(width) {
                out.extend_from_slice(&block[start..start + len]);
            }
        }
        out
    }

    fn concat_cols(&self, a: &Vec<f32>, ca: usize, b: &Vec<f32>, cb: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(a.len() + b.len());
        for (ra, rb) in a.chunks_exact(ca).zip(b.chunks_exact(cb)) {
            out.extend_from_slice(ra);
            out.extend_from_slice(rb);
        }
        out
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        heads: usize,
        head_dim: usize,
        rope_dim: usize,
        positions: &[usize],
        cos: &Vec<f32>,
        sin: &Vec<f32>,
        style: RopeStyle,
    ) {
        let half = rope_dim / 2;
        for (row, &pos) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
            let (cos, sin) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
            for head in row.chunks_exact_mut(head_dim) {
                for i in 0..half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::HalfSplit => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }

    fn silu_mul(&self, gate: &Vec<f32>, up: &Vec<f32>) -> Vec<f32> {
        gate.iter()
            .zip(up)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect()
    }

    fn add_assign(&self, x: &mut Vec<f32>, y: &Vec<f32>) {
        for (x, y) in x.iter_mut().zip(y) {
            *x += y;
        }
    }

    fn scatter_add_rows(
        &self,
        out: &mut Vec<f32>,
        y: &Vec<f32>,
        rows: &[usize],
        scale: &[f32],
        dim: usize,
    ) {
        for ((yr, &r), &s) in y.chunks_exact(dim).zip(rows).zip(scale) {
            axpy(&mut out[r * dim..][..dim], s, yr);
        }
    }

    fn gather_rows(&self, x: &Vec<f32>, rows: &[usize], dim: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            out.extend_from_slice(&x[r * dim..][..dim]);
        }
        out
    }

    fn concat_rows(&self, parts: &[Vec<f32>]) -> Vec<f32> {
        parts.concat()
    }

    fn copy_rows(
        &self,
        dst: &mut Vec<f32>,
        at: usize,
        src: &Vec<f32>,
        from: usize,
        count: usize,
        width: usize,
    ) {
        dst[at * width..(at + count) * width]
            .copy_from_slice(&src[from * width..(from + count) * width]);
    }

    fn mla_attention(
        &self,
        q_lat: &Vec<f32>,
        q_pe: &Vec<f32>,
        c: &Paged<'_, Vec<f32>>,
        k_pe: &Paged<'_, Vec<f32>>,
        heads: usize,
        r: usize,
        p: usize,
        positions: &[usize],
        selection: Selection<'_>,
        scale: f32,
    ) -> Vec<f32> {
        let n = positions.len();
        let mut out = vec![0f32; n * heads * r];
        out.par_chunks_mut(heads * r)
            .enumerate()
            .for_each(|(t, out)| {
                let q_lat = &q_lat[t * heads * r..][..heads * r];
                let q_pe = &q_pe[t * heads * p..][..heads * p];
                let allowed: Vec<u32> = match selection {
                    Selection::Causal => (0..=positions[t] as u32).collect(),
                    Selection::Sparse(sel) => sel[t].clone(),
                };
                // Blocks of positions in parallel, each with its own running softmax, merged after
                // (this keeps both cores busy when one query attends to a long context).
                let partials: Vec<Partial> = allowed
                    .par_chunks(POS_BLOCK)
                    .map(|block| {
                        let mut scores = vec![0f32; heads * block.len()];
                        for (j, &s) in block.iter().enumerate() {
                            let cs = cached_row(c, s as usize, r);
                            let ps = cached_row(k_pe, s as usize, p);
                            for h in 0..heads {
                                scores[h * block.len() + j] = (dot(&q_lat[h * r..][..r], cs)
                                    + dot(&q_pe[h * p..][..p], ps))
                                    * scale;
                            }
                        }
                        let mut part = Partial {
                            max: vec![f32::NEG_INFINITY; heads],
                            sum: vec![0.0; heads],
                            acc: vec![0.0; heads * r],
                        };
                        for h in 0..heads {
                            let row = &mut scores[h * block.len()..][..block.len()];
                            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                            let mut sum = 0.0;
                            for v in row.iter_mut() {
                                *v = (*v - max).exp();
                                sum += *v;
                            }
                            part.max[h] = max;
                            part.sum[h] = sum;
                        }
                        for (j, &s) in block.iter().enumerate() {
                            let cs = cached_row(c, s as usize, r);
                            for h in 0..heads {
                                axpy(&mut part.acc[h * r..][..r], scores[h * block.len() + j], cs);
                            }
                        }
                        part
                    })
                    .collect();
                for h in 0..heads {
                    let max = partials
                        .iter()
                        .map(|b| b.max[h])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let mut total = 0.0;
                    let o = &mut out[h * r..][..r];
                    for b in &partials {
                        let w = (b.max[h] - max).exp();
                        total += w * b.sum[h];
                        axpy(o, w, &b.acc[h * r..][..r]);
                    }
                    let inv = 1.0 / total;
                    for v in o.iter_mut() {
                        *v *= inv;
                    }
                }
            });
        out
    }

    fn indexer_scores(
        &self,
        q: &Vec<f32>,
        w: &Vec<f32>,
        k: &Paged<'_, Vec<f32>>,
        heads: usize,
        d: usize,
        positions: &[usize],
        scale: f32,
    ) -> Vec<f32> {
        let len = k.len;
        let mut out = vec![f32::NEG_INFINITY; positions.len() * len];
        for (t, row) in out.chunks_exact_mut(len).enumerate() {
            let q = &q[t * heads * d..][..heads * d];
            let w = &w[t * heads..][..heads];
            let visible = (positions[t] + 1).min(len);
            row[..visible]
                .par_chunks_mut(POS_BLOCK)
                .enumerate()
                .for_each(|(b, scores)| {
                    for (j, score) in scores.iter_mut().enumerate() {
                        let ks = cached_row(k, b * POS_BLOCK + j, d);
                        let mut sum = 0.0;
                        for (qh, wh) in q.chunks_exact(d).zip(w) {
                            sum += wh * dot(qh, ks).max(0.0);
                        }
                        *score = sum * scale;
                    }
                });
        }
        out
    }

    fn topk(&self, scores: &Vec<f32>, len: usize, k: usize) -> Vec<Vec<u32>> {
        scores
            .par_chunks(len)
            .map(|row| {
                let mut candidates: Vec<(f32, u32)> = row
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, v)| (*v, i as u32))
                    .collect();
                if candidates.len() > k {
                    candidates.select_nth_unstable_by(k - 1, |a, b| {
                        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
                    });
                    candidates.truncate(k);
                }
                let mut picked: Vec<u32> = candidates.into_iter().map(|(_, i)| i).collect();
                picked.sort_unstable();
                picked
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive_for_one_and_many_rows() {
        let (k, m) = (19, 37);
        let w: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        for n in [1, 3] {
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let y = Cpu.matmul(&x, &Cpu.upload_weight(&w), n, k, m);
            for i in 0..n {
                for j in 0..m {
                    let expect: f32 = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
                    assert!((y[i * m + j] - expect).abs() < 1e-4, "{i},{j}");
                }
            }
        }
    }

    #[test]
    fn bf16_products_are_f32_products_of_the_rounded_values() {
        let (n, heads, k, m) = (3, 2, 40, 24);
        let x: Vec<f32> = (0..n * heads * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3)
            .collect();
        let w: Vec<f32> = (0..heads * k * m)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 31.1)
            .collect();
        let (xr, wr) = (products::rounded_to_bf16(&x), products::rounded_to_bf16(&w));
        assert_ne!(
            x, xr,
            "the inputs must lose bits in bf16 for this test to mean anything"
        );
        let exact = Cpu.matmul(&xr, &Cpu.upload_weight(&wr), n, heads * k, m);
        let bf16 = CpuBf16.matmul(&x, &CpuBf16.upload_weight(&w), n, heads * k, m);
        assert_eq!(bf16, exact);
        let exact = Cpu.head_matmul(&xr, &Cpu.upload_weight(&wr), n, heads, k, m);
        let bf16 = CpuBf16.head_matmul(&x, &CpuBf16.upload_weight(&w), n, heads, k, m);
        assert_eq!(bf16, exact);
        assert_ne!(
            Cpu.matmul(&x, &Cpu.upload_weight(&w), n, heads * k, m),
            exact
        );
    }

    #[test]
    fn attention_blocks_merge_to_the_plain_softmax() {
        // One head, r = 2, p = 2, 1300 positions: three blocks merged.
        let len = 1300;
        let c: Vec<f32> = (0..len * 2)
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect();
        let k_pe: Vec<f32> = (0..len * 2).map(|i| ((i % 5) as f32 - 2.0) / 4.0).collect();
        let q_lat = vec![0.3, -0.2];
        let q_pe = vec![0.1, 0.4];
        // Blocks of KV_BLOCK rows, the last one partly written.
        let blocks = |data: &[f32]| -> Vec<Vec<f32>> {
            data.chunks(KV_BLOCK * 2)
                .map(|b| {
                    let mut b = b.to_vec();
                    b.resize(KV_BLOCK * 2, f32::NAN);
                    b
                })
                .collect()
        };
        let (c_blocks, k_pe_blocks) = (blocks(&c), blocks(&k_pe));
        let c_paged = Paged {
            blocks: c_blocks.iter().collect(),
            len,
        };
        let k_pe_paged = Paged {
            blocks: k_pe_blocks.iter().collect(),
            len,
        };
        let out = Cpu.mla_attention(
            &q_lat,
            &q_pe,
            &c_paged,
            &k_pe_paged,
            1,
            2,
            2,
            &[len - 1],
            Selection::Causal,
            0.7,
        );
        let scores: Vec<f32> = (0..len)
            .map(|s| {
                (dot(&q_lat, &c[s * 2..s * 2 + 2]) + dot(&q_pe, &k_pe[s * 2..s * 2 + 2])) * 0.7
            })
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = weights.iter().sum();
        for d in 0..2 {
            let expect: f32 = (0..len).map(|s| weights[s] * c[s * 2 + d]).sum::<f32>() / total;
            assert!((out[d] - expect).abs() < 1e-5);
        }
    }

    #[test]
    fn topk_keeps_the_largest_and_everything_when_short() {
        let scores = vec![0.5, 2.0, f32::NEG_INFINITY, 1.0, 3.0, 0.1];
        assert_eq!(Cpu.topk(&scores, 6, 2), vec![vec![1, 4]]);
        assert_eq!(Cpu.topk(&scores, 6, 10), vec![vec![0, 1, 3, 4, 5]]);
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let cos = vec![1.0, 0.0];
        let sin = vec![0.0, 1.0];
        // rope_dim 4 -> half 2; position 0: identity on pair 0, 90 degrees on pair 1.
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        Cpu.rope(&mut x, 1, 4, 4, &[0], &cos, &sin, RopeStyle::Interleaved);
        assert_eq!(x, vec![1.0, 2.0, -4.0, 3.0]);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        Cpu.rope(&mut x, 1, 4, 4, &[0], &cos, &sin, RopeStyle::HalfSplit);
        assert_eq!(x, vec![1.0, -4.0, 3.0, 2.0]);
    }
}
