//! Anthropic's Messages API at `/anthropic/v1/messages` (so `ANTHROPIC_BASE_URL=http://host/anthropic`
//! works for Claude Code and the Anthropic SDKs). A request is translated into a chat request and
//! goes through the same path as any other (keys, policies, budgets, limits, routing, accounting,
//! every upstream kind and the local engine); the answer is translated back, streamed or not.

pub mod request;
pub mod response;
pub mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderValue, header};
use http_body_util::BodyExt;

use crate::auth::Principal;
use crate::chat;
use crate::state::AppState;

/// `POST /anthropic/v1/messages`.
pub async fn messages(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let principal = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .expect("the auth layer inserts a principal");
    let body = match crate::server::read_body(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let translated = match request::to_chat(
        &body,
        |m| state.catalog.get(m).is_some(),
        &state.anthropic_default_model,
    ) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let answer = chat::complete(
        &state,
        principal,
        &parts.headers,
        translated.chat_body.into(),
        crate::request::Surface::Chat,
    )
    .await;
    if !answer.status().is_success() {
        // The error layer turns the envelope into Anthropic's.
        return answer;
    }
    let (mut head, body) = answer.into_parts();
    head.headers.remove(header::CONTENT_LENGTH);
    if translated.stream {
        let mut translator = stream::StreamTranslator::new(&translated.model);
        let mut upstream = body.into_data_stream();
        let events = async_stream(move |tx| async move {
            while let Some(chunk) = upstream.next().await {
                let Ok(chunk) = chunk else { break };
                let out = translator.push(&chunk);
                if !out.is_empty() && tx.send(out).await.is_err() {
                    return;
                }
            }
            let out = translator.end();
            if !out.is_empty() {
                let _ = tx.send(out).await;
            }
        });
        Response::from_parts(head, Body::from_stream(events))
    } else {
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => return crate::error::ApiError::bad_request("answer lost").into_response(),
        };
        let chat: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = response::message(&chat, &translated.model);
        Response::from_parts(head, Body::from(message.to_string()))
    }
}

/// `POST /anthropic/v1/messages/count_tokens`: the prompt's tokens as DeepSeek-V3.2's tokenizer
/// and chat encoding count them (Claude Code asks before long requests). No provider is called
/// and nothing is billed.
pub async fn count_tokens(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let body = match crate::server::read_body(request.into_body(), state.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // count_tokens takes a Messages body without max_tokens.
    let mut value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return crate::error::ApiError::bad_request(format!("Invalid JSON body: {e}"))
                .into_response();
        }
    };
    if value.get("max_tokens").is_none() && value.is_object() {
        value["max_tokens"] = 1.into();
    }
    let translated = match request::to_chat(
        value.to_string().as_bytes(),
        |m| state.catalog.get(m).is_some(),
        &state.anthropic_default_model,
    ) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let thinking = value["thinking"]["type"] == "enabled";
    let tokens = crate::estimate::prompt_tokens(&translated.chat_body, thinking);
    crate::chat::json_response(
        serde_json::json!({"input_tokens": tokens})
            .to_string()
            .into_bytes(),
    )
}

/// A body stream fed by a task through a small channel: the task reads the chat stream (and
/// drives its settlement) while the client reads the translation.
fn async_stream<F, Fut>(
    producer: F,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<bytes::Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// Middleware: every error of the Anthropic routes (bad key, limits, policies, upstream
/// failures, bad requests) in Anthropic's shape, with its status.
pub async fn anthropic_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() {
        return response;
    }
    let (mut head, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let converted = response::error(status.as_u16(), &bytes);
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(head, Body::from(converted.to_string()))
}
