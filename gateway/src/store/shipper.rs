//! Ledger rows on their way to the store, off the request path. The ledger file stays the
//! spool: a record reaches the store after the file has committed it, and the file offset the
//! store has confirmed is kept beside the file, so a replica killed between the two ships the
//! rest when it starts again. Waiting rows held in memory are bounded; past the bound they are
//! read back from the spool.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Store, now_ms};
use crate::accounting::spend::ledger::{Downstream, Ledger, read_some_records};
use crate::accounting::spend::record::Record;

/// Records gathered into one transaction at most.
pub const RECORDS_PER_BATCH: usize = 2_000;
/// How often the counters are re-read when nothing is shipped (other replicas' spend).
const COUNTER_REFRESH: Duration = Duration::from_secs(1);

/// Committed records on their way to the store.
#[derive(Debug)]
pub struct Batch {
    records: Vec<Record>,
    file_offset: Option<u64>,
}

/// Records held in memory for the store at most, while it is away. Past it, records that are
/// safe in the spool file are not queued; the shipper reads them back from the file once the
/// store answers again (without a spool nothing is dropped: there is no other copy).
const MAX_QUEUED: usize = 100_000;

/// What the two ends of the queue share.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Records queued at most (with a spool).
    most: usize,
    queued: AtomicUsize,
    /// Records were left in the spool only: read them back before moving the checkpoint.
    overflowed: AtomicBool,
}

/// The ledger's side of the queue.
#[derive(Debug)]
pub struct ShipQueue {
    tx: mpsc::UnboundedSender<Batch>,
    backlog: Arc<Backlog>,
}

impl Downstream for ShipQueue {
    fn committed(&self, records: Vec<Record>, file_offset: Option<u64>) {
        let queued = self.backlog.queued.load(Ordering::Relaxed);
        if file_offset.is_some() && queued >= self.backlog.most {
            if !self.backlog.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!(target: "dsgw::store", queued, "the store is behind: new ledger rows wait in the spool file only");
            }
            return;
        }
        self.backlog
            .queued
            .fetch_add(records.len(), Ordering::Relaxed);
        // The shipper only stops at shutdown, after the ledger's last commit.
        let _ = self.tx.send(Batch {
            records,
            file_offset,
        });
    }
}

/// The shipper's side of the queue.
#[derive(Debug)]
pub struct ShipRx {
    rx: mpsc::UnboundedReceiver<Batch>,
    backlog: Arc<Backlog>,
}

/// The queue's two ends.
pub fn queue() -> (Arc<ShipQueue>, ShipRx) {
    queue_holding(MAX_QUEUED)
}

/// The queue's two ends, holding at most `most` records in memory when there is a spool.
pub fn queue_holding(most: usize) -> (Arc<ShipQueue>, ShipRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog {
        most,
        ..Backlog::default()
    });
    (
        Arc::new(ShipQueue {
            tx,
            backlog: backlog.clone(),
        }),
        ShipRx { rx, backlog },
    )
}

/// Where the confirmed offset of a ledger file is kept.
pub fn checkpoint_path(ledger: &std::path::Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".shipped");
    PathBuf::from(name)
}

/// The file offset the store last confirmed (0 when never).
pub fn read_checkpoint(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_checkpoint(path: &std::path::Path, offset: u64) {
    // Replace, never tear: a stale checkpoint only re-ships rows the store skips.
    let tmp = path.with_extension("shipped.tmp");
    if let Err(e) =
        std::fs::write(&tmp, offset.to_string()).and_then(|()| std::fs::rename(&tmp, path))
    {
        tracing::warn!(target: "dsgw::store", error = %e, "cannot write the ledger checkpoint");
    }
}

/// Runs the shipping: batches in, rows and counters written, the ledger told.
#[derive(Debug)]
pub struct Shipper {
    pub store: Arc<Store>,
    pub ledger: Arc<Ledger>,
    /// The ledger file the records were committed to first, if any.
    pub spool: Option<PathBuf>,
    pub retention_days: Option<u32>,
}

/// Stops a running shipper once what is queued is written.
#[derive(Debug)]
pub struct ShipperHandle {
    finish: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ShipperHandle {
    /// Writes what is queued, then stops; gives up after `limit` (the rows stay in the spool).
    pub async fn finish(self, limit: Duration) {
        let _ = self.finish.send(());
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!(target: "dsgw::store", "ledger rows still unshipped at exit; they ship at the next start");
        }
    }
}

impl Shipper {
    pub fn spawn(self, rx: ShipRx) -> ShipperHandle {
        let (finish, stop) = oneshot::channel();
        ShipperHandle {
            finish,
            task: tokio::spawn(self.run(rx, stop)),
        }
    }

    async fn run(self, queue: ShipRx, mut stop: oneshot::Receiver<()>) {
        let ShipRx { mut rx, backlog } = queue;
        let mut last_sweep = None::<tokio::time::Instant>;
        let mut stopping = false;
        // The spool offset the store has confirmed: it only moves forward, and not while
        // records wait in the spool alone.
        let mut confirmed = self
            .spool
            .as_deref()
            .map_or(0, |s| read_checkpoint(&checkpoint_path(s)));
        loop {
            let first = if stopping {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(b) => Some(b),
                        None => return,
                    },
                    _ = &mut stop => { stopping = true; continue; }
                    () = tokio::time::sleep(COUNTER_REFRESH) => None,
                }
            };
            let mut records = Vec::new();
            let mut offset = None;
            if let Some(first) = first {
                offset = first.file_offset.or(offset);
                records.extend(first.records);
                while records.len() < RECORDS_PER_BATCH {
                    match rx.try_recv() {
                        Ok(b) => {
                            offset = b.file_offset.or(offset);
                            records.extend(b.records);
                        }
                        Err(_) => break,
                    }
                }
            }
            backlog.queued.fetch_sub(records.len(), Ordering::Relaxed);
            self.ship(&records).await;
            if let Some(spool) = &self.spool {
                if backlog.overflowed.swap(false, Ordering::Relaxed) {
                    confirmed = self.catch_up(spool, confirmed).await;
                } else if let Some(offset) = offset.filter(|o| *o > confirmed) {
                    confirmed = offset;
                    write_checkpoint(&checkpoint_path(spool), offset);
                }
            }
            if let Some(days) = self.retention_days
                && last_sweep.is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
            {
                last_sweep = Some(tokio::time::Instant::now());
                let cutoff = now_ms() - i64::from(days) * 86_400_000;
                match self.store.delete_ledger_before(cutoff).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(target: "dsgw::store", rows = n, days, "ledger rows past retention deleted")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(target: "dsgw::store", error = %e, "retention sweep failed")
                    }
                }
            }
        }
    }

    /// Ships the spool from `from` to its end, a batch at a time (rows already in the store
    /// are skipped), moving the checkpoint as it goes; returns where it got to.
    async fn catch_up(&self, spool: &std::path::Path, from: u64) -> u64 {
        let mut at = from;
        loop {
            let path = spool.to_owned();
            let read = tokio::task::spawn_blocking(move || {
                let mut records = Vec::new();
                read_some_records(&path, at, true, RECORDS_PER_BATCH, |r| records.push(r))
                    .map(|next| (records, next))
            })
            .await;
            let (records, next) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    tracing::error!(target: "dsgw::store", error = %e, "cannot read the spool back; the rest ships at the next start");
                    return at;
                }
                Err(_) => return at,
            };
            if records.is_empty() {
                tracing::info!(target: "dsgw::store", "the store has caught up with the spool");
                return at;
            }
            self.ship(&records).await;
            at = next;
            write_checkpoint(&checkpoint_path(spool), at);
        }
    }

    /// Writes `records` (retrying until the store takes them: they are safe in the spool
    /// meanwhile) and re-reads the counters.
    async fn ship(&self, records: &[Record]) {
        let mut wait = Duration::from_millis(100);
        loop {
            let result = async {
                let written = if records.is_empty() {
                    HashSet::new()
                } else {
                    self.store.insert_ledger(records).await?
                };
                let stored = self
                    .store
                    .current_counters(crate::accounting::spend::record::now())
                    .await?;
                Ok::<_, sqlx::Error>((written, stored))
            }
            .await;
            self.store.observe(&result);
            match result {
                Ok((written, stored)) => {
                    // Only rows this batch wrote stop counting as pending: a row shipped twice
                    // (read back from the spool) is not confirmed twice.
                    self.ledger
                        .confirmed(records.iter().filter(|r| written.contains(&r.uid)), stored);
                    return;
                }
                // Nothing new to write: try the counters again at the next tick.
                Err(_) if records.is_empty() => return,
                Err(e) => {
                    tracing::debug!(target: "dsgw::store", error = %e, records = records.len(), "ledger batch not written; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ledger::tests::record;
    use crate::support::config::StoreConfig;

    #[tokio::test]
    async fn records_past_the_queue_bound_are_read_back_from_the_spool() {
        let dir = std::env::temp_dir().join(format!("dsgw-store-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&StoreConfig::sqlite_in(&dir)).await.unwrap();
        let now = crate::accounting::spend::record::now();
        let spool = dir.join("ledger.jsonl");
        let records: Vec<Record> = (0..5).map(|i| record(&format!("r{i}"), now, 10)).collect();
        let mut text = String::new();
        let mut ends = Vec::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
            ends.push(text.len() as u64);
        }
        std::fs::write(&spool, &text).unwrap();
        // Two fit; the rest are committed while nobody drains the queue: spool only.
        let (queue, rx) = queue_holding(2);
        queue.committed(records[..2].to_vec(), Some(ends[1]));
        queue.committed(records[2..4].to_vec(), Some(ends[3]));
        queue.committed(records[4..].to_vec(), Some(ends[4]));
        let shipper = Shipper {
            store: store.clone(),
            ledger: Arc::new(Ledger::in_memory()),
            spool: Some(spool.clone()),
            retention_days: None,
        }
        .spawn(rx);
        shipper.finish(Duration::from_secs(10)).await;
        assert_eq!(
            store.ledger_rows().await.unwrap(),
            5,
            "every record reached the store once"
        );
        assert_eq!(read_checkpoint(&checkpoint_path(&spool)), ends[4]);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
