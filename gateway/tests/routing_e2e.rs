//! Routing under failure: a second fake upstream fails in every way a provider can, and the
//! client still gets its answer from the next deployment (before the first byte), a clear error
//! when none is left, and exactly one accounting record per request.

mod common;

use std::time::{Duration, Instant};

use common::{Setup, setup_with, sse_data, user};
use dsgw_tests::fake::FakeUpstream;
use serde_json::{Value, json};

/// Faults that happen before the first byte reaches the client, for both streaming and JSON.
const BEFORE_FIRST_BYTE: [&str; 8] = [
    "refused",
    "500",
    "503",
    "429",
    "hang",
    "stall",
    "malformed",
    "truncated",
];

/// A provider `broken-<kind>` on `broken` (or a closed port for `refused`) and a model
/// `via-<kind>` that tries it first and the healthy `deepseek` provider second.
fn broken_provider(broken: &str, kind: &str) -> String {
    let base = if kind == "refused" {
        // Nothing listens on the discard port of the loopback interface.
        "http://127.0.0.1:9".to_owned()
    } else {
        format!("{broken}/fault/{kind}")
    };
    format!(
        r#"
[[providers]]
name = "broken-{kind}"
kind = "deepseek"
base_url = "{base}"
first_byte_timeout_ms = 300
idle_timeout_ms = 300
request_timeout_ms = 600

[[models]]
name = "via-{kind}"
deployments = [{{ provider = "broken-{kind}", model = "deepseek-chat" }}, {{ provider = "deepseek", model = "deepseek-chat" }}]
"#
    )
}

async fn setup_broken(kinds: &[&str], extra: &str) -> (Setup, FakeUpstream) {
    let broken = FakeUpstream::start(None).await;
    let url = broken.base_url();
    let providers: String = kinds.iter().map(|k| broken_provider(&url, k)).collect();
    let extra = extra.to_owned();
    let s = setup_with(move |c| format!("{c}{providers}{extra}")).await;
    (s, broken)
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": user("hello"), "stream": stream, "stream_options": {"include_usage": true}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_before_the_first_byte_falls_through_to_the_next_deployment() {
    let mut kinds = BEFORE_FIRST_BYTE.to_vec();
    kinds.push("isr");
    kinds.push("stall-mid");
    kinds.push("cut-mid");
    let (s, broken) = setup_broken(&kinds, "").await;
    let mut requests = 0;
    for kind in BEFORE_FIRST_BYTE {
        let model = format!("via-{kind}");
        let (status, v) = s.post("sk-alice", &chat(&model, false)).await;
        assert_eq!(status, 200, "{kind}: {v}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Hello! How can I help you today?"
        );
        assert_eq!(v["model"], model.as_str());
        let events = s.stream(&chat(&model, true)).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{kind}");
        assert!(!events.iter().any(|e| e.contains("\"error\"")), "{kind}");
        requests += 2;
    }
    // A completion cut short by the provider's capacity, or a JSON body that stalls or breaks
    // half way, has not reached the client either.
    for kind in ["isr", "stall-mid", "cut-mid"] {
        let (status, v) = s
            .post("sk-alice", &chat(&format!("via-{kind}"), false))
            .await;
        assert_eq!(status, 200, "{kind}: {v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{kind}");
        requests += 1;
    }
    // Every broken path was called (the closed port aside), and nothing was counted twice.
    assert!(broken.requests() >= 2 * 7 + 3, "{}", broken.requests());
    let all = s.ledger_records(requests).await;
    // The calls that timed out (hang, stall before and after the head) have their own lines.
    let (timed_out, records): (Vec<Value>, Vec<Value>) = all
        .into_iter()
        .partition(|r| r["unanswered"] == "timed_out");
    assert_eq!(records.len(), requests, "{records:?}");
    assert_eq!(timed_out.len(), 5, "{timed_out:?}");
    for r in &records {
        assert_eq!(r["deployment"], "deepseek/deepseek-chat", "{r}");
        assert_eq!(r["estimated"], false);
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            r#"dsgw_upstream_calls_total{model="via-503",outcome="provider_fault",provider="broken-503"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_after_the_first_byte_end_the_stream_with_an_error_and_one_record() {
    let (s, _broken) = setup_broken(&["stall-mid", "cut-mid", "isr"], "").await;
    for kind in ["stall-mid", "cut-mid"] {
        let r = s
            .http
            .post(s.gw.url("/v1/chat/completions"))
            .bearer_auth("sk-alice")
            .json(&chat(&format!("via-{kind}"), true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let events = sse_data(&r.text().await.unwrap());
        assert!(events.len() >= 2, "{kind}: {events:?}");
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{kind}: {events:?}");
        assert!(!events.contains(&"[DONE]".to_owned()), "{kind}");
    }
    // Already streaming when the provider ran out of capacity: the client keeps DeepSeek's answer.
    let events = s.stream(&chat("via-isr", true)).await;
    assert!(
        events
            .iter()
            .any(|e| e.contains(r#""finish_reason":"insufficient_system_resource""#)),
        "{events:?}"
    );
    let records = s.ledger_records(3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["deployment"], "broken-stall-mid/deepseek-chat");
    assert_eq!(
        records[0]["estimated"], true,
        "the stalled stream is estimated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_healthy_deployment_attempts_are_bounded_and_the_error_is_clear() {
    let (s, broken) = setup_broken(
        &["503", "500"],
        r#"
[[models]]
name = "all-broken"
deployments = [{ provider = "broken-503", model = "deepseek-chat" }, { provider = "broken-500", model = "deepseek-chat" }]

[routing]
max_attempts = 3
backoff_base_ms = 10
"#,
    )
    .await;
    let (status, v) = s.post("sk-alice", &chat("all-broken", false)).await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken-503"),
        "the last failure is named: {v}"
    );
    assert_eq!(broken.requests(), 3, "max_attempts bounds the calls");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"dsgw_upstream_calls_total{model="all-broken",outcome="provider_fault",provider="broken-503"} 2"#),
        "503 was tried, then 500, then 503 again: {metrics}"
    );
    assert_eq!(s.ledger_records(0).await.len(), 0, "nothing was served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_out_when_short_and_handed_over_when_long() {
    let (s, broken) = setup_broken(
        &["429"],
        r#"
[[models]]
name = "only-429"
deployments = [{ provider = "broken-429", model = "deepseek-chat" }]
"#,
    )
    .await;
    let started = Instant::now();
    let r = s.request("sk-alice", &chat("only-429", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "three waits of Retry-After: 1 s between four attempts"
    );
    assert_eq!(broken.requests(), 4);

    // The healthy fake asks for 7 s, longer than the gateway waits: the client gets it at once.
    let before = s.fake.requests();
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("__status_429__")}),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(s.fake.requests() - before, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_stays_on_one_deployment_and_keeps_its_cache() {
    let other = FakeUpstream::start(Some(dsgw_tests::harness::UPSTREAM_KEY)).await;
    let extra = format!(
        r#"
[[providers]]
name = "second"
kind = "deepseek"
base_url = "{}"
api_key_env = "FAKE_DEEPSEEK_KEY"

[[models]]
name = "pair"
deployments = [{{ provider = "deepseek", model = "deepseek-chat", priority = 0 }}, {{ provider = "second", model = "deepseek-chat", priority = 0 }}]
"#,
        other.base_url()
    );
    let s = setup_with(move |c| c + &extra).await;
    let system = "You are a careful assistant. ".repeat(40);
    let conversations = 12;
    let turns = 3;
    let mut hits_after_first = 0;
    for c in 0..conversations {
        let mut messages = vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": format!("conversation {c} begins")}),
        ];
        for turn in 0..turns {
            let (status, v) = s
                .post("sk-alice", &json!({"model": "pair", "messages": messages}))
                .await;
            assert_eq!(status, 200, "{v}");
            if turn > 0 && v["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap() > 0 {
                hits_after_first += 1;
            }
            messages.push(v["choices"][0]["message"].clone());
            messages.push(json!({"role": "user", "content": format!("turn {turn}")}));
        }
    }
    assert_eq!(
        hits_after_first,
        conversations * (turns - 1),
        "every later turn hit the cache of the deployment that served the first"
    );
    let records = s.ledger_records(conversations * turns).await;
    let mut used = std::collections::HashSet::new();
    for conversation in records.chunks(turns) {
        let first = &conversation[0]["deployment"];
        assert!(conversation.iter().all(|r| &r["deployment"] == first));
        used.insert(first.as_str().unwrap().to_owned());
    }
    assert_eq!(used.len(), 2, "conversations spread over both: {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_of_three_upstreams_failing_half_the_time_clients_see_999_percent() {
    let flaky = FakeUpstream::start(None).await;
    let third = FakeUpstream::start(Some(dsgw_tests::harness::UPSTREAM_KEY)).await;
    let extra = format!(
        r#"
[[providers]]
name = "flaky"
kind = "deepseek"
base_url = "{}/fault/flaky-50"

[[providers]]
name = "third"
kind = "deepseek"
base_url = "{}"
api_key_env = "FAKE_DEEPSEEK_KEY"

[[models]]
name = "trio"
deployments = [{{ provider = "deepseek", model = "deepseek-chat", priority = 0 }}, {{ provider = "flaky", model = "deepseek-chat", priority = 0 }}, {{ provider = "third", model = "deepseek-chat", priority = 0 }}]

# Circuit breakers would soon stop sending anything to the flaky upstream (the other tests
# show that); here they stay closed so every third request meets it and retries must save it.
[routing]
backoff_base_ms = 20
failures_to_open = 1000
error_rate_to_open = 1.0
error_rate_window = 64
"#,
        flaky.base_url(),
        third.base_url()
    );
    let s = setup_with(move |c| c + &extra).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let http = s.http.clone();
            let url = s.gw.url("/v1/chat/completions");
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                let mut i = 0;
                while Instant::now() < deadline {
                    i += 1;
                    let body = json!({"model": "trio", "messages": user(&format!("w{w} r{i}")), "stream": i % 2 == 0});
                    let r = http
                        .post(&url)
                        .bearer_auth("sk-alice")
                        .json(&body)
                        .send()
                        .await;
                    let good = match r {
                        Ok(r) if r.status() == 200 => r
                            .text()
                            .await
                            .is_ok_and(|t| !t.contains("\"error\"")),
                        _ => false,
                    };
                    if good { ok += 1 } else { failed += 1 }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0u32, 0u32);
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed += f;
    }
    let total = ok + failed;
    println!(
        "load: {total} requests in 4 s, {failed} failed, flaky upstream saw {}",
        flaky.requests()
    );
    assert!(total >= 100, "the load test ran: {total}");
    assert!(
        u64::from(total) / 6 < flaky.requests(),
        "the flaky upstream took its share: {}",
        flaky.requests()
    );
    assert!(
        f64::from(ok) / f64::from(total) >= 0.999,
        "{failed} of {total} failed"
    );
    assert_eq!(s.ledger_records(ok as usize).await.len(), ok as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_is_retried_once_at_most_and_each_timed_out_call_is_recorded() {
    let (s, broken) = setup_broken(
        &["hang"],
        r#"
[[models]]
name = "only-hang"
deployments = [{ provider = "broken-hang", model = "deepseek-chat" }]

[routing]
max_attempts = 4
backoff_base_ms = 10
"#,
    )
    .await;
    // Alone, a hanging deployment costs two calls (the timeout and one retry), not four (the
    // count says it; the time taken would only echo it, and swings on a busy machine).
    let (status, v) = s.post("sk-alice", &chat("only-hang", false)).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(broken.requests(), 2, "retried once, not max_attempts times");
    // With a healthy deployment behind it, the hang moves on at once.
    let (status, v) = s.post("sk-alice", &chat("via-hang", false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(broken.requests(), 3);
    // Every timed-out call may be billed: each has a ledger line, and /v1/usage says so.
    let records = s.ledger_records(4).await;
    let timed_out: Vec<&Value> = records
        .iter()
        .filter(|r| r["unanswered"] == "timed_out")
        .collect();
    assert_eq!(timed_out.len(), 3, "{records:?}");
    assert_eq!(
        timed_out
            .iter()
            .map(|r| r["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 1]
    );
    for r in &timed_out {
        assert_eq!(r["deployment"], "broken-hang/deepseek-chat");
        assert_eq!(r["estimated"], true);
        assert!(
            r["cache_miss"].as_u64().unwrap() > 0,
            "the estimated prompt: {r}"
        );
        assert_eq!(r["output"], 0);
    }
    let answered: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("unanswered").is_none())
        .collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0]["deployment"], "deepseek/deepseek-chat");
    let usage = s.get_json("sk-alice", "/v1/usage").await;
    let row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["deployment"] == "broken-hang/deepseek-chat")
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(row["unanswered_calls"], 2, "{row}");
    assert_eq!(row["requests"], 0, "{row}");
    assert_ne!(row["unanswered_cost"], "0", "{row}");
}
