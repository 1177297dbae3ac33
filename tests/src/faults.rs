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
