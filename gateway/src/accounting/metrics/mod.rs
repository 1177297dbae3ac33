//! Prometheus metrics, behind this one module. Labels are route-independent and bounded: model
//! and deployment names from the config, team names and key ids (never a secret), statuses.
//! Money is counted in integer nanodollars, so no float accumulation creeps into spend.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::accounting::pricing::{Charge, Tier};
use crate::accounting::usage::Usage;

mod series;

pub use series::Series;
use series::{KeyMoney, KeySeries};

const TOKEN_KINDS: [&str; 4] = ["cache_hit", "cache_miss", "output", "reasoning"];
const COST_PARTS: [&str; 3] = ["cache_hit", "cache_miss", "output"];

/// How one provider call went, as `dsgw_upstream_calls_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success = 0,
    ProviderFault = 1,
    RequestError = 2,
    /// Never sent: the gateway's own connection pool to the provider was full.
    Saturated = 3,
}

impl CallOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ProviderFault => "provider_fault",
            Self::RequestError => "request_error",
            Self::Saturated => "gateway_saturated",
        }
    }
}

/// One finished request, as the settlement reports it.
#[derive(Debug)]
pub struct CompletionEvent<'a> {
    pub model: &'a str,
    pub provider: &'a str,
    pub deployment: &'a str,
    pub team: &'a str,
    pub key_id: &'a str,
    pub status: u16,
    pub outcome: &'a str,
    pub usage: Option<&'a Usage>,
    /// What it was charged and how it was priced, when a price applied.
    pub charge: Option<&'a Charge>,
    pub duration_s: f64,
    pub ttft_s: Option<f64>,
    pub overhead_s: Option<f64>,
    /// The serving deployment's series, when one served.
    pub series: Option<&'a Series>,
}

/// A deployment's health as the gauges show it.
#[derive(Debug, Clone, Copy)]
pub struct HealthReading {
    /// `closed`, `half_open` or `open`.
    pub circuit: &'static str,
    pub ttfb: Option<std::time::Duration>,
    pub error_rate: f64,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    inter_token: HistogramVec,
    overhead: HistogramVec,
    errors: IntCounterVec,
    rejections: IntCounterVec,
    savings: IntCounterVec,
    off_peak: IntCounterVec,
    disagreements: IntCounterVec,
    budget_remaining: prometheus::IntGaugeVec,
    circuit: prometheus::IntGaugeVec,
    ttfb: prometheus::GaugeVec,
    error_rate: prometheus::GaugeVec,
    upstream_calls: IntCounterVec,
    /// With a store: whether it answers, and the revision of keys, budgets and limits in force
    /// (registered on first use, so a gateway without a store shows neither).
    store: std::sync::OnceLock<(prometheus::IntGauge, prometheus::IntGauge)>,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("dsgw_requests_total", "Chat requests by outcome."),
            &[
                "model",
                "deployment",
                "provider",
                "team",
                "key_id",
                "status",
                "outcome",
            ],
        )
        .expect("metric");
        let tokens = IntCounterVec::new(
            Opts::new("dsgw_tokens_total", "Tokens as DeepSeek bills them: kind is cache_hit, cache_miss, output, or reasoning (a part of output)."),
            &["model", "deployment", "provider", "team", "key_id", "kind"],
        )
        .expect("metric");
        let cost = IntCounterVec::new(
            Opts::new("dsgw_cost_nanodollars_total", "Spend in nanodollars (1e-9 of the currency) by part (cache_hit, cache_miss, output) and by the tier that priced it (peak, off_peak, flat)."),
            &["model", "deployment", "provider", "team", "key_id", "currency", "part", "tier"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dsgw_request_duration_seconds",
                "Request duration, to the last byte.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "provider"],
        )
        .expect("metric");
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "dsgw_time_to_first_token_seconds",
                "Streaming requests: time to the first content chunk.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "provider"],
        )
        .expect("metric");
        let inter_token = HistogramVec::new(
            HistogramOpts::new(
                "dsgw_inter_token_seconds",
                "Streaming requests: gap between consecutive content chunks sent to the client.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["model", "provider"],
        )
        .expect("metric");
        let overhead = HistogramVec::new(
            HistogramOpts::new("dsgw_gateway_overhead_seconds", "Time the gateway itself spent on a request: before calling the provider and after its last byte.")
                .buckets(vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]),
            &["model", "provider"],
        )
        .expect("metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "dsgw_errors_total",
                "Failed requests by fault domain: client, limit, provider, gateway.",
            ),
            &["model", "provider", "fault"],
        )
        .expect("metric");
        let rejections = IntCounterVec::new(
            Opts::new("dsgw_rejections_total", "Requests refused by a limit or budget: reason is requests_per_minute, tokens_per_minute, concurrent or budget."),
            &["team", "key_id", "reason"],
        )
        .expect("metric");
        let savings = IntCounterVec::new(
            Opts::new("dsgw_cache_savings_nanodollars_total", "What cache hits saved against paying the cache-miss price for the same tokens, in nanodollars."),
            &["model", "deployment", "provider", "team", "key_id", "currency"],
        )
        .expect("metric");
        let off_peak = IntCounterVec::new(
            Opts::new("dsgw_cost_off_peak_nanodollars_total", "What the same traffic would have cost at its price's off-peak rates (its list rates where a price has none), in nanodollars: against dsgw_cost_nanodollars_total, what moving work off-peak saves."),
            &["model", "deployment", "provider", "team", "key_id", "currency"],
        )
        .expect("metric");
        let disagreements = IntCounterVec::new(
            Opts::new("dsgw_provider_cost_disagreements_total", "Requests whose provider-reported cost (the figure recorded) differs from dsgw's price schedule by more than 1%."),
            &["model", "provider", "deployment"],
        )
        .expect("metric");
        let budget_remaining = prometheus::IntGaugeVec::new(
            Opts::new(
                "dsgw_budget_remaining_nanodollars",
                "What is left of each budget in its current period, in nanodollars.",
            ),
            &["scope", "name", "period"],
        )
        .expect("metric");
        registry
            .register(Box::new(budget_remaining.clone()))
            .expect("unique metric");
        let circuit = prometheus::IntGaugeVec::new(
            Opts::new(
                "dsgw_circuit_state",
                "Each deployment's circuit: 0 closed, 1 half-open, 2 open.",
            ),
            &["model", "provider", "deployment"],
        )
        .expect("metric");
        registry
            .register(Box::new(circuit.clone()))
            .expect("unique metric");
        let ttfb = prometheus::GaugeVec::new(
            Opts::new(
                "dsgw_deployment_ttfb_seconds",
                "Each deployment's smoothed time to first byte over successful calls (passive health).",
            ),
            &["model", "provider", "deployment"],
        )
        .expect("metric");
        let error_rate = prometheus::GaugeVec::new(
            Opts::new(
                "dsgw_deployment_error_rate",
                "Share of provider faults among each deployment's recent calls.",
            ),
            &["model", "provider", "deployment"],
        )
        .expect("metric");
        for g in [&ttfb, &error_rate] {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        let upstream_calls = IntCounterVec::new(
            Opts::new(
                "dsgw_upstream_calls_total",
                "Provider calls, retries and fallbacks included: outcome is success, provider_fault (the router moved on) or request_error.",
            ),
            &["model", "provider", "outcome"],
        )
        .expect("metric");
        for c in [
            &requests,
            &tokens,
            &cost,
            &errors,
            &rejections,
            &savings,
            &off_peak,
            &disagreements,
            &upstream_calls,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for h in [&duration, &ttft, &inter_token, &overhead] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        Self {
            registry,
            requests,
            tokens,
            cost,
            duration,
            ttft,
            inter_token,
            overhead,
            errors,
            rejections,
            savings,
            off_peak,
            disagreements,
            budget_remaining,
            circuit,
            ttfb,
            error_rate,
            upstream_calls,
            store: std::sync::OnceLock::new(),
        }
    }

    /// The store's health and the revision in force.
    pub fn store(&self, up: bool, revision: i64) {
        let (up_gauge, revision_gauge) = self.store.get_or_init(|| {
            let up = prometheus::IntGauge::new(
                "dsgw_store_up",
                "1 while the store answers; 0 while it does not (requests are served with the last keys, budgets and limits read, and ledger rows wait in the spool).",
            )
            .expect("metric");
            let revision = prometheus::IntGauge::new(
                "dsgw_store_revision",
                "The store revision of the keys, budgets and limits in force on this replica.",
            )
            .expect("metric");
            for g in [&up, &revision] {
                self.registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
            }
            (up, revision)
        });
        up_gauge.set(i64::from(up));
        revision_gauge.set(revision);
    }

    pub fn completion(&self, e: &CompletionEvent<'_>) {
        match e.series {
            Some(series) => self.count_for_key(&series.key(e), e),
            None => self.count_by_labels(e),
        }
        self.observe(e);
    }

    /// The request's counters through its key's resolved series.
    fn count_for_key(&self, key: &KeySeries, e: &CompletionEvent<'_>) {
        let base = [e.model, e.deployment, e.provider, e.team, e.key_id];
        if e.status == 200 && e.outcome == "completed" {
            key.completed
                .get_or_init(|| self.request_counter(&base, e))
                .inc();
        } else {
            self.request_counter(&base, e).inc();
        }
        if let Some(u) = e.usage {
            let tokens = key.tokens.get_or_init(|| {
                TOKEN_KINDS.map(|kind| {
                    self.tokens
                        .with_label_values(&[base[0], base[1], base[2], base[3], base[4], kind])
                })
            });
            for (counter, n) in
                tokens
                    .iter()
                    .zip([u.cache_hit, u.cache_miss, u.output, u.reasoning])
            {
                counter.inc_by(n);
            }
        }
        if let Some(c) = e.charge {
            let money = key.money.get_or_init(|| {
                let labels = [base[0], base[1], base[2], base[3], base[4], &c.currency];
                KeyMoney {
                    currency: c.currency.clone(),
                    savings: self.savings.with_label_values(&labels),
                    off_peak: self.off_peak.with_label_values(&labels),
                    cost: std::array::from_fn(|_| OnceLock::new()),
                }
            });
            if money.currency == c.currency {
                money.savings.inc_by(c.savings / 1000);
                money.off_peak.inc_by(c.off_peak.total() / 1000);
                let tier = match c.tier {
                    Tier::Flat => 0,
                    Tier::Peak => 1,
                    Tier::OffPeak => 2,
                };
                let cost = money.cost[tier].get_or_init(|| {
                    COST_PARTS.map(|part| self.cost_counter(&base, &c.currency, part, c.tier))
                });
                for (counter, pico) in
                    cost.iter()
                        .zip([c.cost.cache_hit, c.cost.cache_miss, c.cost.output])
                {
                    counter.inc_by(pico / 1000);
                }
            } else {
                self.count_money_by_labels(&base, c);
            }
            self.count_disagreement(e, c);
        }
    }

    /// The request's counters, each found by its labels (no deployment served it).
    fn count_by_labels(&self, e: &CompletionEvent<'_>) {
        let base = [e.model, e.deployment, e.provider, e.team, e.key_id];
        self.request_counter(&base, e).inc();
        if let Some(u) = e.usage {
            for (kind, n) in
                TOKEN_KINDS
                    .into_iter()
                    .zip([u.cache_hit, u.cache_miss, u.output, u.reasoning])
            {
                self.tokens
                    .with_label_values(&[base[0], base[1], base[2], base[3], base[4], kind])
                    .inc_by(n);
            }
        }
        if let Some(c) = e.charge {
            self.count_money_by_labels(&base, c);
            self.count_disagreement(e, c);
        }
    }

    fn request_counter(&self, base: &[&str; 5], e: &CompletionEvent<'_>) -> IntCounter {
        // The status's digits from http's static table, not a new string per request.
        let code = http::StatusCode::from_u16(e.status).ok();
        let status = code.as_ref().map_or("other", http::StatusCode::as_str);
        self.requests.with_label_values(&[
            base[0], base[1], base[2], base[3], base[4], status, e.outcome,
        ])
    }

    fn cost_counter(&self, base: &[&str; 5], currency: &str, part: &str, tier: Tier) -> IntCounter {
        self.cost.with_label_values(&[
            base[0],
            base[1],
            base[2],
            base[3],
            base[4],
            currency,
            part,
            tier.as_str(),
        ])
    }

    fn count_money_by_labels(&self, base: &[&str; 5], c: &Charge) {
        let money = [base[0], base[1], base[2], base[3], base[4], &c.currency];
        self.savings
            .with_label_values(&money)
            .inc_by(c.savings / 1000);
        self.off_peak
            .with_label_values(&money)
            .inc_by(c.off_peak.total() / 1000);
        for (part, pico) in
            COST_PARTS
                .into_iter()
                .zip([c.cost.cache_hit, c.cost.cache_miss, c.cost.output])
        {
            self.cost_counter(base, &c.currency, part, c.tier)
                .inc_by(pico / 1000);
        }
    }

    fn count_disagreement(&self, e: &CompletionEvent<'_>, c: &Charge) {
        if c.disagrees() {
            self.disagreements
                .with_label_values(&[e.model, e.provider, e.deployment])
                .inc();
        }
    }

    /// The request's durations.
    fn observe(&self, e: &CompletionEvent<'_>) {
        let pair = [e.model, e.provider];
        let series = |h: &HistogramVec, cell: Option<&OnceLock<Histogram>>| match cell {
            Some(cell) => cell.get_or_init(|| h.with_label_values(&pair)).clone(),
            None => h.with_label_values(&pair),
        };
        series(&self.duration, e.series.map(|s| &s.duration)).observe(e.duration_s);
        if let Some(t) = e.ttft_s {
            series(&self.ttft, e.series.map(|s| &s.ttft)).observe(t);
        }
        if let Some(t) = e.overhead_s {
            series(&self.overhead, e.series.map(|s| &s.overhead)).observe(t);
        }
    }

    /// Counts a failure by whose fault it was.
    pub fn error(&self, model: &str, provider: &str, fault: &str) {
        self.errors
            .with_label_values(&[model, provider, fault])
            .inc();
    }

    /// One gap between two content chunks of `series`' stream.
    pub fn inter_token(&self, series: &Series, gap_s: f64) {
        series
            .inter_token
            .get_or_init(|| {
                self.inter_token
                    .with_label_values(&[&series.model, &series.provider])
            })
            .observe(gap_s);
    }

    /// Counts a request a limit or budget refused.
    pub fn rejection(&self, team: &str, key_id: &str, reason: &str) {
        self.rejections
            .with_label_values(&[team, key_id, reason])
            .inc();
    }

    /// Sets a deployment's health gauges: circuit state, latency, error rate.
    pub fn deployment_health(&self, labels: [&str; 3], health: &HealthReading) {
        let value = match health.circuit {
            "closed" => 0,
            "half_open" => 1,
            _ => 2,
        };
        self.circuit.with_label_values(&labels).set(value);
        if let Some(t) = health.ttfb {
            self.ttfb.with_label_values(&labels).set(t.as_secs_f64());
        }
        self.error_rate
            .with_label_values(&labels)
            .set(health.error_rate);
    }

    /// Counts one provider call of `series`' deployment.
    pub fn upstream_call(&self, series: &Series, outcome: CallOutcome) {
        series.calls[outcome as usize]
            .get_or_init(|| {
                self.upstream_calls.with_label_values(&[
                    &series.model,
                    &series.provider,
                    outcome.label(),
                ])
            })
            .inc();
    }

    /// Sets a budget's remaining amount (picodollars in, nanodollars out).
    pub fn budget(&self, scope: &str, name: &str, period: &str, remaining_pico: u64) {
        let nano = i64::try_from(remaining_pico / 1000).unwrap_or(i64::MAX);
        self.budget_remaining
            .with_label_values(&[scope, name, period])
            .set(nano);
    }

    /// Adds series kept elsewhere (the shedder's) to what `/metrics` renders.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.register(collector).expect("unique metric");
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::pricing::Cost;

    fn charge(currency: &str, tier: Tier, pico: u64) -> Charge {
        let cost = Cost {
            cache_hit: pico,
            cache_miss: 2 * pico,
            output: 3 * pico,
        };
        Charge {
            cost,
            currency: currency.into(),
            price: "deepseek-v4-flash".into(),
            era: None,
            tier,
            off_peak: cost,
            savings: pico,
            computed: None,
        }
    }

    /// The durations are left out: they are the same code either way, and not reproducible.
    fn counters(metrics: &Metrics) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_seconds"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_keys_resolved_series_count_what_labelled_lookups_count() {
        let usage = Usage {
            cache_hit: 64,
            cache_miss: 10,
            output: 5,
            reasoning: 2,
            estimated: false,
        };
        let charges = [
            charge("USD", Tier::Peak, 1_000_000),
            charge("USD", Tier::OffPeak, 7_000),
            charge("CNY", Tier::Flat, 5_000),
            charge("USD", Tier::Flat, 3_000),
        ];
        // (team, key, status, outcome, usage, charge)
        let requests = [
            ("research", "alice", 200, "completed", true, Some(0)),
            ("research", "alice", 200, "completed", true, Some(1)),
            ("research", "alice", 500, "failed", false, None),
            ("research", "alice", 200, "completed", true, Some(2)),
            ("ops", "bob", 200, "stream_failed", true, Some(3)),
            // The key moved to another team.
            ("ops", "alice", 200, "completed", true, Some(0)),
            ("research", "alice", 200, "client_disconnected", true, None),
        ];
        let (resolved, labelled) = (Metrics::new(), Metrics::new());
        let series = Series::new("deepseek-chat", "deepseek");
        for (team, key_id, status, outcome, with_usage, charge) in requests {
            for (metrics, series) in [(&resolved, Some(&series)), (&labelled, None)] {
                metrics.completion(&CompletionEvent {
                    model: "deepseek-chat",
                    provider: "deepseek",
                    deployment: "deepseek-v4-flash",
                    team,
                    key_id,
                    status,
                    outcome,
                    usage: with_usage.then_some(&usage),
                    charge: charge.map(|i| &charges[i]),
                    duration_s: 0.5,
                    ttft_s: None,
                    overhead_s: Some(0.001),
                    series,
                });
            }
        }
        let counted = counters(&resolved);
        assert!(
            counted
                .iter()
                .any(|l| l.starts_with("dsgw_cost_nanodollars_total")
                    && l.contains("tier=\"off_peak\"")
                    && l.contains("team=\"research\"")),
            "{counted:#?}"
        );
        assert_eq!(counted, counters(&labelled));
    }
}
