//! The gateway's configuration: one TOML file, secrets named by environment variable, validated at
//! start-up with errors that name the offending entry. With no file, an embedded default serves the
//! three DeepSeek model names on loopback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod keys;
pub mod prices;
mod providers;
mod routing;
mod server;
mod spend;
mod store;

pub use keys::{Classification, KeyConfig};
pub use providers::{
    Device, LocalProviderConfig, ProviderConfig, ProviderKind, RemoteProviderConfig, Weights,
};
pub use routing::RoutingConfig;
pub use server::ServerConfig;
pub use spend::{
    BudgetConfig, BudgetPeriod, FailureMode, LedgerConfig, LimitConfig, LimitScope, RedisConfig,
    TokenCount, redact_url,
};
pub use store::StoreConfig;

/// The most output DeepSeek's V4 models take (`max_tokens` in [1, 393216]).
pub const V4_MAX_OUTPUT_TOKENS: u32 = 393_216;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// Upstreams the gateway may call.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// The model names clients see, each with its ordered deployments.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Virtual keys. With none, the gateway accepts any key, and only on a loopback address.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Shared state for many replicas. Absent: limits hold per process.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// The database of keys, teams, budgets, limits and the spend ledger, managed through the
    /// admin API. Absent (with a config file): everything comes from this file.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Rate and concurrency limits per team and per key.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// Prices as dated eras (entries sharing a `name`), beside the built-in catalogue; an entry
    /// named like a built-in price replaces that price's eras.
    #[serde(default)]
    pub prices: Vec<prices::PriceConfig>,
    /// A file of `[[prices]]` entries, relative to this file, re-read on SIGHUP.
    #[serde(default)]
    pub prices_file: Option<PathBuf>,
    /// The entries read from `prices_file` (resolved to a path from the config's directory).
    #[serde(skip)]
    pub file_prices: Vec<prices::PriceConfig>,
    /// Where spend is recorded.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Spend budgets per team and per key.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// Retries, circuit breakers and affinity between a model's deployments.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Data-residency policies (Cedar): which deployments each request's data may reach.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The Anthropic Messages endpoint (`/anthropic/v1/messages`).
    #[serde(default)]
    pub anthropic: AnthropicConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicConfig {
    /// The model that serves requests naming a model not served here (`claude-...`), as
    /// DeepSeek's own Anthropic endpoint does. Default: `deepseek-chat` when served, else the
    /// first model.
    pub default_model: Option<String>,
}

impl Config {
    /// The model Anthropic requests for unknown names go to.
    pub fn anthropic_default_model(&self) -> String {
        self.anthropic
            .default_model
            .clone()
            .or_else(|| {
                self.models
                    .iter()
                    .find(|m| m.name == "deepseek-chat")
                    .or(self.models.first())
                    .map(|m| m.name.clone())
            })
            .unwrap_or_else(|| "deepseek-chat".to_owned())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A directory of Cedar policies (`*.cedar`, optional `schema.cedarschema` and `tests.toml`),
    /// for example `policies/examples/confidential-onprem`. Absent: every deployment is allowed.
    pub dir: Option<String>,
    /// The decision audit log (JSON lines). Default: `audit.jsonl` in the state directory
    /// (`$XDG_STATE_HOME/dsgw`, `~/.local/state/dsgw`); `""` turns auditing off.
    pub audit_log: Option<String>,
    /// The audit log rotates past this size, keeping `audit_keep` old files.
    pub audit_max_bytes: u64,
    pub audit_keep: usize,
    /// Environment variable with the key that makes redaction placeholders the same on every
    /// replica (and across restarts). Absent: a random key per process.
    pub redaction_key_env: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: None,
            audit_log: None,
            audit_max_bytes: 64 * 1024 * 1024,
            audit_keep: 5,
            redaction_key_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients put in `model`.
    pub name: String,
    /// Default mode: thinking (reasoner) or not (chat). The request's `thinking` field overrides it.
    #[serde(default)]
    pub thinking: bool,
    /// The mode cannot be switched off (deepseek-v3.2-speciale).
    #[serde(default)]
    pub thinking_only: bool,
    /// Whether requests may carry `tools`.
    #[serde(default = "yes")]
    pub tools: bool,
    /// Upper bound for `max_tokens`; defaults to DeepSeek's (8K non-thinking, 64K thinking).
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// `owned_by` in `/v1/models`.
    #[serde(default = "default_owner")]
    pub owned_by: String,
    /// Shown in `/v1/models` as `description`, for example to label a built-in test model.
    #[serde(default)]
    pub description: Option<String>,
    /// Where the model is served. Deployments are tried by `priority` (lower first; by default
    /// their position, so the list is an ordered fallback chain); deployments that share a
    /// priority share its traffic by `weight`, with prefix-cache affinity. A deployment that
    /// fails before the first byte reaches the client falls through to the next.
    pub deployments: Vec<DeploymentConfig>,
}

fn yes() -> bool {
    true
}
fn default_owner() -> String {
    "deepseek".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// A provider's `name`.
    pub provider: String,
    /// The model name the provider knows.
    pub model: String,
    /// The price it is charged at. Default: a DeepSeek model's built-in schedule (an unknown
    /// DeepSeek model name is an error), `free` for the local engine, DeepSeek-V3.2's rates for
    /// other providers.
    #[serde(default)]
    pub price: Option<String>,
    /// Lower is tried first; default: the deployment's position in the list.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Share of its priority group's traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_in(&text, dir).map_err(|e| match e {
            ConfigError::Parse { path: p, message } if p == "<text>" => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text (a `prices_file` is read from the working directory).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_in(text, Path::new(""))
    }

    fn parse_in(text: &str, dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".to_owned(),
            message: e.to_string(),
        })?;
        if let Some(redis) = &mut config.redis {
            redis.resolve_paths(dir);
        }
        if let Some(file) = &config.prices_file {
            let file = dir.join(file);
            config.file_prices =
                prices::read_file(&file).map_err(|message| ConfigError::Parse {
                    path: file.display().to_string(),
                    message,
                })?;
            config.prices_file = Some(file);
        }
        config.validate()?;
        Ok(config)
    }

    /// This configuration with its prices file read again and everything validated as at start:
    /// what a SIGHUP reload swaps in, or the error that keeps the prices in force. `None`
    /// without a prices file.
    pub fn reread_prices(&self) -> Option<Result<Self, ConfigError>> {
        let file = self.prices_file.as_ref()?;
        let mut next = self.clone();
        Some(
            prices::read_file(file)
                .map_err(|message| ConfigError::Parse {
                    path: file.display().to_string(),
                    message,
                })
                .and_then(|entries| {
                    next.file_prices = entries;
                    next.validate()?;
                    Ok(next)
                }),
        )
    }

    /// The operator's price entries: the config's own, then the prices file's.
    pub fn operator_prices(&self) -> impl Iterator<Item = &prices::PriceConfig> {
        self.prices.iter().chain(&self.file_prices)
    }

    /// The price name `d` (a deployment of a `kind` provider) is charged at.
    pub fn deployment_price(&self, d: &DeploymentConfig) -> Result<String, String> {
        let kind = self
            .providers
            .iter()
            .find(|p| p.name() == d.provider)
            .map_or(ProviderKind::Openai, ProviderConfig::kind);
        prices::resolve(kind, &d.model, d.price.as_deref())
    }

    /// The configuration used when no file is given: the three DeepSeek names on 127.0.0.1:8080,
    /// routed to DeepSeek's API when `DEEPSEEK_API_KEY` is set, and always to the in-process
    /// engine's tiny built-in model as the last fallback, so the whole path works offline.
    /// DeepSeek retired the V3.2 names in 2026, so the stable names map onto its current models
    /// (`deepseek-flash` for chat and reasoner, `deepseek-v4-pro` for Speciale's slot) with the
    /// mode sent explicitly, and their output limit.
    pub fn embedded_default(deepseek_key_present: bool) -> Self {
        let mut providers = Vec::new();
        if deepseek_key_present {
            providers.push(ProviderConfig::Deepseek(RemoteProviderConfig {
                api_key_env: Some("DEEPSEEK_API_KEY".to_owned()),
                region: Some("cn".to_owned()),
                ..RemoteProviderConfig::new("deepseek", "https://api.deepseek.com")
            }));
        }
        providers.push(ProviderConfig::Local(LocalProviderConfig {
            region: Some("local".to_owned()),
            ..LocalProviderConfig::new("local")
        }));
        let deploy = |model: &str| {
            let mut d = Vec::new();
            if deepseek_key_present {
                d.push(DeploymentConfig {
                    provider: "deepseek".to_owned(),
                    model: model.to_owned(),
                    price: None,
                    priority: None,
                    weight: default_weight(),
                });
            }
            d.push(DeploymentConfig {
                provider: "local".to_owned(),
                model: "builtin-tiny".to_owned(),
                price: None,
                priority: None,
                weight: default_weight(),
            });
            d
        };
        let description = (!deepseek_key_present).then(|| {
            "served by the tiny built-in model (random weights: it tests the path, it does not \
             answer); set DEEPSEEK_API_KEY or configure a provider for real answers"
                .to_owned()
        });
        let model = |name: &str, thinking: bool, thinking_only: bool, upstream: &str| ModelConfig {
            name: name.to_owned(),
            thinking,
            thinking_only,
            tools: !thinking_only,
            // What DeepSeek's V4 models take; the built-in model keeps DeepSeek's V3.2 limits.
            max_output_tokens: deepseek_key_present.then_some(V4_MAX_OUTPUT_TOKENS),
            owned_by: default_owner(),
            description: description.clone(),
            deployments: deploy(upstream),
        };
        Self {
            server: ServerConfig::default(),
            providers,
            models: vec![
                model("deepseek-chat", false, false, "deepseek-flash"),
                model("deepseek-reasoner", true, false, "deepseek-flash"),
                model("deepseek-v3.2-speciale", true, true, "deepseek-v4-pro"),
            ],
            keys: Vec::new(),
            redis: None,
            // Keys made through the admin API, and spend, outlive the process.
            store: crate::support::state_dir::state_dir().map(|d| StoreConfig::sqlite_in(&d)),
            limits: Vec::new(),
            prices: Vec::new(),
            prices_file: None,
            file_prices: Vec::new(),
            ledger: LedgerConfig::default(),
            budgets: Vec::new(),
            routing: RoutingConfig::default(),
            policy: PolicyConfig::default(),
            anthropic: AnthropicConfig::default(),
        }
    }

    /// Checks cross-references and values; each message names the entry at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_providers()
            .and_then(|()| self.validate_models())
            .and_then(|()| self.routing.validate())
            .and_then(|()| self.validate_keys())
            .and_then(|()| self.validate_spend())
            .and_then(|()| self.server.validate())
            .map_err(ConfigError::Invalid)
    }

    fn validate_providers(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}] (name = {:?})", p.name());
            if p.name().is_empty() {
                return Err(format!("providers[{i}]: `name` must not be empty"));
            }
            if !names.insert(p.name()) {
                return Err(format!("{at}: duplicate provider name"));
            }
            p.validate(&at)?;
        }
        Ok(())
    }

    fn validate_models(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}] (name = {:?})", m.name);
            if m.name.is_empty() {
                return Err(format!("models[{i}]: `name` must not be empty"));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("{at}: duplicate model name"));
            }
            if m.thinking_only && !m.thinking {
                return Err(format!(
                    "{at}: `thinking_only = true` needs `thinking = true`"
                ));
            }
            if m.deployments.is_empty() {
                return Err(format!(
                    "{at}: `deployments` must list at least one deployment"
                ));
            }
            for (j, d) in m.deployments.iter().enumerate() {
                self.validate_deployment(&format!("{at}: deployments[{j}]"), d)?;
            }
        }
        if let Some(name) = &self.anthropic.default_model
            && !self.models.iter().any(|m| &m.name == name)
        {
            return Err(format!(
                "[anthropic]: default_model {name:?} is not one of the [[models]]"
            ));
        }
        Ok(())
    }

    fn validate_deployment(&self, at: &str, d: &DeploymentConfig) -> Result<(), String> {
        if d.weight == 0 {
            return Err(format!(
                "{at}: `weight` must be at least 1 (remove the deployment to send it nothing)"
            ));
        }
        if !self.providers.iter().any(|p| p.name() == d.provider) {
            return Err(format!(
                "{at} names provider {:?}, which is not in [[providers]]",
                d.provider
            ));
        }
        let price = self.deployment_price(d).map_err(|e| format!("{at}: {e}"))?;
        if !prices::catalogue::has_price(&price) && !self.operator_prices().any(|p| p.name == price)
        {
            return Err(format!(
                "{at} names price {price:?}, which is neither built in nor in [[prices]]"
            ));
        }
        Ok(())
    }

    fn validate_keys(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}] (id = {:?})", k.id);
            if k.id.is_empty() || k.team.is_empty() {
                return Err(format!("keys[{i}]: `id` and `team` must not be empty"));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(format!("{at}: duplicate key id"));
            }
            match (&k.key_sha256, &k.key_env) {
                (Some(hash), None) => {
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("{at}: `key_sha256` must be 64 hex characters"));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "{at}: set exactly one of `key_sha256` and `key_env`"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Redis, limits, budgets and prices.
    fn validate_spend(&self) -> Result<(), String> {
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        if let Some(store) = &self.store {
            store.validate()?;
        }
        let teams: HashSet<&str> = self.keys.iter().map(|k| k.team.as_str()).collect();
        let ids: HashSet<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        // With a store, a limit or budget may name a team or key that lives there.
        let known = |scope: LimitScope, name: &str| {
            self.store.is_some()
                || match scope {
                    LimitScope::Team => teams.contains(name),
                    LimitScope::Key => ids.contains(name),
                }
        };
        let mut limited = HashSet::new();
        for (i, l) in self.limits.iter().enumerate() {
            let at = format!("limits[{i}] ({:?} {:?})", l.scope, l.name);
            if !known(l.scope, &l.name) {
                return Err(format!("{at}: no configured key has this {:?}", l.scope));
            }
            if !limited.insert((l.scope, l.name.as_str())) {
                return Err(format!("{at}: duplicate limit"));
            }
            l.validate(&at)?;
        }
        for (i, b) in self.budgets.iter().enumerate() {
            let at = format!("budgets[{i}] ({:?} {:?})", b.scope, b.name);
            if !known(b.scope, &b.name) {
                return Err(format!("{at}: no configured key has this {:?}", b.scope));
            }
            if let Err(e) = prices::dollars(&b.amount) {
                return Err(format!("{at}: `amount` {e}"));
            }
        }
        prices::validate(&self.operator_prices().cloned().collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[providers]]
name = "deepseek"
kind = "deepseek"                 # deepseek | openai | openrouter | local
base_url = "https://api.deepseek.com"
api_key_env = "DEEPSEEK_API_KEY"
region = "cn"                     # free label that policies use

[[models]]
name = "deepseek-chat"
thinking = false
deployments = [{ provider = "deepseek", model = "deepseek-chat" }]

[[models]]
name = "deepseek-reasoner"
thinking = true
deployments = [{ provider = "deepseek", model = "deepseek-reasoner" }]

[[keys]]
id = "alice"
team = "research"
key_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
"#;

    #[test]
    fn accepts_the_documented_example() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.providers[0].kind(), ProviderKind::Deepseek);
        assert_eq!(c.models.len(), 2);
        assert!(c.models[1].thinking);
        assert_eq!(c.keys[0].team, "research");
        assert_eq!(c.providers[0].region(), Some("cn"));
    }

    #[test]
    fn names_the_entry_with_an_unknown_provider() {
        let text = EXAMPLE.replace(
            r#"{ provider = "deepseek", model = "deepseek-reasoner" }"#,
            r#"{ provider = "deepsek", model = "deepseek-reasoner" }"#,
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("models[1]"), "{err}");
        assert!(err.contains("deepsek"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_with_their_name() {
        let text = EXAMPLE.replace("region = \"cn\"", "regoin = \"cn\"");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn rejects_a_malformed_key_hash() {
        let text = EXAMPLE.replace("2c26b46b", "zz26b46b");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("keys[0]") && err.contains("64 hex"), "{err}");
    }

    #[test]
    fn embedded_default_serves_three_models() {
        Config::embedded_default(false).validate().unwrap();
        let c = Config::embedded_default(true);
        c.validate().unwrap();
        assert_eq!(
            c.models[0].deployments.len(),
            2,
            "DeepSeek first, the local engine last"
        );
        let names: Vec<_> = c.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "deepseek-chat",
                "deepseek-reasoner",
                "deepseek-v3.2-speciale"
            ]
        );
        assert!(c.models[2].thinking_only && !c.models[2].tools);
        assert!(c.server.listen.ip().is_loopback());
    }
}
