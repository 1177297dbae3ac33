//! The directory in force: keys, budgets and limits from the file beside those from the store,
//! rebuilt whole from each store snapshot and put in force at once (the keys, the pipeline's
//! budgets, the limiter's rules, the policies' key entities). The file's entries win a clash:
//! the admin API refuses to create one, so a clash means someone wrote the database by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::pipeline::Pipeline;
use crate::pipeline::admission::budgets::Budget;
use crate::pipeline::admission::keys::{KeyError, KeyStore, LiveKeys, StoredKey};
use crate::pipeline::admission::policy::KeyAttrs;
use crate::store::directory::{KeyRow, Snapshot};
use crate::support::config::{BudgetConfig, Config, KeyConfig, LimitConfig};
use crate::support::hashing::decode_hex32;
use crate::support::principal::Principal;

/// What the file says, kept to merge each snapshot with.
#[derive(Debug)]
pub struct Directory {
    keys: Vec<KeyConfig>,
    budgets: Vec<BudgetConfig>,
    limits: Vec<LimitConfig>,
    /// Whether accepting any caller is still allowed: only on loopback, and only until a key
    /// has been seen (revoking the last key must not open the door).
    may_open: AtomicBool,
    /// The store revision in force (-1: none read).
    revision: AtomicI64,
}

impl Directory {
    pub fn new(config: &Config) -> Self {
        Self {
            keys: config.keys.clone(),
            budgets: config.budgets.clone(),
            limits: config.limits.clone(),
            may_open: AtomicBool::new(
                config.keys.is_empty() && config.server.listen.ip().is_loopback(),
            ),
            revision: AtomicI64::new(-1),
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// The file's key ids: the admin API may not reuse them.
    pub fn file_key(&self, id: &str) -> Option<&KeyConfig> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn file_keys(&self) -> &[KeyConfig] {
        &self.keys
    }

    pub fn file_budgets(&self) -> &[BudgetConfig] {
        &self.budgets
    }

    pub fn file_limits(&self) -> &[LimitConfig] {
        &self.limits
    }

    /// The keys a snapshot admits, beside the file's.
    pub fn keys(&self, snapshot: &Snapshot) -> Result<KeyStore, KeyError> {
        let stored: Vec<StoredKey> = snapshot.keys.iter().flat_map(stored_keys).collect();
        let keys = KeyStore::with_stored(&self.keys, stored)?;
        if !keys.is_open() {
            self.may_open.store(false, Ordering::Relaxed);
            return Ok(keys);
        }
        if self.may_open.load(Ordering::Relaxed) {
            Ok(keys)
        } else {
            // Every key is gone: nobody is admitted, rather than everybody.
            Ok(KeyStore::nobody())
        }
    }

    /// Puts a snapshot in force.
    pub fn apply(&self, snapshot: &Snapshot, keys: &LiveKeys, pipeline: &Pipeline) {
        match self.keys(snapshot) {
            Ok(k) => keys.replace(k),
            Err(e) => {
                tracing::error!(target: "dsgw::store", error = %e, "keys not refreshed");
                return;
            }
        }
        let team_of = |id: &str| {
            self.keys
                .iter()
                .find(|k| k.id == id)
                .map(|k| k.team.clone())
                .or_else(|| {
                    snapshot
                        .keys
                        .iter()
                        .find(|k| k.id == id)
                        .map(|k| k.team.clone())
                })
        };
        let budgets = self
            .budgets
            .iter()
            .chain(snapshot.budgets.iter().filter(|b| {
                !self
                    .budgets
                    .iter()
                    .any(|f| f.scope == b.scope && f.name == b.name && f.period == b.period)
            }))
            .map(|b| Budget::with_team_of(b, team_of))
            .collect();
        pipeline.set_budgets(budgets);
        if let Some(limiter) = &pipeline.limiter {
            let limits: Vec<LimitConfig> = self
                .limits
                .iter()
                .chain(snapshot.limits.iter().filter(|l| {
                    !self
                        .limits
                        .iter()
                        .any(|f| f.scope == l.scope && f.name == l.name)
                }))
                .cloned()
                .collect();
            limiter.set_rules(&limits);
        }
        if let Err(e) = pipeline.set_policy_keys(self.policy_keys(snapshot)) {
            tracing::error!(target: "dsgw::store", error = %e, "policies not rebuilt for the store's keys; the previous ones stay");
        }
        self.revision.store(snapshot.revision, Ordering::Relaxed);
        tracing::debug!(target: "dsgw::store", revision = snapshot.revision, keys = snapshot.keys.len(), "directory refreshed");
    }

    /// The keys policies read: the file's (with the open principal when there are none) and
    /// the store's.
    fn policy_keys(&self, snapshot: &Snapshot) -> Vec<KeyAttrs> {
        let mut attrs = crate::pipeline::admission::policy::key_attrs_of(&self.keys);
        for k in &snapshot.keys {
            if self.keys.iter().any(|f| f.id == k.id) {
                continue;
            }
            attrs.push(KeyAttrs {
                id: k.id.clone(),
                team: k.team.clone(),
                clearance: k.clearance,
                opt_ins: k.opt_ins.clone(),
                default_classification: k.default_classification,
            });
        }
        attrs
    }
}

/// A stored key's accepted secrets: its own until it expires, and after a rotation the old
/// one until its grace ends.
fn stored_keys(k: &KeyRow) -> Vec<StoredKey> {
    let principal = Principal {
        key_id: Arc::from(k.id.as_str()),
        team: Arc::from(k.team.as_str()),
        admin: k.admin,
    };
    let mut out = Vec::with_capacity(2);
    if let Some(digest) = decode_hex32(&k.digest) {
        out.push(StoredKey {
            digest,
            principal: principal.clone(),
            not_after_ms: k.expires_ms,
        });
    }
    if let (Some(old), Some(until)) = (&k.previous_digest, k.previous_until_ms)
        && let Some(digest) = decode_hex32(old)
    {
        out.push(StoredKey {
            digest,
            principal,
            not_after_ms: Some(k.expires_ms.map_or(until, |e| e.min(until))),
        });
    }
    out
}
