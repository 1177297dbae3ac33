//! Messages to prompt text.

use std::fmt::Write;

use serde_json::Value;

use super::{ASSISTANT, BOS, Conversation, DSML, EOS, Message, Role, THINK_END, THINK_START, USER};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error(
        "messages[{0}]: a tool result must follow an assistant message with as many tool calls"
    )]
    OrphanToolResult(usize),
    #[error("messages[{index}]: tool call arguments are not a JSON object: {message}")]
    BadArguments { index: usize, message: String },
}

/// DeepSeek's instructions for tool use, placed after the system prompt.
fn tools_section(tools: &[Value]) -> String {
    let schemas: Vec<String> = tools.iter().map(to_json).collect();
    format!(
        "## Tools\n\n\
You have access to a set of tools you can use to answer the user's question.\n\
You can invoke functions by writing a \"<{DSML}function_calls>\" block like the following as part of your reply to the user:\n\
<{DSML}function_calls>\n\
<{DSML}invoke name=\"$FUNCTION_NAME\">\n\
<{DSML}parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</{DSML}parameter>\n\
...\n\
</{DSML}invoke>\n\
<{DSML}invoke name=\"$FUNCTION_NAME2\">\n\
...\n\
</{DSML}invoke>\n\
</{DSML}function_calls>\n\n\
String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. \
The \"string\" attribute should be set to \"true\" for string type parameters and \"false\" for other types (numbers, booleans, arrays, objects).\n\n\
If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:\n\n\
<{DSML}function_calls>\n\
...\n\
</{DSML}function_calls>\n\n\
<function_results>\n\
...\n\
</function_results>\n\n\
{THINK_START}...thinking about results{THINK_END}\n\n\
Here are the functions available in JSONSchema format:\n\
<functions>\n\
{}\n\
</functions>\n",
        schemas.join("\n")
    )
}

/// Python's `json.dumps(value, ensure_ascii=False)`: `", "` and `": "` separators.
fn to_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(": ");
                write_json(v, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn response_format_section(format: &Value) -> String {
    format!(
        "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{}",
        to_json(format)
    )
}

fn dsml_arguments(index: usize, arguments: &str) -> Result<String, super::encode::EncodeError> {
    let parsed: serde_json::Map<String, Value> =
        serde_json::from_str(arguments).map_err(|e| EncodeError::BadArguments {
            index,
            message: e.to_string(),
        })?;
    let params: Vec<String> = parsed
        .iter()
        .map(|(k, v)| {
            let (is_str, text) = match v {
                Value::String(s) => ("true", s.clone()),
                other => ("false", to_json(other)),
            };
            format!("<{DSML}parameter name=\"{k}\" string=\"{is_str}\">{text}</{DSML}parameter>")
        })
        .collect();
    Ok(params.join("\n"))
}

/// Renders a conversation as DeepSeek-V3.2 expects it, ending where the model continues.
///
/// Tools and the response format go with the first system message (one is added when there is
/// none, as vLLM and SGLang do). In thinking mode, reasoning of turns before the last user
/// message is dropped.
pub fn encode(conversation: &Conversation) -> Result<String, EncodeError> {
    let mut messages = conversation.messages.clone();
    let has_extras = !conversation.tools.is_empty() || conversation.response_format.is_some();
    let system_at = match messages.first() {
        Some(m) if m.role == Role::System => Some(0),
        _ if has_extras => {
            messages.insert(0, Message::new(Role::System, ""));
            Some(0)
        }
        _ => None,
    };
    let last_user = messages
        .iter()
        .rposition(|m| matches!(m.role, Role::User | Role::Developer));
    let thinking = conversation.thinking;
    let mut prompt = String::from(BOS);
    for (index, m) in messages.iter().enumerate() {
        let after_last_user = last_user.is_none_or(|u| index > u);
        let is_last_user = Some(index) == last_user;
        let mode_marker = if is_last_user && thinking {
            THINK_START
        } else {
            THINK_END
        };
        match m.role {
            Role::System => {
                prompt.push_str(&m.content);
                if system_at == Some(index) {
                    if !conversation.tools.is_empty() {
                        prompt.push_str("\n\n");
                        prompt.push_str(&tools_section(&conversation.tools));
                    }
                    if let Some(format) = &conversation.response_format {
                        prompt.push_str("\n\n");
                        prompt.push_str(&response_format_section(format));
                    }
                }
            }
            Role::Developer => {
                let _ = write!(
                    prompt,
                    "{USER}\n\n# The user's message is: {}{ASSISTANT}{mode_marker}",
                    m.content
                );
            }
            Role::User => {
                let _ = write!(prompt, "{USER}{}{ASSISTANT}{mode_marker}", m.content);
            }
            Role::Tool => {
                let assistant = messages[..index]
                    .iter()
                    .rposition(|p| p.role != Role::Tool)
                    .filter(|&a| messages[a].role == Role::Assistant)
                    .ok_or(EncodeError::OrphanToolResult(index))?;
                let order = index - assistant;
                let calls = messages[assistant].tool_calls.len();
                if order > calls {
                    return Err(EncodeError::OrphanToolResult(index));
                }
                if order == 1 {
                    prompt.push_str("\n\n<function_results>");
                }
                let _ = write!(prompt, "\n<result>{}</result>", m.content);
                if order == calls {
                    prompt.push_str("\n</function_results>");
                    let marker = if thinking && last_user.is_none_or(|u| index >= u) {
                        THINK_START
                    } else {
                        THINK_END
                    };
                    let _ = write!(prompt, "\n\n{marker}");
                }
            }
            Role::Assistant => {
                if thinking && after_last_user {
                    prompt.push_str(m.reasoning.as_deref().unwrap_or(""));
                    prompt.push_str(THINK_END);
                }
                prompt.push_str(&m.content);
                if !m.tool_calls.is_empty() {
                    let invokes: Vec<String> = m
                        .tool_calls
                        .iter()
                        .map(|call| {
                            Ok(format!(
                                "<{DSML}invoke name=\"{}\">\n{}\n</{DSML}invoke>",
                                call.name,
                                dsml_arguments(index, &call.arguments)?
                            ))
                        })
                        .collect::<Result<_, EncodeError>>()?;
                    let _ = write!(
                        prompt,
                        "\n\n<{DSML}function_calls>\n{}\n</{DSML}function_calls>",
                        invokes.join("\n")
                    );
                }
                prompt.push_str(EOS);
            }
        }
    }
    Ok(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolCall;
    use serde_json::json;

    fn assistant(content: &str, reasoning: &str, calls: &[(&str, &str)]) -> Message {
        Message {
            role: Role::Assistant,
            content: content.into(),
            reasoning: Some(reasoning.into()),
            tool_calls: calls
                .iter()
                .map(|(n, a)| ToolCall {
                    name: (*n).into(),
                    arguments: (*a).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn reference_example_in_thinking_mode() {
        // The example of DeepSeek's encoder documentation.
        let conversation = Conversation {
            messages: vec![
                Message::new(Role::User, "hello"),
                assistant("Hello! I am DeepSeek.", "The user greets.", &[]),
                Message::new(Role::User, "1+1=?"),
            ],
            thinking: true,
            ..Conversation::default()
        };
        assert_eq!(
            encode(&conversation).unwrap(),
            "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek.<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜><think>"
        );
    }

    #[test]
    fn non_thinking_mode_closes_the_think_block_at_once() {
        let conversation = Conversation {
            messages: vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "hi"),
            ],
            ..Conversation::default()
        };
        assert_eq!(
            encode(&conversation).unwrap(),
            "<｜begin▁of▁sentence｜>Be brief.<｜User｜>hi<｜Assistant｜></think>"
        );
    }

    #[test]
    fn tool_loop_renders_dsml_calls_and_results() {
        let conversation = Conversation {
            messages: vec![
                Message::new(Role::User, "Weather in Paris and Oslo?"),
                assistant(
                    "",
                    "Two lookups.",
                    &[
                        ("weather", r#"{"city": "Paris", "days": 2}"#),
                        ("weather", r#"{"city": "Oslo", "days": 2}"#),
                    ],
                ),
                Message::new(Role::Tool, "rain"),
                Message::new(Role::Tool, "snow"),
            ],
            tools: vec![json!({"name": "weather", "parameters": {"type": "object"}})],
            thinking: true,
            ..Conversation::default()
        };
        let text = encode(&conversation).unwrap();
        let expected_tail = "<｜User｜>Weather in Paris and Oslo?<｜Assistant｜><think>Two lookups.</think>\n\n\
<｜DSML｜function_calls>\n\
<｜DSML｜invoke name=\"weather\">\n\
<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n\
<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n\
</｜DSML｜invoke>\n\
<｜DSML｜invoke name=\"weather\">\n\
<｜DSML｜parameter name=\"city\" string=\"true\">Oslo</｜DSML｜parameter>\n\
<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n\
</｜DSML｜invoke>\n\
</｜DSML｜function_calls><｜end▁of▁sentence｜>\n\n\
<function_results>\n<result>rain</result>\n<result>snow</result>\n</function_results>\n\n<think>";
        assert!(text.ends_with(expected_tail), "{text}");
        assert!(text.starts_with("<｜begin▁of▁sentence｜>\n\n## Tools\n\nYou have access"));
        assert!(text.contains("<functions>\n{\"name\": \"weather\", \"parameters\": {\"type\": \"object\"}}\n</functions>\n<｜User｜>"));
    }

    #[test]
    fn a_tool_result_without_its_call_is_an_error() {
        let conversation = Conversation {
            messages: vec![Message::new(Role::User, "x"), Message::new(Role::Tool, "y")],
            ..Conversation::default()
        };
        assert_eq!(encode(&conversation), Err(EncodeError::OrphanToolResult(1)));
    }
}
