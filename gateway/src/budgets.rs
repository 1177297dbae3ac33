//! Spend budgets per team and per key, by day, month or in total, read from the ledger.

use crate::auth::Principal;
use crate::config::{BudgetConfig, BudgetPeriod, LimitScope};
use crate::ledger::{Ledger, day_of};
use crate::pricing::dollars;

#[derive(Debug, Clone)]
pub struct Budget {
    scope: LimitScope,
    name: String,
    /// The team the counters are tagged with (the key's team for a key budget).
    team: String,
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
    pub fn from_config(c: &BudgetConfig, keys: &[crate::config::KeyConfig]) -> Self {
        let team = match c.scope {
            LimitScope::Team => c.name.clone(),
            LimitScope::Key => keys
                .iter()
                .find(|k| k.id == c.name)
                .map_or_else(String::new, |k| k.team.clone()),
        };
        Self {
            scope: c.scope,
            name: c.name.clone(),
            team,
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

    /// The current period's name in the shared counters: a day, a month, or `total`.
    fn period_id(&self, now: u64) -> String {
        let today = day_of(now);
        match self.period {
            BudgetPeriod::Day => today,
            BudgetPeriod::Month => today[..7].to_owned(),
            BudgetPeriod::Total => "total".to_owned(),
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

/// Every budget that applies to `principal`, from the shared counters when replicas share them
/// (Redis), else from this process's ledger. Budgets fail closed: an unreadable store is an error.
pub async fn current(
    budgets: &[Budget],
    ledger: &Ledger,
    principal: &Principal,
    now: u64,
) -> Result<Vec<Remaining>, crate::redis_link::RedisLinkError> {
    let Some(shared) = ledger.shared() else {
        return Ok(remaining(budgets, ledger, principal, now));
    };
    let applicable: Vec<&Budget> = budgets.iter().filter(|b| b.applies(principal)).collect();
    let counters: Vec<String> = applicable
        .iter()
        .map(|b| {
            let scope = match b.scope {
                LimitScope::Team => "team",
                LimitScope::Key => "key",
            };
            crate::shared_spend::counter(&b.team, scope, &b.name, &b.period_id(now))
        })
        .collect();
    let spent = shared.spent(&counters).await?;
    Ok(applicable
        .iter()
        .zip(spent)
        .map(|(b, spent)| Remaining {
            amount: b.amount,
            spent,
        })
        .collect())
}

/// Every budget with what is left of it now, `(scope, name, period, picodollars left)`, from the
/// shared counters when there are any.
pub async fn all_current(
    budgets: &[Budget],
    ledger: &Ledger,
    now: u64,
) -> Result<Vec<(&'static str, String, &'static str, u64)>, crate::redis_link::RedisLinkError> {
    let mut out = all_remaining(budgets, ledger, now);
    if let Some(shared) = ledger.shared() {
        let counters: Vec<String> = budgets
            .iter()
            .zip(&out)
            .map(|(b, (scope, ..))| {
                crate::shared_spend::counter(&b.team, scope, &b.name, &b.period_id(now))
            })
            .collect();
        let spent = shared.spent(&counters).await?;
        for ((entry, b), spent) in out.iter_mut().zip(budgets).zip(spent) {
            entry.3 = b.amount.saturating_sub(spent);
        }
    }
    Ok(out)
}
