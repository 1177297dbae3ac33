//! Hostile input and careless upstreams on the real binary: client strings never become metric
//! labels, upstream text never carries a secret out, and slow or surplus connections are cut at
//! the edge while others are served.

mod common;

use common::{setup, setup_with, user};
use dsgw_tests::harness::UPSTREAM_KEY;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_bogus_model_names_do_not_grow_the_exposition() {
    let s = setup_with(common::unshed).await;
    // Every series a refused request can touch exists after these.
    for model in ["deepseek-chat", "no-such-model"] {
        let _ = s
            .post("sk-alice", &json!({"model": model, "messages": user("hi")}))
            .await;
    }
    let before = s.metrics().await;
    let bogus = |i: usize| format!("bogus-{i}-{}", "x".repeat(1000));
    let s = &s;
    for round in 0..100 {
        let requests = (0..100).map(|j| {
            let body = json!({"model": bogus(round * 100 + j), "messages": user("hi")});
            async move { s.post("sk-alice", &body).await }
        });
        for (status, v) in futures_util::future::join_all(requests).await {
            assert_eq!(status, 400, "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Model Not Exist")
            );
        }
    }
    let after = s.metrics().await;
    assert!(!after.contains("bogus-"), "a client string became a label");
    assert!(
        after.contains(r#"model="other""#),
        "refused unknown models are counted under `other`"
    );
    // The same series, only their values moved (a few digits each).
    let lines = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(lines(&after), lines(&before), "no new series");
    assert!(
        after.len() < before.len() + 4096,
        "{} -> {} bytes",
        before.len(),
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_echoing_its_credentials_never_passes_them_on() {
    let s = setup().await;
    for (trigger, status) in [
        ("__leak__ __status_400__", 400),
        ("__leak__ __status_422__", 422),
        ("__leak__ __status_500__", 502),
    ] {
        let (got, v) = s
            .post(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user(trigger)}),
            )
            .await;
        assert_eq!(got, status, "{v}");
        let text = v.to_string();
        assert!(!text.contains(UPSTREAM_KEY), "{text}");
        assert!(!text.contains("sk-upstream"), "{text}");
        assert!(
            text.contains("[redacted]"),
            "the rest of the message stays: {text}"
        );
    }
    // Streaming: the same failure before the first byte.
    let r = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json(&json!({"model": "deepseek-chat", "messages": user("__leak__ __status_400__"), "stream": true}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(!body.to_string().contains(UPSTREAM_KEY), "{body}");
    assert!(
        !s.gw.logs().contains(UPSTREAM_KEY),
        "the logs stay clean too"
    );
}

/// A gateway without keys (the embedded default's mode) in front of the fake.
fn open_gateway(
    fake: &dsgw_tests::fake::FakeUpstream,
    server_extra: &str,
) -> dsgw_tests::harness::Gateway {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n[ledger]\npath = \"\"\n\n[[providers]]\nname = \"deepseek\"\nkind = \"deepseek\"\nbase_url = \"{}\"\napi_key_env = \"FAKE_DEEPSEEK_KEY\"\n\n[[models]]\nname = \"deepseek-chat\"\ndeployments = [{{ provider = \"deepseek\", model = \"deepseek-chat\" }}]\n",
        fake.base_url()
    );
    dsgw_tests::harness::Gateway::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &config,
        &dsgw_tests::harness::env(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_loopback_hosts_and_listed_origins_are_served() {
    let fake = dsgw_tests::fake::FakeUpstream::start(Some(UPSTREAM_KEY)).await;
    let gw = open_gateway(&fake, "cors_origins = [\"http://tool.example\"]");
    let http = reqwest::Client::new();
    let body = json!({"model": "deepseek-chat", "messages": user("hi")}).to_string();
    let send = |host: Option<&str>, origin: Option<&str>| {
        let mut r = http
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "text/plain")
            .body(body.clone());
        if let Some(h) = host {
            r = r.header("host", h);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let allow = r
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = r.text().await.unwrap();
            (status, allow, text)
        }
    };
    let port = gw.addr.port();
    // DNS rebinding: a hostile name resolving to loopback.
    let (status, _, text) = send(
        Some(&format!("evil.example:{port}")),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("loopback hosts"), "{text}");
    // A cross-site form post to the loopback address.
    let (status, _, text) = send(None, Some("http://evil.example")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("cors_origins"), "{text}");
    assert_eq!(
        fake.requests(),
        0,
        "nothing reached the provider (and its key)"
    );
    // The user's own tools: loopback without an Origin, or a listed origin.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        assert_eq!(send(Some(&host), None).await.0, 200, "{host}");
    }
    let (status, allow, _) = send(None, Some("http://tool.example")).await;
    assert_eq!(status, 200);
    assert_eq!(allow.as_deref(), Some("http://tool.example"));
    // Admin routes need a configured key, always.
    let admin = http
        .get(gw.url("/v1/admin/usage"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_cors_preflights_answered_before_any_key() {
    let s = common::setup_with(|c| {
        c.replace(
            "drain_timeout_secs = 5",
            "drain_timeout_secs = 5\ncors_origins = [\"https://chat.example.com\"]",
        )
    })
    .await;
    let preflight = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://chat.example.com").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://chat.example.com");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The real request from the listed origin can read the cost.
    let r = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .header("origin", "https://chat.example.com")
        .bearer_auth("sk-alice")
        .json(&json!({"model": "deepseek-chat", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("x-dsgw-cost"), "{exposed}");
}

mod edge {
    use std::time::{Duration, Instant};

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::common::{self, Setup, chat_head, user};

    async fn gateway(server: &str) -> Setup {
        let server = server.to_owned();
        common::setup_with(move |c| {
            c.replace(
                "drain_timeout_secs = 5",
                &format!("drain_timeout_secs = 5\n{server}"),
            )
        })
        .await
    }

    /// Reads until the server closes the connection (or `limit` passes); what it sent.
    async fn until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, tcp.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_heads_and_stalled_bodies_are_cut_while_others_are_served() {
        let s = gateway("header_timeout_ms = 500\nbody_timeout_ms = 500").await;
        // A head sent a byte at a time, never finished.
        let mut slow = TcpStream::connect(s.gw.addr).await.unwrap();
        let started = Instant::now();
        let trickle = async {
            for b in b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: " {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // A body announced as 100000 bytes that stops after 10.
        let mut stalled = TcpStream::connect(s.gw.addr).await.unwrap();
        stalled
            .write_all(chat_head(100_000).as_bytes())
            .await
            .unwrap();
        stalled.write_all(b"{\"model\":").await.unwrap();
        // Meanwhile a normal request is served.
        let (status, _) = s
            .post(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user("hi")}),
            )
            .await;
        assert_eq!(status, 200);
        trickle.await;
        let answer = until_closed(&mut slow, Duration::from_secs(5)).await;
        assert!(answer.is_some(), "the slow head was never cut");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let answer = until_closed(&mut stalled, Duration::from_secs(5))
            .await
            .expect("the stalled body was never cut");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout_ms"), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_keep_alive_connections_close_and_long_streams_do_not() {
        let s = gateway("header_timeout_ms = 300\nbody_timeout_ms = 300\nkeepalive_idle_ms = 400")
            .await;
        let body = json!({"model": "deepseek-chat", "messages": user("hi")}).to_string();
        let mut tcp = TcpStream::connect(s.gw.addr).await.unwrap();
        tcp.write_all(format!("{}{body}", chat_head(body.len())).as_bytes())
            .await
            .unwrap();
        let mut first = [0u8; 12];
        tcp.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let idle = Instant::now();
        assert!(
            until_closed(&mut tcp, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(
            idle.elapsed() >= Duration::from_millis(350),
            "{:?}",
            idle.elapsed()
        );
        // A stream that runs about a second, longer than every edge timeout, finishes whole.
        let events = s
            .stream(
                &json!({"model": "deepseek-chat", "messages": user("__drip__"), "stream": true}),
            )
            .await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }

    /// The body of the one response in `answer` (a head and `content-length` bytes), as JSON.
    fn envelope_of(answer: &str) -> serde_json::Value {
        let (_, body) = answer.split_once("\r\n\r\n").expect("a whole response");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heads_the_parser_rejects_are_answered_in_the_envelope() {
        let s = gateway("").await;
        let many_headers: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
        let cases = [
            (
                "GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nno colon here\r\n\r\n".to_owned(),
                "HTTP/1.1 400 Bad Request",
                "not valid HTTP/1.1",
            ),
            (
                format!("GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n{many_headers}\r\n"),
                "HTTP/1.1 431 Request Header Fields Too Large",
                "too large",
            ),
            (
                format!(
                    "GET /{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
                    "a".repeat(70_000)
                ),
                "HTTP/1.1 414 URI Too Long",
                "URI is too long",
            ),
        ];
        for (request, head, message) in cases {
            let mut tcp = TcpStream::connect(s.gw.addr).await.unwrap();
            tcp.write_all(request.as_bytes()).await.unwrap();
            let answer = until_closed(&mut tcp, Duration::from_secs(5))
                .await
                .expect("answered and closed");
            assert!(answer.starts_with(head), "{answer}");
            assert!(
                answer.contains("content-type: application/json"),
                "{answer}"
            );
            let error = &envelope_of(&answer)["error"];
            assert_eq!(error["type"], "invalid_request_error", "{answer}");
            assert!(
                error["message"].as_str().unwrap().contains(message),
                "{answer}"
            );
        }

        // On a keep-alive connection, after a request served whole: the served answer is
        // untouched, and the bad head that follows it gets the envelope.
        let mut tcp = TcpStream::connect(s.gw.addr).await.unwrap();
        tcp.write_all(
            b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer sk-alice\r\n\r\n\
              GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nbad\x01name: v\r\n\r\n",
        )
        .await
        .unwrap();
        let answer = until_closed(&mut tcp, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        let (served, rejected) = answer
            .split_once("HTTP/1.1 400 Bad Request")
            .unwrap_or_else(|| panic!("no rejection after the answer: {answer}"));
        assert!(served.contains("deepseek-chat"), "{served}");
        assert_eq!(
            envelope_of(rejected)["error"]["type"],
            "invalid_request_error",
            "{rejected}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_beyond_the_cap_is_answered_at_once() {
        let s = gateway("max_connections = 3").await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(s.gw.addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut over = TcpStream::connect(s.gw.addr).await.unwrap();
        let answer = until_closed(&mut over, Duration::from_secs(2))
            .await
            .expect("refused at once");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("connection limit"), "{answer}");
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _) = s
            .post(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user("hi")}),
            )
            .await;
        assert_eq!(status, 200, "a freed slot serves again");
        assert!(s.gw.logs().contains("at the connection limit"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_arriving_while_the_gateway_stalls_wait_for_it_and_are_served() {
        // More than the 128 a default listener queues: a SYN beyond the queue is dropped, and
        // the client tries again only a second later.
        const CLIENTS: usize = 600;
        let _ = rlimit::increase_nofile_limit(4096);
        // The 600 requests at once are a flood for a debug build (see `common::unshed`).
        let s = gateway("queue_budget_ms = 0").await;
        let body = json!({"model": "deepseek-chat", "messages": user("hi")}).to_string();
        let request = format!("{}{body}", chat_head(body.len()));
        // A stalled gateway (descheduled, throttled by its CPU quota, or busy) accepts nothing;
        // the kernel completes what fits in the accept queue.
        s.gw.signal("STOP");
        let connects = (0..CLIENTS).map(|_| {
            tokio::time::timeout(Duration::from_millis(700), TcpStream::connect(s.gw.addr))
        });
        let connected: Vec<TcpStream> = futures_util::future::join_all(connects)
            .await
            .into_iter()
            .filter_map(|c| c.ok().and_then(Result::ok))
            .collect();
        s.gw.signal("CONT");
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap_or_default();
        assert_eq!(
            connected.len(),
            CLIENTS,
            "handshakes completed while the gateway was stopped (net.core.somaxconn = {})",
            somaxconn.trim()
        );
        let answers = connected.into_iter().map(|mut tcp| {
            let request = request.clone();
            async move {
                tcp.write_all(request.as_bytes()).await.unwrap();
                let mut head = [0u8; 12];
                tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
                    .await
                    .is_ok_and(|r| r.is_ok())
                    && &head == b"HTTP/1.1 200"
            }
        });
        let served = futures_util::future::join_all(answers)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        assert_eq!(served, CLIENTS, "every connection queued is served");
    }
}
