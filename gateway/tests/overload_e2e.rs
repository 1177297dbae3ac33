//! Overload on the real binary: requests beyond max_in_flight and past the queue budget are
//! shed at once and counted, a full provider pool is the gateway's saturation, and memory goes
//! back after a burst.

mod common;

use std::time::{Duration, Instant};

use dsgw_tests::process::rss_kib;
use serde_json::json;

use common::{Setup, user};

/// The gateway's pid and its RSS once it has served a request (its lazy start-up done).
async fn served_once(s: &Setup) -> (u32, u64) {
    let (status, _) = s
        .post(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("hi")}),
        )
        .await;
    assert_eq!(status, 200);
    let pid = s.gw.pid();
    (pid, rss_kib(pid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_requests_are_shed_at_once() {
    let s = common::setup_with(|c| {
        c.replace(
            "drain_timeout_secs = 5",
            "drain_timeout_secs = 5\nmax_in_flight = 2",
        )
    })
    .await;
    let a = s.open_stream("__slow__").await;
    let b = s.open_stream("__slow__").await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let started = Instant::now();
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("hi")}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests in flight"),
        "{v}"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The operator still sees why: the scrape is answered with every slot taken.
    let metrics = s.metrics().await;
    for series in [
        "dsgw_shed_total{reason=\"in_flight\"} 1\n",
        "dsgw_requests_in_flight 2\n",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    // A stream's slot comes back when it ends (here: the client goes away).
    drop(a);
    s.until_served("the slot").await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_the_freed_heap_goes_back_to_the_system() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The burst's sockets are this process's too.
    let _ = rlimit::increase_nofile_limit(4096);
    let s = common::setup_with(common::unshed).await;
    let (pid, idle) = served_once(&s).await;
    let body = json!({"model": "deepseek-chat", "messages": user("hi")}).to_string();
    let request = format!("{}{body}", common::chat_head(body.len()));
    // 600 clients at once, each holding its connection until all have their answer.
    let all_answered = std::sync::Arc::new(tokio::sync::Barrier::new(600));
    let clients: Vec<_> = (0..600)
        .map(|_| {
            let (request, addr, all) = (request.clone(), s.gw.addr, all_answered.clone());
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.write_all(request.as_bytes()).await.unwrap();
                let mut head = [0u8; 12];
                tcp.read_exact(&mut head).await.unwrap();
                all.wait().await;
                head
            })
        })
        .collect();
    for c in clients {
        assert_eq!(&c.await.unwrap(), b"HTTP/1.1 200");
    }
    let after = rss_kib(pid);
    assert!(
        after > idle + 8 * 1024,
        "the burst must grow the heap for this test to mean anything: {idle} -> {after} KiB"
    );
    // At least half the growth given back once a second passes calm (without the trim none
    // is; what stays is the pool's idle upstream connections and the allocator's own).
    let deadline = Instant::now() + Duration::from_secs(20);
    let target = idle + (after - idle) / 2;
    while rss_kib(pid) > target {
        assert!(
            Instant::now() < deadline,
            "RSS {idle} KiB idle, {after} KiB after the burst, still {} KiB 20 s later",
            rss_kib(pid)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams held open at a steady count are calm: what opening them left free is handed
/// back while they stay open (counting every request in flight as load, the trim waited
/// for them to end, and RSS with a thousand streams open kept the peak of opening them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heap_is_trimmed_while_many_streams_stay_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rlimit::increase_nofile_limit(4096);
    // Held streams must outlive the test's wait, not end at the provider's idle timeout.
    let s = common::setup_with(|c| {
        common::unshed(c.replace("idle_timeout_ms = 2000", "idle_timeout_ms = 60000"))
    })
    .await;
    let body =
        json!({"model": "deepseek-chat", "messages": user("__hold__"), "stream": true}).to_string();
    let request = format!("{}{body}", common::chat_head(body.len()));
    let opened = std::sync::Arc::new(tokio::sync::Barrier::new(401));
    let streams: Vec<_> = (0..400)
        .map(|_| {
            let (request, addr, opened) = (request.clone(), s.gw.addr, opened.clone());
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.write_all(request.as_bytes()).await.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(5).any(|w| w == b"data:") {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed before the first chunk");
                    seen.extend_from_slice(&buf[..n]);
                }
                opened.wait().await;
                // Held until the test ends.
                let _ = tcp.read(&mut buf).await;
            })
        })
        .collect();
    opened.wait().await;
    let trimmed = "freed heap returned to the system";
    let before = s.gw.logs().matches(trimmed).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.gw.logs().matches(trimmed).count() == before {
        assert!(
            Instant::now() < deadline,
            "no heap trim within 10 s of 400 streams settling open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        streams.iter().all(|t| !t.is_finished()),
        "the streams were still open at the trim"
    );
    for t in streams {
        t.abort();
    }
}

/// A request of megabytes leaves nothing held once answered, with no burst after it to set
/// off the heap trim: glibc's default raises its mmap threshold to the size of the first
/// large buffer freed, and every such buffer after it then stayed in the heap (an 8 MB
/// body kept RSS 24 MB up until the next burst).
#[tokio::test]
async fn a_request_of_megabytes_gives_its_memory_back_at_once() {
    let s =
        common::setup_with(|c| c.replace("max_body_bytes = 65536", "max_body_bytes = 33554432"))
            .await;
    let (pid, idle) = served_once(&s).await;
    let big = json!({"model": "deepseek-chat", "messages": user(&"x".repeat(8 << 20))});
    let mut peak = 0;
    for _ in 0..2 {
        // What the answer is (the fake refuses bodies this large) does not matter here.
        s.request("sk-alice", &big).await.bytes().await.unwrap();
        peak = peak.max(rss_kib(pid));
    }
    // Within 0.8 s, before the trim that follows load could run (it waits for a second
    // of calm): only what is handed back as it is freed counts.
    let deadline = Instant::now() + Duration::from_millis(800);
    while rss_kib(pid) >= idle + 6 * 1024 {
        assert!(
            Instant::now() < deadline,
            "RSS {idle} KiB before two 8 MB requests, {} KiB 0.8 s after them (highest seen {peak})",
            rss_kib(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `clients` at once, each sending chat requests one after another (a connection each)
/// for `during`; every answer.
/// `dsgw_shed_total` for `reason` in a scrape.
fn shed_count(metrics: &str, reason: &str) -> usize {
    let series = format!("dsgw_shed_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

async fn sustained(s: &common::Setup, clients: usize, during: Duration) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({"model": "deepseek-chat", "messages": user("hi")}).to_string();
    // `connection: close`: each answer ends with its connection, read to the end.
    let head =
        common::chat_head(body.len()).replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
    let request = format!("{head}{body}");
    let until = Instant::now() + during;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (request, addr) = (request.clone(), s.gw.addr);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while Instant::now() < until {
                    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    tcp.write_all(request.as_bytes()).await.unwrap();
                    let mut answer = Vec::new();
                    let _ = tcp.read_to_end(&mut answer).await;
                    answers.push(String::from_utf8_lossy(&answer).into_owned());
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_ready_work_waits_past_the_queue_budget_new_requests_are_shed() {
    let _ = rlimit::increase_nofile_limit(4096);
    // A 1 ms budget: 200 clients without pause keep work waiting longer than that (a burst
    // all at once would be admitted before the wait shows).
    let s = common::setup_with(|c| {
        c.replace(
            "drain_timeout_secs = 5",
            "drain_timeout_secs = 5\nqueue_budget_ms = 1",
        )
    })
    .await;
    s.until_served("a gateway at rest").await;
    let before = shed_count(&s.metrics().await, "queue_budget");
    let answers = sustained(&s, 200, Duration::from_millis(1500)).await;
    let shed: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .collect();
    let served = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    assert_eq!(
        served + shed.len(),
        answers.len(),
        "every request is answered 200 or 503"
    );
    assert!(!shed.is_empty(), "nothing was shed");
    let first = shed[0].to_ascii_lowercase();
    assert!(first.contains("retry-after: 1"), "{first}");
    assert!(
        first.contains("\"code\":\"service_unavailable\""),
        "{first}"
    );
    assert!(first.contains("queue budget"), "{first}");
    // Every 503 is counted by its reason (read before any other request is sent); the
    // scrape itself is never shed.
    let metrics = s.metrics().await;
    assert_eq!(shed_count(&metrics, "queue_budget") - before, shed.len());
    assert_eq!(shed_count(&metrics, "in_flight"), 0);
    assert!(metrics.contains("dsgw_lane_wait_seconds{lane=\"0\"}"));
    // Once the burst is over, the runtime is punctual again and requests are served.
    s.until_served("the queue to drain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_provider_pool_is_the_gateways_saturation_not_the_providers_fault() {
    let s = common::setup_with(|c| {
        c.replacen(
            "first_byte_timeout_ms = 2000",
            "first_byte_timeout_ms = 2000\nmax_connections = 1\npool_wait_ms = 100",
            1,
        )
        .replace("key_sha256 = ", "admin = true\nkey_sha256 = ")
    })
    .await;
    let held = s.open_stream("__slow__").await;
    assert_eq!(held.status(), 200);
    for _ in 0..6 {
        let (status, v) = s
            .post(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user("hi")}),
            )
            .await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["error"]["code"], "gateway_saturated", "{v}");
    }
    let metrics = s.metrics().await;
    assert!(metrics.contains(r#"dsgw_upstream_calls_total{model="deepseek-chat",outcome="gateway_saturated",provider="deepseek"}"#), "{metrics}");
    assert!(
        !metrics.contains(r#"outcome="provider_fault",provider="deepseek""#),
        "{metrics}"
    );
    // The breaker saw nothing: the deployment is healthy.
    let health = s.get_json("sk-alice", "/v1/admin/deployments").await;
    assert!(health.to_string().contains("\"closed\""), "{health}");
    drop(held);
    s.until_served("the provider slot").await;
}
