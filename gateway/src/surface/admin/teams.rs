//! `/v1/admin/teams`: a team's labels (create, list, get, update, delete). Keys name their
//! team; a team with active stored keys cannot be deleted.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Admin, AdminCaller, Body, change_error, check_name, json, store_unavailable, time};
use crate::store::directory::TeamRow;
use crate::store::now_ms;
use crate::wire::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    name: String,
    #[serde(default)]
    labels: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamPatch {
    labels: Map<String, Value>,
}

fn render(t: &TeamRow) -> Value {
    json!({"object": "team", "name": t.name, "labels": t.labels, "created_at": time(t.created_ms),
        "updated_at": time(t.updated_ms), "source": "store"})
}

/// `POST /v1/admin/teams`.
pub async fn create(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Body(new): Body<NewTeam>,
) -> Result<Response, ApiError> {
    check_name("name", &new.name)?;
    let now = now_ms();
    let row = TeamRow {
        name: new.name,
        labels: new.labels,
        created_ms: now,
        updated_ms: now,
    };
    admin
        .store()?
        .put_team(&row, false, &actor)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(StatusCode::CREATED, &render(&row)))
}

/// `GET /v1/admin/teams`: stored teams, and the teams the file's keys name.
pub async fn list(State(admin): State<Admin>, _admin: AdminCaller) -> Result<Response, ApiError> {
    let mut data = Vec::new();
    let file: BTreeSet<&str> = admin
        .directory
        .file_keys()
        .iter()
        .map(|k| k.team.as_str())
        .collect();
    if let Some(store) = &admin.pipeline.store {
        let snapshot = store.snapshot().await.map_err(|e| store_unavailable(&e))?;
        data.extend(snapshot.teams.iter().map(render));
        data.extend(
            file.iter()
                .filter(|t| !snapshot.teams.iter().any(|s| s.name == **t))
                .map(
                    |t| json!({"object": "team", "name": t, "source": "config", "read_only": true}),
                ),
        );
    } else {
        data.extend(
            file.iter().map(
                |t| json!({"object": "team", "name": t, "source": "config", "read_only": true}),
            ),
        );
    }
    Ok(json(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

/// `GET /v1/admin/teams/{name}`.
pub async fn get(
    State(admin): State<Admin>,
    _admin: AdminCaller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name("name", &name)?;
    let team = admin
        .store()?
        .team(&name)
        .await
        .map_err(|e| store_unavailable(&e))?;
    team.map(|t| json(StatusCode::OK, &render(&t)))
        .ok_or_else(|| ApiError::not_found_message(format!("No stored team is named `{name}`.")))
}

/// `PATCH /v1/admin/teams/{name}` `{"labels": {...}}`.
pub async fn update(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path(name): Path<String>,
    Body(patch): Body<TeamPatch>,
) -> Result<Response, ApiError> {
    check_name("name", &name)?;
    let store = admin.store()?;
    let mut row = store
        .team(&name)
        .await
        .map_err(|e| store_unavailable(&e))?
        .ok_or_else(|| ApiError::not_found_message(format!("No stored team is named `{name}`.")))?;
    row.labels = patch.labels;
    row.updated_ms = now_ms();
    store
        .put_team(&row, true, &actor)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(StatusCode::OK, &render(&row)))
}

/// `DELETE /v1/admin/teams/{name}`.
pub async fn delete(
    State(admin): State<Admin>,
    AdminCaller(actor): AdminCaller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name("name", &name)?;
    admin
        .store()?
        .delete_team(&name, &actor)
        .await
        .map_err(change_error)?;
    admin.refresh().await;
    Ok(json(
        StatusCode::OK,
        &json!({"object": "team", "name": name, "deleted": true}),
    ))
}
