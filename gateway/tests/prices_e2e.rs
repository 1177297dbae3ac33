//! Prices as schedules on the real binary: the tier and era in force when a request is sent
//! price it, in headers, usage, the ledger and the metrics; the built-in catalogue prices a
//! DeepSeek deployment by its upstream name; a prices file reloads on SIGHUP.
//!
//! Expected costs are computed here from the rates written in the test, and the tier from the
//! clock read here: peak windows are placed hours around the current UTC time, so no test
//! waits for a window and none lands on an edge.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{money, setup_with, user};
use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use serde_json::{Value, json};

/// Rates in picodollars per token (USD per 1M tokens × 10^6): cache hit, cache miss, output.
type Rates = [u64; 3];

const PEAK: Rates = [20_000, 200_000, 800_000]; // 0.02 / 0.2 / 0.8
const OFF_PEAK: Rates = [10_000, 100_000, 400_000]; // 0.01 / 0.1 / 0.4
const OLD_ERA: Rates = [50_000, 500_000, 900_000]; // 0.05 / 0.5 / 0.9
const CURRENT_ERA: Rates = [30_000, 300_000, 600_000]; // 0.03 / 0.3 / 0.6
const FUTURE_ERA: Rates = [1_000, 1_000, 1_000]; // 0.001 each

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `"HH:MM"` of a UTC minute of the day (wrapped into 0..1440).
fn hhmm(minute: i64) -> String {
    let m = minute.rem_euclid(1440);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The civil UTC date of a Unix day number (Howard Hinnant's `civil_from_days`).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn pico(usage: &Value, rates: Rates) -> u64 {
    let n = |k: &str| usage[k].as_u64().unwrap();
    n("prompt_cache_hit_tokens") * rates[0]
        + n("prompt_cache_miss_tokens") * rates[1]
        + n("completion_tokens") * rates[2]
}

fn per_million(r: Rates) -> [String; 3] {
    r.map(|p| money(p * 1_000_000))
}

fn price(name: &str, from: Option<&str>, rates: Rates, off_peak: Option<(Rates, &str)>) -> String {
    let [hit, miss, out] = per_million(rates);
    let mut s = format!(
        "\n[[prices]]\nname = \"{name}\"\ncache_hit = \"{hit}\"\ncache_miss = \"{miss}\"\noutput = \"{out}\"\n"
    );
    if let Some(from) = from {
        s += &format!("effective_from = \"{from}\"\n");
    }
    if let Some((rates, tail)) = off_peak {
        let [hit, miss, out] = per_million(rates);
        s += &format!(
            "off_peak = {{ cache_hit = \"{hit}\", cache_miss = \"{miss}\", output = \"{out}\" }}\n{tail}\n"
        );
    }
    s
}

fn model(name: &str, upstream: &str, price: Option<&str>) -> String {
    let price = price.map_or(String::new(), |p| format!(", price = \"{p}\""));
    format!(
        "\n[[models]]\nname = \"{name}\"\ndeployments = [{{ provider = \"deepseek\", model = \"{upstream}\"{price} }}]\n"
    )
}

/// Prices and models around the current time: a window holding now, one that does not, a
/// holiday over a window holding now, three eras, and DeepSeek's own name without a price.
fn scheduled(now: i64) -> String {
    let minute = now.rem_euclid(86_400) / 60;
    let day = now.div_euclid(86_400);
    let around = format!("\"{}-{}\"", hhmm(minute - 120), hhmm(minute + 120));
    let elsewhere = format!("\"{}-{}\"", hhmm(minute + 180), hhmm(minute + 300));
    let holidays = format!(
        "[\"{}\", \"{}\", \"{}\"]",
        date(day - 1),
        date(day),
        date(day + 1)
    );
    let hours = |w: &str| format!("peak_hours = {{ timezone = \"UTC\", hours = [{w}] }}");
    let mut s = String::new();
    s += &price("in-peak", None, PEAK, Some((OFF_PEAK, &hours(&around))));
    s += &price("off-peak", None, PEAK, Some((OFF_PEAK, &hours(&elsewhere))));
    s += &price(
        "holiday",
        None,
        PEAK,
        Some((
            OFF_PEAK,
            &format!("{}\nholidays = {holidays}", hours(&around)),
        )),
    );
    s += &price("eras", Some(&date(day - 10)), OLD_ERA, None);
    s += &price("eras", Some(&date(day - 1)), CURRENT_ERA, None);
    s += &price("eras", Some(&date(day + 10)), FUTURE_ERA, None);
    s += &model("m-peak", "deepseek-chat", Some("in-peak"));
    s += &model("m-off-peak", "deepseek-chat", Some("off-peak"));
    s += &model("m-holiday", "deepseek-chat", Some("holiday"));
    s += &model("m-eras", "deepseek-chat", Some("eras"));
    s += &model("m-flash", "deepseek-v4-flash", None);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_priced_at_the_tier_and_era_in_force_when_sent() {
    let now = now_secs();
    let day = now.div_euclid(86_400);
    let s = setup_with(|c| c + &scheduled(now)).await;
    let cases = [
        ("m-peak", "in-peak", "peak", PEAK, None),
        ("m-off-peak", "off-peak", "off_peak", OFF_PEAK, None),
        ("m-holiday", "holiday", "off_peak", OFF_PEAK, None),
        (
            "m-eras",
            "eras",
            "flat",
            CURRENT_ERA,
            Some(format!("{}T00:00:00Z", date(day - 1))),
        ),
    ];
    let mut off_peak_equivalent = 0;
    for (i, (model, price, tier, rates, era)) in cases.iter().enumerate() {
        let r = s
            .request(
                "sk-alice",
                &json!({"model": model, "messages": user(&format!("price me {i}"))}),
            )
            .await;
        assert_eq!(r.status(), 200, "{model}");
        let header = r.headers()["x-dsgw-cost"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        let expected = pico(&v["usage"], *rates);
        assert_ne!(expected, 0);
        assert_eq!(header, money(expected), "{model}");
        assert_eq!(v["usage"]["dsgw_cost"]["total"], money(expected), "{model}");

        let line = s.ledger_records(i + 1).await.pop().unwrap();
        assert_eq!(line["model"], *model);
        assert_eq!(line["price"], *price, "{line}");
        assert_eq!(line["tier"], *tier, "{line}");
        assert_eq!(line["cost"], expected, "{line}");
        assert_eq!(
            line.get("era").and_then(Value::as_str),
            era.as_deref(),
            "{line}"
        );
        assert!(line.get("computed_cost").is_none(), "{line}");
        off_peak_equivalent += match *tier {
            "flat" => expected,
            _ => pico(&v["usage"], OFF_PEAK),
        } / 1000;
    }

    // The cost metric says the tier; the off-peak counter what the same traffic costs off-peak.
    let text = s.metrics().await;
    for (model, tier) in [
        ("m-peak", "peak"),
        ("m-off-peak", "off_peak"),
        ("m-holiday", "off_peak"),
        ("m-eras", "flat"),
    ] {
        let series = format!(
            r#"model="{model}",part="output",provider="deepseek",team="research",tier="{tier}"}}"#
        );
        assert!(text.contains(&series), "{series}\n{text}");
    }
    let off_peak_sum: u64 = text
        .lines()
        .filter(|l| l.starts_with("dsgw_cost_off_peak_nanodollars_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(off_peak_sum, off_peak_equivalent);

    // A DeepSeek name without a price gets the catalogue's schedule for it: DeepSeek's
    // published V4-Flash rates, peak or off-peak by the Beijing clock.
    let r = s
        .request(
            "sk-alice",
            &json!({"model": "m-flash", "messages": user("what is due")}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let line = s.ledger_records(5).await.pop().unwrap();
    assert_eq!(line["price"], "deepseek-v4-flash", "{line}");
    let rates = match line["tier"].as_str().unwrap() {
        "peak" => [6_000, 300_000, 1_200_000],
        "off_peak" => [3_000, 150_000, 600_000],
        other => panic!("the V4-Flash era of {now} has peak hours, got {other}"),
    };
    assert_eq!(
        v["usage"]["dsgw_cost"]["total"],
        money(pico(&v["usage"], rates))
    );
    assert_eq!(line["era"], "2026-09-10T00:00:00Z", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prices_file_reloads_on_sighup_and_a_broken_one_is_refused() {
    let fake = FakeUpstream::start(Some(harness::UPSTREAM_KEY)).await;
    let dir = std::env::temp_dir().join(format!("dsgw-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prices.toml");
    std::fs::write(&file, price("team", None, PEAK, None)).unwrap();
    // `prices_file` is a top-level key: it comes before the first table. Relative to the
    // config's folder for `dsgw check`; absolute for the gateway, whose config is elsewhere.
    let with_file = |at: &str| {
        format!("prices_file = {at:?}\n")
            + &harness::config(&fake.base_url(), "")
            + &model("m-team", "deepseek-chat", Some("team"))
    };
    let config_path = dir.join("dsgw.toml");
    std::fs::write(&config_path, with_file("prices.toml")).unwrap();

    // `dsgw check` reads the prices file with the config, relative to the config's folder.
    let check = |expect_ok: bool| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dsgw"))
            .args(["check", "--config"])
            .arg(&config_path)
            .envs(harness::env())
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            expect_ok,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    check(true);
    // `dsgw prices` shows what the file says, with the built-in catalogue beside it.
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["prices", "--at", "2026-12-01T02:00:00Z", "--config"])
        .arg(&config_path)
        .envs(harness::env())
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8(shown.stdout).unwrap();
    let timed = std::process::Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["prices", "--bench", "1000", "--config"])
        .arg(&config_path)
        .envs(harness::env())
        .output()
        .unwrap();
    let timed = String::from_utf8(timed.stdout).unwrap();
    assert!(timed.contains("\n| team | 1 | "), "{timed}");
    assert!(timed.contains("\n| deepseek-v3.2 | 1 | "), "{timed}");
    assert!(
        shown.contains("m-team -> deepseek/deepseek-chat\n  price  team (era from the start)\n  now    flat     0.02 / 0.2 / 0.8 USD\n  next   no change scheduled\n"),
        "{shown}"
    );

    let gw = Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &with_file(file.to_str().unwrap()),
        &harness::env(),
    );
    let http = reqwest::Client::new();
    let cost = || async {
        let r = http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-alice")
            .json(&json!({"model": "m-team", "messages": user("hi")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        (v["usage"].clone(), v["usage"]["dsgw_cost"]["total"].clone())
    };
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &gw.pid().to_string()])
            .status()
            .unwrap()
    };
    let (u, total) = cost().await;
    assert_eq!(total, money(pico(&u, PEAK)));

    std::fs::write(&file, price("team", None, CURRENT_ERA, None)).unwrap();
    assert!(hup().success());
    assert!(gw.wait_for_log("prices reloaded", Duration::from_secs(5)));
    let (u, total) = cost().await;
    assert_eq!(total, money(pico(&u, CURRENT_ERA)), "the new prices hold");

    // A broken file (a window that is no window) is refused, by `check` and by the reload.
    std::fs::write(
        &file,
        price(
            "team",
            None,
            PEAK,
            Some((
                OFF_PEAK,
                "peak_hours = { timezone = \"UTC\", hours = [\"9-5\"] }",
            )),
        ),
    )
    .unwrap();
    let refused = check(false);
    assert!(refused.contains("\"9-5\" is not a window"), "{refused}");
    assert!(hup().success());
    assert!(gw.wait_for_log("price reload refused", Duration::from_secs(5)));
    let (u, total) = cost().await;
    assert_eq!(
        total,
        money(pico(&u, CURRENT_ERA)),
        "the last good prices stay"
    );

    // So is a file that drops a price a deployment names.
    std::fs::write(&file, price("other", None, PEAK, None)).unwrap();
    assert!(hup().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.logs().matches("price reload refused").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", gw.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (u, total) = cost().await;
    assert_eq!(total, money(pico(&u, CURRENT_ERA)));
    drop(gw);
    std::fs::remove_dir_all(&dir).unwrap();
}
