//! A price as a schedule: dated eras, each with list rates and, optionally, off-peak rates that
//! apply outside local peak hours and all day on holidays. A request is priced at the era and
//! tier in force when the gateway sent it to the provider.

use std::sync::Arc;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};

use super::{Charge, Rates};
use crate::accounting::usage::Usage;
use crate::support::config::prices::{Holidays, PeakHours, PriceConfig, catalogue};

/// Which rates applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The era has one set of rates.
    Flat,
    Peak,
    OffPeak,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flat => "flat",
            Self::Peak => "peak",
            Self::OffPeak => "off_peak",
        }
    }
}

/// One era of a price.
#[derive(Debug, Clone)]
pub struct Era {
    /// When it starts; `None`: from the beginning (the first era also prices anything before
    /// its start).
    pub from: Option<Timestamp>,
    /// The list rates: peak rates where there are off-peak ones.
    pub list: Rates,
    off_peak: Option<OffPeak>,
}

#[derive(Debug, Clone)]
struct OffPeak {
    rates: Rates,
    hours: PeakHours,
    /// Sorted.
    holidays: Vec<Date>,
}

impl OffPeak {
    fn holiday(&self, date: Date) -> bool {
        self.holidays.binary_search(&date).is_ok()
    }

    /// Whether peak windows start on `date`: a listed weekday that is not a holiday.
    fn peak_day(&self, date: Date) -> bool {
        self.hours.has_day(date.weekday()) && !self.holiday(date)
    }

    fn is_peak(&self, t: Timestamp) -> bool {
        let local = t.to_zoned_datetime(self.hours.timezone.tz.clone());
        let date = local.date();
        if self.holiday(date) {
            return false;
        }
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let today = self.peak_day(date);
        // A window past midnight belongs to the day it started on.
        let yesterday = || date.yesterday().is_ok_and(|d| self.peak_day(d));
        self.hours.hours.iter().any(|w| {
            if w.wraps() {
                (today && minute >= w.start) || (minute < w.end && yesterday())
            } else {
                today && w.start <= minute && minute < w.end
            }
        })
    }

    /// Instants around `t` where the tier may change: every window's edges and every local
    /// midnight, from the day before to `days` days after.
    fn edges(&self, t: Timestamp, days: i64) -> Vec<Timestamp> {
        let tz = &self.hours.timezone.tz;
        let first = t.to_zoned_datetime(tz.clone()).date();
        let at = |date: Date, minute: u16| -> Option<Timestamp> {
            let (date, minute) = if minute == 1440 {
                (date.tomorrow().ok()?, 0)
            } else {
                (date, minute)
            };
            let time = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
            time.to_zoned_datetime(tz.clone())
                .ok()
                .map(|z| z.timestamp())
        };
        let mut edges = Vec::new();
        for offset in -1..=days {
            let Ok(date) = first.checked_add(offset.days()) else {
                continue;
            };
            edges.extend(at(date, 0));
            for w in &self.hours.hours {
                edges.extend(at(date, w.start));
                let end_day = if w.wraps() {
                    date.tomorrow().ok()
                } else {
                    Some(date)
                };
                edges.extend(end_day.and_then(|d| at(d, w.end)));
            }
        }
        edges.sort();
        edges.dedup();
        edges
    }
}

impl Era {
    pub fn tier_at(&self, t: Timestamp) -> Tier {
        match &self.off_peak {
            None => Tier::Flat,
            Some(o) if o.is_peak(t) => Tier::Peak,
            Some(_) => Tier::OffPeak,
        }
    }

    pub fn rates(&self, tier: Tier) -> Rates {
        match (tier, &self.off_peak) {
            (Tier::OffPeak, Some(o)) => o.rates,
            _ => self.list,
        }
    }

    /// The off-peak rates, or the list rates of a flat era.
    pub fn off_peak_rates(&self) -> Rates {
        self.rates(Tier::OffPeak)
    }

    pub fn peak_hours(&self) -> Option<&PeakHours> {
        self.off_peak.as_ref().map(|o| &o.hours)
    }
}

/// A price: its eras in order.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Shared with every charge and record priced by it.
    pub name: Arc<str>,
    pub currency: Arc<str>,
    eras: Vec<Era>,
}

/// The era, tier and rates in force at an instant.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub era: &'a Era,
    pub tier: Tier,
    pub rates: Rates,
}

impl Schedule {
    /// The schedule of `entries`, the validated eras of one price.
    pub fn build(entries: &[&PriceConfig]) -> Self {
        let mut eras: Vec<Era> = entries.iter().map(|p| era(p)).collect();
        eras.sort_by_key(|e| e.from);
        Self {
            name: entries[0].name.as_str().into(),
            currency: entries[0].currency.as_str().into(),
            eras,
        }
    }

    pub fn eras(&self) -> &[Era] {
        &self.eras
    }

    fn era_at(&self, t: Timestamp) -> &Era {
        self.eras
            .iter()
            .rev()
            .find(|e| e.from.is_none_or(|from| from <= t))
            .unwrap_or(&self.eras[0])
    }

    pub fn at(&self, t: Timestamp) -> Applied<'_> {
        let era = self.era_at(t);
        let tier = era.tier_at(t);
        Applied {
            era,
            tier,
            rates: era.rates(tier),
        }
    }

    /// When the rates in force at `t` next change, and what they change to: a tier boundary
    /// within the era (looking up to 40 days ahead) or the next era's start.
    pub fn next_change(&self, t: Timestamp) -> Option<(Timestamp, Applied<'_>)> {
        let now = self.at(t);
        let next_era = self
            .eras
            .iter()
            .filter_map(|e| e.from)
            .find(|from| *from > t);
        if let Some(o) = &now.era.off_peak {
            let change = o
                .edges(t, 40)
                .into_iter()
                .filter(|e| *e > t && next_era.is_none_or(|n| *e < n))
                .find(|e| now.era.tier_at(*e) != now.tier);
            if let Some(at) = change {
                return Some((at, self.at(at)));
            }
        }
        next_era.map(|at| (at, self.at(at)))
    }

    /// What `usage` is charged when sent at `sent_at`; `provider_cost` (picodollars), when
    /// given, is the truth and the schedule's figure is kept beside it.
    pub fn charge(&self, usage: &Usage, sent_at: Timestamp, provider_cost: Option<u64>) -> Charge {
        let applied = self.at(sent_at);
        let computed = applied.rates.cost(usage);
        let (cost, computed) = match provider_cost {
            Some(total) => (computed.scaled_to(total, usage), Some(computed)),
            None => (computed, None),
        };
        Charge {
            cost,
            currency: self.currency.clone(),
            price: self.name.clone(),
            era: applied.era.from,
            tier: applied.tier,
            off_peak: applied.era.off_peak_rates().cost(usage),
            savings: applied.rates.savings(usage),
            computed,
        }
    }
}

fn era(p: &PriceConfig) -> Era {
    let off_peak = match (&p.off_peak, &p.peak_hours) {
        (Some(rates), Some(hours)) => {
            let mut holidays = match &p.holidays {
                None => Vec::new(),
                Some(Holidays::Dates(d)) => d.clone(),
                Some(Holidays::Calendar(name)) => catalogue::calendar(name)
                    .expect("validated calendar name")
                    .to_vec(),
            };
            holidays.sort();
            Some(OffPeak {
                rates: (*rates).into(),
                hours: hours.clone(),
                holidays,
            })
        }
        _ => None,
    };
    Era {
        from: p.effective_from,
        list: p.list().into(),
        off_peak,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::support::config::prices::validate;

    fn schedule(toml_text: &str) -> Schedule {
        #[derive(serde::Deserialize)]
        struct File {
            prices: Vec<PriceConfig>,
        }
        let file: File = toml::from_str(toml_text).unwrap();
        validate(&file.prices).unwrap();
        Schedule::build(&file.prices.iter().collect::<Vec<_>>())
    }

    /// The V4-era Flash schedule as DeepSeek publishes it, and a later era.
    const FLASH: &str = r#"
[[prices]]
name = "flash"
effective_from = "2026-09-10T00:00:00Z"
cache_hit = "0.006"
cache_miss = "0.30"
output = "1.20"
off_peak = { cache_hit = "0.003", cache_miss = "0.15", output = "0.60" }
peak_hours = { timezone = "Asia/Shanghai", days = ["mon", "tue", "wed", "thu", "fri"], hours = ["09:00-12:00", "14:00-18:00"] }
holidays = "cn"

[[prices]]
name = "flash"
effective_from = "2027-01-01T00:00:00Z"
cache_hit = "0.005"
cache_miss = "0.25"
output = "1.00"
"#;

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn tier(s: &Schedule, t: &str) -> Tier {
        s.at(at(t)).tier
    }

    #[test]
    fn window_edges_start_inclusive_end_exclusive() {
        let s = schedule(FLASH);
        // Tuesday 2026-12-01 in Beijing (UTC+8): 09:00 local is 01:00 UTC.
        assert_eq!(tier(&s, "2026-12-01T00:59:59Z"), Tier::OffPeak);
        assert_eq!(tier(&s, "2026-12-01T01:00:00Z"), Tier::Peak);
        assert_eq!(tier(&s, "2026-12-01T03:59:59Z"), Tier::Peak);
        assert_eq!(tier(&s, "2026-12-01T04:00:00Z"), Tier::OffPeak); // 12:00 local
        assert_eq!(tier(&s, "2026-12-01T06:00:00Z"), Tier::Peak); // 14:00 local
        assert_eq!(tier(&s, "2026-12-01T10:00:00Z"), Tier::OffPeak); // 18:00 local
        let a = s.at(at("2026-12-01T02:00:00Z"));
        assert_eq!(a.rates.cache_miss, 300_000);
        let b = s.at(at("2026-12-01T12:00:00Z"));
        assert_eq!(b.rates.cache_miss, 150_000);
    }

    #[test]
    fn the_beijing_day_decides_not_the_utc_day() {
        let s = schedule(FLASH);
        // Friday 2026-12-04 23:30 UTC is Saturday 07:30 in Beijing; Saturday's windows
        // never open: still off-peak at Saturday 09:30 local (Saturday 01:30 UTC).
        assert_eq!(tier(&s, "2026-12-05T01:30:00Z"), Tier::OffPeak);
        // Sunday 2026-12-06 17:30 UTC is Monday 01:30 Beijing; Monday 09:30 Beijing is Monday
        // 01:30 UTC, peak although the UTC clock says 01:30.
        assert_eq!(tier(&s, "2026-12-07T01:30:00Z"), Tier::Peak);
        // A Friday afternoon in UTC that is already Saturday in Beijing: off-peak.
        assert_eq!(tier(&s, "2026-12-04T16:30:00Z"), Tier::OffPeak);
    }

    #[test]
    fn holidays_are_off_peak_all_day() {
        let s = schedule(FLASH);
        // Thursday 2026-10-01 (National Day), 10:00 Beijing.
        assert_eq!(tier(&s, "2026-10-01T02:00:00Z"), Tier::OffPeak);
        // Thursday 2026-10-08, the first working day after it.
        assert_eq!(tier(&s, "2026-10-08T02:00:00Z"), Tier::Peak);
        let dates = schedule(&FLASH.replace("holidays = \"cn\"", "holidays = [\"2026-12-01\"]"));
        assert_eq!(tier(&dates, "2026-12-01T02:00:00Z"), Tier::OffPeak);
        assert_eq!(tier(&dates, "2026-10-01T02:00:00Z"), Tier::Peak);
    }

    #[test]
    fn a_window_across_midnight_belongs_to_its_start_day() {
        let s = schedule(
            r#"
[[prices]]
name = "night"
cache_hit = "1"
cache_miss = "2"
output = "3"
off_peak = { cache_hit = "0.5", cache_miss = "1", output = "1.5" }
peak_hours = { timezone = "UTC", days = ["fri"], hours = ["22:00-02:00"] }
"#,
        );
        // 2026-12-04 is a Friday.
        assert_eq!(tier(&s, "2026-12-04T21:59:59Z"), Tier::OffPeak);
        assert_eq!(tier(&s, "2026-12-04T22:00:00Z"), Tier::Peak);
        assert_eq!(tier(&s, "2026-12-05T01:59:59Z"), Tier::Peak); // Saturday, from Friday's window
        assert_eq!(tier(&s, "2026-12-05T02:00:00Z"), Tier::OffPeak);
        assert_eq!(tier(&s, "2026-12-05T22:30:00Z"), Tier::OffPeak); // Saturday's own: none
        assert_eq!(tier(&s, "2026-12-04T01:00:00Z"), Tier::OffPeak); // Thursday's: none
        // 24:00 closes a window at the next midnight.
        let late = schedule(&s_text_with("20:00-24:00"));
        assert_eq!(tier(&late, "2026-12-04T23:59:59Z"), Tier::Peak);
        assert_eq!(tier(&late, "2026-12-05T00:00:00Z"), Tier::OffPeak);
    }

    fn s_text_with(window: &str) -> String {
        format!(
            "[[prices]]\nname = \"n\"\ncache_hit = \"1\"\ncache_miss = \"2\"\noutput = \"3\"\noff_peak = {{ cache_hit = \"0.5\", cache_miss = \"1\", output = \"1.5\" }}\npeak_hours = {{ timezone = \"UTC\", days = [\"fri\"], hours = [\"{window}\"] }}\n"
        )
    }

    #[test]
    fn eras_switch_at_their_start_and_the_first_covers_what_came_before() {
        let s = schedule(FLASH);
        assert_eq!(
            s.at(at("2026-12-31T23:59:59Z")).era.from,
            Some(at("2026-09-10T00:00:00Z"))
        );
        let later = s.at(at("2027-01-01T00:00:00Z"));
        assert_eq!(later.era.from, Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(later.tier, Tier::Flat, "a price with no off-peak rates");
        assert_eq!(later.rates.output, 1_000_000);
        assert_eq!(later.era.off_peak_rates(), later.rates);
        assert_eq!(
            s.at(at("2020-01-01T00:00:00Z")).era.from,
            Some(at("2026-09-10T00:00:00Z"))
        );
    }

    #[test]
    fn the_next_change_is_the_next_tier_edge_or_era() {
        let s = schedule(FLASH);
        // Friday 2026-12-04 11:00 Beijing: peak until 12:00.
        let (when, next) = s.next_change(at("2026-12-04T03:00:00Z")).unwrap();
        assert_eq!(when, at("2026-12-04T04:00:00Z"));
        assert_eq!(next.tier, Tier::OffPeak);
        // Friday 19:00 Beijing: off-peak over the weekend, until Monday 09:00.
        let (when, next) = s.next_change(at("2026-12-04T11:00:00Z")).unwrap();
        assert_eq!(when, at("2026-12-07T01:00:00Z"));
        assert_eq!(next.tier, Tier::Peak);
        // The last off-peak stretch of the era ends at the next era.
        let (when, next) = s.next_change(at("2026-12-31T12:00:00Z")).unwrap();
        assert_eq!(when, at("2027-01-01T00:00:00Z"));
        assert_eq!(next.tier, Tier::Flat);
        assert!(s.next_change(at("2027-02-01T00:00:00Z")).is_none());
    }

    #[test]
    fn the_catalogue_prices_todays_flash_and_its_history() {
        let book = crate::accounting::pricing::PriceBook::new([]);
        let flash = book.get("deepseek-v4-flash").unwrap();
        // Tuesday 2026-12-01 10:00 Beijing: today's peak rates.
        let now = flash.at(at("2026-12-01T02:00:00Z"));
        assert_eq!((now.tier, now.rates.output), (Tier::Peak, 1_200_000));
        // The flat era of May 2026.
        let may = flash.at(at("2026-05-12T02:00:00Z"));
        assert_eq!((may.tier, may.rates.cache_hit), (Tier::Flat, 2_800));
        // Before 2026-08-23 weekends still had peak hours; after, not.
        assert_eq!(flash.at(at("2026-08-22T02:00:00Z")).tier, Tier::Peak);
        assert_eq!(flash.at(at("2026-08-29T02:00:00Z")).tier, Tier::OffPeak);
        let chat = book.get("deepseek-chat").unwrap();
        // V3 off-peak: 00:30-08:30 Beijing every day, 2025-03.
        assert_eq!(chat.at(at("2025-03-01T17:00:00Z")).tier, Tier::OffPeak);
        assert_eq!(chat.at(at("2025-03-01T01:00:00Z")).tier, Tier::Peak);
        assert_eq!(
            chat.at(at("2025-10-01T01:00:00Z")).rates.cache_miss,
            280_000
        );
    }

    proptest! {
        /// Cost is linear in tokens: however usage is split across requests priced at the same
        /// rates, the parts and the total sum to the cost of the whole.
        #[test]
        fn splitting_usage_never_changes_the_total(
            parts in proptest::collection::vec((0u64..2_000_000, 0u64..2_000_000, 0u64..500_000), 1..20),
            second in 0i64..(400 * 86_400),
        ) {
            let s = schedule(FLASH);
            let t = at("2026-09-10T00:00:00Z") + jiff::SignedDuration::from_secs(second);
            let whole = parts.iter().fold(Usage::default(), |mut u, (h, m, o)| {
                u.cache_hit += h;
                u.cache_miss += m;
                u.output += o;
                u
            });
            let (mut hit, mut miss, mut out, mut savings, mut off) = (0, 0, 0, 0, 0);
            for (h, m, o) in &parts {
                let u = Usage { cache_hit: *h, cache_miss: *m, output: *o, ..Usage::default() };
                let c = s.charge(&u, t, None);
                hit += c.cost.cache_hit;
                miss += c.cost.cache_miss;
                out += c.cost.output;
                savings += c.savings;
                off += c.off_peak.total();
            }
            let c = s.charge(&whole, t, None);
            prop_assert_eq!((hit, miss, out), (c.cost.cache_hit, c.cost.cache_miss, c.cost.output));
            prop_assert_eq!(savings, c.savings);
            prop_assert_eq!(off, c.off_peak.total());
            prop_assert!(c.off_peak.total() <= c.cost.total());
        }
    }
}
