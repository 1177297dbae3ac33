//! Fill in the middle (`POST /beta/completions`): DeepSeek's completion of the text between a
//! `prompt` and a `suffix`, non-thinking only, answered as `object: "text_completion"` with
//! `choices[].text`. It shares the chat path (keys, policies, budgets, limits, routing,
//! accounting); only parsing, the upstream endpoint and the local engine's prompt differ.

use crate::error::ApiError;
use crate::raw_object::RawObject;
use crate::request::{ChatRequest, Surface, field, include_usage, sampling_ranges, stop_sequences};

/// DeepSeek's limit for FIM completions.
pub const MAX_TOKENS: u32 = 4096;

/// The V3 tokenizer's fill-in-the-middle markers.
const FIM_BEGIN: &str = "<｜fim▁begin｜>";
const FIM_HOLE: &str = "<｜fim▁hole｜>";
const FIM_END: &str = "<｜fim▁end｜>";
const BOS: &str = "<｜begin▁of▁sentence｜>";

/// Validates a `/beta/completions` body.
pub fn parse(raw: RawObject, model: String) -> Result<ChatRequest, ApiError> {
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
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        // FIM has no thinking mode: a thinking-only model refuses it.
        thinking: Some(false),
        has_tools: false,
        logprobs: false,
        top_logprobs: None,
        max_tokens,
        message_count: 0,
        raw,
        surface: Surface::Fim,
        prefix: false,
    })
}

/// The text the local engine continues: DeepSeek-V3's FIM format, prefix and suffix around the
/// hole it fills.
pub fn local_prompt(request: &ChatRequest) -> String {
    let prompt: String = field(&request.raw, "prompt")
        .ok()
        .flatten()
        .unwrap_or_default();
    match field::<String>(&request.raw, "suffix").ok().flatten() {
        Some(suffix) => format!("{BOS}{FIM_BEGIN}{prompt}{FIM_HOLE}{suffix}{FIM_END}"),
        None => format!("{BOS}{prompt}"),
    }
}

/// The prompt and suffix texts, for the personal-data scan and redaction.
pub fn texts(request: &ChatRequest) -> Vec<(&'static str, String)> {
    ["prompt", "suffix"]
        .into_iter()
        .filter_map(|name| {
            field::<String>(&request.raw, name)
                .ok()
                .flatten()
                .map(|t| (name, t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse_as(text.as_bytes(), Surface::Fim)
    }

    #[test]
    fn validates_like_deepseek() {
        let r = parse_text(r#"{"model":"deepseek-chat","prompt":"def f(","suffix":"    return x","max_tokens":64,"stream":true}"#).unwrap();
        assert_eq!(r.surface, Surface::Fim);
        assert!(r.stream);
        assert_eq!(r.thinking, Some(false));
        assert_eq!(
            local_prompt(&r),
            "<｜begin▁of▁sentence｜><｜fim▁begin｜>def f(<｜fim▁hole｜>    return x<｜fim▁end｜>"
        );
        let e = parse_text(r#"{"model":"m"}"#).unwrap_err();
        assert_eq!(e.status, 422);
        let e = parse_text(r#"{"model":"m","prompt":"x","max_tokens":5000}"#).unwrap_err();
        assert!(e.body.message.contains("[1, 4096]"));
        let e = parse_text(r#"{"model":"m","prompt":"x","logprobs":21}"#).unwrap_err();
        assert_eq!(e.body.param.as_deref(), Some("logprobs"));
    }
}
