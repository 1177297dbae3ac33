//! `/v1/admin/budgets`: spend budgets per team or key, by day, month or in total (create,
//! list with what is left, change the amount, delete). In force on every replica within a
//! second of the change.

use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminCaller, Body, change_error, check_name, json};
use crate::accounting::pricing::Money;
use crate::store::directory::{period_text, scope_text};
use crate::support::config::prices::dollars;
use crate::support::config::{BudgetConfig, BudgetPeriod, LimitScope};
use crate::wire::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountPatch {
    amount: String,
}

fn check(b: &BudgetConfig) -> Result<(), ApiError> {
    check_name("name", &b.name)?;
    dollars(&b.amount).map(drop).map_err(|e| {
        ApiError::invalid_parameter(
            "amount",
            format!("`amount` {e} (a decimal string of USD, like \"100.00\")."),
        )
    })
}

fn in_file(admin: &Admin, b: &BudgetConfig) -> bool {
    admin
        .directory
        .file_budgets()
        .iter()
        .any(|f| f.scope == b.scope && f.name == b.name && f.period == b.period)
}

fn render(b: &BudgetConfig, source: &str) -> Value {
    json!({"object": "budget", "scope": b.scope, "name": b.name, "period": b.period,
        "amount": dollars(&b.amount).map(|p| Money(p).to_string()).unwrap_or_else(|_| b.amount.clone()),
        "source": source})
}

/// `POST /v1/admin/budgets` `{"scope": "team", "name": "research", "period": "month", "amount": "100.00"}`.
pub async fn create(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Body(budget): Body<BudgetConfig>,
) -> Result<Response, ApiError> {
    put(&admin, &budget, false, &actor).await?;
    Ok(json(StatusCode::CREATED, &render(&budget, "store")))
}

/// Creates or (`replace`) changes a stored budget, refusing one the file defines.
async fn put(
    admin: &Admin,
    budget: &BudgetConfig,
    replace: bool,
    actor: &crate::store::directory::Actor,
) -> Result<(), ApiError> {
    check(budget)?;
    if in_file(admin, budget) {
        return Err(ApiError::conflict(
            "This budget is defined in the configuration file; change it there.",
        ));
    }
    admin
        .store()?
        .put_budget(budget, replace, actor)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(())
}

/// `GET /v1/admin/budgets`: every budget in force, with what is left of it this period.
pub async fn list(State(admin): State<Admin>, _admin: AdminCaller) -> Result<Response, ApiError> {
    let mut data: Vec<Value> = admin
        .directory
        .file_budgets()
        .iter()
        .map(|b| render(b, "config"))
        .collect();
    if let Some(store) = &admin.pipeline.store {
        let snapshot = store
            .snapshot()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        data.extend(
            snapshot
                .budgets
                .iter()
                .filter(|b| !in_file(&admin, b))
                .map(|b| render(b, "store")),
        );
    }
    let left = crate::pipeline::admission::budgets::all_current(
        &admin.pipeline.budgets(),
        &admin.pipeline.ledger,
        crate::accounting::spend::record::now(),
    )
    .await
    .unwrap_or_default();
    for item in &mut data {
        let found = left.iter().find(|(scope, name, period, _)| {
            item["scope"] == *scope && item["name"] == name.as_str() && item["period"] == *period
        });
        if let Some((.., left)) = found {
            item["left"] = Value::String(Money(*left).to_string());
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

fn path_budget(
    scope: &str,
    name: String,
    period: &str,
    amount: String,
) -> Result<BudgetConfig, ApiError> {
    let scope: LimitScope = serde_json::from_value(Value::String(scope.to_owned()))
        .map_err(|_| ApiError::invalid_parameter("scope", "`scope` must be `team` or `key`."))?;
    let period: BudgetPeriod =
        serde_json::from_value(Value::String(period.to_owned())).map_err(|_| {
            ApiError::invalid_parameter("period", "`period` must be `day`, `month` or `total`.")
        })?;
    Ok(BudgetConfig {
        scope,
        name,
        period,
        amount,
    })
}

/// `PATCH /v1/admin/budgets/{scope}/{name}/{period}` `{"amount": "250.00"}`.
pub async fn update(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path((scope, name, period)): Path<(String, String, String)>,
    Body(patch): Body<AmountPatch>,
) -> Result<Response, ApiError> {
    let budget = path_budget(&scope, name, &period, patch.amount)?;
    put(&admin, &budget, true, &actor).await?;
    Ok(json(StatusCode::OK, &render(&budget, "store")))
}

/// `DELETE /v1/admin/budgets/{scope}/{name}/{period}`.
pub async fn delete(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path((scope, name, period)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let budget = path_budget(&scope, name, &period, "0".into())?;
    check_name("name", &budget.name)?;
    if in_file(&admin, &budget) {
        return Err(ApiError::conflict(
            "This budget is defined in the configuration file; change it there.",
        ));
    }
    admin
        .store()?
        .delete_budget(
            scope_text(budget.scope),
            &budget.name,
            period_text(budget.period),
            &actor,
        )
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(
        StatusCode::OK,
        &json!({"object": "budget", "scope": budget.scope, "name": budget.name, "period": budget.period, "deleted": true}),
    ))
}
