//! `/v1/admin/keys`: create (the secret shown once), list, get, update, rotate (the old secret
//! valid for a grace period), revoke.

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Admin, AdminCaller, Body, Query, change_error, check_name, json, optional_time, page_size,
    parse, parse_time, store_unavailable, time,
};
use crate::pipeline::admission::keys::generate_key;
use crate::store::directory::KeyRow;
use crate::store::now_ms;
use crate::support::config::{Classification, KeyConfig};
use crate::support::hashing::{hex, sha256};
use crate::wire::error::ApiError;

/// The longest grace a rotated secret may keep: 30 days.
const MAX_GRACE_SECONDS: i64 = 30 * 86_400;
/// A rotation's grace when none is given: an hour to roll the new secret out.
const DEFAULT_GRACE_SECONDS: i64 = 3_600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    id: String,
    team: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    admin: bool,
    /// RFC 3339 (or a date); absent: never.
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    clearance: Option<Classification>,
    #[serde(default)]
    default_classification: Option<Classification>,
    #[serde(default)]
    opt_ins: Vec<String>,
    /// An existing secret's hex SHA-256 (importing a key from a file): no secret is made or
    /// returned.
    #[serde(default)]
    key_sha256: Option<String>,
}

/// A change: absent fields stay; `expires_at: null` removes the expiry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    labels: Option<Map<String, Value>>,
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Value>,
    #[serde(default)]
    clearance: Option<Classification>,
    #[serde(default)]
    default_classification: Option<Classification>,
    #[serde(default)]
    opt_ins: Option<Vec<String>>,
}

/// Tells `"expires_at": null` (clear it) from a missing field (keep it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old secret keeps working; 0 ends it now.
    #[serde(default)]
    grace_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    team: Option<String>,
    /// Include revoked keys.
    #[serde(default)]
    revoked: Option<bool>,
    /// The last id of the previous page.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// A stored key as the API shows it: never its secret or digest.
pub fn render(k: &KeyRow) -> Value {
    json!({
        "object": "key", "id": k.id, "team": k.team, "owner": k.owner, "labels": k.labels,
        "admin": k.admin, "clearance": k.clearance, "default_classification": k.default_classification,
        "opt_ins": k.opt_ins, "created_at": time(k.created_ms), "updated_at": time(k.updated_ms),
        "expires_at": optional_time(k.expires_ms), "revoked_at": optional_time(k.revoked_ms),
        "previous_secret_valid_until": optional_time(k.previous_until_ms.filter(|_| k.previous_digest.is_some())),
        "source": "store",
    })
}

fn render_file(k: &KeyConfig) -> Value {
    json!({
        "object": "key", "id": k.id, "team": k.team, "admin": k.admin, "clearance": k.clearance,
        "default_classification": k.default_classification, "opt_ins": k.opt_ins,
        "source": "config", "read_only": true,
    })
}

fn classification_or(c: Option<Classification>, or: Classification) -> Classification {
    c.unwrap_or(or)
}

fn check_opt_ins(opt_ins: &[String]) -> Result<(), ApiError> {
    if opt_ins.len() > 64 || opt_ins.iter().any(|o| o.is_empty() || o.len() > 128) {
        return Err(ApiError::invalid_parameter(
            "opt_ins",
            "`opt_ins` holds at most 64 labels of 1-128 characters.",
        ));
    }
    Ok(())
}

fn check_labels(labels: &Map<String, Value>) -> Result<(), ApiError> {
    if labels.len() > 64 || Value::Object(labels.clone()).to_string().len() > 8192 {
        return Err(ApiError::invalid_parameter(
            "labels",
            "`labels` holds at most 64 entries and 8 KiB.",
        ));
    }
    Ok(())
}

/// `POST /v1/admin/keys`: 201 with the record and its secret, once, as `"key"`.
pub async fn create(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Body(new): Body<NewKey>,
) -> Result<Response, ApiError> {
    check_name("id", &new.id)?;
    check_name("team", &new.team)?;
    check_labels(&new.labels)?;
    check_opt_ins(&new.opt_ins)?;
    let store = admin.store()?;
    if admin.directory.file_key(&new.id).is_some() {
        return Err(ApiError::conflict(format!(
            "Key id `{}` is defined in the configuration file.",
            new.id
        )));
    }
    let now = now_ms();
    let expires_ms = new
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    if expires_ms.is_some_and(|e| e <= now) {
        return Err(ApiError::invalid_parameter(
            "expires_at",
            "`expires_at` is in the past.",
        ));
    }
    let (secret, digest) = match &new.key_sha256 {
        Some(d) => {
            if crate::support::hashing::decode_hex32(d).is_none() {
                return Err(ApiError::invalid_parameter(
                    "key_sha256",
                    "`key_sha256` must be 64 hex characters.",
                ));
            }
            (None, d.to_ascii_lowercase())
        }
        None => {
            let secret = generate_key().map_err(|_| ApiError::internal("random generator"))?;
            let digest = hex(&sha256(secret.as_bytes()));
            (Some(secret), digest)
        }
    };
    let row = KeyRow {
        id: new.id,
        digest,
        team: new.team,
        owner: new.owner,
        labels: new.labels,
        admin: new.admin,
        clearance: classification_or(new.clearance, Classification::Restricted),
        default_classification: classification_or(
            new.default_classification,
            Classification::Internal,
        ),
        opt_ins: new.opt_ins,
        created_ms: now,
        updated_ms: now,
        expires_ms,
        revoked_ms: None,
        previous_digest: None,
        previous_until_ms: None,
    };
    store.create_key(&row, &actor).await.map_err(change_error)?;
    admin.refresh().await;
    let mut body = render(&row);
    if let Some(secret) = secret {
        body["key"] = Value::String(secret);
    }
    Ok(json(StatusCode::CREATED, &body))
}

/// `GET /v1/admin/keys?team=&revoked=&after=&limit=`: the file's keys (first page only), then
/// the stored ones in id order.
pub async fn list(
    State(admin): State<Admin>,
    _admin: AdminCaller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(q.limit)?;
    let after = q.after.unwrap_or_default();
    let mut data: Vec<Value> = Vec::new();
    if after.is_empty() {
        data.extend(
            admin
                .directory
                .file_keys()
                .iter()
                .filter(|k| q.team.as_deref().is_none_or(|t| t == k.team))
                .map(render_file),
        );
    }
    let mut has_more = false;
    let mut last = None;
    if let Some(store) = &admin.pipeline.store {
        let mut rows = store
            .keys(
                q.team.as_deref(),
                q.revoked.unwrap_or(false),
                &after,
                limit + 1,
            )
            .await
            .map_err(|e| store_unavailable(&e))?;
        has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        last = rows.last().map(|k| k.id.clone());
        data.extend(rows.iter().map(render));
    }
    Ok(json(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "has_more": has_more, "last_id": last}),
    ))
}

async fn stored(admin: &Admin, id: &str) -> Result<KeyRow, ApiError> {
    check_name("id", id)?;
    if admin.directory.file_key(id).is_some() {
        return Err(ApiError::conflict(format!(
            "Key `{id}` is defined in the configuration file; change it there."
        )));
    }
    admin
        .store()?
        .key(id)
        .await
        .map_err(|e| store_unavailable(&e))?
        .ok_or_else(|| ApiError::not_found_message(format!("No key has id `{id}`.")))
}

/// `GET /v1/admin/keys/{id}`.
pub async fn get(
    State(admin): State<Admin>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_name("id", &id)?;
    if let Some(k) = admin.directory.file_key(&id) {
        return Ok(json(StatusCode::OK, &render_file(k)));
    }
    Ok(json(StatusCode::OK, &render(&stored(&admin, &id).await?)))
}

/// `PATCH /v1/admin/keys/{id}`: team, owner, labels, admin, expiry, classifications, opt-ins.
pub async fn update(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path(id): Path<String>,
    Body(patch): Body<KeyPatch>,
) -> Result<Response, ApiError> {
    let mut row = stored(&admin, &id).await?;
    if row.revoked_ms.is_some() {
        return Err(ApiError::conflict(format!("Key `{id}` is revoked.")));
    }
    let mut changed = Map::new();
    if let Some(team) = patch.team {
        check_name("team", &team)?;
        changed.insert("team".into(), Value::String(team.clone()));
        row.team = team;
    }
    if let Some(owner) = patch.owner {
        changed.insert("owner".into(), Value::String(owner.clone()));
        row.owner = Some(owner);
    }
    if let Some(labels) = patch.labels {
        check_labels(&labels)?;
        changed.insert("labels".into(), Value::Object(labels.clone()));
        row.labels = labels;
    }
    if let Some(a) = patch.admin {
        changed.insert("admin".into(), Value::Bool(a));
        row.admin = a;
    }
    match patch.expires_at {
        None => {}
        Some(Value::Null) => {
            changed.insert("expires_at".into(), Value::Null);
            row.expires_ms = None;
        }
        Some(Value::String(t)) => {
            row.expires_ms = Some(parse_time("expires_at", &t)?);
            changed.insert("expires_at".into(), Value::String(t));
        }
        Some(_) => {
            return Err(ApiError::invalid_parameter(
                "expires_at",
                "`expires_at` must be an RFC 3339 time or null.",
            ));
        }
    }
    if let Some(c) = patch.clearance {
        changed.insert("clearance".into(), json!(c));
        row.clearance = c;
    }
    if let Some(c) = patch.default_classification {
        changed.insert("default_classification".into(), json!(c));
        row.default_classification = c;
    }
    if let Some(o) = patch.opt_ins {
        check_opt_ins(&o)?;
        changed.insert("opt_ins".into(), json!(o));
        row.opt_ins = o;
    }
    row.updated_ms = now_ms();
    admin
        .store()?
        .update_key(&row, &actor, "key.update", Value::Object(changed))
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(StatusCode::OK, &render(&row)))
}

/// `POST /v1/admin/keys/{id}/rotate` `{"grace_seconds": N}`: a new secret, returned once; the
/// old one keeps working for the grace (default an hour, at most 30 days).
pub async fn rotate(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rotate: Rotate = if body.iter().all(u8::is_ascii_whitespace) {
        Rotate::default()
    } else {
        parse(&body)?
    };
    let grace = rotate.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::invalid_parameter(
            "grace_seconds",
            format!("`grace_seconds` must be between 0 and {MAX_GRACE_SECONDS}."),
        ));
    }
    let mut row = stored(&admin, &id).await?;
    if row.revoked_ms.is_some() {
        return Err(ApiError::conflict(format!("Key `{id}` is revoked.")));
    }
    let secret = generate_key().map_err(|_| ApiError::internal("random generator"))?;
    let now = now_ms();
    row.previous_digest = Some(std::mem::replace(
        &mut row.digest,
        hex(&sha256(secret.as_bytes())),
    ));
    row.previous_until_ms = Some(now + grace * 1000);
    row.updated_ms = now;
    admin
        .store()?
        .update_key(&row, &actor, "key.rotate", json!({"grace_seconds": grace}))
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    let mut body = render(&row);
    body["key"] = Value::String(secret);
    Ok(json(StatusCode::OK, &body))
}

/// `DELETE /v1/admin/keys/{id}`: revoked at once, on every replica within a second; the id
/// stays taken.
pub async fn revoke(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut row = stored(&admin, &id).await?;
    if row.revoked_ms.is_some() {
        return Ok(json(StatusCode::OK, &render(&row)));
    }
    let now = now_ms();
    row.revoked_ms = Some(now);
    row.updated_ms = now;
    admin
        .store()?
        .update_key(&row, &actor, "key.revoke", Value::Null)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(StatusCode::OK, &render(&row)))
}
