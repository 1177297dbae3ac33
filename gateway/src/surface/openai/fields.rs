//! Fields every OpenAI-shaped body shares (chat and FIM): typed reads that name the field in
//! their 422, and DeepSeek's ranges for sampling and stop sequences.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(#[allow(dead_code)] String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Deserialises one top-level field, mapping a type error to a 422 that names it.
pub(crate) fn field<T: DeserializeOwned>(
    raw: &RawObject,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let Some(value) = raw.get(name) else {
        return Ok(None);
    };
    if value.get() == "null" {
        return Ok(None);
    }
    serde_json::from_str(value.get()).map(Some).map_err(|e| {
        ApiError::invalid_parameter(
            name,
            format!("Failed to deserialize the JSON body into the target type: {name}: {e}"),
        )
    })
}

/// `temperature`, `top_p` and the penalties within DeepSeek's ranges (chat and FIM alike).
pub(crate) fn sampling_ranges(raw: &RawObject) -> Result<(), ApiError> {
    range("temperature", field(raw, "temperature")?, 0.0, 2.0)?;
    range("top_p", field(raw, "top_p")?, 0.0, 1.0)?;
    range(
        "presence_penalty",
        field(raw, "presence_penalty")?,
        -2.0,
        2.0,
    )?;
    range(
        "frequency_penalty",
        field(raw, "frequency_penalty")?,
        -2.0,
        2.0,
    )
}

/// `stop`: a string or at most 16 of them.
pub(crate) fn stop_sequences(raw: &RawObject) -> Result<(), ApiError> {
    if let Some(Stop::Many(stops)) = field::<Stop>(raw, "stop")?
        && stops.len() > 16
    {
        return Err(ApiError::invalid_parameter(
            "stop",
            "Invalid stop value, at most 16 stop sequences are allowed",
        ));
    }
    Ok(())
}

/// Whether the client asked for the usage chunk (`stream_options.include_usage`).
pub(crate) fn include_usage(raw: &RawObject) -> Result<bool, ApiError> {
    Ok(field::<StreamOptions>(raw, "stream_options")?
        .and_then(|o| o.include_usage)
        .unwrap_or(false))
}

fn range(name: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<(), ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid_parameter(
            name,
            format!("Invalid {name} value, the valid range of {name} is [{lo}, {hi}]"),
        )),
        _ => Ok(()),
    }
}
