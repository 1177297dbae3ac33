//! The real `dsgw` binary against the fake DeepSeek upstream, driven over raw HTTP.

mod common;

use common::{JsonBody, setup, setup_with, user};
use dsgw_tests::harness::UPSTREAM_KEY;
use serde_json::{Value, json};
use std::time::Duration;

fn assert_full_usage(usage: &Value) {
    for field in [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_cache_hit_tokens",
        "prompt_cache_miss_tokens",
    ] {
        assert!(usage[field].is_u64(), "usage.{field} missing in {usage}");
    }
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"].is_u64(),
        "{usage}"
    );
    assert!(
        usage["completion_tokens_details"]["reasoning_tokens"].is_u64(),
        "{usage}"
    );
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["prompt_cache_hit_tokens"].as_u64().unwrap()
            + usage["prompt_cache_miss_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        usage["prompt_cache_hit_tokens"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_chat_is_deepseek_shaped_and_forwarded_faithfully() {
    let s = setup().await;
    let client_body = r#"{"model":"deepseek-chat","messages":[{"role":"system","content":"Be  brief.\u00e9"},{"role":"user","content":"hi"}],"temperature":0.5,"custom_field":{"z":1,"a":2}}"#;
    let r = s
        .http
        .post(s.gw.url("/chat/completions"))
        .bearer_auth("sk-alice")
        .header("content-type", "application/json")
        .body(client_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "deepseek-chat");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["system_fingerprint"], "fp_fake_prod");
    assert_full_usage(&v["usage"]);

    // Upstream saw the provider key, the upstream model, an explicit mode, the unknown field, and
    // the message array byte for byte.
    let sent = String::from_utf8(s.fake.last_body_bytes().to_vec()).unwrap();
    assert!(
        sent.contains(r#""messages":[{"role":"system","content":"Be  brief.\u00e9"},{"role":"user","content":"hi"}]"#),
        "{sent}"
    );
    assert!(sent.contains(r#""custom_field":{"z":1,"a":2}"#), "{sent}");
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["thinking"], json!({"type": "disabled"}));
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(
        *s.fake.state.last_auth.lock().unwrap(),
        Some(UPSTREAM_KEY.to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoner_returns_reasoning_content_and_drops_ignored_sampling() {
    let s = setup().await;
    let (status, v) = s
        .post(
            "sk-bob",
            &json!({"model": "deepseek-reasoner", "messages": user("hi"), "temperature": 0.7, "top_p": 0.5}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let message = &v["choices"][0]["message"];
    assert_eq!(
        message["reasoning_content"],
        "The user greets me. I should answer politely."
    );
    assert_eq!(message["content"], "Hello! How can I help you today?");
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        8
    );
    let sent = s.fake.last_body();
    assert_eq!(sent["thinking"], json!({"type": "enabled"}));
    assert!(sent.get("temperature").is_none() && sent.get("top_p").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_field_switches_the_mode_of_deepseek_chat() {
    let s = setup().await;
    let (status, v) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("hi"), "thinking": {"type": "enabled"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(v["choices"][0]["message"]["reasoning_content"].is_string());
    assert_eq!(v["model"], "deepseek-chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_without_usage_hides_the_usage_chunk_but_asks_upstream_for_it() {
    let s = setup().await;
    let events = s
        .stream(&json!({"model": "deepseek-chat", "messages": user("hi"), "stream": true}))
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty())
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["model"] == "deepseek-chat" && c["object"] == "chat.completion.chunk")
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.trim(), "Hello! How can I help you today?");
    assert_eq!(
        s.fake.last_body()["stream_options"],
        json!({"include_usage": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_stream_with_usage_has_deepseek_order_and_one_usage_chunk() {
    let s = setup().await;
    let events = s
        .stream(&json!({
            "model": "deepseek-reasoner", "messages": user("hi"), "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["reasoning_content"], "");
    assert!(first["content"].is_null());
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_full_usage(&usage_chunk["usage"]);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(
        reasoning.trim(),
        "The user greets me. I should answer politely."
    );
    assert!(s.gw.wait_for_log("outcome=\"completed\"", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_loop_keeps_reasoning_content_on_request_messages() {
    let s = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let (status, first) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-reasoner", "messages": user("weather?"), "tools": tools}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let assistant = first["choices"][0]["message"].clone();
    let call = &assistant["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(assistant["reasoning_content"].is_string());

    let mut messages = user("weather?").as_array().unwrap().clone();
    messages.push(assistant.clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}));
    let (status, second) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-reasoner", "messages": messages, "tools": tools}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "The tool said: sunny"
    );
    assert_eq!(
        s.fake.last_body()["messages"][1]["reasoning_content"],
        assistant["reasoning_content"]
    );

    // Without it, DeepSeek's 400 comes back as it was sent.
    messages[1]
        .as_object_mut()
        .unwrap()
        .remove("reasoning_content");
    let (status, err) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-reasoner", "messages": messages, "tools": tools}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"].as_str().unwrap().starts_with(
            "Missing `reasoning_content` field in the assistant message at message index 1"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speciale_refuses_tools_and_non_thinking() {
    let s = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let (status, err) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-v3.2-speciale", "messages": user("hi"), "tools": tools}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not support tools")
    );
    assert_eq!(err["error"]["param"], "tools");
    let (status, _) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-v3.2-speciale", "messages": user("hi"), "thinking": {"type": "disabled"}}),
        )
        .await;
    assert_eq!(status, 400);
    let before = s.fake.requests();
    let (status, v) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-v3.2-speciale", "messages": user("hi")}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(v["choices"][0]["message"]["reasoning_content"].is_string());
    assert_eq!(
        s.fake.requests(),
        before + 1,
        "refusals never reach the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_envelope_and_the_right_status() {
    // One attempt per request: this test is about how each failure is reported, not retried
    // (tests/routing_e2e.rs covers retries).
    let s = setup_with(|c| c + "\n[routing]\nmax_attempts = 1\n").await;
    let raw = |body: &'static str, key: Option<&'static str>| {
        let mut r = s
            .http
            .post(s.gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let cases: Vec<(u16, (u16, Value))> = vec![
        (400, raw("{not json", Some("sk-alice")).await),
        (422, raw(r#"{"model":"deepseek-chat","messages":"hi"}"#, Some("sk-alice")).await),
        (422, raw(r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"x"}],"temperature":3}"#, Some("sk-alice")).await),
        (401, raw(r#"{}"#, Some("sk-wrong")).await),
        (401, raw(r#"{}"#, None).await),
        (400, raw(r#"{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}"#, Some("sk-alice")).await),
        (400, raw(r#"{"model":"deepseek-reasoner","messages":[{"role":"user","content":"x"}],"logprobs":true}"#, Some("sk-alice")).await),
    ];
    for (expected, (status, body)) in &cases {
        assert_eq!(status, expected, "{body}");
        let e = &body["error"];
        assert!(
            e["message"].is_string()
                && e["type"].is_string()
                && e.get("param").is_some()
                && e.get("code").is_some(),
            "{body}"
        );
    }
    assert_eq!(cases[3].1.1["error"]["type"], "authentication_error");
    let unknown = cases[5].1.1["error"]["message"].as_str().unwrap();
    assert!(
        unknown.contains("gpt-4") && unknown.contains("deepseek-chat, deepseek-reasoner"),
        "{unknown}"
    );

    // Over the 64 KiB limit of the test config.
    let big = json!({"model": "deepseek-chat", "messages": user(&"x".repeat(70_000))});
    let (status, body) = s.post("sk-alice", &big).await;
    assert_eq!(status, 413, "{body}");

    // Upstream failures.
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("__status_429__")}),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["retry-after"],
        "7",
        "the provider's Retry-After reaches the client"
    );
    for (magic, expected) in [
        ("__status_503__", 502),
        ("__status_500__", 502),
        ("__status_429__", 429),
        ("__status_402__", 402),
        ("__hang__", 504),
    ] {
        let (status, body) = s
            .post(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user(magic)}),
            )
            .await;
        assert_eq!(status, expected, "{magic}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, body) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("__cut__")}),
        )
        .await;
    assert_eq!(status, 502, "{body}");

    let r = s.http.get(s.gw.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());

    // No secret reaches the logs.
    let logs = s.gw.logs();
    for secret in [UPSTREAM_KEY, "sk-alice", "sk-bob", "sk-wrong"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_readiness() {
    let s = setup().await;
    let r = s
        .http
        .get(s.gw.url("/models"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(
        v["data"][0],
        json!({"id": "deepseek-chat", "object": "model", "owned_by": "deepseek"})
    );
    for (path, expected) in [("/v1/models", 401), ("/healthz", 200), ("/readyz", 200)] {
        let status = s.http.get(s.gw.url(path)).send().await.unwrap().status();
        assert_eq!(status, expected, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cut_mid_stream_ends_with_an_error_event_not_done() {
    let s = setup().await;
    let events = s
        .stream(&json!({"model": "deepseek-reasoner", "messages": user("__cut__"), "stream": true}))
        .await;
    assert!(events.len() >= 2, "{events:?}");
    assert!(!events.contains(&"[DONE]".to_owned()), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deepseek")
    );
    assert!(s.gw.wait_for_log("outcome=\"stream_failed\"", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_dialect_maps_cached_tokens_to_cache_hits() {
    let s = setup().await;
    let long = (0..150)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let body =
        json!({"model": "vllm-chat", "messages": user(&long), "thinking": {"type": "enabled"}});
    let (status, first) = s.post("sk-alice", &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["usage"]["prompt_cache_hit_tokens"], 0);
    let (_, second) = s.post("sk-alice", &body).await;
    // 151 prompt tokens ("user" + 150 words): two full 64-token blocks hit.
    assert_eq!(second["usage"]["prompt_cache_hit_tokens"], 128);
    assert_eq!(second["usage"]["prompt_cache_miss_tokens"], 23);
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        128
    );
    assert_eq!(second["model"], "vllm-chat");
    let sent = s.fake.last_body();
    assert_eq!(sent["model"], "deepseek-ai/DeepSeek-V3.2");
    assert_eq!(sent["chat_template_kwargs"], json!({"thinking": true}));
    assert!(sent.get("thinking").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openrouter_reasoning_becomes_reasoning_content() {
    let s = setup().await;
    let (status, v) = s
        .post(
            "sk-alice",
            &json!({"model": "openrouter-reasoner", "messages": user("hi")}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let message = &v["choices"][0]["message"];
    assert!(message["reasoning_content"].is_string());
    assert!(message.get("reasoning").is_none());
    assert_full_usage(&v["usage"]);
    let sent = s.fake.last_body();
    assert_eq!(
        sent["provider"],
        json!({"only": ["deepseek"], "data_collection": "deny"})
    );
    assert_eq!(sent["reasoning"], json!({"enabled": true}));

    let events = s
        .stream(&json!({"model": "openrouter-reasoner", "messages": user("hi"), "stream": true}))
        .await;
    let reasoning: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!reasoning.is_empty());
    assert!(!events.iter().any(|e| e.contains("\"reasoning\":")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployment_falls_through_to_the_next() {
    let s = setup_with(|c| {
        c.replace(
            r#"deployments = [{ provider = "deepseek", model = "deepseek-chat", price = "deepseek-v3.2" }]"#,
            r#"deployments = [{ provider = "dead", model = "x" }, { provider = "deepseek", model = "deepseek-chat", price = "deepseek-v3.2" }]"#,
        )
        .replace("key_sha256 = ", "admin = true\nkey_sha256 = ")
            + "\n[[providers]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n"
    })
    .await;
    for _ in 0..8 {
        let (status, v) = s
            .post(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user("hi")}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    // Five consecutive failures opened the dead deployment's circuit: later requests skip it.
    assert!(s.gw.wait_for_log("circuit=\"open\"", Duration::from_secs(5)));
    assert_eq!(
        s.gw.logs()
            .matches("deployment failed before the first byte")
            .count(),
        5,
        "{}",
        s.gw.logs()
    );
    let health: Value = s
        .http
        .get(s.gw.url("/v1/admin/deployments"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = health["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["provider"] == "dead")
        .unwrap();
    assert_eq!(dead["circuit"], "open");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            r#"dsgw_circuit_state{deployment="x",model="deepseek-chat",provider="dead"} 2"#
        ),
        "{metrics}"
    );
    assert_eq!(
        s.http
            .get(s.gw.url("/v1/admin/deployments"))
            .bearer_auth("sk-bob")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test]
async fn streams_one_after_another_reuse_one_upstream_connection() {
    let s = setup().await;
    let body = json!({"model": "deepseek-chat", "messages": user("Hello"), "stream": true});
    for _ in 0..5 {
        let events = s.stream(&body).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
    // Each stream's body is read to its end after `[DONE]`, so its connection goes back to
    // the pool instead of being closed (five streams, five connections, before).
    assert_eq!(s.fake.requests(), 5);
    assert_eq!(s.fake.connections(), 1);
}

/// The threads named as the gateway's lanes.
fn lane_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("dsgw-lane-"))
        .count()
}

#[tokio::test]
async fn connections_are_spread_over_the_lanes_and_each_lane_pools_its_own_upstream_connections() {
    for (workers, upstream) in [(3, 3), (1, 1)] {
        let s = setup_with(|c| {
            c.replacen("[server]\n", &format!("[server]\nworkers = {workers}\n"), 1)
        })
        .await;
        // Three keep-alive connections, all open before the first chat request: each goes to
        // the lane with the fewest open.
        let clients: Vec<reqwest::Client> = (0..3).map(|_| reqwest::Client::new()).collect();
        for c in &clients {
            let r = c.get(s.gw.url("/healthz")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        // One request at a time, round the connections: one shared pool would carry them all
        // over a single upstream connection; a pool per lane opens one per lane.
        let body = json!({"model": "deepseek-chat", "messages": user("Hello")});
        for _ in 0..3 {
            for c in &clients {
                let r = c
                    .post(s.gw.url("/v1/chat/completions"))
                    .bearer_auth("sk-alice")
                    .json_body(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }
        assert_eq!(s.fake.requests(), 9);
        assert_eq!(s.fake.connections(), upstream, "workers = {workers}");
        assert_eq!(lane_threads(s.gw.pid()), workers);
    }
}
