//! The respond phase: the committed answer on its way to the surface. A whole completion is
//! re-identified, priced and settled at once; a stream is read event by event, each chunk
//! counted (first token, usage) and re-identified as it passes, the deployment's health told
//! when the stream breaks, and the request settled when it ends, fails or is dropped.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::admission::policy::redact::{StreamReidentifier, Vault};
use super::routing::catalog::{Deployment, ModelSpec};
use super::routing::health::{Health, Observation};
use super::settle::Ticket;
use crate::accounting::pricing::Priced;
use crate::accounting::settlement::Outcome;
use crate::providers::reply::{Event as ProviderEvent, Events, Reply};
use crate::wire::error::ApiError;

/// What the pipeline answers a surface with.
pub enum Answer {
    Whole(Whole),
    Stream(Streaming),
}

/// A whole completion, settled.
pub struct Whole {
    pub reply: Reply,
    pub model: Arc<ModelSpec>,
    /// What its usage cost (absent when the provider reported none).
    pub priced: Option<Priced>,
}

/// One step of a streamed answer.
#[derive(Debug)]
pub enum Event {
    /// A chunk; `priced` is set on the one that carries the usage.
    Chunk {
        reply: Reply,
        priced: Option<Priced>,
    },
    /// The end of a complete answer.
    Done,
    /// The stream broke after its first byte.
    Failed(ApiError),
}

/// A stream on its way to the client.
pub struct Streaming {
    pub model: Arc<ModelSpec>,
    state: Box<State>,
}

struct State {
    provider: String,
    first: Option<ProviderEvent>,
    rest: Events,
    /// `None` once settled.
    ticket: Option<Ticket>,
    health: Arc<Health>,
    reidentify: Option<Reidentify>,
}

impl Whole {
    pub(super) fn settle(
        mut reply: Reply,
        model: Arc<ModelSpec>,
        vault: Option<&Vault>,
        mut ticket: Ticket,
    ) -> Self {
        if let Some(vault) = vault
            && let Some(choices) = reply.choices_json()
        {
            // Placeholders, and the values they stand for, hold nothing JSON escapes.
            let restored = vault.reidentify(choices);
            reply.set_choices(restored);
        }
        let record = ticket.record();
        record.upstream_finished();
        let priced = reply
            .usage()
            .and_then(|u| record.record_usage(u.usage, u.provider_cost));
        ticket.settle(Outcome::Completed);
        Self {
            reply,
            model,
            priced,
        }
    }
}

impl Streaming {
    pub(super) fn new(
        (first, rest): (ProviderEvent, Events),
        model: Arc<ModelSpec>,
        deployment: &Deployment,
        vault: Option<Arc<Vault>>,
        ticket: Ticket,
    ) -> Self {
        Self {
            model,
            state: Box::new(State {
                provider: deployment.provider.name.clone(),
                first: Some(first),
                rest,
                ticket: Some(ticket),
                health: deployment.health.clone(),
                reidentify: vault.map(|vault| Reidentify {
                    vault,
                    content: StreamReidentifier::default(),
                    reasoning: StreamReidentifier::default(),
                }),
            }),
        }
    }

    /// The events, to the end, which is always a `Done` or a `Failed`. Dropping the stream
    /// before its end settles the request as a client disconnect (and cancels the provider call).
    pub fn events(self) -> impl Stream<Item = Event> + Send + 'static {
        futures_util::stream::unfold(self.state, |mut state| async move {
            state.next().await.map(|event| (event, state))
        })
    }
}

impl State {
    async fn next(&mut self) -> Option<Event> {
        self.ticket.as_ref()?;
        let event = match self.first.take() {
            Some(first) => Some(first),
            None => self.rest.next().await,
        };
        Some(match event {
            Some(ProviderEvent::Reply(reply)) => self.chunk(reply),
            Some(ProviderEvent::Done) => {
                self.end(Outcome::Completed);
                Event::Done
            }
            Some(ProviderEvent::Failed(error)) => self.fail(error),
            // Providers end their streams with Done or Failed; anything else was cut.
            None => {
                let error = ApiError::bad_gateway(&self.provider, "stream ended before [DONE]");
                self.fail(error)
            }
        })
    }

    fn chunk(&mut self, mut reply: Reply) -> Event {
        if reply.out_of_capacity() {
            // Already streaming: the client keeps the partial answer; the deployment pays.
            self.health.observe(Observation::Failed);
        }
        if let Some(r) = self.reidentify.as_mut() {
            r.chunk(&mut reply);
        }
        let record = self.ticket.as_mut().map(Ticket::record);
        let priced = match (record, reply.usage()) {
            (Some(record), Some(u)) => record.record_usage(u.usage, u.provider_cost),
            (Some(record), None) => {
                record.first_token();
                None
            }
            (None, _) => None,
        };
        Event::Chunk { reply, priced }
    }

    fn fail(&mut self, error: ApiError) -> Event {
        tracing::warn!(provider = %self.provider, error = %error, "stream failed after first byte");
        self.health.observe(Observation::Failed);
        self.end(Outcome::StreamFailed);
        Event::Failed(error)
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            ticket.settle(outcome);
        }
    }
}

/// Stream re-identification state: placeholders may be split across deltas.
struct Reidentify {
    vault: Arc<Vault>,
    content: StreamReidentifier,
    reasoning: StreamReidentifier,
}

impl Reidentify {
    /// Re-identifies a chunk's first choice; held-back text is flushed on the finishing chunk.
    fn chunk(&mut self, reply: &mut Reply) {
        let Some(mut choices) = reply
            .choices_json()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
        else {
            return;
        };
        let Some(choice) = choices.get_mut(0) else {
            return;
        };
        let finished = !choice["finish_reason"].is_null();
        if let Some(text) = choice.get("text").and_then(|t| t.as_str()) {
            // A FIM stream: the text is the choice's own field.
            let mut text = self.content.push(&self.vault, text);
            if finished {
                text.push_str(&self.content.finish(&self.vault));
            }
            choice["text"] = Value::String(text);
        } else {
            for (field, state) in [
                ("content", &mut self.content),
                ("reasoning_content", &mut self.reasoning),
            ] {
                let delta = &mut choice["delta"];
                let mut text = match delta.get(field).and_then(|v| v.as_str()) {
                    Some(t) => state.push(&self.vault, t),
                    None => String::new(),
                };
                if finished {
                    text.push_str(&state.finish(&self.vault));
                }
                if delta.get(field).is_some_and(|v| v.is_string()) || !text.is_empty() {
                    delta[field] = Value::String(text);
                }
            }
        }
        reply.set_choices(choices.to_string());
    }
}
