//! An upstream SSE stream read as events: each chunk normalised to DeepSeek's shape as it
//! arrives, `[DONE]` as the clean end, and every way a stream breaks (cut, stalled past the idle
//! timeout, garbled, an error event) as one failure event, after which nothing more is read.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::dialect::{self, Inner};
use crate::providers::reply::{Event, Events};
use crate::support::secret::Secret;
use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;
use crate::wire::sse::{Event as SseEvent, SseParser};

/// How long the end of a body may take after its `[DONE]`.
const DRAIN: Duration = Duration::from_millis(20);

struct Relay {
    upstream: Incoming,
    parser: SseParser,
    provider: String,
    /// The provider's key, scrubbed from the error events it relays.
    key: Option<Secret>,
    /// The provider connection slot this stream holds until it is dropped.
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    /// Events parsed and not yet handed on.
    pending: VecDeque<SseEvent>,
    /// Whether an event has been handed on (the messages of failures differ before and after).
    started: bool,
    /// A `Done` or `Failed` was handed on: nothing follows.
    ended: bool,
}

/// The events of `response`'s body, from `provider`.
pub fn events(
    response: http::Response<Incoming>,
    provider: String,
    key: Option<Secret>,
    idle_timeout: Duration,
    slot: OwnedSemaphorePermit,
) -> Events {
    let relay = Relay {
        _slot: slot,
        upstream: response.into_body(),
        parser: SseParser::default(),
        provider,
        key,
        idle_timeout,
        pending: VecDeque::new(),
        started: false,
        ended: false,
    };
    // Boxed, so each event's future moves a pointer into and out of the unfold, not the
    // relay itself.
    Box::pin(futures_util::stream::unfold(
        Box::new(relay),
        |mut relay| async move { relay.next().await.map(|event| (event, relay)) },
    ))
}

impl Relay {
    async fn next(&mut self) -> Option<Event> {
        while !self.ended {
            if let Some(sse) = self.pending.pop_front() {
                let event = self.event(sse);
                self.ended = !matches!(event, Event::Reply(_));
                self.started = true;
                if matches!(event, Event::Done) {
                    self.drain().await;
                }
                return Some(event);
            }
            // Before the first event the dispatcher's first-event deadline bounds the wait
            // (keep-alive comments while a provider queues must not count as progress).
            let read = if self.started {
                tokio::time::timeout(self.idle_timeout, self.chunk()).await
            } else {
                Ok(self.chunk().await)
            };
            let failure = match read {
                Ok(Some(Ok(bytes))) => {
                    self.parser.push_into(&bytes, &mut self.pending);
                    continue;
                }
                Err(_) => ApiError::upstream_timeout(&self.provider, "stream idle"),
                Ok(None) if self.started => {
                    ApiError::bad_gateway(&self.provider, "stream ended before [DONE]")
                }
                Ok(None) => {
                    ApiError::bad_gateway(&self.provider, "stream ended before its first event")
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(provider = %self.provider, error = %e, "upstream stream error");
                    ApiError::bad_gateway(&self.provider, "stream interrupted")
                }
            };
            self.ended = true;
            return Some(Event::Failed(failure));
        }
        None
    }

    /// Reads the body to its end after `[DONE]`, so its connection goes back to the pool: a
    /// body dropped unread closes its connection, and every stream then paid a new connection
    /// (a TLS handshake, with a real provider). The end comes with `[DONE]` or right after; a
    /// provider slower than [`DRAIN`] costs its connection, never the client more than that.
    async fn drain(&mut self) {
        let rest = async { while let Some(Ok(_)) = self.upstream.frame().await {} };
        let _ = tokio::time::timeout(DRAIN, rest).await;
    }

    /// The body's next bytes (trailers, which SSE has none of, are skipped).
    async fn chunk(&mut self) -> Option<Result<Bytes, hyper::Error>> {
        loop {
            match self.upstream.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(bytes) => return Some(Ok(bytes)),
                    Err(_trailers) => continue,
                },
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// One SSE event as a stream event.
    fn event(&self, sse: SseEvent) -> Event {
        if sse.data == "[DONE]" {
            return Event::Done;
        }
        let error_event = sse.name.as_deref() == Some("error");
        // The chunk keeps the event's text: parsed where it arrived, never copied.
        let Ok(chunk) = RawObject::from_string(sse.data) else {
            let what = if self.started {
                "malformed stream chunk"
            } else {
                "malformed first stream chunk"
            };
            return Event::Failed(ApiError::bad_gateway(&self.provider, what));
        };
        if error_event || chunk.get("error").is_some() {
            return Event::Failed(if self.started {
                ApiError::from_stream_error(&self.provider, chunk.text().as_bytes())
                    .scrubbed(&self.key.iter().map(Secret::expose).collect::<Vec<_>>())
            } else {
                ApiError::bad_gateway(&self.provider, "error event before the first chunk")
            });
        }
        Event::Reply(dialect::normalize(chunk, Inner::Delta))
    }
}
