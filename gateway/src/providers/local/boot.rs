//! Starting the local engine: where it runs, how it holds weights, and which model it serves. The
//! plan is made (and checked) without loading anything, so `dsgw check` refuses what `dsgw
//! serve` would; starting loads the weights and the scheduler thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dsgw_engine::backend::cpu::{Cpu, CpuBf16};
use dsgw_engine::backend::cuda::Cuda;
use dsgw_engine::backend::{Backend, WeightFormat};
use dsgw_engine::checkpoint::Checkpoint;
use dsgw_engine::generate::{Engine, EngineOptions};
use dsgw_engine::model::Model;
use dsgw_engine::tokenizer::Tokenizer;
use dsgw_engine::tooling::tiny::{TinySpec, write_model};

use crate::providers::ProviderError;
use crate::support::config::{Device, LocalProviderConfig, Weights};

/// Everything the engine needs, resolved and checked.
pub(super) struct Boot {
    index: usize,
    name: String,
    placement: Placement,
    weights: Option<WeightFormat>,
    pub(super) tokenizer: Arc<Tokenizer>,
    options: EngineOptions,
    model_dir: Option<PathBuf>,
}

enum Placement {
    Cpu,
    Cuda(Box<Cuda>),
    /// CUDA device 0 if it opens when the engine starts, else the CPU.
    Auto,
}

/// The tiny model served when no checkpoint is configured: random weights, the real architecture
/// and tokenizer, so every part of the path runs offline.
fn builtin_spec() -> TinySpec {
    TinySpec {
        hidden_size: 32,
        ..TinySpec::tiny(129_280)
    }
}

impl Boot {
    pub(super) fn plan(index: usize, config: &LocalProviderConfig) -> Result<Self, ProviderError> {
        let invalid = |message: String| ProviderError::Invalid {
            index,
            name: config.name.clone(),
            message,
        };
        let model_dir = config.model_dir.as_deref().map(PathBuf::from);
        if let Some(dir) = &model_dir {
            // Reads the config and the tensor headers: a wrong path or shape fails here.
            Checkpoint::open(dir).map_err(|e| invalid(e.to_string()))?;
        }
        let tokenizer = Arc::new(
            match &model_dir {
                Some(dir) if dir.join("tokenizer.json").exists() => {
                    Tokenizer::from_file(&dir.join("tokenizer.json"))
                }
                _ => Tokenizer::deepseek_v32(),
            }
            .map_err(|e| invalid(e.to_string()))?,
        );
        let placement = match config.device {
            Device::Cpu => Placement::Cpu,
            Device::Auto => Placement::Auto,
            Device::Cuda(ordinal) => Placement::Cuda(Box::new(
                Cuda::open(ordinal)
                    .map_err(|e| invalid(format!("device = \"cuda:{ordinal}\": {e}")))?,
            )),
        };
        let defaults = EngineOptions::default();
        Ok(Self {
            index,
            name: config.name.clone(),
            placement,
            weights: config.weights.map(|w| match w {
                Weights::Bf16 => WeightFormat::Bf16,
                Weights::F32 => WeightFormat::F32,
            }),
            tokenizer,
            options: EngineOptions {
                max_batch: config.max_batch.unwrap_or(defaults.max_batch),
                prefix_cache_entries: config
                    .prefix_cache_entries
                    .unwrap_or(defaults.prefix_cache_entries),
            },
            model_dir,
        })
    }

    /// Loads the model on its device and starts the scheduler.
    pub(super) fn start(mut self) -> Result<Engine, ProviderError> {
        let cuda = match std::mem::replace(&mut self.placement, Placement::Cpu) {
            Placement::Cpu => None,
            Placement::Cuda(cuda) => Some(*cuda),
            Placement::Auto => match Cuda::open(0) {
                Ok(cuda) => Some(cuda),
                Err(e) => {
                    tracing::info!(provider = %self.name, reason = %e, "no usable GPU: the local engine runs on the CPU");
                    None
                }
            },
        };
        match cuda {
            Some(cuda) => {
                let cuda = cuda.with_weights(self.weights.unwrap_or(WeightFormat::Bf16));
                tracing::info!(provider = %self.name, device = %cuda.device_name(), weights = ?cuda.weight_format(), "the local engine runs on CUDA");
                self.engine(cuda)
            }
            None => {
                let weights = self.weights.unwrap_or(WeightFormat::F32);
                tracing::info!(provider = %self.name, ?weights, "the local engine runs on the CPU");
                match weights {
                    WeightFormat::F32 => self.engine(Cpu),
                    WeightFormat::Bf16 => self.engine(CpuBf16),
                }
            }
        }
    }

    fn engine<B: Backend>(&self, backend: B) -> Result<Engine, ProviderError> {
        let model = self
            .load(backend)
            .map_err(|message| ProviderError::Invalid {
                index: self.index,
                name: self.name.clone(),
                message,
            })?;
        Ok(Engine::start(
            model,
            self.tokenizer.clone(),
            self.options.clone(),
        ))
    }

    /// The configured checkpoint, or the tiny built-in model, on `backend`.
    fn load<B: Backend>(&self, backend: B) -> Result<Model<B>, String> {
        match &self.model_dir {
            Some(dir) => {
                let ckpt = Checkpoint::open(dir).map_err(|e| e.to_string())?;
                Model::load(&ckpt, backend).map_err(|e| e.to_string())
            }
            None => {
                // Unique per start: two engines starting at once must not share the files.
                let dir = std::env::temp_dir().join(format!(
                    "dsgw-builtin-{}-{}-{}",
                    std::process::id(),
                    self.index,
                    crate::support::random::random_id()
                ));
                write_model(&dir, &builtin_spec(), 0)
                    .map_err(|e| format!("writing the built-in model: {e}"))?;
                let loaded = Checkpoint::open(&dir).and_then(|ckpt| Model::load(&ckpt, backend));
                let _ = std::fs::remove_dir_all(Path::new(&dir));
                loaded.map_err(|e| e.to_string())
            }
        }
    }
}
