//! `GET /v1/admin/spend?from=&to=&group_by=team|key|model|day|deployment&team=&key_id=`:
//! finance's month by team in one call. From the store's ledger when there is one (every
//! replica's rows), else from this process's ledger; costs in the decimal form of
//! `x-dsgw-cost`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminCaller, Query, json, parse_time, store_unavailable, time};
use crate::accounting::pricing::Money;
use crate::accounting::spend::record::{Totals, day_of};
use crate::store::ledger::{GroupBy, SpendFilter, SpendRow};
use crate::store::now_ms;
use crate::wire::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendQuery {
    /// Inclusive; RFC 3339 or a date. Default: the start of this month (UTC).
    #[serde(default)]
    from: Option<String>,
    /// Exclusive. Default: now.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
}

fn month_start(now_ms: i64) -> i64 {
    let day = day_of((now_ms / 1000) as u64);
    parse_time("from", &format!("{}-01", &day[..7])).unwrap_or(0)
}

/// One row as the report shows it.
pub fn render(by: GroupBy, group: &str, t: &Totals) -> Value {
    json!({
        by.as_str(): group, "requests": t.requests, "unanswered_calls": t.unanswered,
        "prompt_cache_hit_tokens": t.cache_hit, "prompt_cache_miss_tokens": t.cache_miss,
        "completion_tokens": t.output, "reasoning_tokens": t.reasoning,
        "cost": Money(t.cost).to_string(), "unanswered_cost": Money(t.unanswered_cost).to_string(),
        "currency": "USD",
    })
}

pub async fn spend(
    State(admin): State<Admin>,
    _admin: AdminCaller,
    Query(q): Query<SpendQuery>,
) -> Result<Response, ApiError> {
    let by = match q.group_by.as_deref() {
        None => GroupBy::Team,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            ApiError::invalid_parameter(
                "group_by",
                format!("`group_by` must be team, key, model, day or deployment (got {g:?})."),
            )
        })?,
    };
    let now = now_ms();
    let filter = SpendFilter {
        from_ms: q
            .from
            .as_deref()
            .map(|t| parse_time("from", t))
            .transpose()?
            .unwrap_or_else(|| month_start(now)),
        to_ms: q
            .to
            .as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?
            .unwrap_or(i64::MAX),
        team: q.team,
        key_id: q.key_id,
    };
    if filter.to_ms <= filter.from_ms {
        return Err(ApiError::invalid_parameter(
            "to",
            "`to` must be after `from`.",
        ));
    }
    let rows = match &admin.pipeline.store {
        Some(store) => store
            .spend(by, &filter)
            .await
            .map_err(|e| store_unavailable(&e))?,
        None => from_ledger(&admin, by, &filter),
    };
    let total: u64 = rows.iter().map(|r| r.totals.cost).sum();
    let data: Vec<Value> = rows
        .iter()
        .map(|r| render(by, &r.group, &r.totals))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "object": "list", "group_by": by.as_str(), "from": time(filter.from_ms),
            "to": if filter.to_ms == i64::MAX { time(now) } else { time(filter.to_ms) },
            "data": data, "total_cost": Money(total).to_string(), "currency": "USD",
            "source": if admin.pipeline.store.is_some() { "store" } else { "ledger" },
        }),
    ))
}

/// Without a store: this process's aggregates, which are kept by day (so `from` and `to` count
/// whole UTC days).
fn from_ledger(admin: &Admin, by: GroupBy, filter: &SpendFilter) -> Vec<SpendRow> {
    let from = day_of((filter.from_ms.max(0) / 1000) as u64);
    let to = (filter.to_ms != i64::MAX).then(|| day_of(((filter.to_ms - 1).max(0) / 1000) as u64));
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for ((day, key, team, model, deployment), t) in admin.pipeline.ledger.aggregates() {
        let inside = *day >= *from && to.as_ref().is_none_or(|to| day <= *to);
        let wanted = filter.team.as_deref().is_none_or(|w| w == team)
            && filter.key_id.as_deref().is_none_or(|w| w == key);
        if !(inside && wanted) {
            continue;
        }
        let group = match by {
            GroupBy::Team => team,
            GroupBy::Key => key,
            GroupBy::Model => model,
            GroupBy::Day => day,
            GroupBy::Deployment => deployment,
        };
        groups.entry(group).or_default().merge(&t);
    }
    groups
        .into_iter()
        .map(|(group, totals)| SpendRow { group, totals })
        .collect()
}
