//! The series a request updates, resolved once instead of looked up by labels on every update:
//! a deployment's (made with it) and, within it, each key's (made at the key's first request).

use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{Histogram, IntCounter};

use super::CompletionEvent;

/// The series of one deployment (a model name and a provider), resolved on first use so a
/// request updates them without looking labels up.
#[derive(Debug)]
pub struct Series {
    pub(super) model: String,
    pub(super) provider: String,
    pub(super) duration: OnceLock<Histogram>,
    pub(super) ttft: OnceLock<Histogram>,
    pub(super) inter_token: OnceLock<Histogram>,
    pub(super) overhead: OnceLock<Histogram>,
    pub(super) calls: [OnceLock<IntCounter>; 4],
    /// Each key's counters on this deployment, by key id: as many as the key ids and
    /// deployments the config and the store name, like the series themselves.
    /// foldhash: key ids come from the directory, never from a caller.
    keys: RwLock<foldhash::HashMap<String, Arc<KeySeries>>>,
}

impl Series {
    pub fn new(model: &str, provider: &str) -> Self {
        Self {
            model: model.to_owned(),
            provider: provider.to_owned(),
            duration: OnceLock::new(),
            ttft: OnceLock::new(),
            inter_token: OnceLock::new(),
            overhead: OnceLock::new(),
            calls: std::array::from_fn(|_| OnceLock::new()),
            keys: RwLock::new(foldhash::HashMap::default()),
        }
    }

    /// The counters of the key `e` is for, made at its first request here (again if the
    /// key moved to another team).
    pub(super) fn key(&self, e: &CompletionEvent<'_>) -> Arc<KeySeries> {
        let found = self
            .keys
            .read()
            .expect("series lock")
            .get(e.key_id)
            .cloned();
        match found {
            Some(key) if key.labels_match(e) => key,
            _ => {
                let key = Arc::new(KeySeries::new(e));
                self.keys
                    .write()
                    .expect("series lock")
                    .insert(e.key_id.to_owned(), key.clone());
                key
            }
        }
    }
}

/// One key's counters on one deployment. Each is made when first counted, so the exposition
/// shows the same series as when every update looked its labels up (a key that never had a
/// peak-hour request has no peak series).
#[derive(Debug)]
pub(super) struct KeySeries {
    /// The labels besides the key id, as they were when these were made.
    model: String,
    deployment: String,
    team: String,
    /// `dsgw_requests_total` for status 200, outcome `completed`: nearly every request.
    pub(super) completed: OnceLock<IntCounter>,
    /// `dsgw_tokens_total` by kind: cache hit, cache miss, output, reasoning.
    pub(super) tokens: OnceLock<[IntCounter; 4]>,
    /// Savings, the off-peak figure and the cost by tier (flat, peak, off-peak) and part
    /// (cache hit, cache miss, output), in the first currency this key was charged in.
    pub(super) money: OnceLock<KeyMoney>,
}

#[derive(Debug)]
pub(super) struct KeyMoney {
    pub(super) currency: Arc<str>,
    pub(super) savings: IntCounter,
    pub(super) off_peak: IntCounter,
    pub(super) cost: [OnceLock<[IntCounter; 3]>; 3],
}

impl KeySeries {
    fn new(e: &CompletionEvent<'_>) -> Self {
        Self {
            model: e.model.to_owned(),
            deployment: e.deployment.to_owned(),
            team: e.team.to_owned(),
            completed: OnceLock::new(),
            tokens: OnceLock::new(),
            money: OnceLock::new(),
        }
    }

    fn labels_match(&self, e: &CompletionEvent<'_>) -> bool {
        self.team == e.team && self.deployment == e.deployment && self.model == e.model
    }
}
