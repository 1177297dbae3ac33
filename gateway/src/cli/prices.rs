//! `dsgw prices`: per deployment, the price it is charged at, the era and tier in force at an
//! instant (now by default), the rates, and when they next change. It reads the configuration
//! as `dsgw serve` would, so what it prints is what the gateway charges.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use dsgw::accounting::pricing::{Applied, Money, PriceBook, Rates, Schedule};
use dsgw::support::config::Config;
use dsgw::support::config::prices::parse_instant;
use jiff::Timestamp;

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(std::env::var_os("DEEPSEEK_API_KEY").is_some()),
    })
}

pub fn prices(path: Option<&Path>, at: Option<&str>) -> anyhow::Result<()> {
    let config = load(path)?;
    let at = match at {
        Some(text) => parse_instant(text)
            .map_err(anyhow::Error::msg)
            .context("--at")?,
        None => Timestamp::now(),
    };
    print!("{}", table(&config, at)?);
    Ok(())
}

/// Times what pricing one request costs for each price the deployments use: `n` charges at
/// instants spread over a week from 2026-12-01, so every tier and branch is taken.
pub fn bench(path: Option<&Path>, n: u32) -> anyhow::Result<()> {
    let config = load(path)?;
    let book = PriceBook::new(config.operator_prices());
    let mut names: Vec<String> = Vec::new();
    for d in config.models.iter().flat_map(|m| &m.deployments) {
        let name = config.deployment_price(d).map_err(anyhow::Error::msg)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let usage = dsgw::accounting::usage::Usage {
        cache_hit: 6400,
        cache_miss: 1000,
        output: 500,
        reasoning: 300,
        estimated: false,
    };
    let start: Timestamp = "2026-12-01T00:00:00Z".parse()?;
    let n = i64::from(n.max(1));
    println!("| price | eras | ns per charge | peak share |");
    println!("|---|---|---|---|");
    for name in names {
        let schedule = book
            .get(&name)
            .with_context(|| format!("price {name:?} is not defined"))?;
        let (mut peak, mut total) = (0u64, 0u64);
        let began = std::time::Instant::now();
        for i in 0..n {
            let at = start + jiff::SignedDuration::from_secs(i * 7 * 86_400 / n);
            let charge = schedule.charge(&usage, at, None);
            peak += u64::from(charge.tier == dsgw::accounting::pricing::Tier::Peak);
            total = total.wrapping_add(charge.cost.total());
        }
        let ns = began.elapsed().as_nanos() as f64 / n as f64;
        std::hint::black_box(total);
        println!(
            "| {name} | {} | {ns:.0} | {:.1}% |",
            schedule.eras().len(),
            100.0 * peak as f64 / n as f64
        );
    }
    Ok(())
}

/// The report for `config` at `at`: a header line, then a block per deployment.
fn table(config: &Config, at: Timestamp) -> anyhow::Result<String> {
    let book = PriceBook::new(config.operator_prices());
    let shown = Timestamp::from_second(at.as_second()).unwrap_or(at);
    let mut out = format!(
        "prices in force at {shown} (rates per 1M tokens: cache hit / cache miss / output)\n"
    );
    for model in &config.models {
        for d in &model.deployments {
            let name = config.deployment_price(d).map_err(anyhow::Error::msg)?;
            let schedule = book
                .get(&name)
                .with_context(|| format!("price {name:?} is not defined"))?;
            let _ = writeln!(out, "\n{} -> {}/{}", model.name, d.provider, d.model);
            describe(&mut out, schedule, at);
        }
    }
    Ok(out)
}

fn describe(out: &mut String, schedule: &Schedule, at: Timestamp) {
    let now = schedule.at(at);
    let _ = writeln!(out, "  price  {} (era {})", schedule.name, era_start(&now));
    let _ = writeln!(
        out,
        "  now    {:<8} {}",
        now.tier.as_str(),
        rates(&now.rates, &schedule.currency)
    );
    if let Some(hours) = now.era.peak_hours() {
        let windows: Vec<String> = hours
            .hours
            .iter()
            .map(|w| format!("{}-{}", hhmm(w.start), hhmm(w.end)))
            .collect();
        let days: Vec<String> = hours.days.iter().map(|d| format!("{d:?}")).collect();
        let _ = writeln!(
            out,
            "  peak   {} {} ({}); off-peak {}",
            days.join(","),
            windows.join(","),
            hours.timezone.name,
            rates(&now.era.off_peak_rates(), &schedule.currency)
        );
    }
    match schedule.next_change(at) {
        Some((when, next)) => {
            let _ = writeln!(
                out,
                "  next   {when}: {:<8} {}{}",
                next.tier.as_str(),
                rates(&next.rates, &schedule.currency),
                if std::ptr::eq(next.era, now.era) {
                    String::new()
                } else {
                    format!(" (era {})", era_start(&next))
                }
            );
        }
        None => out.push_str("  next   no change scheduled\n"),
    }
}

fn era_start(applied: &Applied<'_>) -> String {
    applied
        .era
        .from
        .map_or_else(|| "from the start".to_owned(), |t| t.to_string())
}

fn rates(r: &Rates, currency: &str) -> String {
    let per_million = |pico: u64| Money(pico * 1_000_000).to_string();
    format!(
        "{} / {} / {} {currency}",
        per_million(r.cache_hit),
        per_million(r.cache_miss),
        per_million(r.output)
    )
}

fn hhmm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_priced_at_deepseeks_current_schedule() {
        let config = Config::embedded_default(true);
        // Tuesday 2026-12-01 10:00 in Beijing: a weekday inside the morning peak window.
        let at: Timestamp = "2026-12-01T02:00:00Z".parse().unwrap();
        let text = table(&config, at).unwrap();
        assert!(
            text.contains("deepseek-chat -> deepseek/deepseek-flash"),
            "{text}"
        );
        assert!(
            text.contains("price  deepseek-v4-flash (era 2026-09-10T00:00:00Z)"),
            "{text}"
        );
        assert!(
            text.contains("now    peak     0.006 / 0.3 / 1.2 USD"),
            "{text}"
        );
        assert!(text.contains("off-peak 0.003 / 0.15 / 0.6 USD"), "{text}");
        // The morning window ends at 12:00 Beijing, 04:00 UTC.
        assert!(
            text.contains("next   2026-12-01T04:00:00Z: off_peak"),
            "{text}"
        );
        // The local engine is free and never changes.
        assert!(text.contains("price  free (era from the start)"), "{text}");
        assert!(text.contains("no change scheduled"), "{text}");
    }
}
