//! Every query of every shipped Grafana dashboard, evaluated by a real Prometheus that scraped a
//! real gateway after real traffic: none may fail or come back empty.

mod common;

use std::time::{Duration, Instant};

use common::{setup_with, user};
use dsgw_tests::prometheus_server::PrometheusServer;
use serde_json::{Value, json};

fn dashboards() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    assert_eq!(out.len(), 4, "cost, cache, traffic and limits dashboards");
    out
}

/// Percent-encodes a query parameter value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[test]
fn dashboards_have_stable_uids_and_a_datasource_input() {
    let mut uids = std::collections::HashSet::new();
    for (name, d) in dashboards() {
        assert!(d["uid"].as_str().unwrap().starts_with("dsgw-"), "{name}");
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{name}: duplicate uid"
        );
        assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS", "{name}");
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(vars.contains(&"DS_PROMETHEUS"), "{name}");
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{name}: {}",
                p["title"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_a_real_prometheus() {
    let s = setup_with(|c| {
        c + "\n[[limits]]\nscope = \"key\"\nname = \"bob\"\nrequests_per_minute = 2\n\n[[budgets]]\nscope = \"team\"\nname = \"research\"\nperiod = \"month\"\namount = \"10\"\n"
    })
    .await;
    let prometheus = PrometheusServer::start(&[s.gw.addr.to_string()]);

    // Traffic of every kind the dashboards show: cache hits, streams, an upstream failure, a
    // rate-limit rejection, a provider billing otherwise than dsgw's price table.
    let long = (0..150)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    for _ in 0..3 {
        let r = s
            .request(
                "sk-alice",
                &json!({"model": "deepseek-chat", "messages": user(&long)}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    s.stream(&json!({"model": "deepseek-reasoner", "messages": user("hi"), "stream": true}))
        .await;
    let overbilled = s
        .request(
            "sk-alice",
            &json!({"model": "openrouter-reasoner", "messages": user("__overbill__")}),
        )
        .await;
    assert_eq!(overbilled.status(), 200);
    let failed = s
        .request(
            "sk-alice",
            &json!({"model": "deepseek-chat", "messages": user("__status_503__")}),
        )
        .await;
    assert_eq!(failed.status(), 502);
    let mut limited = false;
    for _ in 0..4 {
        let r = s
            .request(
                "sk-bob",
                &json!({"model": "deepseek-chat", "messages": user("hi")}),
            )
            .await;
        limited |= r.status() == 429;
    }
    assert!(limited);

    // Wait until Prometheus holds at least two scrapes after the traffic.
    let client = reqwest::Client::new();
    let query = |expr: String| {
        let req = client
            .get(prometheus.url(&format!("/api/v1/query?query={}", encode(&expr))))
            .send();
        async move { req.await.unwrap().json::<Value>().await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = query("count_over_time(dsgw_rejections_total[1m])".to_owned()).await;
        if v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
            >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the gateway: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut checked = 0;
    for (name, d) in dashboards() {
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "10m")
                    .replace("$team", ".*");
                let v = query(expr.clone()).await;
                assert_eq!(
                    v["status"], "success",
                    "{name} / {}: {expr}: {v}",
                    panel["title"]
                );
                let result = v["data"]["result"].as_array().unwrap();
                assert!(
                    !result.is_empty(),
                    "{name} / {}: empty result for {expr}",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} queries");
}
