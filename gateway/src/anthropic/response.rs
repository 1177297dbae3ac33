//! Chat answers and errors, translated into Anthropic's Messages shapes.

use serde_json::{Value, json};

/// Anthropic's `stop_reason` for a chat `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage from a chat usage object: `input_tokens` excludes cache reads.
pub fn usage(chat: &Value) -> Value {
    let prompt = chat["prompt_tokens"].as_u64().unwrap_or(0);
    let hit = chat["prompt_cache_hit_tokens"]
        .as_u64()
        .or_else(|| chat["prompt_tokens_details"]["cached_tokens"].as_u64())
        .unwrap_or(0);
    json!({
        "input_tokens": prompt.saturating_sub(hit),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": hit,
        "output_tokens": chat["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// `msg_...` from a chat completion id.
pub fn message_id(chat_id: &str) -> String {
    format!("msg_{}", chat_id.trim_start_matches("chatcmpl-"))
}

/// A whole chat completion as a Messages response.
pub fn message(chat: &Value, model: &str) -> Value {
    let choice = &chat["choices"][0];
    let m = &choice["message"];
    let mut content = Vec::new();
    if let Some(r) = m["reasoning_content"].as_str().filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in m["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({})),
        }));
    }
    json!({
        "id": message_id(chat["id"].as_str().unwrap_or("")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": usage(&chat["usage"]),
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

/// A DeepSeek error envelope (`{"error": {"message": ...}}`) as Anthropic's error body.
pub fn error(status: u16, envelope: &[u8]) -> Value {
    let message = serde_json::from_slice::<Value>(envelope)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(envelope).into_owned());
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let m = message(&chat, "claude-x");
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
        let e = error(
            429,
            br#"{"error":{"message":"Rate Limit Reached","type":"rate_limit_error"}}"#,
        );
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate Limit Reached"}})
        );
        assert_eq!(error_type(401), "authentication_error");
    }
}
