//! Responses API requests (`POST /v1/responses`), translated into the chat request every
//! upstream serves. Stateless: the whole conversation comes in `input` every turn, as Codex sends
//! it; `previous_response_id` and item references are refused.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::pipeline::routing::catalog::ModelSpec;
use crate::providers::call::{Effort, Mode};
use crate::wire::error::ApiError;

/// Reasoning handed back to a client travels in `encrypted_content` with this prefix; the
/// gateway reads it back from the next turn's input (it is the client's own reasoning text,
/// base64, not a secret).
const REASONING_TAG: &str = "dsgw1:";

#[derive(Debug, Deserialize)]
struct Responses {
    model: String,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    reasoning: Option<Reasoning>,
    #[serde(default)]
    max_output_tokens: Option<i64>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct Reasoning {
    #[serde(default)]
    effort: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<Value>,
}

/// The chat request, and what the answer needs to be told.
#[derive(Debug)]
pub struct Translated {
    pub chat_body: Vec<u8>,
    pub stream: bool,
    pub echo: Echo,
}

/// What a response object repeats of its request, and how to map the answer back.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    /// The model name the client sent.
    pub model: String,
    pub instructions: Option<String>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<i64>,
    pub effort: Option<String>,
    pub text_format: Value,
    pub metadata: Value,
    /// Reasoning goes back as text in reasoning items (`include`, and always for our own).
    pub include_reasoning_text: bool,
    /// Chat function names of namespaced tools -> (namespace, name).
    pub namespaced: HashMap<String, (String, String)>,
    /// Built-in tools no provider here can run, left out of the request.
    pub dropped_tools: Vec<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Translates a Responses request. `lookup` finds a served model (for its output limit).
pub fn to_chat<'m>(
    body: &[u8],
    lookup: impl Fn(&str) -> Option<&'m ModelSpec>,
) -> Result<Translated, ApiError> {
    let request: Responses = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("Invalid Responses request: {e}")))?;
    if request.previous_response_id.is_some() {
        return Err(invalid(
            "previous_response_id: responses are not stored here; send the whole conversation in `input`",
        )
        .with_param("previous_response_id"));
    }
    let mut echo = Echo {
        model: request.model.clone(),
        instructions: request.instructions.clone(),
        tool_choice: request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        temperature: request.temperature,
        top_p: request.top_p,
        max_output_tokens: request.max_output_tokens,
        effort: request.reasoning.as_ref().and_then(|r| r.effort.clone()),
        text_format: json!({"type": "text"}),
        metadata: request.metadata.clone().unwrap_or_else(|| json!({})),
        include_reasoning_text: true,
        ..Echo::default()
    };
    let tools = translate_tools(&request.tools, &mut echo)?;
    echo.tools = request.tools.clone();
    let mut messages = Vec::new();
    if let Some(instructions) = request.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let names = reverse_names(&echo);
    match &request.input {
        Some(Input::Text(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Input::Items(items)) => Conversation::new(&names).translate(items, &mut messages)?,
        None => {}
    }
    if !messages.iter().any(|m| m["role"] != "system") {
        return Err(invalid("input: at least one message is required").with_param("input"));
    }
    let chat = chat_body(&request, &mut echo, messages, tools, &lookup)?;
    Ok(Translated {
        chat_body: serde_json::to_vec(&Value::Object(chat)).expect("JSON serialises"),
        stream: request.stream,
        echo,
    })
}

/// The chat request's top-level fields.
fn chat_body<'m>(
    request: &Responses,
    echo: &mut Echo,
    messages: Vec<Value>,
    tools: Vec<Value>,
    lookup: &impl Fn(&str) -> Option<&'m ModelSpec>,
) -> Result<Map<String, Value>, ApiError> {
    let mut chat = Map::new();
    chat.insert("model".into(), request.model.clone().into());
    chat.insert("messages".into(), Value::Array(messages));
    let (mode, effort) = match request.reasoning.as_ref().and_then(|r| r.effort.as_deref()) {
        None => (None, None),
        Some("none") => (Some(Mode::NonThinking), None),
        Some(e) => match Effort::parse(e) {
            Some(effort) => (Some(Mode::Thinking), Some(effort)),
            None => {
                return Err(invalid(format!(
                    "reasoning.effort: `{e}` is not one of none, minimal, low, medium, high, xhigh, max"
                ))
                .with_param("reasoning.effort"));
            }
        },
    };
    if let Some(mode) = mode {
        let kind = if mode.thinking() {
            "enabled"
        } else {
            "disabled"
        };
        chat.insert("thinking".into(), json!({ "type": kind }));
    }
    if let Some(effort) = effort {
        chat.insert("reasoning_effort".into(), effort.as_str().into());
    }
    if let Some(max) = request.max_output_tokens {
        if max < 1 {
            return Err(
                invalid("max_output_tokens: must be at least 1").with_param("max_output_tokens")
            );
        }
        // Clients size it for other models: take what this one can give.
        let limit = lookup(&request.model).map_or(u32::MAX, |spec| {
            spec.max_output_tokens(mode.unwrap_or(spec.mode.default_mode()))
        });
        chat.insert("max_tokens".into(), max.min(i64::from(limit)).into());
    }
    if let Some(format) = request.text.as_ref().and_then(|t| t.format.clone()) {
        match format["type"].as_str() {
            Some("text") => {}
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            other => {
                return Err(invalid(format!(
                    "text.format: `{}` is not supported here (DeepSeek models answer `text` or `json_object`)",
                    other.unwrap_or("?")
                ))
                .with_param("text.format"));
            }
        }
        echo.text_format = format;
    }
    for (key, value) in [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
    ] {
        if let Some(v) = value {
            chat.insert(key.into(), json!(v));
        }
    }
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = chat_tool_choice(request.tool_choice.as_ref(), echo)? {
            chat.insert("tool_choice".into(), choice);
        }
    }
    if request.stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    // `store: true` is answered as not stored; `include` only changes what comes back.
    let _ = (request.store, &request.include);
    Ok(chat)
}

/// Function tools as chat tools; functions inside `namespace` groups flattened as
/// `namespace__name`; built-in tools (web search, file search, ...) left out and noted.
fn translate_tools(tools: &[Value], echo: &mut Echo) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        match tool["type"].as_str() {
            Some("function") => out.push(chat_function(tool, None, i)?),
            Some("namespace") => {
                let namespace = tool["name"]
                    .as_str()
                    .ok_or_else(|| invalid(format!("tools[{i}]: a namespace needs a `name`")))?;
                for inner in tool["tools"].as_array().into_iter().flatten() {
                    if inner["type"] != "function" {
                        continue;
                    }
                    let function = chat_function(inner, Some(namespace), i)?;
                    let flat = function["function"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    let name = inner["name"].as_str().unwrap_or("").to_owned();
                    echo.namespaced.insert(flat, (namespace.to_owned(), name));
                    out.push(function);
                }
            }
            Some(other) => echo.dropped_tools.push(other.to_owned()),
            None => return Err(invalid(format!("tools[{i}]: a tool needs a `type`"))),
        }
    }
    Ok(out)
}

fn chat_function(tool: &Value, namespace: Option<&str>, i: usize) -> Result<Value, ApiError> {
    let name = tool["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(format!("tools[{i}]: a function needs a `name`")))?;
    let name = match namespace {
        Some(ns) => format!("{ns}__{name}"),
        None => name.to_owned(),
    };
    let mut function = json!({
        "name": name,
        "parameters": tool.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
    });
    if let Some(d) = tool["description"].as_str() {
        function["description"] = d.into();
    }
    if tool["strict"] == true {
        function["strict"] = true.into();
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice` in chat's form (`None` when it names only tools that were dropped).
fn chat_tool_choice(choice: Option<&Value>, echo: &Echo) -> Result<Option<Value>, ApiError> {
    let Some(choice) = choice else {
        return Ok(None);
    };
    if let Some(mode) = choice.as_str() {
        return match mode {
            "auto" | "none" | "required" => Ok(Some(mode.into())),
            other => Err(invalid(format!(
                "tool_choice: `{other}` is not auto, none or required"
            ))),
        };
    }
    match choice["type"].as_str() {
        Some("function") => {
            let name = choice["name"].as_str().unwrap_or("");
            let flat = echo
                .namespaced
                .iter()
                .find(|(_, (_, n))| n == name)
                .map_or(name.to_owned(), |(flat, _)| flat.clone());
            Ok(Some(
                json!({"type": "function", "function": {"name": flat}}),
            ))
        }
        Some("allowed_tools") => Ok(Some(choice["mode"].as_str().unwrap_or("auto").into())),
        _ => Ok(None),
    }
}

/// (namespace, name) -> the chat function name it was flattened to.
fn reverse_names(echo: &Echo) -> HashMap<(String, String), String> {
    echo.namespaced
        .iter()
        .map(|(flat, key)| (key.clone(), flat.clone()))
        .collect()
}

/// The input items as chat messages, in order: an assistant turn (reasoning, text, function
/// calls) gathers until the next item of another role.
struct Conversation<'n> {
    names: &'n HashMap<(String, String), String>,
    assistant: Option<Assistant>,
}

#[derive(Default)]
struct Assistant {
    content: String,
    reasoning: Option<String>,
    calls: Vec<Value>,
}

impl<'n> Conversation<'n> {
    fn new(names: &'n HashMap<(String, String), String>) -> Self {
        Self {
            names,
            assistant: None,
        }
    }

    fn translate(mut self, items: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
        for (i, item) in items.iter().enumerate() {
            self.item(i, item, out)?;
        }
        self.flush(out);
        Ok(())
    }

    fn item(&mut self, i: usize, item: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
        // An easy input message has a role and no type.
        let kind = item["type"]
            .as_str()
            .unwrap_or(if item.get("role").is_some() {
                "message"
            } else {
                ""
            });
        match kind {
            "message" => self.message(i, item, out),
            "reasoning" => {
                let text = reasoning_text(item);
                let turn = self.turn();
                turn.reasoning = Some(turn.reasoning.take().unwrap_or_default() + &text);
                Ok(())
            }
            "function_call" | "custom_tool_call" => {
                let call = self.call(i, item)?;
                self.turn().calls.push(call);
                Ok(())
            }
            "function_call_output" | "custom_tool_call_output" => {
                self.flush(out);
                let call_id = item["call_id"]
                    .as_str()
                    .ok_or_else(|| invalid(format!("input[{i}]: `call_id` is required")))?;
                let output = output_text(i, &item["output"])?;
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
                Ok(())
            }
            "item_reference" => Err(invalid(format!(
                "input[{i}]: item references need stored responses; send the item itself"
            ))),
            other => Err(invalid(format!(
                "input[{i}]: items of type `{other}` are not supported here"
            ))),
        }
    }

    fn message(&mut self, i: usize, item: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
        let text = content_text(i, &item["content"])?;
        match item["role"].as_str() {
            Some("assistant") => {
                let turn = self.turn();
                turn.content.push_str(&text);
            }
            Some(role @ ("user" | "system" | "developer")) => {
                self.flush(out);
                // DeepSeek's chat takes instructions as `system`.
                let role = if role == "user" { "user" } else { "system" };
                out.push(json!({"role": role, "content": text}));
            }
            other => {
                return Err(invalid(format!(
                    "input[{i}]: role `{}` is not one of user, assistant, system, developer",
                    other.unwrap_or("?")
                )));
            }
        }
        Ok(())
    }

    fn call(&self, i: usize, item: &Value) -> Result<Value, ApiError> {
        let call_id = item["call_id"]
            .as_str()
            .ok_or_else(|| invalid(format!("input[{i}]: `call_id` is required")))?;
        let name = item["name"].as_str().unwrap_or("");
        let name = match item["namespace"].as_str() {
            Some(ns) => self
                .names
                .get(&(ns.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_else(|| format!("{ns}__{name}")),
            None => name.to_owned(),
        };
        let arguments = match item["type"].as_str() {
            Some("custom_tool_call") => json!({"input": item["input"]}).to_string(),
            _ => item["arguments"].as_str().unwrap_or("{}").to_owned(),
        };
        Ok(json!({
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }))
    }

    fn turn(&mut self) -> &mut Assistant {
        self.assistant.get_or_insert_with(Assistant::default)
    }

    fn flush(&mut self, out: &mut Vec<Value>) {
        let Some(turn) = self.assistant.take() else {
            return;
        };
        let mut message = json!({"role": "assistant", "content": turn.content});
        // DeepSeek checks that assistant messages in a tool loop carry the field; empty passes.
        if turn.reasoning.is_some() || !turn.calls.is_empty() {
            message["reasoning_content"] = turn.reasoning.unwrap_or_default().into();
        }
        if !turn.calls.is_empty() {
            message["tool_calls"] = Value::Array(turn.calls);
        }
        out.push(message);
    }
}

/// The text of a message's content: a string, or `input_text` / `output_text` parts.
fn content_text(i: usize, content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part["text"].as_str().unwrap_or(""));
                    }
                    Some("refusal") => text.push_str(part["refusal"].as_str().unwrap_or("")),
                    Some(other @ ("input_image" | "input_file" | "input_audio")) => {
                        return Err(invalid(format!(
                            "input[{i}]: `{other}` parts are not supported: DeepSeek models read text only"
                        )));
                    }
                    _ => {}
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(format!(
            "input[{i}]: `content` must be a string or parts"
        ))),
    }
}

fn output_text(i: usize, output: &Value) -> Result<String, ApiError> {
    match output {
        Value::String(s) => Ok(s.clone()),
        other => content_text(i, other),
    }
}

/// A reasoning item's text: its content, or what the gateway packed into `encrypted_content`,
/// or its summary.
fn reasoning_text(item: &Value) -> String {
    let parts = |key: &str, kind: &str| -> Option<String> {
        let parts = item[key].as_array()?;
        let text: Vec<&str> = parts
            .iter()
            .filter(|p| p["type"] == kind)
            .filter_map(|p| p["text"].as_str())
            .collect();
        (!text.is_empty()).then(|| text.concat())
    };
    parts("content", "reasoning_text")
        .or_else(|| {
            let packed = item["encrypted_content"]
                .as_str()?
                .strip_prefix(REASONING_TAG)?;
            String::from_utf8(STANDARD.decode(packed).ok()?).ok()
        })
        .or_else(|| parts("summary", "summary_text"))
        .unwrap_or_default()
}

/// `encrypted_content` for a reasoning item the gateway returns.
pub fn pack_reasoning(text: &str) -> String {
    format!("{REASONING_TAG}{}", STANDARD.encode(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::routing::catalog::ModelMode;
    use std::sync::LazyLock;

    static CHAT: LazyLock<ModelSpec> =
        LazyLock::new(|| ModelSpec::for_tests("deepseek-chat", ModelMode::NonThinking, true));

    fn chat(body: Value) -> (Value, Echo) {
        let t = to_chat(body.to_string().as_bytes(), |m| {
            (m == "deepseek-chat").then_some(&*CHAT)
        })
        .unwrap();
        (serde_json::from_slice(&t.chat_body).unwrap(), t.echo)
    }

    fn refuse(body: Value) -> String {
        to_chat(body.to_string().as_bytes(), |_| None)
            .unwrap_err()
            .body
            .message
    }

    #[test]
    fn a_codex_turn_with_a_tool_round_trip_becomes_a_chat_conversation() {
        let packed = pack_reasoning("I should list files.");
        let (c, echo) = chat(json!({
            "model": "deepseek-chat",
            "instructions": "Be terse.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ls"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": packed},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
                {"type": "function_call", "call_id": "call_2", "namespace": "multi_agent_v1", "name": "close_agent", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "closed"}]},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}, "strict": false},
                {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object"}}]},
                {"type": "web_search", "external_web_access": false}
            ],
            "tool_choice": "auto",
            "reasoning": {"effort": "medium", "summary": "auto"},
            "max_output_tokens": 100000,
            "store": false,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k",
            "stream": true
        }));
        let roles: Vec<&str> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "system",
                "system",
                "user",
                "assistant",
                "tool",
                "assistant",
                "tool",
                "user"
            ]
        );
        assert_eq!(
            c["messages"][3]["reasoning_content"],
            "I should list files."
        );
        assert_eq!(
            c["messages"][3]["tool_calls"][0]["function"]["name"],
            "exec_command"
        );
        assert_eq!(
            c["messages"][5]["tool_calls"][0]["function"]["name"],
            "multi_agent_v1__close_agent"
        );
        assert_eq!(c["messages"][5]["reasoning_content"], "");
        assert_eq!(c["messages"][6]["content"], "closed");
        let names: Vec<&str> = c["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["exec_command", "multi_agent_v1__close_agent"]);
        assert_eq!(echo.dropped_tools, ["web_search"]);
        assert_eq!(
            echo.namespaced["multi_agent_v1__close_agent"],
            ("multi_agent_v1".to_owned(), "close_agent".to_owned())
        );
        assert_eq!(c["thinking"], json!({"type": "enabled"}));
        assert_eq!(c["reasoning_effort"], "high");
        // Clamped to what deepseek-chat gives in thinking mode.
        assert_eq!(c["max_tokens"], 65536);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        assert!(c.get("store").is_none() && c.get("include").is_none());
    }

    #[test]
    fn effort_none_turns_thinking_off_and_json_mode_maps() {
        let (c, _) = chat(json!({
            "model": "deepseek-chat", "input": "hi",
            "reasoning": {"effort": "none"}, "text": {"format": {"type": "json_object"}}
        }));
        assert_eq!(c["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(c["thinking"], json!({"type": "disabled"}));
        assert!(c.get("reasoning_effort").is_none());
        assert_eq!(c["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn what_cannot_be_served_is_refused_by_name() {
        assert!(
            refuse(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}))
                .contains("previous_response_id")
        );
        assert!(
            refuse(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}))
                .contains("item references")
        );
        assert!(refuse(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})).contains("input_image"));
        assert!(refuse(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}})).contains("json_schema"));
        assert!(
            refuse(json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}))
                .contains("huge")
        );
        assert!(refuse(json!({"model": "m", "input": []})).contains("at least one"));
    }
}
