//! Fill in the middle (`POST /beta/completions`): DeepSeek's completion of the text between a
//! `prompt` and a `suffix`, non-thinking only, answered as `object: "text_completion"` with
//! `choices[].text`. It shares the chat path (keys, policies, budgets, limits, routing,
//! accounting); only parsing, the upstream endpoint and the local engine's prompt
//! (`providers::local::prompt`) differ.

use bytes::Bytes;

use super::fields::{field, include_usage, sampling_ranges, stop_sequences};
use crate::pipeline::request::Request;
use crate::providers::call::{Endpoint, Mode, Strict};
use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;

/// DeepSeek's limit for FIM completions.
pub const MAX_TOKENS: u32 = 4096;

/// Validates a `/beta/completions` body.
pub fn parse(raw: RawObject, model: String, body: Bytes) -> Result<Request, ApiError> {
    field::<String>(&raw, "prompt")?.ok_or_else(|| {
        ApiError::invalid_parameter("prompt", "Missing required parameter: `prompt`")
    })?;
    field::<String>(&raw, "suffix")?;
    field::<bool>(&raw, "echo")?;
    if let Some(n) = field::<i64>(&raw, "logprobs")?
        && !(0..=20).contains(&n)
    {
        return Err(ApiError::invalid_parameter(
            "logprobs",
            "Invalid logprobs value, the valid range of logprobs is [0, 20]",
        ));
    }
    let max_tokens = field::<i64>(&raw, "max_tokens")?
        .map(|n| {
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_TOKENS).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_parameter(
                        "max_tokens",
                        format!(
                            "Invalid max_tokens value, the valid range of max_tokens is [1, {MAX_TOKENS}]"
                        ),
                    )
                })
        })
        .transpose()?;
    stop_sequences(&raw)?;
    sampling_ranges(&raw)?;
    let stream = field::<bool>(&raw, "stream")?.unwrap_or(false);
    let include_usage = include_usage(&raw)?;
    Ok(Request {
        model,
        endpoint: Endpoint::Fim,
        stream,
        include_usage,
        // FIM has no thinking mode: a thinking-only model refuses it.
        mode: Some(Mode::NonThinking),
        effort: None,
        strict: Strict::None,
        has_tools: false,
        logprobs: false,
        top_logprobs: None,
        max_tokens,
        prefix: false,
        raw,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Request, ApiError> {
        super::super::request::parse(Bytes::copy_from_slice(text.as_bytes()), Endpoint::Fim)
    }

    #[test]
    fn validates_like_deepseek() {
        let r = parse_text(r#"{"model":"deepseek-chat","prompt":"def f(","suffix":"    return x","max_tokens":64,"stream":true}"#).unwrap();
        assert_eq!(r.endpoint, Endpoint::Fim);
        assert!(r.stream);
        assert_eq!(r.mode, Some(Mode::NonThinking));
        let e = parse_text(r#"{"model":"m"}"#).unwrap_err();
        assert_eq!(e.status, 422);
        let e = parse_text(r#"{"model":"m","prompt":"x","max_tokens":5000}"#).unwrap_err();
        assert!(e.body.message.contains("[1, 4096]"));
        let e = parse_text(r#"{"model":"m","prompt":"x","logprobs":21}"#).unwrap_err();
        assert_eq!(e.body.param.as_deref(), Some("logprobs"));
    }
}
