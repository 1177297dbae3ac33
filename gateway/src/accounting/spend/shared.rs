//! Spend counters in Redis, so that every replica enforces one budget: each finished request adds
//! its cost to its key's and team's counters for the day, the month and all time. Counters are
//! integer nanodollars (`INCRBY`), hash-tagged by team like the limit buckets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::record::{Record, Totals, counters_for, day_of};
use crate::support::redis_link::{AfterWrites, RedisLink, RedisLinkError};

/// Separates the parts of a usage field (never in key ids, model or deployment names).
const SEP: &str = "\u{1f}";
/// Every team with usage, for the admin view.
const TEAMS: &str = "dsgw:teams";

/// Day counters outlive their day by this much, month counters their month.
const DAY_TTL_S: i64 = 3 * 86_400;
const MONTH_TTL_S: i64 = 40 * 86_400;
/// How often a replica re-adds a team to the index (which lives in another slot, so it costs
/// its own round trip): once at its first request, then at most once a minute, so an index
/// lost with a Redis node comes back.
const INDEX_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SharedSpend {
    link: Arc<RedisLink>,
    indexed: Arc<Mutex<HashMap<String, Instant>>>,
}

impl SharedSpend {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            indexed: Arc::default(),
        }
    }

    /// Adds a finished request to the shared counters (budgets) and usage tables, in the
    /// request's settlement round trip (`writes`, the team's slot).
    pub fn record(&self, r: &Record, writes: &mut AfterWrites) {
        let (team, key_id, day) = (&*r.team, &*r.key_id, day_of(r.ts));
        let day = day.as_str();
        let nano = (r.cost / 1000) as i64;
        let pipe = writes.to(&self.link, &format!("{{{team}}}"));
        let table = format!("dsgw:{{{team}}}:usage:{day}");
        let unanswered = r.unanswered.is_some();
        for (metric, n) in [
            ("requests", u64::from(!unanswered)),
            ("unanswered", u64::from(unanswered)),
            (
                "unanswered_cost_nano",
                if unanswered { nano as u64 } else { 0 },
            ),
            ("cache_hit", r.cache_hit),
            ("cache_miss", r.cache_miss),
            ("output", r.output),
            ("reasoning", r.reasoning),
            ("cost_nano", nano as u64),
        ] {
            let field = [key_id, &r.model, &r.deployment, metric].join(SEP);
            pipe.cmd("HINCRBY").arg(&table).arg(field).arg(n).ignore();
        }
        pipe.cmd("SADD")
            .arg(format!("dsgw:{{{team}}}:usage:days"))
            .arg(day)
            .ignore();
        if nano > 0 {
            // Day, month, total for the team, then the same for the key (see `counters_for`).
            let ttls = [
                Some(DAY_TTL_S),
                Some(MONTH_TTL_S),
                None,
                Some(DAY_TTL_S),
                Some(MONTH_TTL_S),
                None,
            ];
            for (key, ttl) in counters_for(team, key_id, day).iter().zip(ttls) {
                pipe.cmd("INCRBY").arg(key).arg(nano).ignore();
                if let Some(ttl) = ttl {
                    pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
                }
            }
        }
        // The team index lives outside the team's hash slot: its own idempotent command.
        let due = {
            let mut indexed = self.indexed.lock().expect("index lock");
            let due = indexed
                .get(team)
                .is_none_or(|at| at.elapsed() >= INDEX_EVERY);
            if due {
                indexed.insert(team.to_owned(), Instant::now());
            }
            due
        };
        if due {
            writes
                .to(&self.link, TEAMS)
                .cmd("SADD")
                .arg(TEAMS)
                .arg(team)
                .ignore();
        }
    }

    /// Totals by (day, model, deployment) for the usage rows `filter(key_id, team)` keeps, in
    /// `team` or in every team.
    pub async fn usage(
        &self,
        team: Option<&str>,
        filter: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<(String, String, String, Totals)>, RedisLinkError> {
        let teams: Vec<String> = match team {
            Some(t) => vec![t.to_owned()],
            None => {
                let mut pipe = redis::pipe();
                pipe.cmd("SMEMBERS").arg(TEAMS);
                let (teams,): (Vec<String>,) = self.link.query(&pipe).await?;
                teams
            }
        };
        let mut out: BTreeMap<(String, String, String), Totals> = BTreeMap::new();
        for team in &teams {
            let mut pipe = redis::pipe();
            pipe.cmd("SMEMBERS")
                .arg(format!("dsgw:{{{team}}}:usage:days"));
            let (days,): (Vec<String>,) = self.link.query(&pipe).await?;
            for day in days {
                let mut pipe = redis::pipe();
                pipe.cmd("HGETALL")
                    .arg(format!("dsgw:{{{team}}}:usage:{day}"));
                let (fields,): (HashMap<String, i64>,) = self.link.query(&pipe).await?;
                for (field, n) in fields {
                    let parts: Vec<&str> = field.split(SEP).collect();
                    let [key, model, deployment, metric] = parts.as_slice() else {
                        return Err(RedisLinkError::Shape);
                    };
                    if !filter(key, team) {
                        continue;
                    }
                    let t = out
                        .entry((day.clone(), (*model).to_owned(), (*deployment).to_owned()))
                        .or_default();
                    let n = n.max(0) as u64;
                    match *metric {
                        "requests" => t.requests += n,
                        "unanswered" => t.unanswered += n,
                        "unanswered_cost_nano" => t.unanswered_cost += n * 1000,
                        "cache_hit" => t.cache_hit += n,
                        "cache_miss" => t.cache_miss += n,
                        "output" => t.output += n,
                        "reasoning" => t.reasoning += n,
                        "cost_nano" => t.cost += n * 1000,
                        _ => return Err(RedisLinkError::Shape),
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|((d, m, dep), t)| (d, m, dep, t))
            .collect())
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
