//! The generation service: submit a prompt, receive a stream of text; several requests decode
//! together in one batch (continuous batching), and prompts that share a prefix with an earlier
//! one reuse its KV cache in 64-token blocks, as DeepSeek bills cache hits.

mod json_constraint;
mod prefix_cache;
mod sampling;
mod service;

pub use json_constraint::JsonState;
pub use prefix_cache::{BLOCK, PrefixCache};
pub use sampling::{Constraint, Sampler, SamplingParams, argmax as sampling_argmax};
pub use service::{
    Engine, EngineError, EngineOptions, Event, FinishReason, GenerationRequest, GenerationUsage,
};
