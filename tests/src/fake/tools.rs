//! Tool calls the fake makes: which tool the user's request names, and arguments that fit the
//! tool's JSON schema, so a real agent can run the call and send its result back.

use serde_json::{Map, Value, json};

/// The tool call to answer `request` with, if the last line of the user's text names a tool (or
/// `tool_choice` requires one): its name and JSON arguments.
pub fn call(request: &Value, user_text: &str) -> Option<(String, String)> {
    let tools = request["tools"].as_array().filter(|t| !t.is_empty())?;
    let line = user_text.lines().rev().find(|l| !l.trim().is_empty())?;
    let named = tools.iter().find(|t| names(function_name(t), line));
    let forced = match &request["tool_choice"] {
        Value::String(s) if s == "required" => tools.first(),
        Value::Object(o) => {
            let want = o["function"]["name"].as_str();
            tools.iter().find(|t| Some(function_name(t)) == want)
        }
        _ => None,
    };
    let tool = forced.or(named)?;
    let subject = subject(line);
    let arguments = value(&tool["function"]["parameters"], &subject, &mut true);
    Some((function_name(tool).to_owned(), arguments.to_string()))
}

fn function_name(tool: &Value) -> &str {
    tool["function"]["name"].as_str().unwrap_or("")
}

/// Whether `line` names the tool: its name as written, or a word of at least four letters of
/// it (`get_weather` is named by "Weather in Hangzhou?").
fn names(name: &str, line: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    if line.contains(name) {
        return true;
    }
    let line = line.to_lowercase();
    name.split(['_', '-', '.'])
        .filter(|w| w.len() >= 4)
        .any(|w| line.contains(&w.to_lowercase()))
}

/// What the request is about: the text after its last ": " ("Use Bash to run: echo ok"), else
/// its last capitalised word ("Weather in Hangzhou?").
fn subject(line: &str) -> String {
    if let Some((_, after)) = line.rsplit_once(": ") {
        return after.trim().to_owned();
    }
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .rfind(|w| w.chars().next().is_some_and(char::is_uppercase))
        .unwrap_or("x")
        .to_owned()
}

/// A value that fits `schema`; the first string property gets the request's subject.
fn value(schema: &Value, subject: &str, subject_unused: &mut bool) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema["anyOf"]
        .as_array()
        .or(schema["oneOf"].as_array())
        .and_then(|v| v.first())
    {
        return value(first, subject, subject_unused);
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => object(schema, subject, subject_unused),
        "array" => {
            let min = schema["minItems"].as_u64().unwrap_or(0);
            let item = &schema["items"];
            Value::Array(
                (0..min)
                    .map(|_| value(item, subject, subject_unused))
                    .collect(),
            )
        }
        "integer" | "number" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => {
            if std::mem::replace(subject_unused, false) {
                json!(subject)
            } else {
                json!("x")
            }
        }
    }
}

/// The required properties (every property when none is marked required).
fn object(schema: &Value, subject: &str, subject_unused: &mut bool) -> Value {
    let properties = schema["properties"].as_object();
    let required: Vec<&str> = match schema["required"].as_array() {
        Some(r) => r.iter().filter_map(Value::as_str).collect(),
        None => properties.map_or_else(Vec::new, |p| p.keys().map(String::as_str).collect()),
    };
    let mut out = Map::new();
    for name in required {
        let schema = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
        out.insert(name.to_owned(), value(schema, subject, subject_unused));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(list: Value) -> Value {
        json!({"tools": list})
    }

    #[test]
    fn the_named_tool_is_called_with_arguments_that_fit_its_schema() {
        let weather = json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}});
        let bash = json!({"type": "function", "function": {"name": "Bash", "parameters": {
            "type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"},
            "description": {"type": "string"}}, "required": ["command"], "additionalProperties": false}}});
        let request = tools(json!([weather, bash]));
        assert_eq!(
            call(&request, "Weather in Hangzhou?"),
            Some(("get_weather".into(), r#"{"location":"Hangzhou"}"#.into()))
        );
        assert_eq!(
            call(&request, "context...\nUse Bash to run: echo dsgw-ok"),
            Some(("Bash".into(), r#"{"command":"echo dsgw-ok"}"#.into()))
        );
        assert_eq!(call(&request, "say hi"), None);
        let mut required = request.clone();
        required["tool_choice"] = json!("required");
        assert_eq!(call(&required, "say hi").unwrap().0, "get_weather");
    }

    #[test]
    fn nested_schemas_are_filled() {
        let schema = json!({"type": "object", "properties": {
            "mode": {"enum": ["fast", "slow"]},
            "items": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}},
            "maybe": {"type": ["string", "null"]}
        }, "required": ["mode", "items", "maybe"]});
        let v = value(&schema, "s", &mut true);
        assert_eq!(
            v,
            json!({"mode": "fast", "items": [{"n": 3}], "maybe": "s"})
        );
    }
}
