//! Configuration of limits, budgets and the ledger: the parts of the file that govern what a
//! team may use and spend.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Append-only ledger file. Default: `$XDG_STATE_HOME/dsgw/ledger.jsonl`
    /// (`~/.local/state/dsgw/ledger.jsonl`). `""` keeps spend in memory only.
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
    Total,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// One node: `redis://host:port[/db]`, or `rediss://` for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis Cluster seed nodes instead of `url`: `["redis://h1:6379", ...]`, all `redis://`
    /// or all `rediss://`; the rest of the cluster is found from them.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// TLS: a PEM bundle of the CAs that sign the servers' certificates (default: the system's
    /// roots). Server names are always checked against the certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: a client certificate chain and its key (PEM), for servers that require mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Deadline for one limit check on the request path.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Replicas sharing the limits: when Redis is away, a fail-open limit holds locally at
    /// `quota / replicas`.
    #[serde(default = "one_u32")]
    pub replicas: u32,
}

impl RedisConfig {
    /// Whether the node or the cluster is reached over TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        self.url
            .iter()
            .chain(&self.nodes)
            .any(|u| u.starts_with("rediss://"))
    }

    /// Makes the certificate paths relative to the configuration's folder.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for path in [
            &mut self.ca_file,
            &mut self.client_cert,
            &mut self.client_key,
        ]
        .into_iter()
        .flatten()
        {
            *path = dir.join(&*path);
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let scheme_ok = |u: &String| u.starts_with("redis://") || u.starts_with("rediss://");
        match (&self.url, self.nodes.is_empty()) {
            (Some(_), false) => {
                return Err(
                    "[redis]: set `url` (one node) or `nodes` (a cluster), not both".into(),
                );
            }
            (None, true) => {
                return Err(
                    "[redis]: set `url` (one node) or `nodes` (Redis Cluster seed nodes)".into(),
                );
            }
            _ => {}
        }
        if let Some(bad) = self.url.iter().chain(&self.nodes).find(|u| !scheme_ok(u)) {
            return Err(format!(
                "[redis]: {:?} must start with redis:// or rediss://",
                redact_url(bad)
            ));
        }
        if self.uses_tls()
            && self
                .url
                .iter()
                .chain(&self.nodes)
                .any(|u| u.starts_with("redis://"))
        {
            return Err("[redis]: `nodes` must be all redis:// or all rediss://".into());
        }
        if self
            .url
            .iter()
            .chain(&self.nodes)
            .any(|u| u.contains("#insecure"))
        {
            return Err("[redis]: `#insecure` (no certificate checks) is not accepted; give the server's CA as `ca_file`".into());
        }
        if !self.uses_tls()
            && (self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some())
        {
            return Err(
                "[redis]: `ca_file`, `client_cert` and `client_key` need a rediss:// address"
                    .into(),
            );
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("[redis]: `client_cert` and `client_key` go together".into());
        }
        if self.replicas == 0 || self.timeout_ms == 0 {
            return Err("[redis]: `replicas` and `timeout_ms` must be greater than 0".into());
        }
        Ok(())
    }
}

/// An address without its credentials, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn default_redis_timeout_ms() -> u64 {
    50
}
fn one_u32() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// Shared by every key of the team.
    Team,
    /// One key's own limit, checked in addition to its team's.
    Key,
}

/// What counts toward `tokens_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenCount {
    /// Input and output tokens.
    #[default]
    Total,
    /// Input tokens only.
    Input,
}

/// What a limit does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Hold the limit locally at `quota / replicas`.
    #[default]
    Open,
    /// Refuse requests with 503.
    Closed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(text: &str) -> Result<RedisConfig, String> {
        let config: RedisConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn one_node_or_a_cluster_over_one_scheme() {
        assert!(redis("url = \"redis://127.0.0.1:6379\"").is_ok());
        let cluster =
            redis("nodes = [\"rediss://a:1\", \"rediss://b:2\"]\nca_file = \"ca.pem\"").unwrap();
        assert!(cluster.uses_tls());
        for (text, why) in [
            ("timeout_ms = 5", "set `url` (one node) or `nodes`"),
            ("url = \"redis://a\"\nnodes = [\"redis://b\"]", "not both"),
            (
                "nodes = [\"redis://a:1\", \"rediss://b:2\"]",
                "all redis:// or all rediss://",
            ),
            ("url = \"http://user:secret@a\"", "must start with redis://"),
            ("url = \"rediss://a/#insecure\"", "`#insecure`"),
            (
                "url = \"redis://a\"\nca_file = \"ca.pem\"",
                "need a rediss:// address",
            ),
            (
                "url = \"rediss://a\"\nclient_cert = \"c.pem\"",
                "go together",
            ),
            ("url = \"redis://a\"\nreplicas = 0", "greater than 0"),
        ] {
            let e = redis(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
            assert!(
                !e.contains("secret"),
                "the password stays out of errors: {e}"
            );
        }
    }

    #[test]
    fn certificate_paths_are_relative_to_the_config() {
        let mut c = redis("url = \"rediss://a\"\nca_file = \"ca.pem\"\nclient_cert = \"/abs/c.pem\"\nclient_key = \"k.pem\"").unwrap();
        c.resolve_paths(Path::new("/etc/dsgw"));
        assert_eq!(c.ca_file.unwrap(), Path::new("/etc/dsgw/ca.pem"));
        assert_eq!(c.client_cert.unwrap(), Path::new("/abs/c.pem"));
        assert_eq!(c.client_key.unwrap(), Path::new("/etc/dsgw/k.pem"));
    }
}
