//! A request's completion record: what it was, who served it, what it used and cost, how it
//! ended. Written once, by the pipeline's settle phase, to the completion log
//! (`dsgw::completion`), the spend ledger and the metrics.

use std::sync::Arc;
use std::time::Instant;

use crate::accounting::estimate;
use crate::accounting::metrics::{CompletionEvent, Metrics, Series};
use crate::accounting::pricing::{Charge, Money, Priced, Schedule};
use crate::accounting::spend::ledger::Ledger;
use crate::accounting::spend::record::{Record, now};
use crate::accounting::usage::Usage;
use crate::support::principal::Principal;
use crate::support::redis_link::AfterWrites;
use crate::wire::error::{ApiError, Fault};

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

impl From<&ApiError> for Outcome {
    fn from(e: &ApiError) -> Self {
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

/// The deployment that served (or last answered) a request.
#[derive(Debug, Clone)]
pub struct Served {
    pub deployment: DeploymentName,
    /// Its price when the request was routed.
    pub price: Arc<Schedule>,
    /// The provider's own cost figure, when it reports one, is the truth (OpenRouter).
    pub provider_cost_is_truth: bool,
    /// When the gateway sent the request that answered: the instant it is priced at.
    pub sent_at: jiff::Timestamp,
    /// Its metric series.
    pub series: Arc<Series>,
}

/// `provider/upstream_model`, made once per deployment and shared by every record it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentName {
    text: Arc<str>,
    provider_len: usize,
}

impl DeploymentName {
    pub fn new(provider: &str, upstream_model: &str) -> Self {
        let mut text = String::with_capacity(provider.len() + 1 + upstream_model.len());
        text.push_str(provider);
        text.push('/');
        text.push_str(upstream_model);
        Self {
            text: text.into(),
            provider_len: provider.len(),
        }
    }

    pub fn provider(&self) -> &str {
        &self.text[..self.provider_len]
    }

    /// The model name the provider knows (which may itself hold a `/`).
    pub fn upstream_model(&self) -> &str {
        &self.text[self.provider_len + 1..]
    }

    pub fn shared(&self) -> &Arc<str> {
        &self.text
    }
}

/// One request's record, filled in as it goes and written by [`Settlement::write`].
#[derive(Debug)]
pub struct Settlement {
    principal: Principal,
    model: Arc<str>,
    request_id: Arc<str>,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    /// When the provider call started and when its last byte arrived.
    upstream: (Option<Instant>, Option<Instant>),
    served: Option<Served>,
    usage: Option<Usage>,
    /// The provider's cost figure for `usage`, picodollars.
    provider_cost: Option<u64>,
    metrics: Option<Arc<Metrics>>,
    ledger: Option<Arc<Ledger>>,
    /// The request body and mode, to estimate usage a provider never reported.
    estimate_from: Option<(bytes::Bytes, bool)>,
    /// Content chunks streamed to the client (about one token each).
    output_chunks: u64,
    /// Provider calls the router made (retries and fallbacks included).
    attempts: u32,
    /// Calls that timed out after the prompt was sent, with their attempt numbers: each gets
    /// a record of its own, since the provider may bill them.
    unanswered: Vec<(Served, u32)>,
}

impl Settlement {
    pub fn new(
        principal: Principal,
        model: Arc<str>,
        request_id: Arc<str>,
        metrics: Option<Arc<Metrics>>,
        ledger: Option<Arc<Ledger>>,
    ) -> Self {
        Self {
            principal,
            model,
            request_id,
            started: Instant::now(),
            first_token: None,
            last_token: None,
            upstream: (None, None),
            served: None,
            usage: None,
            provider_cost: None,
            metrics,
            ledger,
            estimate_from: None,
            output_chunks: 0,
            attempts: 0,
            unanswered: Vec::new(),
        }
    }

    /// Records which deployment served (or last answered) the request, after how many calls.
    pub fn served(&mut self, served: Served, attempts: u32) {
        self.attempts = attempts;
        self.served = Some(served);
    }

    /// Records a call that timed out after its prompt was sent (`attempt` of the request's).
    pub fn unanswered(&mut self, served: Served, attempt: u32) {
        self.unanswered.push((served, attempt));
    }

    /// Records the provider calls of a request no deployment answered.
    pub fn attempted(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// Marks content sent to the client: the first one times the first token, and each counts
    /// toward an estimate if the provider never reports usage.
    pub fn first_token(&mut self) {
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        if let (Some(last), Some(metrics), Some(served)) =
            (self.last_token, &self.metrics, &self.served)
        {
            metrics.inter_token(&served.series, (now - last).as_secs_f64());
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

    /// Records the usage a provider reported (and its cost figure, if it gave one); returns
    /// what the client is shown it cost.
    pub fn record_usage(&mut self, usage: Usage, provider_cost: Option<u64>) -> Option<Priced> {
        self.usage = Some(usage);
        self.provider_cost = provider_cost;
        self.charge().map(|c| c.priced())
    }

    /// What the recorded usage is charged at the serving deployment's price, as of when the
    /// request was sent.
    pub fn charge(&self) -> Option<Charge> {
        let served = self.served.as_ref()?;
        let provider_cost = self.provider_cost.filter(|_| served.provider_cost_is_truth);
        Some(
            served
                .price
                .charge(self.usage.as_ref()?, served.sent_at, provider_cost),
        )
    }

    /// The usage the request ends with: the provider's, or, for a request that was served but
    /// never told how much, the gateway's own count (marked estimated). A request refused
    /// before any provider answered used nothing.
    pub fn final_usage(&mut self, outcome: Outcome) -> Option<Usage> {
        if self.usage.is_none()
            && self.served.is_some()
            && !matches!(outcome, Outcome::Failed(..))
            && let Some((body, thinking)) = &self.estimate_from
        {
            let prompt = estimate::prompt_tokens(body, *thinking);
            self.usage = Some(estimate::usage(prompt, self.output_chunks));
        }
        self.usage
    }

    /// Writes the record: the completion log line, the ledger (its shared spend joining
    /// `writes`), the metrics.
    pub fn write(mut self, outcome: Outcome, writes: &mut AfterWrites) {
        let usage = self.final_usage(outcome);
        let status = match outcome {
            Outcome::Failed(status, _) => status,
            _ => 200,
        };
        let charge = self.charge();
        self.log(outcome, status, usage, charge.as_ref());
        if let Some(ledger) = &self.ledger {
            if let (Some(usage), Some(charge), Some(served)) = (&usage, &charge, &self.served) {
                ledger.append_in(self.record(served, usage, charge, None, outcome), writes);
            }
            // Each timed-out call: its estimated prompt at the price it was sent at.
            if let Some((body, thinking)) = &self.estimate_from
                && !self.unanswered.is_empty()
            {
                let prompt = estimate::prompt_tokens(body, *thinking);
                for (served, attempt) in &self.unanswered {
                    let usage = estimate::usage(prompt, 0);
                    let charge = served.price.charge(&usage, served.sent_at, None);
                    let record = self.record(served, &usage, &charge, Some(*attempt), outcome);
                    ledger.append_in(record, writes);
                }
            }
        }
        if let Some(metrics) = &self.metrics {
            self.count(metrics, outcome, status, usage.as_ref(), charge.as_ref());
        }
    }

    /// The ledger line of `usage` charged `charge` on `served`; `attempt` marks a call that got
    /// no answer.
    fn record(
        &self,
        served: &Served,
        usage: &Usage,
        charge: &Charge,
        attempt: Option<u32>,
        outcome: Outcome,
    ) -> Record {
        let mut uid = String::with_capacity(32);
        crate::support::random::push_random_hex(&mut uid);
        crate::support::random::push_random_hex(&mut uid);
        Record {
            uid,
            request_id: self.request_id.clone(),
            outcome: match attempt {
                Some(_) => "timed_out".into(),
                None => outcome.as_str().into(),
            },
            cost_cache_hit: charge.cost.cache_hit,
            cost_cache_miss: charge.cost.cache_miss,
            cost_output: charge.cost.output,
            ts: now(),
            key_id: self.principal.key_id.clone(),
            team: self.principal.team.clone(),
            model: self.model.clone(),
            deployment: served.deployment.shared().clone(),
            cache_hit: usage.cache_hit,
            cache_miss: usage.cache_miss,
            output: usage.output,
            reasoning: usage.reasoning,
            cost: charge.cost.total(),
            currency: charge.currency.clone(),
            estimated: usage.estimated,
            price: charge.price.clone(),
            era: charge.era.map(|t| t.to_string()),
            tier: charge.tier.as_str().into(),
            computed_cost: charge.computed.map(|c| c.total()),
            unanswered: attempt.map(|_| "timed_out".to_owned()),
            attempt,
        }
    }

    fn deployment(&self) -> (&str, &str) {
        self.served.as_ref().map_or(("-", "-"), |s| {
            (s.deployment.provider(), s.deployment.upstream_model())
        })
    }

    fn log(&self, outcome: Outcome, status: u16, usage: Option<Usage>, charge: Option<&Charge>) {
        let (provider, upstream_model) = self.deployment();
        let u = usage.unwrap_or_default();
        tracing::info!(
            target: "dsgw::completion",
            request_id = %self.request_id,
            key_id = %self.principal.key_id,
            team = %self.principal.team,
            model = %self.model,
            provider,
            upstream_model,
            outcome = outcome.as_str(),
            status,
            attempts = self.attempts,
            usage_estimated = u.estimated,
            cache_hit = u.cache_hit,
            cache_miss = u.cache_miss,
            output = u.output,
            reasoning = u.reasoning,
            cost = %Money(charge.map_or(0, |c| c.cost.total())),
            tier = charge.map_or("-", |c| c.tier.as_str()),
            duration_ms = self.started.elapsed().as_millis() as u64,
        );
    }

    fn count(
        &self,
        metrics: &Metrics,
        outcome: Outcome,
        status: u16,
        usage: Option<&Usage>,
        charge: Option<&Charge>,
    ) {
        let (provider, upstream_model) = self.deployment();
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
            usage,
            charge,
            duration_s: self.started.elapsed().as_secs_f64(),
            ttft_s: self.first_token.map(|t| (t - self.started).as_secs_f64()),
            overhead_s: match self.upstream {
                (Some(start), end) => {
                    let end = end.unwrap_or_else(Instant::now);
                    Some(((start - self.started) + end.elapsed()).as_secs_f64())
                }
                (None, _) => None,
            },
            series: self.served.as_ref().map(|s| &*s.series),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_name_splits_at_its_providers_end_not_at_the_models_slash() {
        let name = DeploymentName::new("vllm", "deepseek-ai/DeepSeek-V3.2");
        assert_eq!(&**name.shared(), "vllm/deepseek-ai/DeepSeek-V3.2");
        assert_eq!(name.provider(), "vllm");
        assert_eq!(name.upstream_model(), "deepseek-ai/DeepSeek-V3.2");
        let clone = name.clone();
        assert!(
            Arc::ptr_eq(clone.shared(), name.shared()),
            "shared, not copied"
        );
    }
}
