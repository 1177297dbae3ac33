//! A call as the engine takes it: the text to continue (DeepSeek-V3.2's chat encoding with its
//! DSML tool calls, or DeepSeek-V3's fill-in-the-middle format) and the sampling parameters.

use dsgw_engine::chat::{self, Conversation, Message, Role, ToolCall};
use dsgw_engine::generate::{Constraint, SamplingParams};
use serde::Deserialize;
use serde_json::Value;

use crate::providers::call::{Call, Endpoint};
use crate::wire::error::ApiError;

/// DeepSeek's default output budgets when a request names none.
const DEFAULT_MAX_TOKENS: usize = 4096;
const DEFAULT_MAX_TOKENS_THINKING: usize = 32 * 1024;

/// The V3 tokenizer's fill-in-the-middle markers.
const FIM_BEGIN: &str = "<｜fim▁begin｜>";
const FIM_HOLE: &str = "<｜fim▁hole｜>";
const FIM_END: &str = "<｜fim▁end｜>";
const BOS: &str = "<｜begin▁of▁sentence｜>";

/// The prompt text, and whether generation starts inside the reasoning.
pub(super) fn text(call: &Call<'_>) -> Result<(String, bool), ApiError> {
    match call.endpoint {
        Endpoint::Fim => Ok((fim_prompt(call), false)),
        Endpoint::Chat | Endpoint::BetaChat => chat_prompt(call),
    }
}

/// A top-level field of the body, when it has the wanted type.
pub(super) fn field<T: serde::de::DeserializeOwned>(call: &Call<'_>, name: &str) -> Option<T> {
    call.body
        .get(name)
        .and_then(|v| serde_json::from_str(v.get()).ok())
}

/// DeepSeek-V3's FIM format: prefix and suffix around the hole the model fills.
fn fim_prompt(call: &Call<'_>) -> String {
    let prompt: String = field(call, "prompt").unwrap_or_default();
    match field::<String>(call, "suffix") {
        Some(suffix) => format!("{BOS}{FIM_BEGIN}{prompt}{FIM_HOLE}{suffix}{FIM_END}"),
        None => format!("{BOS}{prompt}"),
    }
}

/// The chat prompt. With `prefix: true` on the last (assistant) message, the prompt ends with
/// that message's text and the model continues it, as DeepSeek's chat prefix completion does.
fn chat_prompt(call: &Call<'_>) -> Result<(String, bool), ApiError> {
    let thinking = call.mode.thinking();
    let mut conversation = conversation(call);
    let prefix = if call.prefix {
        conversation.messages.pop()
    } else {
        None
    };
    let mut prompt = chat::encode(&conversation)
        .map_err(|e| ApiError::bad_request(e.to_string()).with_param("messages"))?;
    let Some(prefix) = prefix else {
        return Ok((prompt, thinking));
    };
    if !thinking {
        prompt.push_str(&prefix.content);
        return Ok((prompt, false));
    }
    // The prompt ends inside <think>: continue the reasoning, or close it and continue the answer.
    match prefix.reasoning {
        Some(reasoning) if prefix.content.is_empty() => {
            prompt.push_str(&reasoning);
            Ok((prompt, true))
        }
        reasoning => {
            prompt.push_str(reasoning.as_deref().unwrap_or(""));
            prompt.push_str(chat::THINK_END);
            prompt.push_str(&prefix.content);
            Ok((prompt, false))
        }
    }
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    arguments: String,
}

fn text_of(content: &Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn conversation(call: &Call<'_>) -> Conversation {
    let wire: Vec<WireMessage> = field(call, "messages").unwrap_or_default();
    let messages = wire
        .into_iter()
        .map(|m| Message {
            role: match m.role.as_str() {
                "system" => Role::System,
                "developer" => Role::Developer,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                _ => Role::User,
            },
            content: text_of(&m.content),
            reasoning: m.reasoning_content,
            tool_calls: m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| ToolCall {
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect(),
        })
        .collect();
    let tool_choice_none = field::<String>(call, "tool_choice").as_deref() == Some("none");
    let tools = if tool_choice_none {
        Vec::new()
    } else {
        field::<Vec<Value>>(call, "tools")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.get("function").cloned())
            .collect()
    };
    let response_format = field::<Value>(call, "response_format")
        .filter(|f| f.get("type").and_then(Value::as_str) != Some("text"));
    Conversation {
        messages,
        tools,
        response_format,
        thinking: call.mode.thinking(),
    }
}

/// The sampling parameters for a prompt of `prompt_len` tokens in a `context`-token window.
pub(super) fn sampling(call: &Call<'_>, prompt_len: usize, context: usize) -> SamplingParams {
    let thinking = call.mode.thinking();
    let stop = match field::<Value>(call, "stop") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let max_tokens = match call.max_tokens {
        Some(n) => n as usize,
        None => {
            let default = if thinking {
                DEFAULT_MAX_TOKENS_THINKING
            } else {
                DEFAULT_MAX_TOKENS
            };
            default.min(context.saturating_sub(prompt_len)).max(1)
        }
    };
    // Thinking mode ignores sampling fields, as DeepSeek does.
    let (temperature, top_p) = if thinking {
        (1.0, 1.0)
    } else {
        (
            field::<f32>(call, "temperature").unwrap_or(1.0),
            field::<f32>(call, "top_p").unwrap_or(1.0),
        )
    };
    // JSON mode is enforced here, not just asked for: the sampler only takes tokens that keep
    // the answer a JSON object (after the reasoning, in thinking mode).
    let json_mode = call.endpoint != Endpoint::Fim
        && field::<Value>(call, "response_format")
            .is_some_and(|f| f.get("type").and_then(Value::as_str) == Some("json_object"));
    let constraint = match (json_mode, thinking) {
        (false, _) => Constraint::None,
        (true, false) => Constraint::JsonObject,
        (true, true) => Constraint::JsonObjectAfterThinking,
    };
    SamplingParams {
        temperature,
        top_p,
        seed: field::<u64>(call, "seed"),
        max_tokens,
        stop,
        constraint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::call::Mode;
    use crate::wire::raw_object::RawObject;

    #[test]
    fn fim_wraps_the_hole_in_v3_markers() {
        let body: RawObject =
            RawObject::parse(r#"{"model":"m","prompt":"def f(","suffix":"    return x"}"#).unwrap();
        let call = Call {
            body: &body,
            endpoint: Endpoint::Fim,
            mode: Mode::NonThinking,
            effort: None,
            strict: &crate::providers::call::Strict::None,
            stream: false,
            prefix: false,
            max_tokens: None,
        };
        assert_eq!(
            text(&call).unwrap().0,
            "<｜begin▁of▁sentence｜><｜fim▁begin｜>def f(<｜fim▁hole｜>    return x<｜fim▁end｜>"
        );
    }
}
