//! The policy audit log: one JSON line per routing decision (who, what classification, which
//! deployments were allowed or forbidden and by which policies, where the request went, which
//! obligations applied), never the prompt. A writer thread appends in small groups and syncs
//! each group to disk; the file rotates by size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use serde::Serialize;

/// How long the writer gathers lines before one write and one sync.
const COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// One candidate deployment's decision.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub deployment: String,
    pub allowed: bool,
    pub policies: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One request's routing decision.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Unix milliseconds (UTC).
    pub ts_ms: u64,
    pub request_id: String,
    pub key_id: String,
    pub team: String,
    pub model: String,
    pub classification: &'static str,
    pub personal_data: bool,
    pub candidates: Vec<Candidate>,
    /// `routed` (a deployment answered), `refused` (no deployment allowed: 403), or `failed`
    /// (allowed deployments all failed).
    pub outcome: &'static str,
    /// The deployment that served the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// The obligations applied to what the chosen deployment received.
    pub applied: Vec<String>,
    /// Placeholders that replaced personal data in what left the gateway.
    pub redactions: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: String,
    source: std::io::Error,
}

/// Where decisions are written; `disabled` when no policy is configured.
#[derive(Debug)]
pub struct AuditLog {
    /// The writer's queue (taken on close) and the writer, joined on close.
    tx: Mutex<Option<Sender<String>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    pub fn disabled() -> Self {
        Self {
            tx: Mutex::new(None),
            thread: Mutex::new(None),
        }
    }

    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, AuditError> {
        let error = |source| AuditError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = open_append(path).map_err(error)?;
        let (tx, rx) = channel();
        let writer = Writer {
            path: path.to_owned(),
            size: file.metadata().map_err(error)?.len(),
            file,
            max_bytes: max_bytes.max(1),
            keep,
        };
        let thread = std::thread::Builder::new()
            .name("dsgw-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(error)?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn append(&self, entry: &Entry) {
        if let Some(tx) = self.tx.lock().expect("audit lock").as_ref() {
            let line = serde_json::to_string(entry).expect("an audit entry serialises");
            if tx.send(line).is_err() {
                tracing::error!(target: "dsgw::audit", "the audit writer has stopped");
            }
        }
    }

    /// Writes every queued line and stops the writer (at shutdown, after the drain).
    pub fn close(&self) {
        self.tx.lock().expect("audit lock").take();
        if let Some(thread) = self.thread.lock().expect("audit lock").take() {
            let _ = thread.join();
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl Writer {
    fn run(mut self, rx: Receiver<String>) {
        while let Ok(first) = rx.recv() {
            std::thread::sleep(COMMIT_WINDOW);
            let mut batch = first;
            batch.push('\n');
            for line in rx.try_iter() {
                batch.push_str(&line);
                batch.push('\n');
            }
            let written = self
                .file
                .write_all(batch.as_bytes())
                .and_then(|()| self.file.sync_data());
            if let Err(e) = written {
                tracing::error!(target: "dsgw::audit", error = %e, path = %self.path.display(), "audit log write failed");
                continue;
            }
            self.size += batch.len() as u64;
            if self.size >= self.max_bytes
                && let Err(e) = self.rotate()
            {
                tracing::error!(target: "dsgw::audit", error = %e, "audit log rotation failed");
            }
        }
    }

    /// `audit.jsonl` becomes `audit.jsonl.1`, `.1` becomes `.2`, and so on; the oldest goes.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        Entry {
            ts_ms: 1,
            request_id: format!("r{i}"),
            key_id: "alice".into(),
            team: "research".into(),
            model: "deepseek-chat".into(),
            classification: "internal",
            personal_data: false,
            candidates: Vec::new(),
            outcome: "routed",
            chosen: None,
            applied: Vec::new(),
            redactions: 0,
        }
    }

    #[test]
    fn appends_lines_and_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("dsgw-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 2).unwrap();
        for i in 0..20 {
            log.append(&entry(i));
            std::thread::sleep(Duration::from_millis(15));
        }
        log.close();
        let mut ids = Vec::new();
        for file in [
            path.with_extension("jsonl.2"),
            path.with_extension("jsonl.1"),
            path.clone(),
        ] {
            for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.push(v["request_id"].as_str().unwrap().to_owned());
            }
        }
        assert!(path.with_extension("jsonl.1").exists(), "rotated");
        assert!(!path.with_extension("jsonl.3").exists(), "kept two");
        // The newest lines survive, in order, none twice.
        let expected: Vec<String> = (20 - ids.len()..20).map(|i| format!("r{i}")).collect();
        assert_eq!(ids, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
