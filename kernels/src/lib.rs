//! CUDA C kernel sources for the engine's CUDA backend, embedded as text and compiled at run
//! time with NVRTC (through cudarc, loaded dynamically: building needs no CUDA toolkit, and a
//! machine without a GPU never loads a CUDA library).
//!
//! What the model needs beyond cuBLAS: RMSNorm and LayerNorm, YaRN rope (interleaved and
//! half-split), SwiGLU, the MoE gate and expert dispatch / combine, MLA decode attention over
//! the latent cache (split-K), the lightning indexer's scores and its top-k, sampling, and the
//! bf16 conversion and random fills of weights.
//! [`launch`] holds the host side of every launch (grids, blocks, shared memory, argument
//! packing), unit-tested on any machine; [`compile`] turns the sources into PTX for a device's
//! architecture, cached by hash.

pub mod compile;
pub mod launch;

/// Helpers every source uses (warp and block reductions).
pub const COMMON: &str = include_str!("cu/common.cuh");

/// One `.cu` file and the kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub file: &'static str,
    pub text: &'static str,
    pub kernels: &'static [&'static str],
}

pub const SOURCES: &[Source] = &[
    Source {
        file: "norm.cu",
        text: include_str!("cu/norm.cu"),
        kernels: &["rms_norm", "layer_norm"],
    },
    Source {
        file: "rope.cu",
        text: include_str!("cu/rope.cu"),
        kernels: &["rope"],
    },
    Source {
        file: "elementwise.cu",
        text: include_str!("cu/elementwise.cu"),
        kernels: &[
            "silu_mul",
            "add_assign",
            "scatter_add_rows",
            "gather_rows",
            "slice_cols",
            "concat_cols",
        ],
    },
    Source {
        file: "mla.cu",
        text: include_str!("cu/mla.cu"),
        kernels: &["mla_decode", "mla_combine"],
    },
    Source {
        file: "indexer.cu",
        text: include_str!("cu/indexer.cu"),
        kernels: &["indexer_scores"],
    },
    Source {
        file: "topk.cu",
        text: include_str!("cu/topk.cu"),
        kernels: &["topk"],
    },
    Source {
        file: "moe.cu",
        text: include_str!("cu/moe.cu"),
        kernels: &["moe_route"],
    },
    Source {
        file: "convert.cu",
        text: include_str!("cu/convert.cu"),
        kernels: &["to_bf16", "fill_normal", "fill_normal_bf16"],
    },
    Source {
        file: "sampling.cu",
        text: include_str!("cu/sampling.cu"),
        kernels: &["argmax", "softmax_temperature"],
    },
];

/// Every source in one translation unit (one module to load, one PTX to cache).
pub fn program() -> String {
    let mut text = String::from(COMMON);
    for s in SOURCES {
        text.push_str("\n// ---- ");
        text.push_str(s.file);
        text.push_str(" ----\n");
        text.push_str(s.text);
    }
    text
}

/// Every kernel's entry-point name.
pub fn kernel_names() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().flat_map(|s| s.kernels.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_kernel_is_defined_once_in_its_file() {
        for s in SOURCES {
            for k in s.kernels {
                let decl = format!(" {k}(");
                let lines = s
                    .text
                    .lines()
                    .filter(|l| l.contains("__global__ void") && l.contains(&decl))
                    .count();
                assert_eq!(lines, 1, "{}: {k}", s.file);
            }
            let defined = s.text.matches("__global__ void").count();
            assert_eq!(defined, s.kernels.len(), "{}: undeclared kernels", s.file);
        }
        let names: Vec<&str> = kernel_names().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
        assert!(program().contains("dsgw_block_sum"));
    }
}
