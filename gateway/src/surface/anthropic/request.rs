//! Anthropic Messages requests, translated into the chat request every upstream serves.
//!
//! What DeepSeek's own Anthropic endpoint ignores is ignored here too (unknown fields,
//! `cache_control`, `metadata`, `context_management`, `top_k`, betas, `budget_tokens`), so Claude
//! Code's traffic goes through as it is sent: `system` messages in the middle of `messages`,
//! `thinking: {"type": "adaptive"}`, `output_config.effort`, and a `max_tokens` sized for Claude
//! (clamped to the model's limit). What would silently lose meaning (images, documents) is
//! refused.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::pipeline::routing::catalog::ModelSpec;
use crate::providers::call::{Effort, Mode};
use crate::wire::error::ApiError;

#[derive(Debug, Deserialize)]
struct Messages {
    model: String,
    max_tokens: Option<i64>,
    #[serde(default)]
    system: Option<System>,
    messages: Vec<Message>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    thinking: Option<Thinking>,
    #[serde(default)]
    output_config: Option<OutputConfig>,
}

/// Only `effort` is read, as DeepSeek's Anthropic endpoint does.
#[derive(Debug, Deserialize)]
struct OutputConfig {
    #[serde(default)]
    effort: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<TextBlock>),
}

#[derive(Debug, Deserialize)]
struct TextBlock {
    text: String,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: Role,
    content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
    /// Mid-conversation system messages (Claude Code's `mid-conversation-system` beta).
    System,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
    },
    RedactedThinking {},
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: bool,
    },
    Image {},
    Document {},
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct Tool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ToolChoice {
    Auto {},
    Any {},
    Tool { name: String },
    None {},
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Thinking {
    /// `budget_tokens` is accepted and ignored, as DeepSeek does.
    Enabled {},
    Disabled {},
    /// The model's own default mode.
    Adaptive {},
}

/// The translated request: the chat body, and what the response needs to know.
#[derive(Debug)]
pub struct Translated {
    pub chat_body: Vec<u8>,
    /// The model name the client sent, echoed in responses.
    pub model: String,
    pub stream: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Translates a Messages request. `lookup` finds a served model by name; other names
/// (`claude-...`) map to `default_model`, as DeepSeek's own Anthropic endpoint does.
pub fn to_chat<'m>(
    body: &[u8],
    lookup: impl Fn(&str) -> Option<&'m ModelSpec>,
    default_model: &str,
) -> Result<Translated, ApiError> {
    let request: Messages = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "Invalid Messages request: {e} (see https://docs.anthropic.com/en/api/messages)"
        ))
    })?;
    let max_tokens = request
        .max_tokens
        .ok_or_else(|| invalid("max_tokens: Field required"))?;
    if max_tokens < 1 {
        return Err(invalid("max_tokens: must be at least 1"));
    }
    let mut messages: Vec<Value> = system_message(request.system).into_iter().collect();
    for (i, m) in request.messages.into_iter().enumerate() {
        translate_message(i, m, &mut messages)?;
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(invalid("messages: at least one message is required"));
    }
    let served = lookup(&request.model).or_else(|| lookup(default_model));
    let model = match served {
        Some(spec) if *spec.name == *request.model => request.model.clone(),
        _ => default_model.to_owned(),
    };
    let mode = match request.thinking {
        Some(Thinking::Enabled {}) => Some(Mode::Thinking),
        Some(Thinking::Disabled {}) => Some(Mode::NonThinking),
        Some(Thinking::Adaptive {}) | None => None,
    };
    let mut chat = Map::new();
    chat.insert("model".into(), model.into());
    chat.insert("messages".into(), Value::Array(messages));
    // Anthropic clients size `max_tokens` for Claude: take what the model can give.
    let limit = served.map_or(u32::MAX, |spec| {
        spec.max_output_tokens(mode.unwrap_or(spec.mode.default_mode()))
    });
    chat.insert("max_tokens".into(), max_tokens.min(i64::from(limit)).into());
    if let Some(stop) = request.stop_sequences.filter(|s| !s.is_empty()) {
        chat.insert("stop".into(), json!(stop));
    }
    if let Some(t) = request.temperature {
        chat.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        chat.insert("top_p".into(), json!(p));
    }
    if let Some(tools) = request.tools.filter(|t| !t.is_empty()) {
        chat.insert("tools".into(), chat_tools(tools));
    }
    if let Some(choice) = request.tool_choice {
        chat.insert("tool_choice".into(), chat_tool_choice(choice));
    }
    match mode {
        Some(Mode::Thinking) => {
            chat.insert("thinking".into(), json!({"type": "enabled"}));
        }
        Some(Mode::NonThinking) => {
            chat.insert("thinking".into(), json!({"type": "disabled"}));
        }
        None => {}
    }
    let effort = request.output_config.and_then(|c| c.effort);
    if let Some(effort) = effort.as_deref().and_then(Effort::parse) {
        chat.insert("reasoning_effort".into(), effort.as_str().into());
    }
    if request.stream {
        chat.insert("stream".into(), true.into());
        // The usage chunk becomes message_delta's usage.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Translated {
        chat_body: serde_json::to_vec(&Value::Object(chat)).expect("JSON serialises"),
        model: request.model,
        stream: request.stream,
    })
}

/// The `system` field as the first chat message.
fn system_message(system: Option<System>) -> Option<Value> {
    match system {
        Some(System::Text(text)) if !text.is_empty() => {
            Some(json!({"role": "system", "content": text}))
        }
        Some(System::Blocks(blocks)) if !blocks.is_empty() => {
            let text: Vec<String> = blocks.into_iter().map(|b| b.text).collect();
            Some(json!({"role": "system", "content": text.join("\n\n")}))
        }
        _ => None,
    }
}

fn chat_tools(tools: Vec<Tool>) -> Value {
    tools
        .into_iter()
        .map(|t| {
            let mut function = json!({
                "name": t.name,
                "parameters": t.input_schema.unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = t.description {
                function["description"] = d.into();
            }
            json!({"type": "function", "function": function})
        })
        .collect()
}

fn chat_tool_choice(choice: ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto {} => json!("auto"),
        ToolChoice::Any {} => json!("required"),
        ToolChoice::None {} => json!("none"),
        ToolChoice::Tool { name } => json!({"type": "function", "function": {"name": name}}),
    }
}

/// One Anthropic message becomes one or more chat messages: tool results are `tool` messages
/// (which must directly follow the assistant's calls), the rest stays in order.
fn translate_message(index: usize, m: Message, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let blocks = match m.content {
        Content::Text(text) => vec![Block::Text { text }],
        Content::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match (m.role, block) {
            (_, Block::Text { text: t }) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&t);
            }
            (Role::Assistant, Block::Thinking { thinking }) => reasoning.push_str(&thinking),
            (_, Block::RedactedThinking {})
            | (Role::User | Role::System, Block::Thinking { .. }) => {}
            (Role::Assistant, Block::ToolUse { id, name, input }) => {
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            (
                Role::User,
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                },
            ) => {
                let result = tool_result_text(index, content, is_error)?;
                out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": result}));
            }
            (_, Block::Image {} | Block::Document {}) => {
                return Err(invalid(format!(
                    "messages.{index}: image and document blocks are not supported by DeepSeek models"
                )));
            }
            (Role::User | Role::System, Block::ToolUse { .. }) => {
                return Err(invalid(format!(
                    "messages.{index}: tool_use blocks belong in assistant messages"
                )));
            }
            (Role::Assistant | Role::System, Block::ToolResult { .. }) => {
                return Err(invalid(format!(
                    "messages.{index}: tool_result blocks belong in user messages"
                )));
            }
        }
    }
    match m.role {
        Role::User => {
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
        }
        // A system message stays where it was sent, so the prompt's earlier bytes (and the
        // provider's prefix cache) do not move from one turn to the next.
        Role::System => out.push(json!({"role": "system", "content": text})),
        Role::Assistant => {
            let mut message = json!({"role": "assistant", "content": text});
            // DeepSeek checks that assistant messages in a tool loop carry the field; empty
            // passes.
            if !reasoning.is_empty() || !calls.is_empty() {
                message["reasoning_content"] = reasoning.into();
            }
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            out.push(message);
        }
    }
    Ok(())
}

/// A tool result's text (an error's marked as one). An image or document in it would be lost.
fn tool_result_text(
    index: usize,
    content: Option<ToolResultContent>,
    is_error: bool,
) -> Result<String, ApiError> {
    let text = match content {
        None => String::new(),
        Some(ToolResultContent::Text(t)) => t,
        Some(ToolResultContent::Blocks(blocks)) => {
            if let Some(kind) = blocks
                .iter()
                .filter_map(|b| b["type"].as_str())
                .find(|t| matches!(*t, "image" | "document"))
            {
                return Err(invalid(format!(
                    "messages.{index}: a tool_result with a {kind} block: DeepSeek models read text only"
                )));
            }
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    Ok(if is_error {
        format!("Error: {text}")
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::routing::catalog::ModelMode;
    use std::sync::LazyLock;

    static CHAT: LazyLock<ModelSpec> =
        LazyLock::new(|| ModelSpec::for_tests("deepseek-chat", ModelMode::NonThinking, true));
    static REASONER: LazyLock<ModelSpec> =
        LazyLock::new(|| ModelSpec::for_tests("deepseek-reasoner", ModelMode::Thinking, true));

    fn lookup(name: &str) -> Option<&'static ModelSpec> {
        match name {
            "deepseek-chat" => Some(&CHAT),
            "deepseek-reasoner" => Some(&REASONER),
            _ => None,
        }
    }

    fn chat(body: Value) -> Value {
        let t = to_chat(body.to_string().as_bytes(), lookup, "deepseek-chat").unwrap();
        serde_json::from_slice(&t.chat_body).unwrap()
    }

    #[test]
    fn a_tool_loop_translates_in_order() {
        let c = chat(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "tools": [{"name": "weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Need the tool.", "signature": "x"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
                    {"type": "text", "text": "Thanks"}
                ]}
            ],
            "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "stream": true
        }));
        assert_eq!(
            c["model"], "deepseek-chat",
            "unknown names map to the default"
        );
        assert_eq!(
            c["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(c["messages"][2]["reasoning_content"], "Need the tool.");
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            c["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"})
        );
        assert_eq!(
            c["messages"][4],
            json!({"role": "user", "content": "Thanks"})
        );
        assert_eq!(
            c["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["thinking"], json!({"type": "enabled"}));
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn bad_requests_are_refused_clearly() {
        let refuse = |body: Value| {
            to_chat(body.to_string().as_bytes(), lookup, "deepseek-chat")
                .unwrap_err()
                .body
                .message
        };
        assert!(
            refuse(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
                .contains("max_tokens")
        );
        assert!(refuse(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]})).contains("image"));
        assert!(
            refuse(json!({"model": "m", "max_tokens": 5, "messages": []})).contains("at least one")
        );
        // System messages alone are no conversation.
        assert!(refuse(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})).contains("at least one"));
        assert!(refuse(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}
        ]}]})).contains("image"));
    }

    #[test]
    fn claude_codes_requests_translate_as_sent() {
        let body = json!({
            "model": "deepseek-chat",
            "max_tokens": 32000,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc"}, {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"}, {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]},
                {"role": "system", "content": "Available agent types: ..."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}, "caller": {"type": "direct"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.txt", "cache_control": {"type": "ephemeral"}}]},
            ],
            "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "metadata": {"user_id": "u"},
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "high"},
            "top_k": 5,
            "service_tier": "auto",
            "stream": true,
        });
        let c = chat(body);
        let roles: Vec<&str> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "system", "assistant", "tool"]);
        assert_eq!(c["messages"][2]["content"], "Available agent types: ...");
        assert_eq!(c["messages"][3]["reasoning_content"], "");
        // Adaptive thinking is the model's default: no switch is sent.
        assert!(c.get("thinking").is_none(), "{c}");
        assert_eq!(c["reasoning_effort"], "high");
        // deepseek-chat takes 8K output tokens in its default mode.
        assert_eq!(c["max_tokens"], 8192);
        let reasoner = chat(json!({
            "model": "deepseek-reasoner", "max_tokens": 200000, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(reasoner["max_tokens"], 65536);
        assert_eq!(reasoner["thinking"], json!({"type": "enabled"}));
        let off = chat(json!({
            "model": "deepseek-reasoner", "max_tokens": 10, "thinking": {"type": "disabled"},
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(off["thinking"], json!({"type": "disabled"}));
    }
}
