//! Counter-based random numbers every backend draws alike: value `i` of a stream is a pure
//! function of `(seed, i)`, so a model drawn on a GPU equals the one drawn on the host (to a few
//! ulp), and sampling is reproducible from a seed.

/// SplitMix64: a tiny deterministic generator, so `--seed` reproduces a model anywhere.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

/// SplitMix64's finaliser of the `k`-th state after `seed`: a counter-based generator, so any
/// value can be drawn on its own (in parallel, on any device). `kernels/src/cu/convert.cu` is the
/// same function.
fn mix_at(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`-th standard normal of stream `seed` (Box-Muller in f32 from two 24-bit uniforms).
pub fn normal_at(seed: u64, i: u64) -> f32 {
    let uniform = |k: u64| ((mix_at(seed, k) >> 40) as f32 + 0.5) / (1u32 << 24) as f32;
    let (u, v) = (uniform(2 * i + 1), uniform(2 * i + 2));
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// `len` values of N(mean, std²) from stream `seed` ([`normal_at`]), drawn in parallel.
pub fn normals(len: usize, seed: u64, mean: f32, std: f32) -> Vec<f32> {
    use rayon::prelude::*;
    (0..len as u64)
        .into_par_iter()
        .map(|i| mean + std * normal_at(seed, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_are_standard_and_a_pure_function_of_seed_and_index() {
        let a = normals(200_000, 9, 0.0, 1.0);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(a.iter().all(|v| v.is_finite()));
        assert_eq!(a[12_345], normal_at(9, 12_345));
        assert_ne!(normal_at(9, 0), normal_at(10, 0));
        let shifted = normals(10, 9, 1.0, 0.5);
        assert!((shifted[3] - (1.0 + 0.5 * a[3])).abs() < 1e-6);
    }
}
