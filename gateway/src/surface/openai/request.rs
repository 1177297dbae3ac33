//! Parsing and validating a chat completion body into the pipeline's typed request, keeping the
//! raw body for forwarding. Statuses follow DeepSeek: JSON syntax errors are 400, well-formed JSON
//! with wrong types or out-of-range values is 422, a parameter the chosen mode forbids is 400.
//! Every surface that speaks chat (Anthropic's translated requests included) validates here.

use bytes::Bytes;
use serde::Deserialize;

use crate::pipeline::request::Request;
use crate::providers::call::{Effort, Endpoint, Mode, Strict};
use crate::wire::error::ApiError;
use crate::wire::raw_object::{Raw, RawObject};

use super::fields::{field, include_usage, sampling_ranges, stop_sequences};

#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    System,
    User,
    Assistant,
    Tool,
    Developer,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: Role,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    prefix: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(#[allow(dead_code)] String),
    Parts(#[allow(dead_code)] Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    #[allow(dead_code)]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: ThinkingType,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ThinkingType {
    Enabled,
    Disabled,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Tool {
    #[serde(rename = "type")]
    kind: String,
    function: Function,
}

#[derive(Debug, Deserialize)]
struct Function {
    name: String,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(default)]
    parameters: Option<serde_json::Value>,
}

/// Parses a body that came in on `endpoint`. Mode-dependent checks happen in
/// [`Request::check_against`], once the model is known.
pub fn parse(body: Bytes, endpoint: Endpoint) -> Result<Request, ApiError> {
    let raw = RawObject::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_parameter(
            "body",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        ),
        _ => ApiError::bad_request(format!("Failed to parse the request body as JSON: {e}")),
    })?;
    let model: String = field(&raw, "model")?.ok_or_else(|| {
        ApiError::invalid_parameter("model", "Missing required parameter: `model`")
    })?;
    if endpoint == Endpoint::Fim {
        return super::fim::parse(raw, model, body);
    }
    let messages: Vec<Message> = field(&raw, "messages")?.ok_or_else(|| {
        ApiError::invalid_parameter("messages", "Missing required parameter: `messages`")
    })?;
    validate_messages(&messages)?;
    let prefix = validate_prefix(&messages, endpoint)?;
    let stream = field::<bool>(&raw, "stream")?.unwrap_or(false);
    let include_usage = include_usage(&raw)?;
    let mode = field::<Thinking>(&raw, "thinking")?.map(|t| match t.kind {
        ThinkingType::Enabled => Mode::Thinking,
        ThinkingType::Disabled => Mode::NonThinking,
    });
    sampling_ranges(&raw)?;
    let max_tokens = field::<i64>(&raw, "max_tokens")?
        .map(|n| {
            u32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
                ApiError::invalid_parameter(
                    "max_tokens",
                    "Invalid max_tokens value, it must be at least 1",
                )
            })
        })
        .transpose()?;
    stop_sequences(&raw)?;
    response_format(&raw)?;
    let (has_tools, strict) = validate_tools(&raw, endpoint)?;
    let (logprobs, top_logprobs) = logprobs(&raw)?;
    let effort = effort(&raw)?;
    Ok(Request {
        model,
        endpoint,
        stream,
        include_usage,
        mode,
        effort,
        strict,
        has_tools,
        logprobs,
        top_logprobs,
        max_tokens,
        prefix,
        raw,
        body,
    })
}

fn response_format(raw: &RawObject) -> Result<(), ApiError> {
    if let Some(format) = field::<ResponseFormat>(raw, "response_format")?
        && !matches!(format.kind.as_str(), "text" | "json_object")
    {
        return Err(ApiError::invalid_parameter(
            "response_format",
            format!(
                "Invalid response_format type `{}`, expected `text` or `json_object`",
                format.kind
            ),
        ));
    }
    Ok(())
}

/// `tools` and `tool_choice`: whether the request carries tools, and what becomes of their
/// `strict` flags. On `/beta` a strict schema outside DeepSeek's subset is the client's error, as
/// there; elsewhere strict is honoured where it can be and dropped (with a reason) where not,
/// as DeepSeek's plain endpoint accepts the flag.
fn validate_tools(raw: &RawObject, endpoint: Endpoint) -> Result<(bool, Strict), ApiError> {
    let tools = field::<Vec<Tool>>(raw, "tools")?.unwrap_or_default();
    if tools.len() > 128 {
        return Err(ApiError::invalid_parameter(
            "tools",
            "Invalid tools value, at most 128 tools are allowed",
        ));
    }
    let mut strict = false;
    let mut unsupported = None;
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" || tool.function.name.is_empty() {
            return Err(ApiError::invalid_parameter(
                "tools",
                format!(
                    "tools[{i}] must be {{\"type\":\"function\",\"function\":{{\"name\":...}}}}"
                ),
            ));
        }
        if tool.function.strict != Some(true) {
            continue;
        }
        strict = true;
        let schema = tool.function.parameters.clone().unwrap_or_default();
        if let Err(why) = super::strict_schema::validate(&schema) {
            let why = format!("tools[{i}] ({}): {why}", tool.function.name);
            if endpoint == Endpoint::BetaChat {
                return Err(ApiError::bad_request(why).with_param("tools"));
            }
            unsupported.get_or_insert(why);
        }
    }
    if let Some(choice) = raw.get("tool_choice") {
        validate_tool_choice(choice)?;
    }
    let strict = match (strict, unsupported) {
        (false, _) => Strict::None,
        (true, None) => Strict::Enforced,
        (true, Some(why)) => Strict::Dropped {
            tools: without_strict(raw),
            why,
        },
    };
    Ok((!tools.is_empty(), strict))
}

/// The `tools` array with every function's `strict` flag removed.
fn without_strict(raw: &RawObject) -> String {
    let mut tools: serde_json::Value = raw
        .get("tools")
        .and_then(|t| serde_json::from_str(t.get()).ok())
        .unwrap_or_default();
    for tool in tools.as_array_mut().into_iter().flatten() {
        if let Some(function) = tool.get_mut("function").and_then(|f| f.as_object_mut()) {
            function.remove("strict");
        }
    }
    tools.to_string()
}

/// `reasoning_effort`: DeepSeek's `low`, `high`, `max`, and the names other APIs use for them.
fn effort(raw: &RawObject) -> Result<Option<Effort>, ApiError> {
    field::<String>(raw, "reasoning_effort")?
        .map(|e| {
            Effort::parse(&e).ok_or_else(|| {
                ApiError::invalid_parameter(
                    "reasoning_effort",
                    format!(
                        "Invalid reasoning_effort `{e}`, expected one of low, medium, high, max"
                    ),
                )
            })
        })
        .transpose()
}

/// `logprobs` and `top_logprobs` (0..=20, and only with `logprobs`).
fn logprobs(raw: &RawObject) -> Result<(bool, Option<u32>), ApiError> {
    let logprobs = field::<bool>(raw, "logprobs")?.unwrap_or(false);
    let top_logprobs = field::<i64>(raw, "top_logprobs")?
        .map(|n| {
            u32::try_from(n).ok().filter(|&n| n <= 20).ok_or_else(|| {
                ApiError::invalid_parameter(
                    "top_logprobs",
                    "Invalid top_logprobs value, the valid range of top_logprobs is [0, 20]",
                )
            })
        })
        .transpose()?;
    if top_logprobs.is_some() && !logprobs {
        return Err(ApiError::invalid_parameter(
            "top_logprobs",
            "top_logprobs requires logprobs to be true",
        ));
    }
    Ok((logprobs, top_logprobs))
}

/// `prefix: true` is for the last message only, an assistant one, on the beta endpoint.
fn validate_prefix(messages: &[Message], endpoint: Endpoint) -> Result<bool, ApiError> {
    let Some(at) = messages.iter().position(|m| m.prefix == Some(true)) else {
        return Ok(false);
    };
    let bad = |why: String| Err(ApiError::bad_request(why).with_param("messages"));
    if endpoint != Endpoint::BetaChat {
        return bad(
            "Chat prefix completion is a beta feature: send the request to /beta/chat/completions"
                .to_owned(),
        );
    }
    if at + 1 != messages.len() || messages[at].role != Role::Assistant {
        return bad(format!(
            "messages[{at}]: only the last message, an assistant message, may set `prefix: true`"
        ));
    }
    Ok(true)
}

fn validate_messages(messages: &[Message]) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_parameter(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        let bad = |why: &str| {
            Err(ApiError::invalid_parameter(
                "messages",
                format!("messages[{i}]: {why}"),
            ))
        };
        match m.role {
            Role::Tool if m.tool_call_id.is_none() => {
                return bad("a `tool` message needs `tool_call_id`");
            }
            Role::Assistant
                if m.content.is_none()
                    && m.tool_calls.is_none()
                    && m.reasoning_content.is_none() =>
            {
                return bad("an `assistant` message needs `content` or `tool_calls`");
            }
            Role::System | Role::User | Role::Developer | Role::Tool if m.content.is_none() => {
                return bad("`content` is required");
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_tool_choice(choice: Raw<'_>) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ToolChoice {
        Mode(String),
        Named {
            #[serde(rename = "type")]
            kind: String,
            function: Function,
        },
    }
    let ok = match serde_json::from_str::<ToolChoice>(choice.get()) {
        Ok(ToolChoice::Mode(m)) => matches!(m.as_str(), "none" | "auto" | "required"),
        Ok(ToolChoice::Named { kind, function }) => kind == "function" && !function.name.is_empty(),
        Err(_) => false,
    };
    if ok || choice.get() == "null" {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(
            "tool_choice",
            "Invalid tool_choice: expected `none`, `auto`, `required` or {\"type\":\"function\",\"function\":{\"name\":...}}",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::routing::catalog::{ModelMode, ModelSpec};
    use http::StatusCode;

    fn parse(body: &str) -> Result<Request, ApiError> {
        super::parse(Bytes::copy_from_slice(body.as_bytes()), Endpoint::Chat)
    }

    const OK: &str = r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn parses_a_minimal_request() {
        let r = parse(OK).unwrap();
        assert_eq!(r.model, "deepseek-chat");
        assert!(!r.stream && !r.include_usage);
        assert_eq!(r.mode, None);
    }

    #[test]
    fn syntax_errors_are_400_and_type_errors_422() {
        assert_eq!(parse("{").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            parse("[]").unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let e = parse(r#"{"model":"m","messages":"hi"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body.param.as_deref(), Some("messages"));
    }

    #[test]
    fn out_of_range_values_are_422_naming_the_parameter() {
        for (field, value) in [
            ("temperature", "2.5"),
            ("top_p", "1.5"),
            ("presence_penalty", "-3"),
            ("max_tokens", "0"),
            ("top_logprobs", "21"),
        ] {
            let body = OK.replace(
                "}]}",
                &format!("}}],\"{field}\":{value},\"logprobs\":true}}"),
            );
            let e = parse(&body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
            assert_eq!(e.body.param.as_deref(), Some(field));
        }
    }

    #[test]
    fn tool_messages_need_a_call_id() {
        let e = parse(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#).unwrap_err();
        assert!(e.body.message.contains("tool_call_id"));
    }

    #[test]
    fn reads_thinking_and_stream_options() {
        let r = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"thinking":{"type":"enabled"}}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.mode, Some(Mode::Thinking));
    }

    #[test]
    fn mode_checks_follow_deepseek() {
        let reasoner = ModelSpec::for_tests("deepseek-reasoner", ModelMode::Thinking, true);
        let speciale =
            ModelSpec::for_tests("deepseek-v3.2-speciale", ModelMode::ThinkingOnly, false);
        let chat = ModelSpec::for_tests("deepseek-chat", ModelMode::NonThinking, true);

        let logprobs = parse(&OK.replace("}]}", "}],\"logprobs\":true}")).unwrap();
        assert_eq!(
            logprobs.check_against(&reasoner).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(logprobs.check_against(&chat), Ok(Mode::NonThinking));

        let tools = parse(&OK.replace(
            "}]}",
            r#"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#,
        ))
        .unwrap();
        let e = tools.check_against(&speciale).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.body.message.contains("does not support tools"));

        let think = parse(&OK.replace("}]}", r#"}],"thinking":{"type":"enabled"}}"#)).unwrap();
        assert_eq!(think.check_against(&chat), Ok(Mode::Thinking));

        let big = parse(&OK.replace("}]}", r#"}],"max_tokens":9000}"#)).unwrap();
        assert_eq!(
            big.check_against(&chat).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(big.check_against(&reasoner), Ok(Mode::Thinking));
    }
}

#[cfg(test)]
mod fuzz {
    //! No input may panic the parser: arbitrary bytes, and arbitrary JSON in every field.
    use super::*;
    use crate::pipeline::routing::catalog::{ModelMode, ModelSpec};
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)),
            "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("role".to_owned()),
                        Just("content".to_owned()),
                        Just("type".to_owned()),
                        Just("function".to_owned()),
                        Just("name".to_owned()),
                        Just("include_usage".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const FIELDS: [&str; 16] = [
        "model",
        "messages",
        "stream",
        "stream_options",
        "thinking",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "max_tokens",
        "stop",
        "response_format",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(Bytes::from(bytes), Endpoint::Chat);
        }

        #[test]
        fn arbitrary_fields_never_panic(values in prop::collection::vec(json_value(), FIELDS.len())) {
            let object: serde_json::Map<String, serde_json::Value> =
                FIELDS.iter().map(|f| f.to_string()).zip(values).collect();
            let body = serde_json::to_vec(&object).unwrap();
            if let Ok(request) = parse(Bytes::from(body), Endpoint::Chat) {
                for (mode, tools) in [(ModelMode::NonThinking, true), (ModelMode::ThinkingOnly, false)] {
                    let _ = request.check_against(&ModelSpec::for_tests("m", mode, tools));
                }
                let raw = request.raw.render(&[]);
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&raw).is_ok());
            }
        }
    }
}
