//! Choosing the next token: greedy at temperature 0, else temperature and nucleus (top-p)
//! sampling from a per-request seeded generator.

use crate::random::SplitMix;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// Same seed, same prompt, same model: same output.
    pub seed: Option<u64>,
    pub max_tokens: usize,
    /// Generation ends before the first of these strings; it is not part of the output.
    pub stop: Vec<String>,
    /// A grammar the output must follow.
    pub constraint: Constraint,
}

/// What the output must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Constraint {
    #[default]
    None,
    /// One JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// One JSON object after the reasoning (thinking mode: from `</think>` on).
    JsonObjectAfterThinking,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
            constraint: Constraint::None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: SplitMix,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            // A failing OS generator only costs unpredictability, not correctness.
            let _ = getrandom::fill(&mut bytes);
            u64::from_le_bytes(bytes)
        });
        Self {
            temperature: params.temperature,
            top_p: params.top_p,
            rng: SplitMix::new(seed),
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(f32, u32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (((l - max) / self.temperature).exp(), i as u32))
            .collect();
        if self.top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let total: f32 = probs.iter().map(|p| p.0).sum();
            let mut kept = 0.0;
            let cut = probs
                .iter()
                .position(|p| {
                    kept += p.0 / total;
                    kept >= self.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(cut);
        }
        let total: f32 = probs.iter().map(|p| p.0).sum();
        let mut target = self.rng.uniform() as f32 * total;
        for (p, id) in &probs {
            target -= p;
            if target <= 0.0 {
                return *id;
            }
        }
        probs.last().map_or(0, |p| p.1)
    }
}

/// How many of the likeliest tokens a constrained step looks at before scanning them all.
const CONSTRAINED_CANDIDATES: usize = 256;

impl Sampler {
    /// Samples among the tokens `accept` allows (temperature and top-p applied among them);
    /// `None` when it allows none.
    pub fn sample_constrained(
        &mut self,
        logits: &[f32],
        accept: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        let k = CONSTRAINED_CANDIDATES.min(ids.len());
        if k < ids.len() {
            ids.select_nth_unstable_by(k, |&a, &b| {
                logits[b as usize].total_cmp(&logits[a as usize])
            });
        }
        let mut allowed: Vec<u32> = ids[..k].iter().copied().filter(|&id| accept(id)).collect();
        if allowed.is_empty() {
            // Rare: none of the likeliest fits; take the likeliest that does.
            allowed = ids[k..]
                .iter()
                .copied()
                .filter(|&id| accept(id))
                .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
                .into_iter()
                .collect();
        }
        let restricted: Vec<f32> = allowed.iter().map(|&id| logits[id as usize]).collect();
        if restricted.is_empty() {
            return None;
        }
        Some(allowed[self.sample(&restricted) as usize])
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constrained_sampling_only_takes_allowed_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| (i % 17) as f32).collect();
        for temperature in [0.0, 1.0] {
            let mut s = Sampler::new(&SamplingParams {
                temperature,
                seed: Some(7),
                ..Default::default()
            });
            for _ in 0..50 {
                let id = s.sample_constrained(&logits, &|id| id % 7 == 3).unwrap();
                assert_eq!(id % 7, 3);
            }
            // Allowed only outside the likeliest 256: still found.
            let rare = |id: u32| id == 999;
            assert_eq!(s.sample_constrained(&logits, &rare), Some(999));
            assert_eq!(s.sample_constrained(&logits, &|_| false), None);
        }
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(&SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, -1.0]), 1);
    }

    #[test]
    fn seeds_reproduce_and_top_p_cuts_the_tail() {
        let logits = [2.0, 1.9, -8.0, -9.0];
        let params = SamplingParams {
            seed: Some(42),
            top_p: 0.9,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        let tokens = draw(&params);
        assert!(tokens.iter().all(|&t| t < 2), "tail tokens survived top-p");
        assert!(tokens.contains(&0) && tokens.contains(&1));
    }
}
