//! Configuration of how requests move between deployments: retries, backoff, circuit breakers,
//! passive health and prefix-cache affinity (`[routing]`).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Most provider calls one request may make, across all its deployments (first try
    /// included). Each deployment is tried once before any is tried again.
    pub max_attempts: u32,
    /// Backoff before a deployment is tried again: a random delay in
    /// `[0, min(backoff_max_ms, backoff_base_ms * 2^round))` (full jitter).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Longest upstream `Retry-After` the gateway waits out itself; a longer one is handed to the
    /// client (with the 429) once no other deployment remains.
    pub max_retry_after_ms: u64,
    /// Send requests that share a conversation prefix to the same deployment of a priority
    /// group while it is healthy, so the provider's prefix cache keeps hitting.
    pub affinity: bool,
    /// Shorter conversation anchors (system prompt, tools and first user message, in bytes of
    /// JSON) are spread by weight alone: below one 64-token cache unit nothing is cached.
    pub affinity_min_bytes: usize,
    /// Consecutive provider failures that open a deployment's circuit.
    pub failures_to_open: u32,
    /// Share of failures among the last `error_rate_window` calls that opens the circuit (once
    /// at least half the window has been seen).
    pub error_rate_to_open: f64,
    pub error_rate_window: u32,
    /// How long an open circuit refuses before one probe request is let through.
    pub open_secs: u64,
    /// A deployment whose smoothed time to first byte is `slow_factor` times its group's best
    /// (and above `slow_floor_ms`) is tried after its healthy peers.
    pub slow_factor: f64,
    pub slow_floor_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            max_retry_after_ms: 5_000,
            affinity: true,
            affinity_min_bytes: 256,
            failures_to_open: 5,
            error_rate_to_open: 0.5,
            error_rate_window: 20,
            open_secs: 30,
            slow_factor: 4.0,
            slow_floor_ms: 500,
        }
    }
}

impl RoutingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("[routing]: `max_attempts` must be at least 1".into());
        }
        if self.failures_to_open == 0 {
            return Err("[routing]: `failures_to_open` must be at least 1".into());
        }
        if !(self.error_rate_to_open > 0.0 && self.error_rate_to_open <= 1.0) {
            return Err("[routing]: `error_rate_to_open` must be in (0, 1]".into());
        }
        if !(2..=64).contains(&self.error_rate_window) {
            return Err("[routing]: `error_rate_window` must be between 2 and 64".into());
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err("[routing]: `backoff_max_ms` must be at least `backoff_base_ms`".into());
        }
        if self.slow_factor.is_nan() || self.slow_factor < 1.0 {
            return Err("[routing]: `slow_factor` must be at least 1".into());
        }
        Ok(())
    }
}
