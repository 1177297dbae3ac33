//! The APIs clients speak, each a translation around the one pipeline: a surface parses its
//! wire form into the pipeline's typed request and renders the pipeline's typed answer (or
//! error) back into its own wire form. OpenAI / DeepSeek chat, beta chat and FIM
//! ([`openai`]), OpenAI's Responses API ([`responses`]), Anthropic Messages ([`anthropic`]), and
//! the spend a caller may read ([`account`]).

pub mod account;
pub mod admin;
pub mod anthropic;
pub mod openai;
pub mod responses;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode, header};

use crate::pipeline::Handled;
use crate::pipeline::admission::limits::RateHeaders;
use crate::pipeline::admission::policy::gate::CLASSIFICATION_HEADER;
use crate::pipeline::context::Caller;
use crate::pipeline::request::Request;
use crate::pipeline::respond::Event;
use crate::providers::call::Strict;
use crate::support::principal::Principal;
use crate::support::random::random_id;
use crate::wire::error::ApiError;

/// The request id the edge gave a request (`x-request-id`), or a fresh one.
pub fn request_id(parts: &Parts) -> Arc<str> {
    parts
        .extensions
        .get::<tower_http::request_id::RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map_or_else(|| Arc::from(random_id()), Arc::from)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the route has no authentication layer"))?;
        Ok(Self {
            principal,
            request_id: request_id(parts),
            classification: parts.headers.get(CLASSIFICATION_HEADER).cloned(),
        })
    }
}

/// The body as axum's one body limit (set for every route) let it through, or the error.
///
/// A copy: the body as received is a view into its connection's 8 KiB read buffer, and a
/// stream keeps its request body to the end (for usage estimates), so the view would pin that
/// buffer for the stream's life and make hyper allocate a second one for the connection.
/// Dropped here, before hyper reads again, the buffer is reused.
pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map(|b| Bytes::copy_from_slice(&b))
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
            _ if stalled(&rejection) => ApiError::body_timeout(),
            _ => ApiError::bad_request("Failed to read the request body."),
        })
}

/// Whether the body failed because it stopped arriving (the edge's body timeout).
fn stalled(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A body of SSE frames: every event that is ready at once (one upstream read's worth) is
/// rendered into one frame by `render`, so a stream leaves in as few writes as it came.
pub fn frames<S, F>(events: S, render: F) -> Body
where
    S: Stream<Item = Event> + Send + 'static,
    F: FnMut(&Event, &mut Vec<u8>) + Send + Unpin + 'static,
{
    Body::from_stream(Frames {
        events: Box::pin(events),
        render,
        ended: false,
    })
}

struct Frames<F> {
    events: Pin<Box<dyn Stream<Item = Event> + Send>>,
    render: F,
    ended: bool,
}

impl<F: FnMut(&Event, &mut Vec<u8>) + Unpin> Stream for Frames<F> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut out = Vec::new();
        while !this.ended {
            match this.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(event)) => (this.render)(&event, &mut out),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if out.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if out.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Bytes::from(out))))
        }
    }
}

/// A response with a JSON body.
pub fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A response streaming server-sent events.
pub fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Headers telling a client what the gateway changed about its request on the way (strict
/// flags it could not honour, tools no provider can run).
#[derive(Debug, Default)]
pub struct Notices(Vec<(HeaderName, String)>);

impl Notices {
    /// What the request itself says the gateway changed.
    pub fn of(request: &Result<Request, ApiError>) -> Self {
        let mut notices = Self::default();
        if let Ok(Request {
            strict: Strict::Dropped { why, .. },
            ..
        }) = request
        {
            notices.push("x-dsgw-strict", format!("dropped: {why}"));
        }
        notices
    }

    /// What serving the request changed: strict functions a provider could not enforce.
    pub fn served(&mut self, handled: &Handled) {
        if let Some(provider) = &handled.strict_unenforced_by {
            self.push(
                "x-dsgw-strict",
                format!("not enforced: provider {provider} cannot constrain tool arguments to their schemas"),
            );
        }
    }

    pub fn push(&mut self, name: &'static str, value: String) {
        self.0.push((HeaderName::from_static(name), value));
    }

    fn apply(&self, response: &mut Response) {
        for (name, value) in &self.0 {
            // Header values are visible ASCII: anything else is left out of the note.
            let value: String = value
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(512)
                .collect();
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name.clone(), v);
            }
        }
    }
}

/// What every answer to a pipeline request carries: its id, the caller's limits, and what the
/// gateway changed about the request.
pub fn finish(
    mut response: Response,
    caller: &Caller,
    rate_headers: &RateHeaders,
    notices: &Notices,
) -> Response {
    rate_headers.apply(response.headers_mut());
    notices.apply(&mut response);
    if let Ok(id) = HeaderValue::from_str(&caller.request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-dsgw-request-id"), id);
    }
    response
}
