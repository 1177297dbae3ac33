//! The CUDA backend: the same trait as the CPU's, with buffers in device memory. cuBLAS does
//! the matrix products: weights in bf16 by default (activations converted to bf16 per product,
//! accumulation and outputs in f32), or in f32 ([`Cuda::with_weights`]); the `dsgw-kernels`
//! sources, compiled with NVRTC for this device on first use and cached on disk, do the rest. CUDA is loaded at run time: a machine without a GPU or driver
//! never touches it, and [`Cuda::open`] says why it cannot run instead of panicking.
//!
//! A failure inside a kernel after start-up panics the engine thread (the trait has no error
//! path); the gateway then answers 503 for that provider and falls back like for any other.

// Kernel launches and cuBLAS calls are `unsafe` in cudarc: each call site states why its
// arguments match the kernel's signature.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use dsgw_kernels::launch::{self, Candidates, Launch};

use super::{Backend, Paged, RopeStyle, Selection, WeightFormat};

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver on this machine (libcuda.so cannot be loaded)")]
    NoDriver,
    #[error("CUDA device {ordinal}: {message}")]
    Device { ordinal: usize, message: String },
    #[error("kernels: {0}")]
    Kernels(#[from] dsgw_kernels::compile::CompileError),
}

/// A device buffer with room to grow (KV caches append a row per token).
pub struct DeviceBuf {
    data: CudaSlice<f32>,
    len: usize,
}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuf({} of {})", self.len, self.data.len())
    }
}

/// A weight matrix in device memory, in the format the backend was opened with.
pub enum DeviceWeight {
    F32(DeviceBuf),
    /// bf16 bits.
    Bf16 {
        data: CudaSlice<u16>,
        len: usize,
    },
}

impl DeviceWeight {
    fn len(&self) -> usize {
        match self {
            Self::F32(b) => b.len,
            Self::Bf16 { len, .. } => *len,
        }
    }
}

/// Every kernel of the program, loaded once.
struct Functions {
    rms_norm: CudaFunction,
    layer_norm: CudaFunction,
    rope: CudaFunction,
    silu_mul: CudaFunction,
    add_assign: CudaFunction,
    scatter_add_rows: CudaFunction,
    gather_rows: CudaFunction,
    slice_cols: CudaFunction,
    concat_cols: CudaFunction,
    mla_decode: CudaFunction,
    mla_combine: CudaFunction,
    indexer_scores: CudaFunction,
    topk: CudaFunction,
    moe_route: CudaFunction,
    argmax: CudaFunction,
    softmax_temperature: CudaFunction,
    to_bf16: CudaFunction,
    fill_normal: CudaFunction,
    fill_normal_bf16: CudaFunction,
}

pub struct Cuda {
    ordinal: usize,
    /// Fill new buffers with NaN instead of zeros, so a kernel that leaves an output element
    /// unwritten shows in the device check.
    poison: std::sync::atomic::AtomicBool,
    weights: WeightFormat,
    name: String,
    multiprocessors: usize,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    f: Functions,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cuda({}: {})", self.ordinal, self.name)
    }
}

/// Where compiled PTX is kept between runs.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("dsgw/kernels")
}

/// Whether a CUDA driver can be loaded here (no CUDA call is made).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its known names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl Cuda {
    /// Opens device `ordinal`, compiles (or loads the cached) kernels for its architecture.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let device = |e: &dyn std::fmt::Debug| CudaError::Device {
            ordinal,
            message: format!("{e:?}"),
        };
        let ctx = CudaContext::new(ordinal).map_err(|e| device(&e))?;
        let attr = |a| ctx.attribute(a).map_err(|e| device(&e));
        use cudarc::driver::sys::CUdevice_attribute as A;
        let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let multiprocessors = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
        let name = ctx.name().unwrap_or_else(|_| "unknown".to_owned());
        let arch = format!("sm_{major}{minor}");
        let ptx = dsgw_kernels::compile::cached(&cache_dir(), &arch)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| device(&e))?;
        let load = |name: &str| module.load_function(name).map_err(|e| device(&e));
        let f = Functions {
            rms_norm: load("rms_norm")?,
            layer_norm: load("layer_norm")?,
            rope: load("rope")?,
            silu_mul: load("silu_mul")?,
            add_assign: load("add_assign")?,
            scatter_add_rows: load("scatter_add_rows")?,
            gather_rows: load("gather_rows")?,
            slice_cols: load("slice_cols")?,
            concat_cols: load("concat_cols")?,
            mla_decode: load("mla_decode")?,
            mla_combine: load("mla_combine")?,
            indexer_scores: load("indexer_scores")?,
            topk: load("topk")?,
            moe_route: load("moe_route")?,
            argmax: load("argmax")?,
            softmax_temperature: load("softmax_temperature")?,
            to_bf16: load("to_bf16")?,
            fill_normal: load("fill_normal")?,
            fill_normal_bf16: load("fill_normal_bf16")?,
        };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| device(&e))?;
        Ok(Self {
            ordinal,
            poison: std::sync::atomic::AtomicBool::new(false),
            weights: WeightFormat::Bf16,
            name,
            multiprocessors,
            stream,
            blas,
            f,
        })
    }

    /// The format of weights uploaded from now on (bf16 unless set).
    pub fn with_weights(mut self, format: WeightFormat) -> Self {
        self.weights = format;
        self
    }

    pub fn weight_format(&self) -> WeightFormat {
        self.weights
    }

    /// Free and total device memory, in bytes.
    pub fn memory(&self) -> (usize, usize) {
        self.stream
            .context()
            .mem_get_info()
            .expect("CUDA memory info")
    }

    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Waits for every queued operation (for timings).
    pub fn synchronize(&self) {
        self.stream.synchronize().expect("CUDA stream");
    }

    /// New buffers hold NaN until written (device checks) or zeros (serving).
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// Milliseconds per call of `f`, from device events around `iters` calls after `warmup`.
    pub fn time_ms(&self, warmup: usize, iters: usize, mut f: impl FnMut()) -> f64 {
        for _ in 0..warmup {
            f();
        }
        let ctx = self.stream.context();
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = ctx.new_event(timing).expect("CUDA event");
        let end = ctx.new_event(timing).expect("CUDA event");
        start.record(&self.stream).expect("CUDA event");
        for _ in 0..iters {
            f();
        }
        end.record(&self.stream).expect("CUDA event");
        f64::from(start.elapsed_ms(&end).expect("CUDA event")) / iters.max(1) as f64
    }

    /// A device-to-device copy of `buf` into `into` (for the bandwidth reference).
    pub fn copy(&self, buf: &DeviceBuf, into: &mut DeviceBuf) {
        self.stream
            .memcpy_dtod(
                &buf.data.slice(..buf.len),
                &mut into.data.slice_mut(..buf.len),
            )
            .expect("CUDA copy");
    }

    /// The MoE gate for every token of `logits (tokens, experts)`: each token's chosen experts
    /// and their weights (the device version of `model::route_token`).
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
        let l = launch::per_row(rows, vocab).expect("launch");
        let v = n32("vocab", vocab);
        let mut b = self.stream.launch_builder(&self.f.softmax_temperature);
        b.arg(&mut logits.data).arg(&v).arg(&temperature);
        self.run(b, l);
    }

    /// A buffer of `len` zeros (or NaN when poisoning).
    pub fn alloc(&self, len: usize) -> DeviceBuf {
        if self.poison.load(std::sync::atomic::Ordering::Relaxed) {
            return DeviceBuf {
                data: self
                    .stream
                    .clone_htod(&vec![f32::NAN; len.max(1)])
                    .expect("CUDA copy"),
                len,
            };
        }
        DeviceBuf {
            data: self
                .stream
                .alloc_zeros(len.max(1))
                .expect("CUDA allocation"),
            len,
        }
    }

    /// The device table of `paged`'s block addresses, for kernels reading the cache by row.
    fn block_table(&self, paged: &Paged<'_, DeviceBuf>) -> CudaSlice<u64> {
        use cudarc::driver::DevicePtr;
        // One stream does all the work, so the access guards have nothing to order.
        let addresses: Vec<u64> = paged
            .blocks
            .iter()
            .map(|b| b.data.device_ptr(&self.stream).0)
            .collect();
        let table = launch::block_table(&addresses, paged.len).expect("paged cache");
        if table.is_empty() {
            return self.stream.alloc_zeros(1).expect("CUDA allocation");
        }
        self.stream.clone_htod(&table).expect("CUDA copy")
    }

    fn upload_ints(&self, values: &[i32]) -> CudaSlice<i32> {
        if values.is_empty() {
            return self.stream.alloc_zeros(1).expect("CUDA allocation");
        }
        self.stream.clone_htod(values).expect("CUDA copy")
    }

    /// `x` rounded to bf16, for the activation side of a bf16 product.
    fn bf16_of(&self, x: &DeviceBuf) -> CudaSlice<u16> {
        let out: CudaSlice<u16> = self
            .stream
            .alloc_zeros(x.len.max(1))
            .expect("CUDA allocation");
        let n = x.len as i64;
        let mut b = self.stream.launch_builder(&self.f.to_bf16);
        b.arg(&x.data).arg(&n).arg(&out);
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

    fn run(&self, mut builder: cudarc::driver::LaunchArgs<'_>, l: Launch) {
        let cfg = LaunchConfig {
            grid_dim: l.grid,
            block_dim: l.block,
            shared_mem_bytes: l.shared_bytes,
        };
        // SAFETY: each caller pushes exactly the arguments of the kernel it names, in order and
        // with the kernel's types (device pointers of f32 / i32, int, float, long long), and the
        // launch geometry comes from `dsgw_kernels::launch`, which each kernel is written for.
        unsafe { builder.launch(cfg) }.expect("CUDA kernel launch");
    }
}

fn n32(what: &'static str, v: usize) -> i32 {
    launch::int(what, v).expect("shape fits a 32-bit int")
}

fn arg<T: DeviceRepr>(v: T) -> T {
    v
}

impl Backend for Cuda {
    type Buf = DeviceBuf;
    type Weight = DeviceWeight;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, data: &[f32]) -> DeviceBuf {
        if data.is_empty() {
            return self.zeros(0);
        }
        DeviceBuf {
            data: self.stream.clone_htod(data).expect("CUDA copy"),
            len: data.len(),
        }
    }

    fn download(&self, buf: &DeviceBuf) -> Vec<f32> {
        if buf.len == 0 {
            return Vec::new();
        }
        self.stream
            .clone_dtoh(&buf.data.slice(..buf.len))
            .expect("CUDA copy")
    }

    fn len(&self, buf: &DeviceBuf) -> usize {
        buf.len
    }

    fn zeros(&self, len: usize) -> DeviceBuf {
        self.alloc(len)
    }

    fn upload_weight(&self, data: &[f32]) -> DeviceWeight {
        match self.weights {
            WeightFormat::F32 => DeviceWeight::F32(self.upload(data)),
            WeightFormat::Bf16 => {
                // Rounded on the host (the same rounding as `to_bf16`): half the bytes to copy.
                let bits: Vec<u16> = data
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                DeviceWeight::Bf16 {
                    data: if bits.is_empty() {
                        self.stream.alloc_zeros(1).expect("CUDA allocation")
                    } else {
                        self.stream.clone_htod(&bits).expect("CUDA copy")
                    },
                    len: data.len(),
                }
            }
        }
    }

    fn random(&self, len: usize, seed: u64, mean: f32, std: f32) -> DeviceBuf {
        let out = self.zeros(len);
        let n = len as i64;
        let mut b = self.stream.launch_builder(&self.f.fill_normal);
        b.arg(&out.data).arg(&n).arg(&seed).arg(&mean).arg(&std);
        self.run(b, launch::elementwise(len).expect("launch"));
        out
    }

    fn random_weight(&self, len: usize, seed: u64, std: f32) -> DeviceWeight {
        match self.weights {
            WeightFormat::F32 => DeviceWeight::F32(self.random(len, seed, 0.0, std)),
            WeightFormat::Bf16 => {
                let data: CudaSlice<u16> = self
                    .stream
                    .alloc_zeros(len.max(1))
                    .expect("CUDA allocation");
                let n = len as i64;
                let mut b = self.stream.launch_builder(&self.f.fill_normal_bf16);
                b.arg(&data).arg(&n).arg(&seed).arg(&std);
                self.run(b, launch::elementwise(len).expect("launch"));
                DeviceWeight::Bf16 { data, len }
            }
        }
    }

    fn route(
        &self,
        logits: &DeviceBuf,
        bias: &[f32],
        moe: &crate::config::MoeConfig,
    ) -> Vec<Vec<(usize, f32)>> {
        self.moe_route(logits, &self.upload(bias), moe)
    }

    fn embed(&self, table: &DeviceBuf, ids: &[u32], dim: usize) -> DeviceBuf {
        let rows: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        self.gather_rows(table, &rows, dim)
    }

    fn matmul(&self, x: &DeviceBuf, w: &DeviceWeight, n: usize, k: usize, m: usize) -> DeviceBuf {
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

    fn head_matmul(
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

    fn rms_norm(&self, x: &DeviceBuf, weight: &DeviceBuf, dim: usize, eps: f32) -> DeviceBuf {
        let rows = x.len / dim;
        let out = self.zeros(x.len);
        let l = launch::per_row(rows, dim).expect("launch");
        let dim32 = n32("dim", dim);
        let mut b = self.stream.launch_builder(&self.f.rms_norm);
        b.arg(&x.data)
            .arg(&weight.data)
            .arg(&out.data)
            .arg(&dim32)
            .arg(&eps);
        self.run(b, l);
        out
    }

    fn layer_norm(
        &self,
        x: &DeviceBuf,
        weight: &DeviceBuf,
        bias: &DeviceBuf,
        dim: usize,
        eps: f32,
    ) -> DeviceBuf {
        let rows = x.len / dim;
        let out = self.zeros(x.len);
        let l = launch::per_row(rows, dim).expect("launch");
        let dim32 = n32("dim", dim);
        let mut b = self.stream.launch_builder(&self.f.layer_norm);
        b.arg(&x.data)
            .arg(&weight.data)
            .arg(&bias.data)
            .arg(&out.data)
            .arg(&dim32)
            .arg(&eps);
        self.run(b, l);
        out
    }

    fn slice_cols(
        &self,
        x: &DeviceBuf,
        cols: usize,
        groups: usize,
        start: usize,
        len: usize,
    ) -> DeviceBuf {
        let rows = x.len / cols;
        let out = self.zeros(rows * groups * len);
        let l = launch::elementwise(out.len).expect("launch");
        let (r, c, g, s, n) = (
            n32("rows", rows),
            n32("cols", cols),
            n32("groups", groups),
            n32("start", start),
            n32("len", len),
        );
        let mut b = self.stream.launch_builder(&self.f.slice_cols);
        b.arg(&x.data)
            .arg(&out.data)
            .arg(&r)
            .arg(&c)
            .arg(&g)
            .arg(&s)
            .arg(&n);
        self.run(b, l);
        out
    }

    fn concat_cols(&self, a: &DeviceBuf, ca: usize, b_buf: &DeviceBuf, cb: usize) -> DeviceBuf {
        let rows = a.len / ca;
        let out = self.zeros(rows * (ca + cb));
        let l = launch::elementwise(out.len).expect("launch");
        let (ca32, cb32, rows32) = (n32("ca", ca), n32("cb", cb), n32("rows", rows));
        let mut b = self.stream.launch_builder(&self.f.concat_cols);
        b.arg(&a.data)
            .arg(&ca32)
            .arg(&b_buf.data)
            .arg(&cb32)
            .arg(&out.data)
            .arg(&rows32);
        self.run(b, l);
        out
    }

    fn rope(
        &self,
        x: &mut DeviceBuf,
        heads: usize,
        head_dim: usize,
        rope_dim: usize,
        positions: &[usize],
        cos: &DeviceBuf,
        sin: &DeviceBuf,
        style: RopeStyle,
    ) {
        let rows = positions.len();
        let positions = self.upload_ints(&launch::ints("positions", positions).expect("positions"));
        let l = launch::elementwise(rows * heads * (rope_dim / 2)).expect("launch");
        let (r, h, hd, rd) = (
            n32("rows", rows),
            n32("heads", heads),
            n32("head_dim", head_dim),
            n32("rope_dim", rope_dim),
        );
        let half_split = arg(i32::from(style == RopeStyle::HalfSplit));
        let data = &mut x.data;
        let mut b = self.stream.launch_builder(&self.f.rope);
        b.arg(data)
            .arg(&positions)
            .arg(&cos.data)
            .arg(&sin.data)
            .arg(&r)
            .arg(&h)
            .arg(&hd)
            .arg(&rd)
            .arg(&half_split);
        self.run(b, l);
    }

    fn silu_mul(&self, gate: &DeviceBuf, up: &DeviceBuf) -> DeviceBuf {
        let out = self.zeros(gate.len);
        let n = gate.len as i64;
        let mut b = self.stream.launch_builder(&self.f.silu_mul);
        b.arg(&gate.data).arg(&up.data).arg(&out.data).arg(&n);
        self.run(b, launch::elementwise(gate.len).expect("launch"));
        out
    }

    fn add_assign(&self, x: &mut DeviceBuf, y: &DeviceBuf) {
        let n = x.len as i64;
        let l = launch::elementwise(x.len).expect("launch");
        let data = &mut x.data;
        let mut b = self.stream.launch_builder(&self.f.add_assign);
        b.arg(data).arg(&y.data).arg(&n);
        self.run(b, l);
    }

    fn scatter_add_rows(
        &self,
        out: &mut DeviceBuf,
        y: &DeviceBuf,
        rows: &[usize],
        scale: &[f32],
        dim: usize,
    ) {
        if rows.is_empty() {
            return;
        }
        let rows_dev = self.upload_ints(&launch::ints("rows", rows).expect("rows"));
        let scale_dev: CudaSlice<f32> = self.stream.clone_htod(scale).expect("CUDA copy");
        let (n, d) = (n32("rows", rows.len()), n32("dim", dim));
        let l = launch::elementwise(rows.len() * dim).expect("launch");
        let data = &mut out.data;
        let mut b = self.stream.launch_builder(&self.f.scatter_add_rows);
        b.arg(data)
            .arg(&y.data)
            .arg(&rows_dev)
            .arg(&scale_dev)
            .arg(&n)
            .arg(&d);
        self.run(b, l);
    }

    fn gather_rows(&self, x: &DeviceBuf, rows: &[usize], dim: usize) -> DeviceBuf {
        let out = self.zeros(rows.len() * dim);
        if rows.is_empty() {
            return out;
        }
        let rows_dev = self.upload_ints(&launch::ints("rows", rows).expect("rows"));
        let (n, d) = (n32("rows", rows.len()), n32("dim", dim));
        let mut b = self.stream.launch_builder(&self.f.gather_rows);
        b.arg(&x.data).arg(&rows_dev).arg(&out.data).arg(&n).arg(&d);
        self.run(b, launch::elementwise(out.len).expect("launch"));
        out
    }

    fn concat_rows(&self, parts: &[DeviceBuf]) -> DeviceBuf {
        let total = parts.iter().map(|p| p.len).sum();
        let mut out = self.zeros(total);
        let mut at = 0;
        for p in parts.iter().filter(|p| p.len > 0) {
            self.stream
                .memcpy_dtod(
                    &p.data.slice(..p.len),
                    &mut out.data.slice_mut(at..at + p.len),
                )
                .expect("CUDA copy");
            at += p.len;
        }
        out
    }

    fn copy_rows(
        &self,
        dst: &mut DeviceBuf,
        at: usize,
        src: &DeviceBuf,
        from: usize,
        count: usize,
        width: usize,
    ) {
        if count == 0 {
            return;
        }
        let (d, f, n) = (at * width, from * width, count * width);
        assert!(
            d + n <= dst.len && f + n <= src.len,
            "copy_rows outside a buffer"
        );
        self.stream
            .memcpy_dtod(&src.data.slice(f..f + n), &mut dst.data.slice_mut(d..d + n))
            .expect("CUDA copy");
    }

    fn mla_attention(
        &self,
        q_lat: &DeviceBuf,
        q_pe: &DeviceBuf,
        c: &Paged<'_, DeviceBuf>,
        k_pe: &Paged<'_, DeviceBuf>,
        heads: usize,
        r: usize,
        p: usize,
        positions: &[usize],
        selection: Selection<'_>,
        scale: f32,
    ) -> DeviceBuf {
        let n = positions.len();
        let out = self.zeros(n * heads * r);
        if n == 0 {
            return out;
        }
        let len = c.len;
        let (sparse, candidates) = match selection {
            Selection::Causal => (
                0i32,
                Candidates {
                    offsets: vec![0],
                    flat: Vec::new(),
                },
            ),
            Selection::Sparse(sel) => (1, Candidates::pack(sel, len).expect("candidates")),
        };
        let longest = match selection {
            Selection::Causal => positions.iter().max().map_or(0, |m| m + 1),
            Selection::Sparse(_) => candidates.longest(),
        };
        let query_heads = n * heads;
        let splits = launch::mla_splits(query_heads, longest, self.multiprocessors);
        let (decode, combine) = launch::mla_decode(query_heads, splits, r, p).expect("launch");
        let positions = self.upload_ints(&launch::ints("positions", positions).expect("positions"));
        let offsets = self.upload_ints(&candidates.offsets);
        let flat = self.upload_ints(&candidates.flat);
        let c_blocks = self.block_table(c);
        let kpe_blocks = self.block_table(k_pe);
        let part_max = self.zeros(query_heads * splits);
        let part_sum = self.zeros(query_heads * splits);
        let part_acc = self.zeros(query_heads * splits * r);
        let (h, r32, p32, s32) = (
            n32("heads", heads),
            n32("r", r),
            n32("p", p),
            n32("splits", splits),
        );
        let mut b = self.stream.launch_builder(&self.f.mla_decode);
        b.arg(&q_lat.data)
            .arg(&q_pe.data)
            .arg(&c_blocks)
            .arg(&kpe_blocks)
            .arg(&positions)
            .arg(&offsets)
            .arg(&flat)
            .arg(&sparse)
            .arg(&h)
            .arg(&r32)
            .arg(&p32)
            .arg(&scale)
            .arg(&s32)
            .arg(&part_max.data)
            .arg(&part_sum.data)
            .arg(&part_acc.data);
        self.run(b, decode);
        let mut b = self.stream.launch_builder(&self.f.mla_combine);
        b.arg(&part_max.data)
            .arg(&part_sum.data)
            .arg(&part_acc.data)
            .arg(&r32)
            .arg(&s32)
            .arg(&out.data);
        self.run(b, combine);
        out
    }

    fn indexer_scores(
        &self,
        q: &DeviceBuf,
        w: &DeviceBuf,
        k: &Paged<'_, DeviceBuf>,
        heads: usize,
        d: usize,
        positions: &[usize],
        scale: f32,
    ) -> DeviceBuf {
        let n = positions.len();
        let len = k.len;
        let out = self.zeros(n * len);
        if n == 0 || len == 0 {
            return out;
        }
        let l = launch::indexer(n, len, heads, d).expect("launch");
        let positions = self.upload_ints(&launch::ints("positions", positions).expect("positions"));
        let (h, d32, len32) = (n32("heads", heads), n32("d", d), n32("len", len));
        let k_blocks = self.block_table(k);
        let mut b = self.stream.launch_builder(&self.f.indexer_scores);
        b.arg(&q.data)
            .arg(&w.data)
            .arg(&k_blocks)
            .arg(&positions)
            .arg(&h)
            .arg(&d32)
            .arg(&len32)
            .arg(&scale)
            .arg(&out.data);
        self.run(b, l);
        out
    }

    fn topk(&self, scores: &DeviceBuf, len: usize, k: usize) -> Vec<Vec<u32>> {
        let rows = scores.len / len.max(1);
        if rows == 0 || k == 0 {
            return vec![Vec::new(); rows];
        }
        let l = launch::topk(rows, k).expect("launch");
        let idx: CudaSlice<i32> = self.stream.alloc_zeros(rows * k).expect("CUDA allocation");
        let count: CudaSlice<i32> = self.stream.alloc_zeros(rows).expect("CUDA allocation");
        let (len32, k32) = (n32("len", len), n32("k", k));
        let mut b = self.stream.launch_builder(&self.f.topk);
        b.arg(&scores.data)
            .arg(&len32)
            .arg(&k32)
            .arg(&idx)
            .arg(&count);
        self.run(b, l);
        let idx = self.stream.clone_dtoh(&idx).expect("CUDA copy");
        let count = self.stream.clone_dtoh(&count).expect("CUDA copy");
        idx.chunks_exact(k)
            .zip(count)
            .map(|(row, c)| row[..c as usize].iter().map(|&i| i as u32).collect())
            .collect()
    }
}
