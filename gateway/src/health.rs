//! Per-deployment circuit breakers: consecutive provider failures open the circuit, so requests
//! skip a deployment that is down instead of waiting on it; after a cool-down one probe request
//! is let through (half-open), and its outcome closes or re-opens the circuit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open a circuit.
const FAILURES_TO_OPEN: u32 = 5;
/// How long an open circuit refuses before letting a probe through.
const OPEN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else skips the deployment.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    failures_to_open: u32,
    open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(FAILURES_TO_OPEN, OPEN_FOR)
    }
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    /// Whether a request may try this deployment now (taking the probe slot when half-open).
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn success(&self) {
        *self.state.lock().expect("breaker lock") = State::Closed { failures: 0 };
    }

    /// A provider fault (connection, timeout, 429, 5xx, insufficient_system_resource).
    pub fn failure(&self, now: Instant) {
        let mut state = self.state.lock().expect("breaker lock");
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.failures_to_open => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + self.open_for,
            },
        };
    }

    pub fn state(&self) -> State {
        *self.state.lock().expect("breaker lock")
    }

    /// `closed`, `open` or `half_open`, for metrics and the admin view.
    pub fn label(&self) -> &'static str {
        match self.state() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.failure(t0);
            assert!(b.allow(t0));
        }
        b.success();
        for _ in 0..3 {
            b.failure(t0);
        }
        assert_eq!(b.label(), "open");
        assert!(!b.allow(t0 + Duration::from_secs(9)));
        assert!(
            b.allow(t0 + Duration::from_secs(10)),
            "one probe after the cool-down"
        );
        assert!(!b.allow(t0 + Duration::from_secs(10)), "only one");
        b.failure(t0 + Duration::from_secs(10));
        assert_eq!(b.label(), "open");
        assert!(b.allow(t0 + Duration::from_secs(20)));
        b.success();
        assert_eq!(b.label(), "closed");
        assert!(b.allow(t0 + Duration::from_secs(20)));
    }
}
