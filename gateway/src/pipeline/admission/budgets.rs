//! Spend budgets per team and per key, by day, month or in total, read from the ledger.

use super::limits::SpendCap;
use crate::accounting::spend::ledger::Ledger;
use crate::accounting::spend::record::day_of;
use crate::support::config::prices::dollars;
use crate::support::config::{BudgetConfig, BudgetPeriod, LimitScope};
use crate::support::principal::Principal;
use crate::support::redis_link::RedisLinkError;

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
    pub fn from_config(c: &BudgetConfig, keys: &[crate::support::config::KeyConfig]) -> Self {
        Self::with_team_of(c, |id| {
            keys.iter().find(|k| k.id == id).map(|k| k.team.clone())
        })
    }

    /// The budget, its key's team found by `team_of` (a key budget counts under its team).
    pub fn with_team_of(c: &BudgetConfig, team_of: impl Fn(&str) -> Option<String>) -> Self {
        let team = match c.scope {
            LimitScope::Team => c.name.clone(),
            LimitScope::Key => team_of(&c.name).unwrap_or_default(),
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

    fn scope_label(&self) -> &'static str {
        match self.scope {
            LimitScope::Team => "team",
            LimitScope::Key => "key",
        }
    }

    fn period_label(&self) -> &'static str {
        match self.period {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Total => "total",
        }
    }

    /// The spend counter of the current period (a day, a month, or all time).
    fn counter(&self, now: u64) -> String {
        let today = day_of(now);
        let period = match self.period {
            BudgetPeriod::Day => today.as_str(),
            BudgetPeriod::Month => &today[..7],
            BudgetPeriod::Total => "total",
        };
        crate::accounting::spend::record::counter(
            &self.team,
            self.scope_label(),
            &self.name,
            period,
        )
    }
}

/// Picodollars spent on each of `budgets` in its current period: from the counters replicas
/// share when there are any (Redis), else from this process's ledger. An unreadable shared store
/// is an error: budgets fail closed.
async fn spent(budgets: &[&Budget], ledger: &Ledger, now: u64) -> Result<Vec<u64>, RedisLinkError> {
    let counters: Vec<String> = budgets.iter().map(|b| b.counter(now)).collect();
    match ledger.shared() {
        Some(shared) => shared.spent(&counters).await,
        None => Ok(ledger.spent(&counters)),
    }
}

/// The budgets that apply to `principal` as spend caps, for the limit script to check in the
/// same round trip (with Redis).
pub fn caps(budgets: &[Budget], principal: &Principal, now: u64) -> Vec<SpendCap> {
    budgets
        .iter()
        .filter(|b| b.applies(principal))
        .map(|b| SpendCap {
            counter: b.counter(now),
            amount_pico: b.amount,
        })
        .collect()
}

/// Every budget that applies to `principal`, with what is spent in its current period.
pub async fn current(
    budgets: &[Budget],
    ledger: &Ledger,
    principal: &Principal,
    now: u64,
) -> Result<Vec<Remaining>, RedisLinkError> {
    let applicable: Vec<&Budget> = budgets.iter().filter(|b| b.applies(principal)).collect();
    let spent = spent(&applicable, ledger, now).await?;
    Ok(applicable
        .iter()
        .zip(spent)
        .map(|(b, spent)| Remaining {
            amount: b.amount,
            spent,
        })
        .collect())
}

/// Every budget with what is left of it now: `(scope, name, period, picodollars left)`.
pub async fn all_current(
    budgets: &[Budget],
    ledger: &Ledger,
    now: u64,
) -> Result<Vec<(&'static str, String, &'static str, u64)>, RedisLinkError> {
    let all: Vec<&Budget> = budgets.iter().collect();
    let spent = spent(&all, ledger, now).await?;
    Ok(all
        .iter()
        .zip(spent)
        .map(|(b, spent)| {
            (
                b.scope_label(),
                b.name.clone(),
                b.period_label(),
                b.amount.saturating_sub(spent),
            )
        })
        .collect())
}
