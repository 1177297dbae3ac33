//! The one typed request every surface produces: what the pipeline reads, plus the untouched
//! original fields for forwarding.

use bytes::Bytes;

use crate::pipeline::routing::catalog::{ModelMode, ModelSpec};
use crate::providers::call::{Call, Effort, Endpoint, Mode, Strict};
use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;

/// A validated request in the chat wire form.
#[derive(Debug)]
pub struct Request {
    pub model: String,
    /// Which API the request came in on.
    pub endpoint: Endpoint,
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The mode the request named (`thinking.type`), if it named one.
    pub mode: Option<Mode>,
    /// How hard to reason (`reasoning_effort`), if it said.
    pub effort: Option<Effort>,
    /// What becomes of `strict: true` on its functions.
    pub strict: Strict,
    pub has_tools: bool,
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    pub max_tokens: Option<u32>,
    /// The last message is an assistant message with `prefix: true`: the model continues it.
    pub prefix: bool,
    /// Its fields, as they came.
    pub raw: RawObject,
    /// The body as it came (for usage estimates and limit demands).
    pub body: Bytes,
}

impl Request {
    /// Checks the request against the model it names and returns the mode it runs in.
    pub fn check_against(&self, model: &ModelSpec) -> Result<Mode, ApiError> {
        let mode = match (self.mode, model.mode) {
            (Some(Mode::NonThinking), ModelMode::ThinkingOnly) => {
                return Err(ApiError::bad_request(format!(
                    "Model `{}` only runs in thinking mode; remove `thinking: {{\"type\": \"disabled\"}}`.",
                    model.name
                ))
                .with_param("thinking"));
            }
            (Some(mode), _) => mode,
            (None, default) => default.default_mode(),
        };
        if self.has_tools && !model.tools {
            return Err(ApiError::bad_request(format!(
                "Model `{}` does not support tools (function calling); remove `tools` or use another model.",
                model.name
            ))
            .with_param("tools"));
        }
        if mode.thinking() && (self.logprobs || self.top_logprobs.is_some()) {
            let param = if self.logprobs {
                "logprobs"
            } else {
                "top_logprobs"
            };
            return Err(ApiError::bad_request(format!(
                "`{param}` is not supported in thinking mode."
            ))
            .with_param(param));
        }
        if let Some(max) = self.max_tokens {
            let limit = model.max_output_tokens(mode);
            if max > limit {
                return Err(ApiError::invalid_parameter(
                    "max_tokens",
                    format!(
                        "Invalid max_tokens value, the valid range of max_tokens is [1, {limit}]"
                    ),
                ));
            }
        }
        Ok(mode)
    }

    /// The provider call for this request in `mode`.
    pub fn call(&self, mode: Mode) -> Call<'_> {
        Call {
            body: &self.raw,
            endpoint: self.endpoint,
            mode,
            effort: self.effort,
            strict: &self.strict,
            stream: self.stream,
            prefix: self.prefix,
            max_tokens: self.max_tokens,
        }
    }
}
