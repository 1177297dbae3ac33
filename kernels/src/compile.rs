//! NVRTC compilation of the kernel program for one architecture, with the compiler's log (so
//! warnings are seen, not just errors), and a disk cache keyed by a hash of the source, the
//! architecture and the options, so a device compiles once.
//!
//! NVRTC is loaded at run time. It compiles to PTX without a GPU or a driver, which is how CI
//! checks every kernel on machines without a GPU (with the library from PyPI's
//! `nvidia-cuda-nvrtc-cu12` wheel on `LD_LIBRARY_PATH`).

// cudarc exposes the log of a successful compilation only through NVRTC's C API.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};
use sha2::{Digest, Sha256};

/// Options every compilation uses: the kernels rely on IEEE division and square roots for
/// agreement with the CPU backend, and fused multiply-adds are fine.
const OPTIONS: &[&str] = &[
    "--std=c++17",
    "--fmad=true",
    "--prec-div=true",
    "--prec-sqrt=true",
];

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the NVRTC library (libnvrtc.so.12) cannot be loaded: install the CUDA toolkit, or \
         `pip install nvidia-cuda-nvrtc-cu12` and put its nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH"
    )]
    NvrtcMissing,
    #[error("NVRTC failed for {arch}: {message}\n{log}")]
    Failed {
        arch: String,
        message: String,
        log: String,
    },
    #[error("kernel cache {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
}

/// PTX for one architecture, and what the compiler said.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub arch: String,
    pub ptx: String,
    /// Warnings and remarks (empty for a clean compile).
    pub log: String,
}

/// Whether NVRTC can be loaded on this machine.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its known names; no NVRTC call is made.
    unsafe { sys::is_culib_present() }
}

/// Compiles [`crate::program`] for `arch` (`sm_90`, `sm_80`, ...).
pub fn compile(arch: &str) -> Result<Compiled, CompileError> {
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let failed = |message: String, log: String| CompileError::Failed {
        arch: arch.to_owned(),
        message,
        log,
    };
    let source = CString::new(crate::program()).expect("kernel sources hold no NUL byte");
    let name = CString::new("dsgw_kernels.cu").expect("no NUL");
    let program = result::create_program(&source, Some(&name))
        .map_err(|e| failed(format!("{e:?}"), String::new()))?;
    let mut options: Vec<String> = OPTIONS.iter().map(|o| (*o).to_owned()).collect();
    options.push(format!(
        "--gpu-architecture={}",
        arch.replace("sm_", "compute_")
    ));
    // SAFETY: `program` was created above and is destroyed once, below; the log and PTX buffers
    // are NUL-terminated copies NVRTC filled.
    let outcome = unsafe {
        let compiled = result::compile_program(program, &options);
        let log = result::get_program_log(program)
            .map(|raw| CStr::from_ptr(raw.as_ptr()).to_string_lossy().into_owned())
            .unwrap_or_default();
        let ptx = match compiled {
            Ok(()) => result::get_ptx(program)
                .map(|raw| CStr::from_ptr(raw.as_ptr()).to_string_lossy().into_owned())
                .map_err(|e| failed(format!("{e:?}"), log.clone())),
            Err(e) => Err(failed(format!("{e:?}"), log.clone())),
        };
        let _ = result::destroy_program(program);
        ptx.map(|ptx| (ptx, log))
    };
    let (ptx, log) = outcome?;
    Ok(Compiled {
        arch: arch.to_owned(),
        ptx,
        log: log.trim().to_owned(),
    })
}

/// The cache file for `arch`: the hash covers the sources, the options and the architecture.
pub fn cache_path(dir: &Path, arch: &str) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(crate::program());
    for o in OPTIONS {
        hash.update(o);
    }
    hash.update(arch);
    let digest = hash.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("dsgw-kernels-{arch}-{hex}.ptx"))
}

/// PTX for `arch` from `dir`, compiling (and storing) it on a miss.
pub fn cached(dir: &Path, arch: &str) -> Result<String, CompileError> {
    let path = cache_path(dir, arch);
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let compiled = compile(arch)?;
    let io = |source| CompileError::Cache {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Write then rename, so a concurrent reader never sees half a file.
    let partial = path.with_extension(format!("ptx.{}", std::process::id()));
    std::fs::write(&partial, &compiled.ptx).map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)?;
    Ok(compiled.ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_change_with_the_architecture() {
        let dir = Path::new("/tmp");
        assert_ne!(cache_path(dir, "sm_90"), cache_path(dir, "sm_80"));
        assert_eq!(cache_path(dir, "sm_90"), cache_path(dir, "sm_90"));
    }
}
