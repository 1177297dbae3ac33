//! Hugging Face checkpoints: `config.json` plus `*.safetensors`, memory-mapped, every tensor
//! converted to f32 on load (bf16, f16, f32, and FP8 e4m3 with `weight_scale_inv` tiles).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::config::{ConfigError, ModelConfig};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("no *.safetensors files in {0}")]
    NoWeights(PathBuf),
    #[error("tensor `{0}` is missing from the checkpoint")]
    Missing(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    Dtype { name: String, dtype: String },
}

/// A tensor on the host, in f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A memory-mapped checkpoint directory.
pub struct Checkpoint {
    pub config: ModelConfig,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index of the file holding it.
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("files", &self.files.len())
            .field("tensors", &self.index.len())
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

#[allow(unsafe_code)]
fn map(path: &Path) -> Result<Mmap, CheckpointError> {
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: the mapping is read-only and the engine never writes checkpoint files; as with every
    // mmap-based loader, a file truncated by another process while mapped is outside our contract.
    unsafe { Mmap::map(&file) }.map_err(io(path))
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
        let config = ModelConfig::from_json(&text)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(CheckpointError::NoWeights(dir.to_owned()));
        }
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let mmap = map(&path)?;
            let names = SafeTensors::deserialize(&mmap)
                .map_err(|e| CheckpointError::Format {
                    path: path.clone(),
                    message: e.to_string(),
                })?
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            for name in names {
                index.insert(name, files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self {
            config,
            files,
            index,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'_>, CheckpointError> {
        let &file = self
            .index
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_owned()))?;
        let (path, mmap) = &self.files[file];
        let tensors = SafeTensors::deserialize(mmap).map_err(|e| CheckpointError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        tensors
            .tensor(name)
            .map_err(|_| CheckpointError::Missing(name.to_owned()))
    }

    /// Loads a tensor as f32 and checks its shape. FP8 weights are dequantised with their
    /// `<name>_scale_inv` tiles.
    pub fn load(&self, name: &str, expected: &[usize]) -> Result<HostTensor, CheckpointError> {
        let view = self.view(name)?;
        if view.shape() != expected {
            return Err(CheckpointError::Shape {
                name: name.to_owned(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let bytes = view.data();
        let data = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F8_E4M3 => self.dequantize_fp8(name, bytes, expected)?,
            other => {
                return Err(CheckpointError::Dtype {
                    name: name.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(HostTensor {
            shape: expected.to_vec(),
            data,
        })
    }

    fn dequantize_fp8(
        &self,
        name: &str,
        bytes: &[u8],
        shape: &[usize],
    ) -> Result<Vec<f32>, CheckpointError> {
        let [rows, cols] = shape else {
            return Err(CheckpointError::Dtype {
                name: name.to_owned(),
                dtype: "F8_E4M3 outside a 2-D weight".to_owned(),
            });
        };
        let (br, bc) = self.config.fp8_block.unwrap_or((128, 128));
        let scale_name = format!("{name}_scale_inv");
        let tiles = [rows.div_ceil(br), cols.div_ceil(bc)];
        let scales = self.load(&scale_name, &tiles)?;
        let lut = e4m3_table();
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..*rows {
            let scale_row = &scales.data[(r / br) * tiles[1]..][..tiles[1]];
            for (c, &b) in bytes[r * cols..][..*cols].iter().enumerate() {
                out.push(lut[usize::from(b)] * scale_row[c / bc]);
            }
        }
        Ok(out)
    }
}

/// Every FP8 e4m3fn value (no infinities; 0x7f and 0xff are NaN).
pub fn e4m3_table() -> [f32; 256] {
    let mut table = [0f32; 256];
    for (i, v) in table.iter_mut().enumerate() {
        let sign = if i & 0x80 != 0 { -1.0 } else { 1.0 };
        let exp = ((i >> 3) & 0xf) as i32;
        let mant = (i & 7) as f32;
        *v = if i & 0x7f == 0x7f {
            f32::NAN
        } else if exp == 0 {
            sign * mant / 8.0 * 2f32.powi(-6)
        } else {
            sign * (1.0 + mant / 8.0) * 2f32.powi(exp - 7)
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_decodes_known_values() {
        let t = e4m3_table();
        assert_eq!(t[0x00], 0.0);
        assert_eq!(t[0x38], 1.0);
        assert_eq!(t[0xb8], -1.0);
        assert_eq!(t[0x7e], 448.0);
        assert_eq!(t[0x01], 2f32.powi(-9));
        assert!(t[0x7f].is_nan());
    }
}
