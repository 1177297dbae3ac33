//! The engine's tooling, apart from its core: random models of the architecture in Hugging Face
//! layout ([`tiny`], behind `dsgw engine init` and the gateway's built-in test model), the
//! measurements behind `dsgw engine bench` ([`bench`]), backend conformance ([`conformance`])
//! and the GPU device check ([`device_check`]). Nothing in the core (config, checkpoint, backend,
//! cache, model, generate, chat, tokenizer) imports from here.

pub mod bench;
pub mod conformance;
pub mod device_check;
pub mod tiny;
