//! Hostile input and careless upstreams on the real binary: client strings never become metric
//! labels, upstream text never carries a secret out.

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

/// A chat request's head, for clients written on raw sockets.
fn chat_head(len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer sk-alice\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}

mod edge {
    use std::time::{Duration, Instant};

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::chat_head;
    use super::common::{self, Setup, user};

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

mod overload {
    use std::time::{Duration, Instant};

    use dsgw_tests::process::rss_kib;
    use serde_json::json;

    use super::common::{self, Setup, user};

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
        let request = format!("{}{body}", super::chat_head(body.len()));
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
        let body = json!({"model": "deepseek-chat", "messages": user("__hold__"), "stream": true})
            .to_string();
        let request = format!("{}{body}", super::chat_head(body.len()));
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
        let s = common::setup_with(|c| {
            c.replace("max_body_bytes = 65536", "max_body_bytes = 33554432")
        })
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
            super::chat_head(body.len()).replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
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
}
