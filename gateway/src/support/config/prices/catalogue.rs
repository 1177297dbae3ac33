//! The built-in catalogue (`catalogue.toml`): DeepSeek's published eras, which schedule
//! prices each DeepSeek model name, and the holiday calendars. It is data, parsed once with the
//! parser operators' `[[prices]]` go through.

use std::sync::OnceLock;

use jiff::civil::Date;
use serde::Deserialize;

use super::{Holidays, PriceConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    calendars: Vec<Calendar>,
    models: Vec<ModelPrice>,
    prices: Vec<PriceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Calendar {
    name: String,
    dates: Holidays,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPrice {
    model: String,
    price: String,
}

struct Parsed {
    calendars: Vec<(String, Vec<Date>)>,
    models: Vec<ModelPrice>,
    prices: Vec<PriceConfig>,
}

fn parsed() -> &'static Parsed {
    static CATALOGUE: OnceLock<Parsed> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let c: Catalogue =
            toml::from_str(include_str!("catalogue.toml")).expect("the built-in catalogue parses");
        let calendars = c
            .calendars
            .into_iter()
            .map(|cal| match cal.dates {
                Holidays::Dates(mut dates) => {
                    dates.sort();
                    (cal.name, dates)
                }
                Holidays::Calendar(_) => panic!("a built-in calendar lists its dates"),
            })
            .collect();
        Parsed {
            calendars,
            models: c.models,
            prices: c.prices,
        }
    })
}

/// Every built-in era.
pub fn prices() -> &'static [PriceConfig] {
    &parsed().prices
}

/// Whether `name` is a built-in price.
pub fn has_price(name: &str) -> bool {
    prices().iter().any(|p| p.name == name)
}

/// A built-in calendar's dates, sorted.
pub fn calendar(name: &str) -> Option<&'static [Date]> {
    parsed()
        .calendars
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_slice())
}

pub fn calendar_names() -> Vec<&'static str> {
    parsed().calendars.iter().map(|(n, _)| n.as_str()).collect()
}

/// The built-in price of a DeepSeek model name.
pub fn deepseek_price(model: &str) -> Option<&'static str> {
    parsed()
        .models
        .iter()
        .find(|m| m.model == model)
        .map(|m| m.price.as_str())
}

pub fn deepseek_models() -> Vec<&'static str> {
    parsed().models.iter().map(|m| m.model.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_valid_and_complete() {
        super::super::validate(prices()).unwrap();
        for m in &parsed().models {
            assert!(has_price(&m.price), "{} -> {}", m.model, m.price);
        }
        for name in [
            "deepseek-v3.2",
            "deepseek-v3.1",
            "deepseek-v3",
            "deepseek-r1",
            "free",
        ] {
            assert!(has_price(name), "{name}");
        }
        let cn = calendar("cn").unwrap();
        assert!(cn.contains(&"2026-10-01".parse().unwrap()));
        assert!(cn.contains(&"2027-02-06".parse().unwrap()));
        assert!(!cn.contains(&"2026-10-08".parse().unwrap()));
    }
}
