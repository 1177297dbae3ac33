//! `dsgw-bench`: what dsgw adds over calling the upstream directly, measured side by side in one
//! run on this machine.
//!
//! - added latency, open-loop at fixed request rates, non-streaming and streaming;
//! - the same for each surface (Chat Completions, the Responses API, Anthropic Messages);
//! - back-to-back streams over one keep-alive connection (a delayed-ACK stall shows as ~40 ms);
//! - resident memory of the gateway holding N concurrent open streams;
//! - instructions per request through dsgw and through the bare proxy (callgrind).
//!
//! The fake upstream and the gateway run as separate processes; this process is the load
//! generator (one thread). Build with `cargo build --release --workspace --bins` first.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use dsgw_tests::harness::{self, Gateway};

mod cpu_share;
mod instructions;
mod overload;
use dsgw_tests::process::rss_kib;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Parser)]
struct Args {
    /// The dsgw binary to measure.
    #[arg(long, default_value = "target/release/dsgw")]
    dsgw: PathBuf,
    /// The fake upstream binary.
    #[arg(long, default_value = "target/release/fake-deepseek")]
    fake: PathBuf,
    /// Request rates for the open-loop runs, per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u32>,
    /// Seconds per open-loop run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Concurrent open streams for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Rate for the Redis limit-tier comparison (0 skips it).
    #[arg(long, default_value_t = 1000)]
    limits_rate: u32,
    /// Interleaved rounds for the accounting comparison (medians reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The gateway's log filter (DSGW_LOG); `info` writes one completion line per request.
    #[arg(long, default_value = "info")]
    log: String,
    /// Back-to-back streams on one connection.
    #[arg(long, default_value_t = 300)]
    sequential: usize,
    /// A second dsgw binary (an earlier build, say) measured beside --dsgw in the same run: in
    /// the latency table (interleaved) and the open-stream memory.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Interleaved rounds of the latency table (medians reported).
    #[arg(long, default_value_t = 1)]
    latency_rounds: usize,
    /// CPUs the overload section's gateway is confined to (`taskset -c`), so that the load
    /// generator and the fake, run elsewhere (`taskset -c 1 dsgw-bench ...`), can offer more
    /// than the gateway serves; on two shared cores they otherwise saturate first.
    #[arg(long)]
    gateway_cpus: Option<String>,
    /// The share of one CPU the overload section's gateway may use (a CPU cgroup, as a
    /// container's limit; needs root): with part of a core the gateway saturates before the
    /// load generator does, so its 1.5x and 2x runs load the gateway, not the generator.
    #[arg(long)]
    gateway_cpu_share: Option<f64>,
    /// Requests counted per row of the instructions section.
    #[arg(long, default_value_t = 200)]
    instruction_requests: usize,
    /// Where the instructions section's callgrind dumps are kept, for `callgrind_annotate`
    /// (by default they go to a temporary folder removed at the end).
    #[arg(long)]
    callgrind_dir: Option<PathBuf>,
    /// Sections to run: latency, surfaces, limits, store, accounting, sequential, memory,
    /// overload, instructions (valgrind's callgrind; not in the default set, it takes minutes).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,surfaces,limits,accounting,sequential,memory"
    )]
    sections: Vec<String>,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Target {
    name: &'static str,
    url: String,
    key: &'static str,
}

fn client(max_idle: usize) -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// One request, body read to the end. Returns its latency, or None on a failure.
async fn once(client: &HttpClient, target: &Target, body: &Bytes) -> Option<Duration> {
    let started = Instant::now();
    let request = http::Request::post(&target.url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", target.key))
        .body(Full::new(body.clone()))
        .ok()?;
    let response = client.request(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.into_body().collect().await.ok()?;
    Some(started.elapsed())
}

struct Run {
    latencies: Vec<Duration>,
    failures: usize,
}

/// Open loop: requests start on a fixed schedule whatever the responses do.
async fn open_loop(
    client: &HttpClient,
    target: &Target,
    body: &Bytes,
    rate: u32,
    seconds: u32,
) -> Run {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (client, body) = (client.clone(), body.clone());
        let target = Target {
            name: target.name,
            url: target.url.clone(),
            key: target.key,
        };
        tasks.push(tokio::spawn(
            async move { once(&client, &target, &body).await },
        ));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => latencies.push(d),
            None => failures += 1,
        }
    }
    latencies.sort();
    Run {
        latencies,
        failures,
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn chat_body(model: &str, content: &str, stream: bool) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "stream": stream,
        })
        .to_string(),
    )
}

fn main() {
    let args = Args::parse();
    let mut fake_cmd = Command::new(&args.fake);
    fake_cmd.env("FAKE_DEEPSEEK_KEY", harness::UPSTREAM_KEY);
    let (mut fake, fake_addr, _) =
        harness::spawn_announcing(fake_cmd, "fake-deepseek: listening on ");
    let base = format!("http://{fake_addr}");
    let mut env = harness::env();
    env.push(("DSGW_LOG", args.log.as_str()));
    let gw = Gateway::start(&args.dsgw, &harness::config(&base, ""), &env);
    let baseline = args
        .baseline
        .as_ref()
        .map(|bin| Gateway::start(bin, &harness::config(&base, ""), &env));
    let run = |section: &str| args.sections.iter().any(|s| s == section);
    let mut floor_cmd = Command::new(&args.fake);
    floor_cmd.arg("--proxy-to").arg(&base);
    let (mut floor, floor_addr, _) =
        harness::spawn_announcing(floor_cmd, "fake-deepseek: listening on ");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let direct = Target { name: "direct", url: format!("{base}/chat/completions"), key: harness::UPSTREAM_KEY };
        let via = Target { name: "dsgw", url: gw.url("/v1/chat/completions"), key: "sk-alice" };
        let hop = Target {
            name: "bare proxy",
            url: format!("http://{floor_addr}/chat/completions"),
            key: harness::UPSTREAM_KEY,
        };
        let pool = client(64);

        let old = baseline.as_ref().map(|b| Target {
            name: "dsgw (baseline)",
            url: b.url("/v1/chat/completions"),
            key: "sk-alice",
        });
        if run("latency") {
            let mut targets = vec![&via];
            targets.extend(old.as_ref());
            targets.push(&hop);
            latency_table(&pool, &direct, &targets, &args).await;
        }
        if run("surfaces") {
            surfaces_table(&pool, &direct, &gw, &args).await;
        }
        if run("limits") && args.limits_rate > 0 {
            use dsgw_tests::redis_server::{RedisCluster, RedisServer, command_calls};
            use dsgw_tests::tls_ca::TestCa;
            let limits = "\n[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 100000000\ntokens_per_minute = 10000000000\nconcurrent = 100000\n";
            let single = RedisServer::start();
            let cluster = RedisCluster::start();
            let ca = TestCa::new("bench");
            let tls = RedisServer::start_tls(&ca, true);
            let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("{u:?}")).collect();
            let stores = [
                ("one Redis", format!("[redis]\nurl = \"{}\"\n", single.url())),
                ("Redis Cluster, 3 masters", format!("[redis]\nnodes = [{}]\n", nodes.join(", "))),
                (
                    "one Redis over mutual TLS",
                    format!(
                        "[redis]\nurl = \"{}\"\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
                        tls.url(),
                        ca.ca_cert.display().to_string(),
                        ca.client_cert.display().to_string(),
                        ca.client_key.display().to_string()
                    ),
                ),
            ];
            let gateways: Vec<Gateway> = stores
                .iter()
                .map(|(_, redis)| Gateway::start(&args.dsgw, &harness::config(&base, &format!("{redis}timeout_ms = 200\n{limits}")), &env))
                .collect();
            let targets: Vec<Target> = gateways
                .iter()
                .map(|g| Target { name: "limited", url: g.url("/v1/chat/completions"), key: "sk-alice" })
                .collect();
            let body = chat_body("deepseek-chat", "Hello", false);
            for target in std::iter::once(&via).chain(&targets) {
                for _ in 0..200 {
                    once(&pool, target, &body).await;
                }
            }
            let rate = args.limits_rate;
            single.cli(&["config", "resetstat"]);
            let plain = open_loop(&pool, &via, &body, rate, args.seconds).await;
            let mut runs = Vec::new();
            for target in &targets {
                runs.push(open_loop(&pool, target, &body, rate, args.seconds).await);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let calls = command_calls(&single.cli(&["info", "commandstats"]));
            let served = (runs[0].latencies.len()) as f64;
            let per = |name: &str| calls.get(name).copied().unwrap_or(0) as f64 / served;
            println!("\n## Redis limit tier ({rate} req/s, non-streaming, {} s each)\n", args.seconds);
            println!("| gateway | p50 | p99 | failures | added p50 | added p99 |");
            println!("|---|---|---|---|---|---|");
            println!("| dsgw, no limits | {:.3} ms | {:.3} ms | {} | | |", pct(&plain.latencies, 0.5), pct(&plain.latencies, 0.99), plain.failures);
            for ((name, _), run) in stores.iter().zip(&runs) {
                println!(
                    "| rpm + tpm + concurrency on {name} | {:.3} ms | {:.3} ms | {} | {:.3} ms | {:.3} ms |",
                    pct(&run.latencies, 0.5),
                    pct(&run.latencies, 0.99),
                    run.failures,
                    pct(&run.latencies, 0.5) - pct(&plain.latencies, 0.5),
                    pct(&run.latencies, 0.99) - pct(&plain.latencies, 0.99)
                );
            }
            println!(
                "\nround trips per request on one Redis: {:.2} EVALSHA (limits) + {:.2} MULTI/EXEC (settlement)",
                per("evalsha"),
                per("exec")
            );
        }

        if run("store") {
            store_section(&pool, &direct, &via, &base, &args, &env).await;
        }

        if run("accounting") {
            let plain_config = harness::config(&base, "").replace("drain_timeout_secs = 5", "drain_timeout_secs = 5\naccounting = false");
            let plain_gw = Gateway::start(&args.dsgw, &plain_config, &env);
            let without = Target { name: "dsgw without accounting", url: plain_gw.url("/v1/chat/completions"), key: "sk-alice" };
            println!(
                "\n## Accounting and metrics overhead ({} req/s, {} s each, median of {} interleaved rounds)\n",
                args.limits_rate.max(1000),
                args.seconds,
                args.rounds
            );
            println!("| mode | added p50 without | added p50 with | added p99 without | added p99 with |");
            println!("|---|---|---|---|---|");
            for stream in [false, true] {
                let body = chat_body("deepseek-chat", "Hello", stream);
                for target in [&without, &via] {
                    for _ in 0..200 {
                        once(&pool, target, &body).await;
                    }
                }
                let rate = args.limits_rate.max(1000);
                // Interleaved rounds, medians reported: single runs on a shared machine swing more
                // than the effect measured.
                let (mut a50, mut b50, mut a99, mut b99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for _ in 0..args.rounds {
                    let d = open_loop(&pool, &direct, &body, rate, args.seconds).await;
                    let a = open_loop(&pool, &without, &body, rate, args.seconds).await;
                    let b = open_loop(&pool, &via, &body, rate, args.seconds).await;
                    let (d50, d99) = (pct(&d.latencies, 0.5), pct(&d.latencies, 0.99));
                    a50.push(pct(&a.latencies, 0.5) - d50);
                    b50.push(pct(&b.latencies, 0.5) - d50);
                    a99.push(pct(&a.latencies, 0.99) - d99);
                    b99.push(pct(&b.latencies, 0.99) - d99);
                }
                let median = |v: &mut Vec<f64>| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                println!(
                    "| {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
                    if stream { "stream" } else { "non-stream" },
                    median(&mut a50),
                    median(&mut b50),
                    median(&mut a99),
                    median(&mut b99),
                );
            }
        }

        if run("sequential") {
        println!("\n## Back-to-back streams on one keep-alive connection ({} each)\n", args.sequential);
        println!("| target | p50 | p99 | max | over 30 ms |");
        println!("|---|---|---|---|---|");
        let body = chat_body("deepseek-chat", "Hello", true);
        for target in [&direct, &via] {
            let single = client(1);
            let mut lat = Vec::with_capacity(args.sequential);
            for _ in 0..args.sequential {
                if let Some(d) = once(&single, target, &body).await {
                    lat.push(d);
                }
            }
            lat.sort();
            let slow = lat.iter().filter(|d| **d > Duration::from_millis(30)).count();
            println!(
                "| {} | {:.3} ms | {:.3} ms | {:.3} ms | {slow} |",
                target.name,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            );
        }

        }

        if run("instructions") {
            instructions::run(&args, &base, &env).await;
        }
        if run("overload") {
            let pinned: Vec<&str> = match &args.gateway_cpus {
                Some(cpus) => vec!["taskset", "-c", cpus],
                None => Vec::new(),
            };
            let overloaded =
                Gateway::start_under(&pinned, &args.dsgw, &harness::config(&base, ""), &env);
            let share = args.gateway_cpu_share.map(|share| {
                cpu_share::CpuShare::confine(overloaded.pid(), share)
                    .unwrap_or_else(|e| panic!("--gateway-cpu-share: {e}"))
            });
            if let Some(fraction) = args.gateway_cpu_share {
                println!(
                    "\nThe gateway may use {:.0}% of one CPU (a CPU cgroup's quota, {} ms period).",
                    fraction * 100.0,
                    cpu_share::PERIOD_US / 1000
                );
            }
            overload::run(&pool, &overloaded, &args).await;
            if let Some((times, us)) = share.as_ref().and_then(cpu_share::CpuShare::throttled) {
                println!(
                    "The gateway was throttled {times} times, {:.1} s in all.",
                    us as f64 / 1e6
                );
            }
            // The gateway ends before its cgroup is removed.
            drop(overloaded);
            drop(share);
        }
        if run("memory") {
            println!("\n## Resident memory with {} open streams\n", args.streams);
            println!("| gateway | open streams | gateway RSS idle | gateway RSS with streams open | per stream | time to open all |");
            println!("|---|---|---|---|---|---|");
            memory(&via, gw.pid(), args.streams).await;
            if let (Some(old), Some(b)) = (&old, &baseline) {
                memory(old, b.pid(), args.streams).await;
            }
        }
    });
    for child in [&mut fake, &mut floor] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One round of one target: direct p50, added p50, direct p99, added p99, failures.
type Sample = (f64, f64, f64, f64, usize);

/// The added-latency table: every target beside the direct call, interleaved at each rate.
/// Keys from the store against keys from the file, interleaved at one rate (the store must
/// cost nothing on the request path), and how fast ledger rows go into PostgreSQL.
async fn store_section(
    pool: &HttpClient,
    direct: &Target,
    via: &Target,
    base: &str,
    args: &Args,
    env: &[(&str, &str)],
) {
    use dsgw_tests::postgres_server::PostgresServer;
    let pg = PostgresServer::start();
    let admin_digest = {
        use sha2::Digest;
        sha2::Sha256::digest(b"sk-bench-admin")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let store_extra = format!(
        "[store]\nurl = \"{}\"\n\n[[keys]]\nid = \"root\"\nteam = \"ops\"\nadmin = true\nkey_sha256 = \"{admin_digest}\"\n",
        pg.url()
    );
    let stored = Gateway::start(&args.dsgw, &harness::config(base, &store_extra), env);
    let created = {
        let request = http::Request::post(stored.url("/v1/admin/keys"))
            .header("authorization", "Bearer sk-bench-admin")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"id": "bench", "team": "research"}"#,
            )))
            .unwrap();
        let response = pool.request(request).await.expect("create a stored key");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["key"].as_str().expect("a secret").to_owned()
    };
    let secret: &'static str = Box::leak(created.into_boxed_str());
    let from_store = Target {
        name: "store",
        url: stored.url("/v1/chat/completions"),
        key: secret,
    };
    let rate = args.limits_rate.max(1000);
    let body = chat_body("deepseek-chat", "Hello", false);
    for target in [via, &from_store] {
        for _ in 0..200 {
            once(pool, target, &body).await;
        }
    }
    let (mut f50, mut s50, mut f99, mut s99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0;
    for _ in 0..args.rounds {
        let d = open_loop(pool, direct, &body, rate, args.seconds).await;
        let f = open_loop(pool, via, &body, rate, args.seconds).await;
        let s = open_loop(pool, &from_store, &body, rate, args.seconds).await;
        let (d50, d99) = (pct(&d.latencies, 0.5), pct(&d.latencies, 0.99));
        f50.push(pct(&f.latencies, 0.5) - d50);
        s50.push(pct(&s.latencies, 0.5) - d50);
        f99.push(pct(&f.latencies, 0.99) - d99);
        s99.push(pct(&s.latencies, 0.99) - d99);
        failures += f.failures + s.failures;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n## Keys from the store vs from the file ({rate} req/s, non-streaming, {} s each, median of {} interleaved rounds)\n",
        args.seconds, args.rounds
    );
    println!("| keys from | added p50 | added p99 |");
    println!("|---|---|---|");
    println!(
        "| the file (JSON-lines ledger) | {:.3} ms | {:.3} ms |",
        median(&mut f50),
        median(&mut f99)
    );
    println!(
        "| PostgreSQL (ledger rows shipped to it) | {:.3} ms | {:.3} ms |",
        median(&mut s50),
        median(&mut s99)
    );
    println!("\nfailures: {failures}");
    drop(stored);

    // Ingestion: a spool of N committed records, shipped when a replica starts on it, timed
    // against the same start with an empty spool.
    let rows = 50_000;
    let spool = std::env::temp_dir().join(format!("dsgw-bench-spool-{}.jsonl", std::process::id()));
    let record = |i: usize| {
        serde_json::json!({"uid": format!("{i:032x}"), "request_id": format!("bench-{i}"), "ts": 1_796_000_000 + i / 100,
            "key_id": "alice", "team": "research", "model": "deepseek-chat", "deployment": "deepseek/deepseek-chat",
            "cache_hit": 64, "cache_miss": 10, "output": 5, "reasoning": 0, "cost": 4_900_000, "currency": "USD",
            "estimated": false, "price": "deepseek-v3.2", "tier": "flat"})
        .to_string()
    };
    let text: String = (0..rows).map(|i| record(i) + "\n").collect();
    let with_spool = |path: &std::path::Path| {
        harness::config(base, &store_extra).replacen(
            "[ledger]\npath = \"",
            &format!("[ledger]\npath = \"{}\"\n# ", path.display()),
            1,
        )
    };
    let empty = std::env::temp_dir().join(format!("dsgw-bench-empty-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&empty);
    let started = Instant::now();
    drop(Gateway::start(&args.dsgw, &with_spool(&empty), env));
    let bare = started.elapsed();
    std::fs::write(&spool, text).unwrap();
    let _ = std::fs::remove_file(dsgw_tests::harness::shipped_checkpoint(&spool));
    let started = Instant::now();
    drop(Gateway::start(&args.dsgw, &with_spool(&spool), env));
    let shipping = started.elapsed().saturating_sub(bare);
    let stored_rows = pg
        .psql("SELECT COUNT(*) FROM ledger WHERE request_id LIKE 'bench-%'")
        .unwrap();
    println!(
        "\nledger rows into PostgreSQL: {rows} rows shipped in {:.0} ms ({:.0} rows/s, batches of 2000, 100 rows per INSERT); {} stored",
        shipping.as_secs_f64() * 1e3,
        rows as f64 / shipping.as_secs_f64(),
        stored_rows.trim()
    );
    for path in [&spool, &empty] {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(dsgw_tests::harness::shipped_checkpoint(path));
    }
}

async fn latency_table(pool: &HttpClient, direct: &Target, targets: &[&Target], args: &Args) {
    println!("## Added latency, open loop ({} s per run)\n", args.seconds);
    println!("Added = latency through the hop minus latency calling the fake directly, same run.");
    println!(
        "`bare proxy` is a pass-through hyper proxy with no parsing: the floor any extra hop pays here.\n"
    );
    if args.latency_rounds > 1 {
        println!("Medians of {} interleaved rounds.\n", args.latency_rounds);
    }
    println!(
        "| mode | rate (req/s) | target | direct p50 | added p50 | direct p99 | added p99 | failures (all runs) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for stream in [false, true] {
        let body = chat_body("deepseek-chat", "Hello", stream);
        for target in std::iter::once(direct).chain(targets.iter().copied()) {
            for _ in 0..200 {
                once(pool, target, &body).await;
            }
        }
        for &rate in &args.rates {
            let mode = if stream { "stream" } else { "non-stream" };
            // Interleaved rounds, medians reported: one run on a shared machine swings more than
            // the differences measured.
            let mut rows: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
            for _ in 0..args.latency_rounds {
                for (i, target) in targets.iter().enumerate() {
                    let d = open_loop(pool, direct, &body, rate, args.seconds).await;
                    let t = open_loop(pool, target, &body, rate, args.seconds).await;
                    let (d50, d99) = (pct(&d.latencies, 0.5), pct(&d.latencies, 0.99));
                    rows[i].push((
                        d50,
                        pct(&t.latencies, 0.5) - d50,
                        d99,
                        pct(&t.latencies, 0.99) - d99,
                        d.failures + t.failures,
                    ));
                }
            }
            for (target, runs) in targets.iter().zip(&mut rows) {
                let median = |f: fn(&Sample) -> f64| {
                    let mut v: Vec<f64> = runs.iter().map(f).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let failures: usize = runs.iter().map(|r| r.4).sum();
                println!(
                    "| {mode} | {rate} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {failures} |",
                    target.name,
                    median(|r| r.0),
                    median(|r| r.1),
                    median(|r| r.2),
                    median(|r| r.3),
                );
            }
        }
    }
}

/// The same question through each surface: what translating to and from Chat Completions adds
/// (the Responses API, Anthropic Messages) beside the chat surface itself, interleaved.
async fn surfaces_table(pool: &HttpClient, direct: &Target, gw: &Gateway, args: &Args) {
    let surfaces = [
        ("/v1/chat/completions", "chat completions"),
        ("/v1/responses", "responses"),
        ("/anthropic/v1/messages", "anthropic messages"),
    ];
    let body = |path: &str, stream: bool| -> Bytes {
        let question = serde_json::json!([{"role": "user", "content": "Hello"}]);
        let body = match path {
            "/v1/responses" => {
                serde_json::json!({"model": "deepseek-chat", "input": "Hello", "stream": stream})
            }
            "/anthropic/v1/messages" => {
                serde_json::json!({"model": "deepseek-chat", "max_tokens": 256, "messages": question, "stream": stream})
            }
            _ => {
                serde_json::json!({"model": "deepseek-chat", "messages": question, "stream": stream})
            }
        };
        Bytes::from(body.to_string())
    };
    println!(
        "\n## Added latency per surface, open loop ({} s per run, median of {} interleaved rounds)\n",
        args.seconds, args.latency_rounds
    );
    println!("Added = latency through dsgw minus the direct chat call to the fake, same run.\n");
    println!("| mode | rate (req/s) | surface | added p50 | added p99 | failures |");
    println!("|---|---|---|---|---|---|");
    for stream in [false, true] {
        let direct_body = chat_body("deepseek-chat", "Hello", stream);
        let targets: Vec<(Target, Bytes)> = surfaces
            .iter()
            .map(|(path, name)| {
                (
                    Target {
                        name,
                        url: gw.url(path),
                        key: "sk-alice",
                    },
                    body(path, stream),
                )
            })
            .collect();
        for _ in 0..200 {
            once(pool, direct, &direct_body).await;
            for (target, body) in &targets {
                once(pool, target, body).await;
            }
        }
        for &rate in &args.rates {
            let mut rows: Vec<Vec<(f64, f64, usize)>> = vec![Vec::new(); targets.len()];
            for _ in 0..args.latency_rounds {
                for (i, (target, body)) in targets.iter().enumerate() {
                    let d = open_loop(pool, direct, &direct_body, rate, args.seconds).await;
                    let t = open_loop(pool, target, body, rate, args.seconds).await;
                    rows[i].push((
                        pct(&t.latencies, 0.5) - pct(&d.latencies, 0.5),
                        pct(&t.latencies, 0.99) - pct(&d.latencies, 0.99),
                        d.failures + t.failures,
                    ));
                }
            }
            for ((target, _), runs) in targets.iter().zip(&rows) {
                let median = |f: fn(&(f64, f64, usize)) -> f64| {
                    let mut v: Vec<f64> = runs.iter().map(f).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let failures: usize = runs.iter().map(|r| r.2).sum();
                println!(
                    "| {} | {rate} | {} | {:.3} ms | {:.3} ms | {failures} |",
                    if stream { "stream" } else { "non-stream" },
                    target.name,
                    median(|r| r.0),
                    median(|r| r.1),
                );
            }
        }
    }
}

/// Resident memory of the gateway `pid` holding `streams` open streams through `via`.
async fn memory(via: &Target, pid: u32, streams: usize) {
    let idle = rss_kib(pid);
    let body = chat_body("deepseek-chat", "__hold__", true);
    let mut open = Vec::with_capacity(streams);
    let started = Instant::now();
    for _ in 0..streams {
        let c = client(0);
        let request = http::Request::post(&via.url)
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-alice")
            .body(Full::new(body.clone()))
            .unwrap();
        open.push(tokio::spawn(async move {
            let response = c.request(request).await.ok()?;
            let mut body = response.into_body();
            // Wait for the first data frame: the stream is open end to end.
            let frame = body.frame().await?.ok()?;
            frame.data_ref()?;
            Some(body)
        }));
    }
    let mut bodies = Vec::with_capacity(streams);
    for t in open {
        if let Ok(Some(b)) = t.await {
            bodies.push(b);
        }
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rss_kib(pid);
    println!(
        "| {} | {} | {:.1} MB | {:.1} MB | {:.1} KiB | {:.2} s |",
        via.name,
        bodies.len(),
        idle as f64 / 1024.0,
        held as f64 / 1024.0,
        (held.saturating_sub(idle)) as f64 / bodies.len().max(1) as f64,
        opened.as_secs_f64(),
    );
    drop(bodies);
}
