//! An upstream SSE stream read as events: each chunk normalised to DeepSeek's shape as it
//! arrives, `[DONE]` as the clean end, and every way a stream breaks (cut, stalled past the idle
//! timeout, garbled, an error event) as one failure event, after which nothing more is read.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::dialect::{self, Inner};
use crate::providers::reply::{Event, Events};
use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;
use crate::wire::sse::SseParser;

type Body = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct Relay {
    upstream: Body,
    parser: SseParser,
    provider: String,
    idle_timeout: Duration,
    /// Events parsed from the last read, not yet handed on.
    ready: VecDeque<Event>,
    /// Whether an event has been handed on (the messages of failures differ before and after).
    started: bool,
    ended: bool,
}

/// The events of `response`'s body, from `provider`.
pub fn events(response: reqwest::Response, provider: String, idle_timeout: Duration) -> Events {
    let relay = Relay {
        upstream: Box::pin(response.bytes_stream()),
        parser: SseParser::default(),
        provider,
        idle_timeout,
        ready: VecDeque::new(),
        started: false,
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(
        relay,
        |mut relay| async move { relay.next().await.map(|event| (event, relay)) },
    ))
}

impl Relay {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.started = true;
                return Some(event);
            }
            if self.ended {
                return None;
            }
            // Before the first event the dispatcher's first-event deadline bounds the wait
            // (keep-alive comments while a provider queues must not count as progress).
            let read = if self.started {
                tokio::time::timeout(self.idle_timeout, self.upstream.next()).await
            } else {
                Ok(self.upstream.next().await)
            };
            match read {
                Err(_) => {
                    self.fail(ApiError::upstream_timeout(&self.provider, "stream idle"));
                }
                Ok(None) => {
                    let what = if self.started {
                        "stream ended before [DONE]"
                    } else {
                        "stream ended before its first event"
                    };
                    self.fail(ApiError::bad_gateway(&self.provider, what));
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(provider = %self.provider, error = %e, "upstream stream error");
                    self.fail(ApiError::bad_gateway(&self.provider, "stream interrupted"));
                }
                Ok(Some(Ok(bytes))) => self.parse(&bytes),
            }
        }
    }

    fn fail(&mut self, error: ApiError) {
        self.ready.push_back(Event::Failed(error));
        self.ended = true;
    }

    fn parse(&mut self, bytes: &[u8]) {
        for event in self.parser.push(bytes) {
            if event.data == "[DONE]" {
                self.ready.push_back(Event::Done);
                self.ended = true;
                return;
            }
            let Ok(chunk) = serde_json::from_str::<RawObject>(&event.data) else {
                let what = if self.started || !self.ready.is_empty() {
                    "malformed stream chunk"
                } else {
                    "malformed first stream chunk"
                };
                self.fail(ApiError::bad_gateway(&self.provider, what));
                return;
            };
            if event.name.as_deref() == Some("error") || chunk.get("error").is_some() {
                let error = if self.started || !self.ready.is_empty() {
                    ApiError::from_stream_error(&self.provider, event.data.as_bytes())
                } else {
                    ApiError::bad_gateway(&self.provider, "error event before the first chunk")
                };
                self.fail(error);
                return;
            }
            self.ready
                .push_back(Event::Reply(dialect::normalize(chunk, Inner::Delta)));
        }
    }
}
