//! Spend counters in Redis, so that every replica enforces one budget: each finished request adds
//! its cost to its key's and team's counters for the day, the month and all time. Counters are
//! integer nanodollars (`INCRBY`), hash-tagged by team like the limit buckets.

use std::sync::Arc;

use crate::redis_link::{RedisLink, RedisLinkError};

/// Day counters outlive their day by this much, month counters their month.
const DAY_TTL_S: i64 = 3 * 86_400;
const MONTH_TTL_S: i64 = 40 * 86_400;

#[derive(Debug, Clone)]
pub struct SharedSpend {
    link: Arc<RedisLink>,
}

/// `dsgw:{team}:spend:<scope>:<name>:<period>`.
pub fn counter(team: &str, scope: &str, name: &str, period: &str) -> String {
    format!("dsgw:{{{team}}}:spend:{scope}:{name}:{period}")
}

impl SharedSpend {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self { link }
    }

    /// Adds a request's cost (picodollars) on `day` (`YYYY-MM-DD`), off the request path.
    pub fn record(&self, team: &str, key_id: &str, day: &str, cost_pico: u64) {
        let nano = (cost_pico / 1000) as i64;
        if nano == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (scope, name) in [("team", team), ("key", key_id)] {
            for (period, ttl) in [
                (day, Some(DAY_TTL_S)),
                (&day[..7], Some(MONTH_TTL_S)),
                ("total", None),
            ] {
                let key = counter(team, scope, name, period);
                pipe.cmd("INCRBY").arg(&key).arg(nano).ignore();
                if let Some(ttl) = ttl {
                    pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
                }
            }
        }
        let link = self.link.clone();
        let send = async move {
            if let Err(e) = link.query::<()>(&pipe).await {
                tracing::error!(target: "dsgw::ledger", error = %e, "could not add spend to the shared counters");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(send);
            }
            Err(_) => tracing::error!(target: "dsgw::ledger", "no runtime to record shared spend"),
        }
    }

    /// Picodollars spent on each counter.
    pub async fn spent(&self, counters: &[String]) -> Result<Vec<u64>, RedisLinkError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(counters);
        let (values,): (Vec<Option<i64>>,) = self.link.query(&pipe).await?;
        Ok(values
            .into_iter()
            .map(|v| v.unwrap_or(0).max(0) as u64 * 1000)
            .collect())
    }
}
