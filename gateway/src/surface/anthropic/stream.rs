//! The pipeline's stream, translated event by event into Anthropic's: `message_start`, then
//! `content_block_start` / `_delta` / `_stop` for each thinking, text and tool_use block,
//! `message_delta` with the stop reason and usage, `message_stop`; an `error` event if the
//! stream fails.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::response::{message_id, stop_reason, usage};
use crate::pipeline::respond::Event;
use crate::providers::reply::{Reply, ToolCall};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Thinking,
    Text,
    /// A tool call, by its index in the chat stream.
    Tool(u64),
}

#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    started: bool,
    /// The open block and its index.
    open: Option<(usize, Block)>,
    next_index: usize,
    tools: HashMap<u64, usize>,
    stop_reason: &'static str,
    usage: Option<Value>,
    done: bool,
}

impl StreamTranslator {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            stop_reason: "end_turn",
            usage: None,
            done: false,
        }
    }

    /// Translates the next events of the stream.
    pub fn push(&mut self, events: &[Event]) -> Bytes {
        let mut out = BytesMut::new();
        for event in events {
            self.push_event(event, &mut out);
        }
        out.freeze()
    }

    /// Translates one event, appended to `out`.
    pub fn push_into(&mut self, event: &Event, out: &mut Vec<u8>) {
        let mut frames = BytesMut::new();
        self.push_event(event, &mut frames);
        out.extend_from_slice(&frames);
    }

    fn push_event(&mut self, event: &Event, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            Event::Chunk { reply, .. } => self.chunk(reply, out),
            Event::Done => self.finish(out),
            Event::Failed(error) => self.fail(out, &error.body.message),
        }
    }

    /// The stream ended: one that never said it was done (or failed) was cut.
    pub fn end(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        if !self.done {
            self.fail(&mut out, "the upstream stream ended early");
        }
        out.freeze()
    }

    fn chunk(&mut self, reply: &Reply, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            event(
                out,
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": message_id(reply), "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            );
        }
        if let Some(u) = reply.usage() {
            self.usage = Some(usage(Some(&u.usage)));
        }
        let choice = reply.first_choice();
        if let Some(delta) = choice.body() {
            if let Some(r) = delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                let index = self.ensure(out, Block::Thinking, None);
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": r}}),
                );
            }
            if let Some(t) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                let index = self.ensure(out, Block::Text, None);
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            for call in &delta.tool_calls {
                let tool = call.index.unwrap_or(0);
                let index = self.ensure(out, Block::Tool(tool), Some(call));
                if let Some(args) = call.function.arguments.as_deref().filter(|a| !a.is_empty()) {
                    event(
                        out,
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                    );
                }
            }
        }
        if let Some(finish) = choice.finish_reason.as_deref() {
            self.stop_reason = stop_reason(finish);
        }
    }

    /// The index of an open block of this kind, starting one (and closing the open one) if needed.
    fn ensure(&mut self, out: &mut BytesMut, block: Block, call: Option<&ToolCall>) -> usize {
        if let Some((index, open)) = self.open
            && open == block
        {
            return index;
        }
        if let Block::Tool(tool) = block
            && let Some(&index) = self.tools.get(&tool)
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        let content_block = match block {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Block::Text => json!({"type": "text", "text": ""}),
            Block::Tool(tool) => {
                self.tools.insert(tool, index);
                let id = call.and_then(|c| c.id.as_deref());
                let name = call.and_then(|c| c.function.name.as_deref());
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
        };
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        );
        self.open = Some((index, block));
        index
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.close(out);
        let usage = self
            .usage
            .take()
            .unwrap_or_else(|| json!({"output_tokens": 0}));
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": null}, "usage": usage}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }

    fn fail(&mut self, out: &mut BytesMut, message: &str) {
        event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
        self.done = true;
    }
}

fn event(out: &mut BytesMut, name: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(value: &Value) -> Event {
        Event::Chunk {
            reply: crate::providers::remote::dialect::normalize(
                crate::wire::raw_object::RawObject::parse(&value.to_string()).unwrap(),
                crate::providers::remote::dialect::Inner::Delta,
            ),
            priced: None,
        }
    }

    fn events(text: &str) -> Vec<(String, Value)> {
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.trim_start_matches("event: ").to_owned(),
                    serde_json::from_str(data.trim_start_matches("data: ")).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn reasoning_text_and_a_tool_call_become_three_blocks() {
        let chunks = [
            json!({"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "reasoning_content": "Hm"}, "finish_reason": null}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "Sure"}, "finish_reason": null}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"ci"}}]}, "finish_reason": null}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "ty\":1}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_cache_hit_tokens": 0}}),
        ];
        let mut t = StreamTranslator::new("claude-x");
        let mut text = String::new();
        for c in &chunks {
            text.push_str(std::str::from_utf8(&t.push(&[chunk(c)])).unwrap());
        }
        text.push_str(std::str::from_utf8(&t.push(&[Event::Done])).unwrap());
        assert!(t.end().is_empty());
        let names: Vec<String> = events(&text).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let e = events(&text);
        assert_eq!(e[7].1["content_block"]["name"], "w");
        assert_eq!(e[9].1["delta"]["partial_json"], "ty\":1}");
        assert_eq!(e[11].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(e[11].1["usage"]["input_tokens"], 10);
    }

    #[test]
    fn a_cut_or_failed_stream_ends_with_an_error_event() {
        let mut t = StreamTranslator::new("m");
        let _ = t.push(&[chunk(
            &json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}),
        )]);
        let end = String::from_utf8(t.end().to_vec()).unwrap();
        assert!(end.starts_with("event: error\n"), "{end}");
        let mut t = StreamTranslator::new("m");
        let failed = Event::Failed(crate::wire::error::ApiError::from_stream_error(
            "p",
            br#"{"error":{"message":"boom"}}"#,
        ));
        let out = t.push(&[failed]);
        assert!(String::from_utf8_lossy(&out).contains("boom"));
        assert!(t.end().is_empty());
    }
}
