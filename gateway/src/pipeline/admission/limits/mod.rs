//! Rate, token and concurrency limits per team and per key, held across replicas.
//!
//! Each request takes every bucket that applies to it at once (all or nothing): requests per
//! minute, tokens per minute (an estimate reserved up front), and a concurrency slot. The
//! reservation settles when the request ends, however it ends (a drop guard): the concurrency slot
//! comes back and the token bucket is reconciled with the real usage. With `[redis]` the buckets
//! live in Redis (one Lua script, the server's clock); without it, or while Redis is away for a
//! fail-open limit, they live in this process at `quota / replicas`.

mod gcra;
mod local_tier;
mod redis_tier;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Rejection;
use crate::support::config::{Config, FailureMode, LimitConfig, LimitScope, TokenCount};
use crate::support::principal::Principal;
use crate::support::redis_link::{AfterWrites, RedisLink};
use crate::wire::error::ApiError;
pub use gcra::Rate;
use local_tier::LocalTier;
use redis_tier::{RedisTier, Taken};

/// Microseconds since the Unix epoch; tests substitute their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_us(&self) -> u64;
}

#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

/// What a bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    Requests,
    Tokens,
}

#[derive(Debug, Clone)]
pub(crate) enum Bucket {
    Rate {
        key: String,
        rate: Rate,
        cost: u64,
        measure: Measure,
    },
    Concurrency {
        key: String,
        limit: u64,
    },
}

/// What a bucket reported after a successful take.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    Rate {
        tat: u64,
        remaining: u64,
        reset_us: u64,
    },
    Concurrency,
}

/// A budget checked in the same script as the limits (with Redis): the spend counter of its
/// current period and the amount it may not reach, in picodollars.
#[derive(Debug, Clone)]
pub struct SpendCap {
    pub counter: String,
    pub amount_pico: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    bucket: usize,
    retry_after_us: u64,
}

type Rules = HashMap<(LimitScope, String), Rule>;

#[derive(Debug)]
struct Rule {
    requests: Option<Rate>,
    tokens: Option<Rate>,
    count: TokenCount,
    output_allowance: u64,
    concurrent: Option<u64>,
    fail: FailureMode,
}

/// Output tokens reserved for a request that names no `max_tokens`, unless configured.
const DEFAULT_OUTPUT_ALLOWANCE: u64 = 4096;

#[derive(Debug)]
pub struct Limiter {
    /// Swapped whole when the store's limits change.
    rules: std::sync::RwLock<Arc<Rules>>,
    redis: Option<RedisTier>,
    /// The whole answer without Redis, and the fallback for fail-open limits while it is away.
    local: LocalTier,
    /// With Redis: this replica's own admissions, per request bucket. A request this replica alone
    /// could not admit cannot fit globally either, so it is refused here without a round trip.
    shadow: LocalTier,
    replicas: u64,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
    instance: u64,
}

/// What a request is about to use.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    /// Estimated prompt tokens.
    pub input: u64,
    /// `max_tokens`, when the request names it.
    pub max_output: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Redis,
    Local,
}

/// Buckets a request holds until it settles. Dropping it settles with the reservation as the
/// actual use (nothing is known better), returning the concurrency slot.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<Limiter>,
    buckets: Vec<Bucket>,
    /// Per bucket: which token counting it uses (token buckets only).
    counts: Vec<Option<TokenCount>>,
    tier: Tier,
    member: String,
    /// The team's hash tag, which every bucket key carries.
    tag: String,
    settled: bool,
}

/// Rate-limit headers for every response of a limited principal.
#[derive(Debug, Clone, Default)]
pub struct RateHeaders(Vec<(HeaderName, String)>);

impl RateHeaders {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

fn seconds(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

impl Limiter {
    pub fn from_config(config: &Config, redis: Option<Arc<RedisLink>>) -> Option<Arc<Self>> {
        Self::with_clock(config, redis, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: &Config,
        link: Option<Arc<RedisLink>>,
        clock: Arc<dyn Clock>,
    ) -> Option<Arc<Self>> {
        if config.limits.is_empty() && config.store.is_none() {
            return None;
        }
        let rules = std::sync::RwLock::new(Arc::new(rules(&config.limits)));
        let redis = link.map(RedisTier::new);
        let mut instance = [0u8; 8];
        let _ = getrandom::fill(&mut instance);
        Some(Arc::new(Self {
            rules,
            redis,
            local: LocalTier::default(),
            shadow: LocalTier::default(),
            replicas: config.redis.as_ref().map_or(1, |r| u64::from(r.replicas)),
            clock,
            next_id: AtomicU64::new(0),
            instance: u64::from_le_bytes(instance),
        }))
    }

    /// Puts `limits` in force (the file's and the store's, changed); buckets already taken
    /// settle as they were taken.
    pub fn set_rules(&self, limits: &[LimitConfig]) {
        *self.rules.write().expect("limits lock") = Arc::new(rules(limits));
    }

    fn buckets(
        &self,
        principal: &Principal,
        demand: Demand,
    ) -> (Vec<Bucket>, Vec<Option<TokenCount>>, FailureMode) {
        let rules = self.rules.read().expect("limits lock").clone();
        let mut buckets = Vec::new();
        let mut counts = Vec::new();
        let mut fail = FailureMode::Open;
        // Hash tag on the team: every key of one request lands in one Redis Cluster slot.
        let tag = format!("dsgw:{{{}}}", principal.team);
        for (scope, name) in [
            (LimitScope::Team, &*principal.team),
            (LimitScope::Key, &*principal.key_id),
        ] {
            let Some(rule) = rules.get(&(scope, name.to_owned())) else {
                continue;
            };
            if rule.fail == FailureMode::Closed {
                fail = FailureMode::Closed;
            }
            let prefix = match scope {
                LimitScope::Team => format!("{tag}:team"),
                LimitScope::Key => format!("{tag}:key:{name}"),
            };
            if let Some(rate) = rule.requests {
                buckets.push(Bucket::Rate {
                    key: format!("{prefix}:rpm"),
                    rate,
                    cost: 1,
                    measure: Measure::Requests,
                });
                counts.push(None);
            }
            if let Some(rate) = rule.tokens {
                let output = match rule.count {
                    TokenCount::Total => demand.max_output.unwrap_or(rule.output_allowance),
                    TokenCount::Input => 0,
                };
                buckets.push(Bucket::Rate {
                    key: format!("{prefix}:tpm"),
                    rate,
                    cost: demand.input + output,
                    measure: Measure::Tokens,
                });
                counts.push(Some(rule.count));
            }
            if let Some(limit) = rule.concurrent {
                buckets.push(Bucket::Concurrency {
                    key: format!("{prefix}:inflight"),
                    limit,
                });
                counts.push(None);
            }
        }
        (buckets, counts, fail)
    }

    /// Whether the limits live in Redis, where budgets can be checked in the same round trip.
    pub fn is_global(&self) -> bool {
        self.redis.is_some()
    }

    /// Takes every bucket that applies to `principal`, or refuses with a 429 that says which limit
    /// and when to retry (or a 503, with no reason, when Redis is away and a limit fails closed).
    /// With Redis, `caps` (the budgets that apply) are checked in the same script: one exhausted
    /// is a 402 and takes nothing, and an unreachable Redis is a 503 whatever the limits' mode.
    pub async fn reserve(
        self: &Arc<Self>,
        principal: &Principal,
        demand: Demand,
        caps: &[SpendCap],
    ) -> Result<(Reservation, RateHeaders), (ApiError, Option<Rejection>)> {
        let (buckets, counts, fail) = self.buckets(principal, demand);
        let member = format!(
            "{:016x}-{}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (outcome, tier) = match &self.redis {
            None => (
                self.local.take(&buckets, self.clock.now_us(), 1),
                Tier::Local,
            ),
            // Nothing to take or check: no round trip.
            Some(_) if buckets.is_empty() && caps.is_empty() => (Ok(Vec::new()), Tier::Local),
            Some(redis) => {
                self.take_global(redis, &buckets, caps, &member, fail)
                    .await?
            }
        };
        match outcome {
            Ok(checks) => {
                let headers = headers(&buckets, &checks);
                Ok((
                    Reservation {
                        limiter: self.clone(),
                        buckets,
                        counts,
                        tier,
                        member,
                        tag: format!("{{{}}}", principal.team),
                        settled: false,
                    },
                    headers,
                ))
            }
            Err(refusal) => {
                let bucket = &buckets[refusal.bucket];
                let (what, reason) = match bucket {
                    Bucket::Rate {
                        measure: Measure::Requests,
                        ..
                    } => ("requests per minute", Rejection::RequestsPerMinute),
                    Bucket::Rate {
                        measure: Measure::Tokens,
                        ..
                    } => ("tokens per minute", Rejection::TokensPerMinute),
                    Bucket::Concurrency { .. } => ("concurrent requests", Rejection::Concurrency),
                };
                let retry = refusal.retry_after_us.div_ceil(1_000_000).max(1);
                let mut e = ApiError::rate_limited(format!(
                    "Rate limit reached for {what} of {}; retry in {retry} s.",
                    principal.team
                ));
                e.retry_after = Some(retry);
                e.body.param = Some(reason.label().to_owned());
                Err((e, Some(reason)))
            }
        }
    }
}

impl Limiter {
    /// The Redis path: the shadow's cheap first rejection, then the atomic script; on a Redis
    /// failure, the local tier for fail-open limits or a 503 for fail-closed ones.
    async fn take_global(
        &self,
        redis: &RedisTier,
        buckets: &[Bucket],
        caps: &[SpendCap],
        member: &str,
        fail: FailureMode,
    ) -> Result<(Result<Vec<Check>, Refusal>, Tier), (ApiError, Option<Rejection>)> {
        let shadow = match self.first_rejection(buckets) {
            Ok(shadow) => shadow,
            Err(refusal) => return Ok((Err(refusal), Tier::Local)),
        };
        let give_back = |shadow: &[Bucket]| {
            self.shadow
                .settle(shadow, &vec![-1; shadow.len()], self.clock.now_us(), 1);
        };
        match redis.take(buckets, caps, member).await {
            Ok(Taken::Admitted(checks)) => Ok((Ok(checks), Tier::Redis)),
            Ok(Taken::Limited(refusal)) => {
                give_back(&shadow);
                Ok((Err(refusal), Tier::Redis))
            }
            Ok(Taken::OverBudget) => {
                give_back(&shadow);
                Err((ApiError::insufficient_balance(), Some(Rejection::Budget)))
            }
            Err(e) => {
                give_back(&shadow);
                tracing::warn!(target: "dsgw::limits", error = %e, "redis unavailable for limits");
                if !caps.is_empty() {
                    // Budgets fail closed.
                    return Err((
                        ApiError::unavailable(
                            "Budgets cannot be checked right now (spend store unavailable); retry shortly.",
                        ),
                        None,
                    ));
                }
                if fail == FailureMode::Closed {
                    return Err((
                        ApiError::unavailable(
                            "Rate limits cannot be checked right now (limit store unavailable); retry shortly.",
                        ),
                        None,
                    ));
                }
                Ok((
                    self.local.take(buckets, self.clock.now_us(), self.replicas),
                    Tier::Local,
                ))
            }
        }
    }

    /// Takes the request buckets in the shadow tier (one unit of slack for the clock difference
    /// with Redis); returns what it took, to give back if Redis refuses.
    fn first_rejection(&self, buckets: &[Bucket]) -> Result<Vec<Bucket>, Refusal> {
        let shadow: Vec<Bucket> = buckets
            .iter()
            .filter_map(|b| match b {
                Bucket::Rate {
                    key,
                    rate,
                    measure: Measure::Requests,
                    ..
                } => Some(Bucket::Rate {
                    key: key.clone(),
                    rate: Rate {
                        interval_us: rate.interval_us,
                        tolerance_us: rate.tolerance_us + rate.interval_us,
                    },
                    cost: 1,
                    measure: Measure::Requests,
                }),
                _ => None,
            })
            .collect();
        if shadow.is_empty() {
            return Ok(shadow);
        }
        match self.shadow.take(&shadow, self.clock.now_us(), 1) {
            Ok(_) => Ok(shadow),
            Err(refusal) => {
                // Point the refusal at the original bucket of the same key.
                let Bucket::Rate { key, .. } = &shadow[refusal.bucket] else {
                    unreachable!("shadow holds rate buckets")
                };
                let bucket = buckets
                    .iter()
                    .position(|b| matches!(b, Bucket::Rate { key: k, .. } if k == key))
                    .unwrap_or(0);
                Err(Refusal {
                    bucket,
                    retry_after_us: refusal.retry_after_us,
                })
            }
        }
    }
}

fn headers(buckets: &[Bucket], checks: &[Check]) -> RateHeaders {
    let mut out = Vec::new();
    // The most restrictive bucket of each measure is the one the client must respect.
    let mut best: [Option<(u64, u64, u64)>; 2] = [None, None];
    for (b, c) in buckets.iter().zip(checks) {
        if let (
            Bucket::Rate { rate, measure, .. },
            Check::Rate {
                remaining,
                reset_us,
                ..
            },
        ) = (b, c)
        {
            let slot = match measure {
                Measure::Requests => 0,
                Measure::Tokens => 1,
            };
            if best[slot].is_none_or(|(_, r, _)| *remaining < r) {
                best[slot] = Some((rate.burst(), *remaining, *reset_us));
            }
        }
    }
    for (slot, name) in [(0, "requests"), (1, "tokens")] {
        if let Some((limit, remaining, reset)) = best[slot] {
            out.push((header_name("limit", name), limit.to_string()));
            out.push((header_name("remaining", name), remaining.to_string()));
            out.push((header_name("reset", name), seconds(reset)));
        }
    }
    RateHeaders(out)
}

fn header_name(kind: &str, measure: &str) -> HeaderName {
    HeaderName::from_static(match (kind, measure) {
        ("limit", "requests") => "x-ratelimit-limit-requests",
        ("remaining", "requests") => "x-ratelimit-remaining-requests",
        ("reset", "requests") => "x-ratelimit-reset-requests",
        ("limit", _) => "x-ratelimit-limit-tokens",
        ("remaining", _) => "x-ratelimit-remaining-tokens",
        _ => "x-ratelimit-reset-tokens",
    })
}

fn rules(limits: &[LimitConfig]) -> Rules {
    limits
        .iter()
        .map(|l| ((l.scope, l.name.clone()), Rule::from(l)))
        .collect()
}

impl From<&LimitConfig> for Rule {
    fn from(l: &LimitConfig) -> Self {
        Self {
            requests: l.requests_per_minute.map(|n| Rate::per_minute(n, l.burst)),
            tokens: l
                .tokens_per_minute
                .map(|n| Rate::per_minute(n, l.tokens_burst)),
            count: l.tokens,
            output_allowance: l.output_allowance.unwrap_or(DEFAULT_OUTPUT_ALLOWANCE),
            concurrent: l.concurrent,
            fail: l.on_redis_failure,
        }
    }
}

impl Reservation {
    /// Settles with the real use: `input` and `output` tokens, when known. With Redis, the
    /// settlement joins `writes`, the request's one round trip after its response.
    pub fn settle(mut self, used: Option<(u64, u64)>, writes: &mut AfterWrites) {
        self.settle_inner(used, writes);
    }

    fn settle_inner(&mut self, used: Option<(u64, u64)>, writes: &mut AfterWrites) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let deltas: Vec<i64> = self
            .buckets
            .iter()
            .zip(&self.counts)
            .map(|(b, count)| match (b, count, used) {
                (Bucket::Rate { cost, .. }, Some(count), Some((input, output))) => {
                    let actual = match count {
                        TokenCount::Total => input + output,
                        TokenCount::Input => input,
                    };
                    actual as i64 - *cost as i64
                }
                _ => 0,
            })
            .collect();
        let limiter = &self.limiter;
        match (self.tier, &limiter.redis) {
            (Tier::Redis, Some(redis)) => {
                let deltas_us: Vec<i64> = self
                    .buckets
                    .iter()
                    .zip(&deltas)
                    .map(|(b, d)| match b {
                        Bucket::Rate { rate, .. } => d * rate.interval_us as i64,
                        Bucket::Concurrency { .. } => 0,
                    })
                    .collect();
                redis.settle(&self.buckets, &deltas_us, &self.member, &self.tag, writes);
            }
            _ => limiter.local.settle(
                &self.buckets,
                &deltas,
                limiter.clock.now_us(),
                limiter.replicas_for_local(),
            ),
        }
    }
}

impl Limiter {
    fn replicas_for_local(&self) -> u64 {
        if self.redis.is_some() {
            self.replicas
        } else {
            1
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle_inner(None, &mut AfterWrites::default());
    }
}

#[cfg(test)]
mod tests;
