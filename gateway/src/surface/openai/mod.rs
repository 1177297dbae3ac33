//! DeepSeek's own API, which the OpenAI SDKs speak: `POST /chat/completions` (and `/v1/...`),
//! `/beta/chat/completions` (prefix completion, strict tools) and `/beta/completions` (FIM).
//! Each parses its body ([`request`], [`fim`]), runs the pipeline, and renders the answer in
//! DeepSeek's shape, streaming or not ([`render`]).

pub mod fields;
pub mod fim;
pub mod render;
pub mod request;
pub mod strict_schema;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::pipeline::Pipeline;
use crate::pipeline::context::Caller;
use crate::pipeline::respond::Answer;
use crate::providers::call::Endpoint;

pub async fn chat_completions(
    State(pipeline): State<Arc<Pipeline>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(&pipeline, caller, body, Endpoint::Chat).await
}

pub async fn beta_chat_completions(
    State(pipeline): State<Arc<Pipeline>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(&pipeline, caller, body, Endpoint::BetaChat).await
}

pub async fn fim_completions(
    State(pipeline): State<Arc<Pipeline>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(&pipeline, caller, body, Endpoint::Fim).await
}

async fn serve(
    pipeline: &Pipeline,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let request = super::body(body).and_then(|body| request::parse(body, endpoint));
    let include_usage = request.as_ref().is_ok_and(|r| r.include_usage);
    let mut notices = super::Notices::of(&request);
    let handled = pipeline.run(&caller, request).await;
    notices.served(&handled);
    let response = match handled.answer {
        Err(error) => error.into_response(),
        Ok(Answer::Whole(whole)) => {
            let mut response = super::json_response(render::whole(&whole));
            for (name, value) in whole.priced.iter().flat_map(|p| p.headers()) {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Ok(Answer::Stream(streaming)) => {
            let model_json = streaming.model.name_json.clone();
            super::sse_response(super::frames(streaming.events(), move |e, out| {
                render::event(e, &model_json, include_usage, out)
            }))
        }
    };
    super::finish(response, &caller, &handled.rate_headers, &notices)
}
