//! The wire formats every layer reads and writes: JSON objects kept as their fields' bytes
//! ([`raw_object`], found by a strict scanner of its own, `json_scan`), server-sent events ([`sse`]), and the one error type with DeepSeek's
//! envelope ([`error`]), and the scrubbing of text relayed from elsewhere ([`scrub`]).

pub mod error;
mod json_scan;
pub mod raw_object;
pub mod scrub;
pub mod sse;
