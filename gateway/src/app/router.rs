//! The routes and the middleware stack, read top to bottom.

use axum::Router;
use std::convert::Infallible;

use crate::surface::admin;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderName, Request, Uri, header};
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use super::authenticate::Authenticate;
use super::gate::GateLayer;
use super::request_id::{self, FreshIds};
use super::{AppState, browsers, load, ops};
use crate::surface::{account, anthropic, openai, responses};
use crate::wire::error::ApiError;

/// The whole application: the routes inside the edge's layers. The edge wraps the router once,
/// not each route (a layer on the router is cloned into every route and every request).
pub fn app(
    state: AppState,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let limit = state.max_body_bytes;
    let cors = (!state.cors_origins.is_empty()).then(|| browsers::cors(&state.cors_origins));
    ServiceBuilder::new()
        .map_response(|r: http::Response<_>| r.map(Body::new))
        // Marked before anything can log them.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ]))
        .map_request(request_id::keep_usable as fn(Request<Body>) -> Request<Body>)
        .layer(SetRequestIdLayer::new(
            HeaderName::from_static(request_id::HEADER),
            FreshIds,
        ))
        // The request's span: every line it logs carries its id. Failures are logged where
        // they happen, once, with their cause; the completion record says how it ended.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(span as fn(&Request<Body>) -> tracing::Span)
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            request_id::HEADER,
        )))
        // Shed load first: an overloaded gateway answers 503 before doing anything else.
        .layer(GateLayer(load::Shed(state.load.clone())))
        // Preflights are answered here, before any key is asked for.
        .option_layer(cors)
        .layer(GateLayer(browsers::Guard(state.clone())))
        // A body must keep arriving; handlers see a stall as a rejected body (408).
        .layer(RequestBodyTimeoutLayer::new(state.body_timeout))
        // One body limit for every route; handlers see a 413 as a rejected body.
        .layer(DefaultBodyLimit::max(limit))
        .service(router(state))
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let public = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        // Prometheus scrapes without a key; labels carry key ids and team names, never secrets.
        .route("/metrics", get(ops::metrics))
        // Anthropic clients probe the base URL before their first request.
        .route("/anthropic", get(ops::healthz).head(ops::healthz))
        .route("/anthropic/", get(ops::healthz).head(ops::healthz));

    // Everything added from here on requires a virtual key.
    let deepseek = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route(
            "/beta/chat/completions",
            post(openai::beta_chat_completions),
        )
        .route("/beta/completions", post(openai::fim_completions))
        .route("/v1/responses", post(responses::responses))
        .route("/responses", post(responses::responses))
        .route("/v1/models", get(ops::models))
        .route("/models", get(ops::models))
        .route("/user/balance", get(account::balance))
        .route("/v1/usage", get(account::usage))
        .route("/v1/admin/usage", get(account::admin_usage))
        .route("/v1/admin/deployments", get(account::deployments))
        .route(
            "/v1/admin/keys",
            post(admin::keys::create).get(admin::keys::list),
        )
        .route(
            "/v1/admin/keys/{id}",
            get(admin::keys::get)
                .patch(admin::keys::update)
                .delete(admin::keys::revoke),
        )
        .route("/v1/admin/keys/{id}/rotate", post(admin::keys::rotate))
        .route(
            "/v1/admin/teams",
            post(admin::teams::create).get(admin::teams::list),
        )
        .route(
            "/v1/admin/teams/{name}",
            get(admin::teams::get)
                .patch(admin::teams::update)
                .delete(admin::teams::delete),
        )
        .route(
            "/v1/admin/budgets",
            post(admin::budgets::create).get(admin::budgets::list),
        )
        .route(
            "/v1/admin/budgets/{scope}/{name}/{period}",
            axum::routing::patch(admin::budgets::update).delete(admin::budgets::delete),
        )
        .route(
            "/v1/admin/limits",
            post(admin::limits::create).get(admin::limits::list),
        )
        .route(
            "/v1/admin/limits/{scope}/{name}",
            axum::routing::put(admin::limits::replace).delete(admin::limits::delete),
        )
        .route("/v1/admin/spend", get(admin::spend::spend))
        .route("/v1/admin/audit", get(admin::audit))
        .route_layer(GateLayer(Authenticate::deepseek(state.clone())));
    // Anthropic's Messages API: the same keys (`x-api-key` or Bearer), its own error shape.
    let anthropic = Router::new()
        .route("/anthropic/v1/messages", post(anthropic::messages))
        .route(
            "/anthropic/v1/messages/count_tokens",
            post(anthropic::count_tokens),
        )
        .route_layer(GateLayer(Authenticate::anthropic(state.clone())));

    public
        .merge(deepseek)
        .merge(anthropic)
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// The span of one request: its id (never a header; the completion record says the rest).
fn span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", id)
}
