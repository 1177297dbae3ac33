//! The beta and Anthropic surfaces on every upstream kind: what each provider receives, and
//! that each answer is shaped for the surface it came in on.

mod common;

use common::{JsonBody, setup};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fim_and_prefix_reach_each_provider_in_its_dialect() {
    let s = setup().await;
    let post = |path: &'static str, body: Value| {
        let req = s
            .http
            .post(s.gw.url(path))
            .bearer_auth("sk-alice")
            .json_body(&body)
            .send();
        async move {
            let r = req.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // vLLM: FIM on /v1/completions, with the model renamed and no chat mode switches.
    let (status, v) = post(
        "/beta/completions",
        json!({"model": "vllm-chat", "prompt": "fn main() {", "suffix": "}", "max_tokens": 16}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "vllm-chat");
    assert_eq!(v["choices"][0]["text"], "filled { to }");
    let sent = s.fake.last_body();
    assert_eq!(sent["model"], "deepseek-ai/DeepSeek-V3.2");
    assert_eq!(sent["suffix"], "}");
    assert!(sent.get("chat_template_kwargs").is_none() && sent.get("thinking").is_none());

    // vLLM continues the final assistant message when asked for a prefix completion.
    let (status, v) = post(
        "/beta/chat/completions",
        json!({"model": "vllm-chat", "messages": [
            {"role": "user", "content": "Count"},
            {"role": "assistant", "content": "1, 2,", "prefix": true}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let sent = s.fake.last_body();
    assert_eq!(sent["continue_final_message"], true);
    assert_eq!(sent["add_generation_prompt"], false);

    // DeepSeek: the beta path, where prefix completion and strict tools live.
    let (status, v) = post(
        "/beta/chat/completions",
        json!({"model": "deepseek-chat", "messages": [
            {"role": "user", "content": "Count"},
            {"role": "assistant", "content": "1, 2,", "prefix": true}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "and so it continues."
    );

    // Prefix anywhere but last, or on the plain endpoint, is refused before any provider call.
    let before = s.fake.requests();
    let (status, v) = post(
        "/beta/chat/completions",
        json!({"model": "deepseek-chat", "messages": [
            {"role": "assistant", "content": "x", "prefix": true},
            {"role": "user", "content": "Count"}
        ]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only the last message")
    );
    let (status, _) = post(
        "/chat/completions",
        json!({"model": "deepseek-chat", "messages": [
            {"role": "user", "content": "Count"},
            {"role": "assistant", "content": "1,", "prefix": true}
        ]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(s.fake.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streams_reasoning_from_openrouter_as_thinking_blocks() {
    let s = setup().await;
    let r = s
        .http
        .post(s.gw.url("/anthropic/v1/messages"))
        .header("x-api-key", "sk-alice")
        .json_body(&json!({
            "model": "openrouter-reasoner", "max_tokens": 512, "stream": true,
            "messages": [{"role": "user", "content": "Hello"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (
                name.trim_start_matches("event: "),
                serde_json::from_str(data.trim_start_matches("data: ")).unwrap(),
            )
        })
        .collect();
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events[0].1["message"]["model"], "openrouter-reasoner");
    assert_eq!(events[1].1["content_block"]["type"], "thinking");
    assert!(
        events
            .iter()
            .any(|(_, e)| e["delta"]["type"] == "text_delta")
    );
    let (name, last) = events.last().unwrap();
    assert_eq!(*name, "message_stop", "{last}");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // The OpenRouter dialect was spoken upstream.
    assert_eq!(s.fake.last_body()["reasoning"], json!({"enabled": true}));
}
