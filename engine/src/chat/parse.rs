//! Completion text back to an assistant message, whole or incrementally while streaming.
//!
//! Lenient by design: a model may stop anywhere (max tokens) or write malformed markup; what
//! cannot be read as reasoning or a tool call stays visible as content, never dropped.

use serde_json::Value;

use super::{DSML, EOS, THINK_END, ToolCall};

const CALLS_START_SUFFIX: &str = "function_calls";

fn calls_start() -> String {
    format!("\n\n<{DSML}{CALLS_START_SUFFIX}")
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedMessage {
    pub content: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// Parses a whole completion (with or without the final end-of-sentence token).
pub fn parse_completion(text: &str, thinking: bool) -> ParsedMessage {
    let mut parser = StreamParser::new(thinking);
    let mut message = ParsedMessage::default();
    let deltas = parser.push(text.strip_suffix(EOS).unwrap_or(text));
    let (more, calls) = parser.finish();
    for delta in deltas.into_iter().chain(more) {
        match delta {
            Delta::Reasoning(r) => message
                .reasoning
                .get_or_insert_with(String::new)
                .push_str(&r),
            Delta::Content(c) => message.content.push_str(&c),
        }
    }
    if thinking && message.reasoning.is_none() {
        message.reasoning = Some(String::new());
    }
    message.tool_calls = calls;
    message
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Reasoning(String),
    Content(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reasoning,
    Content,
    ToolCalls,
}

/// Splits streamed text into reasoning and content deltas, holding back only the bytes that may
/// be the start of a marker, and collects DSML tool calls until the end.
#[derive(Debug)]
pub struct StreamParser {
    state: State,
    pending: String,
    calls: String,
    calls_marker: String,
}

/// The longest suffix of `text` that is a proper prefix of `marker`: the bytes to hold back while
/// streaming, in case the marker is arriving.
pub fn partial_marker_len(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| marker.is_char_boundary(n) && text.ends_with(&marker[..n]))
        .unwrap_or(0)
}

impl StreamParser {
    pub fn new(thinking: bool) -> Self {
        Self {
            state: if thinking {
                State::Reasoning
            } else {
                State::Content
            },
            pending: String::new(),
            calls: String::new(),
            calls_marker: calls_start(),
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<Delta> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Reasoning => {
                    if let Some(at) = self.pending.find(THINK_END) {
                        let reasoning: String = self.pending.drain(..at).collect();
                        self.pending.drain(..THINK_END.len());
                        push_delta(&mut out, Delta::Reasoning(reasoning));
                        self.state = State::Content;
                        continue;
                    }
                    let keep = partial_marker_len(&self.pending, THINK_END);
                    let ready: String = self.pending.drain(..self.pending.len() - keep).collect();
                    push_delta(&mut out, Delta::Reasoning(ready));
                    return out;
                }
                State::Content => {
                    if let Some(at) = self.pending.find(&self.calls_marker) {
                        let content: String = self.pending.drain(..at).collect();
                        push_delta(&mut out, Delta::Content(content));
                        self.calls = std::mem::take(&mut self.pending);
                        self.state = State::ToolCalls;
                        continue;
                    }
                    let keep = partial_marker_len(&self.pending, &self.calls_marker);
                    let ready: String = self.pending.drain(..self.pending.len() - keep).collect();
                    push_delta(&mut out, Delta::Content(ready));
                    return out;
                }
                State::ToolCalls => {
                    self.calls.push_str(&std::mem::take(&mut self.pending));
                    return out;
                }
            }
        }
    }

    /// Ends the stream: flushes held-back text and returns the tool calls. Markup that does not
    /// parse comes back as content.
    pub fn finish(&mut self) -> (Vec<Delta>, Vec<ToolCall>) {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Reasoning => push_delta(&mut out, Delta::Reasoning(rest)),
            State::Content => push_delta(&mut out, Delta::Content(rest)),
            State::ToolCalls => {}
        }
        let calls_text = std::mem::take(&mut self.calls);
        if calls_text.is_empty() {
            return (out, Vec::new());
        }
        match parse_calls(calls_text.strip_suffix(EOS).unwrap_or(&calls_text)) {
            Some(calls) => (out, calls),
            None => {
                push_delta(&mut out, Delta::Content(calls_text));
                (out, Vec::new())
            }
        }
    }
}

fn push_delta(out: &mut Vec<Delta>, delta: Delta) {
    let empty = match &delta {
        Delta::Reasoning(s) | Delta::Content(s) => s.is_empty(),
    };
    if !empty {
        out.push(delta);
    }
}

/// `"\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=...>...</｜DSML｜function_calls>"`.
fn parse_calls(text: &str) -> Option<Vec<ToolCall>> {
    let open = format!("\n\n<{DSML}function_calls>");
    let close = format!("</{DSML}function_calls>");
    let body = text.strip_prefix(&open)?;
    let body = body.trim_end().strip_suffix(&close)?;
    let invoke_open = format!("<{DSML}invoke name=\"");
    let invoke_close = format!("</{DSML}invoke>");
    let mut calls = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find(&invoke_open) {
        let after = &rest[start + invoke_open.len()..];
        let (name, after) = after.split_once("\">")?;
        let end = after.find(&invoke_close)?;
        calls.push(ToolCall {
            name: name.to_owned(),
            arguments: parse_parameters(&after[..end])?,
        });
        rest = &after[end + invoke_close.len()..];
    }
    (!calls.is_empty()).then_some(calls)
}

fn parse_parameters(text: &str) -> Option<String> {
    let open = format!("<{DSML}parameter name=\"");
    let close = format!("</{DSML}parameter>");
    let mut arguments = serde_json::Map::new();
    let mut rest = text;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let (name, after) = after.split_once("\" string=\"")?;
        let (is_string, after) = after.split_once("\">")?;
        let end = after.find(&close)?;
        let raw = &after[..end];
        let value = match is_string {
            "true" => Value::String(raw.to_owned()),
            _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
        };
        arguments.insert(name.to_owned(), value);
        rest = &after[end + close.len()..];
    }
    Some(Value::Object(arguments).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_reasoning_content_and_tool_calls() {
        let text = "Need weather.</think>Let me check.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>";
        let m = parse_completion(text, true);
        assert_eq!(m.reasoning.as_deref(), Some("Need weather."));
        assert_eq!(m.content, "Let me check.");
        assert_eq!(
            m.tool_calls,
            vec![ToolCall {
                name: "weather".into(),
                arguments: r#"{"city":"Paris","days":2}"#.into()
            }]
        );
    }

    #[test]
    fn streaming_at_every_split_matches_the_whole() {
        let text = "abc</think>hello\n\n world\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" string=\"false\">[1, 2]</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";
        let whole = parse_completion(text, true);
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for &(split, _) in &chars {
            let mut p = StreamParser::new(true);
            let mut deltas = p.push(&text[..split]);
            deltas.extend(p.push(&text[split..]));
            let (more, calls) = p.finish();
            deltas.extend(more);
            let content: String = deltas
                .iter()
                .filter_map(|d| match d {
                    Delta::Content(c) => Some(c.as_str()),
                    _ => None,
                })
                .collect();
            let reasoning: String = deltas
                .iter()
                .filter_map(|d| match d {
                    Delta::Reasoning(r) => Some(r.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(content, whole.content, "split {split}");
            assert_eq!(Some(reasoning), whole.reasoning);
            assert_eq!(calls, whole.tool_calls);
        }
        assert_eq!(whole.content, "hello\n\n world");
        assert_eq!(whole.tool_calls[0].arguments, r#"{"x":[1,2]}"#);
    }

    #[test]
    fn unfinished_thinking_is_all_reasoning_and_bad_markup_stays_content() {
        let m = parse_completion("still thinking", true);
        assert_eq!(m.reasoning.as_deref(), Some("still thinking"));
        assert_eq!(m.content, "");
        let m = parse_completion("x\n\n<｜DSML｜function_calls>garbage", false);
        assert_eq!(m.content, "x\n\n<｜DSML｜function_calls>garbage");
        assert!(m.tool_calls.is_empty());
    }
}
