//! An inference engine for the DeepSeek-V3.2 architecture (MLA, DeepSeek Sparse Attention's
//! lightning indexer, the sigmoid group-limited MoE), at any size, from Hugging Face checkpoints.
//!
//! Configuration ([`config`]), weights on disk ([`checkpoint`]), the network ([`model`]), its
//! per-sequence state ([`cache`]) and the numeric kernels ([`backend`]) are separate things.

pub mod backend;
pub mod bench;
pub mod cache;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod device_check;
pub mod generate;
pub mod model;
pub mod rope;
pub mod tiny;
pub mod tokenizer;
