//! Test support for the end-to-end suite: a faithful fake DeepSeek upstream and a harness that
//! runs the real `dsgw` binary.

pub mod fake;
pub mod faults;
pub mod harness;
pub mod intermediaries;
pub mod postgres_server;
pub mod process;
pub mod prometheus_server;
pub mod redis_server;
pub mod tls_ca;
