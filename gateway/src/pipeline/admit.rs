//! The admit phase: is the model served and the request valid for it, may its data go
//! anywhere (policies), is there budget left, and do the caller's limits allow it now. Every
//! refusal is counted and audited here, before any provider sees the request.

use std::sync::Arc;

use super::Pipeline;
use super::admission::Rejection;
use super::admission::budgets;
use super::admission::limits::{Demand, RateHeaders, SpendCap};
use super::admission::policy::gate::{Gate, Subject};
use super::context::Caller;
use super::request::Request;
use super::routing::catalog::ModelSpec;
use super::settle::Ticket;
use crate::accounting::spend::record::now;
use crate::providers::call::Mode;
use crate::wire::error::ApiError;

/// A request that may go to a provider.
pub(super) struct Admitted {
    pub model: Arc<ModelSpec>,
    pub mode: Mode,
    /// The policies' verdicts, when policies are configured.
    pub gate: Option<Gate>,
    /// The caller's remaining limits, for every response.
    pub rate_headers: RateHeaders,
}

pub(super) async fn admit(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &Request,
    ticket: &mut Ticket,
) -> Result<Admitted, ApiError> {
    if pipeline.is_draining() {
        return Err(ApiError::unavailable(
            "The gateway is shutting down; retry on another replica.",
        ));
    }
    let model = resolve(pipeline, request)?;
    let mode = request.check_against(&model)?;
    ticket
        .record()
        .estimate_from(request.body.clone(), mode.thinking());
    // Policies first: a request no deployment may receive is refused before it spends anything.
    let gate = check_policies(pipeline, caller, request, &model)?;
    // With the limits in Redis, the budgets ride in the limit script: one round trip for both.
    let caps = match &pipeline.limiter {
        Some(limiter) if limiter.is_global() && pipeline.ledger.shared().is_some() => {
            budgets::caps(&pipeline.budgets(), &caller.principal, now())
        }
        _ => {
            check_budgets(pipeline, caller).await?;
            Vec::new()
        }
    };
    let rate_headers = reserve(pipeline, caller, request, ticket, &caps).await?;
    Ok(Admitted {
        model,
        mode,
        gate,
        rate_headers,
    })
}

/// The model a request names.
fn resolve(pipeline: &Pipeline, request: &Request) -> Result<Arc<ModelSpec>, ApiError> {
    pipeline
        .catalog
        .get(&request.model)
        .cloned()
        .ok_or_else(|| {
            let served: Vec<&str> = pipeline.catalog.names().collect();
            ApiError::bad_request(format!(
                "Model Not Exist: `{}` is not served here. Served models: {}.",
                request.model,
                served.join(", ")
            ))
            .with_param("model")
        })
}

fn check_policies(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &Request,
    model: &ModelSpec,
) -> Result<Option<Gate>, ApiError> {
    let Some(engine) = pipeline.policy() else {
        return Ok(None);
    };
    let subject = Subject {
        principal: &caller.principal,
        request_id: &caller.request_id,
        classification: caller.classification.as_ref(),
    };
    let gate = Gate::evaluate(&engine, &pipeline.redactor, subject, request, model)?;
    if gate.any_allowed() {
        return Ok(Some(gate));
    }
    pipeline
        .audit
        .append(&gate.entry(&caller.principal, model, "refused", None));
    pipeline.reject(caller, Rejection::Policy);
    Err(gate.refusal(model))
}

/// Budgets fail closed: a request that would start over an exhausted budget never leaves.
async fn check_budgets(pipeline: &Pipeline, caller: &Caller) -> Result<(), ApiError> {
    let budgets = budgets::current(
        &pipeline.budgets(),
        &pipeline.ledger,
        &caller.principal,
        now(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(target: "dsgw::ledger", error = %e, "budgets unreadable");
        ApiError::unavailable(
            "Budgets cannot be checked right now (spend store unavailable); retry shortly.",
        )
    })?;
    if budgets.iter().any(|b| b.left() == 0) {
        pipeline.reject(caller, Rejection::Budget);
        return Err(ApiError::insufficient_balance());
    }
    Ok(())
}

/// Takes the caller's limits for this request; the reservation is held by the ticket.
async fn reserve(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &Request,
    ticket: &mut Ticket,
    caps: &[SpendCap],
) -> Result<RateHeaders, ApiError> {
    let Some(limiter) = &pipeline.limiter else {
        return Ok(RateHeaders::default());
    };
    let demand = Demand {
        // About four bytes of JSON per prompt token; reconciled with the real count at the end.
        input: request.body.len() as u64 / 4,
        max_output: request.max_tokens.map(u64::from),
    };
    match limiter.reserve(&caller.principal, demand, caps).await {
        Ok((reservation, headers)) => {
            ticket.hold(reservation);
            Ok(headers)
        }
        Err((error, reason)) => {
            if let Some(reason) = reason {
                pipeline.reject(caller, reason);
            }
            Err(error)
        }
    }
}
