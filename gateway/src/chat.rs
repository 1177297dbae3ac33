//! `POST /chat/completions`: parse, resolve the model, try its deployments in order, and answer
//! in DeepSeek's shape, streaming or not.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::limits::{Demand, RateHeaders};
use crate::models::ModelSpec;
use crate::pricing::Price;
use crate::raw_object::RawObject;
use crate::relay::Relay;
use crate::request::ChatRequest;
use crate::routing::dispatch::{Answer, Dispatched, dispatch};
use crate::settlement::{Outcome, Settlement};
use crate::state::AppState;
use crate::upstream::dialect::normalize_completion;

pub async fn complete(state: &AppState, principal: Principal, body: Bytes) -> Response {
    let request = match ChatRequest::parse(&body) {
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
    let mut response = answer(state, model, thinking, &request, settlement).await;
    rate_headers.apply(response.headers_mut());
    response
}

async fn answer(
    state: &AppState,
    model: &ModelSpec,
    thinking: bool,
    request: &ChatRequest,
    mut settlement: Settlement,
) -> Response {
    settlement.upstream_started();
    let dispatched = dispatch(model, thinking, request, &state.routing, &state.metrics).await;
    let Dispatched {
        deployment,
        answer,
        attempts,
    } = match dispatched {
        Ok(ok) => ok,
        Err(e) => {
            settlement.finish(Outcome::from(&e));
            return e.into_response();
        }
    };
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
            );
            sse_response(Body::from_stream(relay.into_stream()))
        }
        (Answer::Json(_, raw), _) => remote_json(&raw, model, &deployment.price, settlement),
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

/// A whole upstream completion, normalised to DeepSeek's shape and priced.
fn remote_json(
    raw: &RawObject,
    model: &ModelSpec,
    price: &Price,
    mut settlement: Settlement,
) -> Response {
    settlement.upstream_finished();
    let normalized = normalize_completion(raw, &model.name_json, Some(price));
    if let Some(usage) = normalized.usage {
        settlement.record_usage(usage);
    }
    priced(
        json_response(normalized.body.unwrap_or_default()),
        settlement,
    )
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
