//! Anthropic's Messages API at `/anthropic/v1/messages` (so `ANTHROPIC_BASE_URL=http://host/anthropic`
//! works for Claude Code and the Anthropic SDKs). A request is translated into a chat request
//! ([`request`]) and goes through the one pipeline like any other (keys, policies, budgets,
//! limits, routing, accounting, every upstream kind and the local engine); the pipeline's typed
//! answer is rendered as a message ([`response`]) or as Anthropic's stream events ([`stream`]),
//! and its errors in Anthropic's shape.

pub mod request;
pub mod response;
pub mod stream;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use bytes::Bytes;

use crate::pipeline::Pipeline;
use crate::pipeline::context::Caller;
use crate::pipeline::respond::Answer;
use crate::providers::call::Endpoint;
use crate::wire::error::ApiError;

/// What the Anthropic surface needs besides the pipeline.
#[derive(Debug)]
pub struct Settings {
    /// Where requests naming a model that is not served here go.
    pub default_model: String,
}

/// `POST /anthropic/v1/messages`.
pub async fn messages(
    State(pipeline): State<Arc<Pipeline>>,
    State(settings): State<Arc<Settings>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let translated = super::body(body).and_then(|body| {
        request::to_chat(
            &body,
            |m| pipeline.catalog.get(m).map(|m| &**m),
            &settings.default_model,
        )
    });
    let (request, model) = match translated {
        Ok(t) => (
            super::openai::request::parse(t.chat_body.into(), Endpoint::Chat),
            t.model,
        ),
        Err(e) => (Err(e), String::new()),
    };
    let mut notices = super::Notices::of(&request);
    let handled = pipeline.run(&caller, request).await;
    notices.served(&handled);
    let response = match handled.answer {
        Err(error) => response::error_response(error),
        Ok(Answer::Whole(whole)) => super::json_response(
            response::message(&whole.reply, &model)
                .to_string()
                .into_bytes(),
        ),
        Ok(Answer::Stream(streaming)) => {
            // The pipeline's stream ends with Done or Failed, which close the message.
            let mut translator = stream::StreamTranslator::new(&model);
            super::sse_response(super::frames(streaming.events(), move |e, out| {
                translator.push_into(e, out)
            }))
        }
    };
    super::finish(response, &caller, &handled.rate_headers, &notices)
}

/// `POST /anthropic/v1/messages/count_tokens`: the prompt's tokens as DeepSeek-V3.2's tokenizer
/// and chat encoding count them (Claude Code asks before long requests). No provider is called
/// and nothing is billed.
pub async fn count_tokens(
    State(pipeline): State<Arc<Pipeline>>,
    State(settings): State<Arc<Settings>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match count(&pipeline, &settings, body) {
        Ok(tokens) => super::json_response(
            serde_json::json!({"input_tokens": tokens})
                .to_string()
                .into_bytes(),
        ),
        Err(e) => response::error_response(e),
    }
}

fn count(
    pipeline: &Pipeline,
    settings: &Settings,
    body: Result<Bytes, BytesRejection>,
) -> Result<u64, ApiError> {
    let body = super::body(body)?;
    // count_tokens takes a Messages body without max_tokens.
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    if value.get("max_tokens").is_none() && value.is_object() {
        value["max_tokens"] = 1.into();
    }
    let translated = request::to_chat(
        value.to_string().as_bytes(),
        |m| pipeline.catalog.get(m).map(|m| &**m),
        &settings.default_model,
    )?;
    let thinking = value["thinking"]["type"] == "enabled";
    Ok(crate::accounting::estimate::prompt_tokens(
        &translated.chat_body,
        thinking,
    ))
}
