//! Shared set-up for the end-to-end tests: the fake upstream in this process, the real `dsgw`
//! binary as a child.

#![allow(dead_code)]

use std::path::Path;

use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use serde_json::Value;

pub struct Setup {
    pub fake: FakeUpstream,
    pub gw: Gateway,
    pub http: reqwest::Client,
    config: String,
}

pub async fn setup() -> Setup {
    setup_with(|c| c).await
}

/// `config` with shedding for the queue's wait turned off, for tests that flood the gateway on
/// purpose to see something else: a debug build on a shared two-core machine stays behind a
/// budget set for release builds, and its 503s would be right. The shedder has tests of its own.
pub fn unshed(config: String) -> String {
    assert!(
        config.contains("drain_timeout_secs = 5"),
        "the harness's [server] table moved"
    );
    config.replace(
        "drain_timeout_secs = 5",
        "drain_timeout_secs = 5\nqueue_budget_ms = 0",
    )
}

/// Starts the fake and a gateway whose config text `edit` may change.
pub async fn setup_with(edit: impl FnOnce(String) -> String) -> Setup {
    dsgw::providers::install_tls();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let config = edit(harness::config(&fake.base_url(), ""));
    let gw = Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &config,
        &harness::env(),
    );
    Setup {
        fake,
        gw,
        http: reqwest::Client::new(),
        config,
    }
}

/// Picodollars as the gateway writes money: a plain decimal without trailing zeros.
pub fn money(pico: u64) -> String {
    let (whole, frac) = (pico / 1_000_000_000_000, pico % 1_000_000_000_000);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{frac:012}").trim_end_matches('0'))
    }
}

pub fn user(text: &str) -> Value {
    serde_json::json!([{"role": "user", "content": text}])
}

impl Setup {
    /// Starts a new gateway process with the same configuration (the old one must have exited).
    pub fn restart(&mut self) {
        self.gw = Gateway::start(
            Path::new(env!("CARGO_BIN_EXE_dsgw")),
            &self.config,
            &harness::env(),
        );
    }

    pub async fn post(&self, key: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json_body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    /// Posts a chat request as `key` and returns the response, headers and all.
    pub async fn request(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json_body(body)
            .send()
            .await
            .unwrap()
    }

    /// Starts a `deepseek-chat` stream whose user message is `content` and returns the open response.
    pub async fn open_stream(&self, content: &str) -> reqwest::Response {
        self.http
            .post(self.gw.url("/v1/chat/completions"))
            .bearer_auth("sk-alice")
            .json_body(&serde_json::json!({"model": "deepseek-chat", "messages": user(content), "stream": true}))
            .send()
            .await
            .unwrap()
    }

    /// Posts a streaming request and returns every SSE `data:` payload, in order, as text.
    pub async fn stream(&self, body: &Value) -> Vec<String> {
        let r = self
            .http
            .post(self.gw.url("/chat/completions"))
            .bearer_auth("sk-alice")
            .json_body(body)
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
        sse_data(&text)
    }
}

impl Setup {
    /// The gateway's ledger records, once at least `expected` are there (it commits in groups
    /// every 20 ms), read again a moment later so a record written twice would show.
    pub async fn ledger_records(&self, expected: usize) -> Vec<Value> {
        let path = self
            .config
            .lines()
            .find_map(|l| l.strip_prefix("path = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("the test config names a ledger path")
            .to_owned();
        let read = || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("ledger lines are JSON"))
                .collect::<Vec<_>>()
        };
        for _ in 0..300 {
            if read().len() >= expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        read()
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET path` as `key`, its JSON body.
    pub async fn get_json(&self, key: &str, path: &str) -> Value {
        self.http
            .get(self.gw.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls (up to 5 s) until a plain `deepseek-chat` request as `sk-alice` is served: what
    /// was held (a slot, a connection) has come back.
    pub async fn until_served(&self, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let body = serde_json::json!({"model": "deepseek-chat", "messages": user("hi")});
        while self.post("sk-alice", &body).await.0 != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

pub trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

/// A chat request's head as a client writes it, for a body of `len` bytes (sk-alice's key).
pub fn chat_head(len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer sk-alice\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}
