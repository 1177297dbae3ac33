//! The pipeline's stream as Responses API events: `response.created`, then for each output item
//! `response.output_item.added`, its deltas (`response.reasoning_text.delta`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`) and `.done` events,
//! then `response.completed` (or `response.incomplete`) with the whole response and its usage,
//! or `response.failed` when the stream broke. No `[DONE]`: the last event says how it ended.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::render::{Ending, Frame, ending, item_id, message_item, usage};
use crate::pipeline::respond::Event;
use crate::providers::reply::Reply;

/// The item being streamed.
#[derive(Debug)]
enum Open {
    Reasoning {
        index: usize,
        id: String,
        text: String,
    },
    Message {
        index: usize,
        id: String,
        text: String,
    },
}

#[derive(Debug)]
struct Call {
    index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
}

#[derive(Debug)]
pub struct StreamTranslator {
    frame: Frame,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// Function calls by their index in the chat stream.
    calls: BTreeMap<u64, Call>,
    /// Finished output items, by output index.
    output: BTreeMap<usize, Value>,
    /// Items opened so far (the next one's output index).
    opened: usize,
    finish_reason: Option<String>,
    usage: Option<Value>,
    done: bool,
}

impl StreamTranslator {
    pub fn new(frame: Frame) -> Self {
        Self {
            frame,
            sequence: 0,
            started: false,
            open: None,
            calls: BTreeMap::new(),
            output: BTreeMap::new(),
            opened: 0,
            finish_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Translates one event, appended to `out`.
    pub fn push(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            Event::Chunk { reply, priced } => {
                self.start(out);
                if let Some(u) = reply.usage() {
                    self.usage = Some(usage(&u.usage, priced.as_ref()));
                }
                self.chunk(reply, out);
            }
            Event::Done => self.finish(out),
            Event::Failed(error) => {
                self.start(out);
                let error = json!({"code": "server_error", "message": error.body.message});
                let ending = Ending {
                    error: Some(&error),
                    incomplete: None,
                };
                self.emit_response(out, "response.failed", "failed", ending);
                self.done = true;
            }
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let ending = Ending::default();
        self.emit_response(out, "response.created", "in_progress", ending);
        self.emit_response(out, "response.in_progress", "in_progress", ending);
    }

    fn chunk(&mut self, reply: &Reply, out: &mut Vec<u8>) {
        let choice = reply.first_choice();
        if let Some(delta) = choice.body() {
            if let Some(r) = delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                self.reasoning(r, out);
            }
            if let Some(t) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                self.text(t, out);
            }
            for call in &delta.tool_calls {
                self.call(
                    call.index.unwrap_or(0),
                    call.id.as_deref(),
                    call.function.name.as_deref(),
                    call.function.arguments.as_deref().unwrap_or(""),
                    out,
                );
            }
        }
        if let Some(finish) = choice.finish_reason {
            self.finish_reason = Some(finish);
        }
    }

    fn reasoning(&mut self, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let (index, id) = (self.next_index(), item_id("rs"));
            let mut item = self.frame.reasoning_item(&id, "", "in_progress");
            item["content"] = json!([]);
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.open = Some(Open::Reasoning {
                index,
                id,
                text: String::new(),
            });
        }
        let Some(Open::Reasoning { index, id, text }) = &mut self.open else {
            unreachable!("just opened")
        };
        text.push_str(delta);
        let kind = "response.reasoning_text.delta";
        write_delta(out, &mut self.sequence, kind, id, *index, Some(0), delta);
    }

    fn text(&mut self, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let (index, id) = (self.next_index(), item_id("msg"));
            let mut item = message_item(&id, "", "in_progress");
            item["content"] = json!([]);
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            let data =
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part});
            self.emit(out, "response.content_part.added", data);
            self.open = Some(Open::Message {
                index,
                id,
                text: String::new(),
            });
        }
        let Some(Open::Message { index, id, text }) = &mut self.open else {
            unreachable!("just opened")
        };
        text.push_str(delta);
        let kind = "response.output_text.delta";
        write_delta(out, &mut self.sequence, kind, id, *index, Some(0), delta);
    }

    fn call(
        &mut self,
        tool: u64,
        call_id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
        out: &mut Vec<u8>,
    ) {
        if !self.calls.contains_key(&tool) {
            self.close(out);
            let index = self.next_index();
            let call = Call {
                index,
                id: item_id("fc"),
                call_id: call_id.map_or_else(|| item_id("call"), str::to_owned),
                name: name.unwrap_or("").to_owned(),
                arguments: String::new(),
            };
            let item = self
                .frame
                .call_item(&call.id, &call.call_id, &call.name, "", "in_progress");
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.calls.insert(tool, call);
        }
        if arguments.is_empty() {
            return;
        }
        let call = self.calls.get_mut(&tool).expect("inserted above");
        call.arguments.push_str(arguments);
        let kind = "response.function_call_arguments.delta";
        write_delta(
            out,
            &mut self.sequence,
            kind,
            &call.id,
            call.index,
            None,
            arguments,
        );
    }

    fn next_index(&mut self) -> usize {
        self.opened += 1;
        self.opened - 1
    }

    /// Ends the open reasoning or message item.
    fn close(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            None => {}
            Some(Open::Reasoning { index, id, text }) => {
                let data =
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text});
                self.emit(out, "response.reasoning_text.done", data);
                let item = self.frame.reasoning_item(&id, &text, "completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.insert(index, item);
            }
            Some(Open::Message { index, id, text }) => {
                let data =
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text});
                self.emit(out, "response.output_text.done", data);
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let data =
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part});
                self.emit(out, "response.content_part.done", data);
                let item = message_item(&id, &text, "completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.output.insert(index, item);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        for call in std::mem::take(&mut self.calls).into_values() {
            let data = json!({"item_id": call.id, "output_index": call.index, "arguments": call.arguments});
            self.emit(out, "response.function_call_arguments.done", data);
            let item = self.frame.call_item(
                &call.id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            );
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": call.index, "item": item}),
            );
            self.output.insert(call.index, item);
        }
        let (status, incomplete) = ending(self.finish_reason.as_deref());
        let kind = match incomplete {
            Some(_) => "response.incomplete",
            None => "response.completed",
        };
        let ending = Ending {
            error: None,
            incomplete,
        };
        self.emit_response(out, kind, status, ending);
        self.done = true;
    }

    /// An event carrying the whole response object (its output items so far).
    fn emit_response(&mut self, out: &mut Vec<u8>, kind: &str, status: &str, ending: Ending<'_>) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"response\":");
        let output = self.output.values();
        self.frame
            .write_object(out, status, output, self.usage.as_ref(), ending);
        out.push(b',');
        self.end_data(out, kind);
    }

    /// An event with `data` (a JSON object) and the event's type and sequence number.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, data: Value) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(&mut *out, &data).expect("JSON values serialize");
        // The object stays open for the two fields every event has.
        debug_assert_eq!(out.last(), Some(&b'}'));
        out.pop();
        out.push(b',');
        self.end_data(out, kind);
    }

    /// Closes an event's data object with its type and sequence number.
    fn end_data(&mut self, out: &mut Vec<u8>, kind: &str) {
        use std::io::Write;
        let sequence = self.sequence;
        self.sequence += 1;
        let _ = write!(
            out,
            "\"type\":\"{kind}\",\"sequence_number\":{sequence}}}\n\n"
        );
    }
}

/// A delta event, written straight into the frame: one per token, so no JSON tree is built for
/// it (the bytes [`StreamTranslator::emit`] would write, field for field).
fn write_delta(
    out: &mut Vec<u8>,
    sequence: &mut u64,
    kind: &str,
    item_id: &str,
    output_index: usize,
    content_index: Option<usize>,
    delta: &str,
) {
    use std::io::Write;
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {\"item_id\":");
    serde_json::to_writer(&mut *out, item_id).expect("a string serializes");
    let _ = write!(out, ",\"output_index\":{output_index}");
    if let Some(c) = content_index {
        let _ = write!(out, ",\"content_index\":{c}");
    }
    out.extend_from_slice(b",\"delta\":");
    serde_json::to_writer(&mut *out, delta).expect("a string serializes");
    let _ = write!(
        out,
        ",\"type\":\"{kind}\",\"sequence_number\":{sequence}}}\n\n"
    );
    *sequence += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::remote::dialect::{Inner, normalize};
    use crate::surface::responses::request::Echo;

    fn chunk(value: Value) -> Event {
        Event::Chunk {
            reply: normalize(
                crate::wire::raw_object::RawObject::parse(&value.to_string()).unwrap(),
                Inner::Delta,
            ),
            priced: None,
        }
    }

    fn events(out: &[u8]) -> Vec<Value> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.split_once("\ndata: ").unwrap().1).unwrap())
            .collect()
    }

    #[test]
    fn reasoning_text_and_a_call_stream_as_three_items_then_completed() {
        let mut echo = Echo {
            model: "deepseek-reasoner".into(),
            ..Echo::default()
        };
        echo.namespaced
            .insert("ns__f".into(), ("ns".into(), "f".into()));
        let mut t = StreamTranslator::new(Frame::new(echo, true));
        let mut out = Vec::new();
        for e in [
            chunk(
                json!({"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "reasoning_content": "Hm"}}]}),
            ),
            chunk(json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "Sure"}}]})),
            chunk(
                json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "ns__f", "arguments": "{\"a\""}}]}}]}),
            ),
            chunk(
                json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}),
            ),
            chunk(
                json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_cache_hit_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 1}}}),
            ),
            Event::Done,
        ] {
            t.push(&e, &mut out);
        }
        let e = events(&out);
        let kinds: Vec<&str> = e.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert!(e.iter().enumerate().all(|(i, e)| e["sequence_number"] == i));
        let done = &e[17]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["id"], e[0]["response"]["id"]);
        assert!(done["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(done["model"], "deepseek-reasoner");
        assert_eq!(done["object"], "response");
        assert_eq!(done["error"], Value::Null);
        assert_eq!(done["incomplete_details"], Value::Null);
        assert_eq!(e[0]["response"]["status"], "in_progress");
        assert_eq!(e[0]["response"]["output"], json!([]));
        assert_eq!(e[0]["response"]["usage"], Value::Null);
        assert_eq!(done["usage"]["input_tokens"], 10);
        assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 4);
        assert_eq!(
            done["usage"]["output_tokens_details"]["reasoning_tokens"],
            1
        );
        let output = done["output"].as_array().unwrap();
        assert_eq!(output.len(), 3);
        assert_eq!(output[0]["type"], "reasoning");
        assert!(
            output[0]["encrypted_content"]
                .as_str()
                .unwrap()
                .starts_with("dsgw1:")
        );
        assert_eq!(output[1]["content"][0]["text"], "Sure");
        assert_eq!(output[2]["name"], "f");
        assert_eq!(output[2]["namespace"], "ns");
        assert_eq!(output[2]["arguments"], "{\"a\":1}");
        assert_eq!(output[2]["call_id"], "call_1");
    }

    #[test]
    fn a_delta_written_directly_is_the_event_emit_writes() {
        let delta = "a \"quote\", a\nnewline, \u{1F600} and \\ \u{7}";
        for content_index in [Some(0), None] {
            let mut t = StreamTranslator::new(Frame::new(Echo::default(), false));
            let (mut direct, mut tree) = (Vec::new(), Vec::new());
            let kind = "response.output_text.delta";
            let mut sequence = 0;
            write_delta(
                &mut direct,
                &mut sequence,
                kind,
                "msg_1",
                3,
                content_index,
                delta,
            );
            let mut data = json!({"item_id": "msg_1", "output_index": 3, "delta": delta});
            if let Some(c) = content_index {
                data["content_index"] = c.into();
            }
            t.emit(&mut tree, "response.output_text.delta", data);
            assert_eq!(events(&direct), events(&tree));
            assert!(direct.starts_with(b"event: response.output_text.delta\ndata: {"));
            assert!(direct.ends_with(b"}\n\n"));
        }
    }

    #[test]
    fn a_cut_stream_ends_failed_and_a_long_one_incomplete() {
        let mut t = StreamTranslator::new(Frame::new(Echo::default(), false));
        let mut out = Vec::new();
        t.push(
            &chunk(json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]})),
            &mut out,
        );
        let error = crate::wire::error::ApiError::bad_gateway("p", "stream interrupted");
        t.push(&Event::Failed(error), &mut out);
        let last = events(&out).pop().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["output"], json!([]), "nothing finished");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert!(
            last["response"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("interrupted")
        );

        let mut t = StreamTranslator::new(Frame::new(Echo::default(), false));
        let mut out = Vec::new();
        t.push(&chunk(json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "length"}]})), &mut out);
        t.push(&Event::Done, &mut out);
        let last = events(&out).pop().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }
}
