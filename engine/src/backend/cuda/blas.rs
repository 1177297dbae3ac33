//! Matrix products through cuBLAS: f32 weights with `cublasSgemm`, bf16 weights with
//! `cublasGemmEx` (activations rounded to bf16 per product, accumulation and output in f32).

// Kernel launches and cuBLAS calls are `unsafe` in cudarc: each call site states why its
// arguments match the kernel's or cuBLAS's expectations.
#![allow(unsafe_code)]

use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaSlice, PushKernelArg};
use dsgw_kernels::launch;

use super::{Cuda, DeviceBuf, DeviceWeight, n32};
use crate::backend::Backend;

impl Cuda {
    pub(super) fn blas_matmul(
        &self,
        x: &DeviceBuf,
        w: &DeviceWeight,
        n: usize,
        k: usize,
        m: usize,
    ) -> DeviceBuf {
        let mut out = self.zeros(n * m);
        if n == 0 || m == 0 {
            return out;
        }
        assert!(
            x.len == n * k && w.len() == m * k,
            "matmul shapes: x {} (n {n} k {k}), w {} (m {m})",
            x.len,
            w.len()
        );
        // Row-major x (n, k) and w (m, k) are column-major xᵀ and wᵀ: outᵀ (m, n) = w · xᵀ.
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n32("m", m),
            n: n32("n", n),
            k: n32("k", k),
            alpha: 1.0f32,
            lda: n32("k", k),
            ldb: n32("k", k),
            beta: 0.0f32,
            ldc: n32("m", m),
        };
        match w {
            // SAFETY: w holds m * k, x holds n * k and out n * m values, as the strides say.
            DeviceWeight::F32(w) => unsafe { self.blas.gemm(cfg, &w.data, &x.data, &mut out.data) }
                .expect("cuBLAS gemm"),
            DeviceWeight::Bf16 { data, .. } => {
                let xb = self.bf16_of(x);
                self.gemm_bf16(&cfg, data, &xb, &mut out.data, None);
            }
        }
        out
    }

    pub(super) fn blas_head_matmul(
        &self,
        x: &DeviceBuf,
        w: &DeviceWeight,
        n: usize,
        heads: usize,
        k: usize,
        m: usize,
    ) -> DeviceBuf {
        let mut out = self.zeros(n * heads * m);
        if n == 0 {
            return out;
        }
        assert!(
            x.len == n * heads * k && w.len() == heads * k * m,
            "head_matmul shapes"
        );
        // Per head h, column-major: out_hᵀ (m, n; ld heads·m) = w_h (m, k; ld m) · x_hᵀ (k, n;
        // ld heads·k), batched over heads with strides k·m, k and m.
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_N,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: n32("m", m),
                n: n32("n", n),
                k: n32("k", k),
                alpha: 1.0f32,
                lda: n32("m", m),
                ldb: n32("heads * k", heads * k),
                beta: 0.0f32,
                ldc: n32("heads * m", heads * m),
            },
            batch_size: n32("heads", heads),
            stride_a: (k * m) as i64,
            stride_b: k as i64,
            stride_c: m as i64,
        };
        match w {
            // SAFETY: w holds heads * k * m, x n * heads * k and out n * heads * m values.
            DeviceWeight::F32(w) => unsafe {
                self.blas
                    .gemm_strided_batched(cfg, &w.data, &x.data, &mut out.data)
            }
            .expect("cuBLAS strided batched gemm"),
            DeviceWeight::Bf16 { data, .. } => {
                let xb = self.bf16_of(x);
                let batch = (cfg.batch_size, cfg.stride_a, cfg.stride_b, cfg.stride_c);
                self.gemm_bf16(&cfg.gemm, data, &xb, &mut out.data, Some(batch));
            }
        }
        out
    }

    /// `x` rounded to bf16, for the activation side of a bf16 product.
    fn bf16_of(&self, x: &DeviceBuf) -> CudaSlice<u16> {
        let out: CudaSlice<u16> = self
            .stream
            .alloc_zeros(x.len.max(1))
            .expect("CUDA allocation");
        let n = x.len as i64;
        let mut b = self.stream.launch_builder(&self.f.to_bf16);
        b.arg(&x.data).arg(&out).arg(&n);
        self.run(b, launch::elementwise(x.len).expect("launch"));
        out
    }

    /// `out = w · x` in cuBLAS's column-major terms, `w` and `x` bf16, `out` f32, accumulating
    /// in f32; strided over a batch when `batch` is `(count, stride_w, stride_x, stride_out)`.
    fn gemm_bf16(
        &self,
        cfg: &GemmConfig<f32>,
        w: &CudaSlice<u16>,
        x: &CudaSlice<u16>,
        out: &mut CudaSlice<f32>,
        batch: Option<(i32, i64, i64, i64)>,
    ) {
        use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType_t};
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let (alpha, beta) = (cfg.alpha, cfg.beta);
        let (a, _a) = w.device_ptr(&self.stream);
        let (b, _b) = x.device_ptr(&self.stream);
        let (c, _c) = out.device_ptr_mut(&self.stream);
        let (bf16, f32_, compute, algo) = (
            cudaDataType_t::CUDA_R_16BF,
            cudaDataType_t::CUDA_R_32F,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        );
        let handle = *self.blas.handle();
        // SAFETY: the pointers are live device allocations of the sizes the caller's strides
        // and shapes describe (checked there), with the element types named beside them; cuBLAS
        // runs on `self.stream`, the stream the guards above order the accesses on.
        let result = unsafe {
            match batch {
                None => cudarc::cublas::result::gemm_ex(
                    handle,
                    cfg.transa,
                    cfg.transb,
                    cfg.m,
                    cfg.n,
                    cfg.k,
                    (&raw const alpha).cast(),
                    a as *const _,
                    bf16,
                    cfg.lda,
                    b as *const _,
                    bf16,
                    cfg.ldb,
                    (&raw const beta).cast(),
                    c as *mut _,
                    f32_,
                    cfg.ldc,
                    compute,
                    algo,
                ),
                Some((count, sa, sb, sc)) => cudarc::cublas::result::gemm_strided_batched_ex(
                    handle,
                    cfg.transa,
                    cfg.transb,
                    cfg.m,
                    cfg.n,
                    cfg.k,
                    (&raw const alpha).cast(),
                    a as *const _,
                    bf16,
                    cfg.lda,
                    sa,
                    b as *const _,
                    bf16,
                    cfg.ldb,
                    sb,
                    (&raw const beta).cast(),
                    c as *mut _,
                    f32_,
                    cfg.ldc,
                    sc,
                    count,
                    compute,
                    algo,
                ),
            }
        };
        result.expect("cuBLAS bf16 gemm");
    }
}
