//! The application: its state, built once from the configuration ([`AppState`]), the routes and
//! the middleware stack ([`router`]), the edge's request ids ([`request_id`]) and
//! authentication ([`authenticate`]), the operational endpoints ([`ops`]), the edge's bounds
//! ([`edge`], [`load`]), the threads that serve connections ([`lanes`]) and the server's life:
//! serving, reloading, draining ([`serve`]).

pub mod authenticate;
pub mod browsers;
pub mod edge;
pub mod gate;
pub mod lanes;
pub mod load;
pub mod ops;
pub mod request_id;
pub mod router;
pub mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::FromRef;

use crate::accounting::spend::ledger::{Ledger, LedgerError, read_some_records};
use crate::accounting::spend::shared::SharedSpend;
use crate::pipeline::admission::directory::Directory;
use crate::pipeline::admission::keys::{KeyError, KeyStore, LiveKeys};
use crate::pipeline::admission::limits::Limiter;
use crate::pipeline::admission::policy::audit::{AuditError, AuditLog};
use crate::pipeline::admission::policy::redact::Redactor;
use crate::pipeline::admission::policy::{self, PolicyEngine, PolicyError};
use crate::pipeline::{Parts, Pipeline};
use crate::providers::{Provider, ProviderError};
use crate::store::Store;
use crate::store::shipper::{
    RECORDS_PER_BATCH, Shipper, ShipperHandle, checkpoint_path, read_checkpoint,
};
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
         loopback address, and {0} is not one. Add keys (`dsgw keys new`), a [store] to hold them, \
         or listen on 127.0.0.1."
    )]
    OpenNonLoopback(std::net::SocketAddr),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("store {url}: reading keys, budgets and limits: {source}")]
    StoreRead {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("[store] is set: the state is opened with AppState::open")]
    StoreNeedsOpen,
}

/// What runs beside the server when there is a store: the ledger's shipping and the watch for
/// changes. Finished at shutdown, after the ledger's last commit.
#[derive(Debug)]
pub struct StoreTasks {
    shipper: ShipperHandle,
    watch: tokio::task::JoinHandle<()>,
}

impl StoreTasks {
    /// Ships what the ledger committed last, then stops watching.
    pub async fn finish(self) {
        self.shipper
            .finish(std::time::Duration::from_secs(10))
            .await;
        self.watch.abort();
    }
}

/// What the handlers read: the pipeline, the keys, and each surface's settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    /// The keys in force (swapped when the store changes).
    pub keys: Arc<LiveKeys>,
    /// The file's keys, budgets and limits, merged with each store snapshot.
    pub directory: Arc<Directory>,
    /// The store, when `[store]` is set (the admin API's data).
    pub store: Option<Arc<Store>>,
    pub anthropic: Arc<anthropic::Settings>,
    /// Largest request body accepted, in bytes; larger bodies get a 413.
    pub max_body_bytes: usize,
    /// Browser origins allowed (CORS; without keys, the only origins served at all).
    pub cors_origins: Arc<[http::HeaderValue]>,
    /// The longest wait for a request body's next bytes.
    pub body_timeout: std::time::Duration,
    /// Requests in flight and the runtime's lateness, for shedding load.
    pub load: Arc<load::Load>,
}

impl FromRef<AppState> for Arc<Pipeline> {
    fn from_ref(state: &AppState) -> Self {
        state.pipeline.clone()
    }
}

impl FromRef<AppState> for crate::surface::admin::Admin {
    fn from_ref(state: &AppState) -> Self {
        Self {
            pipeline: state.pipeline.clone(),
            directory: state.directory.clone(),
            keys: state.keys.clone(),
        }
    }
}

impl FromRef<AppState> for Arc<anthropic::Settings> {
    fn from_ref(state: &AppState) -> Self {
        state.anthropic.clone()
    }
}

impl AppState {
    /// Everything serving needs, without a store: providers started, policies loaded, files
    /// opened.
    pub fn build(config: &Config) -> Result<Self, StateError> {
        if config.store.is_some() {
            return Err(StateError::StoreNeedsOpen);
        }
        Self::assemble(config, open_ledger(config)?, None)
    }

    /// Everything serving needs, with the store when one is configured: connected and migrated,
    /// its keys, budgets and limits read and in force, the ledger's unshipped rows written, and
    /// the tasks that keep both current started.
    pub async fn open(config: &Config) -> Result<(Self, Option<StoreTasks>), StateError> {
        let Some(store_config) = &config.store else {
            return Ok((Self::build(config)?, None));
        };
        let store = Store::open(store_config).await?;
        let read_error = |source| StateError::StoreRead {
            url: store.shown().to_owned(),
            source,
        };
        let snapshot = store.snapshot().await.map_err(read_error)?;
        let (queue, rx) = crate::store::shipper::queue();
        let spool = ledger_path(config);
        let (ledger, unshipped) = match &spool {
            Some(path) => {
                tracing::info!(path = %path.display(), store = %store.shown(), "spend ledger: spooled to the store");
                Ledger::open_spool(path, queue, read_checkpoint(&checkpoint_path(path)))?
            }
            None => (Ledger::in_memory_to(queue), Default::default()),
        };
        let state = Self::assemble(config, ledger, Some(store.clone()))?;
        if let Some(path) = &spool {
            // What the last run committed but the store never confirmed, a batch at a time.
            let mut at = unshipped.from;
            let mut shipped = 0;
            while at < unshipped.offset {
                let mut batch = Vec::new();
                at = read_some_records(path, at, true, RECORDS_PER_BATCH, |r| batch.push(r))
                    .map_err(|source| LedgerError::Io {
                        path: path.clone(),
                        source,
                    })?;
                if batch.is_empty() {
                    break;
                }
                shipped += store.insert_ledger(&batch).await.map_err(read_error)?.len();
            }
            if shipped > 0 {
                tracing::info!(
                    records = shipped,
                    "ledger rows from the last run shipped to the store"
                );
            }
            std::fs::write(checkpoint_path(path), unshipped.offset.to_string()).map_err(
                |source| LedgerError::Io {
                    path: checkpoint_path(path),
                    source,
                },
            )?;
        }
        let counters = store
            .current_counters(crate::accounting::spend::record::now())
            .await
            .map_err(read_error)?;
        state.pipeline.ledger.confirmed([], counters);
        state
            .directory
            .apply(&snapshot, &state.keys, &state.pipeline);
        let shipper = Shipper {
            store: store.clone(),
            ledger: state.pipeline.ledger.clone(),
            spool: spool.clone(),
            retention_days: store_config.retention_days,
        }
        .spawn(rx);
        let watch = {
            let state = state.clone();
            tokio::spawn(crate::store::watch::watch(
                store.clone(),
                store_config.url.clone(),
                snapshot.revision,
                std::time::Duration::from_secs(store_config.refresh_secs),
                move |snapshot| {
                    state
                        .directory
                        .apply(&snapshot, &state.keys, &state.pipeline)
                },
            ))
        };
        Ok((state, Some(StoreTasks { shipper, watch })))
    }

    /// Re-reads the store and puts what it holds in force now (after this replica changed it;
    /// the others hear of it through the watch).
    pub async fn refresh_directory(&self) -> Result<(), sqlx::Error> {
        if let Some(store) = &self.store {
            let snapshot = store.snapshot().await?;
            self.directory.apply(&snapshot, &self.keys, &self.pipeline);
        }
        Ok(())
    }

    fn assemble(
        config: &Config,
        ledger: Ledger,
        store: Option<Arc<Store>>,
    ) -> Result<Self, StateError> {
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
            Some(link) => ledger.with_shared(SharedSpend::new(link.clone())),
            None => ledger,
        };
        let parts = Parts {
            store: store.clone(),
            providers,
            limiter: Limiter::from_config(config, redis),
            ledger,
            policy,
            audit,
            redactor: redactor(config)?,
        };
        let pipeline = Arc::new(Pipeline::new(config, parts));
        let load = Arc::new(load::Load::new(
            config.server.max_in_flight,
            Some(config.server.queue_budget_ms)
                .filter(|&ms| ms > 0)
                .map(std::time::Duration::from_millis),
            crate::support::lane::count(),
        ));
        for series in load.collectors() {
            pipeline.metrics.register(series);
        }
        Ok(Self {
            pipeline,
            keys: Arc::new(LiveKeys::new(keys)),
            directory: Arc::new(Directory::new(config)),
            store,
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
            load,
        })
    }

    /// Refuses what [`AppState::build`] would refuse, starting and opening nothing: keys and
    /// secrets in the environment, the listener's exposure, Redis's URL, every provider's
    /// settings (a local model's files included) and the policies.
    pub fn check(config: &Config) -> Result<(), StateError> {
        Self::keys(config)?;
        Self::redis(config)?;
        if let Some(store) = &config.store {
            crate::store::check_url(&store.url)?;
        }
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
            // With a store, the keys come from it: until one exists, nobody is admitted.
            if config.store.is_some() {
                return Ok(KeyStore::nobody());
            }
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

/// The configured ledger file, or the default under `$XDG_STATE_HOME` (`~/.local/state`);
/// none for an empty path.
fn ledger_path(config: &Config) -> Option<PathBuf> {
    match config.ledger.path.as_deref() {
        Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => state_dir().map(|dir| dir.join("ledger.jsonl")),
    }
}

/// The ledger file (or, without one, spend in memory only).
fn open_ledger(config: &Config) -> Result<Ledger, LedgerError> {
    let Some(path) = ledger_path(config) else {
        return Ok(Ledger::in_memory());
    };
    tracing::info!(path = %path.display(), "spend ledger");
    Ledger::open(&path)
}
