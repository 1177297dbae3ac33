//! What a browser may do. Without keys (the embedded default: any caller on loopback), a web
//! page the user visits could otherwise spend the team's money: through DNS rebinding (a
//! hostile name resolving to 127.0.0.1, so the `Host` is not loopback) or a cross-site form
//! post (`Origin` set, `Content-Type: text/plain`, no preflight). So without keys only a
//! loopback `Host` is served and an `Origin` must be one `[server] cors_origins` lists. With
//! keys, a browser needs the key, and a request carrying it is never "simple": the preflight
//! decides, and only listed origins pass it ([`cors`]).

use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use http::{HeaderName, HeaderValue, Method, Request, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;
use super::gate::{Check, Verdict};
use crate::wire::error::ApiError;

/// Without keys: loopback hosts only, and cross-site origins only where listed.
#[derive(Clone, Debug)]
pub struct Guard(pub AppState);

impl Check for Guard {
    type Pass = ();

    fn check(&self, request: &mut Request<Body>) -> Verdict<()> {
        let state = &self.0;
        if !state.keys.current().is_open() {
            return Verdict::Pass(());
        }
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if !host.is_some_and(is_loopback_host) {
            return Verdict::Answer(ApiError::forbidden(
                "Without configured keys this gateway serves only loopback hosts (127.0.0.1, [::1], localhost).",
            )
            .into_response());
        }
        if let Some(origin) = request.headers().get(header::ORIGIN)
            && !state.cors_origins.iter().any(|o| o == origin)
        {
            return Verdict::Answer(ApiError::forbidden(
                "Cross-site browser requests are refused without configured keys; list the origin in [server] cors_origins to allow it.",
            )
            .into_response());
        }
        Verdict::Pass(())
    }
}

/// `127.0.0.1`, `[::1]` or `localhost`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

/// CORS for the configured origins: preflights answered, the request headers clients send
/// allowed, the gateway's own response headers readable.
pub fn cors(origins: &[HeaderValue]) -> CorsLayer {
    let name = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::HEAD])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            name("x-api-key"),
            name("anthropic-version"),
            name("anthropic-beta"),
            name("x-data-classification"),
        ])
        .expose_headers([
            name("x-request-id"),
            name("x-dsgw-cost"),
            name("x-dsgw-cost-currency"),
            name("x-ratelimit-limit-requests"),
            name("x-ratelimit-remaining-requests"),
            name("x-ratelimit-reset-requests"),
            name("x-ratelimit-limit-tokens"),
            name("x-ratelimit-remaining-tokens"),
            name("x-ratelimit-reset-tokens"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_with_and_without_ports() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "[::2]:80",
            "10.0.0.1",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
