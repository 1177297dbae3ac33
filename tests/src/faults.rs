//! Failures a fake upstream can be told to produce for every request on a path, so a test can
//! point one deployment at a healthy fake and another at a broken one:
//! `/fault/{kind}/chat/completions` with kind
//!
//! - `500`, `503`, `429` (with `Retry-After: 1`), or any other status: an error envelope;
//! - `hang`: never sends response headers;
//! - `stall`: headers, then nothing (streams: no first event; JSON: no body);
//! - `stall-mid`: streams send their first chunk, then nothing; JSON sends half a body, then nothing;
//! - `malformed`: a 200 whose body (or first event) is not JSON;
//! - `truncated`: half of the body (or of the first event), then the connection breaks;
//! - `cut-mid`: streams break after a few chunks (after the first byte reached the client);
//! - `isr`: a normal answer that ends with `finish_reason: "insufficient_system_resource"`;
//! - `flaky-P`: a 500 for P percent of requests (chosen at random), a normal answer otherwise.

use std::hash::BuildHasher;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Hang,
    Stall,
    StallMid,
    Malformed,
    Truncated,
    CutMid,
    InsufficientResource,
    Flaky(u8),
}

impl Fault {
    pub fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "hang" => Self::Hang,
            "stall" => Self::Stall,
            "stall-mid" => Self::StallMid,
            "malformed" => Self::Malformed,
            "truncated" => Self::Truncated,
            "cut-mid" => Self::CutMid,
            "isr" => Self::InsufficientResource,
            _ => match kind.strip_prefix("flaky-") {
                Some(p) => Self::Flaky(p.parse().ok().filter(|p| *p <= 100)?),
                None => Self::Status(kind.parse().ok().filter(|s| (400..600).contains(s))?),
            },
        })
    }

    /// Whether this request should fail (always, except for a flaky fault's lucky draws).
    pub fn strikes(self) -> bool {
        match self {
            Self::Flaky(p) => {
                let draw = std::collections::hash_map::RandomState::new().hash_one(0u8) % 100;
                draw < u64::from(p)
            }
            _ => true,
        }
    }
}

/// The answers of faults that break the protocol rather than refuse the request.
pub(crate) fn broken_response(fault: Fault, streaming: bool) -> Option<Response> {
    let first_chunk = r#"data: {"id":"fake-broken","object":"chat.completion.chunk","created":1766977481,"model":"deepseek-chat","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#;
    let whole = r#"{"id":"fake-broken","object":"chat.completion","created":1766977481,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
    let (head, then): (String, Then) = match (fault, streaming) {
        (Fault::Stall, _) => (String::new(), Then::Stall),
        (Fault::StallMid, true) => (format!("{first_chunk}\n\n"), Then::Stall),
        (Fault::StallMid, false) => (whole[..whole.len() / 2].to_owned(), Then::Stall),
        (Fault::Malformed, true) => ("data: {not json at all\n\n".to_owned(), Then::End),
        (Fault::Malformed, false) => ("<html>502 Bad Gateway</html>".to_owned(), Then::End),
        (Fault::Truncated, true) => (first_chunk[..first_chunk.len() / 2].to_owned(), Then::Break),
        (Fault::Truncated, false) => (whole[..whole.len() / 2].to_owned(), Then::Break),
        _ => return None,
    };
    let content_type = if streaming {
        "text/event-stream"
    } else {
        "application/json"
    };
    let body = futures_util::stream::unfold(Some((head, then)), |step| async move {
        let (head, then) = step?;
        if !head.is_empty() {
            return Some((Ok(Bytes::from(head)), Some((String::new(), then))));
        }
        match then {
            Then::End => None,
            Then::Break => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(std::io::Error::other("connection broken")), None))
            }
            Then::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
        }
    });
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from_stream(body))
            .unwrap(),
    )
}

/// What a broken response does after its first bytes.
#[derive(Clone, Copy)]
enum Then {
    End,
    Break,
    Stall,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!(Fault::parse("503"), Some(Fault::Status(503)));
        assert_eq!(Fault::parse("flaky-50"), Some(Fault::Flaky(50)));
        assert_eq!(Fault::parse("flaky-101"), None);
        assert_eq!(Fault::parse("200"), None);
        assert_eq!(Fault::parse("isr"), Some(Fault::InsufficientResource));
        let hits = (0..1000).filter(|_| Fault::Flaky(50).strikes()).count();
        assert!((350..650).contains(&hits), "{hits}");
    }
}
