//! The spend ledger: one JSON line per finished request, appended by a writer thread that commits
//! in groups (write + fdatasync at most every few milliseconds), replayed at start-up into the
//! aggregates that budgets, `/user/balance` and `/v1/usage` read. A crash or `kill -9` loses only
//! records not yet committed (requests that ended in the last commit window), never committed
//! spend; a torn last line from a crash is skipped on replay.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::record::{Record, Totals, day_of, each_counter};
use super::shared::SharedSpend;
use crate::support::redis_link::AfterWrites;

/// How long the writer gathers records before one commit.
const COMMIT_WINDOW: Duration = Duration::from_millis(20);

/// `(day, key_id, team, model, deployment)`: everything the queries group by.
pub type Group = (String, String, String, String, String);

/// Each group's totals.
type Aggregates = BTreeMap<Group, Totals>;

/// A group's fields, owned or borrowed, so a record finds its group without building a key.
trait GroupFields {
    fn fields(&self) -> (&str, &str, &str, &str, &str);
}

impl GroupFields for Group {
    fn fields(&self) -> (&str, &str, &str, &str, &str) {
        (&self.0, &self.1, &self.2, &self.3, &self.4)
    }
}

impl GroupFields for (&str, &str, &str, &str, &str) {
    fn fields(&self) -> (&str, &str, &str, &str, &str) {
        *self
    }
}

// Ordered as the owned tuple is (field by field), as `Borrow` requires.
impl<'a> std::borrow::Borrow<dyn GroupFields + 'a> for Group {
    fn borrow(&self) -> &(dyn GroupFields + 'a) {
        self
    }
}

impl PartialEq for dyn GroupFields + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Eq for dyn GroupFields + '_ {}

impl PartialOrd for dyn GroupFields + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn GroupFields + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fields().cmp(&other.fields())
    }
}

/// What the ledger keeps in memory: the usage aggregates, and spend counters (picodollars)
/// named like the shared ones ([`super::record::counter`]), so a budget check is one lookup
/// however long the ledger grows.
///
/// Downstream of a store, `counters` hold only what the store has not confirmed yet, and
/// `stored` the store's own counters as last read: a budget reads their sum.
///
/// The counters are hashed with foldhash, not SipHash: their names come from the keys and teams
/// configured, never from a caller, and six are looked up for every request.
#[derive(Debug, Default)]
struct Book {
    aggregates: Aggregates,
    counters: foldhash::HashMap<String, u64>,
    stored: foldhash::HashMap<String, u64>,
    /// Where each counter's name is written to look it up.
    scratch: String,
}

impl Book {
    fn add(&mut self, r: &Record) {
        let day = day_of(r.ts);
        let counters = &mut self.counters;
        each_counter(
            &mut self.scratch,
            &r.team,
            &r.key_id,
            &day,
            |name| match counters.get_mut(name) {
                Some(spent) => *spent += r.cost,
                None => {
                    counters.insert(name.to_owned(), r.cost);
                }
            },
        );
        let fields = (
            day.as_str(),
            &*r.key_id,
            &*r.team,
            &*r.model,
            &*r.deployment,
        );
        // Looked up borrowed: a group's five strings are copied once, when it first appears.
        match self.aggregates.get_mut(&fields as &dyn GroupFields) {
            Some(totals) => totals.add(r),
            None => self.aggregates.entry(group(r, day)).or_default().add(r),
        }
    }

    fn confirmed(&mut self, r: &Record) {
        let counters = &mut self.counters;
        each_counter(
            &mut self.scratch,
            &r.team,
            &r.key_id,
            &day_of(r.ts),
            |name| {
                if let Some(pending) = counters.get_mut(name) {
                    *pending = pending.saturating_sub(r.cost);
                    if *pending == 0 {
                        counters.remove(name);
                    }
                }
            },
        );
    }
}

/// Where committed records go next (the store's shipper): told after each commit, with the
/// ledger file's length once the batch is on disk (`None` without a file).
pub trait Downstream: Send + Sync + std::fmt::Debug {
    fn committed(&self, records: Vec<Record>, file_offset: Option<u64>);
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct Ledger {
    book: Mutex<Book>,
    /// The writer thread's queue (taken on close) and the thread, joined on close.
    writer: Option<Mutex<Option<Sender<Record>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// With Redis: the counters every replica's budgets read.
    shared: Option<SharedSpend>,
    /// With a store and no file: where each record goes at once.
    direct: Option<Arc<dyn Downstream>>,
}

/// What [`Ledger::open_spool`] found: the part of the file past the store's checkpoint, to
/// ship before serving (read back in batches with [`read_some_records`]).
#[derive(Debug, Default)]
pub struct Unshipped {
    /// Where the unshipped records start.
    pub from: u64,
    /// The file's length: the checkpoint once they are shipped.
    pub offset: u64,
}

impl Ledger {
    /// A ledger that only keeps aggregates in memory.
    pub fn in_memory() -> Self {
        Self {
            book: Mutex::new(Book::default()),
            writer: None,
            thread: Mutex::new(None),
            shared: None,
            direct: None,
        }
    }

    /// In memory, each record sent on to `downstream` (a store) as it is appended.
    pub fn in_memory_to(downstream: Arc<dyn Downstream>) -> Self {
        Self {
            direct: Some(downstream),
            ..Self::in_memory()
        }
    }

    /// Opens (or creates) the ledger file, replays it, and starts the writer.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        Self::open_with(path, None, 0).map(|(ledger, _)| ledger)
    }

    /// Opens the ledger file as the store's spool: each commit goes on to `downstream`, and
    /// where the records past `checkpoint` (the file offset the store confirmed last) lie comes
    /// back, to ship them first. The in-memory book starts empty: the store holds the history.
    pub fn open_spool(
        path: &Path,
        downstream: Arc<dyn Downstream>,
        checkpoint: u64,
    ) -> Result<(Self, Unshipped), LedgerError> {
        Self::open_with(path, Some(downstream), checkpoint)
    }

    fn open_with(
        path: &Path,
        downstream: Option<Arc<dyn Downstream>>,
        checkpoint: u64,
    ) -> Result<(Self, Unshipped), LedgerError> {
        let io = |source| LedgerError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut book = Book::default();
        let mut unshipped = Unshipped::default();
        if path.exists() {
            let len = std::fs::metadata(path).map_err(io)?.len();
            // A checkpoint past the end belongs to another file: ship this one whole.
            let from = if downstream.is_some() && checkpoint <= len {
                checkpoint
            } else {
                0
            };
            if downstream.is_some() {
                unshipped.from = from;
            } else {
                read_records(path, 0, false, |record| book.add(&record)).map_err(io)?;
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // Close a torn line left by a crash, so the next record starts on its own line.
        let len = file.metadata().map_err(io)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            use std::io::{Read, Seek, SeekFrom};
            let mut reader = File::open(path).map_err(io)?;
            reader.seek(SeekFrom::End(-1)).map_err(io)?;
            reader.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        // After the torn-line repair: where the next commit starts.
        unshipped.offset = file.metadata().map_err(io)?.len();
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("dsgw-ledger".into())
            .spawn(move || write_loop(file, rx, downstream))
            .map_err(io)?;
        Ok((
            Self {
                book: Mutex::new(book),
                writer: Some(Mutex::new(Some(tx))),
                thread: Mutex::new(Some(thread)),
                shared: None,
                direct: None,
            },
            unshipped,
        ))
    }

    /// Also adds every record's cost to the Redis counters replicas share.
    pub fn with_shared(mut self, shared: SharedSpend) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn shared(&self) -> Option<&SharedSpend> {
        self.shared.as_ref()
    }

    pub fn append(&self, record: Record) {
        self.append_in(record, &mut AfterWrites::default());
    }

    /// Appends `record`; its shared spend (with Redis) joins `writes`, the request's one
    /// settlement round trip.
    pub fn append_in(&self, record: Record, writes: &mut AfterWrites) {
        if let Some(shared) = &self.shared {
            shared.record(&record, writes);
        }
        self.book.lock().expect("ledger lock").add(&record);
        if let Some(direct) = &self.direct {
            direct.committed(vec![record], None);
            return;
        }
        if let Some(writer) = &self.writer
            && writer
                .lock()
                .expect("ledger writer lock")
                .as_ref()
                .is_none_or(|tx| tx.send(record).is_err())
        {
            tracing::error!(target: "dsgw::ledger", "the ledger writer has stopped; spend is kept in memory only");
        }
    }

    /// Commits every queued record and stops the writer (at shutdown, after the drain).
    pub fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.lock().expect("ledger writer lock").take();
        }
        if let Some(thread) = self.thread.lock().expect("ledger thread lock").take() {
            let _ = thread.join();
        }
    }

    /// Picodollars on each named spend counter (`shared_spend::counter`).
    pub fn spent(&self, counters: &[String]) -> Vec<u64> {
        let book = self.book.lock().expect("ledger lock");
        let read =
            |map: &foldhash::HashMap<String, u64>, c: &String| map.get(c).copied().unwrap_or(0);
        counters
            .iter()
            .map(|c| read(&book.counters, c) + read(&book.stored, c))
            .collect()
    }

    /// The store committed `records` and its counters now read `stored`: the records stop
    /// counting as pending, in one step, so no budget reads them twice or not at all.
    pub fn confirmed<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Record>,
        stored: impl IntoIterator<Item = (String, u64)>,
    ) {
        let mut book = self.book.lock().expect("ledger lock");
        for r in records {
            book.confirmed(r);
        }
        book.stored = stored.into_iter().collect();
    }

    /// Every aggregate: `(day, key_id, team, model, deployment)` and its totals.
    pub fn aggregates(&self) -> Vec<(Group, Totals)> {
        let book = self.book.lock().expect("ledger lock");
        book.aggregates
            .iter()
            .map(|(k, t)| (k.clone(), *t))
            .collect()
    }

    /// Totals by day, model and deployment for the rows `filter` keeps.
    pub fn usage(
        &self,
        filter: impl Fn(&str, &str) -> bool,
    ) -> Vec<(String, String, String, Totals)> {
        let mut out: BTreeMap<(String, String, String), Totals> = BTreeMap::new();
        for ((day, key, team, model, deployment), t) in
            self.book.lock().expect("ledger lock").aggregates.iter()
        {
            if filter(key, team) {
                out.entry((day.clone(), model.clone(), deployment.clone()))
                    .or_default()
                    .merge(t);
            }
        }
        out.into_iter()
            .map(|((d, m, dep), t)| (d, m, dep, t))
            .collect()
    }
}

/// The record's group; `day` is its day written out (`day_of`).
fn group(r: &Record, day: String) -> Group {
    (
        day,
        r.key_id.to_string(),
        r.team.to_string(),
        r.model.to_string(),
        r.deployment.to_string(),
    )
}

/// Reads the committed records of a ledger file from byte `from`; a torn last line from a
/// crash is skipped. With `ids`, a line written before records had ids gets one: the hash of
/// the line and its place in the file, the same on every replay (two identical lines are still
/// two records). Returns the offset it read to.
pub fn read_records(
    path: &Path,
    from: u64,
    ids: bool,
    each: impl FnMut(Record),
) -> std::io::Result<u64> {
    read_some_records(path, from, ids, usize::MAX, each)
}

/// [`read_records`], stopping after `most` records: returns the offset just past the last
/// line read.
pub fn read_some_records(
    path: &Path,
    from: u64,
    ids: bool,
    most: usize,
    mut each: impl FnMut(Record),
) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut at = from;
    let mut read = 0;
    for line in BufReader::new(file).lines() {
        if read == most {
            break;
        }
        let line = line?;
        let offset = at;
        at += line.len() as u64 + 1;
        if let Ok(mut record) = serde_json::from_str::<Record>(&line) {
            read += 1;
            if ids && record.uid.is_empty() {
                let keyed = format!("{offset}:{line}");
                record.uid = crate::support::hashing::hex(
                    &crate::support::hashing::sha256(keyed.as_bytes())[..16],
                );
            }
            each(record);
        }
    }
    Ok(at)
}

fn write_loop(mut file: File, rx: Receiver<Record>, downstream: Option<Arc<dyn Downstream>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        std::thread::sleep(COMMIT_WINDOW);
        batch.extend(rx.try_iter());
        let mut text = Vec::with_capacity(batch.len() * 384);
        for r in &batch {
            r.write_line(&mut text);
            text.push(b'\n');
        }
        match file
            .write_all(&text)
            .and_then(|()| file.sync_data())
            .and_then(|()| file.metadata())
        {
            Ok(meta) => {
                if let Some(downstream) = &downstream {
                    downstream.committed(batch, Some(meta.len()));
                }
            }
            Err(e) => {
                tracing::error!(target: "dsgw::ledger", error = %e, records = batch.len(), "ledger commit failed");
                // The store still gets them: a full disk must not lose what it can keep.
                if let Some(downstream) = &downstream {
                    downstream.committed(batch, None);
                }
            }
        }
    }
}

/// Shared handle.
pub type SharedLedger = Arc<Ledger>;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: u64, key: &str, cost: u64) -> Record {
        Record {
            ts,
            key_id: key.into(),
            team: "research".into(),
            model: "deepseek-chat".into(),
            deployment: "deepseek/deepseek-chat".into(),
            cache_hit: 64,
            cache_miss: 10,
            output: 5,
            reasoning: 0,
            cost,
            currency: "USD".into(),
            estimated: false,
            price: "deepseek-v4-flash".into(),
            era: Some("2026-09-10T00:00:00Z".into()),
            tier: "peak".into(),
            computed_cost: None,
            unanswered: None,
            attempt: None,
            ..Record::default()
        }
    }

    fn counter(scope: &str, name: &str, period: &str) -> String {
        super::super::record::counter("research", scope, name, period)
    }

    #[test]
    fn days_are_civil_dates_in_utc() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(1_795_883_817), "2026-11-28");
    }

    #[test]
    fn records_find_their_group_by_every_field() {
        let mut book = Book::default();
        let base = record(1_795_883_817, "alice", 10);
        book.add(&base);
        book.add(&record(1_795_883_818, "alice", 5));
        // Each differs from the first group in one field only.
        let others = [
            record(1_795_883_817 + 86_400, "alice", 1),
            record(1_795_883_817, "bob", 1),
            Record {
                team: "ops".into(),
                cost: 1,
                ..base.clone()
            },
            Record {
                model: "deepseek-reasoner".into(),
                cost: 1,
                ..base.clone()
            },
            Record {
                deployment: "vllm/deepseek-chat".into(),
                cost: 1,
                ..base.clone()
            },
        ];
        for r in &others {
            book.add(r);
            book.add(r);
        }
        assert_eq!(book.aggregates.len(), 6);
        let first = &book.aggregates[&(
            "2026-11-28".to_owned(),
            "alice".to_owned(),
            "research".to_owned(),
            "deepseek-chat".to_owned(),
            "deepseek/deepseek-chat".to_owned(),
        )];
        assert_eq!((first.requests, first.cost), (2, 15));
        for totals in book.aggregates.values().filter(|t| t.cost != 15) {
            assert_eq!((totals.requests, totals.cost), (2, 2));
        }
    }

    #[test]
    fn replay_restores_the_aggregates_and_skips_a_torn_line() {
        let path = std::env::temp_dir().join(format!("dsgw-ledger-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let l = Ledger::open(&path).unwrap();
            l.append(record(1_795_883_817, "alice", 1000));
            l.append(record(1_795_883_818, "bob", 500));
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"ts\":1795883819,\"key_id\":\"al").unwrap();
        {
            let l = Ledger::open(&path).unwrap();
            assert_eq!(
                l.spent(&[counter("team", "research", "2026-11-28")]),
                [1500]
            );
            l.append(record(1_795_883_820, "alice", 7));
            std::thread::sleep(Duration::from_millis(100));
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!(
            l.spent(&[counter("team", "research", "2026-11-28")]),
            [1507],
            "a record after a torn line survives"
        );
        assert_eq!(
            l.spent(&[
                counter("key", "alice", "2026-11"),
                counter("key", "alice", "total")
            ]),
            [1007, 1007]
        );
        assert_eq!(l.spent(&[counter("team", "research", "2026-11-29")]), [0]);
        let usage = l.usage(|_, t| t == "research");
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].3.requests, 3);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn every_counter_adds_each_record_and_a_confirmed_one_leaves_only_the_rest_pending() {
        let l = Ledger::in_memory();
        l.append(record(1_795_883_817, "alice", 1000));
        l.append(record(1_795_883_818, "alice", 30));
        l.append(record(1_795_883_819, "bob", 5));
        let names = [
            counter("team", "research", "2026-11-28"),
            counter("team", "research", "2026-11"),
            counter("team", "research", "total"),
            counter("key", "alice", "2026-11-28"),
            counter("key", "alice", "2026-11"),
            counter("key", "alice", "total"),
            counter("key", "bob", "total"),
        ];
        assert_eq!(l.spent(&names), [1035, 1035, 1035, 1030, 1030, 1030, 5]);
        let first = record(1_795_883_817, "alice", 1000);
        l.confirmed([&first], []);
        assert_eq!(l.spent(&names), [35, 35, 35, 30, 30, 30, 5]);
        let rest = [
            record(1_795_883_818, "alice", 30),
            record(1_795_883_819, "bob", 5),
        ];
        l.confirmed(&rest, []);
        assert_eq!(l.spent(&names), [0; 7]);
        assert!(
            l.book.lock().unwrap().counters.is_empty(),
            "a counter confirmed to zero is dropped"
        );
    }

    #[test]
    fn a_line_written_before_schedules_still_counts() {
        let path =
            std::env::temp_dir().join(format!("dsgw-ledger-old-{}.jsonl", std::process::id()));
        std::fs::write(
            &path,
            "{\"ts\":1795883817,\"key_id\":\"alice\",\"team\":\"research\",\"model\":\"deepseek-chat\",\"deployment\":\"deepseek/deepseek-chat\",\"cache_hit\":0,\"cache_miss\":10,\"output\":5,\"reasoning\":0,\"cost\":4900000,\"currency\":\"USD\",\"estimated\":false}\n",
        )
        .unwrap();
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.spent(&[counter("key", "alice", "total")]), [4_900_000]);
        std::fs::remove_file(&path).unwrap();
    }

    #[derive(Debug)]
    struct Nowhere;

    impl Downstream for Nowhere {
        fn committed(&self, _: Vec<Record>, _: Option<u64>) {}
    }

    #[test]
    fn identical_old_lines_ship_as_two_records_with_ids_stable_across_replays() {
        let path =
            std::env::temp_dir().join(format!("dsgw-ledger-spool-{}.jsonl", std::process::id()));
        let line = "{\"ts\":1795883817,\"key_id\":\"alice\",\"team\":\"research\",\"model\":\"deepseek-chat\",\"deployment\":\"deepseek/deepseek-chat\",\"cache_hit\":0,\"cache_miss\":10,\"output\":5,\"reasoning\":0,\"cost\":4900000,\"currency\":\"USD\",\"estimated\":false}\n";
        std::fs::write(&path, format!("{line}{line}")).unwrap();
        let uids = || {
            let mut uids = Vec::new();
            let end = read_records(&path, 0, true, |r| uids.push(r.uid)).unwrap();
            assert_eq!(end, 2 * line.len() as u64);
            uids
        };
        let first = uids();
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], first[1], "two identical lines are two records");
        assert_eq!(uids(), first, "the same ids on every replay");
        // Past the checkpoint only, a batch at a time.
        let (ledger, tail) =
            Ledger::open_spool(&path, Arc::new(Nowhere), line.len() as u64).unwrap();
        ledger.close();
        assert_eq!(
            (tail.from, tail.offset),
            (line.len() as u64, 2 * line.len() as u64)
        );
        let mut rest = Vec::new();
        let next = read_some_records(&path, tail.from, true, 1, |r| rest.push(r.uid)).unwrap();
        assert_eq!((rest, next), (vec![first[1].clone()], tail.offset));
        std::fs::remove_file(&path).unwrap();
    }
}
