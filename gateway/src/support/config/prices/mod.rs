//! `[[prices]]` as written: rates read exactly from decimal strings, instants, peak hours and
//! holiday calendars typed as they are parsed (a malformed figure, time or zone is an error with
//! its line). Entries sharing a `name` are that price's eras. [`catalogue`] holds DeepSeek's
//! published eras in the same form; [`crate::accounting::pricing`] turns entries into
//! schedules and prices usage with them.

pub mod catalogue;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::providers::ProviderKind;

/// `"100.00"` (currency units) -> picodollars.
pub fn dollars(amount: &str) -> Result<u64, String> {
    // The same exact decimal parsing, scaled: 1 unit = 1e12 picodollars = per_token(x) * 1e6.
    per_token(amount)?
        .checked_mul(1_000_000)
        .ok_or_else(|| format!("{amount:?} is too large"))
}

/// `"0.028"` (currency per 1M tokens) -> picodollars per token, exactly (up to 6 decimals).
pub fn per_token(per_million: &str) -> Result<u64, String> {
    let (whole, frac) = per_million.split_once('.').unwrap_or((per_million, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{per_million:?} is not a decimal amount"));
    }
    if frac.len() > 6 {
        return Err(format!("{per_million:?} has more than 6 decimal places"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| format!("{per_million:?} is too large"))?
    };
    let frac_value: u64 = format!("{frac:0<6}").parse().unwrap_or(0);
    // Per 1M tokens -> per token: x USD / 1e6 = x * 1e6 picodollars.
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_value))
        .ok_or_else(|| format!("{per_million:?} is too large"))
}

/// Picodollars per token, read from a "per 1M tokens" decimal string (`"0.028"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerToken(pub u64);

impl<'de> Deserialize<'de> for PerToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        per_token(&text).map(PerToken).map_err(de::Error::custom)
    }
}

/// Rates per kind of token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesConfig {
    pub cache_hit: PerToken,
    pub cache_miss: PerToken,
    pub output: PerToken,
}

/// A `[[prices]]` entry: one era of the price `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub name: String,
    #[serde(default = "usd")]
    pub currency: String,
    /// When this era starts: an RFC 3339 instant (a date alone means 00:00 UTC). Absent: from
    /// the beginning.
    #[serde(default, deserialize_with = "instant")]
    pub effective_from: Option<Timestamp>,
    /// The list rates (the peak rates, where there are off-peak ones), per 1M tokens.
    pub cache_hit: PerToken,
    pub cache_miss: PerToken,
    pub output: PerToken,
    /// Rates outside `peak_hours`.
    #[serde(default)]
    pub off_peak: Option<RatesConfig>,
    #[serde(default)]
    pub peak_hours: Option<PeakHours>,
    /// Days off-peak all day: a built-in calendar's name (`"cn"`) or dates (`"YYYY-MM-DD"`).
    #[serde(default)]
    pub holidays: Option<Holidays>,
}

fn usd() -> String {
    "USD".to_owned()
}

fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let text = String::deserialize(d)?;
    parse_instant(&text).map(Some).map_err(de::Error::custom)
}

/// An RFC 3339 instant, or a date alone (00:00 UTC that day).
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    text.parse::<Date>()
        .ok()
        .and_then(|d| d.to_zoned_datetime(TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!("{text:?} is not an RFC 3339 instant (2026-09-10T00:00:00Z) or a date")
        })
}

impl PriceConfig {
    pub fn list(&self) -> RatesConfig {
        RatesConfig {
            cache_hit: self.cache_hit,
            cache_miss: self.cache_miss,
            output: self.output,
        }
    }
}

/// When the list (peak) rates apply: local `hours` on `days` in `timezone`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakHours {
    pub timezone: Zone,
    #[serde(default = "every_day")]
    pub days: Vec<Day>,
    pub hours: Vec<Window>,
}

fn every_day() -> Vec<Day> {
    vec![
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ]
}

impl PeakHours {
    pub fn has_day(&self, day: Weekday) -> bool {
        self.days.iter().any(|d| d.weekday() == day)
    }
}

/// An IANA time zone, from the tz database built into the binary (so a minimal container
/// without /usr/share/zoneinfo prices the same).
#[derive(Clone)]
pub struct Zone {
    pub name: String,
    pub tz: TimeZone,
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let tz = jiff::tz::db()
            .get(&name)
            .map_err(|_| de::Error::custom(format!("{name:?} is not an IANA time zone")))?;
        Ok(Self { name, tz })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub fn weekday(self) -> Weekday {
        match self {
            Self::Mon => Weekday::Monday,
            Self::Tue => Weekday::Tuesday,
            Self::Wed => Weekday::Wednesday,
            Self::Thu => Weekday::Thursday,
            Self::Fri => Weekday::Friday,
            Self::Sat => Weekday::Saturday,
            Self::Sun => Weekday::Sunday,
        }
    }
}

/// `"HH:MM-HH:MM"` in minutes of the day: start inclusive, end exclusive, `24:00` allowed as
/// an end; an end before the start wraps past midnight (the window belongs to its start day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a window like \"09:00-12:00\"");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let minutes = |hhmm: &str| -> Option<u16> {
            let (h, m) = hhmm.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (start, end) = (
            minutes(start).ok_or_else(bad)?,
            minutes(end).ok_or_else(bad)?,
        );
        if start == 1440 {
            return Err(format!("{text:?}: a window cannot start at 24:00"));
        }
        if start == end || (start == 0 && end == 0) {
            return Err(format!("{text:?} is empty"));
        }
        Ok(Self { start, end })
    }

    /// Whether the window runs past midnight into the next day.
    pub fn wraps(&self) -> bool {
        self.end < self.start
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(de::Error::custom)
    }
}

/// Off-peak days: a built-in calendar or dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holidays {
    Calendar(String),
    Dates(Vec<Date>),
}

impl<'de> Deserialize<'de> for Holidays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Holidays;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a calendar name (\"cn\") or a list of \"YYYY-MM-DD\" dates")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Holidays, E> {
                Ok(Holidays::Calendar(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Holidays, A::Error> {
                let mut dates = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    let date = text.parse::<Date>().map_err(|_| {
                        de::Error::custom(format!("{text:?} is not a date (YYYY-MM-DD)"))
                    })?;
                    dates.push(date);
                }
                Ok(Holidays::Dates(dates))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `[[prices]]` entries of a prices file (nothing else may be in it).
pub fn read_file(path: &std::path::Path) -> Result<Vec<PriceConfig>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        prices: Vec<PriceConfig>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let file: File = toml::from_str(&text).map_err(|e| e.to_string())?;
    Ok(file.prices)
}

/// Checks the entries of `[[prices]]` (and the catalogue's) together: each era complete, the
/// eras of one name distinct and in one currency, calendars known.
pub fn validate(prices: &[PriceConfig]) -> Result<(), String> {
    let mut eras: BTreeMap<&str, (HashSet<Option<Timestamp>>, &str)> = BTreeMap::new();
    for (i, p) in prices.iter().enumerate() {
        let at = format!("prices[{i}] (name = {:?})", p.name);
        if p.name.is_empty() {
            return Err(format!("prices[{i}]: `name` must not be empty"));
        }
        match (&p.off_peak, &p.peak_hours) {
            (Some(_), None) => {
                return Err(format!("{at}: `off_peak` rates need `peak_hours`"));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{at}: `peak_hours` need `off_peak` rates (without them every hour is priced alike)"
                ));
            }
            _ => {}
        }
        if let Some(hours) = &p.peak_hours
            && (hours.hours.is_empty() || hours.days.is_empty())
        {
            return Err(format!("{at}: `peak_hours` needs `days` and `hours`"));
        }
        match &p.holidays {
            Some(_) if p.peak_hours.is_none() => {
                return Err(format!("{at}: `holidays` need `peak_hours`"));
            }
            Some(Holidays::Calendar(name)) if catalogue::calendar(name).is_none() => {
                return Err(format!(
                    "{at}: no built-in holiday calendar {name:?} (built in: {})",
                    catalogue::calendar_names().join(", ")
                ));
            }
            _ => {}
        }
        let (seen, currency) = eras
            .entry(p.name.as_str())
            .or_insert_with(|| (HashSet::new(), p.currency.as_str()));
        if *currency != p.currency {
            return Err(format!(
                "{at}: every era of a price is in one currency ({currency} and {})",
                p.currency
            ));
        }
        if !seen.insert(p.effective_from) {
            return Err(match p.effective_from {
                Some(t) => format!("{at}: two eras start at {t}"),
                None => format!("{at}: two eras without `effective_from`"),
            });
        }
    }
    Ok(())
}

/// The price a deployment is charged at: its own `price`, else the local engine's `free`, a
/// DeepSeek model's built-in schedule, or DeepSeek-V3.2's rates for other providers.
pub fn resolve(
    kind: ProviderKind,
    upstream_model: &str,
    explicit: Option<&str>,
) -> Result<String, String> {
    if let Some(name) = explicit {
        return Ok(name.to_owned());
    }
    match kind {
        ProviderKind::Local => Ok("free".to_owned()),
        ProviderKind::Deepseek => catalogue::deepseek_price(upstream_model)
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "DeepSeek model {upstream_model:?} has no built-in price (known: {}); set `price` on the deployment",
                    catalogue::deepseek_models().join(", ")
                )
            }),
        ProviderKind::Openai | ProviderKind::Openrouter => Ok("deepseek-v3.2".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_prices_parse_exactly() {
        assert_eq!(per_token("0.028"), Ok(28_000));
        assert_eq!(per_token("0.28"), Ok(280_000));
        assert_eq!(per_token("2.19"), Ok(2_190_000));
        assert_eq!(per_token("0.003625"), Ok(3_625));
        assert_eq!(per_token("3"), Ok(3_000_000));
        assert!(per_token("0.0000001").is_err());
        assert!(per_token("abc").is_err());
    }

    #[test]
    fn windows_parse_with_their_edges() {
        assert_eq!(
            Window::parse("09:00-12:00"),
            Ok(Window {
                start: 540,
                end: 720
            })
        );
        assert_eq!(Window::parse("18:00-24:00").unwrap().end, 1440);
        let wrap = Window::parse("22:30-02:00").unwrap();
        assert!(wrap.wraps());
        assert_eq!(Window::parse("00:00-24:00").unwrap().start, 0);
        for bad in [
            "9:00-12:00",
            "09:00-09:00",
            "24:00-01:00",
            "09:00-24:30",
            "25:00-26:00",
            "09:60-10:00",
            "0900-1000",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_are_rfc3339_or_a_date_at_utc_midnight() {
        assert_eq!(
            parse_instant("2026-08-16T16:00:00Z").unwrap(),
            parse_instant("2026-08-17T00:00:00+08:00").unwrap()
        );
        assert_eq!(
            parse_instant("2025-09-29").unwrap(),
            parse_instant("2025-09-29T00:00:00Z").unwrap()
        );
        assert!(parse_instant("next tuesday").is_err());
    }

    fn prices(toml_text: &str) -> Result<Vec<PriceConfig>, String> {
        #[derive(Deserialize)]
        struct File {
            prices: Vec<PriceConfig>,
        }
        let file: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        validate(&file.prices)?;
        Ok(file.prices)
    }

    #[test]
    fn the_issues_example_is_accepted_as_written() {
        let p = prices(
            r#"
[[prices]]
name = "flash"
effective_from = "2026-09-10T00:00:00Z"
cache_hit = "0.006"              # the list rate (peak, where there is an off-peak rate)
cache_miss = "0.30"
output = "1.20"
off_peak = { cache_hit = "0.003", cache_miss = "0.15", output = "0.60" }
peak_hours = { timezone = "Asia/Shanghai", days = ["mon", "tue", "wed", "thu", "fri"], hours = ["09:00-12:00", "14:00-18:00"] }
holidays = "cn"                  # optional: a built-in calendar, or a list of "YYYY-MM-DD"

[[prices]]
name = "flash"                   # a later era of the same price
effective_from = "2027-01-01T00:00:00Z"
cache_hit = "0.005"
cache_miss = "0.25"
output = "1.00"
"#,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].off_peak.unwrap().output, PerToken(600_000));
        assert_eq!(p[0].peak_hours.as_ref().unwrap().hours.len(), 2);
        assert_eq!(p[0].holidays, Some(Holidays::Calendar("cn".into())));
    }

    #[test]
    fn incomplete_or_conflicting_schedules_are_refused() {
        let base = "[[prices]]\nname = \"p\"\ncache_hit = \"0.1\"\ncache_miss = \"0.2\"\noutput = \"0.3\"\n";
        let refused = [
            (
                format!(
                    "{base}off_peak = {{ cache_hit = \"0\", cache_miss = \"0\", output = \"0\" }}\n"
                ),
                "need `peak_hours`",
            ),
            (
                format!("{base}peak_hours = {{ timezone = \"UTC\", hours = [\"09:00-10:00\"] }}\n"),
                "need `off_peak`",
            ),
            (
                format!("{base}holidays = [\"2026-10-01\"]\n"),
                "need `peak_hours`",
            ),
            (
                format!(
                    "{base}off_peak = {{ cache_hit = \"0\", cache_miss = \"0\", output = \"0\" }}\npeak_hours = {{ timezone = \"Mars/Olympus\", hours = [\"09:00-10:00\"] }}\n"
                ),
                "not an IANA time zone",
            ),
            (
                format!(
                    "{base}off_peak = {{ cache_hit = \"0\", cache_miss = \"0\", output = \"0\" }}\npeak_hours = {{ timezone = \"UTC\", hours = [\"09:00-10:00\"] }}\nholidays = \"xx\"\n"
                ),
                "no built-in holiday calendar",
            ),
            (format!("{base}{base}"), "two eras without"),
            (
                format!(
                    "{base}effective_from = \"2026-01-01\"\n{base}effective_from = \"2026-01-01T00:00:00Z\"\n"
                ),
                "two eras start at",
            ),
            (
                format!("{base}effective_from = \"2026-01-01\"\n{base}currency = \"CNY\"\n"),
                "one currency",
            ),
            (
                format!("{base}effective_from = \"soon\"\n"),
                "not an RFC 3339",
            ),
        ];
        for (text, want) in refused {
            let err = prices(&text).unwrap_err();
            assert!(err.contains(want), "{text}\n=> {err}");
        }
    }

    #[test]
    fn deployments_get_the_price_their_upstream_names() {
        use ProviderKind::*;
        assert_eq!(
            resolve(Deepseek, "deepseek-flash", None).unwrap(),
            "deepseek-v4-flash"
        );
        assert_eq!(
            resolve(Deepseek, "deepseek-v4-flash", None).unwrap(),
            "deepseek-v4-flash"
        );
        assert_eq!(
            resolve(Deepseek, "deepseek-v4-pro", None).unwrap(),
            "deepseek-v4-pro"
        );
        assert_eq!(
            resolve(Deepseek, "deepseek-chat", None).unwrap(),
            "deepseek-chat"
        );
        assert_eq!(resolve(Local, "builtin-tiny", None).unwrap(), "free");
        assert_eq!(resolve(Openai, "x", Some("mine")).unwrap(), "mine");
        let err = resolve(Deepseek, "deepseek-v9", None).unwrap_err();
        assert!(err.contains("no built-in price"), "{err}");
    }
}
