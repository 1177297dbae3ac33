//! Scaling out on the Redis teams run: four replicas on a real three-master Redis Cluster, a
//! TLS Redis with mutual TLS from a CA made here, a master lost and back, and the Redis round
//! trips one request costs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use dsgw_tests::redis_server::{RedisCluster, RedisServer, command_calls};
use dsgw_tests::tls_ca::TestCa;
use serde_json::json;
use sha2::{Digest, Sha256};

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gateway(fake: &FakeUpstream, extra: &str) -> Gateway {
    dsgw::providers::install_tls();
    Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &harness::config(&fake.base_url(), extra),
        &harness::env(),
    )
}

async fn chat(gw: &Gateway, key: &str) -> u16 {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends `n` requests at once as `key`, spread round-robin over `gateways`; counts by status.
async fn burst(
    gateways: &[Gateway],
    key: &str,
    n: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let requests = (0..n).map(|i| chat(&gateways[i % gateways.len()], key));
    let mut counts = std::collections::BTreeMap::new();
    for status in futures_util::future::join_all(requests).await {
        *counts.entry(status).or_default() += 1;
    }
    counts
}

/// A team limit of `burst` requests at once (refilling one a minute, so none comes back during
/// the test), failing closed: a Redis that cannot answer is a 503, never a silent local grant.
fn team_limit(team: &str, burst: u32) -> String {
    format!(
        "\n[[limits]]\nscope = \"team\"\nname = \"{team}\"\nrequests_per_minute = 1\nburst = {burst}\non_redis_failure = \"closed\"\n"
    )
}

fn nodes(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_on_a_cluster_admit_exactly_a_teams_burst() {
    let cluster = RedisCluster::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let extra = format!(
        "\n[redis]\nnodes = {}\ntimeout_ms = 2000\nreplicas = 4\n{}{}",
        nodes(&cluster.urls()),
        team_limit("research", 20),
        team_limit("ops", 7),
    );
    let gateways: Vec<Gateway> = (0..4).map(|_| gateway(&fake, &extra)).collect();
    let (research, ops) = tokio::join!(
        burst(&gateways, "sk-alice", 60),
        burst(&gateways, "sk-bob", 21)
    );
    assert_eq!(research.get(&200), Some(&20), "{research:?}");
    assert_eq!(research.get(&429), Some(&40), "{research:?}");
    assert_eq!(ops.get(&200), Some(&7), "{ops:?}");
    assert_eq!(ops.get(&429), Some(&14), "{ops:?}");
    // Each team's bucket lives on the master its hash tag names.
    for key in ["dsgw:{research}:team:rpm", "dsgw:{ops}:team:rpm"] {
        let owner = cluster.owner_of(key);
        assert_eq!(
            cluster.nodes[owner].cli(&["exists", key]).trim(),
            "1",
            "{key} on its owner"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_tls_cluster_admit_exactly_a_teams_burst() {
    let ca = TestCa::new("cluster");
    let cluster = RedisCluster::start_tls(&ca);
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let extra = format!(
        "\n[redis]\nnodes = {}\nca_file = {:?}\ntimeout_ms = 2000\nreplicas = 2\n{}",
        nodes(&cluster.urls()),
        ca.ca_cert.display().to_string(),
        team_limit("research", 9),
    );
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    let gateways = [gateway(&fake, &extra), gateway(&fake, &extra)];
    let counts = burst(&gateways, "sk-alice", 20).await;
    assert_eq!(counts.get(&200), Some(&9), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&11), "{counts:?}");
    let key = "dsgw:{research}:team:rpm";
    let owner = cluster.owner_of(key);
    assert_eq!(cluster.nodes[owner].cli(&["exists", key]).trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_master_fails_its_teams_closed_while_the_others_stay_exact() {
    let mut cluster = RedisCluster::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    // Two teams whose slots live on different masters.
    let tag = |t: &str| format!("dsgw:{{{t}}}:team:rpm");
    let down_team = "research";
    let lost = cluster.owner_of(&tag(down_team));
    let up_team = (0..)
        .map(|i| format!("team{i}"))
        .find(|t| cluster.owner_of(&tag(t)) != lost)
        .unwrap();
    let extra = format!(
        "\n[[keys]]\nid = \"carol\"\nteam = \"{up_team}\"\nkey_sha256 = \"{}\"\n\n[redis]\nnodes = {}\ntimeout_ms = 300\nreplicas = 2\n{}{}",
        hex_sha256("sk-carol"),
        nodes(&cluster.urls()),
        team_limit(down_team, 5),
        team_limit(&up_team, 5),
    );
    let gateways = [gateway(&fake, &extra), gateway(&fake, &extra)];
    assert_eq!(burst(&gateways, "sk-alice", 2).await.get(&200), Some(&2));

    cluster.nodes[lost].kill();
    let up = burst(&gateways, "sk-carol", 10).await;
    assert_eq!(
        up.get(&200),
        Some(&5),
        "{up:?}: the other slots keep exact limits"
    );
    assert_eq!(up.get(&429), Some(&5), "{up:?}");
    let down = burst(&gateways, down_team_key(), 4).await;
    assert_eq!(down.get(&503), Some(&4), "{down:?}: its team fails closed");

    // Back (empty, owning its slots again): the team is served again, and exactly.
    cluster.nodes[lost].restart();
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while chat(&gateways[0], down_team_key()).await != 200 {
        assert!(Instant::now() < deadline, "the team never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = burst(&gateways, down_team_key(), 8).await;
    assert_eq!(
        after.get(&200),
        Some(&4),
        "{after:?}: one of five was the probe above"
    );
    assert_eq!(after.get(&429), Some(&4), "{after:?}");
}

fn down_team_key() -> &'static str {
    "sk-alice"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_limits_over_mutual_tls_and_bad_tls_settings_are_refused() {
    let ca = TestCa::new("mtls");
    let redis = RedisServer::start_tls(&ca, true);
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let tls = |ca_file: &Path, client: bool| {
        let mut s = format!(
            "\n[redis]\nurl = \"{}\"\ntimeout_ms = 2000\nreplicas = 2\nca_file = {:?}\n",
            redis.url(),
            ca_file.display().to_string()
        );
        if client {
            s += &format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                ca.client_cert.display().to_string(),
                ca.client_key.display().to_string()
            );
        }
        s + &team_limit("research", 10)
    };
    let good = tls(&ca.ca_cert, true);
    let check = |extra: &str, connect: bool| {
        let path = std::env::temp_dir().join(format!("dsgw-tls-check-{}.toml", std::process::id()));
        std::fs::write(&path, harness::config(&fake.base_url(), extra)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsgw"));
        cmd.args(["check", "--config"])
            .arg(&path)
            .envs(harness::env());
        if connect {
            cmd.arg("--connect");
        }
        let out = cmd.output().unwrap();
        let _ = std::fs::remove_file(&path);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(&good, true);
    assert!(ok, "{err}");

    let gateways = [gateway(&fake, &good), gateway(&fake, &good)];
    let counts = burst(&gateways, "sk-alice", 25).await;
    assert_eq!(counts.get(&200), Some(&10), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&15), "{counts:?}");

    // Without the client certificate the server refuses the handshake; with another CA the
    // server's certificate is not trusted. Both are valid files, so only a connection tells.
    let other = TestCa::new("other");
    for (extra, why) in [
        (tls(&ca.ca_cert, false), "no client certificate"),
        (tls(&other.ca_cert, true), "an untrusted server"),
    ] {
        assert!(check(&extra, false).0, "{why}: the file itself is valid");
        let (ok, err) = check(&extra, true);
        assert!(!ok, "{why}: --connect must fail");
        assert!(err.contains("connection test failed"), "{why}: {err}");
    }
    // Server names are checked: a certificate for another name is refused, even from the CA.
    let misnamed = TestCa::with_names("misnamed", "DNS:elsewhere.example");
    let wrong_name = RedisServer::start_tls(&misnamed, false);
    let extra = format!(
        "\n[redis]\nurl = \"{}\"\nca_file = {:?}\n",
        wrong_name.url(),
        misnamed.ca_cert.display().to_string()
    );
    let (ok, err) = check(&extra, true);
    assert!(!ok && err.contains("not valid for name"), "{err}");

    // A CA file that holds no certificate is refused by `check` and by `serve` alike.
    let junk = ca.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let extra = tls(&junk, true);
    let (ok, err) = check(&extra, false);
    assert!(!ok && err.contains("no PEM certificate"), "{err}");
    let path = std::env::temp_dir().join(format!("dsgw-tls-serve-{}.toml", std::process::id()));
    std::fs::write(&path, harness::config(&fake.base_url(), &extra)).unwrap();
    let served = Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["serve", "--config"])
        .arg(&path)
        .envs(harness::env())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!served.status.success());
    assert!(String::from_utf8_lossy(&served.stderr).contains("no PEM certificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_every_limit_and_a_budget_costs_two_redis_round_trips() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let extra = format!(
        "\n[redis]\nurl = \"{}\"\ntimeout_ms = 2000\n\n[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 100000\ntokens_per_minute = 100000000\nconcurrent = 50\n\n[[limits]]\nscope = \"key\"\nname = \"alice\"\nrequests_per_minute = 100000\nconcurrent = 10\n\n[[budgets]]\nscope = \"team\"\nname = \"research\"\nperiod = \"month\"\namount = \"100\"\n\n[[budgets]]\nscope = \"key\"\nname = \"alice\"\nperiod = \"day\"\namount = \"10\"\n",
        redis.url()
    );
    let gw = gateway(&fake, &extra);
    // The first request loads the script and indexes the team.
    assert_eq!(chat(&gw, "sk-alice").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.cli(&["config", "resetstat"]);
    let n = 10;
    for _ in 0..n {
        assert_eq!(chat(&gw, "sk-alice").await, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = command_calls(&redis.cli(&["info", "commandstats"]));
    // One EVALSHA before the provider (limits and budgets in one script), one MULTI ... EXEC
    // after the response (the reservation's return and the spend, in the team's slot).
    assert_eq!(calls.get("evalsha"), Some(&n), "{calls:?}");
    assert_eq!(calls.get("multi"), Some(&n), "{calls:?}");
    assert_eq!(calls.get("exec"), Some(&n), "{calls:?}");
    // Nothing else is sent on its own: the budgets' MGET is gone into the script, no script
    // is loaded again, and the rest are the scripts' own calls or the transaction's.
    let in_scripts = [
        "time",
        "get",
        "set",
        "del",
        "zadd",
        "zcard",
        "zrem",
        "zremrangebyscore",
        "pexpire",
    ];
    let in_transaction = ["eval", "hincrby", "incrby", "expire", "sadd"];
    let others: Vec<&String> = calls
        .keys()
        .filter(|name| {
            let name = name.as_str();
            !["evalsha", "multi", "exec", "config|resetstat"].contains(&name)
                && !in_scripts.contains(&name)
                && !in_transaction.contains(&name)
        })
        .collect();
    assert!(others.is_empty(), "{others:?} in {calls:?}");
    // Inside each transaction: the settle script, eight usage fields, the days set, six
    // counters, four expiries.
    assert_eq!(calls.get("eval"), Some(&n), "{calls:?}");
    assert_eq!(calls.get("hincrby"), Some(&(8 * n)), "{calls:?}");
    assert_eq!(calls.get("incrby"), Some(&(6 * n)), "{calls:?}");
    assert_eq!(calls.get("expire"), Some(&(4 * n)), "{calls:?}");
    // And the budget is enforced from the same script: spend it, and the next request is a 402.
    let spent = redis.cli(&["get", "dsgw:{research}:spend:key:alice:total"]);
    assert!(spent.trim().parse::<u64>().unwrap() > 0, "{spent}");
    let day = redis
        .cli(&["keys", "dsgw:{research}:spend:key:alice:2*"])
        .lines()
        .find(|k| k.len() == "dsgw:{research}:spend:key:alice:2026-12-01".len())
        .unwrap()
        .to_owned();
    redis.cli(&["set", &day, "10000000000"]);
    let before = command_calls(&redis.cli(&["info", "commandstats"]));
    assert_eq!(chat(&gw, "sk-alice").await, 402);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = command_calls(&redis.cli(&["info", "commandstats"]));
    assert_eq!(after["evalsha"], before["evalsha"] + 1);
    assert_eq!(
        after.get("exec"),
        before.get("exec"),
        "a refused request returns nothing it did not take"
    );
}
