//! Limits held across replicas: real `dsgw` processes sharing a real `redis-server`.

use std::path::Path;
use std::time::{Duration, Instant};

use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use dsgw_tests::redis_server::RedisServer;
use serde_json::{Value, json};

fn gateway(fake: &FakeUpstream, extra: &str) -> Gateway {
    dsgw::providers::install_tls();
    Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &harness::config(&fake.base_url(), extra),
        &harness::env(),
    )
}

async fn chat(gw: &Gateway, key: &str, content: &str, max_tokens: u32) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}).to_string())
        .send()
        .await
        .unwrap()
}

/// Polls until a request is admitted (settlement runs a moment after the response).
async fn eventually_admitted(gw: &Gateway, key: &str, max_tokens: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if chat(gw, key, "hi", max_tokens).await.status() == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_exactly_the_global_burst() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let extra = format!(
        "[redis]\nurl = \"{}\"\ntimeout_ms = 500\n\n[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 5\n",
        redis.url()
    );
    let (a, b) = (gateway(&fake, &extra), gateway(&fake, &extra));
    let requests = (0..12).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        chat(gw, "sk-alice", "hi", 8)
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut admitted = 0;
    for r in responses {
        match r.status().as_u16() {
            200 => {
                assert!(r.headers().contains_key("x-ratelimit-remaining-requests"));
                assert_eq!(r.headers()["x-ratelimit-limit-requests"], "5");
                admitted += 1;
            }
            429 => {
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=12).contains(&retry), "{retry}");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["type"], "rate_limit_error");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        admitted, 5,
        "two replicas together must admit exactly the team's burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_come_back_after_upstream_failure_and_client_disconnect() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let extra = format!(
        "[redis]\nurl = \"{}\"\ntimeout_ms = 500\n\n[[limits]]\nscope = \"key\"\nname = \"alice\"\ntokens_per_minute = 3000\nconcurrent = 1\n",
        redis.url()
    );
    let gw = gateway(&fake, &extra);
    // 2500 tokens reserved, the upstream fails: all of them must come back.
    assert_eq!(
        chat(&gw, "sk-alice", "__status_503__", 2500).await.status(),
        502
    );
    assert!(
        eventually_admitted(&gw, "sk-alice", 2500).await,
        "tokens stayed reserved after an upstream failure"
    );

    // The single concurrency slot is held by an open stream, and returned when its client leaves.
    let mut stream = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .header("content-type", "application/json")
        .body(json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "__slow__"}], "stream": true, "max_tokens": 10}).to_string())
        .send()
        .await
        .unwrap();
    stream.chunk().await.unwrap().unwrap();
    let refused = chat(&gw, "sk-alice", "hi", 10).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent")
    );
    drop(stream);
    assert!(
        eventually_admitted(&gw, "sk-alice", 10).await,
        "the slot was not returned on disconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_or_closed_as_configured_and_recovers() {
    let mut redis = RedisServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let limit = |mode: &str| {
        format!(
            "[redis]\nurl = \"{}\"\ntimeout_ms = 200\nreplicas = 2\n\n[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 1000\non_redis_failure = \"{mode}\"\n",
            redis.url()
        )
    };
    let open = gateway(&fake, &limit("open"));
    let closed = gateway(&fake, &limit("closed"));
    assert_eq!(chat(&open, "sk-alice", "hi", 4).await.status(), 200);
    assert_eq!(chat(&closed, "sk-alice", "hi", 4).await.status(), 200);

    redis.kill();
    assert_eq!(
        chat(&open, "sk-alice", "hi", 4).await.status(),
        200,
        "fail-open serves from the local tier"
    );
    let r = chat(&closed, "sk-alice", "hi", 4).await;
    assert_eq!(r.status(), 503, "fail-closed refuses");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limits cannot be checked")
    );
    assert!(closed.wait_for_log("redis unavailable for limits", Duration::from_secs(5)));

    redis.restart();
    assert!(
        eventually_admitted(&closed, "sk-alice", 4).await,
        "did not recover when Redis came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_enforce_one_budget() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    // Each "hi" costs 3.5 micro-dollars (2 prompt tokens at 0.28, 7 output at 0.42 per 1M).
    let extra = format!(
        "[redis]\nurl = \"{}\"\ntimeout_ms = 500\n\n[[budgets]]\nscope = \"team\"\nname = \"research\"\nperiod = \"day\"\namount = \"0.00002\"\n",
        redis.url()
    );
    let (a, b) = (gateway(&fake, &extra), gateway(&fake, &extra));
    let mut first_refusal = None;
    for i in 0..14 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let status = chat(gw, "sk-alice", "hi", 10).await.status();
        if status == 402 {
            first_refusal = Some(i);
            break;
        }
        assert_eq!(status, 200);
        // Spend reaches the shared counters just after the response.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        first_refusal,
        Some(6),
        "six requests fit the team's budget across both replicas, not per replica"
    );
    let balance: Value = reqwest::Client::new()
        .get(b.url("/user/balance"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["is_available"], false);
    // Usage is shared too: gateway A served three of the six, and reports all six.
    let usage: Value = reqwest::Client::new()
        .get(a.url("/v1/usage"))
        .bearer_auth("sk-alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["data"][0]["requests"], 6, "{usage}");
    assert_eq!(usage["data"][0]["cost"], "0.000021");
    assert_eq!(usage["data"][0]["prompt_cache_miss_tokens"], 12);
}
