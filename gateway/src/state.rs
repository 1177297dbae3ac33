//! Everything a request handler reads, built once from the configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::{KeyError, KeyStore};
use crate::budgets::Budget;
use crate::config::{Config, RoutingConfig};
use crate::ledger::{Ledger, LedgerError};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::models::Catalog;
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
            draining: AtomicBool::new(false),
        }))
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The configured ledger file, or the default under `$XDG_STATE_HOME` (`~/.local/state`); an
/// empty path keeps spend in memory.
fn open_ledger(config: &Config) -> Result<Ledger, LedgerError> {
    let path = match config.ledger.path.as_deref() {
        Some("") => return Ok(Ledger::in_memory()),
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let base = std::env::var_os("XDG_STATE_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state"))
                });
            match base {
                Some(base) => base.join("dsgw/ledger.jsonl"),
                None => return Ok(Ledger::in_memory()),
            }
        }
    };
    tracing::info!(path = %path.display(), "spend ledger");
    Ledger::open(&path)
}
