//! What differs between providers that speak the OpenAI chat API: how the thinking mode is asked
//! for, where reasoning comes back, and extra routing fields. Everything else passes untouched.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::ProviderKind;
use crate::pricing::Price;
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

/// The `choices` array with `reasoning` renamed inside each `message` / `delta`, or `None` when
/// there is nothing to rename (the common case, decided without building a JSON tree).
fn renamed_choices(choices: &RawValue, inner: &str) -> Option<String> {
    if !choices.get().contains("\"reasoning\"") {
        return None;
    }
    let mut choices: Value = serde_json::from_str(choices.get()).ok()?;
    for choice in choices.as_array_mut()? {
        if let Some(message) = choice.get_mut(inner) {
            rename_reasoning(message);
        }
    }
    Some(choices.to_string())
}

/// The provider's usage in DeepSeek's complete form (plus its cost at `price`), with the record
/// it was read into.
fn normalized_usage(usage: &RawValue, price: Option<&Price>) -> Option<(Usage, String)> {
    let mut value: Value = serde_json::from_str(usage.get()).ok()?;
    let record = Usage::from_wire(&value)?;
    if let Value::Object(map) = &mut value {
        record.write_wire(map);
        if let Some(price) = price {
            map.insert(
                "dsgw_cost".into(),
                price.cost(&record).to_json(&price.currency),
            );
        }
    }
    Some((record, value.to_string()))
}

/// A response body or chunk after normalisation. Only the fields that change are re-encoded;
/// everything else keeps the provider's bytes.
#[derive(Debug)]
pub struct Normalized {
    /// `None` for a usage-only chunk the client did not ask to see.
    pub body: Option<Vec<u8>>,
    pub usage: Option<Usage>,
}

/// Normalises a non-streaming completion: `model` as the client named it, `reasoning_content`,
/// and usage in DeepSeek's complete form.
pub fn normalize_completion(
    body: &RawObject,
    exposed_model_json: &str,
    price: Option<&Price>,
) -> Normalized {
    let mut edits = vec![Edit::Set("model", exposed_model_json.to_owned())];
    if let Some(choices) = body
        .get("choices")
        .and_then(|c| renamed_choices(c, "message"))
    {
        edits.push(Edit::Set("choices", choices));
    }
    let usage = body
        .get("usage")
        .and_then(|u| normalized_usage(u, price))
        .map(|(record, text)| {
            edits.push(Edit::Set("usage", text));
            record
        });
    Normalized {
        body: Some(body.render(&edits)),
        usage,
    }
}

/// Normalises one stream chunk. The gateway always asks upstream for usage; when the client did
/// not, `usage` fields are removed and the usage-only chunk is dropped.
pub fn normalize_chunk(
    chunk: &RawObject,
    exposed_model_json: &str,
    client_wants_usage: bool,
    price: Option<&Price>,
) -> Normalized {
    let mut edits = vec![Edit::Set("model", exposed_model_json.to_owned())];
    if let Some(choices) = chunk
        .get("choices")
        .and_then(|c| renamed_choices(c, "delta"))
    {
        edits.push(Edit::Set("choices", choices));
    }
    let usage = match chunk.get("usage").and_then(|u| normalized_usage(u, price)) {
        Some((record, text)) => {
            if client_wants_usage {
                edits.push(Edit::Set("usage", text));
            }
            Some(record)
        }
        None => None,
    };
    if !client_wants_usage {
        edits.push(Edit::Remove("usage"));
        let no_choices = chunk.get("choices").is_none_or(|c| {
            serde_json::from_str::<Vec<serde::de::IgnoredAny>>(c.get()).is_ok_and(|c| c.is_empty())
        });
        if usage.is_some() && no_choices {
            return Normalized { body: None, usage };
        }
    }
    Normalized {
        body: Some(chunk.render(&edits)),
        usage,
    }
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

    fn normalized(n: &Normalized) -> Value {
        serde_json::from_slice(n.body.as_ref().expect("kept")).unwrap()
    }

    #[test]
    fn completion_reasoning_is_renamed_and_usage_completed() {
        let raw = body(
            r#"{"model":"deepseek/deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"hi","reasoning":"think"}}],
               "usage":{"prompt_tokens":100,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":64}},"extra":[1,  2]}"#,
        );
        let n = normalize_completion(
            &raw,
            r#""deepseek-reasoner""#,
            Price::builtin("deepseek-v3.2").as_ref(),
        );
        let v = normalized(&n);
        assert_eq!(v["model"], "deepseek-reasoner");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "think");
        assert!(v["choices"][0]["message"].get("reasoning").is_none());
        assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 64);
        assert_eq!(v["usage"]["prompt_cache_miss_tokens"], 36);
        assert_eq!(n.usage.unwrap().cache_hit, 64);
        // 64 * 0.028 + 36 * 0.28 + 10 * 0.42 per 1M tokens.
        assert_eq!(v["usage"]["dsgw_cost"]["total"], "0.000016072");
        assert!(
            String::from_utf8(n.body.unwrap())
                .unwrap()
                .contains(r#""extra":[1,  2]"#)
        );
    }

    #[test]
    fn usage_chunk_is_dropped_unless_asked() {
        let usage_chunk =
            body(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#);
        let n = normalize_chunk(&usage_chunk, r#""m""#, false, None);
        assert_eq!(n.usage.unwrap().cache_miss, 5);
        assert!(n.body.is_none());
        let n = normalize_chunk(&usage_chunk, r#""m""#, true, None);
        assert_eq!(normalized(&n)["usage"]["prompt_cache_miss_tokens"], 5);

        let content = body(r#"{"choices":[{"delta":{"reasoning":"r"}}],"usage":null}"#);
        let n = normalize_chunk(&content, r#""m""#, false, None);
        assert!(n.usage.is_none());
        let v = normalized(&n);
        assert!(v.get("usage").is_none());
        assert_eq!(v["choices"][0]["delta"]["reasoning_content"], "r");
        assert_eq!(v["model"], "m");

        let n = normalize_chunk(&content, r#""m""#, true, None);
        assert!(normalized(&n)["usage"].is_null());
    }
}
