//! `[[prices]]`: price tables as the file (or the built-in catalogue) states them, decimal
//! strings per 1M tokens read exactly into integers; [`crate::accounting::pricing`] prices usage
//! with them.

use serde::Deserialize;

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
    /// Checks that every figure is an exact decimal amount.
    pub fn validate(&self) -> Result<(), String> {
        for figure in [&self.cache_hit, &self.cache_miss, &self.output] {
            per_token(figure)?;
        }
        Ok(())
    }
}

/// A built-in price table.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinPrice {
    pub name: &'static str,
    /// USD per 1M tokens.
    pub cache_hit: &'static str,
    pub cache_miss: &'static str,
    pub output: &'static str,
    pub effective_from: &'static str,
}

impl BuiltinPrice {
    pub fn to_config(&self) -> PriceConfig {
        PriceConfig {
            name: self.name.to_owned(),
            currency: usd(),
            cache_hit: self.cache_hit.to_owned(),
            cache_miss: self.cache_miss.to_owned(),
            output: self.output.to_owned(),
            effective_from: Some(self.effective_from.to_owned()),
        }
    }
}

/// DeepSeek's published eras (USD per 1M tokens: hit / miss / output), and `free`.
pub const BUILTIN: &[BuiltinPrice] = &[
    BuiltinPrice {
        name: "deepseek-v3.2",
        cache_hit: "0.028",
        cache_miss: "0.28",
        output: "0.42",
        effective_from: "2025-09-29",
    },
    BuiltinPrice {
        name: "deepseek-v3.1",
        cache_hit: "0.07",
        cache_miss: "0.56",
        output: "1.68",
        effective_from: "2025-09-05",
    },
    BuiltinPrice {
        name: "deepseek-v3",
        cache_hit: "0.07",
        cache_miss: "0.27",
        output: "1.10",
        effective_from: "2024-12-26",
    },
    BuiltinPrice {
        name: "deepseek-r1",
        cache_hit: "0.14",
        cache_miss: "0.55",
        output: "2.19",
        effective_from: "2025-01-20",
    },
    BuiltinPrice {
        name: "free",
        cache_hit: "0",
        cache_miss: "0",
        output: "0",
        effective_from: "1970-01-01",
    },
];

/// Whether `name` is a built-in price table.
pub fn is_builtin(name: &str) -> bool {
    BUILTIN.iter().any(|p| p.name == name)
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
}
