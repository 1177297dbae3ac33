//! The real `dsgw` binary serving from the in-process engine (the tiny built-in model).

use std::path::Path;
use std::time::Duration;

use dsgw_tests::harness::Gateway;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "engine"
kind = "local"
region = "on-prem"

[[models]]
name = "deepseek-chat"
deployments = [{ provider = "engine", model = "builtin-tiny" }]

[[models]]
name = "deepseek-reasoner"
thinking = true
deployments = [{ provider = "engine", model = "builtin-tiny" }]
"#;

fn start() -> Gateway {
    dsgw::providers::install_tls();
    Gateway::start(Path::new(env!("CARGO_BIN_EXE_dsgw")), CONFIG, &[])
}

async fn post(gw: &Gateway, body: Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("anything")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn long_prompt() -> String {
    (0..120)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_completion_has_deepseek_shape_and_counts_cache_hits() {
    let gw = start();
    // `device = "auto"`: without a GPU driver the CPU, and the log says why.
    let expected = if dsgw_engine::backend::cuda::driver_present() {
        "the local engine runs on"
    } else {
        "no usable GPU: the local engine runs on the CPU"
    };
    assert!(
        gw.wait_for_log(expected, Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let body = json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": long_prompt()}], "max_tokens": 6, "temperature": 0});
    let (status, text) = post(&gw, body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["model"], "deepseek-chat");
    assert_eq!(first["choices"][0]["finish_reason"], "length");
    assert!(first["choices"][0]["message"]["content"].is_string());
    let usage = &first["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert_eq!(usage["prompt_cache_hit_tokens"], 0);
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 128, "{usage}");

    let (_, text) = post(&gw, body).await;
    let second: Value = serde_json::from_str(&text).unwrap();
    let hit = second["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap();
    assert_eq!(hit, (prompt_tokens - 1) / 64 * 64, "{}", second["usage"]);
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        hit
    );
    assert_eq!(
        second["usage"]["prompt_cache_miss_tokens"],
        prompt_tokens - hit
    );
    assert_eq!(
        second["choices"][0]["message"]["content"], first["choices"][0]["message"]["content"],
        "greedy output changed with the cache"
    );
    assert!(gw.wait_for_log(&format!("cache_hit={hit}"), Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_thinking_stream_is_deepseek_shaped() {
    let gw = start();
    let (status, text) = post(
        &gw,
        json!({"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
               "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
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
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    assert!(chunks.iter().all(|c| c["model"] == "deepseek-reasoner"));
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_refuses_a_request_over_its_context_with_deepseeks_message() {
    let gw = start();
    let (status, text) = post(
        &gw,
        json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8192}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("This model's maximum context length is 8192 tokens."),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_client_disconnect_cancels_generation() {
    let gw = start();
    let mut r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000, "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    r.chunk().await.unwrap().unwrap();
    drop(r);
    assert!(
        gw.wait_for_log("outcome=\"client_disconnected\"", Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    // The engine is free again at once, not after 4000 tokens.
    let (status, _) = post(&gw, json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})).await;
    assert_eq!(status, 200);
}

async fn post_to(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.url(path))
        .bearer_auth("anything")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_engine_serves_fim_prefix_completion_and_enforced_json_mode() {
    let gw = start();
    let tokenizer = dsgw_engine::tokenizer::Tokenizer::deepseek_v32().unwrap();

    // Fill in the middle: DeepSeek-V3's FIM markers around the hole, answered as text_completion.
    let (status, v) = post_to(
        &gw,
        "/beta/completions",
        json!({"model": "deepseek-chat", "prompt": "def add(a, b):", "suffix": "    return c", "max_tokens": 5, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    let expected = tokenizer
        .encode("<｜begin▁of▁sentence｜><｜fim▁begin｜>def add(a, b):<｜fim▁hole｜>    return c<｜fim▁end｜>")
        .unwrap()
        .len();
    assert_eq!(v["usage"]["prompt_tokens"], expected as u64, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 5);

    // Prefix completion: the prompt ends with the assistant's prefix, which the model continues.
    let ask = |prefix: Option<&str>| {
        let mut messages = vec![json!({"role": "user", "content": "Write quick sort"})];
        if let Some(p) = prefix {
            messages.push(json!({"role": "assistant", "content": p, "prefix": true}));
        }
        json!({"model": "deepseek-chat", "messages": messages, "max_tokens": 3, "temperature": 0})
    };
    let (status, plain) = post_to(&gw, "/beta/chat/completions", ask(None)).await;
    assert_eq!(status, 200, "{plain}");
    let (status, prefixed) = post_to(&gw, "/beta/chat/completions", ask(Some("```python\n"))).await;
    assert_eq!(status, 200, "{prefixed}");
    let prefix_tokens = tokenizer.encode("```python\n").unwrap().len() as u64;
    assert_eq!(
        prefixed["usage"]["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["prompt_tokens"].as_u64().unwrap() + prefix_tokens
    );

    // JSON mode is enforced: random weights, and still a JSON object every time.
    for seed in 0..3 {
        for stream in [false, true] {
            let body = json!({
                "model": "deepseek-chat", "response_format": {"type": "json_object"}, "seed": seed,
                "stream": stream, "max_tokens": 40,
                "messages": [{"role": "user", "content": "Reply in json"}],
            });
            let content = if stream {
                let r = reqwest::Client::new()
                    .post(gw.url("/v1/chat/completions"))
                    .bearer_auth("anything")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let text = r.text().await.unwrap();
                text.split("\n\n")
                    .filter_map(|e| e.strip_prefix("data: "))
                    .filter(|d| *d != "[DONE]")
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|c| {
                        c["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect::<String>()
            } else {
                let (status, v) = post_to(&gw, "/v1/chat/completions", body).await;
                assert_eq!(status, 200, "{v}");
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let parsed: Value = serde_json::from_str(&content)
                .unwrap_or_else(|e| panic!("seed {seed}, stream {stream}: {e}: {content:?}"));
            assert!(parsed.is_object());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_engine_answers_anthropic_messages() {
    let gw = start();
    let r = reqwest::Client::new()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", "anything")
        .json(&json!({"model": "claude-haiku-5", "max_tokens": 4, "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-haiku-5");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_engine_serves_with_bf16_weights_on_the_cpu() {
    dsgw::providers::install_tls();
    let config = CONFIG.replace(
        "region = \"on-prem\"",
        "region = \"on-prem\"\ndevice = \"cpu\"\nweights = \"bf16\"",
    );
    assert!(config.contains("weights = \"bf16\""));
    let gw = Gateway::start(Path::new(env!("CARGO_BIN_EXE_dsgw")), &config, &[]);
    assert!(
        gw.wait_for_log("weights=Bf16", Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let body = json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0});
    let (status, text) = post(&gw, body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    // Greedy decoding on bf16 weights is as deterministic as on f32.
    let (_, again) = post(&gw, body).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        again["choices"][0]["message"]["content"],
        answer["choices"][0]["message"]["content"]
    );
}

#[test]
fn a_bad_weights_value_is_refused_at_start() {
    let config = CONFIG.replace(
        "region = \"on-prem\"",
        "region = \"on-prem\"\nweights = \"fp4\"",
    );
    let dir = std::env::temp_dir().join(format!("dsgw-bad-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dsgw.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            panic!("dsgw started with an invalid `weights`");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("`weights` must be \"bf16\" or \"f32\""),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_tools_on_the_local_engine_are_answered_and_said_unenforced() {
    let gw = start();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "strict": true,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": false}}}]);
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("anything")
        .json(
            &json!({"model": "deepseek-chat", "max_tokens": 4, "tools": tools,
            "messages": [{"role": "user", "content": "weather in Hangzhou?"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let note = r.headers()["x-dsgw-strict"].to_str().unwrap().to_owned();
    assert!(note.starts_with("not enforced: provider engine"), "{note}");
    r.json::<Value>().await.unwrap();
}
