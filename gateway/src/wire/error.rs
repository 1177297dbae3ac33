//! The one error type that reaches clients, always rendered in DeepSeek's envelope
//! `{"error":{"message","type","param","code"}}`.
//!
//! Every error records whose fault it was and whether another deployment may be tried, so the
//! fallback loop decides from fields, never from message strings.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// Who caused a failure. Drives logging (client faults are not logged as errors) and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad input, bad key, unknown model: the caller must change the request.
    Client,
    /// A provider failed, timed out or refused.
    Upstream,
    /// The gateway itself (misconfiguration, no deployment available, shutting down).
    Gateway,
}

/// The body of DeepSeek's error envelope.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {}", body.message)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    pub fault: Fault,
    /// True when the same request may succeed on another deployment (nothing reached the client yet).
    pub retryable: bool,
    /// Seconds for the `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

const INVALID_REQUEST: &str = "invalid_request_error";

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>, fault: Fault) -> Self {
        Self {
            status,
            body: ErrorBody {
                message: message.into(),
                kind: kind.to_owned(),
                param: None,
                code: Some(INVALID_REQUEST.to_owned()),
            },
            fault,
            retryable: false,
            retry_after: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.body.param = Some(param.into());
        self
    }

    fn with_code(mut self, code: &str) -> Self {
        self.body.code = Some(code.to_owned());
        self
    }

    fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Malformed request (not JSON, wrong mode for a parameter, unknown model): 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            message,
            Fault::Client,
        )
    }

    /// Well-formed JSON whose values are wrong: 422, as DeepSeek answers.
    pub fn invalid_parameter(param: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            INVALID_REQUEST,
            message,
            Fault::Client,
        )
        .with_param(param)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Authentication Fails, your api key is invalid or missing. \
             Send it as `Authorization: Bearer <key>`.",
            Fault::Client,
        )
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            "Request body is larger than the gateway's limit (`server.max_body_bytes`).",
            Fault::Client,
        )
    }

    /// The request body stopped arriving for longer than `server.body_timeout_ms`.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            INVALID_REQUEST,
            "The request body stopped arriving (`server.body_timeout_ms`).",
            Fault::Client,
        )
    }

    /// A defect of the gateway itself: 500, and nothing about it for the client to change.
    pub fn internal(what: &str) -> Self {
        tracing::error!(what, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Internal error in the gateway.",
            Fault::Gateway,
        )
        .with_code("internal_error")
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("No route for {path}."),
            Fault::Client,
        )
    }

    /// A thing that does not exist (an admin API id): 404 with its own message.
    pub fn not_found_message(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            message,
            Fault::Client,
        )
    }

    /// The change clashes with what exists (an id taken, a file entry): 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            INVALID_REQUEST,
            message,
            Fault::Client,
        )
        .with_code("conflict")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            "Method not allowed on this route.",
            Fault::Client,
        )
    }

    /// Authenticated, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            message,
            Fault::Client,
        )
    }

    /// A data-residency policy allows no deployment for this request.
    pub fn policy_denied(message: impl Into<String>) -> Self {
        Self::forbidden(message).with_code("policy_denied")
    }

    /// The caller's budget is spent: 402, with DeepSeek's message.
    pub fn insufficient_balance() -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "unknown_error",
            "Insufficient Balance",
            Fault::Client,
        )
        .with_code("invalid_request_error")
    }

    /// A rate, token or concurrency limit of the caller is exhausted: 429.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            message,
            Fault::Client,
        )
        .with_code("rate_limit_exceeded")
    }

    /// The gateway cannot serve the request right now (no deployment, draining).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            message,
            Fault::Gateway,
        )
        .with_code("service_unavailable")
    }

    /// The gateway's own connections to `provider` are all busy (its pool cap): dsgw's
    /// saturation, never the provider's fault.
    pub fn saturated(provider: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "The gateway is at its connection limit for provider `{provider}`; retry shortly."
            ),
            Fault::Gateway,
        )
        .with_code("gateway_saturated")
        .retryable()
    }

    /// Whether this is [`ApiError::upstream_timeout`]: the provider had the prompt and said
    /// nothing in time, so it may still bill the call.
    pub fn is_upstream_timeout(&self) -> bool {
        self.body.code.as_deref() == Some("upstream_timeout")
    }

    /// The provider did not answer within a deadline.
    pub fn upstream_timeout(provider: &str, what: &str) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            format!("Upstream provider `{provider}` timed out ({what})."),
            Fault::Upstream,
        )
        .with_code("upstream_timeout")
        .retryable()
    }

    /// The provider could not be reached or broke the protocol.
    pub fn bad_gateway(provider: &str, what: &str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            format!("Upstream provider `{provider}` failed: {what}."),
            Fault::Upstream,
        )
        .with_code("upstream_error")
        .retryable()
    }

    /// A provider that cannot take requests now (a local engine that stopped): 503, and another
    /// deployment may be tried.
    pub fn provider_unavailable(provider: &str, what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!("Upstream provider `{provider}` is unavailable: {what}."),
            Fault::Upstream,
        )
        .with_code("upstream_unavailable")
        .retryable()
    }

    /// An error event a provider sent after its stream had started: its own envelope, passed on.
    pub fn from_stream_error(provider: &str, data: &[u8]) -> Self {
        let body = parse_envelope(data).unwrap_or_else(|| ErrorBody {
            message: format!("Upstream provider `{provider}` sent an error event."),
            kind: "api_error".to_owned(),
            param: None,
            code: Some("upstream_error".to_owned()),
        });
        Self {
            status: StatusCode::BAD_GATEWAY,
            body,
            fault: Fault::Upstream,
            retryable: false,
            retry_after: None,
        }
    }

    /// A non-success answer from a provider. 5xx becomes 502 (and may be retried elsewhere); 429 is
    /// passed through and may be retried elsewhere; other 4xx are passed through as they came: the
    /// request itself is at fault, so they count as the client's.
    pub fn from_upstream(provider: &str, status: StatusCode, body: &[u8]) -> Self {
        let upstream = parse_envelope(body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // The provider refused the gateway's own credentials: the caller's key was fine, so a
            // 401 would mislead; this is the operator's to fix.
            let mut e = Self::bad_gateway(
                provider,
                &format!(
                    "it rejected the gateway's credentials (status {})",
                    status.as_u16()
                ),
            );
            e.fault = Fault::Gateway;
            return e;
        }
        if status.is_server_error() {
            let detail = upstream
                .map(|b| b.message)
                .unwrap_or_else(|| format!("status {}", status.as_u16()));
            return Self::bad_gateway(provider, &format!("status {}: {detail}", status.as_u16()));
        }
        let body = upstream.unwrap_or_else(|| ErrorBody {
            message: format!(
                "Upstream provider `{provider}` answered {}: {}",
                status.as_u16(),
                printable_prefix(body, 512)
            ),
            kind: INVALID_REQUEST.to_owned(),
            param: None,
            code: Some(INVALID_REQUEST.to_owned()),
        });
        let limited = status == StatusCode::TOO_MANY_REQUESTS;
        Self {
            status,
            body,
            // The provider's own rate limit is the provider's; any other 4xx is the request's.
            fault: if limited {
                Fault::Upstream
            } else {
                Fault::Client
            },
            retryable: limited,
            retry_after: None,
        }
    }

    /// The same error with its message scrubbed of `secrets` and credential-shaped text
    /// ([`super::scrub::scrub`]): what an upstream said, made safe to relay.
    pub fn scrubbed(mut self, secrets: &[&str]) -> Self {
        self.body.message = super::scrub::scrub(&self.body.message, secrets);
        self
    }

    /// The JSON text of the envelope, for SSE error events and response bodies.
    pub fn envelope_json(&self) -> String {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: &'a ErrorBody,
        }
        serde_json::to_string(&Envelope { error: &self.body })
            .expect("an envelope of strings always serialises")
    }
}

/// Reads `{"error":{...}}` (or a bare `{"message":...}`) from an upstream body.
fn parse_envelope(body: &[u8]) -> Option<ErrorBody> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error").unwrap_or(&value);
    let text = |k: &str| error.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let message = match error {
        serde_json::Value::String(s) => s.clone(),
        _ => text("message")?,
    };
    Some(ErrorBody {
        message,
        kind: text("type").unwrap_or_else(|| INVALID_REQUEST.to_owned()),
        param: text("param"),
        code: text("code").or_else(|| {
            error
                .get("code")
                .and_then(|c| c.as_i64())
                .map(|c| c.to_string())
        }),
    })
}

fn printable_prefix(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max)]);
    text.trim().to_owned()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.envelope_json()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_deepseek_shape() {
        let e = ApiError::invalid_parameter("temperature", "bad");
        let v: serde_json::Value = serde_json::from_str(&e.envelope_json()).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["code"], "invalid_request_error");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn upstream_4xx_passes_through_its_envelope() {
        let body = br#"{"error":{"message":"Missing `reasoning_content` field","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#;
        let e = ApiError::from_upstream("deepseek", StatusCode::BAD_REQUEST, body);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.message, "Missing `reasoning_content` field");
        assert!(!e.retryable);
        // The request was at fault, not the provider (a 429 stays the provider's).
        assert_eq!(e.fault, Fault::Client);
    }

    #[test]
    fn upstream_5xx_becomes_retryable_502() {
        let e = ApiError::from_upstream("x", StatusCode::SERVICE_UNAVAILABLE, b"busy");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.retryable);
        assert_eq!(e.fault, Fault::Upstream);
    }

    #[test]
    fn upstream_auth_failure_is_not_the_callers_401() {
        let e = ApiError::from_upstream("x", StatusCode::UNAUTHORIZED, b"{}");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.fault, Fault::Gateway);
    }

    #[test]
    fn upstream_429_is_passed_through_and_retryable() {
        let e = ApiError::from_upstream("x", StatusCode::TOO_MANY_REQUESTS, b"not json");
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retryable);
        assert_eq!(e.fault, Fault::Upstream);
        assert!(e.body.message.contains("not json"));
    }
}
