//! Request ids: the client's `x-request-id` when it is a usable one, else a fresh one; echoed
//! in the response and recorded in the request's span (so every log line of the request
//! carries it) and in its completion record.

use http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::support::random::random_id;

/// The header a request id travels in, both ways.
pub const HEADER: &str = "x-request-id";

/// Longest client-chosen id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// Makes fresh ids: 16 random hex digits.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreshIds;

impl MakeRequestId for FreshIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&random_id()).ok().map(RequestId::new)
    }
}

/// Drops a client's id that could garble a log line or a label (too long, or anything but
/// letters, digits and `-_.:`); the request then gets a fresh one.
pub fn keep_usable<B>(mut request: Request<B>) -> Request<B> {
    let usable = request.headers().get(HEADER).is_none_or(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    });
    if !usable {
        request.headers_mut().remove(HEADER);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(value: &str) -> bool {
        let request = Request::builder().header(HEADER, value).body(()).unwrap();
        keep_usable(request).headers().contains_key(HEADER)
    }

    #[test]
    fn only_plain_ids_are_kept() {
        assert!(kept("req-01H:abc_9.z"));
        assert!(!kept("a b"));
        assert!(!kept("x\"y"));
        assert!(!kept(&"a".repeat(MAX_LEN + 1)));
        assert!(kept(&"a".repeat(MAX_LEN)));
    }

    #[test]
    fn fresh_ids_differ() {
        let request = Request::new(());
        let a = FreshIds.make_request_id(&request).unwrap();
        let b = FreshIds.make_request_id(&request).unwrap();
        assert_ne!(a.header_value(), b.header_value());
        assert_eq!(a.header_value().len(), 16);
    }
}
