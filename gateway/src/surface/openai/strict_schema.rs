//! The JSON Schema subset DeepSeek's strict function calling accepts (`"strict": true` on a
//! function, `/beta/chat/completions`), checked before any provider is called so a client gets
//! a 400 naming the offending keyword and where it is, instead of a provider's rejection.
//!
//! Accepted: `object` (every property listed in `required`, `additionalProperties: false`),
//! `string` (`pattern`, `format` among email, hostname, ipv4, ipv6, uuid, date-time, date,
//! time), `number` / `integer` (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
//! `multipleOf`, `const`, `default`), `boolean`, `null`, `array` (`items`), `enum`, `anyOf`,
//! `$ref` with `$defs` / `definitions`, and `description` / `title` anywhere.

use serde_json::{Map, Value};

const STRING_FORMATS: [&str; 8] = [
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
    "date-time",
    "date",
    "time",
];

/// Checks a strict function's `parameters`; the error names the path and the problem.
pub fn validate(schema: &Value) -> Result<(), String> {
    check(schema, "parameters")?;
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("parameters: a strict function's parameters must be an object schema".into());
    }
    Ok(())
}

fn check(schema: &Value, at: &str) -> Result<(), String> {
    let Some(object) = schema.as_object() else {
        return Err(format!("{at}: a schema must be an object"));
    };
    check_keywords(object, at)?;
    let kinds = kinds(object, at)?;
    for kind in &kinds {
        check_kind(object, kind, &kinds, at)?;
    }
    Ok(())
}

/// Every keyword is one strict mode knows; nested schemas are checked where they are.
fn check_keywords(object: &Map<String, Value>, at: &str) -> Result<(), String> {
    for (key, value) in object {
        match key.as_str() {
            "description" | "title" | "default" | "$ref" | "type" | "enum" | "const" => {}
            "$defs" | "definitions" => {
                for (name, def) in value.as_object().into_iter().flatten() {
                    check(def, &format!("{at}.{key}.{name}"))?;
                }
            }
            "anyOf" => {
                let variants = value
                    .as_array()
                    .ok_or_else(|| format!("{at}.anyOf: must be an array"))?;
                for (i, v) in variants.iter().enumerate() {
                    check(v, &format!("{at}.anyOf[{i}]"))?;
                }
            }
            k if TYPED_KEYWORDS.contains(&k) => {}
            other => {
                return Err(format!("{at}: `{other}` is not supported in strict mode"));
            }
        }
    }
    Ok(())
}

/// Keywords that apply to some types only.
const TYPED_KEYWORDS: [&str; 11] = [
    "properties",
    "required",
    "additionalProperties",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "items",
];

/// The schema's `type`s; a schema without one must say what it is some other way.
fn kinds<'a>(object: &'a Map<String, Value>, at: &str) -> Result<Vec<&'a str>, String> {
    let kinds: Vec<&str> = match object.get("type") {
        None => Vec::new(),
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        Some(_) => {
            return Err(format!(
                "{at}.type: must be a string or an array of strings"
            ));
        }
    };
    if kinds.is_empty()
        && !object.contains_key("$ref")
        && !object.contains_key("anyOf")
        && !object.contains_key("enum")
        && !object.contains_key("const")
    {
        return Err(format!(
            "{at}: strict mode needs a `type` (or `anyOf`, `enum`, `$ref`)"
        ));
    }
    Ok(kinds)
}

fn check_kind(
    object: &Map<String, Value>,
    kind: &str,
    kinds: &[&str],
    at: &str,
) -> Result<(), String> {
    if !matches!(
        kind,
        "object" | "string" | "number" | "integer" | "array" | "boolean" | "null"
    ) {
        return Err(format!("{at}.type: `{kind}` is not a JSON Schema type"));
    }
    for key in TYPED_KEYWORDS {
        if object.contains_key(key) && !kinds.iter().any(|k| keyword_fits(k, key)) {
            return Err(format!(
                "{at}: `{key}` does not apply to type `{kind}` in strict mode"
            ));
        }
    }
    match kind {
        "object" => check_object(object, at),
        "string" => match object.get("format") {
            Some(f) => {
                let f = f.as_str().unwrap_or("");
                if STRING_FORMATS.contains(&f) {
                    Ok(())
                } else {
                    Err(format!(
                        "{at}.format: `{f}` is not supported in strict mode (supported: {})",
                        STRING_FORMATS.join(", ")
                    ))
                }
            }
            None => Ok(()),
        },
        "array" => match object.get("items") {
            Some(items) => check(items, &format!("{at}.items")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn keyword_fits(kind: &str, key: &str) -> bool {
    match kind {
        "object" => matches!(key, "properties" | "required" | "additionalProperties"),
        "string" => matches!(key, "pattern" | "format"),
        "number" | "integer" => matches!(
            key,
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf"
        ),
        "array" => key == "items",
        _ => false,
    }
}

fn check_object(object: &Map<String, Value>, at: &str) -> Result<(), String> {
    if object.get("additionalProperties") != Some(&Value::Bool(false)) {
        return Err(format!(
            "{at}: strict mode needs `additionalProperties: false` on every object"
        ));
    }
    let properties = object
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in &properties {
        if !required.contains(&name.as_str()) {
            return Err(format!(
                "{at}.properties.{name}: strict mode needs every property in `required`"
            ));
        }
        check(property, &format!("{at}.properties.{name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_well_formed_strict_schema_passes() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 10},
                "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}
            },
            "required": ["city", "unit", "days", "when", "tags"],
            "additionalProperties": false,
            "$defs": {"tag": {"type": "string", "pattern": "^[a-z]+$"}}
        });
        validate(&schema).unwrap();
    }

    #[test]
    fn each_unsupported_construct_is_named() {
        let base = |props: Value, required: Value| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
        let cases = [
            (
                json!({"type": "object", "properties": {}}),
                "additionalProperties: false",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
                "properties.a: strict mode needs every property in `required`",
            ),
            (
                base(
                    json!({"a": {"type": "string", "minLength": 2}}),
                    json!(["a"]),
                ),
                "`minLength` is not supported",
            ),
            (
                base(
                    json!({"a": {"type": "array", "items": {"type": "string"}, "maxItems": 2}}),
                    json!(["a"]),
                ),
                "`maxItems` is not supported",
            ),
            (
                base(
                    json!({"a": {"type": "string", "format": "uri"}}),
                    json!(["a"]),
                ),
                "`uri` is not supported",
            ),
            (
                base(json!({"a": {"type": "string", "minimum": 1}}), json!(["a"])),
                "`minimum` does not apply to type `string`",
            ),
            (json!({"type": "string"}), "must be an object schema"),
        ];
        for (schema, expected) in cases {
            let e = validate(&schema).unwrap_err();
            assert!(e.contains(expected), "{schema}: {e}");
        }
    }
}
