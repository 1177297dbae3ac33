//! Device work outside the backend trait: the MoE gate (behind [`crate::backend::Backend::route`])
//! and the sampling helpers.

use cudarc::driver::{CudaSlice, PushKernelArg};
use dsgw_kernels::launch::{self, Launch};

use super::{Cuda, DeviceBuf, n32};

impl Cuda {
    /// The MoE gate for every token of `logits (tokens, experts)`: each token's chosen experts
    /// and their weights (the device version of `model::gate::MoeGate::route`).
    pub fn moe_route(
        &self,
        logits: &DeviceBuf,
        bias: &DeviceBuf,
        moe: &crate::config::MoeConfig,
    ) -> Vec<Vec<(usize, f32)>> {
        let experts = moe.n_routed_experts;
        let tokens = logits.len / experts;
        let top_k = moe.experts_per_token;
        let l = launch::moe_route(tokens, experts, moe.n_group, moe.topk_group, top_k)
            .expect("gate shape");
        let idx: CudaSlice<i32> = self
            .stream
            .alloc_zeros((tokens * top_k).max(1))
            .expect("CUDA allocation");
        let weight: CudaSlice<f32> = self
            .stream
            .alloc_zeros((tokens * top_k).max(1))
            .expect("CUDA allocation");
        let (t, e, g, tg, k) = (
            n32("tokens", tokens),
            n32("experts", experts),
            n32("groups", moe.n_group),
            n32("topk_group", moe.topk_group),
            n32("top_k", top_k),
        );
        let normalize = i32::from(moe.norm_topk_prob);
        let scaling = moe.routed_scaling_factor;
        let mut b = self.stream.launch_builder(&self.f.moe_route);
        b.arg(&logits.data)
            .arg(&bias.data)
            .arg(&t)
            .arg(&e)
            .arg(&g)
            .arg(&tg)
            .arg(&k)
            .arg(&normalize)
            .arg(&scaling)
            .arg(&idx)
            .arg(&weight);
        self.run(b, l);
        let idx = self.stream.clone_dtoh(&idx).expect("CUDA copy");
        let weight = self.stream.clone_dtoh(&weight).expect("CUDA copy");
        idx.chunks_exact(top_k.max(1))
            .zip(weight.chunks_exact(top_k.max(1)))
            .take(tokens)
            .map(|(i, w)| {
                i.iter()
                    .map(|&e| e as usize)
                    .zip(w.iter().copied())
                    .collect()
            })
            .collect()
    }

    /// The greedy token of each row of `logits (rows, vocab)`.
    pub fn argmax(&self, logits: &DeviceBuf, vocab: usize) -> Vec<u32> {
        let rows = logits.len / vocab;
        if rows == 0 {
            return Vec::new();
        }
        let out: CudaSlice<i32> = self
            .stream
            .alloc_zeros(rows.max(1))
            .expect("CUDA allocation");
        let v = n32("vocab", vocab);
        let l = Launch {
            grid: (rows.max(1) as u32, 1, 1),
            block: (1024, 1, 1),
            shared_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.f.argmax);
        b.arg(&logits.data).arg(&v).arg(&out);
        self.run(b, l);
        let out = self.stream.clone_dtoh(&out).expect("CUDA copy");
        out.into_iter().take(rows).map(|i| i as u32).collect()
    }

    /// Each row of `logits (rows, vocab)` replaced by its softmax at `temperature`.
    pub fn softmax(&self, logits: &mut DeviceBuf, vocab: usize, temperature: f32) {
        let rows = logits.len / vocab;
        if rows == 0 {
            return;
        }
        let l = launch::per_row(rows, vocab).expect("launch");
        let v = n32("vocab", vocab);
        let mut b = self.stream.launch_builder(&self.f.softmax_temperature);
        b.arg(&mut logits.data).arg(&v).arg(&temperature);
        self.run(b, l);
    }
}
