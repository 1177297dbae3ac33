//! The wire formats every layer reads and writes: JSON objects kept as their fields' bytes
//! ([`raw_object`]), server-sent events ([`sse`]), and the one error type with DeepSeek's
//! envelope ([`error`]), and the scrubbing of text relayed from elsewhere ([`scrub`]).

pub mod error;
pub mod json_scan;
pub mod raw_object;
pub mod scrub;
pub mod sse;
