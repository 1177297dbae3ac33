//! Prices as data, money as integers. A rate is picodollars (10^-12 of the currency unit) per
//! token, read exactly from the decimal "per 1M tokens" figures providers publish; a request's
//! cost is an integer sum, never an accumulated float. A price is a [`Schedule`] of dated eras,
//! each flat or with peak and off-peak rates; [`PriceBook`] holds every price by name.

mod book;
mod schedule;

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::accounting::usage::Usage;
use crate::support::config::prices::RatesConfig;

pub use book::{PriceBook, PriceSlot};
pub use schedule::{Applied, Era, Schedule, Tier};

/// Picodollars per token for each kind of token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub output: u64,
}

impl From<RatesConfig> for Rates {
    fn from(c: RatesConfig) -> Self {
        Self {
            cache_hit: c.cache_hit.0,
            cache_miss: c.cache_miss.0,
            output: c.output.0,
        }
    }
}

impl Rates {
    /// Reasoning tokens are output tokens and are billed as such; nothing is counted twice.
    pub fn cost(&self, usage: &Usage) -> Cost {
        Cost {
            cache_hit: usage.cache_hit * self.cache_hit,
            cache_miss: usage.cache_miss * self.cache_miss,
            output: usage.output * self.output,
        }
    }

    /// What `usage`'s cache hits saved against paying the miss rate for the same tokens.
    pub fn savings(&self, usage: &Usage) -> u64 {
        usage.cache_hit * self.cache_miss.saturating_sub(self.cache_hit)
    }
}

/// A request's cost in picodollars, total and by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub output: u64,
}

impl Cost {
    pub fn total(&self) -> u64 {
        self.cache_hit + self.cache_miss + self.output
    }

    /// The same split, scaled to sum to `total` (a provider's own figure). A cost of zero is
    /// split by `usage`'s token counts instead; the rounding remainder goes to output.
    pub fn scaled_to(&self, total: u64, usage: &Usage) -> Self {
        let weights = match self.total() {
            0 => [usage.cache_hit, usage.cache_miss, usage.output],
            _ => [self.cache_hit, self.cache_miss, self.output],
        };
        let sum: u64 = weights.iter().sum();
        if sum == 0 {
            return Self {
                output: total,
                ..Self::default()
            };
        }
        let part = |w: u64| (u128::from(total) * u128::from(w) / u128::from(sum)) as u64;
        let (cache_hit, cache_miss) = (part(weights[0]), part(weights[1]));
        Self {
            cache_hit,
            cache_miss,
            output: total - cache_hit - cache_miss,
        }
    }
}

/// What a request is charged and how it was priced: the record's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// What the request costs: the provider's own figure where it reports one and is trusted
    /// (OpenRouter), else the schedule's.
    pub cost: Cost,
    pub currency: Arc<str>,
    /// The price's name, the era's start (`None`: from the beginning) and the tier in force.
    pub price: Arc<str>,
    pub era: Option<jiff::Timestamp>,
    pub tier: Tier,
    /// The same usage at the era's off-peak rates (its list rates when it has none).
    pub off_peak: Cost,
    /// What cache hits saved at the rates applied.
    pub savings: u64,
    /// The schedule's figure, when the provider's replaced it.
    pub computed: Option<Cost>,
}

impl Charge {
    /// A provider's figure that differs from the schedule's by more than 1% (and 1 nanodollar):
    /// a price table out of date, or a provider billing otherwise.
    pub fn disagrees(&self) -> bool {
        self.computed.is_some_and(|c| {
            let (ours, theirs) = (c.total(), self.cost.total());
            ours.abs_diff(theirs) > (ours / 100).max(1_000)
        })
    }

    pub fn priced(&self) -> Priced {
        Priced {
            cost: self.cost,
            currency: self.currency.clone(),
        }
    }
}

/// A cost with the currency it is in: what a surface shows (`usage.dsgw_cost`, `x-dsgw-cost*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub cost: Cost,
    pub currency: Arc<str>,
}

impl Priced {
    pub fn to_json(&self) -> serde_json::Value {
        self.cost.to_json(&self.currency)
    }

    /// [`Priced::to_json`] as text.
    pub fn json_text(&self) -> String {
        let mut text = String::with_capacity(128);
        self.cost.write_json(&self.currency, &mut text);
        text
    }

    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        self.cost.headers(&self.currency)
    }
}

/// Formats picodollars as a decimal amount with 12 places, trailing zeros removed.
pub struct Money(pub u64);

impl Money {
    /// The amount's text, written by hand into `buf`: an answer formats nine amounts (headers,
    /// usage, the log line), and `format!` with padding cost ~1.5 K instructions each.
    pub fn text(self, buf: &mut [u8; 24]) -> &str {
        const PICO: u64 = 1_000_000_000_000;
        // u64::MAX picodollars is 18446744.073709551615: 8 + 1 + 12 bytes.
        let mut digits = itoa::Buffer::new();
        let whole = digits.format(self.0 / PICO).as_bytes();
        buf[..whole.len()].copy_from_slice(whole);
        let mut len = whole.len();
        let frac = self.0 % PICO;
        if frac != 0 {
            // Twelve places with their leading zeros: the digits of 10^12 + frac after its 1.
            let places = &digits.format(PICO + frac).as_bytes()[1..];
            let places = &places[..places.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1)];
            buf[len] = b'.';
            buf[len + 1..len + 1 + places.len()].copy_from_slice(places);
            len += 1 + places.len();
        }
        std::str::from_utf8(&buf[..len]).expect("ASCII digits")
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Money(self.0).text(&mut [0; 24]))
    }
}

/// A provider's cost figure in currency units (`0.000142`, `1.42e-4`) -> picodollars, rounded
/// to the nearest.
pub fn parse_amount(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.contains(['e', 'E']) {
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
        {
            let whole: u64 = whole.parse().ok()?;
            let mut digits: Vec<u8> = frac.bytes().map(|b| b - b'0').collect();
            digits.resize(13, 0);
            let mut pico = digits[..12]
                .iter()
                .fold(0u64, |acc, d| acc * 10 + u64::from(*d));
            if digits[12] >= 5 {
                pico += 1;
            }
            return whole.checked_mul(1_000_000_000_000)?.checked_add(pico);
        }
    }
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * 1e12).round() as u64)
}

impl Cost {
    /// The `usage.dsgw_cost` object: exact decimal strings (OpenAI SDKs keep unknown fields).
    pub fn to_json(&self, currency: &str) -> serde_json::Value {
        let mut text = String::new();
        self.write_json(currency, &mut text);
        serde_json::from_str(&text).expect("the cost object is JSON")
    }

    /// [`Cost::to_json`]'s text, written straight into `out`: every answer carries it, and a
    /// `json!` map with its five keys cost a dozen allocations.
    pub fn write_json(&self, currency: &str, out: &mut String) {
        out.push_str("{\"currency\":");
        out.push_str(&serde_json::to_string(currency).expect("a string serialises"));
        let parts = [
            ("total", self.total()),
            ("cache_hit", self.cache_hit),
            ("cache_miss", self.cache_miss),
            ("output", self.output),
        ];
        let mut buf = [0; 24];
        for (name, pico) in parts {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":\"");
            out.push_str(Money(pico).text(&mut buf));
            out.push('"');
        }
        out.push('}');
    }

    /// Response headers with the total and its parts (a currency that is no header value is
    /// left out).
    pub fn headers(&self, currency: &str) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        let amount = |pico: u64| HeaderValue::from_str(Money(pico).text(&mut [0; 24])).ok();
        [
            ("x-dsgw-cost", amount(self.total())),
            ("x-dsgw-cost-cache-hit", amount(self.cache_hit)),
            ("x-dsgw-cost-cache-miss", amount(self.cache_miss)),
            ("x-dsgw-cost-output", amount(self.output)),
            ("x-dsgw-cost-currency", HeaderValue::from_str(currency).ok()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((HeaderName::from_static(name), value?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `Money` must print: twelve places, trailing zeros trimmed.
    fn reference(pico: u64) -> String {
        let (whole, frac) = (pico / 1_000_000_000_000, pico % 1_000_000_000_000);
        if frac == 0 {
            return whole.to_string();
        }
        format!("{whole}.{}", format!("{frac:012}").trim_end_matches('0'))
    }

    proptest! {
        #[test]
        fn money_prints_as_the_reference(pico in any::<u64>(), small in 0u64..10_000_000_000_000) {
            prop_assert_eq!(Money(pico).to_string(), reference(pico));
            prop_assert_eq!(Money(small).to_string(), reference(small));
        }
    }

    #[test]
    fn the_cost_object_is_written_as_serde_json_would_write_it() {
        let cost = Cost {
            cache_hit: 1,
            cache_miss: 2_500_000_000_000,
            output: 70_000_000,
        };
        for currency in ["USD", "CN\"Y\\"] {
            let reference = serde_json::json!({
                "currency": currency,
                "total": Money(cost.total()).to_string(),
                "cache_hit": Money(cost.cache_hit).to_string(),
                "cache_miss": Money(cost.cache_miss).to_string(),
                "output": Money(cost.output).to_string(),
            });
            let mut text = String::new();
            cost.write_json(currency, &mut text);
            assert_eq!(text, reference.to_string());
            assert_eq!(cost.to_json(currency), reference);
        }
    }

    #[test]
    fn cost_headers_carry_each_amount_and_leave_out_a_currency_no_header_can_hold() {
        let cost = Cost {
            cache_hit: u64::MAX / 4,
            cache_miss: 2_500_000_000_000,
            output: 0,
        };
        let headers = |currency| {
            cost.headers(currency)
                .map(|(name, value)| format!("{name}={}", value.to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        let amounts = [
            format!("x-dsgw-cost={}", Money(cost.total())),
            format!("x-dsgw-cost-cache-hit={}", Money(cost.cache_hit)),
            "x-dsgw-cost-cache-miss=2.5".to_owned(),
            "x-dsgw-cost-output=0".to_owned(),
        ];
        let mut with_usd = amounts.to_vec();
        with_usd.push("x-dsgw-cost-currency=USD".to_owned());
        assert_eq!(headers("USD"), with_usd);
        assert_eq!(headers("US\nD"), amounts);
    }

    #[test]
    fn money_at_the_edges() {
        for pico in [
            0,
            1,
            10,
            1_000_000_000_000,
            1_000_000_000_001,
            999_999_999_999,
            u64::MAX,
        ] {
            assert_eq!(Money(pico).to_string(), reference(pico));
        }
        assert_eq!(Money(u64::MAX).to_string(), "18446744.073709551615");
        assert_eq!(Money(1).to_string(), "0.000000000001");
    }

    fn usage(cache_hit: u64, cache_miss: u64, output: u64) -> Usage {
        Usage {
            cache_hit,
            cache_miss,
            output,
            reasoning: 0,
            estimated: false,
        }
    }

    #[test]
    fn cost_is_exact_to_the_picodollar_and_bills_reasoning_as_output() {
        let rates = Rates {
            cache_hit: 28_000,
            cache_miss: 280_000,
            output: 420_000,
        };
        let u = Usage {
            reasoning: 300,
            ..usage(6400, 1000, 500)
        };
        let c = rates.cost(&u);
        // 6400 * 0.028/1M + 1000 * 0.28/1M + 500 * 0.42/1M USD
        assert_eq!(c.cache_hit, 179_200_000);
        assert_eq!(c.cache_miss, 280_000_000);
        assert_eq!(c.output, 210_000_000);
        assert_eq!(Money(c.total()).to_string(), "0.0006692");
        assert_eq!(Money(0).to_string(), "0");
        assert_eq!(Money(1_500_000_000_000).to_string(), "1.5");
        assert_eq!(rates.savings(&u), 6400 * 252_000);
    }

    #[test]
    fn provider_amounts_parse_exactly_or_round_to_the_picodollar() {
        assert_eq!(parse_amount("0.000142"), Some(142_000_000));
        assert_eq!(parse_amount("1.5"), Some(1_500_000_000_000));
        assert_eq!(parse_amount("0.0000000000015"), Some(2));
        assert_eq!(parse_amount("1.42e-4"), Some(142_000_000));
        assert_eq!(parse_amount("0"), Some(0));
        assert_eq!(parse_amount("-1"), None);
        assert_eq!(parse_amount("\"x\""), None);
    }

    #[test]
    fn a_providers_total_keeps_the_split_and_sums_exactly() {
        let c = Cost {
            cache_hit: 100,
            cache_miss: 300,
            output: 600,
        };
        let s = c.scaled_to(2_001, &usage(1, 1, 1));
        assert_eq!(s.total(), 2_001);
        assert_eq!((s.cache_hit, s.cache_miss), (200, 600));
        let zero = Cost::default().scaled_to(30, &usage(1, 1, 1));
        assert_eq!((zero.cache_hit, zero.cache_miss, zero.output), (10, 10, 10));
        assert_eq!(Cost::default().scaled_to(7, &usage(0, 0, 0)).output, 7);
    }
}
