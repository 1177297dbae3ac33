//! The engine's output in DeepSeek's shapes: a `chat.completion` (or FIM's `text_completion`)
//! body, or the chunks of a stream, usage with cache hits included. An engine that goes away
//! mid-generation is reported as a failure, never as a finished answer.

use std::collections::VecDeque;
use std::sync::Arc;

use dsgw_engine::chat::{Delta, StreamParser, ToolCall};
use dsgw_engine::generate::{Event as EngineEvent, FinishReason};
use dsgw_engine::tokenizer::Tokenizer;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::accounting::usage::Usage;
use crate::providers::reply::{Event, Events, Reply, ReplyUsage};
use crate::support::random::random_hex;
use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;

/// A generation in progress.
pub(super) struct Run {
    pub(super) events: UnboundedReceiver<EngineEvent>,
    pub(super) parser: StreamParser,
    pub(super) thinking: bool,
    /// A fill-in-the-middle run: answered as `text_completion`.
    pub(super) fim: bool,
    /// FIM with `echo: true`: the prompt, sent back before the completion.
    pub(super) echo: Option<String>,
    pub(super) tokenizer: Arc<Tokenizer>,
    pub(super) provider: String,
    pub(super) model: String,
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) reasoning: String,
}

/// How a run ended, in wire terms.
struct Ending {
    /// Text the parser held back until the end.
    rest: Vec<Delta>,
    finish_reason: &'static str,
    tool_calls: Vec<ToolCall>,
    usage: Usage,
}

/// One step of the engine.
enum Step {
    Deltas(Vec<Delta>),
    End(Ending),
    /// The engine went away (stopped or crashed) before finishing.
    Lost,
}

impl Run {
    async fn next(&mut self) -> Step {
        match self.events.recv().await {
            Some(EngineEvent::Text(text)) => {
                let deltas = self.parser.push(&text);
                Step::Deltas(self.track(deltas))
            }
            Some(EngineEvent::Finished { reason, usage }) => {
                let (rest, tool_calls) = self.parser.finish();
                let rest = self.track(rest);
                let reasoning_tokens = if self.reasoning.is_empty() {
                    0
                } else {
                    self.tokenizer
                        .encode(&self.reasoning)
                        .map_or(0, |ids| ids.len() + 1)
                };
                let usage = Usage {
                    cache_hit: usage.cached_tokens as u64,
                    cache_miss: (usage.prompt_tokens - usage.cached_tokens) as u64,
                    output: usage.completion_tokens as u64,
                    reasoning: (reasoning_tokens as u64).min(usage.completion_tokens as u64),
                    estimated: false,
                };
                let finish_reason = match (tool_calls.is_empty(), reason) {
                    (false, _) => "tool_calls",
                    (true, FinishReason::Stop) => "stop",
                    (true, FinishReason::Length) => "length",
                };
                Step::End(Ending {
                    rest,
                    finish_reason,
                    tool_calls,
                    usage,
                })
            }
            None => Step::Lost,
        }
    }

    fn track(&mut self, deltas: Vec<Delta>) -> Vec<Delta> {
        for d in &deltas {
            if let Delta::Reasoning(r) = d {
                self.reasoning.push_str(r);
            }
        }
        deltas
    }

    fn lost(&self, when: &str) -> ApiError {
        ApiError::provider_unavailable(&self.provider, &format!("the engine stopped {when}"))
    }

    /// Runs to the end: one whole completion.
    pub(super) async fn complete(mut self) -> Result<Reply, ApiError> {
        let mut content = String::new();
        let ending = loop {
            match self.next().await {
                Step::Deltas(deltas) => collect(&deltas, &mut content),
                Step::End(ending) => break ending,
                Step::Lost => return Err(self.lost("mid-generation")),
            }
        };
        collect(&ending.rest, &mut content);
        let usage = ending.usage.to_wire();
        let body = if self.fim {
            let text = format!("{}{content}", self.echo.as_deref().unwrap_or(""));
            json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": ending.finish_reason}],
                "usage": usage,
                "system_fingerprint": "fp_dsgw_local",
            })
        } else {
            let mut message = json!({"role": "assistant", "content": content});
            if self.thinking {
                message["reasoning_content"] = json!(self.reasoning);
            }
            if !ending.tool_calls.is_empty() {
                message["tool_calls"] = tool_calls_json(&ending.tool_calls, false);
            }
            json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": ending.finish_reason}],
                "usage": usage,
                "system_fingerprint": "fp_dsgw_local",
            })
        };
        Ok(reply(&body, Some(ending.usage)))
    }

    /// The run as a stream of chunks. Dropping the stream cancels the generation.
    pub(super) fn into_events(self) -> Events {
        let stream = Streaming {
            run: self,
            ready: VecDeque::new(),
            started: false,
            ended: false,
        };
        Box::pin(futures_util::stream::unfold(stream, |mut s| async move {
            s.next().await.map(|e| (e, s))
        }))
    }

    /// One chunk. Every chunk carries `usage: null`, as DeepSeek's do when usage was asked for
    /// (the gateway always asks); the surface removes it when the client did not.
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Reply {
        let body = if self.fim {
            let text = delta.get("content").and_then(Value::as_str).unwrap_or("");
            json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason}],
                "usage": null,
            })
        } else {
            json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": "fp_dsgw_local",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
                "usage": null,
            })
        };
        reply(&body, None)
    }

    /// The usage-only chunk that ends a stream.
    fn usage_chunk(&self, usage: Usage) -> Reply {
        let object = if self.fim {
            "text_completion"
        } else {
            "chat.completion.chunk"
        };
        let body = json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.model, "system_fingerprint": "fp_dsgw_local",
            "choices": [], "usage": usage.to_wire(),
        });
        reply(&body, Some(usage))
    }
}

/// A rendered object as a reply (local objects are small; one parse keeps one reply type).
fn reply(body: &Value, usage: Option<Usage>) -> Reply {
    let raw = RawObject::from_string(body.to_string()).expect("a JSON object parses");
    let usage = usage.map(|usage| ReplyUsage {
        usage,
        provider_cost: None,
        wire: usage.to_wire().to_string(),
    });
    Reply::new(raw, None, usage)
}

struct Streaming {
    run: Run,
    ready: VecDeque<Event>,
    started: bool,
    ended: bool,
}

impl Streaming {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let step = self.run.next().await;
            if !self.started {
                self.started = true;
                if matches!(step, Step::Lost) {
                    // Nothing was sent: the router may still try another deployment.
                    self.fail(self.run.lost("before its first token"));
                    continue;
                }
                self.opening();
            }
            match step {
                Step::Deltas(deltas) => self.deltas(&deltas),
                Step::End(ending) => self.end(ending),
                Step::Lost => self.fail(self.run.lost("mid-generation")),
            }
        }
    }

    /// What comes before the first delta: FIM's echoed prompt, or the assistant's role.
    fn opening(&mut self) {
        let run = &self.run;
        let first = if run.fim {
            run.echo
                .clone()
                .map(|prompt| run.chunk(json!({"content": prompt}), None))
        } else if run.thinking {
            Some(run.chunk(
                json!({"role": "assistant", "content": null, "reasoning_content": ""}),
                None,
            ))
        } else {
            Some(run.chunk(json!({"role": "assistant", "content": ""}), None))
        };
        self.ready.extend(first.map(Event::Reply));
    }

    fn deltas(&mut self, deltas: &[Delta]) {
        for d in deltas {
            let chunk = self.run.chunk(delta_json(d), None);
            self.ready.push_back(Event::Reply(chunk));
        }
    }

    fn end(&mut self, ending: Ending) {
        self.deltas(&ending.rest);
        let run = &self.run;
        if !ending.tool_calls.is_empty() {
            let calls = tool_calls_json(&ending.tool_calls, true);
            let chunk = run.chunk(json!({"tool_calls": calls}), None);
            self.ready.push_back(Event::Reply(chunk));
        }
        let last = run.chunk(json!({"content": ""}), Some(ending.finish_reason));
        self.ready.push_back(Event::Reply(last));
        self.ready
            .push_back(Event::Reply(run.usage_chunk(ending.usage)));
        self.ready.push_back(Event::Done);
        self.ended = true;
    }

    fn fail(&mut self, error: ApiError) {
        self.ready.push_back(Event::Failed(error));
        self.ended = true;
    }
}

/// Appends content deltas (reasoning is tracked by the run itself).
fn collect(deltas: &[Delta], content: &mut String) {
    for d in deltas {
        if let Delta::Content(c) = d {
            content.push_str(c);
        }
    }
}

fn tool_calls_json(calls: &[ToolCall], indexed: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({
                    "id": format!("call_{}", random_hex(12)),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                });
                if indexed {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

fn delta_json(delta: &Delta) -> Value {
    match delta {
        Delta::Reasoning(r) => json!({"content": null, "reasoning_content": r}),
        Delta::Content(c) => json!({"content": c, "reasoning_content": null}),
    }
}
