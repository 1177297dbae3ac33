//! The pipeline's answer as a Responses API object: output items (reasoning, the assistant
//! message, function calls) and usage in OpenAI's names.

use serde::Serialize;
use serde_json::{Value, json};

use super::request::{Echo, pack_reasoning};
use crate::accounting::pricing::Priced;
use crate::accounting::usage::Usage;
use crate::pipeline::respond::Whole;
use crate::providers::reply::{Choice, ToolCall};
use crate::support::random::random_hex;

/// One response's identity and what it echoes of its request.
#[derive(Debug)]
pub struct Frame {
    pub echo: Echo,
    /// Return reasoning as `encrypted_content` too (`include: ["reasoning.encrypted_content"]`).
    pub encrypted_reasoning: bool,
    /// The response object's fields that never change (its id, what it echoes of the request),
    /// serialized once: a stream carries the object three times or more.
    fixed: String,
}

/// The response object's fields that never change, borrowed from the echo to serialize them.
#[derive(Serialize)]
struct Fixed<'a> {
    id: &'a str,
    object: &'a str,
    created_at: u64,
    instructions: Option<&'a str>,
    max_output_tokens: Option<i64>,
    model: &'a str,
    parallel_tool_calls: bool,
    previous_response_id: Option<&'a str>,
    reasoning: Reasoning<'a>,
    store: bool,
    temperature: Option<f64>,
    text: TextFormat<'a>,
    tool_choice: &'a Value,
    tools: &'a [Value],
    top_p: Option<f64>,
    truncation: &'a str,
    metadata: &'a Value,
}

#[derive(Serialize)]
struct Reasoning<'a> {
    effort: Option<&'a str>,
    summary: Option<&'a str>,
}

#[derive(Serialize)]
struct TextFormat<'a> {
    format: &'a Value,
}

/// How a response object ends, besides its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending<'a> {
    pub error: Option<&'a Value>,
    /// Why it is incomplete (`max_output_tokens`, `content_filter`).
    pub incomplete: Option<&'a str>,
}

impl Frame {
    pub fn new(echo: Echo, encrypted_reasoning: bool) -> Self {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("resp_{}", random_hex(16));
        let fixed = serde_json::to_string(&Fixed {
            id: &id,
            object: "response",
            created_at,
            instructions: echo.instructions.as_deref(),
            max_output_tokens: echo.max_output_tokens,
            model: &echo.model,
            parallel_tool_calls: echo.parallel_tool_calls,
            previous_response_id: None,
            reasoning: Reasoning {
                effort: echo.effort.as_deref(),
                summary: None,
            },
            store: false,
            temperature: echo.temperature,
            text: TextFormat {
                format: &echo.text_format,
            },
            tool_choice: &echo.tool_choice,
            tools: &echo.tools,
            top_p: echo.top_p,
            truncation: "disabled",
            metadata: &echo.metadata,
        })
        .expect("strings and JSON values serialize");
        Self {
            echo,
            encrypted_reasoning,
            fixed,
        }
    }

    /// Writes the response object with `status`, its output items so far and its usage.
    pub fn write_object<'v>(
        &self,
        out: &mut Vec<u8>,
        status: &str,
        output: impl IntoIterator<Item = &'v Value>,
        usage: Option<&Value>,
        ending: Ending<'_>,
    ) {
        // `fixed` is a JSON object: its fields, then the changing ones, in one object.
        out.extend_from_slice(&self.fixed.as_bytes()[..self.fixed.len() - 1]);
        out.extend_from_slice(b",\"status\":");
        put(out, &status);
        out.extend_from_slice(b",\"output\":[");
        for (i, item) in output.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            put(out, item);
        }
        out.extend_from_slice(b"],\"usage\":");
        put(out, &usage);
        out.extend_from_slice(b",\"error\":");
        put(out, &ending.error);
        out.extend_from_slice(b",\"incomplete_details\":");
        match ending.incomplete {
            Some(reason) => put(out, &json!({ "reason": reason })),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }

    /// A reasoning item with its text.
    pub fn reasoning_item(&self, id: &str, text: &str, status: &str) -> Value {
        let mut item = json!({
            "type": "reasoning",
            "id": id,
            "summary": [],
            "content": [{"type": "reasoning_text", "text": text}],
            "status": status,
        });
        if self.encrypted_reasoning {
            item["encrypted_content"] = pack_reasoning(text).into();
        }
        item
    }

    /// A function call item, with its namespace when the tool was in one.
    pub fn call_item(
        &self,
        id: &str,
        call_id: &str,
        name: &str,
        args: &str,
        status: &str,
    ) -> Value {
        let mut item = json!({
            "type": "function_call",
            "id": id,
            "call_id": call_id,
            "name": name,
            "arguments": args,
            "status": status,
        });
        if let Some((namespace, inner)) = self.echo.namespaced.get(name) {
            item["name"] = inner.clone().into();
            item["namespace"] = namespace.clone().into();
        }
        item
    }
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

/// Usage in the Responses API's names (and dsgw's cost, as on every surface).
pub fn usage(usage: &Usage, priced: Option<&Priced>) -> Value {
    let mut v = json!({
        "input_tokens": usage.prompt(),
        "input_tokens_details": {"cached_tokens": usage.cache_hit},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.prompt() + usage.output,
    });
    if let Some(priced) = priced {
        v["dsgw_cost"] = priced.to_json();
    }
    v
}

/// The status a chat `finish_reason` ends a response with, and why when it is not complete.
pub fn ending(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A whole answer as a response object, serialized.
pub fn whole(whole: &Whole, frame: &Frame) -> Vec<u8> {
    let choice: Choice = whole.reply.first_choice();
    let mut output = Vec::new();
    if let Some(m) = choice.body() {
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            output.push(frame.reasoning_item(&item_id("rs"), r, "completed"));
        }
        let text = m.content.as_deref().unwrap_or("");
        if !text.is_empty() || m.tool_calls.is_empty() {
            output.push(message_item(&item_id("msg"), text, "completed"));
        }
        for call in &m.tool_calls {
            output.push(call_item(frame, call));
        }
    }
    let usage = whole
        .reply
        .usage()
        .map(|u| usage(&u.usage, whole.priced.as_ref()));
    let (status, incomplete) = ending(choice.finish_reason.as_deref());
    let mut out = Vec::with_capacity(1024);
    let end = Ending {
        error: None,
        incomplete,
    };
    frame.write_object(&mut out, status, &output, usage.as_ref(), end);
    out
}

fn call_item(frame: &Frame, call: &ToolCall) -> Value {
    let call_id = call
        .id
        .clone()
        .unwrap_or_else(|| format!("call_{}", random_hex(12)));
    frame.call_item(
        &item_id("fc"),
        &call_id,
        call.function.name.as_deref().unwrap_or(""),
        call.function.arguments.as_deref().unwrap_or("{}"),
        "completed",
    )
}

fn put(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    serde_json::to_writer(out, value).expect("strings and JSON values serialize");
}

/// A fresh item id with OpenAI's prefix for its kind.
pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(16))
}
