//! The application: its state, built once from the configuration ([`AppState`]), the routes and
//! the middleware stack ([`router`]), the edge's request ids ([`request_id`]) and
//! authentication ([`authenticate`]), the operational endpoints ([`ops`]) and the server's
//! life: serving, reloading, draining ([`serve`]).

pub mod authenticate;
pub mod browsers;
pub mod edge;
pub mod ops;
pub mod request_id;
pub mod router;
pub mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::FromRef;

use crate::accounting::spend::ledger::{Ledger, LedgerError};
use crate::accounting::spend::shared::SharedSpend;
use crate::pipeline::admission::keys::{KeyError, KeyStore};
use crate::pipeline::admission::limits::Limiter;
use crate::pipeline::admission::policy::audit::{AuditError, AuditLog};
use crate::pipeline::admission::policy::redact::Redactor;
use crate::pipeline::admission::policy::{self, PolicyEngine, PolicyError};
use crate::pipeline::{Parts, Pipeline};
use crate::providers::{Provider, ProviderError};
use crate::support::config::Config;
use crate::support::redis_link::RedisLink;
use crate::support::state_dir::state_dir;
use crate::surface::anthropic;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("[redis]: {0}")]
    Redis(#[from] crate::support::redis_link::RedisLinkError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("[policy]: environment variable {0} (redaction_key_env) is not set")]
    RedactionKey(String),
    #[error(
        "no [[keys]] are configured, so the gateway would accept any caller; it only does that on a \
         loopback address, and {0} is not one. Add keys (`dsgw keys new`) or listen on 127.0.0.1."
    )]
    OpenNonLoopback(std::net::SocketAddr),
}

/// What the handlers read: the pipeline, the keys, and each surface's settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub keys: Arc<KeyStore>,
    pub anthropic: Arc<anthropic::Settings>,
    /// Largest request body accepted, in bytes; larger bodies get a 413.
    pub max_body_bytes: usize,
    /// Browser origins allowed (CORS; without keys, the only origins served at all).
    pub cors_origins: Arc<[http::HeaderValue]>,
    /// The longest wait for a request body's next bytes.
    pub body_timeout: std::time::Duration,
    /// Requests in flight and the runtime's lateness, for shedding load.
    pub load: Arc<edge::Load>,
}

impl FromRef<AppState> for Arc<Pipeline> {
    fn from_ref(state: &AppState) -> Self {
        state.pipeline.clone()
    }
}

impl FromRef<AppState> for Arc<anthropic::Settings> {
    fn from_ref(state: &AppState) -> Self {
        state.anthropic.clone()
    }
}

impl AppState {
    /// Everything serving needs: providers started, policies loaded, files opened.
    pub fn build(config: &Config) -> Result<Self, StateError> {
        let keys = Self::keys(config)?;
        let redis = Self::redis(config)?;
        let mut providers = HashMap::new();
        for (i, p) in config.providers.iter().enumerate() {
            providers.insert(p.name().to_owned(), Arc::new(Provider::start(i, p)?));
        }
        let policy = match &config.policy.dir {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                let engine = PolicyEngine::load(
                    &dir,
                    &policy::key_attrs(config),
                    &policy::deployment_attrs(config),
                )?;
                tracing::info!(dir = %dir.display(), "data-residency policies loaded");
                Some((dir, engine))
            }
            None => None,
        };
        let audit = open_audit(config, policy.is_some())?;
        let ledger = match &redis {
            Some(link) => open_ledger(config)?.with_shared(SharedSpend::new(link.clone())),
            None => open_ledger(config)?,
        };
        let parts = Parts {
            providers,
            limiter: Limiter::from_config(config, redis),
            ledger,
            policy,
            audit,
            redactor: redactor(config)?,
        };
        Ok(Self {
            pipeline: Arc::new(Pipeline::new(config, parts)),
            keys: Arc::new(keys),
            anthropic: Arc::new(anthropic::Settings {
                default_model: config.anthropic_default_model(),
            }),
            max_body_bytes: config.server.max_body_bytes,
            cors_origins: config
                .server
                .cors_origins
                .iter()
                .map(|o| http::HeaderValue::from_str(o).expect("validated origin"))
                .collect(),
            body_timeout: std::time::Duration::from_millis(config.server.body_timeout_ms),
            load: Arc::new(edge::Load::new(
                config.server.max_in_flight,
                config
                    .server
                    .queue_budget_ms
                    .map(std::time::Duration::from_millis),
            )),
        })
    }

    /// Refuses what [`AppState::build`] would refuse, starting and opening nothing: keys and
    /// secrets in the environment, the listener's exposure, Redis's URL, every provider's
    /// settings (a local model's files included) and the policies.
    pub fn check(config: &Config) -> Result<(), StateError> {
        Self::keys(config)?;
        Self::redis(config)?;
        for (i, p) in config.providers.iter().enumerate() {
            Provider::check(i, p)?;
        }
        if let Some(dir) = &config.policy.dir {
            PolicyEngine::load(
                &PathBuf::from(dir),
                &policy::key_attrs(config),
                &policy::deployment_attrs(config),
            )?;
        }
        redactor(config).map(drop)
    }

    fn keys(config: &Config) -> Result<KeyStore, StateError> {
        let keys = KeyStore::from_config(&config.keys)?;
        if keys.is_open() && !config.server.listen.ip().is_loopback() {
            return Err(StateError::OpenNonLoopback(config.server.listen));
        }
        Ok(keys)
    }

    fn redis(config: &Config) -> Result<Option<Arc<RedisLink>>, StateError> {
        Ok(match &config.redis {
            Some(r) => Some(Arc::new(RedisLink::new(r)?)),
            None => None,
        })
    }
}

fn redactor(config: &Config) -> Result<Redactor, StateError> {
    Ok(match &config.policy.redaction_key_env {
        Some(var) => Redactor::new(
            std::env::var(var)
                .map_err(|_| StateError::RedactionKey(var.clone()))?
                .into_bytes(),
        ),
        None => Redactor::random(),
    })
}

/// The configured audit log, or `audit.jsonl` in the default state directory; `""` disables it.
fn open_audit(config: &Config, policies: bool) -> Result<AuditLog, StateError> {
    if !policies {
        return Ok(AuditLog::disabled());
    }
    let path = match config.policy.audit_log.as_deref() {
        Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => state_dir().map(|d| d.join("audit.jsonl")),
    };
    match path {
        Some(path) => {
            tracing::info!(path = %path.display(), "policy audit log");
            Ok(AuditLog::open(
                &path,
                config.policy.audit_max_bytes,
                config.policy.audit_keep,
            )?)
        }
        None => {
            tracing::warn!("policy decisions are not audited ([policy] audit_log = \"\")");
            Ok(AuditLog::disabled())
        }
    }
}

/// The configured ledger file, or the default under `$XDG_STATE_HOME` (`~/.local/state`); an
/// empty path keeps spend in memory.
fn open_ledger(config: &Config) -> Result<Ledger, LedgerError> {
    let path = match config.ledger.path.as_deref() {
        Some("") => return Ok(Ledger::in_memory()),
        Some(p) => PathBuf::from(p),
        None => match state_dir() {
            Some(dir) => dir.join("ledger.jsonl"),
            None => return Ok(Ledger::in_memory()),
        },
    };
    tracing::info!(path = %path.display(), "spend ledger");
    Ledger::open(&path)
}
