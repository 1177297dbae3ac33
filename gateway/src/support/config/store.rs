//! `[store]`: the database that holds keys, teams, budgets, limits and the spend ledger.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user@host:port/db` (replicas share it) or `sqlite:///path/file.db`.
    pub url: String,
    /// Connections held open at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// The longest one statement may run (and the wait for a connection).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Ledger rows older than this many days are deleted (the spend counters budgets read are
    /// kept). Absent: kept for ever.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// A full re-read of keys, teams, budgets and limits at least this often, whatever the
    /// change notifications said.
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
}

fn default_pool_size() -> u32 {
    8
}
fn default_statement_timeout_ms() -> u64 {
    5_000
}
fn default_refresh_secs() -> u64 {
    30
}

impl StoreConfig {
    /// The embedded default's store: a SQLite file in the state directory.
    pub fn sqlite_in(dir: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}", dir.join("dsgw.db").display()),
            pool_size: default_pool_size(),
            statement_timeout_ms: default_statement_timeout_ms(),
            retention_days: None,
            refresh_secs: default_refresh_secs(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.pool_size == 0 || self.statement_timeout_ms == 0 || self.refresh_secs == 0 {
            return Err(
                "[store]: pool_size, statement_timeout_ms and refresh_secs must be greater than 0"
                    .into(),
            );
        }
        if self.retention_days == Some(0) {
            return Err(
                "[store]: retention_days must be at least 1 (omit it to keep every row)".into(),
            );
        }
        Ok(())
    }
}
