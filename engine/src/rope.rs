//! Rotary position embedding tables with DeepSeek's YaRN frequency correction.

use crate::config::{ModelConfig, yarn_mscale};

/// `cos` and `sin` tables of shape `(positions, rope_dim / 2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTables {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

fn correction_dim(rotations: f64, dim: usize, base: f64, max_pos: usize) -> f64 {
    dim as f64 * (max_pos as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// Inverse frequencies, one per rotated pair.
pub fn inv_freq(config: &ModelConfig) -> Vec<f64> {
    let dim = config.qk_rope_head_dim;
    let base = config.rope_theta;
    let extra: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
        .collect();
    let Some(yarn) = &config.yarn else {
        return extra;
    };
    let orig = yarn.original_max_position_embeddings;
    let low = correction_dim(yarn.beta_fast, dim, base, orig)
        .floor()
        .max(0.0);
    let high = correction_dim(yarn.beta_slow, dim, base, orig)
        .ceil()
        .min(dim as f64 - 1.0);
    let high = if low == high { high + 0.001 } else { high };
    extra
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation = 1.0 - ramp;
            f / yarn.factor * (1.0 - extrapolation) + f * extrapolation
        })
        .collect()
}

impl RopeTables {
    pub fn new(config: &ModelConfig, positions: usize) -> Self {
        let freqs = inv_freq(config);
        // YaRN scales cos/sin by mscale(mscale) / mscale(mscale_all_dim); 1 for DeepSeek's configs.
        let scale = config.yarn.as_ref().map_or(1.0, |y| {
            yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim)
        });
        let mut cos = Vec::with_capacity(positions * freqs.len());
        let mut sin = Vec::with_capacity(positions * freqs.len());
        for pos in 0..positions {
            for f in &freqs {
                let angle = pos as f64 * f;
                cos.push((angle.cos() * scale) as f32);
                sin.push((angle.sin() * scale) as f32);
            }
        }
        Self { cos, sin }
    }
}
