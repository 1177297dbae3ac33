//! How a replica hears that keys, teams, budgets or limits changed: PostgreSQL's `LISTEN`
//! (the change's transaction sends `NOTIFY` as it commits), the revision polled as the
//! backstop (and the only way for SQLite), and a full re-read every `refresh` whatever was
//! heard. While the store is away the last view stays in force; the store's health says so.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use super::directory::Snapshot;
use super::{Backend, CHANNEL, Store};

/// How often the revision is compared: the bound on how stale a view is when no
/// notification arrives.
fn poll_every(backend: Backend) -> Duration {
    match backend {
        // A local file: cheap to read often.
        Backend::Sqlite => Duration::from_millis(250),
        // Notifications carry the change; the poll only covers a lost listener connection.
        Backend::Postgres => Duration::from_millis(500),
    }
}

/// Watches the store and hands every new snapshot to `apply`. Runs until the process ends.
pub async fn watch(
    store: Arc<Store>,
    url: String,
    mut known: i64,
    refresh: Duration,
    apply: impl Fn(Snapshot) + Send + Sync + 'static,
) {
    let mut listener = None;
    let mut next_listen_try = tokio::time::Instant::now();
    let mut last_full = tokio::time::Instant::now();
    let mut poll = tokio::time::interval(poll_every(store.backend()));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if store.backend() == Backend::Postgres
            && listener.is_none()
            && tokio::time::Instant::now() >= next_listen_try
        {
            listener = listen(&url).await;
            next_listen_try = tokio::time::Instant::now() + Duration::from_secs(5);
        }
        let heard = match listener.as_mut() {
            Some(l) => tokio::select! {
                n = l.recv() => match n {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(target: "dsgw::store", error = %e, "change notifications lost; polling until they are back");
                        listener = None;
                        false
                    }
                },
                _ = poll.tick() => false,
            },
            None => {
                poll.tick().await;
                false
            }
        };
        let full = last_full.elapsed() >= refresh;
        let changed = if heard || full {
            true
        } else {
            match store.revision().await {
                Ok(n) => n != known,
                Err(_) => false,
            }
        };
        if !changed {
            continue;
        }
        match store.snapshot().await {
            Ok(snapshot) => {
                last_full = tokio::time::Instant::now();
                if snapshot.revision != known || full {
                    known = snapshot.revision;
                    apply(snapshot);
                }
            }
            Err(e) => {
                tracing::debug!(target: "dsgw::store", error = %e, "store view not refreshed");
            }
        }
    }
}

async fn listen(url: &str) -> Option<PgListener> {
    let attempt = async {
        let mut l = PgListener::connect(url).await?;
        l.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(l)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(l)) => Some(l),
        Ok(Err(e)) => {
            tracing::warn!(target: "dsgw::store", error = %e, "cannot LISTEN for changes; polling");
            None
        }
        Err(_) => {
            tracing::warn!(target: "dsgw::store", "LISTEN timed out; polling");
            None
        }
    }
}
