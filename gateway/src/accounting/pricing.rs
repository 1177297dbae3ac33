//! Prices as data, money as integers. A price is picodollars (10^-12 of the currency unit) per
//! token, read exactly from the decimal "per 1M tokens" figures providers publish; a request's
//! cost is an integer sum, never an accumulated float.

use std::fmt;

use http::HeaderName;

use crate::accounting::usage::Usage;
use crate::support::config::prices::{BUILTIN, PriceConfig, per_token};

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

    pub fn headers(&self) -> [(HeaderName, String); 5] {
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
    pub fn headers(&self, currency: &str) -> [(HeaderName, String); 5] {
        let name = HeaderName::from_static;
        [
            (name("x-dsgw-cost"), Money(self.total()).to_string()),
            (
                name("x-dsgw-cost-cache-hit"),
                Money(self.cache_hit).to_string(),
            ),
            (
                name("x-dsgw-cost-cache-miss"),
                Money(self.cache_miss).to_string(),
            ),
            (name("x-dsgw-cost-output"), Money(self.output).to_string()),
            (name("x-dsgw-cost-currency"), currency.to_owned()),
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

    /// A built-in price table ([`BUILTIN`]).
    pub fn builtin(name: &str) -> Option<Self> {
        BUILTIN
            .iter()
            .find(|p| p.name == name)
            .map(|p| Self::from_config(&p.to_config()).expect("built-in prices parse"))
    }

    /// A `[[prices]]` entry, its decimal figures read exactly.
    pub fn from_config(c: &PriceConfig) -> Result<Self, String> {
        Ok(Self {
            name: c.name.clone(),
            currency: c.currency.clone(),
            effective_from: c.effective_from.clone(),
            cache_hit: per_token(&c.cache_hit)?,
            cache_miss: per_token(&c.cache_miss)?,
            output: per_token(&c.output)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
