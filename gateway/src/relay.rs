//! Relays an upstream SSE stream to the client in DeepSeek's shape: chunks normalised as they
//! pass, usage captured, `[DONE]` only after a clean end, and an error event (never a silent end)
//! when the upstream breaks after the first byte.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::health::Health;
use crate::models::Deployment;
use crate::policy::redact::{StreamReidentifier, Vault};
use crate::routing::dispatch::{ByteStream, out_of_capacity};

use crate::error::ApiError;
use crate::pricing::Price;
use crate::raw_object::RawObject;
use crate::settlement::{Outcome, Settlement};
use crate::sse::SseParser;
use crate::upstream::dialect::normalize_chunk;

pub struct Relay {
    upstream: ByteStream,
    parser: SseParser,
    provider: String,
    idle_timeout: Duration,
    /// The model name the client used, as a JSON string.
    exposed_model_json: String,
    client_wants_usage: bool,
    price: Arc<Price>,
    /// Told when the stream breaks or the provider runs out of capacity mid-answer.
    health: Arc<Health>,
    /// Puts personal data back into the answer when a policy redacted the prompt.
    reidentify: Option<Reidentify>,
    /// `None` once the stream has ended; dropping it early records a client disconnect.
    settlement: Option<Settlement>,
}

impl Relay {
    /// Relays `upstream` (whose first event has already been checked) from `deployment`.
    pub fn new(
        upstream: ByteStream,
        deployment: &Deployment,
        idle_timeout: Duration,
        exposed_model_json: &str,
        client_wants_usage: bool,
        settlement: Settlement,
    ) -> Self {
        Self {
            upstream,
            parser: SseParser::default(),
            provider: deployment.provider.name.clone(),
            idle_timeout,
            exposed_model_json: exposed_model_json.to_owned(),
            client_wants_usage,
            price: deployment.price.clone(),
            health: deployment.health.clone(),
            reidentify: None,
            settlement: Some(settlement),
        }
    }

    /// Re-identifies the streamed text with `vault`'s originals.
    pub fn reidentifying(mut self, vault: Option<Arc<Vault>>) -> Self {
        self.reidentify = vault.map(|vault| Reidentify {
            vault,
            content: StreamReidentifier::default(),
            reasoning: StreamReidentifier::default(),
        });
        self
    }

    /// The client-facing body stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut relay| async move {
            relay.next_frame().await.map(|frame| (Ok(frame), relay))
        })
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(mut settlement) = self.settlement.take() {
            settlement.upstream_finished();
            settlement.finish(outcome);
        }
    }

    /// Ends the stream with an error event in DeepSeek's envelope.
    fn fail(&mut self, out: &mut BytesMut, error: &ApiError) {
        tracing::warn!(provider = %self.provider, error = %error, "stream failed after first byte");
        self.health.breaker.failure(std::time::Instant::now());
        write_event(out, error.envelope_json().as_bytes());
        self.end(Outcome::StreamFailed);
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            self.settlement.as_ref()?;
            let mut out = BytesMut::new();
            match tokio::time::timeout(self.idle_timeout, self.upstream.next()).await {
                Err(_) => {
                    let e = ApiError::upstream_timeout(&self.provider, "stream idle");
                    self.fail(&mut out, &e);
                }
                Ok(None) => {
                    let e = ApiError::bad_gateway(&self.provider, "stream ended before [DONE]");
                    self.fail(&mut out, &e);
                }
                Ok(Some(Err(_))) => {
                    let e = ApiError::bad_gateway(&self.provider, "stream interrupted");
                    self.fail(&mut out, &e);
                }
                Ok(Some(Ok(bytes))) => self.translate(&bytes, &mut out),
            }
            if !out.is_empty() {
                return Some(out.freeze());
            }
        }
    }

    fn translate(&mut self, bytes: &[u8], out: &mut BytesMut) {
        for event in self.parser.push(bytes) {
            if self.settlement.is_none() {
                return;
            }
            if event.data == "[DONE]" {
                write_event(out, b"[DONE]");
                self.end(Outcome::Completed);
                return;
            }
            let chunk: RawObject = match serde_json::from_str(&event.data) {
                Ok(v) => v,
                Err(_) => {
                    let e = ApiError::bad_gateway(&self.provider, "malformed stream chunk");
                    self.fail(out, &e);
                    return;
                }
            };
            if event.name.as_deref() == Some("error") || chunk.get("error").is_some() {
                // Pass the provider's own error envelope on, then stop.
                self.health.breaker.failure(std::time::Instant::now());
                write_event(out, event.data.as_bytes());
                self.end(Outcome::StreamFailed);
                return;
            }
            if out_of_capacity(&chunk) {
                // Already streaming: the client keeps the partial answer; the deployment pays.
                self.health.breaker.failure(std::time::Instant::now());
            }
            let normalized = normalize_chunk(
                &chunk,
                &self.exposed_model_json,
                self.client_wants_usage,
                Some(&self.price),
            );
            if let Some(settlement) = self.settlement.as_mut() {
                match normalized.usage {
                    Some(usage) => settlement.record_usage(usage),
                    None => settlement.first_token(),
                }
            }
            if let Some(mut body) = normalized.body {
                if let Some(r) = self.reidentify.as_mut() {
                    body = r.chunk(&body);
                }
                write_event(out, &body);
            }
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
    /// A chunk with its deltas re-identified; held-back text is flushed on the finishing chunk.
    fn chunk(&mut self, body: &[u8]) -> Vec<u8> {
        let Ok(mut chunk) = serde_json::from_slice::<serde_json::Value>(body) else {
            return body.to_vec();
        };
        let Some(choice) = chunk.pointer_mut("/choices/0") else {
            return body.to_vec();
        };
        let finished = !choice["finish_reason"].is_null();
        if let Some(text) = choice.get("text").and_then(|t| t.as_str()) {
            // A FIM stream: the text is the choice's own field.
            let mut text = self.content.push(&self.vault, text);
            if finished {
                text.push_str(&self.content.finish(&self.vault));
            }
            choice["text"] = serde_json::Value::String(text);
            return serde_json::to_vec(&chunk).expect("a JSON value serialises");
        }
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
                delta[field] = serde_json::Value::String(text);
            }
        }
        serde_json::to_vec(&chunk).expect("a JSON value serialises")
    }
}

fn write_event(out: &mut BytesMut, data: &[u8]) {
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}
