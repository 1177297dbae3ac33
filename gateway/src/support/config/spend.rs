//! Configuration of limits, budgets and the ledger: the parts of the file that govern what a
//! team may use and spend.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Append-only ledger file. Default: `$XDG_STATE_HOME/dsgw/ledger.jsonl`
    /// (`~/.local/state/dsgw/ledger.jsonl`). `""` keeps spend in memory only.
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
    Total,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub scope: LimitScope,
    /// The team name or key id.
    pub name: String,
    pub period: BudgetPeriod,
    /// In USD, as a decimal string (`"100.00"`).
    pub amount: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Deadline for one limit check on the request path.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Replicas sharing the limits: when Redis is away, a fail-open limit holds locally at
    /// `quota / replicas`.
    #[serde(default = "one_u32")]
    pub replicas: u32,
}

fn default_redis_timeout_ms() -> u64 {
    50
}
fn one_u32() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// Shared by every key of the team.
    Team,
    /// One key's own limit, checked in addition to its team's.
    Key,
}

/// What counts toward `tokens_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenCount {
    /// Input and output tokens.
    #[default]
    Total,
    /// Input tokens only.
    Input,
}

/// What a limit does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Hold the limit locally at `quota / replicas`.
    #[default]
    Open,
    /// Refuse requests with 503.
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub scope: LimitScope,
    /// The team name or the key id.
    pub name: String,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Requests admitted at once after an idle minute (default: `requests_per_minute`).
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Tokens admitted at once after an idle minute (default: `tokens_per_minute`).
    #[serde(default)]
    pub tokens_burst: Option<u64>,
    #[serde(default)]
    pub tokens: TokenCount,
    /// Output tokens reserved for a request without `max_tokens` (reconciled afterwards).
    #[serde(default)]
    pub output_allowance: Option<u64>,
    /// Requests in flight at once.
    #[serde(default)]
    pub concurrent: Option<u64>,
    #[serde(default)]
    pub on_redis_failure: FailureMode,
}

impl LimitConfig {
    /// Checks the values; `at` names the entry in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        let values = [
            self.requests_per_minute,
            self.tokens_per_minute,
            self.concurrent,
            self.burst,
            self.tokens_burst,
        ];
        if values.contains(&Some(0)) {
            return Err(format!("{at}: limits must be greater than 0"));
        }
        if self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.concurrent.is_none()
        {
            return Err(format!(
                "{at}: set at least one of requests_per_minute, tokens_per_minute, concurrent"
            ));
        }
        Ok(())
    }
}
