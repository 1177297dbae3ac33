//! Usage the gateway counts itself when a provider never reported it (a stream the client
//! abandoned or the provider cut): the prompt through DeepSeek-V3.2's own chat encoding and
//! tokenizer, the output as the content chunks that were streamed. Such records are marked
//! estimated and count every prompt token as a cache miss (the dearer, safer side).

use std::sync::OnceLock;

use dsgw_engine::chat::{self, Conversation, Message, Role};
use dsgw_engine::tokenizer::Tokenizer;
use serde_json::Value;

use crate::accounting::usage::Usage;

fn tokenizer() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| match Tokenizer::deepseek_v32() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot load the tokenizer for usage estimates");
                None
            }
        })
        .as_ref()
}

fn text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Prompt tokens of a chat request body, as V3.2 would see them.
pub fn prompt_tokens(body: &[u8], thinking: bool) -> u64 {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    if let Some(prompt) = request["prompt"].as_str() {
        // Fill in the middle: the prompt and the suffix, around the model's FIM markers.
        let text = format!("{prompt}{}", request["suffix"].as_str().unwrap_or(""));
        return tokenizer()
            .and_then(|t| t.encode(&text).ok())
            .map_or(0, |ids| ids.len() as u64 + 4);
    }
    let messages = request["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let role = match m["role"].as_str() {
                        Some("system") => Role::System,
                        Some("assistant") => Role::Assistant,
                        Some("tool") => Role::Tool,
                        _ => Role::User,
                    };
                    Message::new(role, text(&m["content"]))
                })
                .collect()
        })
        .unwrap_or_default();
    let tools = request["tools"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.get("function").cloned())
                .collect()
        })
        .unwrap_or_default();
    let conversation = Conversation {
        messages,
        tools,
        response_format: None,
        thinking,
    };
    // Tool results without their calls cannot be encoded; count the raw text then.
    let prompt =
        chat::encode(&conversation).unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    tokenizer()
        .and_then(|t| t.encode(&prompt).ok())
        .map_or(body.len() as u64 / 4, |ids| ids.len() as u64)
}

/// An estimated usage record.
pub fn usage(prompt: u64, output_chunks: u64) -> Usage {
    Usage {
        cache_hit: 0,
        cache_miss: prompt,
        output: output_chunks,
        reasoning: 0,
        estimated: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_estimate_uses_the_v32_encoding() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"Hello there"}]}"#;
        // BOS, <|User|>, "Hello", " there", <|Assistant|>, </think>
        assert_eq!(prompt_tokens(body, false), 6);
        assert_eq!(
            usage(6, 3),
            Usage {
                cache_hit: 0,
                cache_miss: 6,
                output: 3,
                reasoning: 0,
                estimated: true
            }
        );
    }
}
