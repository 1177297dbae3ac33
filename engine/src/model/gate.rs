//! The MoE gate of a layer: the data it routes with (the router's correction bias and the MoE
//! shape), and the selection every backend must reproduce. The model owns it and passes it to
//! [`crate::backend::Backend::route`] as data; a device backend computes the same selection in
//! its own kernel.

use crate::config::MoeConfig;

/// What one MoE layer's router decides with, besides its logits.
#[derive(Debug, Clone, Copy)]
pub struct MoeGate<'a> {
    /// Added to the scores for selection only (`e_score_correction_bias`), one per expert.
    pub bias: &'a [f32],
    pub config: &'a MoeConfig,
}

impl MoeGate<'_> {
    /// The experts one token goes to, with their weights, from its router logits (one per
    /// routed expert).
    pub fn route(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        route_token(logits, self.bias, self.config)
    }
}

/// DeepSeek-V3's gate for one token: sigmoid scores, correction bias for selection only,
/// group-limited top-k, weights from the unbiased scores, normalised and scaled.
fn route_token(logits: &[f32], bias: &[f32], moe: &MoeConfig) -> Vec<(usize, f32)> {
    let scores: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
    let biased: Vec<f32> = scores.iter().zip(bias).map(|(s, b)| s + b).collect();
    let per_group = moe.n_routed_experts / moe.n_group;
    let mut group_scores: Vec<(f32, usize)> = biased
        .chunks_exact(per_group)
        .enumerate()
        .map(|(g, chunk)| {
            let mut top = chunk.to_vec();
            top.sort_unstable_by(|a, b| b.total_cmp(a));
            (top.iter().take(2).sum(), g)
        })
        .collect();
    group_scores.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let kept: Vec<usize> = group_scores
        .iter()
        .take(moe.topk_group)
        .map(|(_, g)| *g)
        .collect();
    let mut candidates: Vec<(f32, usize)> = kept
        .iter()
        .flat_map(|g| (g * per_group..(g + 1) * per_group).map(|e| (biased[e], e)))
        .collect();
    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let chosen: Vec<usize> = candidates
        .iter()
        .take(moe.experts_per_token)
        .map(|(_, e)| *e)
        .collect();
    let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
    if moe.norm_topk_prob {
        let sum: f32 = weights.iter().sum::<f32>() + 1e-20;
        for w in &mut weights {
            *w /= sum;
        }
    }
    chosen
        .into_iter()
        .zip(weights)
        .map(|(e, w)| (e, w * moe.routed_scaling_factor))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moe(n_group: usize, topk_group: usize, k: usize) -> MoeConfig {
        MoeConfig {
            n_routed_experts: 8,
            n_shared_experts: 1,
            experts_per_token: k,
            n_group,
            topk_group,
            routed_scaling_factor: 2.5,
            norm_topk_prob: true,
            intermediate_size: 4,
        }
    }

    #[test]
    fn gate_selects_with_bias_but_weighs_without_it() {
        let logits = [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let mut bias = [0.0; 8];
        bias[2] = 10.0; // expert 2 wins selection on bias alone
        let picked = MoeGate {
            bias: &bias,
            config: &moe(1, 1, 2),
        }
        .route(&logits);
        let experts: Vec<usize> = picked.iter().map(|p| p.0).collect();
        assert_eq!(experts, vec![2, 1]);
        let s = |l: f32| 1.0 / (1.0 + (-l).exp());
        let total = s(0.0) + s(3.0);
        assert!((picked[0].1 - 2.5 * s(0.0) / total).abs() < 1e-6);
        assert!((picked[0].1 + picked[1].1 - 2.5).abs() < 1e-5);
    }

    #[test]
    fn gate_limits_experts_to_the_best_groups() {
        // Four groups of two; group scores are sums of both members.
        let logits = [5.0, -5.0, 1.0, 1.0, 0.0, 0.0, 4.0, -4.0];
        let picked = MoeGate {
            bias: &[0.0; 8],
            config: &moe(4, 1, 2),
        }
        .route(&logits);
        let experts: Vec<usize> = picked.iter().map(|p| p.0).collect();
        // Group 1 (1.0 + 1.0 -> sigmoid sum largest) holds both picks, not expert 0 or 6.
        assert_eq!(experts, vec![2, 3]);
    }
}
