//! An inference engine for the DeepSeek-V3.2 architecture (MLA, DeepSeek Sparse Attention's
//! lightning indexer, the sigmoid group-limited MoE), at any size, from Hugging Face checkpoints.
//!
//! Configuration ([`config`]), weights on disk ([`checkpoint`]), the network ([`model`]), its
//! per-sequence state ([`cache`]) and the numeric kernels ([`backend`]) are separate things.
//! Random models, benchmarks, backend conformance and the device check live apart, in
//! [`tooling`]: the core never depends on them.

pub mod backend;
pub mod cache;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod model;
pub mod random;
pub mod rope;
pub mod tokenizer;
pub mod tooling;
