//! How dsgw reaches a provider: over TLS checked against the platform's roots (here a test CA
//! named by `SSL_CERT_FILE`, as an operator adds a corporate one), and through the proxy the
//! environment names, a `CONNECT` tunnel for HTTPS and absolute-form forwarding for HTTP.

mod common;

use std::path::Path;

use common::{JsonBody, user};
use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway, UPSTREAM_KEY};
use dsgw_tests::intermediaries::{HttpProxy, TlsFront};
use dsgw_tests::tls_ca::TestCa;
use serde_json::{Value, json};

fn gateway(base: &str, extra_env: &[(&str, &str)]) -> Gateway {
    gateway_with(base, extra_env, |config| config)
}

fn gateway_with(
    base: &str,
    extra_env: &[(&str, &str)],
    edit: impl FnOnce(String) -> String,
) -> Gateway {
    let mut env = harness::env();
    env.extend_from_slice(extra_env);
    Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &edit(harness::config(base, "")),
        &env,
    )
}

async fn chat(gw: &Gateway, stream: bool) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .json_body(&json!({"model": "deepseek-chat", "messages": user("hello"), "stream": stream}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A whole answer with content, through `gw`.
async fn answered(gw: &Gateway) {
    let (status, body) = chat(gw, false).await;
    assert_eq!(status, 200, "{body}");
    assert!(!content(&body).is_empty(), "{body}");
}

/// A stream to its `[DONE]`, through `gw`.
async fn streamed(gw: &Gateway) {
    let (status, body) = chat(gw, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
}

fn content(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"))
        .to_owned()
}

#[tokio::test]
async fn a_provider_over_https_is_trusted_only_through_the_platform_roots() {
    dsgw::providers::install_tls();
    let fake = FakeUpstream::start(Some(UPSTREAM_KEY)).await;
    let ca = TestCa::new("transport-https");
    let front = TlsFront::start(&ca, fake.addr).await;
    let base = format!("https://localhost:{}", front.addr.port());

    let trusting = gateway(&base, &[("SSL_CERT_FILE", ca.ca_cert.to_str().unwrap())]);
    answered(&trusting).await;
    streamed(&trusting).await;

    // The same provider without the CA among the roots: its certificate is refused, and the
    // client hears a gateway error, not the provider's answer.
    let before = fake.requests();
    let doubting = gateway(&base, &[]);
    let (status, body) = chat(&doubting, false).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(fake.requests(), before, "nothing reached the provider");
    assert!(
        doubting.logs().contains("upstream transport error"),
        "{}",
        doubting.logs()
    );
}

#[tokio::test]
async fn a_provider_that_negotiates_http2_is_spoken_to_in_http2() {
    dsgw::providers::install_tls();
    let fake = FakeUpstream::start(Some(UPSTREAM_KEY)).await;
    let ca = TestCa::new("transport-h2");
    let front = TlsFront::offering(&ca, fake.addr, &[b"h2", b"http/1.1"]).await;
    // One lane: each lane keeps connections of its own, and each call here comes on a new
    // client connection, which may meet the last one still open and go to another lane.
    let gw = gateway_with(
        &format!("https://localhost:{}", front.addr.port()),
        &[("SSL_CERT_FILE", ca.ca_cert.to_str().unwrap())],
        |config| config.replacen("[server]\n", "[server]\nworkers = 1\n", 1),
    );
    answered(&gw).await;
    for _ in 0..3 {
        streamed(&gw).await;
    }
    assert_eq!(fake.http2_requests(), 4, "every call went over HTTP/2");
    // Streams share the lane's one multiplexed connection.
    assert_eq!(fake.connections(), 1);
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel_and_http_is_forwarded_by_the_proxy() {
    dsgw::providers::install_tls();
    let fake = FakeUpstream::start(Some(UPSTREAM_KEY)).await;
    let ca = TestCa::new("transport-proxy");
    let front = TlsFront::start(&ca, fake.addr).await;
    let proxy = HttpProxy::start().await;
    let proxy_url = format!("http://user:pass@127.0.0.1:{}", proxy.addr.port());
    let credentials = "proxy-authorization: Basic dXNlcjpwYXNz";

    let tls_port = front.addr.port();
    let tunnelled = gateway(
        &format!("https://localhost:{tls_port}"),
        &[
            ("HTTPS_PROXY", &proxy_url),
            ("SSL_CERT_FILE", ca.ca_cert.to_str().unwrap()),
        ],
    );
    answered(&tunnelled).await;
    let heads = proxy.heads();
    let connect = heads
        .iter()
        .find(|h| h.starts_with(&format!("CONNECT localhost:{tls_port} HTTP/1.1")))
        .unwrap_or_else(|| panic!("no CONNECT among {heads:?}"));
    assert!(
        connect
            .to_ascii_lowercase()
            .contains(&credentials.to_ascii_lowercase()),
        "{connect}"
    );

    let plain = gateway(&fake.base_url(), &[("HTTP_PROXY", &proxy_url)]);
    answered(&plain).await;
    let heads = proxy.heads();
    let forwarded = heads
        .iter()
        .find(|h| {
            h.starts_with(&format!(
                "POST {}/chat/completions HTTP/1.1",
                fake.base_url()
            ))
        })
        .unwrap_or_else(|| panic!("no absolute-form request among {heads:?}"));
    assert!(
        forwarded
            .to_ascii_lowercase()
            .contains(&credentials.to_ascii_lowercase()),
        "{forwarded}"
    );
    // The proxy's credentials are the proxy's: never in what dsgw logs.
    for gw in [&tunnelled, &plain] {
        assert!(!gw.logs().contains("dXNlcjpwYXNz"));
        assert!(!gw.logs().contains("user:pass"));
    }
}
