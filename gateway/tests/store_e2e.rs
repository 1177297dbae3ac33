//! The store as a team runs it: keys, teams, budgets and limits managed through the admin API
//! and `dsgw admin`, two replicas on one real PostgreSQL (started here with `initdb`) seeing
//! each change within a second, a replica killed under load losing no committed ledger row and
//! writing none twice, the spend report equal to the `x-dsgw-cost` headers, a store outage
//! served through; and SQLite as the embedded default, keeping its state across restarts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use dsgw_tests::postgres_server::PostgresServer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ROOT_KEY: &str = "sk-root-admin";

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The harness's configuration with a store at `url` and an admin key `sk-root-admin`.
fn config(fake: &FakeUpstream, url: &str, extra: &str) -> String {
    harness::config(
        &fake.base_url(),
        &format!(
            "[store]\nurl = \"{url}\"\n\n[[keys]]\nid = \"root\"\nteam = \"ops\"\nadmin = true\nkey_sha256 = \"{}\"\n{extra}",
            hex_sha256(ROOT_KEY)
        ),
    )
}

fn start(config: &str) -> Gateway {
    dsgw::providers::install_tls();
    Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        config,
        &harness::env(),
    )
}

/// The `[ledger] path` a harness configuration names.
fn ledger_path(config: &str) -> String {
    let at = config.find("[ledger]\npath = \"").unwrap() + "[ledger]\npath = \"".len();
    config[at..].split('"').next().unwrap().to_owned()
}

async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, gw.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn admin(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call(gw, method, path, ROOT_KEY, body).await
}

/// Per secret: the requests answered 200 and the sum of their `x-dsgw-cost` headers.
static SERVED: std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn served(secrets: &[&str]) -> (u64, u64) {
    let served = SERVED.lock().unwrap();
    secrets.iter().fold((0, 0), |(n, c), s| {
        let (sn, sc) = served.get(*s).copied().unwrap_or_default();
        (n + sn, c + sc)
    })
}

/// One chat request as `key`: its status and its `x-dsgw-cost` in picodollars (each 200 is
/// tallied in [`SERVED`]).
async fn chat(gw: &Gateway, key: &str) -> (u16, u64) {
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    let cost = response
        .headers()
        .get("x-dsgw-cost")
        .and_then(|v| v.to_str().ok())
        .map_or(0, pico);
    let status = response.status().as_u16();
    if status == 200 {
        let mut served = SERVED.lock().unwrap();
        let entry = served.entry(key.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += cost;
    }
    (status, cost)
}

/// `"0.000123"` -> picodollars.
fn pico(text: &str) -> u64 {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<12}");
    whole.parse::<u64>().unwrap() * 1_000_000_000_000 + frac[..12].parse::<u64>().unwrap()
}

/// Polls `key` on `gw` until it answers `want`, for at most `limit`; how long it took.
async fn until_status(gw: &Gateway, key: &str, want: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = chat(gw, key).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{} still answers {status} for the key after {limit:?} (wanted {want})",
            gw.addr
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_replicas_on_postgres_share_keys_revocations_rotations_and_budgets() {
    let pg = PostgresServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let text = config(&fake, &pg.url(), "");
    let a = start(&text);
    let b = start(&config(&fake, &pg.url(), ""));
    let second = Duration::from_secs(1);

    // Created on A: served on A at once, and on B within a second.
    let (status, carol) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "carol", "team": "research", "labels": {"cost_centre": "42"}})),
    )
    .await;
    assert_eq!(status, 201, "{carol}");
    let secret = carol["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-dsgw-"));
    assert_eq!(carol["team"], "research");
    assert_eq!(chat(&a, &secret).await.0, 200);
    let took = until_status(&b, &secret, 200, second).await;
    eprintln!("created key live on the other replica after {took:?}");

    // Listed without secrets, beside the file's keys.
    let (status, list) = admin(&b, reqwest::Method::GET, "/v1/admin/keys", None).await;
    assert_eq!(status, 200);
    let text_list = list.to_string();
    assert!(
        !text_list.contains(&secret) && !text_list.contains(&hex_sha256(&secret)),
        "{list}"
    );
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"carol") && ids.contains(&"alice"), "{ids:?}");
    let alice = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "alice")
        .unwrap();
    assert_eq!(alice["source"], "config");

    // Revoked on B: refused on both within a second.
    let (status, revoked) = admin(&b, reqwest::Method::DELETE, "/v1/admin/keys/carol", None).await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(chat(&b, &secret).await.0, 401);
    let took = until_status(&a, &secret, 401, second).await;
    eprintln!("revocation in force on the other replica after {took:?}");

    // Rotated with a grace: both secrets work, then only the new one, on both replicas.
    let (_, dave) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "dave", "team": "research"})),
    )
    .await;
    let old = dave["key"].as_str().unwrap().to_owned();
    until_status(&b, &old, 200, second).await;
    let (status, rotated) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/keys/dave/rotate",
        Some(json!({"grace_seconds": 2})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    for gw in [&a, &b] {
        until_status(gw, &new, 200, second).await;
        assert_eq!(
            chat(gw, &old).await.0,
            200,
            "the old secret works during the grace"
        );
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for gw in [&a, &b] {
        assert_eq!(
            chat(gw, &old).await.0,
            401,
            "the old secret after the grace"
        );
        assert_eq!(chat(gw, &new).await.0, 200);
    }

    // A budget made through the API binds on both replicas; raised, both serve again.
    let (_, erin) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "erin", "team": "finance"})),
    )
    .await;
    let erin = erin["key"].as_str().unwrap().to_owned();
    let (status, budget) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/budgets",
        Some(json!({"scope": "team", "name": "finance", "period": "month", "amount": "0.000001"})),
    )
    .await;
    assert_eq!(status, 201, "{budget}");
    // The budget is a millionth of a dollar: the first request spends it; then both refuse.
    until_status(&b, &erin, 200, second).await;
    until_status(&a, &erin, 402, Duration::from_secs(3)).await;
    until_status(&b, &erin, 402, Duration::from_secs(3)).await;
    let (status, _) = admin(
        &b,
        reqwest::Method::PATCH,
        "/v1/admin/budgets/team/finance/month",
        Some(json!({"amount": "100"})),
    )
    .await;
    assert_eq!(status, 200);
    for gw in [&a, &b] {
        until_status(gw, &erin, 200, second).await;
    }

    // A key that expires works until then and on neither replica after.
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let (status, gus) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "gus", "team": "research", "expires_at": expires.to_string()})),
    )
    .await;
    assert_eq!(status, 201, "{gus}");
    let gus = gus["key"].as_str().unwrap().to_owned();
    until_status(&b, &gus, 200, second).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for gw in [&a, &b] {
        assert_eq!(chat(gw, &gus).await.0, 401, "an expired key");
    }

    // A limit made through the API binds too: one request a minute for team `limited`.
    let (_, frank) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "frank", "team": "limited"})),
    )
    .await;
    let frank = frank["key"].as_str().unwrap().to_owned();
    let (status, limit) = admin(
        &a,
        reqwest::Method::POST,
        "/v1/admin/limits",
        Some(json!({"scope": "key", "name": "frank", "requests_per_minute": 1})),
    )
    .await;
    assert_eq!(status, 201, "{limit}");
    assert_eq!(chat(&a, &frank).await.0, 200);
    assert_eq!(chat(&a, &frank).await.0, 429);

    // The spend report equals the sum of what every request was told it cost.
    let (requests, costs) = served(&[&secret, &old, &new, &gus]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rows;
    loop {
        rows = pg.psql("SELECT COUNT(*) FROM ledger").unwrap();
        let (_, by_team) = admin(
            &a,
            reqwest::Method::GET,
            "/v1/admin/spend?group_by=team",
            None,
        )
        .await;
        let research = by_team["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["team"] == "research")
            .cloned();
        if let Some(r) = research
            && pico(r["cost"].as_str().unwrap()) == costs
        {
            assert_eq!(r["requests"], requests, "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "research's spend never reached the headers' {costs}: {by_team}, {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, by_key) = admin(
        &b,
        reqwest::Method::GET,
        "/v1/admin/spend?group_by=key&team=research",
        None,
    )
    .await;
    let keys: Vec<&str> = by_key["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["carol", "dave", "gus"], "{by_key}");
    let sql_total = pg
        .psql("SELECT SUM(cost) FROM ledger WHERE team = 'research'")
        .unwrap();
    assert_eq!(sql_total.trim().parse::<u64>().unwrap(), costs);
    let view = pg
        .psql("SELECT COUNT(*) FROM dsgw_spend WHERE cost_usd > 0")
        .unwrap();
    assert!(view.trim().parse::<u64>().unwrap() >= requests, "{view}");

    // Every change is audited, with who made it and never a secret.
    let (_, audit) = admin(&a, reqwest::Method::GET, "/v1/admin/audit?limit=100", None).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in [
        "key.create",
        "key.revoke",
        "key.rotate",
        "budget.create",
        "budget.update",
        "limit.create",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == "root")
    );
    let audit_text = audit.to_string();
    for s in [&secret, &old, &new, &erin] {
        assert!(!audit_text.contains(s.as_str()));
    }
    for gw in [&a, &b] {
        for s in [&secret, &old, &new] {
            assert!(!gw.logs().contains(s.as_str()), "a secret reached the log");
        }
    }
}

#[tokio::test]
async fn the_admin_api_refuses_bad_input_and_non_admins_in_the_envelope() {
    let pg = PostgresServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let gw = start(&config(&fake, &pg.url(), ""));
    use reqwest::Method;
    // (method, path, key, body, status, what the message says)
    type Case<'a> = (Method, &'a str, &'a str, Option<Value>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/v1/admin/keys",
            "sk-alice",
            None,
            403,
            "admin key",
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            "sk-alice",
            Some(json!({"id": "x", "team": "y"})),
            403,
            "admin key",
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            ROOT_KEY,
            Some(json!({"id": "x", "team": "y", "colour": "red"})),
            422,
            "unknown field `colour`",
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            ROOT_KEY,
            Some(json!({"team": "y"})),
            422,
            "missing field `id`",
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            ROOT_KEY,
            Some(json!({"id": "no spaces", "team": "y"})),
            422,
            "`id` must be",
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            ROOT_KEY,
            Some(json!({"id": "alice", "team": "y"})),
            409,
            "configuration file",
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            ROOT_KEY,
            Some(json!({"id": "x", "team": "y", "expires_at": "yesterday"})),
            422,
            "RFC 3339",
        ),
        (
            Method::GET,
            "/v1/admin/keys/nobody",
            ROOT_KEY,
            None,
            404,
            "No key has id",
        ),
        (
            Method::GET,
            "/v1/admin/keys?limit=0",
            ROOT_KEY,
            None,
            422,
            "`limit`",
        ),
        (
            Method::GET,
            "/v1/admin/keys?sort=id",
            ROOT_KEY,
            None,
            422,
            "unknown field `sort`",
        ),
        (
            Method::POST,
            "/v1/admin/budgets",
            ROOT_KEY,
            Some(json!({"scope": "team", "name": "t", "period": "week", "amount": "1"})),
            422,
            "unknown variant `week`",
        ),
        (
            Method::POST,
            "/v1/admin/budgets",
            ROOT_KEY,
            Some(json!({"scope": "team", "name": "t", "period": "day", "amount": "lots"})),
            422,
            "`amount`",
        ),
        (
            Method::POST,
            "/v1/admin/limits",
            ROOT_KEY,
            Some(json!({"scope": "team", "name": "t"})),
            422,
            "at least one",
        ),
        (
            Method::DELETE,
            "/v1/admin/limits/galaxy/t",
            ROOT_KEY,
            None,
            422,
            "`scope`",
        ),
        (
            Method::GET,
            "/v1/admin/spend?group_by=colour",
            ROOT_KEY,
            None,
            422,
            "`group_by`",
        ),
        (
            Method::GET,
            "/v1/admin/spend?from=2026-12-02&to=2026-12-01",
            ROOT_KEY,
            None,
            422,
            "after `from`",
        ),
    ];
    for (method, path, key, body, want, says) in cases {
        let mut request = reqwest::Client::new()
            .request(method.clone(), gw.url(path))
            .bearer_auth(key);
        if let Some(body) = &body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let v: Value = response.json().await.unwrap();
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no envelope: {v}"));
        assert!(
            message.contains(says),
            "{method} {path}: {message:?} should say {says:?}"
        );
    }
    let (status, v) = call(&gw, reqwest::Method::POST, "/v1/admin/keys", ROOT_KEY, None).await;
    assert_eq!(status, 400, "{v}");
    // A duplicate id is a conflict, revoked or not.
    for _ in 0..2 {
        admin(
            &gw,
            reqwest::Method::POST,
            "/v1/admin/keys",
            Some(json!({"id": "gina", "team": "t"})),
        )
        .await;
    }
    let (status, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "gina", "team": "t"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    admin(&gw, reqwest::Method::DELETE, "/v1/admin/keys/gina", None).await;
    let (status, _) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "gina", "team": "t"})),
    )
    .await;
    assert_eq!(status, 409);
    // Nothing half-written: the refused requests left no rows.
    assert_eq!(pg.psql("SELECT COUNT(*) FROM keys").unwrap().trim(), "1");
}

#[tokio::test]
async fn a_replica_killed_under_load_loses_no_committed_row_and_writes_none_twice() {
    let pg = PostgresServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let text = config(&fake, &pg.url(), "");
    let mut a = start(&text);
    let gw = a.url("/v1/chat/completions");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut answered = Vec::new();
        for _ in 0..400 {
            let batch = (0..8).map(|_| {
                client
                    .post(&gw)
                    .bearer_auth("sk-alice")
                    .json(&json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}))
                    .send()
            });
            for r in futures_util::future::join_all(batch).await {
                match r {
                    Ok(r) if r.status() == 200 => answered.push((
                        Instant::now(),
                        r.headers()["x-request-id"].to_str().unwrap().to_owned(),
                    )),
                    Ok(_) => {}
                    Err(_) => return answered,
                }
            }
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    let answered = load.await.unwrap();
    assert!(
        answered.len() > 20,
        "the load never got going: {}",
        answered.len()
    );
    let file = std::fs::read_to_string(ledger_path(&text)).unwrap();
    let committed: Vec<Value> = file
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Started again on the same spool: what the store had not confirmed ships now.
    a.restart_with(&text);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: usize = pg
            .psql("SELECT COUNT(*) FROM ledger")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if rows >= committed.len() {
            assert_eq!(
                rows,
                committed.len(),
                "a row was written that the spool never committed"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {rows} of {} committed rows reached the store",
            committed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let distinct = pg
        .psql("SELECT COUNT(DISTINCT request_id) FROM ledger")
        .unwrap();
    assert_eq!(
        distinct.trim().parse::<usize>().unwrap(),
        committed.len(),
        "a request written twice"
    );
    // Every request answered well before the kill is there (the spool commits every 20 ms).
    let stored = pg.psql("SELECT request_id FROM ledger").unwrap();
    for (at, id) in &answered {
        if killed_at.duration_since(*at) > Duration::from_millis(200) {
            assert!(
                stored.contains(id.as_str()),
                "request {id}, answered before the kill, is missing"
            );
        }
    }
    eprintln!(
        "{} answered, {} committed and stored",
        answered.len(),
        committed.len()
    );
}

#[tokio::test]
async fn a_store_outage_is_served_through_and_said() {
    let mut pg = PostgresServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let gw = start(&config(&fake, &pg.url(), ""));
    let (_, hana) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "hana", "team": "research"})),
    )
    .await;
    let hana = hana["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&gw, &hana).await.0, 200);
    pg.kill();
    // The last view keeps serving, and readiness, the metric and the log say the store is away.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(chat(&gw, &hana).await.0, 200);
        let (_, ready) = call(&gw, reqwest::Method::GET, "/readyz", "x", None).await;
        if ready["store"] == "unreachable" {
            assert_eq!(ready["status"], "ready");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never said the store is away: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("dsgw_store_up 0"), "no store metric");
    assert!(gw.wait_for_log("store unreachable", Duration::from_secs(2)));
    let (status, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/admin/keys",
        Some(json!({"id": "ivan", "team": "research"})),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    // Back: the rows that waited are written, and the replica says so.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = pg
            .psql("SELECT COUNT(*) FROM ledger WHERE key_id = 'hana'")
            .unwrap_or_else(|e| e);
        let (_, ready) = call(&gw, reqwest::Method::GET, "/readyz", "x", None).await;
        if ready["store"] == "ok" && rows.trim().parse::<u64>().ok() == Some(served(&[&hana]).0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the outage: {rows} rows, {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dsgw_admin(gw: &Gateway, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .arg("admin")
        .args(args)
        .env("DSGW_URL", format!("http://{}", gw.addr))
        .env("DSGW_ADMIN_KEY", ROOT_KEY)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn sqlite_keeps_state_across_restarts_and_dsgw_admin_drives_it() {
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let dir = std::env::temp_dir().join(format!("dsgw-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}", dir.join("dsgw.db").display());
    let text = config(&fake, &url, "");
    let mut gw = start(&text);

    let (ok, out) = dsgw_admin(
        &gw,
        &[
            "--json",
            "keys",
            "create",
            "--id",
            "jo",
            "--team",
            "research",
            "--label",
            "owner=jo@example.com",
        ],
    );
    assert!(ok, "{out}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["labels"]["owner"], "jo@example.com");
    assert_eq!(chat(&gw, &secret).await.0, 200);

    let (ok, table) = dsgw_admin(&gw, &["keys", "list"]);
    assert!(ok, "{table}");
    assert!(
        table.starts_with("id ")
            && table.contains("jo ")
            && table.contains("store")
            && table.contains("config"),
        "{table}"
    );
    let (ok, out) = dsgw_admin(&gw, &["budgets", "set", "team", "research", "month", "50"]);
    assert!(ok, "{out}");
    let (ok, out) = dsgw_admin(&gw, &["budgets", "set", "team", "research", "month", "60"]);
    assert!(ok && out.contains("60"), "{out}");
    let (ok, out) = dsgw_admin(
        &gw,
        &["limits", "set", "key", "jo", "--requests-per-minute", "100"],
    );
    assert!(ok, "{out}");
    let (ok, out) = dsgw_admin(&gw, &["teams", "create", "research", "--label", "lead=kim"]);
    assert!(ok, "{out}");

    // Restarted: the key, the budget, the limit and the spend are all still there.
    gw.restart_with(&text);
    assert_eq!(chat(&gw, &secret).await.0, 200);
    let (ok, out) = dsgw_admin(&gw, &["budgets", "list"]);
    assert!(
        ok && out.contains("research") && out.contains("60"),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, csv) = dsgw_admin(&gw, &["spend", "--group-by", "key", "--csv"]);
        assert!(ok, "{csv}");
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().starts_with("key,requests,"));
        let jo: Vec<&str> = lines
            .find(|l| l.starts_with("jo,"))
            .unwrap_or("")
            .split(',')
            .collect();
        if jo.len() > 6 && jo[1] == "2" {
            assert_eq!(pico(jo[6]), served(&[&secret]).1, "{csv}");
            break;
        }
        assert!(Instant::now() < deadline, "{csv}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (ok, out) = dsgw_admin(&gw, &["keys", "update", "jo", "--owner", "jo@example.org"]);
    assert!(ok && out.contains("jo@example.org"), "{out}");
    let (ok, out) = dsgw_admin(&gw, &["keys", "rotate", "jo", "--grace-seconds", "0"]);
    assert!(ok && out.starts_with("key: sk-dsgw-"), "{out}");
    assert_eq!(
        chat(&gw, &secret).await.0,
        401,
        "no grace: the old secret ends now"
    );
    let rotated = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("key: ")
        .to_owned();
    assert_eq!(chat(&gw, &rotated).await.0, 200);
    let secret = rotated;
    let (ok, out) = dsgw_admin(&gw, &["keys", "revoke", "jo"]);
    assert!(ok, "{out}");
    assert_eq!(chat(&gw, &secret).await.0, 401);
    let (ok, out) = dsgw_admin(&gw, &["keys", "get", "nobody"]);
    assert!(
        !ok && out.contains("404") && out.contains("No key has id"),
        "{out}"
    );
    let (ok, out) = dsgw_admin(&gw, &["audit"]);
    assert!(
        ok && out.contains("key.revoke") && out.contains("root"),
        "{out}"
    );

    // Importing a file's keys keeps their secrets.
    let import = dir.join("import.toml");
    std::fs::write(&import, format!(
        "[[providers]]\nname = \"deepseek\"\nkind = \"deepseek\"\nbase_url = \"{}\"\n\n[[models]]\nname = \"deepseek-chat\"\ndeployments = [{{ provider = \"deepseek\", model = \"deepseek-chat\" }}]\n\n[[keys]]\nid = \"kai\"\nteam = \"research\"\nkey_sha256 = \"{}\"\n\n[[budgets]]\nscope = \"key\"\nname = \"kai\"\nperiod = \"day\"\namount = \"5\"\n",
        fake.base_url(),
        hex_sha256("sk-kai-from-the-file")
    )).unwrap();
    let (ok, out) = dsgw_admin(&gw, &["import", "--config", import.to_str().unwrap()]);
    assert!(
        ok && out.contains("imported key kai") && out.contains("imported budget"),
        "{out}"
    );
    assert_eq!(chat(&gw, "sk-kai-from-the-file").await.0, 200);
    let (ok, out) = dsgw_admin(&gw, &["import", "--config", import.to_str().unwrap()]);
    assert!(ok && out.contains("skipped  key kai"), "{out}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_embedded_default_keeps_its_store_and_a_first_admin_key_closes_it() {
    let state = std::env::temp_dir().join(format!("dsgw-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let serve = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dsgw"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("XDG_STATE_HOME", &state)
            .env_remove("DEEPSEEK_API_KEY")
            .env_remove("DSGW_CONFIG");
        harness::spawn_announcing(command, "dsgw: listening on http://")
    };
    let models = |addr: std::net::SocketAddr, key: &'static str| async move {
        reqwest::Client::new()
            .get(format!("http://{addr}/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let (mut child, addr, _) = serve();
    assert_eq!(
        models(addr, "anything").await,
        200,
        "no keys anywhere: open on loopback"
    );
    let db = state.join("dsgw/dsgw.db");
    assert!(
        db.exists(),
        "the embedded store is a file in the state directory"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args([
            "keys", "new", "--id", "lead", "--team", "ops", "--admin", "--store",
        ])
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let key: &'static str = Box::leak(
        printed
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("key: ")
            .to_owned()
            .into_boxed_str(),
    );
    // The running gateway hears of its first key: from now on keys are needed.
    let deadline = Instant::now() + Duration::from_secs(2);
    while models(addr, "anything").await != 401 {
        assert!(
            Instant::now() < deadline,
            "still open after a key was stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(models(addr, key).await, 200);
    let _ = child.kill();
    let _ = child.wait();
    // And after a restart with no config at all, it remembers.
    let (mut child, addr, _) = serve();
    assert_eq!(models(addr, "anything").await, 401);
    assert_eq!(models(addr, key).await, 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let dir = std::env::temp_dir().join(format!("dsgw-newer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = dsgw::support::config::StoreConfig::sqlite_in(&dir);
    let store = dsgw::store::Store::open(&config).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', 1, x'00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    let err = dsgw::store::Store::open(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("migration 999") && err.contains("newer dsgw"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn check_refuses_what_serve_refuses_of_a_store_and_connect_reaches_it() {
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let dir = std::env::temp_dir().join(format!("dsgw-check-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |url: &str, connect: bool| {
        let path = dir.join("check.toml");
        std::fs::write(&path, config(&fake, url, "")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dsgw"));
        command
            .args(["check", "--config"])
            .arg(&path)
            .envs(harness::env());
        if connect {
            command.arg("--connect");
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check("mysql://dsgw:hunter2@db/dsgw", false);
    assert!(
        !ok && err.contains("expected postgres://") && !err.contains("hunter2"),
        "{err}"
    );
    let served = Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["serve", "--config"])
        .arg(dir.join("check.toml"))
        .envs(harness::env())
        .output()
        .unwrap();
    assert!(
        !served.status.success()
            && String::from_utf8_lossy(&served.stderr).contains("expected postgres://")
    );
    let sqlite = format!("sqlite://{}", dir.join("ok.db").display());
    assert!(check(&sqlite, false).0);
    let (ok, err) = check("postgres://dsgw@127.0.0.1:1/dsgw", true);
    assert!(
        !ok && err.contains("[store]: the connection test failed"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ledger_rows_past_retention_are_deleted() {
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let dir = std::env::temp_dir().join(format!("dsgw-retention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}", dir.join("dsgw.db").display());
    let text = config(&fake, &url, "").replace(
        &format!("url = \"{url}\"\n"),
        &format!("url = \"{url}\"\nretention_days = 30\n"),
    );
    // A spool holding a row from 2020 and one from now: both ship, then the old one goes.
    let line = |uid: &str, ts: u64| {
        json!({"uid": uid, "request_id": uid, "ts": ts, "key_id": "alice", "team": "research",
            "model": "deepseek-chat", "deployment": "deepseek/deepseek-chat", "cache_hit": 0,
            "cache_miss": 10, "output": 5, "reasoning": 0, "cost": 4_900_000, "currency": "USD",
            "estimated": false})
        .to_string()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        ledger_path(&text),
        format!("{}\n{}\n", line("old", 1_590_000_000), line("new", now)),
    )
    .unwrap();
    let gw = start(&text);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, by_day) = admin(
            &gw,
            reqwest::Method::GET,
            "/v1/admin/spend?group_by=day&from=2020-01-01",
            None,
        )
        .await;
        let days: Vec<&str> = by_day["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["day"].as_str().unwrap())
            .collect();
        if days.len() == 1 {
            assert!(!days[0].starts_with("2020"), "{days:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 2020 row was never deleted: {days:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gw.wait_for_log("ledger rows past retention deleted", Duration::from_secs(2)));
    let _ = std::fs::remove_dir_all(&dir);
}
