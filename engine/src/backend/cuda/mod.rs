//! The CUDA backend: the same trait as the CPU's, with buffers in device memory. cuBLAS does
//! the matrix products: weights in bf16 by default (activations converted to bf16 per product,
//! accumulation and outputs in f32), or in f32 ([`Cuda::with_weights`]); the `dsgw-kernels`
//! sources, compiled with NVRTC for this device on first use and cached on disk, do the rest
//! (`attention.rs`: MLA and the indexer over the paged cache; `blas.rs`: the products;
//! `gate.rs`: the MoE gate and sampling). CUDA is loaded at run time: a machine without a GPU or
//! driver never touches it, and [`Cuda::open`] says why it cannot run instead of panicking.
//!
//! A failure inside a kernel after start-up panics the engine thread (the trait has no error
//! path); the gateway then answers 503 for that provider and falls back like for any other.

// Kernel launches and cuBLAS calls are `unsafe` in cudarc: each call site states why its
// arguments match the kernel's signature.
#![allow(unsafe_code)]

mod attention;
mod blas;
mod gate;
#[cfg(test)]
mod kernel_emulation;
mod ops;

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig};
use dsgw_kernels::launch::{self, Launch};

use super::WeightFormat;

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
        // SAFETY: every operation of this backend runs on the context's one default stream, so
        // the per-allocation events cudarc records to order accesses across streams have nothing
        // to order; without them each allocation and free is two fewer driver calls (the MoE
        // layers make thousands per token).
        unsafe { ctx.disable_event_tracking() };
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

    fn upload_ints(&self, values: &[i32]) -> CudaSlice<i32> {
        if values.is_empty() {
            return self.stream.alloc_zeros(1).expect("CUDA allocation");
        }
        self.stream.clone_htod(values).expect("CUDA copy")
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

#[cfg(test)]
mod tests {
    /// The launch sites of this backend, as text.
    const SITES: [&str; 4] = [
        include_str!("ops.rs"),
        include_str!("blas.rs"),
        include_str!("attention.rs"),
        include_str!("gate.rs"),
    ];

    /// Each kernel's parameter names, from its CUDA C source.
    fn parameters(kernel: &str) -> Vec<String> {
        let source = dsgw_kernels::SOURCES
            .iter()
            .find(|s| s.kernels.contains(&kernel))
            .unwrap_or_else(|| panic!("no kernel {kernel}"));
        // `__global__ void [__launch_bounds__(N)] name(`
        let name = format!(" {kernel}(");
        let line = source
            .text
            .lines()
            .find(|l| l.contains("__global__ void") && l.contains(&name))
            .expect("declared");
        let start = source.text.find(line).expect("a line of the source")
            + line.find(&name).expect("the name")
            + name.len();
        let list = &source.text[start..start + source.text[start..].find(')').expect("closed")];
        list.split(',')
            .map(|p| {
                let name = p.split_whitespace().last().expect("a parameter");
                name.trim_start_matches('*').to_owned()
            })
            .collect()
    }

    /// Every launch pushes as many arguments as its kernel takes (an argument pushed twice or
    /// forgotten reads garbage on the GPU, which no CPU test would see), and every kernel of the
    /// program is launched somewhere.
    #[test]
    fn every_launch_pushes_one_argument_per_kernel_parameter() {
        let mut launched = Vec::new();
        for text in SITES {
            for (at, _) in text.match_indices("launch_builder(&self.f.") {
                let rest = &text[at + "launch_builder(&self.f.".len()..];
                let kernel = &rest[..rest.find(')').expect("closed")];
                // The builder statement after `let mut b = ...;` runs to the next `;`.
                let chain = &rest[rest.find(';').expect("statement") + 1..];
                let chain = &chain[..chain.find(';').expect("statement")];
                let pushed = chain.matches(".arg(").count();
                assert_eq!(
                    pushed,
                    parameters(kernel).len(),
                    "{kernel}: {pushed} arguments pushed for {:?}",
                    parameters(kernel)
                );
                launched.push(kernel.to_owned());
            }
        }
        for kernel in dsgw_kernels::kernel_names() {
            assert!(
                launched.iter().any(|k| k == kernel),
                "{kernel} is never launched"
            );
        }
    }
}
