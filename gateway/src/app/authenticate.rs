//! Authentication at the edge: the virtual key (`Authorization: Bearer`, or Anthropic's
//! `x-api-key`) becomes the request's principal, or the request ends here with a 401 in the
//! surface's own error shape.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;

use super::AppState;
use crate::pipeline::admission::keys::bearer_token;
use crate::surface::anthropic::response::error_response;
use crate::wire::error::ApiError;

/// For the DeepSeek / OpenAI routes: DeepSeek's error envelope.
pub async fn deepseek(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match admit(&state, request) {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// For the Anthropic routes: Anthropic's error shape.
pub async fn anthropic(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match admit(&state, request) {
        Ok(request) => next.run(request).await,
        Err(e) => error_response(e),
    }
}

fn admit(state: &AppState, mut request: Request) -> Result<Request, ApiError> {
    let headers = request.headers();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let principal = state
        .keys
        .current()
        .authenticate(presented, crate::store::now_ms())
        .ok_or_else(ApiError::unauthorized)?;
    request.extensions_mut().insert(principal);
    Ok(request)
}
