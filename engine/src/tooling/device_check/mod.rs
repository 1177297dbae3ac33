//! The device check: everything about the CUDA backend that needs a GPU, in one run of a few
//! minutes (`dsgw engine device-check`). It compares every backend operation and a whole model
//! with the CPU backend on fresh random inputs (new buffers poisoned with NaN first, so an
//! unwritten output shows), with f32 and with bf16 weights, then times, with device events after
//! warm-up: a device-to-device copy (the bandwidth reference), MLA decode at 4K, 32K and 128K of
//! context (dense, and with DSA: indexer + top-k + sparse attention), the indexer alone, cuBLAS
//! GEMMs, and a random V3.2-shaped model sized to fill the GPU, end to end.

mod agreement;
mod timing;

use std::path::Path;

use serde::Serialize;

pub use agreement::{Agreement, BF16_TOLERANCE, MODEL_TOLERANCE, OP_TOLERANCE};
pub use timing::{AttentionTiming, DecodeTiming, ModelTiming, sized_spec};

use crate::backend::WeightFormat;
use crate::backend::cuda::Cuda;

/// The contexts every timing runs at.
pub const CONTEXTS: [usize; 3] = [4096, 32_768, 131_072];
/// The prompt the time to first token is measured on.
pub const PROMPT: usize = 4096;

#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub multiprocessors: usize,
    pub memory_gib: f64,
    pub agreement: Vec<Agreement>,
    pub copy_gb_per_s: f64,
    pub attention: Vec<AttentionTiming>,
    pub gemm_tflops_f32: f64,
    pub gemm_tflops_bf16: f64,
    pub model: ModelTiming,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.agreement.iter().all(|a| a.pass)
    }

    /// The short table printed last.
    pub fn table(&self) -> String {
        let mut out = format!(
            "device: {} ({} SMs, {:.0} GiB)\nagreement with the CPU: {} of {} checks pass (f32 ops to {OP_TOLERANCE:e}, f32 model to {MODEL_TOLERANCE:e}, bf16 to {BF16_TOLERANCE:e})\n",
            self.device,
            self.multiprocessors,
            self.memory_gib,
            self.agreement.iter().filter(|a| a.pass).count(),
            self.agreement.len()
        );
        for a in self.agreement.iter().filter(|a| !a.pass) {
            out.push_str(&format!("  FAIL {}: {:e}\n", a.op, a.max_rel_error));
        }
        out.push_str(&format!(
            "copy bandwidth: {:.0} GB/s; cuBLAS GEMM 8192^3: {:.1} TFLOP/s f32, {:.1} TFLOP/s bf16 (f32 accumulation)\n\n",
            self.copy_gb_per_s, self.gemm_tflops_f32, self.gemm_tflops_bf16
        ));
        out.push_str("| context | dense MLA decode | GB/s | share of copy | DSA decode | DSA speed-up | indexer positions/s |\n|---|---|---|---|---|---|---|\n");
        for t in &self.attention {
            out.push_str(&format!(
                "| {} | {:.3} ms | {:.0} | {:.0}% | {:.3} ms | {:.2}x | {:.2e} |\n",
                t.context,
                t.dense_ms,
                t.dense_gb_per_s,
                100.0 * t.dense_share_of_copy,
                t.dsa_ms,
                t.dsa_speedup,
                t.indexer_positions_per_s
            ));
        }
        let m = &self.model;
        out.push_str(&format!(
            "\nV3.2-shaped model, {} layers ({} MoE x {} experts), {:.1} GiB bf16 weights: time to first token of {} tokens {:.3} s with DSA, {:.3} s dense\n\n| context | DSA tokens/s | dense tokens/s |\n|---|---|---|\n",
            m.layers,
            m.moe_layers,
            m.experts,
            m.weight_gib,
            m.prompt_tokens,
            m.time_to_first_token_dsa_s,
            m.time_to_first_token_dense_s
        ));
        for d in &m.decode {
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} |\n",
                d.context, d.dsa_tokens_per_s, d.dense_tokens_per_s
            ));
        }
        out
    }
}

/// Runs the whole check on CUDA device `ordinal`; `scratch` holds the test models.
pub fn run(ordinal: usize, scratch: &Path) -> Result<Report, String> {
    let open = |format| {
        Cuda::open(ordinal)
            .map(|c| c.with_weights(format))
            .map_err(|e| e.to_string())
    };
    let progress = |what: &str| eprintln!("device check: {what}");
    let cuda = open(WeightFormat::F32)?;
    let device = cuda.device_name().to_owned();
    let multiprocessors = cuda.multiprocessors();
    let memory_gib = cuda.memory().1 as f64 / (1u64 << 30) as f64;

    progress("every operation against the CPU, f32 and bf16 weights");
    cuda.set_poison(true);
    let mut agreement = agreement::operations(&cuda);
    agreement.extend(agreement::gate_and_sampling(&cuda));
    let bf16 = cuda.with_weights(WeightFormat::Bf16);
    agreement.extend(agreement::operations(&bf16));
    let cuda = bf16.with_weights(WeightFormat::F32);
    cuda.set_poison(false);
    progress("whole models against the CPU");
    for format in [WeightFormat::F32, WeightFormat::Bf16] {
        let dir = scratch.join(format!("tiny-{format:?}"));
        agreement.push(agreement::whole_model(open(format)?, &dir)?);
    }

    progress("bandwidth, attention and GEMM timings");
    let copy_gb_per_s = timing::copy_gb_per_s(&cuda);
    let attention = CONTEXTS
        .into_iter()
        .map(|context| timing::attention(&cuda, context, copy_gb_per_s))
        .collect();
    let gemm_tflops_f32 = timing::gemm_tflops(&cuda, 8192);
    let cuda = cuda.with_weights(WeightFormat::Bf16);
    let gemm_tflops_bf16 = timing::gemm_tflops(&cuda, 8192);

    progress("a V3.2-shaped model sized to the GPU, end to end");
    let model = timing::end_to_end(cuda, &CONTEXTS, PROMPT)?;
    Ok(Report {
        device,
        multiprocessors,
        memory_gib,
        agreement,
        copy_gb_per_s,
        attention,
        gemm_tflops_f32,
        gemm_tflops_bf16,
        model,
    })
}
