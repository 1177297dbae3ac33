//! The spend ledger in the store: rows written each exactly once (a retried batch skips the
//! rows it already wrote) with the spend counters budgets read, in one transaction; the
//! reports finance reads; the retention sweep's delete. [`super::shipper`] brings the rows.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::Store;
use crate::accounting::spend::record::{Record, Totals, counter, day_of};

/// Rows per INSERT statement (26 parameters each, well under either database's limit).
const ROWS_PER_STATEMENT: usize = 100;

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
        let mut tx = self.begin_write().await?;
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
                let text = |s: &str| s.to_owned();
                query = query
                    .bind(r.uid.clone())
                    .bind(text(&r.request_id))
                    .bind(pico(r.ts.saturating_mul(1000)))
                    .bind(day_of(r.ts))
                    .bind(text(&r.key_id))
                    .bind(text(&r.team))
                    .bind(text(&r.model))
                    .bind(text(&r.deployment))
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
                    .bind(text(&r.currency))
                    .bind(i64::from(r.estimated))
                    .bind(
                        if r.outcome.is_empty() {
                            "completed"
                        } else {
                            &r.outcome
                        }
                        .to_owned(),
                    )
                    .bind(text(&r.price))
                    .bind(r.era.clone())
                    .bind(text(&r.tier))
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
            for (scope, name) in [("team", &*r.team), ("key", &*r.key_id)] {
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

    /// How many ledger rows there are.
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
pub(super) mod tests {
    use super::*;
    use crate::support::config::StoreConfig;

    /// A record of alice's (team research) costing `cost` picodollars.
    pub(in crate::store) fn record(uid: &str, ts: u64, cost: u64) -> Record {
        Record {
            uid: uid.to_owned(),
            request_id: format!("req-{uid}").into(),
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
