//! DeepSeek-V3.2's chat format: the encoder from messages to prompt text, and the parser from
//! completion text back to `content`, `reasoning_content` and OpenAI `tool_calls`.
//!
//! V3.2 ships no Jinja template; this follows DeepSeek's reference encoder
//! (`encoding/encoding_dsv32.py`) byte for byte, including its DSML tool-call markup.

mod encode;
mod parse;

pub use encode::{EncodeError, encode};
pub use parse::{Delta, ParsedMessage, StreamParser, parse_completion, partial_marker_len};

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const USER: &str = "<｜User｜>";
pub const ASSISTANT: &str = "<｜Assistant｜>";
pub const THINK_START: &str = "<think>";
pub const THINK_END: &str = "</think>";
pub const DSML: &str = "｜DSML｜";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// A tool call as OpenAI clients send and receive it (`arguments` is JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            reasoning: None,
            tool_calls: Vec::new(),
        }
    }
}

/// Everything the encoder needs from a request.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// OpenAI `function` objects (`{"name","description","parameters"}`), in request order.
    pub tools: Vec<serde_json::Value>,
    /// `response_format` as sent, for the `## Response Format` section.
    pub response_format: Option<serde_json::Value>,
    pub thinking: bool,
}
