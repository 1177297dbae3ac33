//! Matrix products on the host, for weights in f32 or in bf16 (kept as their 16 bits and widened
//! on the fly, so a bf16 model reads half the bytes). Both accumulate in f32 in the same order.

use rayon::prelude::*;

/// A stored weight value.
pub trait Element: Copy + Send + Sync {
    fn value(self) -> f32;
}

impl Element for f32 {
    #[inline]
    fn value(self) -> f32 {
        self
    }
}

/// bf16 bits: the top half of an f32.
impl Element for u16 {
    #[inline]
    fn value(self) -> f32 {
        f32::from_bits(u32::from(self) << 16)
    }
}

/// Dot product with eight independent accumulators (vectorises; sums in a fixed order).
#[inline]
pub fn dot<W: Element>(a: &[f32], b: &[W]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l].value();
        }
    }
    let mut tail = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y.value();
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

#[inline]
pub fn axpy<W: Element>(y: &mut [f32], a: f32, x: &[W]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x.value();
    }
}

/// Rows of the output computed per parallel task in `matmul`.
const ROW_BLOCK: usize = 16;

/// `x (n, k) · w (m, k)ᵀ -> (n, m)`.
pub fn matmul<W: Element>(x: &[f32], w: &[W], n: usize, k: usize, m: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), n * k);
    debug_assert_eq!(w.len(), m * k);
    if n == 1 {
        let mut y = vec![0f32; m];
        y.par_chunks_mut(ROW_BLOCK)
            .zip(w.par_chunks(ROW_BLOCK * k))
            .for_each(|(y, w)| {
                for (y, row) in y.iter_mut().zip(w.chunks_exact(k)) {
                    *y = dot(x, row);
                }
            });
        return y;
    }
    // Each task reads a block of weight rows once and applies it to every input row, so the
    // weights stream from memory once per call; the output is produced transposed.
    let mut yt = vec![0f32; m * n];
    yt.par_chunks_mut(ROW_BLOCK * n)
        .zip(w.par_chunks(ROW_BLOCK * k))
        .for_each(|(yt, w)| {
            for (yt, row) in yt.chunks_exact_mut(n).zip(w.chunks_exact(k)) {
                for (y, xi) in yt.iter_mut().zip(x.chunks_exact(k)) {
                    *y = dot(xi, row);
                }
            }
        });
    let mut y = vec![0f32; n * m];
    for (j, col) in yt.chunks_exact(n).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * m + j] = *v;
        }
    }
    y
}

/// Per head: `x (n, heads, k) · w[h] (k, m) -> (n, heads, m)`, with `w (heads, k, m)`.
pub fn head_matmul<W: Element>(
    x: &[f32],
    w: &[W],
    n: usize,
    heads: usize,
    k: usize,
    m: usize,
) -> Vec<f32> {
    debug_assert_eq!(x.len(), n * heads * k);
    debug_assert_eq!(w.len(), heads * k * m);
    let mut y = vec![0f32; n * heads * m];
    y.par_chunks_mut(m).enumerate().for_each(|(row, y)| {
        let h = row % heads;
        let xr = &x[row * k..][..k];
        let wh = &w[h * k * m..][..k * m];
        for (xi, wrow) in xr.iter().zip(wh.chunks_exact(m)) {
            axpy(y, *xi, wrow);
        }
    });
    y
}

/// bf16 bits of each value, rounded to nearest even (the CUDA kernels' `dsgw_to_bf16`).
pub fn bf16_bits(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect()
}

/// Each value rounded to the nearest bf16, kept as f32: the activations of a bf16 product.
pub fn rounded_to_bf16(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}
