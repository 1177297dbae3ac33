//! The spend ledger in the store: rows written in batches off the request path (each exactly
//! once: a retried batch skips the rows it already wrote), the spend counters budgets read,
//! the reports finance reads, and the retention sweep.
//!
//! The ledger file stays the spool: a record reaches the store after the file has committed
//! it, and the file offset the store has confirmed is kept beside the file, so a replica
//! killed between the two ships the rest when it starts again.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::{Store, now_ms};
use crate::accounting::spend::ledger::{Downstream, Ledger, read_some_records};
use crate::accounting::spend::record::{Record, Totals, counter, day_of};

/// Rows per INSERT statement (26 parameters each, well under either database's limit).
const ROWS_PER_STATEMENT: usize = 100;
/// Records gathered into one transaction at most.
const RECORDS_PER_BATCH: usize = 2_000;
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

/// One row of a spend report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRow {
    pub group: String,
    pub totals: Totals,
}

/// What a report groups by; each names one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Team,
    Key,
    Model,
    Day,
    Deployment,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "team" => Self::Team,
            "key" => Self::Key,
            "model" => Self::Model,
            "day" => Self::Day,
            "deployment" => Self::Deployment,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Key => "key",
            Self::Model => "model",
            Self::Day => "day",
            Self::Deployment => "deployment",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Key => "key_id",
            Self::Model => "model",
            Self::Day => "day",
            Self::Deployment => "deployment",
        }
    }
}

const TOTALS: &str = "COUNT(*) - COUNT(unanswered) AS requests, \
    COUNT(unanswered) AS unanswered, \
    CAST(COALESCE(SUM(CASE WHEN unanswered IS NULL THEN 0 ELSE cost END), 0) AS BIGINT) AS unanswered_cost, \
    CAST(SUM(cache_hit) AS BIGINT) AS cache_hit, CAST(SUM(cache_miss) AS BIGINT) AS cache_miss, \
    CAST(SUM(output) AS BIGINT) AS output, CAST(SUM(reasoning) AS BIGINT) AS reasoning, \
    CAST(SUM(cost) AS BIGINT) AS cost";

fn totals(row: &sqlx::any::AnyRow) -> Result<Totals, sqlx::Error> {
    let n = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
    Ok(Totals {
        requests: n("requests")?,
        unanswered: n("unanswered")?,
        unanswered_cost: n("unanswered_cost")?,
        cache_hit: n("cache_hit")?,
        cache_miss: n("cache_miss")?,
        output: n("output")?,
        reasoning: n("reasoning")?,
        cost: n("cost")?,
    })
}

/// Which rows a report reads: `[from_ms, to_ms)`, one key or team.
#[derive(Debug, Clone, Default)]
pub struct SpendFilter {
    pub from_ms: i64,
    pub to_ms: i64,
    pub team: Option<String>,
    pub key_id: Option<String>,
}

impl Store {
    /// Writes each record that is not there yet, and adds those (only those) to the spend
    /// counters, in one transaction; returns the ids it wrote.
    pub async fn insert_ledger(&self, records: &[Record]) -> Result<HashSet<String>, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        let mut written = HashSet::new();
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO ledger (uid, request_id, ts_ms, day, key_id, team, model, deployment, \
                 provider, cache_hit, cache_miss, output, reasoning, cost_cache_hit, \
                 cost_cache_miss, cost_output, cost, computed_cost, currency, estimated, outcome, \
                 price, era, tier, unanswered, attempt) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..26 {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", i * 26 + c + 1));
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (uid) DO NOTHING RETURNING uid");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                let pico = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                query = query
                    .bind(r.uid.clone())
                    .bind(r.request_id.clone())
                    .bind(pico(r.ts.saturating_mul(1000)))
                    .bind(day_of(r.ts))
                    .bind(r.key_id.clone())
                    .bind(r.team.clone())
                    .bind(r.model.clone())
                    .bind(r.deployment.clone())
                    .bind(r.deployment.split('/').next().unwrap_or("").to_owned())
                    .bind(pico(r.cache_hit))
                    .bind(pico(r.cache_miss))
                    .bind(pico(r.output))
                    .bind(pico(r.reasoning))
                    .bind(pico(r.cost_cache_hit))
                    .bind(pico(r.cost_cache_miss))
                    .bind(pico(r.cost_output))
                    .bind(pico(r.cost))
                    .bind(r.computed_cost.map(pico))
                    .bind(r.currency.clone())
                    .bind(i64::from(r.estimated))
                    .bind(if r.outcome.is_empty() {
                        "completed".to_owned()
                    } else {
                        r.outcome.clone()
                    })
                    .bind(r.price.clone())
                    .bind(r.era.clone())
                    .bind(r.tier.clone())
                    .bind(r.unanswered.clone())
                    .bind(r.attempt.map(i64::from));
            }
            for row in query.fetch_all(&mut *tx).await? {
                written.insert(row.try_get::<String, _>("uid")?);
            }
        }
        let mut sums: HashMap<(&str, &str, &str, String), i64> = HashMap::new();
        for r in records.iter().filter(|r| written.contains(&r.uid)) {
            let day = day_of(r.ts);
            let month = day[..7].to_owned();
            for (scope, name) in [("team", r.team.as_str()), ("key", r.key_id.as_str())] {
                for period in [day.clone(), month.clone(), "total".to_owned()] {
                    *sums.entry((scope, name, &r.team, period)).or_default() +=
                        i64::try_from(r.cost).unwrap_or(i64::MAX);
                }
            }
        }
        for ((scope, name, team, period), pico) in sums {
            sqlx::query(
                "INSERT INTO spend_counters (scope, name, team, period, pico) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, name, period) \
                 DO UPDATE SET pico = spend_counters.pico + excluded.pico",
            )
            .bind(scope)
            .bind(name)
            .bind(team)
            .bind(period)
            .bind(pico)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// The spend counters of the current day, month and all time, named as the ledger names
    /// them ([`counter`]).
    pub async fn current_counters(&self, now: u64) -> Result<HashMap<String, u64>, sqlx::Error> {
        let day = day_of(now);
        let rows = sqlx::query(
            "SELECT scope, name, team, period, pico FROM spend_counters \
             WHERE period = $1 OR period = $2 OR period = 'total'",
        )
        .bind(day.clone())
        .bind(day[..7].to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let text = |c: &str| r.try_get::<String, _>(c);
                Ok((
                    counter(
                        &text("team")?,
                        &text("scope")?,
                        &text("name")?,
                        &text("period")?,
                    ),
                    r.try_get::<i64, _>("pico")?.max(0) as u64,
                ))
            })
            .collect()
    }

    /// The totals of the rows `filter` keeps, grouped by `columns` (a fixed list, never input).
    async fn grouped(
        &self,
        columns: &str,
        filter: &SpendFilter,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns}, {TOTALS} FROM ledger \
             WHERE ts_ms >= $1 AND ts_ms < $2 AND ($3 = '' OR team = $3) AND ($4 = '' OR key_id = $4) \
             GROUP BY {columns} ORDER BY {columns}"
        )))
        .bind(filter.from_ms)
        .bind(filter.to_ms)
        .bind(filter.team.clone().unwrap_or_default())
        .bind(filter.key_id.clone().unwrap_or_default())
        .fetch_all(self.pool())
        .await
    }

    /// Totals of the rows `filter` keeps, grouped by `by`.
    pub async fn spend(
        &self,
        by: GroupBy,
        filter: &SpendFilter,
    ) -> Result<Vec<SpendRow>, sqlx::Error> {
        self.grouped(by.column(), filter)
            .await?
            .iter()
            .map(|r| {
                Ok(SpendRow {
                    group: r.try_get(by.column())?,
                    totals: totals(r)?,
                })
            })
            .collect()
    }

    /// Totals by day, model and deployment (what `/v1/usage` shows).
    pub async fn usage(
        &self,
        filter: &SpendFilter,
    ) -> Result<Vec<(String, String, String, Totals)>, sqlx::Error> {
        self.grouped("day, model, deployment", filter)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("day")?,
                    r.try_get("model")?,
                    r.try_get("deployment")?,
                    totals(r)?,
                ))
            })
            .collect()
    }

    /// How many ledger rows there are (tests and `dsgw admin`).
    pub async fn ledger_rows(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) AS n FROM ledger")
            .fetch_one(self.pool())
            .await?
            .try_get("n")
    }

    pub async fn delete_ledger_before(&self, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM ledger WHERE ts_ms < $1")
            .bind(cutoff_ms)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::config::StoreConfig;

    fn record(uid: &str, ts: u64, cost: u64) -> Record {
        Record {
            uid: uid.to_owned(),
            request_id: format!("req-{uid}"),
            ts,
            key_id: "alice".into(),
            team: "research".into(),
            model: "deepseek-chat".into(),
            deployment: "deepseek/deepseek-chat".into(),
            cache_miss: 10,
            output: 5,
            cost,
            cost_cache_miss: cost - 1,
            cost_output: 1,
            currency: "USD".into(),
            price: "deepseek-v3.2".into(),
            tier: "flat".into(),
            ..Record::default()
        }
    }

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

    #[tokio::test]
    async fn a_retried_batch_writes_each_row_once_and_counts_it_once() {
        let dir = std::env::temp_dir().join(format!("dsgw-store-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&StoreConfig::sqlite_in(&dir)).await.unwrap();
        let now = crate::accounting::spend::record::now();
        let batch = [record("a", now, 1000), record("b", now, 500)];
        store.insert_ledger(&batch).await.unwrap();
        // The commit's answer was lost: the same batch again, with one new row.
        let retried = [batch[0].clone(), batch[1].clone(), record("c", now, 7)];
        store.insert_ledger(&retried).await.unwrap();
        assert_eq!(store.ledger_rows().await.unwrap(), 3);
        let counters = store.current_counters(now).await.unwrap();
        let team = counter("research", "team", "research", "total");
        assert_eq!(counters[&team], 1507);
        let by_key = store
            .spend(
                GroupBy::Key,
                &SpendFilter {
                    from_ms: 0,
                    to_ms: i64::MAX,
                    ..SpendFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(by_key.len(), 1);
        assert_eq!(
            (by_key[0].totals.requests, by_key[0].totals.cost),
            (3, 1507)
        );
        // Retention deletes rows, never the counters budgets read.
        assert_eq!(store.delete_ledger_before(i64::MAX).await.unwrap(), 3);
        assert_eq!(store.current_counters(now).await.unwrap()[&team], 1507);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
