//! Per-deployment health: a circuit breaker fed by provider faults, and a smoothed time to first
//! byte. Consecutive failures or a high error rate open the circuit, so requests skip a
//! deployment that is down instead of waiting on it; after a cool-down one probe request is let
//! through (half-open), and its outcome closes or re-opens the circuit. A deployment that is up
//! but slow stays usable and is tried after its healthy peers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::config::RoutingConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else skips the deployment.
    HalfOpen,
}

/// When a circuit opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    pub failures_to_open: u32,
    pub error_rate_to_open: f64,
    /// Calls remembered for the error rate (at most 64).
    pub window: u32,
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self::from(&RoutingConfig::default())
    }
}

impl From<&RoutingConfig> for BreakerPolicy {
    fn from(c: &RoutingConfig) -> Self {
        Self {
            failures_to_open: c.failures_to_open.max(1),
            error_rate_to_open: c.error_rate_to_open,
            window: c.error_rate_window.clamp(2, 64),
            open_for: Duration::from_secs(c.open_secs),
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive: u32,
    /// The last `seen` outcomes, newest in bit 0; a set bit is a failure.
    history: u64,
    seen: u32,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    policy: BreakerPolicy,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(BreakerPolicy::default())
    }
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive: 0,
                history: 0,
                seen: 0,
            }),
            policy,
        }
    }

    /// Whether a request may try this deployment now (taking the probe slot when half-open).
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = self.inner.lock().expect("breaker lock");
        match inner.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                inner.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// Whether the circuit is closed, without taking a probe slot.
    pub fn is_closed(&self) -> bool {
        self.state() == State::Closed
    }

    fn success(&self) {
        let mut inner = self.inner.lock().expect("breaker lock");
        inner.record(false, self.policy.window);
        inner.consecutive = 0;
        if inner.state == State::HalfOpen {
            // A recovered deployment starts with a clean slate, not with the failures that
            // opened it (which would re-open it at the next blip).
            inner.history = 0;
            inner.seen = 0;
        }
        inner.state = State::Closed;
    }

    /// A provider fault (connection, timeout, 429, 5xx, broken stream,
    /// `insufficient_system_resource`).
    fn failure(&self, now: Instant) {
        let mut inner = self.inner.lock().expect("breaker lock");
        inner.record(true, self.policy.window);
        inner.consecutive += 1;
        let failures = inner.history.count_ones();
        let rate_trips = inner.seen * 2 >= self.policy.window
            && f64::from(failures) >= self.policy.error_rate_to_open * f64::from(inner.seen);
        let open = match inner.state {
            State::HalfOpen => true,
            State::Open { .. } => false,
            State::Closed => inner.consecutive >= self.policy.failures_to_open || rate_trips,
        };
        if open {
            inner.state = State::Open {
                until: now + self.policy.open_for,
            };
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("breaker lock").state
    }

    /// `closed`, `open` or `half_open`, for metrics and the admin view.
    pub fn label(&self) -> &'static str {
        match self.state() {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// Failures among the remembered calls, as a share.
    pub fn error_rate(&self) -> f64 {
        let inner = self.inner.lock().expect("breaker lock");
        if inner.seen == 0 {
            0.0
        } else {
            f64::from(inner.history.count_ones()) / f64::from(inner.seen)
        }
    }
}

impl Inner {
    fn record(&mut self, failed: bool, window: u32) {
        let mask = if window >= 64 {
            u64::MAX
        } else {
            (1u64 << window) - 1
        };
        self.history = ((self.history << 1) | u64::from(failed)) & mask;
        self.seen = (self.seen + 1).min(window);
    }
}

/// An exponentially weighted moving average of a duration, lock-free (0 = nothing seen yet).
#[derive(Debug, Default)]
pub struct Ewma {
    micros: AtomicU64,
}

impl Ewma {
    /// Weight of a new sample: about the last ten calls dominate.
    const ALPHA: f64 = 0.2;

    fn observe(&self, sample: Duration) {
        let sample = sample.as_micros().min(u128::from(u64::MAX)) as u64;
        // A lost race between two updates drops one sample: harmless for a health signal.
        let old = self.micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample.max(1)
        } else {
            ((1.0 - Self::ALPHA) * old as f64 + Self::ALPHA * sample as f64).max(1.0) as u64
        };
        self.micros.store(new, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Duration> {
        match self.micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Everything the router knows about one deployment's health.
#[derive(Debug, Default)]
pub struct Health {
    pub breaker: Breaker,
    /// Time from sending the request to the first byte of the answer (headers for JSON, first
    /// event for streams), over successful calls.
    pub ttfb: Ewma,
}

/// What one provider call showed about a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// It answered (its first event, or its whole body) after this long.
    Answered(Duration),
    /// It answered, refusing the request itself (a 4xx): the deployment is healthy.
    RefusedRequest,
    /// A provider fault: unreachable, timed out, 429, 5xx, a broken or garbled stream, an error
    /// event, out of capacity mid-answer.
    Failed,
}

impl Health {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            breaker: Breaker::new(policy),
            ttfb: Ewma::default(),
        }
    }

    /// The one way health changes: every call's outcome goes through here.
    pub fn observe(&self, observation: Observation) {
        match observation {
            Observation::Answered(ttfb) => {
                self.breaker.success();
                self.ttfb.observe(ttfb);
            }
            Observation::RefusedRequest => self.breaker.success(),
            Observation::Failed => self.breaker.failure(Instant::now()),
        }
    }

    /// The gauges' view of this deployment.
    pub fn reading(&self) -> crate::accounting::metrics::HealthReading {
        crate::accounting::metrics::HealthReading {
            circuit: self.breaker.label(),
            ttfb: self.ttfb.get(),
            error_rate: self.breaker.error_rate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(failures: u32, rate: f64, window: u32) -> BreakerPolicy {
        BreakerPolicy {
            failures_to_open: failures,
            error_rate_to_open: rate,
            window,
            open_for: Duration::from_secs(10),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let b = Breaker::new(policy(3, 1.0, 64));
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
        assert_eq!(b.label(), "open", "a failed probe re-opens");
        assert!(b.allow(t0 + Duration::from_secs(20)));
        b.success();
        assert_eq!(b.label(), "closed");
        assert_eq!(b.error_rate(), 0.0, "a recovered deployment starts clean");
        assert!(b.allow(t0 + Duration::from_secs(20)));
    }

    #[test]
    fn error_rate_opens_without_consecutive_failures() {
        // Every other call fails: never two in a row, but half of the window.
        let b = Breaker::new(policy(3, 0.5, 10));
        let t0 = Instant::now();
        for i in 0..2 {
            b.success();
            b.failure(t0);
            assert_eq!(b.label(), "closed", "window not yet half full at {i}");
        }
        b.success();
        b.failure(t0);
        assert_eq!(b.label(), "open");
    }

    #[test]
    fn error_rate_forgets_old_failures() {
        let b = Breaker::new(policy(100, 0.5, 8));
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failure(t0);
        }
        for _ in 0..8 {
            b.success();
        }
        assert_eq!(b.error_rate(), 0.0);
        b.failure(t0);
        assert_eq!(b.label(), "closed");
    }

    #[test]
    fn ewma_follows_samples() {
        let e = Ewma::default();
        assert_eq!(e.get(), None);
        e.observe(Duration::from_millis(100));
        assert_eq!(e.get(), Some(Duration::from_millis(100)));
        for _ in 0..30 {
            e.observe(Duration::from_millis(10));
        }
        let now = e.get().unwrap();
        assert!(now < Duration::from_millis(11), "{now:?}");
    }
}
