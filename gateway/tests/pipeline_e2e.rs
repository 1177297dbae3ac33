//! The pipeline's promises, each once broken by the old layout: a local engine that dies is a
//! provider fault the router falls back from; a stream it abandons is a failed stream with an
//! estimated usage, never a completed one; a passed-through 4xx is the client's fault; every
//! request has an id, echoed and logged, and one completion record, refusals included; and a
//! provider takes only its own kind's settings.

mod common;

use std::time::Duration;

use common::{JsonBody, setup, setup_with, sse_data, user};
use dsgw::app::AppState;
use dsgw::providers::Transport;
use dsgw::support::config::Config;
use dsgw_tests::fake::FakeUpstream;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A gateway in this process (so the test can reach its local engine), serving `config`.
async fn in_process(config: &str) -> (AppState, String) {
    dsgw::providers::install_tls();
    let config = Config::parse(config).unwrap();
    let state = AppState::build(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    tokio::spawn(dsgw::app::serve::serve(
        listener,
        served,
        Duration::from_secs(1),
        dsgw::app::edge::EdgeLimits::from_config(&config.server),
    ));
    (state, url)
}

/// Stops the engine of the local provider named `name`.
fn stop_engine(state: &AppState, model: &str, name: &str) {
    let model = state.pipeline.catalog.get(model).unwrap();
    let d = model
        .deployments
        .iter()
        .find(|d| d.provider.name == name)
        .unwrap();
    let Transport::Local(local) = &d.provider.transport else {
        panic!("{name} is not local")
    };
    local.engine().stop();
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const LOCAL_THEN_REMOTE: &str = r#"
[server]
listen = "127.0.0.1:0"
[ledger]
path = ""
[[providers]]
name = "local"
kind = "local"
device = "cpu"
[[providers]]
name = "remote"
kind = "deepseek"
base_url = "BASE"
[[models]]
name = "deepseek-chat"
deployments = [{ provider = "local", model = "builtin-tiny" }, { provider = "remote", model = "deepseek-chat" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_local_engine_falls_back_to_the_next_deployment() {
    let fake = FakeUpstream::start(None).await;
    let (state, url) = in_process(&LOCAL_THEN_REMOTE.replace("BASE", &fake.base_url())).await;
    stop_engine(&state, "deepseek-chat", "local");
    let http = reqwest::Client::new();
    for stream in [false, true] {
        let r = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth("any")
            .json_body(&json!({"model": "deepseek-chat", "messages": user("hi"), "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "stream = {stream}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("fake-"),
            "the remote deployment answered: {text}"
        );
    }
    assert_eq!(fake.requests(), 2);
    let metrics = state.pipeline.metrics.render();
    assert_eq!(
        metric(
            &metrics,
            "dsgw_upstream_calls_total",
            &["provider=\"local\"", "outcome=\"provider_fault\""]
        ),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_dies_mid_stream_fails_the_stream_and_estimates_usage() {
    let config = r#"
[server]
listen = "127.0.0.1:0"
[ledger]
path = ""
[[providers]]
name = "local"
kind = "local"
device = "cpu"
[[models]]
name = "deepseek-chat"
deployments = [{ provider = "local", model = "builtin-tiny" }]
"#;
    let (state, url) = in_process(config).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth("any")
        .json_body(&json!({
            "model": "deepseek-chat", "messages": user("hi"), "stream": true,
            "max_tokens": 3000, "temperature": 0,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"content\":\"") || text.matches("data: ").count() < 3 {
        text.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    stop_engine(&state, "deepseek-chat", "local");
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped mid-generation"),
        "{last}"
    );
    assert!(!text.contains("[DONE]"), "a cut stream never says [DONE]");
    assert!(!text.contains("insufficient_system_resource"));
    let metrics = state.pipeline.metrics.render();
    assert_eq!(
        metric(
            &metrics,
            "dsgw_requests_total",
            &["outcome=\"stream_failed\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "dsgw_requests_total", &["outcome=\"completed\""]),
        0.0
    );
    // The gateway counted what was streamed: an estimate, not zero.
    assert!(metric(&metrics, "dsgw_tokens_total", &["kind=\"output\""]) >= 2.0);
    assert!(metric(&metrics, "dsgw_tokens_total", &["kind=\"cache_miss\""]) >= 1.0);
}

#[tokio::test]
async fn a_passed_through_4xx_is_the_clients_fault_and_is_recorded_with_its_provider() {
    let broken = FakeUpstream::start(None).await;
    let url = broken.base_url();
    let s = setup_with(move |c| {
        format!(
            r#"{c}
[[providers]]
name = "strict"
kind = "deepseek"
base_url = "{url}/fault/400"

[[models]]
name = "via-strict"
deployments = [{{ provider = "strict", model = "deepseek-chat" }}]
"#
        )
    })
    .await;
    let (status, _) = s
        .post(
            "sk-alice",
            &json!({"model": "via-strict", "messages": user("hi")}),
        )
        .await;
    assert_eq!(status, 400);
    let metrics = s.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "dsgw_errors_total",
            &["model=\"via-strict\"", "fault=\"client\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "dsgw_errors_total",
            &["model=\"via-strict\"", "fault=\"provider\""]
        ),
        0.0
    );
    assert!(
        s.gw.wait_for_log("provider=\"strict\"", Duration::from_secs(2))
            || s.gw.wait_for_log("provider=strict", Duration::from_secs(2)),
        "{}",
        s.gw.logs()
    );
    let line =
        s.gw.logs()
            .lines()
            .find(|l| l.contains("dsgw::completion") && l.contains("via-strict"))
            .unwrap()
            .to_owned();
    assert!(
        line.contains("attempts=1") && line.contains("status=400"),
        "{line}"
    );
}

#[tokio::test]
async fn every_request_has_an_id_echoed_and_in_its_record() {
    let s = setup().await;
    let r = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .header("x-request-id", "client-id-42")
        .json_body(&json!({"model": "deepseek-chat", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "client-id-42");
    assert_eq!(r.headers()["x-dsgw-request-id"], "client-id-42");
    assert!(
        s.gw.wait_for_log("request_id=client-id-42", Duration::from_secs(2)),
        "{}",
        s.gw.logs()
    );
    // Without one (or with one that could garble a log line), the gateway makes one.
    for header in [None, Some("bad id with spaces")] {
        let mut request = s
            .http
            .post(s.gw.url("/v1/chat/completions"))
            .bearer_auth("sk-alice")
            .json_body(&json!({"model": "deepseek-chat", "messages": user("hi")}));
        if let Some(h) = header {
            request = request.header("x-request-id", h);
        }
        let r = request.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(r.headers()["x-dsgw-request-id"], id.as_str());
    }
    // Refused before any key is checked, still with an id.
    let r = s.http.get(s.gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn requests_the_gateway_refuses_itself_leave_a_record() {
    let s = setup().await;
    for (body, status) in [
        (
            json!({"model": "deepseek-chat", "messages": user("hi"), "temperature": 9}),
            422,
        ),
        (
            json!({"model": "deepseek-chat", "messages": "not a list"}),
            422,
        ),
        (json!({"model": "nope", "messages": user("hi")}), 400),
        (
            json!({"model": "deepseek-v3.2-speciale", "messages": user("hi"),
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
            400,
        ),
    ] {
        let (got, _) = s.post("sk-alice", &body).await;
        assert_eq!(got, status, "{body}");
    }
    let r = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth("sk-alice")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let metrics = s.metrics().await;
    assert_eq!(
        metric(&metrics, "dsgw_requests_total", &["status=\"422\""]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "dsgw_requests_total", &["status=\"400\""]),
        3.0,
        "{metrics}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let records =
            s.gw.logs()
                .lines()
                .filter(|l| l.contains("dsgw::completion"))
                .count();
        if records == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{records} records: {}",
            s.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_body_limit_holds_on_every_route_in_its_surfaces_shape() {
    let s = setup().await;
    let big = "x".repeat(70_000);
    for (path, anthropic) in [
        ("/v1/chat/completions", false),
        ("/beta/completions", false),
        ("/anthropic/v1/messages", true),
        ("/anthropic/v1/messages/count_tokens", true),
    ] {
        let r = s
            .http
            .post(s.gw.url(path))
            .bearer_auth("sk-alice")
            .header("content-type", "application/json")
            .body(format!(r#"{{"model":"deepseek-chat","prompt":"{big}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let v: Value = r.json().await.unwrap();
        if anthropic {
            assert_eq!(v["type"], "error", "{path}: {v}");
            assert_eq!(v["error"]["type"], "invalid_request_error");
        } else {
            assert!(
                v["error"]["message"].as_str().unwrap().contains("limit"),
                "{v}"
            );
        }
    }
}

fn dsgw_check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "dsgw-check-{}-{}",
        std::process::id(),
        config.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dsgw.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_provider_takes_only_its_own_kinds_settings_and_check_refuses_what_serve_would() {
    let base = r#"
[[providers]]
name = "deepseek"
kind = "deepseek"
base_url = "https://api.deepseek.com"
api_key_env = "DSGW_TEST_CHECK_KEY"

[[models]]
name = "deepseek-chat"
deployments = [{ provider = "deepseek", model = "deepseek-chat" }]
"#;
    let env = [("DSGW_TEST_CHECK_KEY", "sk-x")];
    let (ok, stderr) = dsgw_check(base, &env);
    assert!(ok, "{stderr}");
    // A local engine's setting on a remote provider.
    let (ok, stderr) = dsgw_check(
        &base.replace("api_key_env", "device = \"cuda:0\"\napi_key_env"),
        &env,
    );
    assert!(!ok && stderr.contains("unknown field `device`"), "{stderr}");
    // What serving would refuse: the provider's key is not in the environment.
    let (ok, stderr) = dsgw_check(base, &[]);
    assert!(!ok && stderr.contains("DSGW_TEST_CHECK_KEY"), "{stderr}");
    // A bad weight format on the local engine, and a key-less gateway on a public address.
    let local = "[[providers]]\nname = \"l\"\nkind = \"local\"\nweights = \"fp8\"\n[[models]]\nname = \"m\"\ndeployments = [{ provider = \"l\", model = \"x\" }]\n";
    let (ok, stderr) = dsgw_check(local, &[]);
    assert!(!ok && stderr.contains("`weights` must be"), "{stderr}");
    let open = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{base}");
    let (ok, stderr) = dsgw_check(&open, &env);
    assert!(!ok && stderr.contains("loopback"), "{stderr}");
}
