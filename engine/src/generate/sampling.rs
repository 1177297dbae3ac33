//! Choosing the next token: greedy at temperature 0, else temperature and nucleus (top-p)
//! sampling from a per-request seeded generator.

use crate::tiny::SplitMix;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// Same seed, same prompt, same model: same output.
    pub seed: Option<u64>,
    pub max_tokens: usize,
    /// Generation ends before the first of these strings; it is not part of the output.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
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
