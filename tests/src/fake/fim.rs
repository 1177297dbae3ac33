//! The fake's fill-in-the-middle endpoint.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{FakeState, counter, error, json_response, receive, words};

/// DeepSeek's fill-in-the-middle (`/beta/completions`; vLLM's `/v1/completions` alike): the
/// completion names the last word of the prompt and the first of the suffix.
pub(super) async fn fim(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = receive(&state, &headers, &body) {
        return r;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Failed to parse the request body as JSON",
        );
    };
    let Some(prompt) = request["prompt"].as_str() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "prompt: missing field `prompt`",
        );
    };
    let suffix = request["suffix"].as_str().unwrap_or("");
    let before = words(prompt).pop().unwrap_or_default();
    let after = words(suffix).first().cloned().unwrap_or_default();
    let mut text = vec!["filled".to_owned(), before, "to".to_owned(), after];
    text.retain(|w| !w.is_empty());
    let prompt_tokens = (words(prompt).len() + words(suffix).len()) as u64;
    let usage = json!({
        "prompt_tokens": prompt_tokens, "completion_tokens": text.len(),
        "total_tokens": prompt_tokens + text.len() as u64,
        "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": prompt_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    });
    let model = request["model"]
        .as_str()
        .unwrap_or("deepseek-chat")
        .to_owned();
    let id = format!("fake-cmpl-{:08x}", counter());
    let echo = if request["echo"].as_bool() == Some(true) {
        prompt.to_owned()
    } else {
        String::new()
    };
    if request["stream"].as_bool() != Some(true) {
        let body = json!({
            "id": id, "object": "text_completion", "created": 1766977481, "model": model,
            "choices": [{"index": 0, "text": format!("{echo}{}", text.join(" ")), "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        return json_response(StatusCode::OK, body.to_string());
    }
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let mut frames: Vec<String> = Vec::new();
    let chunk = |t: &str, finish: Option<&str>| {
        let c = json!({"id": id, "object": "text_completion", "created": 1766977481, "model": model,
            "choices": [{"index": 0, "text": t, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    if !echo.is_empty() {
        frames.push(chunk(&echo, None));
    }
    for (i, w) in text.iter().enumerate() {
        let t = if i == 0 { w.clone() } else { format!(" {w}") };
        frames.push(chunk(&t, None));
    }
    frames.push(chunk("", Some("stop")));
    if include_usage {
        let c = json!({"id": id, "object": "text_completion", "created": 1766977481, "model": model, "choices": [], "usage": usage});
        frames.push(format!("data: {c}\n\n"));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(frames.concat()))
        .unwrap()
}
