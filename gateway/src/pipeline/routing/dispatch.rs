//! Walks a request's planned deployments until one answers. Nothing reaches the client until a
//! deployment has produced its first event (streams) or its whole body (JSON), so every failure
//! before that point (refused connection, timeout, 429, 5xx, an error or malformed first event,
//! a truncated body, `insufficient_system_resource`, a stopped local engine) moves the same
//! prompt bytes to the next deployment. Attempts are bounded; a deployment is tried again only
//! after every other one, and after a jittered backoff that honours the provider's
//! `Retry-After`. Every attempt's outcome is reported to the deployment's health.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::backoff;
use super::catalog::{Deployment, ModelSpec};
use super::health::Observation;
use crate::accounting::metrics::{CallOutcome, Metrics};
use crate::providers::call::{Call, Target};
use crate::providers::reply::{Event, Events, Reply, Started};
use crate::support::config::RoutingConfig;
use crate::support::random::random_u64;
use crate::wire::error::{ApiError, Fault};

/// A deployment the request may go to, and what its policy changed for it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub deployment: &'a Deployment,
    pub target: Target<'a>,
}

impl Borrow<Deployment> for Candidate<'_> {
    fn borrow(&self) -> &Deployment {
        self.deployment
    }
}

/// What a deployment produced, ready to go to the client.
pub enum Committed {
    Whole(Reply),
    /// A stream whose first event has arrived.
    Stream {
        first: Event,
        rest: Events,
    },
}

pub struct Dispatched<'a> {
    pub deployment: &'a Deployment,
    pub answer: Committed,
    /// Provider calls made, this one included.
    pub attempts: u32,
    /// When the call that answered was sent: what its usage is priced at.
    pub sent_at: jiff::Timestamp,
    pub unanswered: Vec<Unanswered<'a>>,
}

/// Why no deployment answered.
pub struct Failed<'a> {
    pub error: ApiError,
    pub attempts: u32,
    /// The deployment whose answer `error` is, when one answered (a passed-through 4xx).
    pub answered: Option<&'a Deployment>,
    pub unanswered: Vec<Unanswered<'a>>,
}

/// A call that timed out after its prompt was sent: the provider may bill it, so it is
/// recorded.
#[derive(Debug, Clone, Copy)]
pub struct Unanswered<'a> {
    pub deployment: &'a Deployment,
    /// Which call of the request it was (1-based).
    pub attempt: u32,
    pub sent_at: jiff::Timestamp,
}

/// Calls a deployment may take in one request once it has timed out: the timeout and one
/// more (a hang costs the client two waits at most, not `max_attempts`).
const CALLS_AFTER_A_TIMEOUT: u32 = 2;

/// Tries `order` (already planned) until a deployment answers.
pub async fn dispatch<'a>(
    model: &ModelSpec,
    order: &[Candidate<'a>],
    call: &Call<'_>,
    config: &RoutingConfig,
    metrics: &Metrics,
) -> Result<Dispatched<'a>, Box<Failed<'a>>> {
    if model.deployments.is_empty() {
        return Err(Box::new(Failed {
            error: ApiError::unavailable(format!(
                "Model `{}` has no deployment: configure a provider (see README).",
                model.name
            )),
            attempts: 0,
            answered: None,
            unanswered: Vec::new(),
        }));
    }
    let mut walk = Walk {
        attempts: 0,
        last_error: None,
        fallback: None,
        unanswered: Vec::new(),
        calls: Vec::new(),
    };
    let mut round = 0u32;
    while walk.attempts < config.max_attempts {
        if round > 0 && !walk.wait_before(round, config).await {
            break;
        }
        let mut tried = false;
        for candidate in order {
            if walk.attempts >= config.max_attempts {
                break;
            }
            if walk.timed_out_enough(candidate.deployment)
                || !candidate.deployment.health.breaker.allow(Instant::now())
            {
                continue;
            }
            tried = true;
            walk.attempts += 1;
            if let Some(done) = walk.attempt(candidate, call, metrics).await {
                return done;
            }
        }
        if !tried {
            break;
        }
        round += 1;
    }
    walk.end(model)
}

/// The state of one request's walk over its deployments.
struct Walk<'a> {
    attempts: u32,
    last_error: Option<ApiError>,
    /// A completion cut short by the provider's capacity: a provider fault, yet still better
    /// than an error if no other deployment does better.
    fallback: Option<(&'a Deployment, Reply, jiff::Timestamp)>,
    unanswered: Vec<Unanswered<'a>>,
    /// Per deployment tried (by its index): calls made, and whether one timed out.
    calls: Vec<(usize, u32, bool)>,
}

impl<'a> Walk<'a> {
    /// Whether `deployment` timed out and has had its one more call.
    fn timed_out_enough(&self, deployment: &Deployment) -> bool {
        self.calls.iter().any(|&(i, calls, timed_out)| {
            i == deployment.index && timed_out && calls >= CALLS_AFTER_A_TIMEOUT
        })
    }

    fn count_call(&mut self, deployment: &Deployment, timed_out: bool) {
        match self.calls.iter_mut().find(|(i, ..)| *i == deployment.index) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 |= timed_out;
            }
            None => self.calls.push((deployment.index, 1, timed_out)),
        }
    }

    /// Waits before going round again (everything was tried once), at least as long as the last
    /// provider asked; `false` when it asked for longer than the gateway waits.
    async fn wait_before(&self, round: u32, config: &RoutingConfig) -> bool {
        let retry_after = self
            .last_error
            .as_ref()
            .and_then(|e| e.retry_after)
            .map(Duration::from_secs);
        if retry_after.is_some_and(|r| r > Duration::from_millis(config.max_retry_after_ms)) {
            return false;
        }
        tokio::time::sleep(backoff::delay(config, round, retry_after, random_u64())).await;
        true
    }

    /// One provider call; `Some` when the walk is over (an answer, or a request error).
    async fn attempt(
        &mut self,
        candidate: &Candidate<'a>,
        call: &Call<'_>,
        metrics: &Metrics,
    ) -> Option<Result<Dispatched<'a>, Box<Failed<'a>>>> {
        let deployment = candidate.deployment;
        let provider = &deployment.provider;
        let started = Instant::now();
        let sent_at = jiff::Timestamp::now();
        let outcome = match attempt(deployment, call, &candidate.target).await {
            Ok(Committed::Whole(reply)) if reply.out_of_capacity() => {
                self.fallback = Some((deployment, reply, sent_at));
                Err(ApiError::bad_gateway(
                    &provider.name,
                    "generation stopped with insufficient_system_resource",
                ))
            }
            other => other,
        };
        let timed_out = outcome.as_ref().is_err_and(ApiError::is_upstream_timeout);
        self.count_call(deployment, timed_out);
        if timed_out {
            self.unanswered.push(Unanswered {
                deployment,
                attempt: self.attempts,
                sent_at,
            });
        }
        match outcome {
            Ok(answer) => {
                deployment
                    .health
                    .observe(Observation::Answered(started.elapsed()));
                metrics.upstream_call(&deployment.series, CallOutcome::Success);
                Some(Ok(Dispatched {
                    deployment,
                    answer,
                    attempts: self.attempts,
                    sent_at,
                    unanswered: std::mem::take(&mut self.unanswered),
                }))
            }
            Err(error) if error.retryable && error.fault == Fault::Gateway => {
                // The gateway's own saturation says nothing about the provider's health.
                metrics.upstream_call(&deployment.series, CallOutcome::Saturated);
                tracing::warn!(provider = %provider.name, attempt = self.attempts, "no free connection to the provider; trying elsewhere");
                self.last_error = Some(error);
                None
            }
            Err(error) if error.retryable => {
                deployment.health.observe(Observation::Failed);
                metrics.upstream_call(&deployment.series, CallOutcome::ProviderFault);
                tracing::warn!(
                    provider = %provider.name,
                    status = error.status.as_u16(),
                    error = %error,
                    attempt = self.attempts,
                    circuit = deployment.health.breaker.label(),
                    "deployment failed before the first byte; trying again elsewhere"
                );
                self.last_error = Some(error);
                None
            }
            Err(error) => {
                deployment.health.observe(Observation::RefusedRequest);
                metrics.upstream_call(&deployment.series, CallOutcome::RequestError);
                Some(Err(Box::new(Failed {
                    error,
                    attempts: self.attempts,
                    answered: Some(deployment),
                    unanswered: std::mem::take(&mut self.unanswered),
                })))
            }
        }
    }

    fn end(self, model: &ModelSpec) -> Result<Dispatched<'a>, Box<Failed<'a>>> {
        if let Some((deployment, reply, sent_at)) = self.fallback {
            return Ok(Dispatched {
                deployment,
                answer: Committed::Whole(reply),
                attempts: self.attempts,
                sent_at,
                unanswered: self.unanswered,
            });
        }
        Err(Box::new(Failed {
            error: self.last_error.unwrap_or_else(|| {
                ApiError::unavailable(format!(
                    "Every deployment of `{}` is failing (circuit open); retry shortly.",
                    model.name
                ))
            }),
            attempts: self.attempts,
            answered: None,
            unanswered: self.unanswered,
        }))
    }
}

/// One call, read up to the point where the client could be answered: a whole body, or a
/// stream's first event (which must not be a failure).
async fn attempt(
    deployment: &Deployment,
    call: &Call<'_>,
    target: &Target<'_>,
) -> Result<Committed, ApiError> {
    let provider = &deployment.provider;
    match provider.call(call, target).await? {
        Started::Whole(reply) => Ok(Committed::Whole(reply)),
        Started::Stream(mut rest) => {
            let first = match provider.first_event_timeout() {
                Some(limit) => tokio::time::timeout(limit, rest.next())
                    .await
                    .map_err(|_| ApiError::upstream_timeout(&provider.name, "no first event"))?,
                None => rest.next().await,
            };
            match first {
                None => Err(ApiError::bad_gateway(
                    &provider.name,
                    "stream ended before its first event",
                )),
                Some(Event::Failed(error)) => Err(error),
                Some(first) => Ok(Committed::Stream { first, rest }),
            }
        }
    }
}
