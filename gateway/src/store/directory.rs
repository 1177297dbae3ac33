//! Keys, teams, budgets and limits in the store: the rows, the whole set a replica's view is
//! built from ([`Snapshot`]), and the changes the admin API makes. Every change runs in one
//! transaction with its audit row and the revision bump, and (PostgreSQL) a `NOTIFY` that is
//! delivered when it commits; a failed change leaves nothing behind.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, CHANNEL, Store, now_ms};
use crate::support::config::{BudgetConfig, Classification, LimitConfig};

/// A stored virtual key (never its secret: `digest` is the SHA-256 of it, in hex).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub digest: String,
    pub team: String,
    pub owner: Option<String>,
    pub labels: Map<String, Value>,
    pub admin: bool,
    pub clearance: Classification,
    pub default_classification: Classification,
    pub opt_ins: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    /// After a rotation: the old secret's digest, valid until `previous_until_ms`.
    pub previous_digest: Option<String>,
    pub previous_until_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeamRow {
    pub name: String,
    pub labels: Map<String, Value>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Everything a replica's view is built from, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: i64,
    /// Keys not revoked (expired ones included: expiry is checked per request).
    pub keys: Vec<KeyRow>,
    pub teams: Vec<TeamRow>,
    pub budgets: Vec<BudgetConfig>,
    pub limits: Vec<LimitConfig>,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Who made a change, for the audit log: a key id, never a secret.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

const KEY_COLUMNS: &str = "id, digest, team, owner, labels, admin, clearance, \
    default_classification, opt_ins, created_ms, updated_ms, expires_ms, revoked_ms, \
    previous_digest, previous_until_ms";

fn json_map(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

fn classification(text: &str, or: Classification) -> Classification {
    Classification::parse(text).unwrap_or(or)
}

fn key_row(row: &AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        id: row.try_get("id")?,
        digest: row.try_get("digest")?,
        team: row.try_get("team")?,
        owner: row.try_get("owner")?,
        labels: json_map(&row.try_get::<String, _>("labels")?),
        admin: row.try_get::<i64, _>("admin")? != 0,
        clearance: classification(
            &row.try_get::<String, _>("clearance")?,
            Classification::Restricted,
        ),
        default_classification: classification(
            &row.try_get::<String, _>("default_classification")?,
            Classification::Internal,
        ),
        opt_ins: serde_json::from_str(&row.try_get::<String, _>("opt_ins")?).unwrap_or_default(),
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        previous_digest: row.try_get("previous_digest")?,
        previous_until_ms: row.try_get("previous_until_ms")?,
    })
}

fn team_row(row: &AnyRow) -> Result<TeamRow, sqlx::Error> {
    Ok(TeamRow {
        name: row.try_get("name")?,
        labels: json_map(&row.try_get::<String, _>("labels")?),
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// A stored word (`team`, `month`) as the enum it names.
fn word<T: serde::de::DeserializeOwned>(field: &str, value: String) -> Result<T, sqlx::Error> {
    serde_json::from_value(Value::String(value)).map_err(|e| sqlx::Error::ColumnDecode {
        index: field.to_owned(),
        source: Box::new(e),
    })
}

fn budget_row(row: &AnyRow) -> Result<BudgetConfig, sqlx::Error> {
    let text = |c: &str| row.try_get::<String, _>(c);

    Ok(BudgetConfig {
        scope: word("scope", text("scope")?)?,
        name: text("name")?,
        period: word("period", text("period")?)?,
        amount: text("amount")?,
    })
}

fn limit_row(row: &AnyRow) -> Result<LimitConfig, sqlx::Error> {
    serde_json::from_str(&row.try_get::<String, _>("rule")?).map_err(|e| {
        sqlx::Error::ColumnDecode {
            index: "rule".to_owned(),
            source: Box::new(e),
        }
    })
}

/// `team` or `key`, as stored.
pub fn scope_text(scope: crate::support::config::LimitScope) -> &'static str {
    match scope {
        crate::support::config::LimitScope::Team => "team",
        crate::support::config::LimitScope::Key => "key",
    }
}

/// `day`, `month` or `total`, as stored.
pub fn period_text(period: crate::support::config::BudgetPeriod) -> &'static str {
    match period {
        crate::support::config::BudgetPeriod::Day => "day",
        crate::support::config::BudgetPeriod::Month => "month",
        crate::support::config::BudgetPeriod::Total => "total",
    }
}

/// What a put does: create (`true`) or replace (`false`); a create of something that exists
/// or a replace of something that does not is refused with the message given.
fn put_mode(
    exists: bool,
    replace: bool,
    taken: impl FnOnce() -> String,
    missing: impl FnOnce() -> String,
) -> Result<bool, ChangeError> {
    match (exists, replace) {
        (true, false) => Err(ChangeError::Conflict(taken())),
        (false, true) => Err(ChangeError::NotFound(missing())),
        (exists, _) => Ok(!exists),
    }
}

impl Store {
    /// Runs a one-row `DELETE` with its text parameters; none deleted is a not-found.
    async fn delete_one(
        &self,
        sql: &'static str,
        params: &[&str],
        actor: &Actor,
        action: &str,
        target: &str,
        missing: String,
    ) -> Result<(), ChangeError> {
        let mut tx = self.begin_write().await?;
        let mut query = sqlx::query(sql);
        for p in params {
            query = query.bind((*p).to_owned());
        }
        if query.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(ChangeError::NotFound(missing));
        }
        self.commit(tx, actor, action, target, Value::Null).await
    }

    /// The revision the rows are at.
    pub async fn revision(&self) -> Result<i64, sqlx::Error> {
        let result = sqlx::query("SELECT n FROM revision WHERE id = 1")
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get::<i64, _>("n"));
        self.observe(&result);
        result
    }

    /// Every key, team, budget and limit, as of one revision.
    pub async fn snapshot(&self) -> Result<Snapshot, sqlx::Error> {
        let result = self.read_snapshot().await;
        self.observe(&result);
        result
    }

    async fn read_snapshot(&self) -> Result<Snapshot, sqlx::Error> {
        // Reads only: a deferred transaction is one consistent snapshot and takes no write lock.
        let mut tx = self.pool().begin().await?;
        let revision: i64 = sqlx::query("SELECT n FROM revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let keys = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE revoked_ms IS NULL ORDER BY id"
        )))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(key_row)
        .collect::<Result<_, _>>()?;
        let teams =
            sqlx::query("SELECT name, labels, created_ms, updated_ms FROM teams ORDER BY name")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(team_row)
                .collect::<Result<_, _>>()?;
        let budgets = sqlx::query(
            "SELECT scope, name, period, amount FROM budgets ORDER BY scope, name, period",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(budget_row)
        .collect::<Result<_, _>>()?;
        let limits = sqlx::query("SELECT rule FROM limits ORDER BY scope, name")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(limit_row)
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(Snapshot {
            revision,
            keys,
            teams,
            budgets,
            limits,
        })
    }

    /// One key, revoked or not.
    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(key_row)
        .transpose()
    }

    /// Keys in id order after `after`, at most `limit`; `team` narrows them; revoked ones only
    /// when asked.
    pub async fn keys(
        &self,
        team: Option<&str>,
        revoked: bool,
        after: &str,
        limit: i64,
    ) -> Result<Vec<KeyRow>, sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE id > $1 AND ($2 = '' OR team = $2) \
             AND ($3 = 1 OR revoked_ms IS NULL) ORDER BY id LIMIT $4"
        )))
        .bind(after)
        .bind(team.unwrap_or(""))
        .bind(i64::from(revoked))
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(key_row)
        .collect()
    }

    /// Stores a new key; an id or digest already used is a conflict.
    pub async fn create_key(&self, key: &KeyRow, actor: &Actor) -> Result<(), ChangeError> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT id FROM keys WHERE id = $1")
            .bind(&key.id)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(ChangeError::Conflict(format!(
                "A key with id `{}` already exists (revoked ids are not reused).",
                key.id
            )));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO keys ({KEY_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )))
        .bind(&key.id)
        .bind(&key.digest)
        .bind(&key.team)
        .bind(key.owner.as_deref())
        .bind(Value::Object(key.labels.clone()).to_string())
        .bind(i64::from(key.admin))
        .bind(key.clearance.as_str())
        .bind(key.default_classification.as_str())
        .bind(serde_json::to_string(&key.opt_ins).expect("strings"))
        .bind(key.created_ms)
        .bind(key.updated_ms)
        .bind(key.expires_ms)
        .bind(key.revoked_ms)
        .bind(key.previous_digest.as_deref())
        .bind(key.previous_until_ms)
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({"team": key.team, "admin": key.admin, "owner": key.owner});
        self.commit(tx, actor, "key.create", &key.id, detail).await
    }

    /// Writes `key`'s changeable fields (team, owner, labels, admin, classifications, opt-ins,
    /// expiry, the digests of a rotation, revocation) over the stored row.
    pub async fn update_key(
        &self,
        key: &KeyRow,
        actor: &Actor,
        action: &str,
        detail: Value,
    ) -> Result<(), ChangeError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE keys SET digest = $1, team = $2, owner = $3, labels = $4, admin = $5, \
             clearance = $6, default_classification = $7, opt_ins = $8, updated_ms = $9, \
             expires_ms = $10, revoked_ms = $11, previous_digest = $12, previous_until_ms = $13 \
             WHERE id = $14 AND revoked_ms IS NULL",
        )
        .bind(&key.digest)
        .bind(&key.team)
        .bind(key.owner.as_deref())
        .bind(Value::Object(key.labels.clone()).to_string())
        .bind(i64::from(key.admin))
        .bind(key.clearance.as_str())
        .bind(key.default_classification.as_str())
        .bind(serde_json::to_string(&key.opt_ins).expect("strings"))
        .bind(key.updated_ms)
        .bind(key.expires_ms)
        .bind(key.revoked_ms)
        .bind(key.previous_digest.as_deref())
        .bind(key.previous_until_ms)
        .bind(&key.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(ChangeError::NotFound(format!(
                "No active stored key has id `{}`.",
                key.id
            )));
        }
        self.commit(tx, actor, action, &key.id, detail).await
    }

    pub async fn team(&self, name: &str) -> Result<Option<TeamRow>, sqlx::Error> {
        sqlx::query("SELECT name, labels, created_ms, updated_ms FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(team_row)
            .transpose()
    }

    /// Creates the team, or (`replace`) writes its labels over an existing one.
    pub async fn put_team(
        &self,
        team: &TeamRow,
        replace: bool,
        actor: &Actor,
    ) -> Result<(), ChangeError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT name FROM teams WHERE name = $1")
            .bind(&team.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let labels = Value::Object(team.labels.clone()).to_string();
        let create = put_mode(
            exists,
            replace,
            || format!("Team `{}` already exists.", team.name),
            || format!("No stored team is named `{}`.", team.name),
        )?;
        let action = if create {
            sqlx::query(
                "INSERT INTO teams (name, labels, created_ms, updated_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&team.name)
            .bind(labels)
            .bind(team.created_ms)
            .bind(team.updated_ms)
            .execute(&mut *tx)
            .await?;
            "team.create"
        } else {
            sqlx::query("UPDATE teams SET labels = $1, updated_ms = $2 WHERE name = $3")
                .bind(labels)
                .bind(team.updated_ms)
                .bind(&team.name)
                .execute(&mut *tx)
                .await?;
            "team.update"
        };
        self.commit(
            tx,
            actor,
            action,
            &team.name,
            Value::Object(team.labels.clone()),
        )
        .await
    }

    /// Deletes a team that no active stored key belongs to.
    pub async fn delete_team(&self, name: &str, actor: &Actor) -> Result<(), ChangeError> {
        let mut tx = self.begin_write().await?;
        let members: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM keys WHERE team = $1 AND revoked_ms IS NULL")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if members > 0 {
            return Err(ChangeError::Conflict(format!(
                "Team `{name}` still has {members} active key(s); revoke or move them first."
            )));
        }
        let done = sqlx::query("DELETE FROM teams WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ChangeError::NotFound(format!(
                "No stored team is named `{name}`."
            )));
        }
        self.commit(tx, actor, "team.delete", name, Value::Null)
            .await
    }

    /// Creates a budget, or (`replace`) changes the amount of an existing one.
    pub async fn put_budget(
        &self,
        budget: &BudgetConfig,
        replace: bool,
        actor: &Actor,
    ) -> Result<(), ChangeError> {
        let (scope, period) = (scope_text(budget.scope), period_text(budget.period));
        let target = format!("{scope}:{}:{period}", budget.name);
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query(
            "SELECT amount FROM budgets WHERE scope = $1 AND name = $2 AND period = $3",
        )
        .bind(scope)
        .bind(&budget.name)
        .bind(period)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        let create = put_mode(
            exists,
            replace,
            || {
                format!(
                    "A {period} budget for {scope} `{}` already exists; change it with PATCH.",
                    budget.name
                )
            },
            || format!("No stored budget `{target}`."),
        )?;
        let action = if create {
            sqlx::query(
                "INSERT INTO budgets (scope, name, period, amount, updated_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(scope)
            .bind(&budget.name)
            .bind(period)
            .bind(&budget.amount)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            "budget.create"
        } else {
            sqlx::query(
                "UPDATE budgets SET amount = $1, updated_ms = $2 \
                     WHERE scope = $3 AND name = $4 AND period = $5",
            )
            .bind(&budget.amount)
            .bind(now_ms())
            .bind(scope)
            .bind(&budget.name)
            .bind(period)
            .execute(&mut *tx)
            .await?;
            "budget.update"
        };
        let detail = serde_json::json!({"amount": budget.amount});
        self.commit(tx, actor, action, &target, detail).await
    }

    pub async fn delete_budget(
        &self,
        scope: &str,
        name: &str,
        period: &str,
        actor: &Actor,
    ) -> Result<(), ChangeError> {
        let target = format!("{scope}:{name}:{period}");
        let missing = format!("No stored budget `{target}`.");
        self.delete_one(
            "DELETE FROM budgets WHERE scope = $1 AND name = $2 AND period = $3",
            &[scope, name, period],
            actor,
            "budget.delete",
            &target,
            missing,
        )
        .await
    }

    /// Creates a limit, or (`replace`) writes over an existing one.
    pub async fn put_limit(
        &self,
        limit: &LimitConfig,
        replace: bool,
        actor: &Actor,
    ) -> Result<(), ChangeError> {
        let scope = scope_text(limit.scope);
        let target = format!("{scope}:{}", limit.name);
        let rule = serde_json::to_string(limit).expect("a limit serializes");
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT rule FROM limits WHERE scope = $1 AND name = $2")
            .bind(scope)
            .bind(&limit.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let create = put_mode(
            exists,
            replace,
            || {
                format!(
                    "A limit for {scope} `{}` already exists; replace it with PUT.",
                    limit.name
                )
            },
            || format!("No stored limit `{target}`."),
        )?;
        let action = if create {
            sqlx::query(
                "INSERT INTO limits (scope, name, rule, updated_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(scope)
            .bind(&limit.name)
            .bind(&rule)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            "limit.create"
        } else {
            sqlx::query(
                "UPDATE limits SET rule = $1, updated_ms = $2 WHERE scope = $3 AND name = $4",
            )
            .bind(&rule)
            .bind(now_ms())
            .bind(scope)
            .bind(&limit.name)
            .execute(&mut *tx)
            .await?;
            "limit.update"
        };
        let detail = serde_json::from_str(&rule).unwrap_or(Value::Null);
        self.commit(tx, actor, action, &target, detail).await
    }

    pub async fn delete_limit(
        &self,
        scope: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), ChangeError> {
        let target = format!("{scope}:{name}");
        let missing = format!("No stored limit `{target}`.");
        self.delete_one(
            "DELETE FROM limits WHERE scope = $1 AND name = $2",
            &[scope, name],
            actor,
            "limit.delete",
            &target,
            missing,
        )
        .await
    }

    /// Ends a change: its audit row, the revision bump and the notification, then the commit.
    async fn commit(
        &self,
        mut tx: Transaction<'_, Any>,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), ChangeError> {
        super::audit::write(&mut tx, actor, action, target, &detail).await?;
        let revision: i64 = sqlx::query("UPDATE revision SET n = n + 1 WHERE id = 1 RETURNING n")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if self.backend() == Backend::Postgres {
            // Delivered to every listener when (and only if) the transaction commits.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "NOTIFY {CHANNEL}, '{revision}'"
            )))
            .execute(&mut *tx)
            .await?;
        }
        let result = tx.commit().await;
        self.observe(&result);
        result.map_err(ChangeError::from)
    }
}
