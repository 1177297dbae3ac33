//! What a caller can read about its own spend: `GET /user/balance` in DeepSeek's shape (the
//! remaining budget as the balance) and `GET /v1/usage` (by day, model and deployment); admins
//! read everyone's with `GET /v1/admin/usage`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::json_response;
use crate::accounting::pricing::Money;
use crate::accounting::spend::record::now;
use crate::pipeline::Pipeline;
use crate::pipeline::admission::budgets::current;
use crate::support::principal::Principal;
use crate::wire::error::ApiError;

/// Picodollars as DeepSeek shows balances: two decimals, rounded down.
fn two_decimals(pico: u64) -> String {
    let cents = pico / 10_000_000_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

pub async fn balance(
    State(state): State<Arc<Pipeline>>,
    principal: axum::Extension<Principal>,
) -> Response {
    let budgets = match current(&state.budgets(), &state.ledger, &principal, now()).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::unavailable(
                "Balance cannot be read right now (spend store unavailable); retry shortly.",
            )
            .into_response();
        }
    };
    let Some(tightest) = budgets.iter().min_by_key(|b| b.left()) else {
        return json_response(
            serde_json::to_vec(&json!({"is_available": true, "balance_infos": []})).expect("JSON"),
        );
    };
    let left = two_decimals(tightest.left());
    let body = json!({
        "is_available": tightest.left() > 0,
        "balance_infos": [{
            "currency": "USD",
            "total_balance": left,
            "granted_balance": left,
            "topped_up_balance": "0.00",
        }],
    });
    json_response(serde_json::to_vec(&body).expect("JSON"))
}

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
}

/// Usage rows from the shared tables when replicas share them (Redis), else from this process's
/// ledger; `team` narrows the shared lookup to one team's tables.
async fn rows(
    state: &Pipeline,
    team: Option<&str>,
    key: Option<&str>,
    filter: impl Fn(&str, &str) -> bool,
) -> Response {
    if let Some(store) = &state.store {
        let filter = crate::store::ledger::SpendFilter {
            from_ms: 0,
            to_ms: i64::MAX,
            team: team.map(str::to_owned),
            key_id: key.map(str::to_owned),
        };
        return match store.usage(&filter).await {
            Ok(rows) => usage_response(rows),
            Err(e) => {
                tracing::warn!(target: "dsgw::store", error = %e, "stored usage unreadable");
                ApiError::unavailable(
                    "Usage cannot be read right now (store unavailable); retry shortly.",
                )
                .into_response()
            }
        };
    }
    let rows = match state.ledger.shared() {
        Some(shared) => match shared.usage(team, &filter).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(target: "dsgw::ledger", error = %e, "shared usage unreadable");
                return ApiError::unavailable(
                    "Usage cannot be read right now (spend store unavailable); retry shortly.",
                )
                .into_response();
            }
        },
        None => state.ledger.usage(&filter),
    };
    usage_response(rows)
}

fn usage_response(
    rows: Vec<(
        String,
        String,
        String,
        crate::accounting::spend::record::Totals,
    )>,
) -> Response {
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(date, model, deployment, t)| {
            json!({
                "date": date, "model": model, "deployment": deployment, "requests": t.requests,
                "prompt_cache_hit_tokens": t.cache_hit, "prompt_cache_miss_tokens": t.cache_miss,
                "completion_tokens": t.output, "reasoning_tokens": t.reasoning,
                "cost": Money(t.cost).to_string(), "currency": "USD",
                // Calls that timed out after the prompt was sent: the provider may bill them.
                "unanswered_calls": t.unanswered, "unanswered_cost": Money(t.unanswered_cost).to_string(),
            })
        })
        .collect();
    json_response(serde_json::to_vec(&json!({"object": "list", "data": data})).expect("JSON"))
}

pub async fn usage(
    State(state): State<Arc<Pipeline>>,
    principal: axum::Extension<Principal>,
) -> Response {
    let key = principal.key_id.clone();
    rows(&state, Some(&principal.team), Some(&key), |k, _| *k == *key).await
}

pub async fn admin_usage(
    State(state): State<Arc<Pipeline>>,
    principal: axum::Extension<Principal>,
    Query(q): Query<UsageQuery>,
) -> Response {
    if !principal.admin {
        return ApiError::forbidden(
            "This key may not read other keys' usage (set `admin = true` on it; without configured keys, admin routes are closed).",
        )
        .into_response();
    }
    rows(&state, q.team.as_deref(), q.key_id.as_deref(), |k, t| {
        q.team.as_deref().is_none_or(|want| want == t)
            && q.key_id.as_deref().is_none_or(|want| want == k)
    })
    .await
}

/// `GET /v1/admin/deployments`: every deployment's circuit, for operators.
pub async fn deployments(
    State(state): State<Arc<Pipeline>>,
    principal: axum::Extension<Principal>,
) -> Response {
    if !principal.admin {
        return ApiError::forbidden(
            "This key may not read deployment health (set `admin = true` on it; without configured keys, admin routes are closed).",
        )
        .into_response();
    }
    let data: Vec<Value> = state
        .catalog
        .models()
        .flat_map(|m| {
            m.deployments.iter().map(move |d| {
                json!({
                    "model": m.name,
                    "provider": d.provider.name,
                    "upstream_model": d.name.upstream_model(),
                    "priority": d.priority,
                    "weight": d.weight,
                    "circuit": d.health.breaker.label(),
                    "error_rate": d.health.breaker.error_rate(),
                    "ttfb_ms": d.health.ttfb.get().map(|t| t.as_secs_f64() * 1e3),
                })
            })
        })
        .collect();
    json_response(serde_json::to_vec(&json!({"object": "list", "data": data})).expect("JSON"))
}
