//! The GPU against the CPU on the same random inputs: every backend operation, the kernels
//! outside the trait (MoE gate, sampling), and a whole model's logits, with f32 weights and with
//! bf16 weights. bf16 runs are compared with the CPU's bf16 arithmetic ([`CpuBf16`]: the same
//! rounding of weights and activations, f32 accumulation), not with f32: rounding activations
//! to bf16 moves a random model's logits by a few percent and flips its top-k choices, so only
//! the same arithmetic makes a comparison that can catch a wrong kernel.

use std::path::Path;

use safetensors::Dtype;
use serde::Serialize;

use crate::backend::cpu::{Cpu, CpuBf16};
use crate::backend::cuda::Cuda;
use crate::backend::{Backend, WeightFormat};
use crate::checkpoint::Checkpoint;
use crate::model::gate::MoeGate;
use crate::model::{Logits, Model};
use crate::random::SplitMix;
use crate::tooling::conformance::{self, OpReport, Shapes};
use crate::tooling::tiny::{TinySpec, write_model_as};

/// f32 agreement each operation must reach (relative to max(1, |reference|)).
pub const OP_TOLERANCE: f64 = 1e-5;
/// A whole model accumulates rounding over layers: its f32 logits get a looser bound.
pub const MODEL_TOLERANCE: f64 = 1e-3;
/// bf16 runs against the CPU's bf16 arithmetic: the same values, summed in another order, and
/// rounded to bf16 again between layers, where one differing last bit is 0.4%.
pub const BF16_TOLERANCE: f64 = 1e-2;

#[derive(Debug, Serialize)]
pub struct Agreement {
    pub op: String,
    pub max_rel_error: f64,
    pub tolerance: f64,
    pub pass: bool,
}

pub(super) fn agreement(op: String, max_rel_error: f64, tolerance: f64) -> Agreement {
    Agreement {
        pass: max_rel_error <= tolerance,
        op,
        max_rel_error,
        tolerance,
    }
}

pub(super) fn tolerance(format: WeightFormat) -> f64 {
    match format {
        WeightFormat::F32 => OP_TOLERANCE,
        WeightFormat::Bf16 => BF16_TOLERANCE,
    }
}

/// Every operation, twice with fresh inputs, with `cuda`'s weight format.
pub(super) fn operations(cuda: &Cuda) -> Vec<Agreement> {
    let format = cuda.weight_format();
    let mut out = Vec::new();
    for seed in [1, 2] {
        let reports = match format {
            WeightFormat::F32 => conformance::compare(&Cpu, cuda, Shapes::v32(), seed),
            WeightFormat::Bf16 => conformance::compare(&CpuBf16, cuda, Shapes::v32(), seed),
        };
        for OpReport { op, max_rel_error } in reports {
            out.push(agreement(
                format!("{op} ({format:?} weights, seed {seed})"),
                max_rel_error,
                tolerance(format),
            ));
        }
    }
    out
}

fn random(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
}

/// The kernels outside the operation list: the MoE gate (V3.2's 256 experts in 8 groups, top-4
/// groups, top-8 experts) through [`Backend::route`], and the sampling helpers.
pub(super) fn gate_and_sampling(cuda: &Cuda) -> Vec<Agreement> {
    let moe = crate::config::MoeConfig {
        n_routed_experts: 256,
        n_shared_experts: 1,
        experts_per_token: 8,
        n_group: 8,
        topk_group: 4,
        routed_scaling_factor: 2.5,
        norm_topk_prob: true,
        intermediate_size: 2048,
    };
    let mut rng = SplitMix::new(11);
    let tokens = 64;
    let logits = random(&mut rng, tokens * 256);
    let bias: Vec<f32> = random(&mut rng, 256).iter().map(|b| b * 0.1).collect();
    let gate = MoeGate {
        bias: &bias,
        config: &moe,
    };
    let routed = cuda.route(&cuda.upload(&logits), &gate);
    let mut same_experts = routed.len() == tokens;
    let mut weight_error = 0.0f64;
    for (t, got) in routed.iter().enumerate() {
        let want = gate.route(&logits[t * 256..][..256]);
        let mut got_sorted = got.clone();
        let mut want_sorted = want.clone();
        got_sorted.sort_by_key(|(e, _)| *e);
        want_sorted.sort_by_key(|(e, _)| *e);
        same_experts &= got_sorted
            .iter()
            .map(|(e, _)| e)
            .eq(want_sorted.iter().map(|(e, _)| e));
        for ((_, a), (_, b)) in got_sorted.iter().zip(&want_sorted) {
            weight_error = weight_error.max(conformance::rel_error(&[*b], &[*a]));
        }
    }
    let mut out = vec![agreement(
        "route (MoE gate): chosen experts and weights".to_owned(),
        if same_experts {
            weight_error
        } else {
            f64::INFINITY
        },
        OP_TOLERANCE,
    )];
    let vocab = 129_280;
    let rows = 4;
    let logits = random(&mut rng, rows * vocab);
    let greedy = cuda.argmax(&cuda.upload(&logits), vocab);
    let want: Vec<u32> = logits
        .chunks_exact(vocab)
        .map(crate::generate::sampling_argmax)
        .collect();
    out.push(agreement(
        "argmax".to_owned(),
        if greedy == want { 0.0 } else { f64::INFINITY },
        OP_TOLERANCE,
    ));
    let mut probs = cuda.upload(&logits);
    cuda.softmax(&mut probs, vocab, 0.7);
    let got = cuda.download(&probs);
    let mut error = 0.0f64;
    for (row, got) in logits.chunks_exact(vocab).zip(got.chunks_exact(vocab)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f64> = row
            .iter()
            .map(|&l| f64::from((l - max) / 0.7).exp())
            .collect();
        let total: f64 = exp.iter().sum();
        for (e, g) in exp.iter().zip(got) {
            error = error.max((e / total - f64::from(*g)).abs() / (e / total).max(1e-6));
        }
    }
    out.push(agreement("softmax_temperature".to_owned(), error, 1e-4));
    out
}

/// The tiny model's logits for a 300-token prefill on both backends. With bf16 weights the
/// checkpoint itself is bf16 and the CPU computes in bf16 too ([`CpuBf16`]).
pub(super) fn whole_model(cuda: Cuda, dir: &Path) -> Result<Agreement, String> {
    let format = cuda.weight_format();
    let spec = TinySpec {
        max_position_embeddings: 4096,
        ..TinySpec::tiny(129_280)
    };
    let dtype = match format {
        WeightFormat::F32 => Dtype::F32,
        WeightFormat::Bf16 => Dtype::BF16,
    };
    write_model_as(dir, &spec, 7, dtype).map_err(|e| e.to_string())?;
    let ckpt = Checkpoint::open(dir).map_err(|e| e.to_string())?;
    let a = match format {
        WeightFormat::F32 => prefill_logits(&ckpt, Cpu)?,
        WeightFormat::Bf16 => prefill_logits(&ckpt, CpuBf16)?,
    };
    let b = prefill_logits(&ckpt, cuda)?;
    // NaN anywhere (a poisoned or broken output) counts as infinitely wrong.
    let error = conformance::rel_error(&a, &b);
    let tolerance = match format {
        WeightFormat::F32 => MODEL_TOLERANCE,
        WeightFormat::Bf16 => BF16_TOLERANCE,
    };
    Ok(agreement(
        format!("whole model: logits of a 300-token prefill ({format:?} weights)"),
        error,
        tolerance,
    ))
}

fn prefill_logits<B: Backend>(ckpt: &Checkpoint, backend: B) -> Result<Vec<f32>, String> {
    let model = Model::load(ckpt, backend).map_err(|e| e.to_string())?;
    let tokens: Vec<u32> = (0..300u32)
        .map(|i| (i * 7919 + 13) % 120_000 + 100)
        .collect();
    Ok(model.forward(&tokens, &mut model.new_cache(), Logits::All))
}
