//! The store: keys, teams, budgets, limits, the spend ledger and the admin audit log in one
//! database, chosen by URL: SQLite (a file; the embedded default) or PostgreSQL (replicas
//! sharing one). The SQL is written once against sqlx's `Any` driver; what differs between the
//! two ([`Backend`]) is the migrations' dialect and how replicas hear of a change.
//!
//! Nothing here is on the request path: requests read the in-memory view built from
//! [`directory::Snapshot`], and ledger rows arrive in batches from the ledger's writer.

pub mod audit;
pub mod directory;
pub mod ledger;
pub mod shipper;
pub mod watch;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Executor, SqlSafeStr};

use crate::support::config::{StoreConfig, redact_url};

/// The channel replicas `LISTEN` on (PostgreSQL).
pub const CHANNEL: &str = "dsgw_changes";

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// How the dialect spells an exact decimal of dollars (SQLite has none: REAL).
    fn usd_decimal(self) -> &'static str {
        match self {
            Self::Sqlite => "REAL",
            Self::Postgres => "NUMERIC(30, 12)",
        }
    }

    /// The migrations, one SQL text each for both dialects.
    fn migrations(self) -> Vec<Migration> {
        const SOURCES: &[(i64, &str, &str)] =
            &[(1, "init", include_str!("migrations/0001_init.sql"))];
        SOURCES
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    AssertSqlSafe(sql.replace("USD_DECIMAL", self.usd_decimal())).into_sql_str(),
                    false,
                )
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("[store] url {0:?}: expected postgres://user@host:port/db or sqlite:///path/file.db")]
    BadUrl(String),
    #[error("store {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "store {url}: the database's schema has migration {version}, which this dsgw does not \
         know (a newer dsgw wrote it); run a dsgw at least as new as the one that migrated it"
    )]
    Newer { url: String, version: i64 },
    #[error("store {url}: migrating the schema: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// One store, shared by everything that reads or writes it.
#[derive(Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL with any password removed: what messages and logs name.
    shown: String,
    /// Whether the last operation reached the database (readiness detail, a metric).
    up: AtomicBool,
}

/// Checks the URL's form, connecting to nothing (`dsgw check`).
pub fn check_url(url: &str) -> Result<Backend, StoreError> {
    let backend = Backend::of(url).ok_or_else(|| StoreError::BadUrl(redact_url(url)))?;
    sqlx::any::install_default_drivers();
    url.parse::<AnyConnectOptions>()
        .map_err(|_| StoreError::BadUrl(redact_url(url)))?;
    Ok(backend)
}

/// Connects once and asks the database to answer, changing nothing (`dsgw check --connect`).
pub async fn ping(config: &StoreConfig) -> Result<(), StoreError> {
    use sqlx::Connection;
    check_url(&config.url)?;
    let shown = redact_url(&config.url);
    let db = |source| StoreError::Database {
        url: shown.clone(),
        source,
    };
    let attempt = async {
        let mut conn = sqlx::AnyConnection::connect(&config.url).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    match tokio::time::timeout(Duration::from_millis(config.statement_timeout_ms), attempt).await {
        Ok(result) => result.map_err(db),
        Err(_) => Err(db(sqlx::Error::PoolTimedOut)),
    }
}

impl Store {
    /// Connects, and brings the schema up to this binary's version; a schema newer than this
    /// binary is refused rather than used.
    pub async fn open(config: &StoreConfig) -> Result<Arc<Self>, StoreError> {
        let backend = check_url(&config.url)?;
        let shown = redact_url(&config.url);
        let db = |source| StoreError::Database {
            url: shown.clone(),
            source,
        };
        if backend == Backend::Sqlite {
            create_sqlite_parent(&config.url);
        }
        let url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !config.url.contains("mode=") => {
                let sep = if config.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}mode=rwc", config.url)
            }
            _ => config.url.clone(),
        };
        let timeout_ms = config.statement_timeout_ms;
        let pool = AnyPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(Duration::from_millis(timeout_ms.max(1000)))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            // WAL: readers never wait on the writer; a writer waits its turn
                            // rather than failing at once.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "PRAGMA busy_timeout = {timeout_ms}"
                            )))
                            .await?;
                        }
                        Backend::Postgres => {
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "SET statement_timeout = {timeout_ms}"
                            )))
                            .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db)?;
        let store = Self {
            pool,
            backend,
            shown,
            up: AtomicBool::new(true),
        };
        store.migrate().await?;
        Ok(Arc::new(store))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = Migrator::with_migrations(self.backend.migrations());
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| match source {
                sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Newer {
                    url: self.shown.clone(),
                    version,
                },
                source => StoreError::Migrate {
                    url: self.shown.clone(),
                    source,
                },
            })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that writes. SQLite's plain `BEGIN` takes the write lock only at the first
    /// write, and a transaction that read before it fails at once (`SQLITE_BUSY`, with no
    /// `busy_timeout` wait) when another writer (the ledger's shipper, another process)
    /// committed in between; `BEGIN IMMEDIATE` takes the lock up front and waits its turn.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// The URL as logs may show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Notes whether an operation reached the database, logging the transitions once.
    pub fn observe<T>(&self, result: &Result<T, sqlx::Error>) {
        let ok = result.is_ok();
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            match result {
                Ok(_) => {
                    tracing::info!(target: "dsgw::store", store = %self.shown, "store reachable again")
                }
                Err(e) => tracing::error!(target: "dsgw::store", store = %self.shown, error = %e,
                    "store unreachable: serving with the last view read; spend rows wait"),
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite:///a/b.db` or `sqlite://a/b.db`: the folder the file goes in, created if missing.
fn create_sqlite_parent(url: &str) {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return;
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        let _ = std::fs::create_dir_all(dir);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_apart_and_shown_without_passwords() {
        assert_eq!(Backend::of("sqlite:///tmp/x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("postgres://u@h:5/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of("mysql://u@h/db"), None);
        let Err(e) = check_url("postgresx://dsgw:hunter2@db:5432/dsgw") else {
            panic!("accepted")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(check_url("redis://x").is_err());
    }

    /// A change that reads, then writes, while another writer commits in between (the shared
    /// revision row: every change bumps it). `read` is told once the read is done.
    async fn read_then_write(
        store: &Store,
        immediate: bool,
        read: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = if immediate {
            store.begin_write().await?
        } else {
            store.pool().begin().await?
        };
        sqlx::query("SELECT n FROM revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let _ = read.send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        sqlx::query("UPDATE revision SET n = n + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn other_writer(
        store: &Store,
        after: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), sqlx::Error> {
        let _ = after.await;
        let mut tx = store.begin_write().await?;
        sqlx::query("UPDATE revision SET n = n + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    #[tokio::test]
    async fn sqlite_writers_wait_their_turn_instead_of_failing() {
        let dir = std::env::temp_dir().join(format!("dsgw-store-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&StoreConfig::sqlite_in(&dir)).await.unwrap();
        // What plain BEGIN did: the reader's write fails at once, busy_timeout or not.
        let (read, after) = tokio::sync::oneshot::channel();
        let (deferred, _) = tokio::join!(
            read_then_write(&store, false, read),
            other_writer(&store, after)
        );
        assert!(
            deferred.is_err(),
            "a deferred transaction upgraded after a commit"
        );
        let (read, after) = tokio::sync::oneshot::channel();
        let (first, second) = tokio::join!(
            read_then_write(&store, true, read),
            other_writer(&store, after)
        );
        first.unwrap();
        second.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
