//! The admin audit log: one row per change made through the admin API (who, what, when, and
//! the change's non-secret details), written in the change's own transaction.

use serde_json::Value;
use sqlx::{Any, Row, Transaction};

use super::directory::Actor;
use super::{Store, now_ms};
use crate::support::random::random_hex;

/// One audited change.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Value,
}

pub(super) async fn write(
    tx: &mut Transaction<'_, Any>,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO admin_audit (id, ts_ms, actor, action, target, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(random_hex(16))
    .bind(now_ms())
    .bind(&actor.0)
    .bind(action)
    .bind(target)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The latest `limit` changes, newest first.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
        sqlx::query(
            "SELECT ts_ms, actor, action, target, detail FROM admin_audit \
             ORDER BY ts_ms DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(AuditRow {
                ts_ms: r.try_get("ts_ms")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                detail: serde_json::from_str(&r.try_get::<String, _>("detail")?)
                    .unwrap_or(Value::Null),
            })
        })
        .collect()
    }
}
