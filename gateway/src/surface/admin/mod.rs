//! The admin API (`/v1/admin/...`), for keys with `admin = true`: keys, teams, budgets and
//! limits in the store, the spend report, the audit log. JSON in and out, errors in DeepSeek's
//! envelope; every change is audited in its own transaction, and put in force on this replica
//! before the answer (the others hear of it within a second).
//!
//! The file's keys, budgets and limits are listed beside the stored ones as `"source":
//! "config"` and cannot be changed here.

pub mod budgets;
pub mod keys;
pub mod limits;
pub mod spend;
pub mod teams;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use axum::extract::State;

use super::json_response;
use crate::pipeline::Pipeline;
use crate::pipeline::admission::directory::Directory;
use crate::pipeline::admission::keys::LiveKeys;
use crate::store::Store;
use crate::store::directory::{Actor, ChangeError};
use crate::support::principal::Principal;
use crate::wire::error::ApiError;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct Admin {
    pub pipeline: Arc<Pipeline>,
    pub directory: Arc<Directory>,
    pub keys: Arc<LiveKeys>,
}

impl Admin {
    /// The store, or the error that says there is none.
    fn store(&self) -> Result<&Arc<Store>, ApiError> {
        self.pipeline.store.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "No [store] is configured: keys, teams, budgets and limits come from the \
                 configuration file only. Add `[store] url = \"sqlite:///...\"` or a postgres:// URL.",
            )
        })
    }

    /// Re-reads the store and puts it in force here, so the change is live on this replica
    /// when the caller hears it succeeded.
    async fn refresh(&self) {
        let Some(store) = &self.pipeline.store else {
            return;
        };
        match store.snapshot().await {
            Ok(snapshot) => self.directory.apply(&snapshot, &self.keys, &self.pipeline),
            Err(e) => {
                tracing::warn!(target: "dsgw::store", error = %e, "directory not refreshed after a change; the watch will")
            }
        }
    }
}

/// The caller, if it is an admin (else a 403): who the audit log says made a change.
#[derive(Debug)]
pub struct AdminCaller(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Principal>() {
            Some(p) if p.admin => Ok(Self(Actor(p.key_id.to_string()))),
            Some(_) => Err(ApiError::forbidden(
                "This route needs an admin key (`admin = true`); without configured keys, \
                 admin routes are closed.",
            )),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// A JSON body as `T` (see [`parse`]).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = super::body(Bytes::from_request(request, state).await)?;
        parse(&bytes).map(Self)
    }
}

/// The query string as `T`, or a 422 naming what is wrong with it.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| {
                use std::error::Error;
                let why = e
                    .source()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                ApiError::invalid_parameter("query", format!("Invalid query string: {why}."))
            })
    }
}

/// The body as `T`: a syntax error is a 400, a wrong field (unknown, missing, mistyped) a 422
/// that names it.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The body is not valid JSON: {e}.")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("The body must be a JSON object."));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid_parameter("body", format!("Invalid body: {e}.")))
}

/// Ids and names: 1-128 of letters, digits and `._:@-`, so they stay readable in labels, logs
/// and URLs.
fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(
            field,
            format!(
                "`{field}` must be 1-128 characters of letters, digits and . _ : @ - (got {:?}).",
                value.chars().take(140).collect::<String>()
            ),
        ))
    }
}

fn change_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::Conflict(m) => ApiError::conflict(m),
        ChangeError::NotFound(m) => ApiError::not_found_message(m),
        ChangeError::Database(e) => store_unavailable(&e),
    }
}

fn store_unavailable(e: &sqlx::Error) -> ApiError {
    tracing::warn!(target: "dsgw::store", error = %e, "admin request failed at the store");
    ApiError::unavailable(
        "The store cannot be reached right now; nothing was changed. Retry shortly.",
    )
}

fn json(status: StatusCode, value: &Value) -> Response {
    let mut r = json_response(serde_json::to_vec(value).expect("JSON"));
    *r.status_mut() = status;
    r
}

/// Unix milliseconds as RFC 3339 (UTC).
fn time(ms: i64) -> Value {
    jiff::Timestamp::from_millisecond(ms).map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn optional_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, time)
}

/// RFC 3339 (or a date, its UTC midnight) to Unix milliseconds.
fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    let parsed = crate::support::config::prices::parse_instant(text);
    parsed.map(|t| t.as_millisecond()).map_err(|_| {
        ApiError::invalid_parameter(
            field,
            format!("`{field}` must be an RFC 3339 time or a date (got {text:?})."),
        )
    })
}

/// `?limit=`: 1 to 1000, default 100.
fn page_size(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_parameter(
            "limit",
            "`limit` must be between 1 and 1000.",
        )),
    }
}

/// `GET /v1/admin/audit?limit=`: the latest changes, newest first.
pub async fn audit(
    State(admin): State<Admin>,
    _admin: AdminCaller,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(q.limit)?;
    let rows = admin
        .store()?
        .audit(limit)
        .await
        .map_err(|e| store_unavailable(&e))?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({"at": time(r.ts_ms), "actor": r.actor, "action": r.action,
            "target": r.target, "detail": r.detail})
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<i64>,
}
