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

pub async fn readyz(State(pipeline): State<Arc<Pipeline>>) -> Response {
    if pipeline.is_draining() {
        let mut r = json_response(br#"{"status":"draining"}"#.to_vec());
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else {
        json_response(br#"{"status":"ready"}"#.to_vec())
    }
}

/// The text exposition, with health and budget gauges read now (never stale).
pub async fn metrics(State(pipeline): State<Arc<Pipeline>>) -> Response {
    let metrics = &pipeline.metrics;
    for m in pipeline.catalog.models() {
        for d in &m.deployments {
            let labels = [m.name.as_str(), &d.provider.name, &d.upstream_model];
            metrics.deployment_health(labels, &d.health.reading());
        }
    }
    match budgets::all_current(&pipeline.budgets, &pipeline.ledger, now()).await {
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
