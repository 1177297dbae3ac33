//! What the agents a team runs send, end to end through the real binary and the fake upstream:
//! Claude Code's Anthropic requests, Codex's Responses API turns, strict tools on `/v1`, and
//! DeepSeek's V4-era `reasoning_effort`. The real clients run in `tests/agents/`.

mod common;

use common::{JsonBody, setup, user};
use serde_json::{Value, json};

fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

#[tokio::test]
async fn claude_codes_first_request_goes_through_as_sent() {
    let s = setup().await;
    let head = s.http.head(s.gw.url("/anthropic")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let body = json!({
        "model": "deepseek-chat",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"}, {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"}, {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "Available agent types for the Agent tool: ..."}
        ],
        "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"], "additionalProperties": false}}],
        "metadata": {"user_id": "{\"device_id\":\"d\"}"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": true
    });
    let r = s
        .http
        .post(s.gw.url("/anthropic/v1/messages?beta=true"))
        .header("x-api-key", "sk-alice")
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,mid-conversation-system-2026-04-07,effort-2025-11-24",
        )
        .json_body(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    let sent = s.fake.last_body();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "system"]);
    // deepseek-chat's own mode, so no effort (DeepSeek refuses one beside thinking disabled),
    // and max_tokens within its limit.
    assert_eq!(sent["thinking"], json!({"type": "disabled"}));
    assert!(sent.get("reasoning_effort").is_none(), "{sent}");
    assert_eq!(sent["max_tokens"], 8192);
}

#[tokio::test]
async fn reasoning_effort_reaches_deepseek_in_thinking_mode_only() {
    let s = setup().await;
    let (status, v) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-reasoner", "messages": user("hi"), "reasoning_effort": "xhigh"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(s.fake.last_body()["reasoning_effort"], "high");
    let (status, _) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("hi"), "reasoning_effort": "max"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(s.fake.last_body().get("reasoning_effort").is_none());
    let (status, v) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("hi"), "reasoning_effort": "extreme"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(v["error"]["param"], "reasoning_effort");
}

#[tokio::test]
async fn strict_tools_on_v1_go_through_deepseeks_strict_path() {
    let s = setup().await;
    let tool = |extra: Value| {
        let mut location = json!({"type": "string"});
        location
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!([{"type": "function", "function": {"name": "get_weather", "strict": true, "parameters": {
            "type": "object", "properties": {"location": location}, "required": ["location"], "additionalProperties": false}}}])
    };
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("Weather in Hangzhou?"), "tools": tool(json!({}))}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-dsgw-strict").is_none());
    assert!(s.fake.last_beta(), "strict functions go to /beta");
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("Weather in Hangzhou?"), "tools": tool(json!({"minLength": 2}))}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let note = r.headers()["x-dsgw-strict"].to_str().unwrap().to_owned();
    assert!(note.contains("minLength"), "{note}");
    assert!(!s.fake.last_beta());
    assert!(
        s.fake.last_body()["tools"][0]["function"]
            .get("strict")
            .is_none()
    );
}

fn codex_turn(input: Value, stream: bool) -> Value {
    json!({
        "model": "deepseek-reasoner",
        "instructions": "You are a coding agent.",
        "input": input,
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command", "strict": false,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"], "additionalProperties": false}},
            {"type": "namespace", "name": "multi_agent_v1", "description": "agents", "tools": [
                {"type": "function", "name": "close_agent", "parameters": {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}}]},
            {"type": "web_search", "external_web_access": false}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"},
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "stream": stream,
    })
}

#[tokio::test]
async fn a_codex_tool_round_trip_over_the_responses_api() {
    let s = setup().await;
    let first_input = json!([
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be careful."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Use exec_command to run: echo dsgw-ok"}]}
    ]);
    let r = s
        .http
        .post(s.gw.url("/v1/responses"))
        .bearer_auth("sk-alice")
        .json_body(&codex_turn(first_input.clone(), true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-dsgw-dropped-tools"], "web_search");
    let e = events(&r.text().await.unwrap());
    assert_eq!(e[0]["type"], "response.created");
    let done = e.last().unwrap();
    assert_eq!(done["type"], "response.completed", "{e:?}");
    let output = done["response"]["output"].as_array().unwrap();
    let reasoning = output.iter().find(|i| i["type"] == "reasoning").unwrap();
    assert!(
        reasoning["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("dsgw1:")
    );
    let call = output
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap();
    assert_eq!(call["name"], "exec_command");
    assert_eq!(call["arguments"], r#"{"cmd":"echo dsgw-ok"}"#);
    assert!(done["response"]["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let sent = s.fake.last_body();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are a coding agent."})
    );
    assert_eq!(sent["messages"][1]["role"], "system");

    // The next turn sends everything back: the reasoning and the call, then the output.
    let mut input = first_input.as_array().unwrap().clone();
    input.push(reasoning.clone());
    input.push(call.clone());
    input.push(
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "dsgw-ok\n"}),
    );
    let r = s
        .http
        .post(s.gw.url("/v1/responses"))
        .bearer_auth("sk-alice")
        .json_body(&codex_turn(Value::Array(input), false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    let message = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .unwrap();
    assert!(
        message["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("dsgw-ok"),
        "{v}"
    );
    let sent = s.fake.last_body();
    let assistant = &sent["messages"][3];
    assert_eq!(assistant["role"], "assistant");
    assert!(!assistant["reasoning_content"].as_str().unwrap().is_empty());
    assert_eq!(
        assistant["tool_calls"][0]["function"]["name"],
        "exec_command"
    );
    assert_eq!(sent["messages"][4]["role"], "tool");
}

#[tokio::test]
async fn responses_refusals_keep_openais_envelope() {
    let s = setup().await;
    let post = |key: &'static str, body: Value| {
        let r = s
            .http
            .post(s.gw.url("/responses"))
            .bearer_auth(key)
            .json_body(&body)
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = post("wrong", json!({"model": "deepseek-chat", "input": "hi"})).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error");
    let (status, v) = post(
        "sk-alice",
        json!({"model": "deepseek-chat", "input": "hi", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "previous_response_id");
    let (status, v) = post("sk-alice", json!({"model": "nope", "input": "hi"})).await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    // Plain text in, and JSON mode, both stream cleanly.
    let r = s
        .http
        .post(s.gw.url("/v1/responses"))
        .bearer_auth("sk-alice")
        .json_body(&json!({"model": "deepseek-chat", "input": "hi", "text": {"format": {"type": "json_object"}}, "stream": true}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(!text.contains("[DONE]"));
    let done = events(&text).pop().unwrap();
    let answer = done["response"]["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(serde_json::from_str::<Value>(&answer).is_ok(), "{answer}");
}
