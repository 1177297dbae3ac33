//! OpenAI's Responses API (`POST /v1/responses`, `/responses`), stateless, as Codex CLI and the
//! OpenAI SDKs speak it. A request is translated into a chat request ([`request`]) and goes
//! through the one pipeline like any other; the typed answer is rendered as a response object
//! ([`render`]) or as the Responses stream events ([`stream`]). Errors keep OpenAI's envelope
//! (`{"error": {"message", "type", "param", "code"}}`, which DeepSeek's is).

pub mod render;
pub mod request;
pub mod stream;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::pipeline::Pipeline;
use crate::pipeline::context::Caller;
use crate::pipeline::respond::Answer;
use crate::providers::call::Endpoint;

/// `POST /v1/responses`.
pub async fn responses(
    State(pipeline): State<Arc<Pipeline>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let translated = super::body(body).and_then(|body| {
        let encrypted = wants_encrypted_reasoning(&body);
        request::to_chat(&body, |m| pipeline.catalog.get(m).map(|m| &**m)).map(|t| (t, encrypted))
    });
    let (request, frame) = match translated {
        Ok((t, encrypted)) => (
            super::openai::request::parse(t.chat_body.into(), Endpoint::Chat),
            Some(render::Frame::new(t.echo, encrypted)),
        ),
        Err(e) => (Err(e), None),
    };
    let mut notices = super::Notices::of(&request);
    if let Some(frame) = &frame
        && !frame.echo.dropped_tools.is_empty()
    {
        let dropped = frame.echo.dropped_tools.join(", ");
        notices.push("x-dsgw-dropped-tools", dropped);
    }
    let handled = pipeline.run(&caller, request).await;
    notices.served(&handled);
    let response = match (handled.answer, frame) {
        (Err(error), _) => error.into_response(),
        (Ok(Answer::Whole(whole)), Some(frame)) => {
            super::json_response(render::whole(&whole, &frame))
        }
        (Ok(Answer::Stream(streaming)), Some(frame)) => {
            let mut translator = stream::StreamTranslator::new(frame);
            super::sse_response(super::frames(streaming.events(), move |e, out| {
                translator.push(e, out)
            }))
        }
        (Ok(_), None) => unreachable!("an answer comes only for a translated request"),
    };
    super::finish(response, &caller, &handled.rate_headers, &notices)
}

/// `include: ["reasoning.encrypted_content"]`.
fn wants_encrypted_reasoning(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Include {
        #[serde(default)]
        include: Vec<String>,
    }
    serde_json::from_slice::<Include>(body)
        .is_ok_and(|i| i.include.iter().any(|x| x == "reasoning.encrypted_content"))
}
