//! Backend conformance: every operation of the [`Backend`] trait run on a reference backend and
//! a candidate with the same random inputs, and the largest relative difference reported. The
//! device check (`dsgw engine device-check`) runs it with the CPU as the reference and CUDA as
//! the candidate; on machines without a GPU it is tested against a CPU backend with a planted
//! fault, so the harness itself is known to catch one.

use crate::backend::{Backend, KV_BLOCK, Paged, RopeStyle, Selection};
use crate::random::SplitMix;

/// Shapes the operations run at: DeepSeek-V3.2's per-head sizes with few heads, short caches.
#[derive(Debug, Clone, Copy)]
pub struct Shapes {
    pub rows: usize,
    pub dim: usize,
    pub heads: usize,
    /// Latent and rope widths of MLA (512 and 64 in V3.2).
    pub r: usize,
    pub p: usize,
    /// Cached positions.
    pub len: usize,
    pub index_heads: usize,
    pub index_dim: usize,
    pub topk: usize,
}

impl Shapes {
    /// V3.2's widths (latent 512, rope 64, indexer 64 x 128) with a few heads and rows.
    pub fn v32() -> Self {
        Self {
            rows: 5,
            dim: 1024,
            heads: 8,
            r: 512,
            p: 64,
            len: 3000,
            index_heads: 64,
            index_dim: 128,
            topk: 2048,
        }
    }

    /// Small, for tests on the CPU.
    pub fn small() -> Self {
        Self {
            rows: 3,
            dim: 48,
            heads: 2,
            r: 16,
            p: 8,
            len: 150,
            index_heads: 4,
            index_dim: 8,
            topk: 10,
        }
    }
}

/// One operation's agreement.
#[derive(Debug, Clone)]
pub struct OpReport {
    pub op: &'static str,
    /// Largest `|a - b| / max(1, |a|)` over the outputs (0 when equal; infinite on NaN or a
    /// length mismatch, e.g. a kernel that left poisoned values behind).
    pub max_rel_error: f64,
}

fn random(rng: &mut SplitMix, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * scale)
        .collect()
}

fn paged<T>(blocks: &[T], len: usize) -> Paged<'_, T> {
    Paged {
        blocks: blocks.iter().collect(),
        len,
    }
}

/// Largest `|a - b| / max(1, |a|)`; infinite on NaN or a length mismatch.
pub fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_nan() || y.is_nan() {
                // A NaN on either side is a poisoned or broken output, never agreement.
                return f64::INFINITY;
            }
            if x == y {
                return 0.0;
            }
            let d = f64::from((x - y).abs()) / f64::from(x.abs()).max(1.0);
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}

/// Runs every operation on both backends.
pub fn compare<A: Backend, B: Backend>(
    reference: &A,
    candidate: &B,
    shapes: Shapes,
    seed: u64,
) -> Vec<OpReport> {
    let mut rng = SplitMix::new(seed);
    let s = shapes;
    let mut reports = Vec::new();
    let mut check = |op: &'static str, a: Vec<f32>, b: Vec<f32>| {
        reports.push(OpReport {
            op,
            max_rel_error: rel_error(&a, &b),
        });
    };
    macro_rules! both {
        ($data:expr) => {{
            let d: Vec<f32> = $data;
            (reference.upload(&d), candidate.upload(&d))
        }};
    }
    // A cache in blocks of KV_BLOCK rows, the unwritten rows of the last one NaN: a kernel
    // that reads past the cached rows shows.
    macro_rules! both_paged {
        ($data:expr, $width:expr) => {{
            let d: Vec<f32> = $data;
            let width = $width;
            let blocks: Vec<Vec<f32>> = d
                .chunks(KV_BLOCK * width)
                .map(|c| {
                    let mut c = c.to_vec();
                    c.resize(KV_BLOCK * width, f32::NAN);
                    c
                })
                .collect();
            (
                blocks
                    .iter()
                    .map(|b| reference.upload(b))
                    .collect::<Vec<_>>(),
                blocks
                    .iter()
                    .map(|b| candidate.upload(b))
                    .collect::<Vec<_>>(),
            )
        }};
    }
    macro_rules! both_weights {
        ($data:expr) => {{
            let d: Vec<f32> = $data;
            (reference.upload_weight(&d), candidate.upload_weight(&d))
        }};
    }

    let x = random(&mut rng, s.rows * s.dim, 1.0);
    let (xa, xb) = both!(x.clone());
    let (wa, wb) = both!(random(&mut rng, s.dim, 1.0));
    let (ba, bb) = both!(random(&mut rng, s.dim, 0.5));
    check(
        "rms_norm",
        reference.download(&reference.rms_norm(&xa, &wa, s.dim, 1e-6)),
        candidate.download(&candidate.rms_norm(&xb, &wb, s.dim, 1e-6)),
    );
    check(
        "layer_norm",
        reference.download(&reference.layer_norm(&xa, &wa, &ba, s.dim, 1e-6)),
        candidate.download(&candidate.layer_norm(&xb, &wb, &bb, s.dim, 1e-6)),
    );

    let m = s.dim / 2;
    let (ma, mb) = both_weights!(random(&mut rng, m * s.dim, 0.05));
    check(
        "matmul",
        reference.download(&reference.matmul(&xa, &ma, s.rows, s.dim, m)),
        candidate.download(&candidate.matmul(&xb, &mb, s.rows, s.dim, m)),
    );
    let k = s.dim / s.heads;
    let (ha, hb) = both_weights!(random(&mut rng, s.heads * k * 32, 0.1));
    check(
        "head_matmul",
        reference.download(&reference.head_matmul(&xa, &ha, s.rows, s.heads, k, 32)),
        candidate.download(&candidate.head_matmul(&xb, &hb, s.rows, s.heads, k, 32)),
    );

    let (ga, gb) = both!(random(&mut rng, s.rows * s.dim, 3.0));
    check(
        "silu_mul",
        reference.download(&reference.silu_mul(&ga, &xa)),
        candidate.download(&candidate.silu_mul(&gb, &xb)),
    );
    let (mut aa, mut ab) = both!(x.clone());
    reference.add_assign(&mut aa, &ga);
    candidate.add_assign(&mut ab, &gb);
    check(
        "add_assign",
        reference.download(&aa),
        candidate.download(&ab),
    );

    let rows: Vec<usize> = (0..7).map(|i| (i * 5 + 1) % s.rows).collect();
    let scale: Vec<f32> = random(&mut rng, rows.len(), 1.0);
    let (ya, yb) = both!(random(&mut rng, rows.len() * s.dim, 1.0));
    let (mut oa, mut ob) = both!(x.clone());
    reference.scatter_add_rows(&mut oa, &ya, &rows, &scale, s.dim);
    candidate.scatter_add_rows(&mut ob, &yb, &rows, &scale, s.dim);
    check(
        "scatter_add_rows",
        reference.download(&oa),
        candidate.download(&ob),
    );
    check(
        "gather_rows",
        reference.download(&reference.gather_rows(&xa, &rows, s.dim)),
        candidate.download(&candidate.gather_rows(&xb, &rows, s.dim)),
    );
    let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    check(
        "embed",
        reference.download(&reference.embed(&xa, &ids, s.dim)),
        candidate.download(&candidate.embed(&xb, &ids, s.dim)),
    );
    check(
        "slice_cols",
        reference.download(&reference.slice_cols(&xa, s.dim, s.heads, 2, 5)),
        candidate.download(&candidate.slice_cols(&xb, s.dim, s.heads, 2, 5)),
    );
    check(
        "concat_cols",
        reference.download(&reference.concat_cols(&xa, s.dim, &ga, s.dim)),
        candidate.download(&candidate.concat_cols(&xb, s.dim, &gb, s.dim)),
    );
    check(
        "concat_rows",
        reference.download(
            &reference.concat_rows(&[ga_clone(reference, &xa), ga_clone(reference, &ga)]),
        ),
        candidate.download(
            &candidate.concat_rows(&[ga_clone(candidate, &xb), ga_clone(candidate, &gb)]),
        ),
    );
    let (mut ca, mut cb) = both!(random(&mut rng, (s.rows + 1) * s.dim, 1.0));
    reference.copy_rows(&mut ca, 2, &xa, 1, s.rows - 1, s.dim);
    candidate.copy_rows(&mut cb, 2, &xb, 1, s.rows - 1, s.dim);
    check(
        "copy_rows",
        reference.download(&ca),
        candidate.download(&cb),
    );

    let rope_dim = 2 * (k / 4);
    let positions: Vec<usize> = (0..s.rows).map(|i| i * 3 + 1).collect();
    let max_pos = s.rows * 3 + 2;
    let angles: Vec<f32> = (0..max_pos * rope_dim / 2)
        .map(|i| (i as f32) * 0.37)
        .collect();
    let (cosa, cosb) = both!(angles.iter().map(|a| a.cos()).collect());
    let (sina, sinb) = both!(angles.iter().map(|a| a.sin()).collect());
    for (op, style) in [
        ("rope_interleaved", RopeStyle::Interleaved),
        ("rope_half_split", RopeStyle::HalfSplit),
    ] {
        let (mut ra, mut rb) = both!(x.clone());
        reference.rope(
            &mut ra, s.heads, k, rope_dim, &positions, &cosa, &sina, style,
        );
        candidate.rope(
            &mut rb, s.heads, k, rope_dim, &positions, &cosb, &sinb, style,
        );
        check(op, reference.download(&ra), candidate.download(&rb));
    }

    // Attention over a cache of `len` positions, the queries at its end.
    let q_positions: Vec<usize> = (0..s.rows).map(|i| s.len - s.rows + i).collect();
    let (qla, qlb) = both!(random(&mut rng, s.rows * s.heads * s.r, 0.1));
    let (qpa, qpb) = both!(random(&mut rng, s.rows * s.heads * s.p, 0.1));
    let (lca, lcb) = both_paged!(random(&mut rng, s.len * s.r, 1.0), s.r);
    let (kpa, kpb) = both_paged!(random(&mut rng, s.len * s.p, 1.0), s.p);
    let (lca, lcb, kpa, kpb) = (
        paged(&lca, s.len),
        paged(&lcb, s.len),
        paged(&kpa, s.len),
        paged(&kpb, s.len),
    );
    let attn_scale = 1.0 / ((s.r + s.p) as f32).sqrt();
    check(
        "mla_attention_dense",
        reference.download(&reference.mla_attention(
            &qla,
            &qpa,
            &lca,
            &kpa,
            s.heads,
            s.r,
            s.p,
            &q_positions,
            Selection::Causal,
            attn_scale,
        )),
        candidate.download(&candidate.mla_attention(
            &qlb,
            &qpb,
            &lcb,
            &kpb,
            s.heads,
            s.r,
            s.p,
            &q_positions,
            Selection::Causal,
            attn_scale,
        )),
    );

    let (iqa, iqb) = both!(random(&mut rng, s.rows * s.index_heads * s.index_dim, 1.0));
    let (iwa, iwb) = both!(random(&mut rng, s.rows * s.index_heads, 1.0));
    let (ika, ikb) = both_paged!(random(&mut rng, s.len * s.index_dim, 1.0), s.index_dim);
    let (ika, ikb) = (paged(&ika, s.len), paged(&ikb, s.len));
    let index_scale = 1.0 / (s.index_dim as f32).sqrt();
    let scores_a = reference.indexer_scores(
        &iqa,
        &iwa,
        &ika,
        s.index_heads,
        s.index_dim,
        &q_positions,
        index_scale,
    );
    let scores_b = candidate.indexer_scores(
        &iqb,
        &iwb,
        &ikb,
        s.index_heads,
        s.index_dim,
        &q_positions,
        index_scale,
    );
    check(
        "indexer_scores",
        reference.download(&scores_a),
        candidate.download(&scores_b),
    );
    let top_a = reference.topk(&scores_a, s.len, s.topk);
    let top_b = candidate.topk(&scores_b, s.len, s.topk);
    // Index sets: the share of selected positions that differ (ties at the cut may differ
    // only when the scores themselves differ in the last bits).
    let differing = top_a
        .iter()
        .zip(&top_b)
        .map(|(a, b)| a.iter().filter(|i| !b.contains(i)).count() + a.len().abs_diff(b.len()))
        .sum::<usize>();
    let topk_error = differing as f64 / (s.rows * s.topk).max(1) as f64;
    check(
        "mla_attention_sparse",
        reference.download(&reference.mla_attention(
            &qla,
            &qpa,
            &lca,
            &kpa,
            s.heads,
            s.r,
            s.p,
            &q_positions,
            Selection::Sparse(&top_a),
            attn_scale,
        )),
        candidate.download(&candidate.mla_attention(
            &qlb,
            &qpb,
            &lcb,
            &kpb,
            s.heads,
            s.r,
            s.p,
            &q_positions,
            Selection::Sparse(&top_a),
            attn_scale,
        )),
    );
    reports.push(OpReport {
        op: "topk (share of indices that differ)",
        max_rel_error: topk_error,
    });
    let n = s.len * s.index_dim;
    reports.push(OpReport {
        op: "random",
        max_rel_error: rel_error(
            &reference.download(&reference.random(n, seed, 0.5, 2.0)),
            &candidate.download(&candidate.random(n, seed, 0.5, 2.0)),
        ),
    });
    let m = s.dim / 4;
    reports.push(OpReport {
        op: "random_weight (through matmul)",
        max_rel_error: rel_error(
            &reference.download(&reference.matmul(
                &xa,
                &reference.random_weight(m * s.dim, seed, 0.05),
                s.rows,
                s.dim,
                m,
            )),
            &candidate.download(&candidate.matmul(
                &xb,
                &candidate.random_weight(m * s.dim, seed, 0.05),
                s.rows,
                s.dim,
                m,
            )),
        ),
    });
    reports
}

/// A copy of a buffer through the backend (download and upload: slow, for checks only).
fn ga_clone<B: Backend>(backend: &B, buf: &B::Buf) -> B::Buf {
    backend.upload(&backend.download(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{Cpu, CpuWeight};

    /// The CPU backend with one planted fault: every matmul result is off by 1e-3.
    struct Faulty;

    impl Backend for Faulty {
        type Buf = Vec<f32>;
        type Weight = CpuWeight;
        fn name(&self) -> &'static str {
            "faulty"
        }
        fn upload(&self, data: &[f32]) -> Vec<f32> {
            Cpu.upload(data)
        }
        fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
            Cpu.download(buf)
        }
        fn len(&self, buf: &Vec<f32>) -> usize {
            Cpu.len(buf)
        }
        fn upload_weight(&self, data: &[f32]) -> CpuWeight {
            Cpu.upload_weight(data)
        }
        fn embed(&self, t: &Vec<f32>, ids: &[u32], dim: usize) -> Vec<f32> {
            Cpu.embed(t, ids, dim)
        }
        fn matmul(&self, x: &Vec<f32>, w: &CpuWeight, n: usize, k: usize, m: usize) -> Vec<f32> {
            Cpu.matmul(x, w, n, k, m)
                .into_iter()
                .map(|v| v + 1e-3)
                .collect()
        }
        fn head_matmul(
            &self,
            x: &Vec<f32>,
            w: &CpuWeight,
            n: usize,
            h: usize,
            k: usize,
            m: usize,
        ) -> Vec<f32> {
            Cpu.head_matmul(x, w, n, h, k, m)
        }
        fn rms_norm(&self, x: &Vec<f32>, w: &Vec<f32>, dim: usize, eps: f32) -> Vec<f32> {
            Cpu.rms_norm(x, w, dim, eps)
        }
        fn layer_norm(
            &self,
            x: &Vec<f32>,
            w: &Vec<f32>,
            b: &Vec<f32>,
            dim: usize,
            eps: f32,
        ) -> Vec<f32> {
            Cpu.layer_norm(x, w, b, dim, eps)
        }
        fn slice_cols(
            &self,
            x: &Vec<f32>,
            cols: usize,
            groups: usize,
            start: usize,
            len: usize,
        ) -> Vec<f32> {
            Cpu.slice_cols(x, cols, groups, start, len)
        }
        fn concat_cols(&self, a: &Vec<f32>, ca: usize, b: &Vec<f32>, cb: usize) -> Vec<f32> {
            Cpu.concat_cols(a, ca, b, cb)
        }
        fn rope(
            &self,
            x: &mut Vec<f32>,
            h: usize,
            hd: usize,
            rd: usize,
            pos: &[usize],
            c: &Vec<f32>,
            s: &Vec<f32>,
            style: RopeStyle,
        ) {
            Cpu.rope(x, h, hd, rd, pos, c, s, style)
        }
        fn silu_mul(&self, g: &Vec<f32>, u: &Vec<f32>) -> Vec<f32> {
            Cpu.silu_mul(g, u)
        }
        fn add_assign(&self, x: &mut Vec<f32>, y: &Vec<f32>) {
            Cpu.add_assign(x, y)
        }
        fn scatter_add_rows(
            &self,
            o: &mut Vec<f32>,
            y: &Vec<f32>,
            rows: &[usize],
            scale: &[f32],
            dim: usize,
        ) {
            Cpu.scatter_add_rows(o, y, rows, scale, dim)
        }
        fn gather_rows(&self, x: &Vec<f32>, rows: &[usize], dim: usize) -> Vec<f32> {
            Cpu.gather_rows(x, rows, dim)
        }
        fn concat_rows(&self, parts: &[Vec<f32>]) -> Vec<f32> {
            Cpu.concat_rows(parts)
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
            Cpu.copy_rows(dst, at, src, from, count, width)
        }
        fn mla_attention(
            &self,
            ql: &Vec<f32>,
            qp: &Vec<f32>,
            c: &Paged<'_, Vec<f32>>,
            kp: &Paged<'_, Vec<f32>>,
            h: usize,
            r: usize,
            p: usize,
            pos: &[usize],
            sel: Selection<'_>,
            scale: f32,
        ) -> Vec<f32> {
            Cpu.mla_attention(ql, qp, c, kp, h, r, p, pos, sel, scale)
        }
        fn indexer_scores(
            &self,
            q: &Vec<f32>,
            w: &Vec<f32>,
            k: &Paged<'_, Vec<f32>>,
            h: usize,
            d: usize,
            pos: &[usize],
            scale: f32,
        ) -> Vec<f32> {
            Cpu.indexer_scores(q, w, k, h, d, pos, scale)
        }
        fn topk(&self, scores: &Vec<f32>, len: usize, k: usize) -> Vec<Vec<u32>> {
            Cpu.topk(scores, len, k)
        }
    }

    #[test]
    fn agrees_with_itself_and_catches_a_planted_fault() {
        let same = compare(&Cpu, &Cpu, Shapes::small(), 1);
        let ops: Vec<&str> = same.iter().map(|r| r.op).collect();
        for op in [
            "rms_norm",
            "layer_norm",
            "matmul",
            "head_matmul",
            "silu_mul",
            "add_assign",
            "scatter_add_rows",
            "gather_rows",
            "embed",
            "slice_cols",
            "concat_cols",
            "concat_rows",
            "copy_rows",
            "rope_interleaved",
            "rope_half_split",
            "mla_attention_dense",
            "mla_attention_sparse",
            "indexer_scores",
            "random",
            "random_weight (through matmul)",
        ] {
            assert!(ops.contains(&op), "{op} is not checked: {ops:?}");
        }
        assert!(ops.iter().any(|o| o.starts_with("topk")));
        for r in &same {
            assert_eq!(r.max_rel_error, 0.0, "{}", r.op);
        }
        let faulty = compare(&Cpu, &Faulty, Shapes::small(), 1);
        for r in &faulty {
            if r.op == "matmul" || r.op == "random_weight (through matmul)" {
                assert!(r.max_rel_error > 1e-4, "{r:?}");
            } else {
                assert_eq!(r.max_rel_error, 0.0, "{}", r.op);
            }
        }
    }

    #[test]
    fn nan_and_shape_mismatches_are_errors() {
        assert_eq!(rel_error(&[1.0], &[1.0]), 0.0);
        assert!(rel_error(&[1.0], &[f32::NAN]).is_infinite());
        assert!(rel_error(&[1.0], &[1.0, 2.0]).is_infinite());
        assert!((rel_error(&[2.0], &[2.002]) - 1e-3).abs() < 1e-6);
    }
}
