//! Cost as DeepSeek bills it, in responses and in Prometheus metrics.

mod common;

use std::process::Command;

use common::{JsonBody, setup_with, user};
use serde_json::{Value, json};

/// Picodollars of a usage at DeepSeek-V3.2 prices (0.028 / 0.28 / 0.42 USD per 1M tokens).
fn expected_pico(usage: &Value) -> u64 {
    let n = |k: &str| usage[k].as_u64().unwrap();
    n("prompt_cache_hit_tokens") * 28_000
        + n("prompt_cache_miss_tokens") * 280_000
        + n("completion_tokens") * 420_000
}

fn money(pico: u64) -> String {
    let (whole, frac) = (pico / 1_000_000_000_000, pico % 1_000_000_000_000);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{frac:012}").trim_end_matches('0'))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_exact_in_headers_usage_and_metrics() {
    let s = setup_with(|c| {
        c.replace(
            r#"deployments = [{ provider = "vllm", model = "deepseek-ai/DeepSeek-V3.2" }]"#,
            r#"deployments = [{ provider = "vllm", model = "deepseek-ai/DeepSeek-V3.2", price = "onprem" }]"#,
        ) + "\n[[prices]]\nname = \"onprem\"\ncache_hit = \"0.01\"\ncache_miss = \"0.1\"\noutput = \"0.2\"\n"
    })
    .await;
    let long = (0..150)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let body = json!({"model": "deepseek-reasoner", "messages": user(&long)});
    let mut last = Value::Null;
    for _ in 0..2 {
        let r = s
            .http
            .post(s.gw.url("/v1/chat/completions"))
            .bearer_auth("sk-alice")
            .json_body(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let header = r.headers()["x-dsgw-cost"].to_str().unwrap().to_owned();
        assert_eq!(r.headers()["x-dsgw-cost-currency"], "USD");
        let v: Value = r.json().await.unwrap();
        let pico = expected_pico(&v["usage"]);
        assert_eq!(header, money(pico));
        assert_eq!(v["usage"]["dsgw_cost"]["total"], money(pico));
        assert_eq!(
            v["usage"]["dsgw_cost"]["output"],
            money(v["usage"]["completion_tokens"].as_u64().unwrap() * 420_000)
        );
        last = v;
    }
    assert_eq!(
        last["usage"]["prompt_cache_hit_tokens"], 128,
        "the second request hit the cache"
    );

    // A stream that asked for usage gets the cost in its usage chunk.
    let events = s
        .stream(&json!({"model": "deepseek-chat", "messages": user("hi"), "stream": true, "stream_options": {"include_usage": true}}))
        .await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        usage_chunk["usage"]["dsgw_cost"]["total"],
        money(expected_pico(&usage_chunk["usage"]))
    );

    // A custom price table on the vLLM deployment: cached_tokens are hits, priced at 0.01.
    let r = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth("sk-bob")
        .json_body(&json!({"model": "vllm-chat", "messages": user("hello there")}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let u = &v["usage"];
    let n = |k: &str| u[k].as_u64().unwrap();
    let pico = n("prompt_cache_hit_tokens") * 10_000
        + n("prompt_cache_miss_tokens") * 100_000
        + n("completion_tokens") * 200_000;
    assert_eq!(u["dsgw_cost"]["total"], money(pico));

    // Metrics: tokens and nanodollars by team and key id, and a valid exposition.
    let text = s
        .http
        .get(s.gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#"dsgw_tokens_total{deployment="deepseek-reasoner",key_id="alice",kind="cache_hit",model="deepseek-reasoner",provider="deepseek",team="research"} 128"#), "{text}");
    assert!(text.contains("dsgw_cost_nanodollars_total{"), "{text}");
    assert!(
        text.contains("dsgw_time_to_first_token_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"dsgw_requests_total{deployment="deepseek-ai/DeepSeek-V3.2",key_id="bob""#),
        "{text}"
    );
    for secret in [dsgw_tests::harness::UPSTREAM_KEY, "sk-alice", "sk-bob"] {
        assert!(!text.contains(secret));
    }
    let path = std::env::temp_dir().join(format!("dsgw-metrics-{}.txt", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool must be installed (.ci/run installs Debian's prometheus)");
    std::fs::remove_file(&path).unwrap();
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
