//! Cost as DeepSeek bills it, in responses and in Prometheus metrics.

mod common;

use std::process::Command;

use common::{money, setup_with, user};
use serde_json::{Value, json};

/// Picodollars of a usage at DeepSeek-V3.2 prices (0.028 / 0.28 / 0.42 USD per 1M tokens).
fn expected_pico(usage: &Value) -> u64 {
    let n = |k: &str| usage[k].as_u64().unwrap();
    n("prompt_cache_hit_tokens") * 28_000
        + n("prompt_cache_miss_tokens") * 280_000
        + n("completion_tokens") * 420_000
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
        let r = s.request("sk-alice", &body).await;
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
        .request(
            "sk-bob",
            &json!({"model": "vllm-chat", "messages": user("hello there")}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let u = &v["usage"];
    let n = |k: &str| u[k].as_u64().unwrap();
    let pico = n("prompt_cache_hit_tokens") * 10_000
        + n("prompt_cache_miss_tokens") * 100_000
        + n("completion_tokens") * 200_000;
    assert_eq!(u["dsgw_cost"]["total"], money(pico));

    // Metrics: tokens and nanodollars by team and key id, and a valid exposition.
    let text = s.metrics().await;
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

fn budget_extra() -> &'static str {
    // Bob may spend 0.00002 USD a day; alice is an admin without a budget.
    "admin = false\n\n[[budgets]]\nscope = \"key\"\nname = \"bob\"\nperiod = \"day\"\namount = \"0.00002\"\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_refuse_with_402_balance_and_usage_report_and_the_ledger_survives_kill_9() {
    let mut s = setup_with(|c| {
        c.replace(
            "key_env = \"BOB_KEY\"\n",
            &format!("key_env = \"BOB_KEY\"\n{}", budget_extra()),
        )
        .replace("key_sha256 = ", "admin = true\nkey_sha256 = ")
    })
    .await;
    let balance = |s: &common::Setup, key: &'static str| {
        let req = s
            .http
            .get(s.gw.url("/user/balance"))
            .bearer_auth(key)
            .send();
        async move { req.await.unwrap().json::<Value>().await.unwrap() }
    };
    let b = balance(&s, "sk-bob").await;
    assert_eq!(b["is_available"], true);
    assert_eq!(b["balance_infos"][0]["currency"], "USD");
    assert_eq!(b["balance_infos"][0]["total_balance"], "0.00");
    assert_eq!(
        balance(&s, "sk-alice").await,
        json!({"is_available": true, "balance_infos": []})
    );

    // Each request costs about 0.0000047 USD: the fifth one starts over the budget.
    let mut spent = 0;
    let mut refused = None;
    for i in 0..10 {
        let r = s
            .request(
                "sk-bob",
                &json!({"model": "deepseek-chat", "messages": user("hello")}),
            )
            .await;
        if r.status() == 402 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["message"], "Insufficient Balance");
            refused = Some(i);
            break;
        }
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        spent += expected_pico(&v["usage"]);
    }
    assert!(refused.is_some(), "the budget never refused");
    assert!(
        spent >= 20_000_000,
        "refused before the budget was spent: {spent}"
    );
    assert_eq!(balance(&s, "sk-bob").await["is_available"], false);

    let usage = s
        .http
        .get(s.gw.url("/v1/usage"))
        .bearer_auth("sk-bob")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(usage["data"][0]["cost"], money(spent));
    assert_eq!(usage["data"][0]["deployment"], "deepseek/deepseek-chat");
    let forbidden = s
        .http
        .get(s.gw.url("/v1/admin/usage"))
        .bearer_auth("sk-bob")
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    // SIGKILL after the commit window: the restarted gateway still knows bob's spend.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    std::process::Command::new("kill")
        .args(["-9", &s.gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(s.gw.wait_exit(std::time::Duration::from_secs(5)));
    s.restart();
    let usage = s
        .http
        .get(s.gw.url("/v1/usage"))
        .bearer_auth("sk-bob")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        usage["data"][0]["cost"],
        money(spent),
        "committed spend lost by kill -9"
    );
    let r = s
        .request(
            "sk-bob",
            &json!({"model": "deepseek-chat", "messages": user("hello")}),
        )
        .await;
    assert_eq!(
        r.status(),
        402,
        "the budget must still hold after a restart"
    );
    let all = s
        .http
        .get(s.gw.url("/v1/admin/usage?key_id=bob"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stream_is_still_recorded_with_estimated_usage() {
    let s = setup_with(|c| c).await;
    let mut r = s.open_stream("__slow__").await;
    let mut chunks = 0;
    while chunks < 5 {
        let bytes = r.chunk().await.unwrap().unwrap();
        chunks += common::sse_data(&String::from_utf8_lossy(&bytes)).len();
    }
    drop(r);
    assert!(
        s.gw.wait_for_log("usage_estimated=true", std::time::Duration::from_secs(5)),
        "{}",
        s.gw.logs()
    );
    let usage = s
        .http
        .get(s.gw.url("/v1/usage"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let row = &usage["data"][0];
    assert_eq!(row["requests"], 1);
    // "user __slow__" through the V3.2 template is a handful of tokens, all billed as misses.
    assert!(
        row["prompt_cache_miss_tokens"].as_u64().unwrap() >= 5,
        "{row}"
    );
    assert!(row["completion_tokens"].as_u64().unwrap() >= 4, "{row}");
    assert_ne!(row["cost"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openrouter_usage_is_priced_from_cached_tokens_without_double_counting() {
    let s = setup_with(|c| c).await;
    let long = (0..100)
        .map(|i| format!("x{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let body = json!({"model": "openrouter-reasoner", "messages": user(&long)});
    let mut last = Value::Null;
    for _ in 0..2 {
        let r = s.request("sk-alice", &body).await;
        last = r.json().await.unwrap();
    }
    let u = &last["usage"];
    assert_eq!(u["prompt_cache_hit_tokens"], 64);
    assert_eq!(u["prompt_tokens"], 101);
    assert_eq!(u["prompt_cache_miss_tokens"], 37);
    // Asked for (`usage.include`), OpenRouter reports the cost; its field is kept as it came.
    assert_eq!(u["cost"], expected_pico(u) as f64 / 1e12);
    // Reasoning is part of completion_tokens and priced once, as output.
    assert!(
        u["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(u["dsgw_cost"]["total"], money(expected_pico(u)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openrouters_own_cost_is_the_truth_and_a_disagreement_is_counted() {
    let s = setup_with(|c| c).await;
    let body =
        json!({"model": "openrouter-reasoner", "messages": user("__overbill__ what is due")});
    let r = s.request("sk-alice", &body).await;
    assert_eq!(r.status(), 200);
    let header = r.headers()["x-dsgw-cost"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    let u = &v["usage"];
    let computed = expected_pico(u);
    // The fake billed twice its table: the bill is OpenRouter's, dsgw's figure is kept beside it.
    assert_eq!(u["cost"], (2 * computed) as f64 / 1e12);
    assert_eq!(header, money(2 * computed));
    assert_eq!(u["dsgw_cost"]["total"], money(2 * computed));
    let text = s.metrics().await;
    assert!(
        text.contains(r#"dsgw_provider_cost_disagreements_total{deployment="deepseek/deepseek-v3.2",model="openrouter-reasoner",provider="openrouter"} 1"#),
        "{text}"
    );
    let line = s.ledger_records(1).await.pop().expect("a ledger line");
    assert_eq!(line["cost"], 2 * computed, "{line}");
    assert_eq!(line["computed_cost"], computed, "{line}");
    assert_eq!(line["price"], "deepseek-v3.2", "{line}");
    assert_eq!(line["tier"], "flat", "{line}");

    // An agreeing figure counts nothing more.
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "openrouter-reasoner", "messages": user("hi")}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["usage"]["dsgw_cost"]["total"],
        money(expected_pico(&v["usage"]))
    );
    assert!(s.metrics().await.contains(r#"dsgw_provider_cost_disagreements_total{deployment="deepseek/deepseek-v3.2",model="openrouter-reasoner",provider="openrouter"} 1"#));
}
