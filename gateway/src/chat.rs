//! `POST /chat/completions`: parse, resolve the model, try its deployments in order, and answer
//! in DeepSeek's shape, streaming or not.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::limits::{Demand, RateHeaders};
use crate::models::ModelSpec;
use crate::policy::gate::Gate;
use crate::policy::redact::Vault;
use crate::pricing::Price;
use crate::raw_object::RawObject;
use crate::relay::Relay;
use crate::request::{ChatRequest, Surface};
use crate::routing::dispatch::{Answer, Dispatched, dispatch};
use crate::settlement::{Outcome, Settlement};
use crate::state::AppState;
use crate::upstream::dialect::normalize_completion;

pub async fn complete(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    body: Bytes,
    surface: Surface,
) -> Response {
    let request = match ChatRequest::parse_as(&body, surface) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut settlement = Settlement::new(
        principal.clone(),
        &request.model,
        state.accounting.then(|| state.metrics.clone()),
        state.accounting.then(|| state.ledger.clone()),
    );
    let (model, thinking) = match resolve(state, &request) {
        Ok(ok) => ok,
        Err(e) => {
            settlement.finish(Outcome::from(&e));
            return e.into_response();
        }
    };
    settlement.estimate_from(body.clone(), thinking);
    // Policies first: a request no deployment may receive is refused before it spends anything.
    let gate = match state.policy() {
        Some(engine) => {
            match Gate::evaluate(
                &engine,
                &state.redactor,
                &principal,
                headers,
                &request,
                model,
            ) {
                Ok(gate) if gate.any_allowed() => Some(gate),
                Ok(gate) => {
                    let e = gate.refusal(model);
                    state
                        .audit
                        .append(&gate.entry(&principal, model, "refused", None));
                    state
                        .metrics
                        .rejection(&principal.team, &principal.key_id, "policy");
                    settlement.finish(Outcome::from(&e));
                    return e.into_response();
                }
                Err(e) => {
                    settlement.finish(Outcome::from(&e));
                    return e.into_response();
                }
            }
        }
        None => None,
    };
    // Budgets fail closed: a request that would start over an exhausted budget never leaves.
    let budgets = match crate::budgets::current(
        &state.budgets,
        &state.ledger,
        &principal,
        crate::budgets::now(),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(target: "dsgw::ledger", error = %e, "budgets unreadable");
            let e = ApiError::unavailable(
                "Budgets cannot be checked right now (spend store unavailable); retry shortly.",
            );
            settlement.finish(Outcome::from(&e));
            return e.into_response();
        }
    };
    if budgets.iter().any(|b| b.left() == 0) {
        state
            .metrics
            .rejection(&principal.team, &principal.key_id, "budget");
        let e = ApiError::insufficient_balance();
        settlement.finish(Outcome::from(&e));
        return e.into_response();
    }
    let mut rate_headers = RateHeaders::default();
    if let Some(limiter) = &state.limiter {
        let demand = Demand {
            // About four bytes of JSON per prompt token; reconciled with the real count at the end.
            input: body.len() as u64 / 4,
            max_output: request.max_tokens.map(u64::from),
        };
        match limiter.reserve(&principal, demand).await {
            Ok((reservation, headers)) => {
                settlement.hold(reservation);
                rate_headers = headers;
            }
            Err((e, headers)) => {
                if let Some(reason) = &e.body.param {
                    state
                        .metrics
                        .rejection(&principal.team, &principal.key_id, reason);
                }
                settlement.finish(Outcome::from(&e));
                let mut response = e.into_response();
                headers.apply(response.headers_mut());
                return response;
            }
        }
    }
    let routed = Routed {
        model,
        thinking,
        gate: gate.as_ref(),
        principal: &principal,
    };
    let mut response = answer(state, &routed, &request, settlement).await;
    rate_headers.apply(response.headers_mut());
    if let Some(gate) = &gate
        && let Ok(id) = HeaderValue::from_str(&gate.request_id)
    {
        response.headers_mut().insert("x-dsgw-request-id", id);
    }
    response
}

/// What the request is routed with, once it passed the checks.
struct Routed<'a> {
    model: &'a ModelSpec,
    thinking: bool,
    gate: Option<&'a Gate>,
    principal: &'a Principal,
}

async fn answer(
    state: &AppState,
    routed: &Routed<'_>,
    request: &ChatRequest,
    mut settlement: Settlement,
) -> Response {
    let Routed {
        model,
        thinking,
        gate,
        principal,
    } = *routed;
    settlement.upstream_started();
    let dispatched = dispatch(
        model,
        thinking,
        request,
        gate,
        &state.routing,
        &state.metrics,
    )
    .await;
    let audit = |outcome, chosen| {
        if let Some(gate) = gate {
            state
                .audit
                .append(&gate.entry(principal, model, outcome, chosen));
        }
    };
    let Dispatched {
        deployment,
        answer,
        attempts,
    } = match dispatched {
        Ok(ok) => ok,
        Err(e) => {
            audit("failed", None);
            settlement.finish(Outcome::from(&e));
            return e.into_response();
        }
    };
    audit("routed", Some(deployment.index));
    let vault = gate.and_then(|g| g.reidentification(deployment.index));
    settlement.routed(deployment, attempts);
    match (answer, request.stream) {
        (Answer::Stream(provider, upstream), _) => {
            let relay = Relay::new(
                upstream,
                deployment,
                provider.idle_timeout(),
                &model.name_json,
                request.include_usage,
                settlement,
            )
            .reidentifying(vault);
            sse_response(Body::from_stream(relay.into_stream()))
        }
        (Answer::Json(_, raw), _) => {
            remote_json(&raw, model, &deployment.price, vault.as_deref(), settlement)
        }
        (Answer::Local(run), true) => sse_response(Body::from_stream(run.into_sse(
            &model.name,
            request.include_usage,
            deployment.price.clone(),
            settlement,
        ))),
        (Answer::Local(run), false) => {
            let (body, usage) = run.complete(&model.name, &deployment.price).await;
            settlement.upstream_finished();
            settlement.record_usage(usage);
            priced(json_response(body), settlement)
        }
    }
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

pub(crate) fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds the cost headers of the recorded usage, then settles.
fn priced(mut response: Response, settlement: Settlement) -> Response {
    if let Some((cost, price)) = settlement.cost() {
        for (name, value) in cost.headers(&price.currency) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    settlement.finish(Outcome::Completed);
    response
}

/// A whole upstream completion, normalised to DeepSeek's shape, re-identified when a policy
/// redacted the prompt, and priced.
fn remote_json(
    raw: &RawObject,
    model: &ModelSpec,
    price: &Price,
    vault: Option<&Vault>,
    mut settlement: Settlement,
) -> Response {
    settlement.upstream_finished();
    let normalized = normalize_completion(raw, &model.name_json, Some(price));
    if let Some(usage) = normalized.usage {
        settlement.record_usage(usage);
    }
    let mut body = normalized.body.unwrap_or_default();
    if let Some(vault) = vault {
        // Placeholders, and the values they stand for, hold nothing JSON escapes.
        body = vault
            .reidentify(&String::from_utf8_lossy(&body))
            .into_bytes();
    }
    priced(json_response(body), settlement)
}

/// The model a request names, and its effective mode.
fn resolve<'a>(
    state: &'a AppState,
    request: &ChatRequest,
) -> Result<(&'a ModelSpec, bool), ApiError> {
    let model = state.catalog.get(&request.model).ok_or_else(|| {
        let served: Vec<&str> = state.catalog.names().collect();
        ApiError::bad_request(format!(
            "Model Not Exist: `{}` is not served here. Served models: {}.",
            request.model,
            served.join(", ")
        ))
        .with_param("model")
    })?;
    let thinking = request.check_against(model)?;
    Ok((model, thinking))
}
