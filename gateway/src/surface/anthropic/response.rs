//! Chat answers and errors, translated into Anthropic's Messages shapes.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::accounting::usage::Usage;
use crate::providers::reply::Reply;
use crate::wire::error::ApiError;

/// Anthropic's `stop_reason` for a chat `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` excludes cache reads.
pub fn usage(usage: Option<&Usage>) -> Value {
    let u = usage.copied().unwrap_or_default();
    json!({
        "input_tokens": u.cache_miss,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cache_hit,
        "output_tokens": u.output,
    })
}

/// `msg_...` from a chat completion's id.
pub fn message_id(reply: &Reply) -> String {
    let id = reply
        .get("id")
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .unwrap_or_default();
    format!("msg_{}", id.trim_start_matches("chatcmpl-"))
}

/// A whole chat completion as a Messages response.
pub fn message(reply: &Reply, model: &str) -> Value {
    let choice = reply.first_choice();
    let mut content = Vec::new();
    if let Some(m) = choice.body() {
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
        }
        if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
        for call in &m.tool_calls {
            let args = call.function.arguments.as_deref().unwrap_or("{}");
            content.push(json!({
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({})),
            }));
        }
    }
    json!({
        "id": message_id(reply),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": usage(reply.usage().map(|u| &u.usage)),
    })
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 402 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error as Anthropic's error body.
pub fn error(error: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(error.status.as_u16()), "message": error.body.message}})
}

/// An error as Anthropic's error response, with its status (and `Retry-After`).
pub fn error_response(e: ApiError) -> Response {
    let body = error(&e).to_string();
    let mut response = e.into_response();
    response.headers_mut().remove(http::header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(chat: &Value) -> Reply {
        crate::providers::remote::dialect::normalize(
            crate::wire::raw_object::RawObject::parse(&chat.to_string()).unwrap(),
            crate::providers::remote::dialect::Inner::Message,
        )
    }

    #[test]
    fn a_completion_with_reasoning_and_a_tool_call() {
        let chat = json!({
            "id": "abc", "object": "chat.completion", "model": "deepseek-reasoner",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "", "reasoning_content": "Think.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}}]
            }}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}
        });
        let m = message(&reply(&chat), "claude-x");
        assert_eq!(m["id"], "msg_abc");
        assert_eq!(m["model"], "claude-x");
        assert_eq!(m["content"][0]["type"], "thinking");
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}})
        );
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 36, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64, "output_tokens": 20})
        );
    }

    #[test]
    fn errors_take_anthropics_shape() {
        let e = error(&ApiError::rate_limited("Rate Limit Reached"));
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate Limit Reached"}})
        );
        assert_eq!(error_type(401), "authentication_error");
    }
}
