//! The pipeline's answer as a Responses API object: output items (reasoning, the assistant
//! message, function calls) and usage in OpenAI's names.

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
    pub id: String,
    pub created_at: u64,
    pub echo: Echo,
    /// Return reasoning as `encrypted_content` too (`include: ["reasoning.encrypted_content"]`).
    pub encrypted_reasoning: bool,
}

impl Frame {
    pub fn new(echo: Echo, encrypted_reasoning: bool) -> Self {
        Self {
            id: format!("resp_{}", random_hex(16)),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            echo,
            encrypted_reasoning,
        }
    }

    /// The response object with `status`, its output items so far and its usage.
    pub fn object(&self, status: &str, output: &[Value], usage: Option<Value>) -> Value {
        let e = &self.echo;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens,
            "model": e.model,
            "output": output,
            "parallel_tool_calls": e.parallel_tool_calls,
            "previous_response_id": null,
            "reasoning": {"effort": e.effort, "summary": null},
            "store": false,
            "temperature": e.temperature,
            "text": {"format": e.text_format},
            "tool_choice": e.tool_choice,
            "tools": e.tools,
            "top_p": e.top_p,
            "truncation": "disabled",
            "usage": usage,
            "metadata": e.metadata,
        })
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

/// A whole answer as a response object.
pub fn whole(whole: &Whole, frame: &Frame) -> Value {
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
    let (status, reason) = ending(choice.finish_reason.as_deref());
    let mut object = frame.object(status, &output, usage);
    if let Some(reason) = reason {
        object["incomplete_details"] = json!({ "reason": reason });
    }
    object
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

/// A fresh item id with OpenAI's prefix for its kind.
pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(16))
}
