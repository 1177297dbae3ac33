//! What differs between providers that speak the OpenAI chat API: how the thinking mode is asked
//! for, where reasoning comes back, and extra routing fields. Everything else passes untouched.

use serde_json::{Map, Value};

use crate::config::ProviderKind;
use crate::raw_object::{Edit, RawObject};
use crate::usage::Usage;

/// Sampling fields DeepSeek accepts and ignores in thinking mode; other providers would honour
/// them, so the gateway removes them to behave like DeepSeek everywhere.
const IGNORED_WHEN_THINKING: [&str; 4] = [
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
];

/// Reads a top-level object field from the client's body (absent or not an object: empty).
fn object_field(raw: &RawObject, key: &str) -> Map<String, Value> {
    raw.get(key)
        .and_then(|v| serde_json::from_str::<Map<String, Value>>(v.get()).ok())
        .unwrap_or_default()
}

fn json(value: &Value) -> String {
    value.to_string()
}

/// The edits that turn a client's body into this provider's request.
pub fn request_edits(
    kind: ProviderKind,
    raw: &RawObject,
    upstream_model: &str,
    thinking: bool,
    stream: bool,
    routing: Option<&str>,
) -> Vec<Edit> {
    let mut edits = vec![Edit::Set("model", json(&Value::from(upstream_model)))];
    if stream {
        // Always ask for usage: spend must be counted even when the client did not ask to see it.
        let mut options = object_field(raw, "stream_options");
        options.insert("include_usage".into(), Value::Bool(true));
        edits.push(Edit::Set("stream_options", json(&Value::Object(options))));
    }
    if thinking {
        edits.extend(IGNORED_WHEN_THINKING.map(Edit::Remove));
    }
    match kind {
        ProviderKind::Deepseek | ProviderKind::Local => {
            let mode = if thinking { "enabled" } else { "disabled" };
            edits.push(Edit::Set("thinking", format!(r#"{{"type":"{mode}"}}"#)));
        }
        ProviderKind::Openai => {
            // vLLM and SGLang switch DeepSeek's chat template with `chat_template_kwargs.thinking`.
            let mut kwargs = object_field(raw, "chat_template_kwargs");
            kwargs.insert("thinking".into(), Value::Bool(thinking));
            edits.push(Edit::Set(
                "chat_template_kwargs",
                json(&Value::Object(kwargs)),
            ));
            edits.push(Edit::Remove("thinking"));
        }
        ProviderKind::Openrouter => {
            let mut reasoning = object_field(raw, "reasoning");
            reasoning.insert("enabled".into(), Value::Bool(thinking));
            edits.push(Edit::Set("reasoning", json(&Value::Object(reasoning))));
            edits.push(Edit::Remove("thinking"));
            if let Some(routing) = routing {
                edits.push(Edit::Set("provider", routing.to_owned()));
            }
        }
    }
    edits
}

/// OpenRouter and recent vLLM name the field `reasoning`; DeepSeek clients read `reasoning_content`.
fn rename_reasoning(message: &mut Value) {
    let Some(message) = message.as_object_mut() else {
        return;
    };
    if message.contains_key("reasoning_content") {
        message.remove("reasoning");
    } else if let Some(reasoning) = message.remove("reasoning") {
        message.insert("reasoning_content".into(), reasoning);
    }
}

fn choices_mut(body: &mut Value) -> impl Iterator<Item = &mut Value> {
    body.get_mut("choices")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Normalises a non-streaming completion in place and returns its usage.
pub fn normalize_completion(body: &mut Value, exposed_model: &str) -> Option<Usage> {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::from(exposed_model));
    }
    for choice in choices_mut(body) {
        if let Some(message) = choice.get_mut("message") {
            rename_reasoning(message);
        }
    }
    normalize_usage(body)
}

fn normalize_usage(body: &mut Value) -> Option<Usage> {
    let slot = body.get_mut("usage")?;
    let usage = Usage::from_wire(slot)?;
    if let Value::Object(map) = slot {
        usage.write_wire(map);
    }
    Some(usage)
}

/// What to do with one stream chunk after normalisation.
#[derive(Debug, PartialEq)]
pub enum ChunkFate {
    Forward,
    /// A usage-only chunk the client did not ask for.
    Drop,
}

/// Normalises one stream chunk in place; returns its usage (if it carried any) and its fate.
pub fn normalize_chunk(
    chunk: &mut Value,
    exposed_model: &str,
    client_wants_usage: bool,
) -> (Option<Usage>, ChunkFate) {
    if let Some(obj) = chunk.as_object_mut() {
        obj.insert("model".into(), Value::from(exposed_model));
    }
    for choice in choices_mut(chunk) {
        if let Some(delta) = choice.get_mut("delta") {
            rename_reasoning(delta);
        }
    }
    let usage = normalize_usage(chunk);
    if client_wants_usage {
        return (usage, ChunkFate::Forward);
    }
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty());
    if let Some(obj) = chunk.as_object_mut() {
        obj.remove("usage");
    }
    let fate = if usage.is_some() && no_choices {
        ChunkFate::Drop
    } else {
        ChunkFate::Forward
    };
    (usage, fate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(text: &str) -> RawObject {
        serde_json::from_str(text).unwrap()
    }

    fn rendered(kind: ProviderKind, text: &str, thinking: bool, stream: bool) -> Value {
        let raw = body(text);
        let edits = request_edits(
            kind,
            &raw,
            "up-model",
            thinking,
            stream,
            Some(r#"{"only":["x"]}"#),
        );
        serde_json::from_slice(&raw.render(&edits)).unwrap()
    }

    const REQ: &str = r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}],"temperature":0.3,"stream_options":{"include_usage":false,"x":1},"custom":7}"#;

    #[test]
    fn deepseek_gets_explicit_mode_and_always_usage() {
        let v = rendered(ProviderKind::Deepseek, REQ, false, true);
        assert_eq!(v["model"], "up-model");
        assert_eq!(v["thinking"], json!({"type":"disabled"}));
        assert_eq!(v["stream_options"], json!({"include_usage":true,"x":1}));
        assert_eq!(v["temperature"], 0.3);
        assert_eq!(v["custom"], 7);
    }

    #[test]
    fn thinking_mode_drops_ignored_sampling_fields() {
        let v = rendered(ProviderKind::Deepseek, REQ, true, false);
        assert_eq!(v["thinking"], json!({"type":"enabled"}));
        assert!(v.get("temperature").is_none());
        assert_eq!(v["stream_options"], json!({"include_usage":false,"x":1}));
    }

    #[test]
    fn openai_kind_uses_chat_template_kwargs() {
        let v = rendered(ProviderKind::Openai, REQ, true, false);
        assert_eq!(v["chat_template_kwargs"], json!({"thinking": true}));
        assert!(v.get("thinking").is_none());
    }

    #[test]
    fn openrouter_gets_reasoning_and_provider_routing() {
        let v = rendered(ProviderKind::Openrouter, REQ, true, false);
        assert_eq!(v["reasoning"], json!({"enabled": true}));
        assert_eq!(v["provider"], json!({"only":["x"]}));
    }

    #[test]
    fn completion_reasoning_is_renamed_and_usage_completed() {
        let mut v = json!({
            "model": "deepseek/deepseek-v3.2",
            "choices": [{"index":0,"message":{"role":"assistant","content":"hi","reasoning":"think"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 64}}
        });
        let usage = normalize_completion(&mut v, "deepseek-reasoner").unwrap();
        assert_eq!(v["model"], "deepseek-reasoner");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "think");
        assert!(v["choices"][0]["message"].get("reasoning").is_none());
        assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 64);
        assert_eq!(v["usage"]["prompt_cache_miss_tokens"], 36);
        assert_eq!(usage.cache_hit, 64);
    }

    #[test]
    fn usage_chunk_is_dropped_unless_asked() {
        let chunk = json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}});
        let mut c = chunk.clone();
        let (u, fate) = normalize_chunk(&mut c, "m", false);
        assert_eq!(u.unwrap().cache_miss, 5);
        assert_eq!(fate, ChunkFate::Drop);
        let mut c = chunk;
        let (_, fate) = normalize_chunk(&mut c, "m", true);
        assert_eq!(fate, ChunkFate::Forward);
        assert_eq!(c["usage"]["prompt_cache_miss_tokens"], 5);

        let mut content = json!({"choices":[{"delta":{"reasoning":"r"}}],"usage":null});
        let (u, fate) = normalize_chunk(&mut content, "m", false);
        assert!(u.is_none());
        assert_eq!(fate, ChunkFate::Forward);
        assert!(content.get("usage").is_none());
        assert_eq!(content["choices"][0]["delta"]["reasoning_content"], "r");
    }
}
