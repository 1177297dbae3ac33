//! Walks a request's planned deployments until one answers. Nothing reaches the client until a
//! deployment has produced its first event (streams) or its whole body (JSON), so every failure
//! before that point (refused connection, timeout, 429, 5xx, an error or malformed first event,
//! a truncated body, `insufficient_system_resource`) moves the same prompt bytes to the next
//! deployment. Attempts are bounded; a deployment is tried again only after every other one, and
//! after a jittered backoff that honours the provider's `Retry-After`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::backoff;
use crate::config::RoutingConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models::{Deployment, ModelSpec};
use crate::policy::gate::Gate;
use crate::raw_object::Edit;
use crate::raw_object::RawObject;
use crate::request::ChatRequest;
use crate::sse::SseParser;
use crate::upstream::local::LocalRun;
use crate::upstream::{HttpProvider, Transport};

pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// What a deployment produced, ready to go to the client.
pub enum Answer<'a> {
    /// An SSE stream whose first event has arrived (and is replayed first).
    Stream(&'a HttpProvider, ByteStream),
    /// A whole JSON completion.
    Json(&'a HttpProvider, RawObject),
    Local(LocalRun),
}

pub struct Dispatched<'a> {
    pub deployment: &'a Deployment,
    pub answer: Answer<'a>,
    /// Provider calls made, this one included.
    pub attempts: u32,
}

pub async fn dispatch<'a>(
    model: &'a ModelSpec,
    thinking: bool,
    request: &ChatRequest,
    gate: Option<&Gate>,
    config: &RoutingConfig,
    metrics: &Metrics,
) -> Result<Dispatched<'a>, ApiError> {
    if model.deployments.is_empty() {
        return Err(ApiError::unavailable(format!(
            "Model `{}` has no deployment: configure a provider (see README).",
            model.name
        )));
    }
    // Deployments the policies forbid are never candidates: not tried, not even as a fallback.
    let allowed: Vec<&Deployment> = model
        .deployments
        .iter()
        .filter(|d| gate.is_none_or(|g| g.allows(d.index)))
        .collect();
    let order = super::plan(allowed, &request.raw, config);
    let mut attempts = 0u32;
    let mut last_error: Option<ApiError> = None;
    let mut fallback: Option<(&Deployment, &HttpProvider, RawObject)> = None;
    let mut round = 0u32;
    'rounds: while attempts < config.max_attempts {
        if round > 0 {
            // Everything was tried once: wait before going round again, at least as long as
            // the last provider asked, unless it asked for longer than the gateway waits.
            let retry_after = last_error
                .as_ref()
                .and_then(|e| e.retry_after)
                .map(Duration::from_secs);
            if retry_after.is_some_and(|r| r > Duration::from_millis(config.max_retry_after_ms)) {
                break;
            }
            let wait = backoff::delay(config, round, retry_after, backoff::random_u64());
            tokio::time::sleep(wait).await;
        }
        let mut tried_this_round = false;
        for &deployment in &order {
            if attempts >= config.max_attempts {
                break 'rounds;
            }
            if !deployment.health.breaker.allow(Instant::now()) {
                continue;
            }
            tried_this_round = true;
            attempts += 1;
            let provider = &deployment.provider;
            let started = Instant::now();
            let outcome = match attempt(deployment, thinking, request, gate).await {
                // A completion cut short by the provider's capacity is a provider fault, yet
                // still better than an error if no other deployment does better.
                Ok(Answer::Json(remote, raw)) if out_of_capacity(&raw) => {
                    fallback = Some((deployment, remote, raw));
                    Err(ApiError::bad_gateway(
                        &remote.name,
                        "generation stopped with insufficient_system_resource",
                    ))
                }
                other => other,
            };
            match outcome {
                Ok(answer) => {
                    deployment.health.breaker.success();
                    deployment.health.ttfb.observe(started.elapsed());
                    metrics.upstream_call(&model.name, &provider.name, "success");
                    return Ok(Dispatched {
                        deployment,
                        answer,
                        attempts,
                    });
                }
                Err(error) if error.retryable => {
                    deployment.health.breaker.failure(Instant::now());
                    metrics.upstream_call(&model.name, &provider.name, "provider_fault");
                    tracing::warn!(
                        provider = %provider.name,
                        status = error.status.as_u16(),
                        error = %error,
                        attempt = attempts,
                        circuit = deployment.health.breaker.label(),
                        "deployment failed before the first byte; trying again elsewhere"
                    );
                    last_error = Some(error);
                }
                Err(error) => {
                    // The provider answered and the request was at fault: it is healthy.
                    deployment.health.breaker.success();
                    metrics.upstream_call(&model.name, &provider.name, "request_error");
                    return Err(error);
                }
            }
        }
        if !tried_this_round {
            break;
        }
        round += 1;
    }
    if let Some((deployment, remote, raw)) = fallback {
        return Ok(Dispatched {
            deployment,
            answer: Answer::Json(remote, raw),
            attempts,
        });
    }
    Err(last_error.unwrap_or_else(|| {
        ApiError::unavailable(format!(
            "Every deployment of `{}` is failing (circuit open); retry shortly.",
            model.name
        ))
    }))
}

async fn attempt<'a>(
    deployment: &'a Deployment,
    thinking: bool,
    request: &ChatRequest,
    gate: Option<&Gate>,
) -> Result<Answer<'a>, ApiError> {
    match &deployment.provider.transport {
        // On the premises: policies' redaction obligations are for remote providers.
        Transport::Local(local) => Ok(Answer::Local(local.start(request, thinking)?)),
        Transport::Remote(remote) => {
            let mut overrides = Vec::new();
            if let Some(gate) = gate {
                for (field, value) in gate.redacted_fields(deployment.index).unwrap_or_default() {
                    overrides.push(Edit::Set(field, value.clone()));
                }
                if let Some(provider) = gate
                    .obligations(deployment.index)
                    .and_then(|o| remote.provider_object(o))
                {
                    overrides.push(Edit::Set("provider", provider));
                }
            }
            let body = remote.render(request, &deployment.upstream_model, thinking, overrides);
            if request.stream {
                let response = remote.send(body, true, request.surface).await?;
                let deadline = tokio::time::Instant::now() + remote.first_byte_timeout();
                Ok(Answer::Stream(
                    remote,
                    first_event(remote, response, deadline).await?,
                ))
            } else {
                let call = async {
                    let response = remote.send(body, false, request.surface).await?;
                    remote.read_body(response).await
                };
                let body = tokio::time::timeout(remote.request_timeout(), call)
                    .await
                    .map_err(|_| ApiError::upstream_timeout(&remote.name, "request deadline"))??;
                json_answer(remote, &body).map(|raw| Answer::Json(remote, raw))
            }
        }
    }
}

/// Reads a stream until its first event and checks it is a chunk, not an error: a stream that
/// breaks, stalls or fails before that point has sent the client nothing and can go elsewhere.
async fn first_event(
    remote: &HttpProvider,
    response: reqwest::Response,
    deadline: tokio::time::Instant,
) -> Result<ByteStream, ApiError> {
    let mut upstream: ByteStream = Box::pin(response.bytes_stream());
    let mut parser = SseParser::default();
    let mut head = Vec::new();
    loop {
        let bytes = match tokio::time::timeout_at(deadline, upstream.next()).await {
            Err(_) => return Err(ApiError::upstream_timeout(&remote.name, "no first event")),
            Ok(None) => {
                return Err(ApiError::bad_gateway(
                    &remote.name,
                    "stream ended before its first event",
                ));
            }
            Ok(Some(Err(e))) => return Err(remote.transport_error(&e)),
            Ok(Some(Ok(bytes))) => bytes,
        };
        let events = parser.push(&bytes);
        head.push(bytes);
        if let Some(first) = events.first() {
            if first.data != "[DONE]" {
                let chunk: RawObject = serde_json::from_str(&first.data).map_err(|_| {
                    ApiError::bad_gateway(&remote.name, "malformed first stream chunk")
                })?;
                if first.name.as_deref() == Some("error") || chunk.get("error").is_some() {
                    return Err(ApiError::bad_gateway(
                        &remote.name,
                        "error event before the first chunk",
                    ));
                }
            }
            break;
        }
    }
    let head = futures_util::stream::iter(head.into_iter().map(Ok));
    Ok(Box::pin(head.chain(upstream)))
}

/// A whole completion, parsed; a malformed one is a provider fault.
fn json_answer(remote: &HttpProvider, body: &[u8]) -> Result<RawObject, ApiError> {
    // DeepSeek sends blank lines while a request is queued; serde_json skips leading whitespace.
    let raw: RawObject = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_gateway(&remote.name, "response is not a JSON object"))?;
    if raw.get("choices").is_none() {
        return Err(ApiError::bad_gateway(
            &remote.name,
            "response has no `choices`",
        ));
    }
    Ok(raw)
}

/// Whether any choice finished with `insufficient_system_resource`: DeepSeek's way of saying
/// it ran out of capacity mid-generation.
pub fn out_of_capacity(raw: &RawObject) -> bool {
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        finish_reason: Option<&'a str>,
    }
    raw.get("choices").is_some_and(|c| {
        // Cheap test first: almost every response lacks the word.
        c.get().contains("insufficient_system_resource")
            && serde_json::from_str::<Vec<Choice>>(c.get()).is_ok_and(|choices| {
                choices
                    .iter()
                    .any(|c| c.finish_reason == Some("insufficient_system_resource"))
            })
    })
}
