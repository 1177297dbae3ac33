//! What differs between providers that speak the OpenAI chat API: how the thinking mode is asked
//! for, where reasoning comes back, and extra routing fields. Everything else passes untouched.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::accounting::pricing::parse_amount;
use crate::accounting::usage::{SentUsage, Usage};
use crate::providers::call::{Call, Effort, Strict};
use crate::providers::reply::{Reply, ReplyUsage};
use crate::support::config::ProviderKind;
use crate::wire::raw_object::{Edit, Raw, RawObject};

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

/// `value` as JSON text: serde_json's writer, not `Display`, which goes through the format
/// machinery.
fn json(value: &Value) -> String {
    serde_json::to_string(value).expect("a Value serialises")
}

/// The edits that turn a client's body into this provider's request.
pub fn request_edits(
    kind: ProviderKind,
    call: &Call<'_>,
    upstream_model: &str,
    routing: Option<&str>,
) -> Vec<Edit<'static>> {
    let raw = call.body;
    let thinking = call.mode.thinking();
    // Room for every edit a dialect makes (twelve at most), so pushing never grows it.
    let mut edits = Vec::with_capacity(12);
    edits.push(Edit::Set(
        "model",
        serde_json::to_string(upstream_model)
            .expect("a string serialises")
            .into(),
    ));
    if call.stream {
        // Always ask for usage: spend must be counted even when the client did not ask to see it.
        let mut options = object_field(raw, "stream_options");
        options.insert("include_usage".into(), Value::Bool(true));
        edits.push(Edit::Set(
            "stream_options",
            json(&Value::Object(options)).into(),
        ));
    }
    if thinking {
        edits.extend(IGNORED_WHEN_THINKING.map(Edit::Remove));
    }
    if let Strict::Dropped { tools, .. } = call.strict {
        edits.push(Edit::Set("tools", tools.clone().into()));
    }
    // DeepSeek refuses an effort beside `thinking: disabled`; nobody reasons without thinking.
    let effort = call.effort.filter(|_| thinking).map(Effort::as_str);
    match kind {
        ProviderKind::Deepseek | ProviderKind::Local => {
            let mode = if thinking {
                r#"{"type":"enabled"}"#
            } else {
                r#"{"type":"disabled"}"#
            };
            edits.push(Edit::Set("thinking", mode.into()));
            match effort {
                Some(e) if kind == ProviderKind::Deepseek => {
                    edits.push(Edit::Set("reasoning_effort", json(&Value::from(e)).into()));
                }
                _ => edits.push(Edit::Remove("reasoning_effort")),
            }
        }
        ProviderKind::Openai => {
            // vLLM and SGLang switch DeepSeek's chat template with `chat_template_kwargs`.
            let mut kwargs = object_field(raw, "chat_template_kwargs");
            kwargs.insert("thinking".into(), Value::Bool(thinking));
            if let Some(e) = effort {
                kwargs.insert("reasoning_effort".into(), Value::from(e));
            }
            edits.push(Edit::Set(
                "chat_template_kwargs",
                json(&Value::Object(kwargs)).into(),
            ));
            edits.push(Edit::Remove("thinking"));
            edits.push(Edit::Remove("reasoning_effort"));
        }
        ProviderKind::Openrouter => {
            let mut reasoning = object_field(raw, "reasoning");
            reasoning.insert("enabled".into(), Value::Bool(thinking));
            if let Some(e) = effort {
                // OpenRouter's scale stops at high.
                let e = if e == "max" { "high" } else { e };
                reasoning.insert("effort".into(), Value::from(e));
            }
            edits.push(Edit::Set(
                "reasoning",
                json(&Value::Object(reasoning)).into(),
            ));
            edits.push(Edit::Remove("thinking"));
            edits.push(Edit::Remove("reasoning_effort"));
            if let Some(routing) = routing {
                edits.push(Edit::Set("provider", routing.to_owned().into()));
            }
            // OpenRouter reports each request's cost when asked: the truth for its spend.
            let mut usage = object_field(raw, "usage");
            usage.insert("include".into(), Value::Bool(true));
            edits.push(Edit::Set("usage", json(&Value::Object(usage)).into()));
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
fn renamed_choices(choices: Raw<'_>, inner: &str) -> Option<String> {
    static REASONING: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("\"reasoning\""));
    // Nothing to rename (the common case): decided without building a JSON tree.
    REASONING.find(choices.get().as_bytes())?;
    let mut choices: Value = serde_json::from_str(choices.get()).ok()?;
    for choice in choices.as_array_mut()? {
        if let Some(message) = choice.get_mut(inner) {
            rename_reasoning(message);
        }
    }
    Some(choices.to_string())
}

/// The provider's usage read into the one record, and completed to DeepSeek's wire form.
fn normalized_usage(usage: Raw<'_>) -> Option<ReplyUsage> {
    let (record, wire, provider_cost) = match SentUsage::parse(usage.get()) {
        Some(sent) => {
            let record = Usage::from_sent(&sent)?;
            let cost = sent.cost.and_then(|c| parse_amount(c.get()));
            (record, record.wire_for(&sent), cost)
        }
        // Not an object, or one with a key written with escapes or twice, or nested past the
        // scanner's depth (no provider does that): read the slow way, through a `Value`.
        None => {
            let value: Value = serde_json::from_str(usage.get()).ok()?;
            let record = Usage::from_wire(&value)?;
            #[derive(serde::Deserialize)]
            struct CostField<'a> {
                #[serde(borrow)]
                cost: Option<&'a RawValue>,
            }
            let cost = serde_json::from_str::<CostField>(usage.get())
                .ok()
                .and_then(|f| f.cost)
                .and_then(|c| parse_amount(c.get()));
            let mut wire = match value {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            record.write_wire(&mut wire);
            (record, Value::Object(wire).to_string(), cost)
        }
    };
    Some(ReplyUsage {
        usage: record,
        provider_cost,
        wire,
    })
}

/// Where a choice keeps its text: a whole completion's `message`, a chunk's `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    Message,
    Delta,
}

/// A provider's completion or chunk in DeepSeek's shape: `reasoning_content` where reasoning
/// came back as `reasoning`, and usage read and completed. Nothing else is re-encoded.
pub fn normalize(raw: RawObject, inner: Inner) -> Reply {
    let field = match inner {
        Inner::Message => "message",
        Inner::Delta => "delta",
    };
    let choices = raw.get("choices").and_then(|c| renamed_choices(c, field));
    // Chunks before the last carry `"usage":null`.
    let usage = raw
        .get("usage")
        .filter(|u| u.get() != "null")
        .and_then(normalized_usage);
    Reply::new(raw, choices, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(text: &str) -> RawObject {
        RawObject::parse(text).unwrap()
    }

    fn rendered(kind: ProviderKind, text: &str, thinking: bool, stream: bool) -> Value {
        rendered_with(kind, text, thinking, stream, None)
    }

    fn rendered_with(
        kind: ProviderKind,
        text: &str,
        thinking: bool,
        stream: bool,
        effort: Option<Effort>,
    ) -> Value {
        let raw = body(text);
        let call = Call {
            body: &raw,
            endpoint: crate::providers::call::Endpoint::Chat,
            mode: if thinking {
                crate::providers::call::Mode::Thinking
            } else {
                crate::providers::call::Mode::NonThinking
            },
            effort,
            strict: &Strict::None,
            stream,
            prefix: false,
            max_tokens: None,
        };
        let edits = request_edits(kind, &call, "up-model", Some(r#"{"only":["x"]}"#));
        serde_json::from_slice(&raw.render(&edits)).unwrap()
    }

    #[test]
    fn effort_goes_in_each_dialect_and_only_with_thinking() {
        let req = r#"{"model":"m","messages":[],"reasoning_effort":"medium"}"#;
        let high = Some(Effort::High);
        let v = rendered_with(ProviderKind::Deepseek, req, true, false, high);
        assert_eq!(v["reasoning_effort"], "high");
        let v = rendered_with(ProviderKind::Deepseek, req, false, false, high);
        assert!(v.get("reasoning_effort").is_none(), "{v}");
        assert_eq!(v["thinking"], json!({"type":"disabled"}));
        let v = rendered_with(ProviderKind::Openai, req, true, false, Some(Effort::Max));
        assert_eq!(
            v["chat_template_kwargs"],
            json!({"thinking": true, "reasoning_effort": "max"})
        );
        assert!(v.get("reasoning_effort").is_none());
        let v = rendered_with(
            ProviderKind::Openrouter,
            req,
            true,
            false,
            Some(Effort::Max),
        );
        assert_eq!(v["reasoning"], json!({"enabled": true, "effort": "high"}));
        assert!(v.get("reasoning_effort").is_none());
        let v = rendered_with(ProviderKind::Local, req, true, false, high);
        assert!(v.get("reasoning_effort").is_none());
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
        let raw = body(
            r#"{"model":"deepseek/deepseek-v3.2","choices":[{"index":0,"message":{"role":"assistant","content":"hi","reasoning":"think"}}],
               "usage":{"prompt_tokens":100,"completion_tokens":10,"prompt_tokens_details":{"cached_tokens":64}},"extra":[1,  2]}"#,
        );
        let reply = normalize(raw, Inner::Message);
        let text = String::from_utf8(reply.render(&[])).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "think");
        assert!(v["choices"][0]["message"].get("reasoning").is_none());
        let usage = reply.usage().unwrap();
        assert_eq!(usage.usage.cache_hit, 64);
        let wire: Value = serde_json::from_str(&usage.wire).unwrap();
        assert_eq!(wire["prompt_cache_hit_tokens"], 64);
        assert_eq!(wire["prompt_cache_miss_tokens"], 36);
        assert!(text.contains(r#""extra":[1,  2]"#), "{text}");
    }

    #[test]
    fn chunks_keep_their_bytes_unless_reasoning_is_renamed() {
        let usage_chunk =
            body(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#);
        let reply = normalize(usage_chunk, Inner::Delta);
        assert_eq!(reply.usage().unwrap().usage.cache_miss, 5);
        assert!(!reply.has_choices());

        let content = body(r#"{"choices":[{"delta":{"reasoning":"r"}}],"usage":null}"#);
        let reply = normalize(content, Inner::Delta);
        assert!(reply.usage().is_none());
        assert_eq!(
            reply
                .first_choice()
                .body()
                .unwrap()
                .reasoning_content
                .as_deref(),
            Some("r")
        );
        let plain = r#"{"choices":[{"delta":{"content":"c"}}],"usage":null}"#;
        let reply = normalize(body(plain), Inner::Delta);
        assert_eq!(String::from_utf8(reply.render(&[])).unwrap(), plain);
    }
}
