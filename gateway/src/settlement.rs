//! The end of every request: one completion record, written exactly once whether the request
//! succeeded, failed, or was abandoned by its client (the record is written on drop). It prices
//! the usage, counts it in the metrics, returns the request's limit reservation, and logs the
//! record on the `dsgw::completion` target.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Principal;
use crate::error::Fault;
use crate::ledger::{Ledger, Record};
use crate::limits::Reservation;
use crate::metrics::{CompletionEvent, Metrics};
use crate::models::Deployment;
use crate::pricing::{Cost, Money, Price};
use crate::usage::Usage;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// The gateway answered with an error status before any body byte.
    Failed(u16, Fault),
    /// The stream broke after its first byte (upstream cut, idle timeout, upstream error event).
    StreamFailed,
    /// The client went away before the end.
    ClientDisconnected,
}

impl From<&crate::error::ApiError> for Outcome {
    fn from(e: &crate::error::ApiError) -> Self {
        Self::Failed(e.status.as_u16(), e.fault)
    }
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed(..) => "failed",
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
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    /// When the provider call started and when its last byte arrived.
    upstream: (Option<Instant>, Option<Instant>),
    deployment: Option<(String, String, Arc<Price>)>,
    usage: Option<Usage>,
    /// Limits held by the request, returned and reconciled when it settles.
    reservation: Option<Reservation>,
    metrics: Option<Arc<Metrics>>,
    ledger: Option<Arc<Ledger>>,
    /// The request body and mode, to estimate usage a provider never reported.
    estimate_from: Option<(bytes::Bytes, bool)>,
    /// Content chunks streamed to the client (about one token each).
    output_chunks: u64,
    /// Provider calls the router made (retries and fallbacks included).
    attempts: u32,
    settled: bool,
}

impl Settlement {
    pub fn new(
        principal: Principal,
        model: &str,
        metrics: Option<Arc<Metrics>>,
        ledger: Option<Arc<Ledger>>,
    ) -> Self {
        Self {
            principal,
            model: Arc::from(model),
            started: Instant::now(),
            first_token: None,
            last_token: None,
            upstream: (None, None),
            deployment: None,
            usage: None,
            reservation: None,
            metrics,
            ledger,
            estimate_from: None,
            output_chunks: 0,
            attempts: 0,
            settled: false,
        }
    }

    /// Holds a limit reservation until the request ends.
    pub fn hold(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// Records which deployment served the request, after how many provider calls.
    pub fn routed(&mut self, deployment: &Deployment, attempts: u32) {
        self.attempts = attempts;
        self.deployment = Some((
            deployment.provider.name.clone(),
            deployment.upstream_model.clone(),
            deployment.price.clone(),
        ));
    }

    /// Marks content sent to the client: the first one times the first token, and each counts
    /// toward an estimate if the provider never reports usage.
    pub fn first_token(&mut self) {
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        if let (Some(last), Some(metrics), Some((provider, _, _))) =
            (self.last_token, &self.metrics, &self.deployment)
        {
            metrics.inter_token(&self.model, provider, (now - last).as_secs_f64());
        }
        self.last_token = Some(now);
        self.output_chunks += 1;
    }

    /// The provider call starts now.
    pub fn upstream_started(&mut self) {
        self.upstream.0 = Some(Instant::now());
    }

    /// The provider's last byte arrived now.
    pub fn upstream_finished(&mut self) {
        self.upstream.1.get_or_insert_with(Instant::now);
    }

    /// Keeps what is needed to estimate usage if the provider never reports it.
    pub fn estimate_from(&mut self, body: bytes::Bytes, thinking: bool) {
        self.estimate_from = Some((body, thinking));
    }

    pub fn record_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// The cost of the recorded usage at the serving deployment's price.
    pub fn cost(&self) -> Option<(Cost, &Price)> {
        let (_, _, price) = self.deployment.as_ref()?;
        Some((price.cost(self.usage.as_ref()?), price))
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.write(outcome);
    }

    fn write(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        // Served but never told how much: count it ourselves, and say so.
        if self.usage.is_none()
            && self.deployment.is_some()
            && !matches!(outcome, Outcome::Failed(..))
            && let Some((body, thinking)) = &self.estimate_from
        {
            let prompt = crate::estimate::prompt_tokens(body, *thinking);
            self.usage = Some(crate::estimate::usage(prompt, self.output_chunks));
        }
        if let Some(reservation) = self.reservation.take() {
            // A request refused before any byte used nothing; otherwise the provider's count
            // reconciles the estimate (kept as is when the provider never said).
            let used = match outcome {
                Outcome::Failed(..) => Some((0, 0)),
                _ => self.usage.map(|u| (u.prompt(), u.output)),
            };
            reservation.settle(used);
        }
        let (provider, upstream_model) = self
            .deployment
            .as_ref()
            .map_or(("-", "-"), |(p, m, _)| (p.as_str(), m.as_str()));
        let u = self.usage.unwrap_or_default();
        let status = match outcome {
            Outcome::Failed(status, _) => status,
            _ => 200,
        };
        let cost = self.cost();
        let duration = self.started.elapsed();
        tracing::info!(
            target: "dsgw::completion",
            key_id = %self.principal.key_id,
            team = %self.principal.team,
            model = %self.model,
            provider,
            upstream_model,
            outcome = outcome.as_str(),
            status,
            attempts = self.attempts,
            usage_estimated = self.usage.is_some_and(|u| u.estimated),
            cache_hit = u.cache_hit,
            cache_miss = u.cache_miss,
            output = u.output,
            reasoning = u.reasoning,
            cost = %cost.as_ref().map_or_else(|| "0".to_owned(), |(c, _)| Money(c.total()).to_string()),
            duration_ms = duration.as_millis() as u64,
        );
        if let (Some(ledger), Some(usage), Some((cost, price))) = (&self.ledger, &self.usage, &cost)
        {
            ledger.append(Record {
                ts: crate::budgets::now(),
                key_id: self.principal.key_id.to_string(),
                team: self.principal.team.to_string(),
                model: self.model.to_string(),
                deployment: format!("{provider}/{upstream_model}"),
                cache_hit: usage.cache_hit,
                cache_miss: usage.cache_miss,
                output: usage.output,
                reasoning: usage.reasoning,
                cost: cost.total(),
                currency: price.currency.clone(),
                estimated: usage.estimated,
            });
        }
        if let Some(metrics) = &self.metrics {
            if let Outcome::Failed(_, fault) = outcome {
                let fault = match fault {
                    Fault::Client if status == 429 => "limit",
                    Fault::Client => "client",
                    Fault::Upstream => "provider",
                    Fault::Gateway => "gateway",
                };
                metrics.error(&self.model, provider, fault);
            }
            if outcome == Outcome::StreamFailed {
                metrics.error(&self.model, provider, "provider");
            }
            metrics.completion(&CompletionEvent {
                model: &self.model,
                provider,
                deployment: upstream_model,
                team: &self.principal.team,
                key_id: &self.principal.key_id,
                status,
                outcome: outcome.as_str(),
                usage: self.usage.as_ref(),
                cost: cost.as_ref().map(|(c, p)| (c, p.currency.as_str())),
                savings: match (&cost, &self.usage) {
                    (Some((_, p)), Some(u)) => {
                        u.cache_hit * p.cache_miss.saturating_sub(p.cache_hit)
                    }
                    _ => 0,
                },
                duration_s: duration.as_secs_f64(),
                ttft_s: self.first_token.map(|t| (t - self.started).as_secs_f64()),
                overhead_s: match self.upstream {
                    (Some(start), end) => {
                        let end = end.unwrap_or_else(Instant::now);
                        Some(((start - self.started) + end.elapsed()).as_secs_f64())
                    }
                    (None, _) => None,
                },
            });
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.write(Outcome::ClientDisconnected);
    }
}
