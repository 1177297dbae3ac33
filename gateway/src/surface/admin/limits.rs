//! `/v1/admin/limits`: rate, token and concurrency limits per team or key, in the same fields
//! as `[[limits]]` (create, list, replace, delete).

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Admin, AdminCaller, Body, change_error, check_name, json, parse};
use crate::store::directory::scope_text;
use crate::support::config::{LimitConfig, LimitScope};
use crate::wire::error::ApiError;

fn check(l: &LimitConfig) -> Result<(), ApiError> {
    check_name("name", &l.name)?;
    l.validate("limit")
        .map_err(|e| ApiError::invalid_parameter("body", format!("{e}.")))
}

fn in_file(admin: &Admin, scope: LimitScope, name: &str) -> bool {
    admin
        .directory
        .file_limits()
        .iter()
        .any(|f| f.scope == scope && f.name == name)
}

fn render(l: &LimitConfig, source: &str) -> Value {
    let mut v = serde_json::to_value(l).expect("a limit serializes");
    v["object"] = json!("limit");
    v["source"] = json!(source);
    v
}

/// `POST /v1/admin/limits` `{"scope": "team", "name": "research", "requests_per_minute": 600}`.
pub async fn create(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Body(limit): Body<LimitConfig>,
) -> Result<Response, ApiError> {
    put(&admin, &limit, false, &actor).await?;
    Ok(json(StatusCode::CREATED, &render(&limit, "store")))
}

/// Creates or (`replace`) replaces a stored limit, refusing one the file defines.
async fn put(
    admin: &Admin,
    limit: &LimitConfig,
    replace: bool,
    actor: &crate::store::directory::Actor,
) -> Result<(), ApiError> {
    check(limit)?;
    if in_file(admin, limit.scope, &limit.name) {
        return Err(ApiError::conflict(
            "This limit is defined in the configuration file; change it there.",
        ));
    }
    admin
        .store()?
        .put_limit(limit, replace, actor)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(())
}

/// `GET /v1/admin/limits`.
pub async fn list(State(admin): State<Admin>, _admin: AdminCaller) -> Result<Response, ApiError> {
    let mut data: Vec<Value> = admin
        .directory
        .file_limits()
        .iter()
        .map(|l| render(l, "config"))
        .collect();
    if let Some(store) = &admin.pipeline.store {
        let snapshot = store
            .snapshot()
            .await
            .map_err(|e| super::store_unavailable(&e))?;
        data.extend(
            snapshot
                .limits
                .iter()
                .filter(|l| !in_file(&admin, l.scope, &l.name))
                .map(|l| render(l, "store")),
        );
    }
    Ok(json(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

fn path_scope(scope: &str) -> Result<LimitScope, ApiError> {
    serde_json::from_value(Value::String(scope.to_owned()))
        .map_err(|_| ApiError::invalid_parameter("scope", "`scope` must be `team` or `key`."))
}

/// `PUT /v1/admin/limits/{scope}/{name}`: the limit's fields, replacing the stored ones.
pub async fn replace(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path((scope, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let scope = path_scope(&scope)?;
    let mut fields: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}.")))?;
    let Some(object) = fields.as_object_mut() else {
        return Err(ApiError::bad_request("The body must be a JSON object."));
    };
    object.insert("scope".into(), json!(scope));
    object.insert("name".into(), json!(name));
    let limit: LimitConfig = parse(&Bytes::from(fields.to_string()))?;
    put(&admin, &limit, true, &actor).await?;
    Ok(json(StatusCode::OK, &render(&limit, "store")))
}

/// `DELETE /v1/admin/limits/{scope}/{name}`.
pub async fn delete(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path((scope, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let scope = path_scope(&scope)?;
    check_name("name", &name)?;
    if in_file(&admin, scope, &name) {
        return Err(ApiError::conflict(
            "This limit is defined in the configuration file; change it there.",
        ));
    }
    admin
        .store()?
        .delete_limit(scope_text(scope), &name, &actor)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(
        StatusCode::OK,
        &json!({"object": "limit", "scope": scope, "name": name, "deleted": true}),
    ))
}
