//! Spend budgets per team and per key, by day, month or in total, read from the ledger.

use crate::auth::Principal;
use crate::config::{BudgetConfig, BudgetPeriod, LimitScope};
use crate::ledger::{Ledger, day_of};
use crate::pricing::dollars;

#[derive(Debug, Clone)]
pub struct Budget {
    scope: LimitScope,
    name: String,
    period: BudgetPeriod,
    /// Picodollars.
    amount: u64,
}

/// A budget's state for one principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub amount: u64,
    pub spent: u64,
}

impl Remaining {
    pub fn left(&self) -> u64 {
        self.amount.saturating_sub(self.spent)
    }
}

impl Budget {
    pub fn from_config(c: &BudgetConfig) -> Self {
        Self {
            scope: c.scope,
            name: c.name.clone(),
            period: c.period,
            amount: dollars(&c.amount).expect("validated amount"),
        }
    }

    fn applies(&self, p: &Principal) -> bool {
        match self.scope {
            LimitScope::Team => *p.team == *self.name,
            LimitScope::Key => *p.key_id == *self.name,
        }
    }

    /// Inclusive day range of the current period.
    fn range(&self, now: u64) -> (String, String) {
        let today = day_of(now);
        match self.period {
            BudgetPeriod::Day => (today.clone(), today),
            BudgetPeriod::Month => (format!("{}-01", &today[..7]), format!("{}-31", &today[..7])),
            BudgetPeriod::Total => ("0000-00-00".to_owned(), "9999-99-99".to_owned()),
        }
    }
}

/// Every budget with its remaining amount now: `(scope, name, period, picodollars left)`.
pub fn all_remaining(
    budgets: &[Budget],
    ledger: &Ledger,
    now: u64,
) -> Vec<(&'static str, String, &'static str, u64)> {
    budgets
        .iter()
        .map(|b| {
            let (from, to) = b.range(now);
            let spent = ledger.spend(&from, &to, |key, team| match b.scope {
                LimitScope::Team => team == b.name,
                LimitScope::Key => key == b.name,
            });
            let scope = match b.scope {
                LimitScope::Team => "team",
                LimitScope::Key => "key",
            };
            let period = match b.period {
                BudgetPeriod::Day => "day",
                BudgetPeriod::Month => "month",
                BudgetPeriod::Total => "total",
            };
            (
                scope,
                b.name.clone(),
                period,
                b.amount.saturating_sub(spent),
            )
        })
        .collect()
}

/// Every budget that applies to `principal`, with what is spent in its current period.
pub fn remaining(
    budgets: &[Budget],
    ledger: &Ledger,
    principal: &Principal,
    now: u64,
) -> Vec<Remaining> {
    budgets
        .iter()
        .filter(|b| b.applies(principal))
        .map(|b| {
            let (from, to) = b.range(now);
            let spent = ledger.spend(&from, &to, |key, team| match b.scope {
                LimitScope::Team => team == b.name,
                LimitScope::Key => key == b.name,
            });
            Remaining {
                amount: b.amount,
                spent,
            }
        })
        .collect()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
