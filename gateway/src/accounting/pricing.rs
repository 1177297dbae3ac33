//! Prices as data, money as integers. A price is picodollars (10^-12 of the currency unit) per
//! token, read exactly from the decimal "per 1M tokens" figures providers publish; a request's
//! cost is an integer sum, never an accumulated float.

use std::fmt;

use serde::Deserialize;

use crate::accounting::usage::Usage;

/// Picodollars per token for each kind of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub name: String,
    pub currency: String,
    /// `YYYY-MM-DD` from which this price applies (informational for built-ins).
    pub effective_from: Option<String>,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub output: u64,
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
}

/// A cost with the currency it is in: what a surface shows (`usage.dsgw_cost`, `x-dsgw-cost*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub cost: Cost,
    pub currency: String,
}

impl Priced {
    pub fn to_json(&self) -> serde_json::Value {
        self.cost.to_json(&self.currency)
    }

    pub fn headers(&self) -> [(&'static str, String); 5] {
        self.cost.headers(&self.currency)
    }
}

/// Formats picodollars as a decimal amount with 12 places, trailing zeros removed.
pub struct Money(pub u64);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000_000_000;
        let frac = self.0 % 1_000_000_000_000;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Cost {
    /// The `usage.dsgw_cost` object: exact decimal strings (OpenAI SDKs keep unknown fields).
    pub fn to_json(&self, currency: &str) -> serde_json::Value {
        serde_json::json!({
            "currency": currency,
            "total": Money(self.total()).to_string(),
            "cache_hit": Money(self.cache_hit).to_string(),
            "cache_miss": Money(self.cache_miss).to_string(),
            "output": Money(self.output).to_string(),
        })
    }

    /// Response headers with the total and its parts.
    pub fn headers(&self, currency: &str) -> [(&'static str, String); 5] {
        [
            ("x-dsgw-cost", Money(self.total()).to_string()),
            ("x-dsgw-cost-cache-hit", Money(self.cache_hit).to_string()),
            ("x-dsgw-cost-cache-miss", Money(self.cache_miss).to_string()),
            ("x-dsgw-cost-output", Money(self.output).to_string()),
            ("x-dsgw-cost-currency", currency.to_owned()),
        ]
    }
}

impl Price {
    /// The cost of `usage`, with its currency.
    pub fn priced(&self, usage: &Usage) -> Priced {
        Priced {
            cost: self.cost(usage),
            currency: self.currency.clone(),
        }
    }

    /// Reasoning tokens are output tokens and are billed as such; nothing is counted twice.
    pub fn cost(&self, usage: &Usage) -> Cost {
        Cost {
            cache_hit: usage.cache_hit * self.cache_hit,
            cache_miss: usage.cache_miss * self.cache_miss,
            output: usage.output * self.output,
        }
    }

    /// DeepSeek's published eras (USD per 1M tokens: hit / miss / output).
    pub fn builtin(name: &str) -> Option<Self> {
        let (hit, miss, output, from) = match name {
            "deepseek-v3.2" => ("0.028", "0.28", "0.42", "2025-09-29"),
            "deepseek-v3.1" => ("0.07", "0.56", "1.68", "2025-09-05"),
            "deepseek-v3" => ("0.07", "0.27", "1.10", "2024-12-26"),
            "deepseek-r1" => ("0.14", "0.55", "2.19", "2025-01-20"),
            "free" => ("0", "0", "0", "1970-01-01"),
            _ => return None,
        };
        Some(Self {
            name: name.to_owned(),
            currency: "USD".to_owned(),
            effective_from: Some(from.to_owned()),
            cache_hit: per_token(hit).expect("built-in prices parse"),
            cache_miss: per_token(miss).expect("built-in prices parse"),
            output: per_token(output).expect("built-in prices parse"),
        })
    }
}

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

/// A `[[prices]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub name: String,
    #[serde(default = "usd")]
    pub currency: String,
    /// Per 1M tokens, as decimal strings (`"0.028"`).
    pub cache_hit: String,
    pub cache_miss: String,
    pub output: String,
    #[serde(default)]
    pub effective_from: Option<String>,
}

fn usd() -> String {
    "USD".to_owned()
}

impl PriceConfig {
    pub fn to_price(&self) -> Result<Price, String> {
        Ok(Price {
            name: self.name.clone(),
            currency: self.currency.clone(),
            effective_from: self.effective_from.clone(),
            cache_hit: per_token(&self.cache_hit)?,
            cache_miss: per_token(&self.cache_miss)?,
            output: per_token(&self.output)?,
        })
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
        assert_eq!(per_token("3"), Ok(3_000_000));
        assert!(per_token("0.0000001").is_err());
        assert!(per_token("abc").is_err());
    }

    #[test]
    fn cost_is_exact_to_the_picodollar_and_bills_reasoning_as_output() {
        let p = Price::builtin("deepseek-v3.2").unwrap();
        let u = Usage {
            cache_hit: 6400,
            cache_miss: 1000,
            output: 500,
            reasoning: 300,
            estimated: false,
        };
        let c = p.cost(&u);
        // 6400 * 0.028/1M + 1000 * 0.28/1M + 500 * 0.42/1M USD
        assert_eq!(c.cache_hit, 179_200_000);
        assert_eq!(c.cache_miss, 280_000_000);
        assert_eq!(c.output, 210_000_000);
        assert_eq!(Money(c.total()).to_string(), "0.0006692");
        assert_eq!(Money(0).to_string(), "0");
        assert_eq!(Money(1_500_000_000_000).to_string(), "1.5");
    }
}
