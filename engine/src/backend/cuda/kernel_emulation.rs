//! The MLA decode and top-k kernels' algorithms replayed on the host, step for step, and checked
//! against the CPU backend: a mistake in an algorithm shows on any machine. Indexing and
//! synchronisation on the device stay the device check's to test.

/// The `mla_decode` + `mla_combine` kernels' algorithm on the host, step for step (head groups,
/// split-K ranges, 32-position tiles, a running max / sum / correction per head, each thread's
/// latent dims): what the GPU computes, checked here against the CPU backend so a mistake in the
/// algorithm shows without a GPU. Indexing and synchronisation stay the device check's to test.
mod emulation {
    use dsgw_kernels::launch::{self, Candidates};

    const TILE: usize = 32;

    #[allow(clippy::too_many_arguments)]
    pub fn mla_decode(
        q_lat: &[f32],
        q_pe: &[f32],
        c: &[f32],
        k_pe: &[f32],
        heads: usize,
        r: usize,
        p: usize,
        positions: &[usize],
        candidates: Option<&Candidates>,
        scale: f32,
        splits: usize,
    ) -> Vec<f32> {
        let group = launch::mla_group(heads);
        let width = r + p;
        let query_heads = positions.len() * heads;
        let mut part_max = vec![f32::NEG_INFINITY; query_heads * splits];
        let mut part_sum = vec![0f32; query_heads * splits];
        let mut part_acc = vec![0f32; query_heads * splits * r];
        for block in 0..query_heads / group {
            let groups = heads / group;
            let t = block / groups;
            let qh0 = t * heads + (block % groups) * group;
            let count = match candidates {
                Some(c) => (c.offsets[t + 1] - c.offsets[t]) as usize,
                None => positions[t] + 1,
            };
            let chunk = count.div_ceil(splits);
            for split in 0..splits {
                let begin = count.min(split * chunk);
                let end = count.min(begin + chunk);
                let q: Vec<&[f32]> = (0..group).map(|h| &q_lat[(qh0 + h) * r..][..r]).collect();
                let qp: Vec<&[f32]> = (0..group).map(|h| &q_pe[(qh0 + h) * p..][..p]).collect();
                let mut run_max = vec![f32::NEG_INFINITY; group];
                let mut run_sum = vec![0f32; group];
                let mut acc = vec![vec![0f32; r]; group];
                let mut base = begin;
                while base < end {
                    let n = TILE.min(end - base);
                    let rows: Vec<usize> = (0..n)
                        .map(|j| match candidates {
                            Some(c) => c.flat[c.offsets[t] as usize + base + j] as usize,
                            None => base + j,
                        })
                        .collect();
                    let mut scores = vec![vec![0f32; n]; group];
                    for (j, &s) in rows.iter().enumerate() {
                        for h in 0..group {
                            let mut dot = 0f32;
                            for i in 0..width {
                                let v = if i < r {
                                    c[s * r + i]
                                } else {
                                    k_pe[s * p + i - r]
                                };
                                let qv = if i < r { q[h][i] } else { qp[h][i - r] };
                                dot += qv * v;
                            }
                            scores[h][j] = dot * scale;
                        }
                    }
                    let mut correction = vec![1f32; group];
                    for h in 0..group {
                        let tile_max = scores[h].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let m_new = run_max[h].max(tile_max);
                        let mut total = 0f32;
                        for s in &mut scores[h] {
                            *s = (*s - m_new).exp();
                            total += *s;
                        }
                        correction[h] = (run_max[h] - m_new).exp();
                        run_sum[h] = run_sum[h] * correction[h] + total;
                        run_max[h] = m_new;
                    }
                    for d in 0..r {
                        for h in 0..group {
                            let mut a = acc[h][d] * correction[h];
                            for (j, &s) in rows.iter().enumerate() {
                                a += scores[h][j] * c[s * r + d];
                            }
                            acc[h][d] = a;
                        }
                    }
                    base += TILE;
                }
                for h in 0..group {
                    let part = (qh0 + h) * splits + split;
                    part_max[part] = run_max[h];
                    part_sum[part] = run_sum[h];
                    part_acc[part * r..][..r].copy_from_slice(&acc[h]);
                }
            }
        }
        // mla_combine
        let mut out = vec![0f32; query_heads * r];
        for qh in 0..query_heads {
            let pm = &part_max[qh * splits..][..splits];
            let ps = &part_sum[qh * splits..][..splits];
            let big = pm.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = pm
                .iter()
                .zip(ps)
                .map(|(&m, &l)| {
                    if m == f32::NEG_INFINITY {
                        0.0
                    } else {
                        l * (m - big).exp()
                    }
                })
                .sum();
            let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
            for d in 0..r {
                let mut v = 0f32;
                for s in 0..splits {
                    if pm[s] != f32::NEG_INFINITY {
                        v += part_acc[(qh * splits + s) * r + d] * (pm[s] - big).exp();
                    }
                }
                out[qh * r + d] = v * inv;
            }
        }
        out
    }
}

/// The `topk` kernel's radix select on the host, thread by thread (1024 contiguous chunks, a
/// bit-by-bit search for the k-th largest key, ties taken in index order through per-thread
/// offsets), checked against the CPU backend's selection.
mod topk_emulation {
    const THREADS: usize = 1024;

    fn key(f: f32) -> u32 {
        let u = f.to_bits();
        if u & 0x8000_0000 != 0 {
            !u
        } else {
            u | 0x8000_0000
        }
    }

    pub fn topk(row: &[f32], k: usize) -> Vec<u32> {
        let len = row.len();
        let chunk = len.div_ceil(THREADS);
        let range = |t: usize| {
            let lo = len.min(t * chunk);
            lo..len.min(lo + chunk)
        };
        let finite = row.iter().filter(|v| v.is_finite()).count();
        let want = k.min(finite);
        let mut threshold = 0u32;
        if finite > k {
            for bit in (0..32).rev() {
                let candidate = threshold | (1 << bit);
                let count: usize = (0..THREADS)
                    .map(|t| {
                        range(t)
                            .filter(|&i| row[i].is_finite() && key(row[i]) >= candidate)
                            .count()
                    })
                    .sum();
                if count >= k {
                    threshold = candidate;
                }
            }
        }
        let per_thread: Vec<(usize, usize)> = (0..THREADS)
            .map(|t| {
                let (mut gt, mut eq) = (0, 0);
                for i in range(t).filter(|&i| row[i].is_finite()) {
                    gt += usize::from(key(row[i]) > threshold);
                    eq += usize::from(threshold != 0 && key(row[i]) == threshold);
                }
                (gt, eq)
            })
            .collect();
        let above: usize = per_thread.iter().map(|(g, _)| g).sum();
        let need_eq = want as i64 - above as i64;
        let mut out = vec![u32::MAX; k];
        let (mut at, mut eq_before) = (0usize, 0i64);
        for (t, &(gt, eq)) in per_thread.iter().enumerate() {
            let taken = (need_eq - eq_before).clamp(0, eq as i64) as usize;
            let mut write = at;
            let mut eq_seen = eq_before;
            for i in range(t).filter(|&i| row[i].is_finite()) {
                let mut take = key(row[i]) > threshold;
                if threshold != 0 && key(row[i]) == threshold {
                    take = eq_seen < need_eq;
                    eq_seen += 1;
                }
                if take {
                    out[write] = i as u32;
                    write += 1;
                }
            }
            assert_eq!(write - at, gt + taken, "thread {t} wrote outside its share");
            at += gt + taken;
            eq_before += eq as i64;
        }
        out.truncate(want);
        out
    }
}

mod tests {
    use super::emulation;
    use crate::backend::cpu::Cpu;
    use crate::backend::{Backend, KV_BLOCK, Paged, Selection};
    use crate::random::normals;
    use dsgw_kernels::launch::Candidates;

    #[test]
    fn the_grouped_split_k_algorithm_equals_plain_attention() {
        let (r, p, len) = (24, 8, 300);
        for (heads, splits) in [(4, 1), (8, 3), (12, 2), (32, 7)] {
            let positions = [len - 1, 150, 37];
            let q_lat = normals(positions.len() * heads * r, 1, 0.0, 0.3);
            let q_pe = normals(positions.len() * heads * p, 2, 0.0, 0.3);
            let c = normals(len * r, 3, 0.0, 1.0);
            let k_pe = normals(len * p, 4, 0.0, 1.0);
            let blocks = |data: &[f32], width: usize| -> Vec<Vec<f32>> {
                data.chunks(KV_BLOCK * width).map(<[f32]>::to_vec).collect()
            };
            let (cb, kb) = (blocks(&c, r), blocks(&k_pe, p));
            let cp = Paged {
                blocks: cb.iter().collect(),
                len,
            };
            let kp = Paged {
                blocks: kb.iter().collect(),
                len,
            };
            let scale = 0.2;
            // Dense causal.
            let want = Cpu.mla_attention(
                &q_lat,
                &q_pe,
                &cp,
                &kp,
                heads,
                r,
                p,
                &positions,
                Selection::Causal,
                scale,
            );
            let got = emulation::mla_decode(
                &q_lat, &q_pe, &c, &k_pe, heads, r, p, &positions, None, scale, splits,
            );
            let error = crate::tooling::conformance::rel_error(&want, &got);
            assert!(
                error < 1e-5,
                "dense, {heads} heads, {splits} splits: {error}"
            );
            // Sparse: a scattered selection per query.
            let selected: Vec<Vec<u32>> = positions
                .iter()
                .map(|&q| (0..=q as u32).filter(|s| s % 3 != 1).collect())
                .collect();
            let want = Cpu.mla_attention(
                &q_lat,
                &q_pe,
                &cp,
                &kp,
                heads,
                r,
                p,
                &positions,
                Selection::Sparse(&selected),
                scale,
            );
            let candidates = Candidates::pack(&selected, len).expect("candidates");
            let got = emulation::mla_decode(
                &q_lat,
                &q_pe,
                &c,
                &k_pe,
                heads,
                r,
                p,
                &positions,
                Some(&candidates),
                scale,
                splits,
            );
            let error = crate::tooling::conformance::rel_error(&want, &got);
            assert!(
                error < 1e-5,
                "sparse, {heads} heads, {splits} splits: {error}"
            );
        }
    }

    #[test]
    fn the_radix_select_picks_what_the_cpu_picks() {
        use crate::backend::Backend;
        use crate::backend::cpu::Cpu;
        let mut rows: Vec<(Vec<f32>, usize)> = Vec::new();
        for (len, k, seed) in [
            (3000, 2048, 1),
            (3000, 10, 2),
            (5000, 2048, 3),
            (100, 2048, 4),
        ] {
            // Values on a coarse grid: many ties, positive and negative, some masked (-inf).
            let row: Vec<f32> = crate::random::normals(len, seed, 0.0, 4.0)
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    if i % 7 == 3 {
                        f32::NEG_INFINITY
                    } else {
                        v.round() * 0.5
                    }
                })
                .collect();
            rows.push((row, k));
        }
        rows.push((vec![0.0, -0.0, 1.0, -1.0, f32::NAN, 0.0], 3));
        for (row, k) in rows {
            let want = Cpu.topk(&row.clone(), row.len(), k).remove(0);
            let got = super::topk_emulation::topk(&row, k);
            assert_eq!(got, want, "len {}, k {k}", row.len());
        }
    }
}
