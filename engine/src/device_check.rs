//! The device check: everything about the CUDA backend that needs a GPU, in one run of a few
//! minutes (`dsgw engine device-check`). It compares every backend operation and a whole model
//! with the CPU backend on fresh random inputs (new buffers poisoned with NaN first, so an
//! unwritten output shows), then times, with device events after warm-up: a device-to-device
//! copy (the bandwidth reference), MLA decode at 4K, 32K and 128K of context (dense, and with
//! DSA: indexer + top-k + sparse attention), the indexer alone, and a cuBLAS GEMM.

use std::path::Path;

use serde::Serialize;

use crate::backend::conformance::{self, OpReport, Shapes};
use crate::backend::cpu::Cpu;
use crate::backend::cuda::Cuda;
use crate::backend::{Backend, Selection};
use crate::checkpoint::Checkpoint;
use crate::model::{Logits, Model};
use crate::tiny::{SplitMix, TinySpec, write_model};

/// f32 agreement each operation must reach (relative to max(1, |reference|)).
pub const OP_TOLERANCE: f64 = 1e-5;
/// A whole model accumulates rounding over layers: its logits get a looser bound.
pub const MODEL_TOLERANCE: f64 = 1e-3;

#[derive(Debug, Serialize)]
pub struct Agreement {
    pub op: String,
    pub max_rel_error: f64,
    pub tolerance: f64,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
pub struct AttentionTiming {
    pub context: usize,
    pub dense_ms: f64,
    /// Bytes of latent cache read per dense decode step over its time.
    pub dense_gb_per_s: f64,
    pub dense_share_of_copy: f64,
    /// Indexer + top-k + sparse attention over the selected positions.
    pub dsa_ms: f64,
    pub dsa_speedup: f64,
    pub indexer_positions_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct DecodeTiming {
    pub context: usize,
    pub dsa_tokens_per_s: f64,
    pub dense_tokens_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub multiprocessors: usize,
    pub agreement: Vec<Agreement>,
    pub copy_gb_per_s: f64,
    pub attention: Vec<AttentionTiming>,
    pub gemm_tflops: f64,
    /// The `bench`-preset model end to end (not yet a model sized to fill the GPU).
    pub decode: Vec<DecodeTiming>,
    pub time_to_first_token_4096_s: f64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.agreement.iter().all(|a| a.pass)
    }

    /// The short table printed last.
    pub fn table(&self) -> String {
        let mut out = format!(
            "device: {} ({} SMs)\nagreement with the CPU: {} of {} checks pass (ops to {OP_TOLERANCE:e}, model to {MODEL_TOLERANCE:e})\n",
            self.device,
            self.multiprocessors,
            self.agreement.iter().filter(|a| a.pass).count(),
            self.agreement.len()
        );
        for a in self.agreement.iter().filter(|a| !a.pass) {
            out.push_str(&format!("  FAIL {}: {:e}\n", a.op, a.max_rel_error));
        }
        out.push_str(&format!(
            "copy bandwidth: {:.0} GB/s; cuBLAS f32 GEMM 8192^3: {:.1} TFLOP/s\n\n",
            self.copy_gb_per_s, self.gemm_tflops
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
        out.push_str(&format!(
            "\nbench-preset model end to end: time to first token of 4096 tokens {:.2} s\n\n| context | DSA tokens/s | dense tokens/s |\n|---|---|---|\n",
            self.time_to_first_token_4096_s
        ));
        for d in &self.decode {
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} |\n",
                d.context, d.dsa_tokens_per_s, d.dense_tokens_per_s
            ));
        }
        out
    }
}

fn agreement(op: String, max_rel_error: f64, tolerance: f64) -> Agreement {
    Agreement {
        pass: max_rel_error <= tolerance,
        op,
        max_rel_error,
        tolerance,
    }
}

/// Every operation, twice with fresh inputs.
fn operations(cuda: &Cuda) -> Vec<Agreement> {
    let mut out = Vec::new();
    for seed in [1, 2] {
        for OpReport { op, max_rel_error } in conformance::compare(&Cpu, cuda, Shapes::v32(), seed)
        {
            out.push(agreement(
                format!("{op} (seed {seed})"),
                max_rel_error,
                OP_TOLERANCE,
            ));
        }
    }
    out
}

/// The kernels outside the backend trait: the MoE gate (V3.2's 256 experts in 8 groups, top-4
/// groups, top-8 experts) and the sampling helpers.
fn gate_and_sampling(cuda: &Cuda) -> Vec<Agreement> {
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
    let routed = cuda.moe_route(&cuda.upload(&logits), &cuda.upload(&bias), &moe);
    let mut same_experts = true;
    let mut weight_error = 0.0f64;
    for (t, got) in routed.iter().enumerate() {
        let want = crate::model::route_token(&logits[t * 256..][..256], &bias, &moe);
        let mut got_sorted = got.clone();
        let mut want_sorted = want.clone();
        got_sorted.sort_by_key(|(e, _)| *e);
        want_sorted.sort_by_key(|(e, _)| *e);
        same_experts &= got_sorted
            .iter()
            .map(|(e, _)| e)
            .eq(want_sorted.iter().map(|(e, _)| e));
        for ((_, a), (_, b)) in got_sorted.iter().zip(&want_sorted) {
            weight_error = weight_error.max(f64::from((a - b).abs()) / f64::from(b.abs()).max(1.0));
        }
    }
    let mut out = vec![agreement(
        "moe_route: chosen experts and weights".to_owned(),
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

/// Decode speed of a random V3.2-architecture model (the `bench` preset: 1024 hidden, 16 heads,
/// latent 512, indexer 8 x 128, top-2048) over a synthetic cache, sparse and dense, and the time
/// to first token of a 4096-token prompt.
fn end_to_end(
    cuda: Cuda,
    dir: &Path,
    contexts: &[usize],
) -> Result<(Vec<DecodeTiming>, f64), String> {
    let spec = TinySpec {
        max_position_embeddings: contexts.iter().max().copied().unwrap_or(4096) + 1024,
        ..TinySpec::bench()
    };
    write_model(dir, &spec, 5).map_err(|e| e.to_string())?;
    let ckpt = Checkpoint::open(dir).map_err(|e| e.to_string())?;
    let mut model = Model::load(&ckpt, cuda).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let _ = crate::bench::prefill(&model, 4096);
    model.backend().synchronize();
    let ttft = started.elapsed().as_secs_f64();
    let indexer = model.config.indexer.clone();
    let mut out = Vec::new();
    for &context in contexts {
        model.config.indexer = indexer.clone();
        let sparse = crate::bench::decode(&model, context, 8, true);
        model.config.indexer = None;
        let dense = crate::bench::decode(&model, context, 8, false);
        out.push(DecodeTiming {
            context,
            dsa_tokens_per_s: 1.0 / sparse.seconds_per_token,
            dense_tokens_per_s: 1.0 / dense.seconds_per_token,
        });
    }
    Ok((out, ttft))
}

/// The tiny model's logits for a prompt, on both backends.
fn whole_model(cuda: Cuda, dir: &Path) -> Result<Agreement, String> {
    let spec = TinySpec {
        max_position_embeddings: 4096,
        ..TinySpec::tiny(129_280)
    };
    write_model(dir, &spec, 7).map_err(|e| e.to_string())?;
    let ckpt = Checkpoint::open(dir).map_err(|e| e.to_string())?;
    let cpu = Model::load(&ckpt, Cpu).map_err(|e| e.to_string())?;
    let gpu = Model::load(&ckpt, cuda).map_err(|e| e.to_string())?;
    let tokens: Vec<u32> = (0..300u32)
        .map(|i| (i * 7919 + 13) % 120_000 + 100)
        .collect();
    let a = cpu.forward(&tokens, &mut cpu.new_cache(), Logits::All);
    let b = gpu.forward(&tokens, &mut gpu.new_cache(), Logits::All);
    let error = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| f64::from((x - y).abs()) / f64::from(x.abs()).max(1.0))
        .fold(
            if a.len() == b.len() {
                0.0
            } else {
                f64::INFINITY
            },
            f64::max,
        );
    Ok(agreement(
        "whole model: logits of a 300-token prefill".to_owned(),
        error,
        MODEL_TOLERANCE,
    ))
}

fn random(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
}

/// Dense and DSA decode of one token with V3.2's attention shapes (128 heads, latent 512, rope
/// 64, indexer 64 x 128, top-2048).
fn attention(cuda: &Cuda, context: usize, copy_gb_per_s: f64) -> AttentionTiming {
    let (heads, r, p, ih, id, k) = (128, 512, 64, 64, 128, 2048);
    let mut rng = SplitMix::new(context as u64);
    let q_lat = cuda.upload(&random(&mut rng, heads * r));
    let q_pe = cuda.upload(&random(&mut rng, heads * p));
    let c = cuda.upload(&random(&mut rng, context * r));
    let k_pe = cuda.upload(&random(&mut rng, context * p));
    let iq = cuda.upload(&random(&mut rng, ih * id));
    let iw = cuda.upload(&random(&mut rng, ih));
    let ik = cuda.upload(&random(&mut rng, context * id));
    let position = [context - 1];
    let scale = 1.0 / ((r + p) as f32).sqrt();
    let dense_ms = cuda.time_ms(3, 10, || {
        let _ = cuda.mla_attention(
            &q_lat,
            &q_pe,
            &c,
            &k_pe,
            heads,
            r,
            p,
            &position,
            Selection::Causal,
            scale,
        );
    });
    let indexer_ms = cuda.time_ms(3, 10, || {
        let _ = cuda.indexer_scores(&iq, &iw, &ik, ih, id, &position, 0.088);
    });
    let dsa_ms = cuda.time_ms(2, 10, || {
        let scores = cuda.indexer_scores(&iq, &iw, &ik, ih, id, &position, 0.088);
        let selected = cuda.topk(&scores, context, k);
        let _ = cuda.mla_attention(
            &q_lat,
            &q_pe,
            &c,
            &k_pe,
            heads,
            r,
            p,
            &position,
            Selection::Sparse(&selected),
            scale,
        );
    });
    let bytes = (context * (r + p) * 4) as f64;
    let dense_gb_per_s = bytes / (dense_ms * 1e-3) / 1e9;
    AttentionTiming {
        context,
        dense_ms,
        dense_gb_per_s,
        dense_share_of_copy: dense_gb_per_s / copy_gb_per_s,
        dsa_ms,
        dsa_speedup: dense_ms / dsa_ms,
        indexer_positions_per_s: context as f64 / (indexer_ms * 1e-3),
    }
}

/// Runs the whole check on CUDA device `ordinal`; `scratch` holds the test model.
pub fn run(ordinal: usize, scratch: &Path) -> Result<Report, String> {
    let cuda = Cuda::open(ordinal).map_err(|e| e.to_string())?;
    cuda.set_poison(true);
    let mut agreement = operations(&cuda);
    agreement.extend(gate_and_sampling(&cuda));
    cuda.set_poison(false);

    // Bandwidth reference: a 1 GiB device-to-device copy counts its reads and its writes.
    let floats = 256 << 20;
    let src = cuda.alloc(floats);
    let mut dst = cuda.alloc(floats);
    let copy_ms = cuda.time_ms(2, 10, || cuda.copy(&src, &mut dst));
    let copy_gb_per_s = 2.0 * (floats * 4) as f64 / (copy_ms * 1e-3) / 1e9;
    drop((src, dst));

    let attention = [4096, 32_768, 131_072]
        .into_iter()
        .map(|context| attention(&cuda, context, copy_gb_per_s))
        .collect();

    let n = 8192;
    let mut rng = SplitMix::new(3);
    let a = cuda.upload(&random(&mut rng, n * n));
    let b = cuda.upload(&random(&mut rng, n * n));
    let gemm_ms = cuda.time_ms(1, 5, || {
        let _ = cuda.matmul(&a, &b, n, n, n);
    });
    let gemm_tflops = 2.0 * (n as f64).powi(3) / (gemm_ms * 1e-3) / 1e12;
    drop((a, b));

    let device = cuda.device_name().to_owned();
    let multiprocessors = cuda.multiprocessors();
    agreement.push(whole_model(cuda, &scratch.join("tiny"))?);
    let (decode, time_to_first_token_4096_s) = end_to_end(
        Cuda::open(ordinal).map_err(|e| e.to_string())?,
        &scratch.join("bench"),
        &[4096, 32_768, 131_072],
    )?;
    Ok(Report {
        device,
        multiprocessors,
        agreement,
        copy_gb_per_s,
        attention,
        gemm_tflops,
        decode,
        time_to_first_token_4096_s,
    })
}
