//! The HTTP front: routes, the middleware stack, and graceful shutdown with a bounded drain.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use http::{HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::net::TcpListener;

use crate::account;
use crate::auth::{Principal, bearer_token};
use crate::chat;
use crate::error::ApiError;
use crate::request::Surface;
use crate::state::AppState;

/// The whole stack, read top to bottom.
pub fn router(state: Arc<AppState>) -> Router {
    let public = Router::new()
        .route("/healthz", get(|| async { json_ok(r#"{"status":"ok"}"#) }))
        .route("/readyz", get(readyz))
        // Prometheus scrapes without a key; labels carry key ids and team names, never secrets.
        .route("/metrics", get(metrics));

    // Everything below requires a virtual key.
    let authenticated = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/beta/chat/completions", post(beta_chat_completions))
        .route("/beta/completions", post(fim_completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/user/balance", get(account::balance))
        .route("/v1/usage", get(account::usage))
        .route("/v1/admin/usage", get(account::admin_usage))
        .route("/v1/admin/deployments", get(account::deployments))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));

    // Anthropic's Messages API: the same keys (`x-api-key` or Bearer), its own error shape.
    let anthropic = Router::new()
        .route("/anthropic/v1/messages", post(crate::anthropic::messages))
        .route(
            "/anthropic/v1/messages/count_tokens",
            post(crate::anthropic::count_tokens),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn(crate::anthropic::anthropic_errors));

    public
        .merge(authenticated)
        .merge(anthropic)
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

fn json_ok(body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        let mut r = json_ok(r#"{"status":"draining"}"#);
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else {
        json_ok(r#"{"status":"ready"}"#)
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    for m in state.catalog.models() {
        for d in &m.deployments {
            state.metrics.deployment_health(
                &m.name,
                &d.provider.name,
                &d.upstream_model,
                &d.health,
            );
        }
    }
    // Budgets are read from the ledger (or the shared counters) at scrape time: never stale.
    match crate::budgets::all_current(&state.budgets, &state.ledger, crate::budgets::now()).await {
        Ok(all) => {
            for (scope, name, period, left) in all {
                state.metrics.budget(scope, &name, period, left);
            }
        }
        Err(e) => tracing::warn!(target: "dsgw::ledger", error = %e, "budget gauges not refreshed"),
    }
    let mut response = Response::new(Body::from(state.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match state.keys.authenticate(presented) {
        Some(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let mut response = Response::new(Body::from(state.catalog.list_json()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn chat_completions(state: State<Arc<AppState>>, request: Request) -> Response {
    serve_surface(state, request, Surface::Chat).await
}

async fn beta_chat_completions(state: State<Arc<AppState>>, request: Request) -> Response {
    serve_surface(state, request, Surface::BetaChat).await
}

async fn fim_completions(state: State<Arc<AppState>>, request: Request) -> Response {
    serve_surface(state, request, Surface::Fim).await
}

async fn serve_surface(
    State(state): State<Arc<AppState>>,
    request: Request,
    surface: Surface,
) -> Response {
    let (parts, body) = request.into_parts();
    let principal = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .expect("the auth layer inserts a principal");
    if state.is_draining() {
        return ApiError::unavailable("The gateway is shutting down; retry on another replica.")
            .into_response();
    }
    let body = match read_body(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    chat::complete(&state, principal, &parts.headers, body, surface).await
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(_) => Err(ApiError::bad_request("Failed to read the request body.")),
    }
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests and streams
/// finish, and exits when they are done or when `drain` has passed, whichever is first.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    drain: Duration,
) -> std::io::Result<()> {
    // Disable Nagle: SSE frames are small and must leave at once (a naive server stalls 40 ms on
    // delayed ACKs between streams on one keep-alive connection).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(reload_on_sighup(state.clone()));
    let app = router(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!(
            drain_secs = drain.as_secs(),
            "shutting down: draining in-flight requests"
        );
        state.start_draining();
        let _ = signalled_tx.send(true);
    });
    let deadline = async move {
        let _ = signalled_rx.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("drain deadline passed with requests still open; exiting");
            Ok(())
        }
    }
}

/// SIGHUP re-reads the policy directory and swaps the policies in whole; a policy set that
/// fails to load or validate is refused and the one in force stays.
async fn reload_on_sighup(state: Arc<AppState>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        match state.reload_policy() {
            Ok(()) => tracing::info!("policies reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "policy reload refused; the previous policies stay")
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
