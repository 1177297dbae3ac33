//! The end of every request: one completion record, written exactly once whether the request
//! succeeded, failed, or was abandoned by its client (the record is written on drop).
//!
//! Pricing, budgets, the ledger and metrics read this record (see the accounting issue); today it
//! is written to the `dsgw::completion` log target.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Principal;
use crate::limits::Reservation;
use crate::usage::Usage;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// The gateway answered with an error status before any body byte.
    Failed(u16),
    /// The stream broke after its first byte (upstream cut, idle timeout, upstream error event).
    StreamFailed,
    /// The client went away before the end.
    ClientDisconnected,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed(_) => "failed",
            Self::StreamFailed => "stream_failed",
            Self::ClientDisconnected => "client_disconnected",
        }
    }
}

/// Per-request context that settles on [`Settlement::finish`] or, failing that, on drop.
#[derive(Debug)]
pub struct Settlement {
    principal: Principal,
    model: Arc<str>,
    started: Instant,
    deployment: Option<(String, String)>,
    usage: Option<Usage>,
    /// Limits held by the request, returned and reconciled when it settles.
    reservation: Option<Reservation>,
    settled: bool,
}

impl Settlement {
    pub fn new(principal: Principal, model: &str) -> Self {
        Self {
            principal,
            model: Arc::from(model),
            started: Instant::now(),
            deployment: None,
            usage: None,
            reservation: None,
            settled: false,
        }
    }

    /// Holds a limit reservation until the request ends.
    pub fn hold(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// Records which provider and upstream model served the request.
    pub fn routed(&mut self, provider: &str, upstream_model: &str) {
        self.deployment = Some((provider.to_owned(), upstream_model.to_owned()));
    }

    pub fn record_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.write(outcome);
    }

    fn write(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        if let Some(reservation) = self.reservation.take() {
            // A request refused before any byte used nothing; otherwise the provider's count
            // reconciles the estimate (kept as is when the provider never said).
            let used = match outcome {
                Outcome::Failed(_) => Some((0, 0)),
                _ => self.usage.map(|u| (u.prompt(), u.output)),
            };
            reservation.settle(used);
        }
        let (provider, upstream_model) = self
            .deployment
            .as_ref()
            .map_or(("-", "-"), |(p, m)| (p.as_str(), m.as_str()));
        let u = self.usage.unwrap_or_default();
        let status = match outcome {
            Outcome::Failed(status) => status,
            _ => 200,
        };
        tracing::info!(
            target: "dsgw::completion",
            key_id = %self.principal.key_id,
            team = %self.principal.team,
            model = %self.model,
            provider,
            upstream_model,
            outcome = outcome.as_str(),
            status,
            usage_reported = self.usage.is_some(),
            cache_hit = u.cache_hit,
            cache_miss = u.cache_miss,
            output = u.output,
            reasoning = u.reasoning,
            duration_ms = self.started.elapsed().as_millis() as u64,
        );
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.write(Outcome::ClientDisconnected);
    }
}
