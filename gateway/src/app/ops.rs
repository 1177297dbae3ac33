//! What operators and orchestrators read without a key: liveness, readiness (false while
//! draining), Prometheus metrics; and the model list clients read with one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::accounting::spend::record::now;
use crate::pipeline::Pipeline;
use crate::pipeline::admission::budgets;
use crate::surface::json_response;

pub async fn healthz() -> Response {
    json_response(br#"{"status":"ok"}"#.to_vec())
}

/// Ready unless draining. With a store, `store` says whether it answers: a replica whose store
/// is away still serves (with the last keys, budgets and limits read), so it stays ready.
pub async fn readyz(State(state): State<super::AppState>) -> Response {
    let pipeline = &state.pipeline;
    let mut body = serde_json::json!({
        "status": if pipeline.is_draining() { "draining" } else { "ready" },
    });
    if let Some(store) = &pipeline.store {
        body["store"] = serde_json::json!(if store.is_up() { "ok" } else { "unreachable" });
        body["store_revision"] = serde_json::json!(state.directory.revision());
    }
    let mut r = json_response(serde_json::to_vec(&body).expect("JSON"));
    if pipeline.is_draining() {
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    r
}

/// The text exposition, with health and budget gauges read now (never stale).
pub async fn metrics(State(state): State<super::AppState>) -> Response {
    let pipeline = &state.pipeline;
    let metrics = &pipeline.metrics;
    state.load.export();
    if let Some(store) = &pipeline.store {
        metrics.store(store.is_up(), state.directory.revision());
    }
    for m in pipeline.catalog.models() {
        for d in &m.deployments {
            let labels = [&*m.name, &d.provider.name, d.name.upstream_model()];
            metrics.deployment_health(labels, &d.health.reading());
        }
    }
    match budgets::all_current(&pipeline.budgets(), &pipeline.ledger, now()).await {
        Ok(all) => {
            for (scope, name, period, left) in all {
                metrics.budget(scope, &name, period, left);
            }
        }
        Err(e) => tracing::warn!(target: "dsgw::ledger", error = %e, "budget gauges not refreshed"),
    }
    let mut response = Response::new(Body::from(metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /v1/models` in DeepSeek's shape.
pub async fn models(State(pipeline): State<Arc<Pipeline>>) -> Response {
    json_response(pipeline.catalog.list_json().into_bytes())
}
