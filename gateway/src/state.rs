//! Everything a request handler reads, built once from the configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::{KeyError, KeyStore};
use crate::budgets::Budget;
use crate::config::{Config, RoutingConfig};
use crate::ledger::{Ledger, LedgerError};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::models::Catalog;
use crate::policy::audit::AuditLog;
use crate::policy::redact::Redactor;
use crate::policy::{DeploymentAttrs, KeyAttrs, PolicyEngine};
use crate::redis_link::RedisLink;
use crate::shared_spend::SharedSpend;
use crate::upstream::{Provider, ProviderError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("[redis]: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Audit(#[from] crate::policy::audit::AuditError),
    #[error("[policy]: environment variable {0} (redaction_key_env) is not set")]
    RedactionKey(String),
    #[error(
        "no [[keys]] are configured, so the gateway would accept any caller; it only does that on a \
         loopback address, and {0} is not one. Add keys (`dsgw keys new`) or listen on 127.0.0.1."
    )]
    OpenNonLoopback(std::net::SocketAddr),
}

#[derive(Debug)]
pub struct AppState {
    pub catalog: Catalog,
    pub keys: KeyStore,
    pub max_body_bytes: usize,
    pub accounting: bool,
    pub limiter: Option<Arc<Limiter>>,
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<Ledger>,
    pub budgets: Vec<Budget>,
    pub routing: RoutingConfig,
    /// Where Anthropic requests naming a model that is not served here go.
    pub anthropic_default_model: String,
    /// The data-residency policies; swapped whole when they are reloaded (SIGHUP).
    policy: RwLock<Option<Arc<PolicyEngine>>>,
    pub audit: AuditLog,
    pub redactor: Redactor,
    /// What a policy reload needs: the policy directory and the entities' attributes.
    policy_source: Option<(PathBuf, Vec<KeyAttrs>, Vec<DeploymentAttrs>)>,
    draining: AtomicBool,
}

impl AppState {
    pub fn build(config: &Config) -> Result<Arc<Self>, StateError> {
        let keys = KeyStore::from_config(&config.keys)?;
        if keys.is_open() && !config.server.listen.ip().is_loopback() {
            return Err(StateError::OpenNonLoopback(config.server.listen));
        }
        let redis = match &config.redis {
            Some(r) => Some(Arc::new(RedisLink::new(
                &r.url,
                std::time::Duration::from_millis(r.timeout_ms),
            )?)),
            None => None,
        };
        let mut providers = HashMap::new();
        for (i, p) in config.providers.iter().enumerate() {
            providers.insert(p.name.clone(), Arc::new(Provider::from_config(i, p)?));
        }
        let policy_source = config.policy.dir.as_ref().map(|dir| {
            (
                PathBuf::from(dir),
                crate::policy::key_attrs(config),
                crate::policy::deployment_attrs(config),
            )
        });
        let policy = match &policy_source {
            Some((dir, keys, deployments)) => {
                let engine = PolicyEngine::load(dir, keys, deployments)?;
                tracing::info!(dir = %dir.display(), "data-residency policies loaded");
                Some(Arc::new(engine))
            }
            None => None,
        };
        let audit = match (&policy, audit_path(config)) {
            (Some(_), Some(path)) => {
                tracing::info!(path = %path.display(), "policy audit log");
                AuditLog::open(
                    &path,
                    config.policy.audit_max_bytes,
                    config.policy.audit_keep,
                )?
            }
            (Some(_), None) => {
                tracing::warn!("policy decisions are not audited ([policy] audit_log = \"\")");
                AuditLog::disabled()
            }
            (None, _) => AuditLog::disabled(),
        };
        let redactor = match &config.policy.redaction_key_env {
            Some(var) => Redactor::new(
                std::env::var(var)
                    .map_err(|_| StateError::RedactionKey(var.clone()))?
                    .into_bytes(),
            ),
            None => Redactor::random(),
        };
        Ok(Arc::new(Self {
            catalog: Catalog::build(config, &providers),
            keys,
            max_body_bytes: config.server.max_body_bytes,
            accounting: config.server.accounting,
            limiter: Limiter::from_config(config, redis.clone()),
            metrics: Arc::new(Metrics::new()),
            ledger: Arc::new(match &redis {
                Some(link) => open_ledger(config)?.with_shared(SharedSpend::new(link.clone())),
                None => open_ledger(config)?,
            }),
            budgets: config
                .budgets
                .iter()
                .map(|b| Budget::from_config(b, &config.keys))
                .collect(),
            routing: config.routing.clone(),
            anthropic_default_model: config.anthropic_default_model(),
            policy: RwLock::new(policy),
            audit,
            redactor,
            policy_source,
            draining: AtomicBool::new(false),
        }))
    }

    /// The policies in force now (a reload swaps them between two requests, never during one).
    pub fn policy(&self) -> Option<Arc<PolicyEngine>> {
        self.policy.read().expect("policy lock").clone()
    }

    /// Re-reads the policy directory; on any error the policies in force stay.
    pub fn reload_policy(&self) -> Result<(), crate::policy::PolicyError> {
        let Some((dir, keys, deployments)) = &self.policy_source else {
            return Ok(());
        };
        let engine = PolicyEngine::load(dir, keys, deployments)?;
        *self.policy.write().expect("policy lock") = Some(Arc::new(engine));
        Ok(())
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The configured audit log, or `audit.jsonl` in the default state directory; `""` disables it.
fn audit_path(config: &Config) -> Option<PathBuf> {
    match config.policy.audit_log.as_deref() {
        Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => state_dir().map(|d| d.join("audit.jsonl")),
    }
}

fn state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .map(|base| base.join("dsgw"))
}

/// The configured ledger file, or the default under `$XDG_STATE_HOME` (`~/.local/state`); an
/// empty path keeps spend in memory.
fn open_ledger(config: &Config) -> Result<Ledger, LedgerError> {
    let path = match config.ledger.path.as_deref() {
        Some("") => return Ok(Ledger::in_memory()),
        Some(p) => std::path::PathBuf::from(p),
        None => match state_dir() {
            Some(dir) => dir.join("ledger.jsonl"),
            None => return Ok(Ledger::in_memory()),
        },
    };
    tracing::info!(path = %path.display(), "spend ledger");
    Ledger::open(&path)
}
