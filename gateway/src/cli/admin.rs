//! `dsgw admin ...`: the admin API from a shell. The base URL and admin key come from flags or
//! `DSGW_URL` / `DSGW_ADMIN_KEY`; output is a table, or the API's JSON with `--json`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct AdminArgs {
    /// The gateway's base URL.
    #[arg(long, env = "DSGW_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin key (`admin = true`).
    #[arg(long, env = "DSGW_ADMIN_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Virtual keys in the store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Teams and their labels.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// Spend budgets.
    Budgets {
        #[command(subcommand)]
        command: BudgetsCommand,
    },
    /// Rate, token and concurrency limits.
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// Spend by team, key, model, day or deployment.
    Spend {
        /// Inclusive start: RFC 3339 or a date (default: the start of this month, UTC).
        #[arg(long)]
        from: Option<String>,
        /// Exclusive end (default: now).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "team")]
        group_by: String,
        #[arg(long)]
        team: Option<String>,
        /// As CSV, for a spreadsheet.
        #[arg(long)]
        csv: bool,
    },
    /// The latest changes made through the admin API.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Copy a configuration file's [[keys]], [[budgets]] and [[limits]] into the store (keys keep
    /// their secrets: only digests travel). Entries already stored are reported and skipped.
    Import {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        team: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        admin: bool,
        /// RFC 3339 time or a date.
        #[arg(long)]
        expires_at: Option<String>,
        /// `name=value`, repeatable.
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
    },
    List {
        #[arg(long)]
        team: Option<String>,
        /// Include revoked keys.
        #[arg(long)]
        revoked: bool,
    },
    Get {
        id: String,
    },
    /// Change a key's team, owner, expiry or labels.
    Update {
        id: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, conflicts_with = "no_expiry")]
        expires_at: Option<String>,
        #[arg(long)]
        no_expiry: bool,
        /// `name=value`, repeatable: replaces the labels.
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
    },
    /// A new secret, printed once; the old one works for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value_t = 3600)]
        grace_seconds: i64,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum TeamsCommand {
    Create {
        name: String,
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum BudgetsCommand {
    /// Create a budget, or change its amount if it exists.
    Set {
        /// `team` or `key`.
        scope: String,
        name: String,
        /// `day`, `month` or `total`.
        period: String,
        /// USD, a decimal string.
        amount: String,
    },
    List,
    Delete {
        scope: String,
        name: String,
        period: String,
    },
}

#[derive(Subcommand)]
pub enum LimitsCommand {
    /// Create a limit, or replace it if it exists.
    Set {
        scope: String,
        name: String,
        #[arg(long)]
        requests_per_minute: Option<u64>,
        #[arg(long)]
        tokens_per_minute: Option<u64>,
        #[arg(long)]
        concurrent: Option<u64>,
        #[arg(long)]
        burst: Option<u64>,
        /// `open` or `closed`: what the limit does while Redis is away.
        #[arg(long)]
        on_redis_failure: Option<String>,
    },
    List,
    Delete {
        scope: String,
        name: String,
    },
}

fn label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

fn labels(pairs: Vec<(String, String)>) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// One call to the API.
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {}", self.base))?;
        let status = response.status().as_u16();
        let text = response.text().await.context("reading the answer")?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// The call's JSON, or its error message as the command's error.
    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        bail!("{status}: {message}")
    }
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    dsgw::providers::install_tls();
    let key = args
        .key
        .clone()
        .context("an admin key is needed: --key or DSGW_ADMIN_KEY")?;
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?,
        base: args.url.trim_end_matches('/').to_owned(),
        key,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(execute(&client, args.command, args.json))
}

/// Query string text, percent-encoded.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn execute(client: &Client, command: AdminCommand, as_json: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let print = |value: &Value, columns: &[&str]| {
        if as_json {
            println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
        } else {
            let rows = value["data"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![value.clone()]);
            print!("{}", table(&rows, columns));
        }
    };
    let key_columns = [
        "id",
        "team",
        "owner",
        "admin",
        "expires_at",
        "revoked_at",
        "source",
    ];
    match command {
        AdminCommand::Keys { command } => match command {
            KeysCommand::Create {
                id,
                team,
                owner,
                admin,
                expires_at,
                labels: l,
            } => {
                let mut body = json!({"id": id, "team": team, "admin": admin, "labels": labels(l)});
                if let Some(o) = owner {
                    body["owner"] = json!(o);
                }
                if let Some(e) = expires_at {
                    body["expires_at"] = json!(e);
                }
                let v = client
                    .ok(Method::POST, "/v1/admin/keys", Some(body))
                    .await?;
                if as_json {
                    print(&v, &[]);
                } else {
                    println!(
                        "key: {}\n(shown once; only its hash is stored)",
                        v["key"].as_str().unwrap_or("")
                    );
                    print!("{}", table(&[v], &key_columns));
                }
            }
            KeysCommand::List { team, revoked } => {
                let mut all = Vec::new();
                let mut after = String::new();
                loop {
                    let mut path = format!("/v1/admin/keys?limit=1000&revoked={revoked}");
                    if let Some(t) = &team {
                        path.push_str(&format!("&team={}", encode(t)));
                    }
                    if !after.is_empty() {
                        path.push_str(&format!("&after={}", encode(&after)));
                    }
                    let v = client.ok(Method::GET, &path, None).await?;
                    all.extend(v["data"].as_array().cloned().unwrap_or_default());
                    match (v["has_more"].as_bool(), v["last_id"].as_str()) {
                        (Some(true), Some(last)) => after = last.to_owned(),
                        _ => break,
                    }
                }
                print(&json!({"object": "list", "data": all}), &key_columns);
            }
            KeysCommand::Get { id } => {
                let v = client
                    .ok(
                        Method::GET,
                        &format!("/v1/admin/keys/{}", encode(&id)),
                        None,
                    )
                    .await?;
                print(&v, &key_columns);
            }
            KeysCommand::Update {
                id,
                team,
                owner,
                expires_at,
                no_expiry,
                labels: l,
            } => {
                let mut body = Map::new();
                if let Some(t) = team {
                    body.insert("team".into(), json!(t));
                }
                if let Some(o) = owner {
                    body.insert("owner".into(), json!(o));
                }
                if let Some(e) = expires_at {
                    body.insert("expires_at".into(), json!(e));
                }
                if no_expiry {
                    body.insert("expires_at".into(), Value::Null);
                }
                if !l.is_empty() {
                    body.insert("labels".into(), Value::Object(labels(l)));
                }
                let v = client
                    .ok(
                        Method::PATCH,
                        &format!("/v1/admin/keys/{}", encode(&id)),
                        Some(Value::Object(body)),
                    )
                    .await?;
                print(&v, &key_columns);
            }
            KeysCommand::Rotate { id, grace_seconds } => {
                let v = client
                    .ok(
                        Method::POST,
                        &format!("/v1/admin/keys/{}/rotate", encode(&id)),
                        Some(json!({"grace_seconds": grace_seconds})),
                    )
                    .await?;
                if as_json {
                    print(&v, &[]);
                } else {
                    println!(
                        "key: {}\n(shown once; the old secret works until {})",
                        v["key"].as_str().unwrap_or(""),
                        v["previous_secret_valid_until"].as_str().unwrap_or("now")
                    );
                }
            }
            KeysCommand::Revoke { id } => {
                let v = client
                    .ok(
                        Method::DELETE,
                        &format!("/v1/admin/keys/{}", encode(&id)),
                        None,
                    )
                    .await?;
                print(&v, &key_columns);
            }
        },
        AdminCommand::Teams { command } => {
            let columns = ["name", "labels", "source"];
            let v = match command {
                TeamsCommand::Create { name, labels: l } => {
                    let body = json!({"name": name, "labels": labels(l)});
                    client
                        .ok(Method::POST, "/v1/admin/teams", Some(body))
                        .await?
                }
                TeamsCommand::List => client.ok(Method::GET, "/v1/admin/teams", None).await?,
                TeamsCommand::Delete { name } => {
                    client
                        .ok(
                            Method::DELETE,
                            &format!("/v1/admin/teams/{}", encode(&name)),
                            None,
                        )
                        .await?
                }
            };
            print(&v, &columns);
        }
        AdminCommand::Budgets { command } => {
            let columns = ["scope", "name", "period", "amount", "left", "source"];
            let v = match command {
                BudgetsCommand::Set {
                    scope,
                    name,
                    period,
                    amount,
                } => {
                    let body =
                        json!({"scope": scope, "name": name, "period": period, "amount": amount});
                    let (status, v) = client
                        .call(Method::POST, "/v1/admin/budgets", Some(body))
                        .await?;
                    if status == 409 {
                        let path = format!(
                            "/v1/admin/budgets/{}/{}/{}",
                            encode(&scope),
                            encode(&name),
                            encode(&period)
                        );
                        client
                            .ok(Method::PATCH, &path, Some(json!({"amount": amount})))
                            .await?
                    } else if (200..300).contains(&status) {
                        v
                    } else {
                        bail!("{status}: {}", v["error"]["message"].as_str().unwrap_or(""))
                    }
                }
                BudgetsCommand::List => client.ok(Method::GET, "/v1/admin/budgets", None).await?,
                BudgetsCommand::Delete {
                    scope,
                    name,
                    period,
                } => {
                    let path = format!(
                        "/v1/admin/budgets/{}/{}/{}",
                        encode(&scope),
                        encode(&name),
                        encode(&period)
                    );
                    client.ok(Method::DELETE, &path, None).await?
                }
            };
            print(&v, &columns);
        }
        AdminCommand::Limits { command } => {
            let columns = [
                "scope",
                "name",
                "requests_per_minute",
                "tokens_per_minute",
                "concurrent",
                "source",
            ];
            let v = match command {
                LimitsCommand::Set {
                    scope,
                    name,
                    requests_per_minute,
                    tokens_per_minute,
                    concurrent,
                    burst,
                    on_redis_failure,
                } => {
                    let mut fields = Map::new();
                    for (k, v) in [
                        ("requests_per_minute", requests_per_minute),
                        ("tokens_per_minute", tokens_per_minute),
                        ("concurrent", concurrent),
                        ("burst", burst),
                    ] {
                        if let Some(v) = v {
                            fields.insert(k.into(), json!(v));
                        }
                    }
                    if let Some(f) = on_redis_failure {
                        fields.insert("on_redis_failure".into(), json!(f));
                    }
                    let path = format!("/v1/admin/limits/{}/{}", encode(&scope), encode(&name));
                    let mut create = fields.clone();
                    create.insert("scope".into(), json!(scope));
                    create.insert("name".into(), json!(name));
                    let (status, v) = client
                        .call(
                            Method::POST,
                            "/v1/admin/limits",
                            Some(Value::Object(create)),
                        )
                        .await?;
                    if status == 409 {
                        client
                            .ok(Method::PUT, &path, Some(Value::Object(fields)))
                            .await?
                    } else if (200..300).contains(&status) {
                        v
                    } else {
                        bail!("{status}: {}", v["error"]["message"].as_str().unwrap_or(""))
                    }
                }
                LimitsCommand::List => client.ok(Method::GET, "/v1/admin/limits", None).await?,
                LimitsCommand::Delete { scope, name } => {
                    let path = format!("/v1/admin/limits/{}/{}", encode(&scope), encode(&name));
                    client.ok(Method::DELETE, &path, None).await?
                }
            };
            print(&v, &columns);
        }
        AdminCommand::Spend {
            from,
            to,
            group_by,
            team,
            csv,
        } => {
            let mut path = format!("/v1/admin/spend?group_by={}", encode(&group_by));
            for (name, value) in [("from", from), ("to", to), ("team", team)] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={}", encode(&v)));
                }
            }
            let v = client.ok(Method::GET, &path, None).await?;
            let columns = [
                group_by.as_str(),
                "requests",
                "prompt_cache_hit_tokens",
                "prompt_cache_miss_tokens",
                "completion_tokens",
                "reasoning_tokens",
                "cost",
                "unanswered_calls",
                "unanswered_cost",
            ];
            if csv {
                let rows = v["data"].as_array().cloned().unwrap_or_default();
                println!("{}", columns.join(","));
                for row in rows {
                    let cells: Vec<String> =
                        columns.iter().map(|c| csv_cell(&cell(&row[*c]))).collect();
                    println!("{}", cells.join(","));
                }
            } else {
                print(&v, &columns);
                if !as_json {
                    println!("total: {} USD", v["total_cost"].as_str().unwrap_or("0"));
                }
            }
        }
        AdminCommand::Audit { limit } => {
            let v = client
                .ok(Method::GET, &format!("/v1/admin/audit?limit={limit}"), None)
                .await?;
            print(&v, &["at", "actor", "action", "target"]);
        }
        AdminCommand::Import { config } => import(client, &config).await?,
    }
    Ok(())
}

/// Sends the file's keys (as digests), budgets and limits to the store.
async fn import(client: &Client, path: &std::path::Path) -> anyhow::Result<()> {
    use reqwest::Method;
    let config = dsgw::support::config::Config::load(path)?;
    let mut created = 0;
    let mut skipped = 0;
    let mut tally = |status: u16, what: String, v: &Value| -> anyhow::Result<()> {
        match status {
            200..=299 => {
                created += 1;
                println!("imported {what}");
            }
            409 => {
                skipped += 1;
                println!(
                    "skipped  {what}: {}",
                    v["error"]["message"].as_str().unwrap_or("exists")
                );
            }
            _ => bail!(
                "{what}: {status}: {}",
                v["error"]["message"].as_str().unwrap_or("")
            ),
        }
        Ok(())
    };
    for k in &config.keys {
        let digest = match (&k.key_sha256, &k.key_env) {
            (Some(d), _) => d.clone(),
            (None, Some(var)) => {
                let secret = std::env::var(var).with_context(|| {
                    format!("key {:?}: environment variable {var} is not set", k.id)
                })?;
                dsgw::support::hashing::hex(&dsgw::support::hashing::sha256(secret.as_bytes()))
            }
            (None, None) => bail!("key {:?} has neither key_sha256 nor key_env", k.id),
        };
        let body = json!({"id": k.id, "team": k.team, "admin": k.admin, "key_sha256": digest,
            "clearance": k.clearance, "default_classification": k.default_classification,
            "opt_ins": k.opt_ins});
        let (status, v) = client
            .call(Method::POST, "/v1/admin/keys", Some(body))
            .await?;
        tally(status, format!("key {}", k.id), &v)?;
    }
    for b in &config.budgets {
        let body = serde_json::to_value(b)?;
        let (status, v) = client
            .call(Method::POST, "/v1/admin/budgets", Some(body))
            .await?;
        tally(
            status,
            format!("budget {:?} {} {:?}", b.scope, b.name, b.period),
            &v,
        )?;
    }
    for l in &config.limits {
        let body = serde_json::to_value(l)?;
        let (status, v) = client
            .call(Method::POST, "/v1/admin/limits", Some(body))
            .await?;
        tally(status, format!("limit {:?} {}", l.scope, l.name), &v)?;
    }
    println!(
        "{created} imported, {skipped} skipped. Remove the imported entries from {} and restart (or \
         reload) the replicas: while the file has them, the file's copy wins.",
        path.display()
    );
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Rows as a plain-text table of `columns`.
fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |values: Vec<&str>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut out = line(columns.to_vec());
    for r in &cells {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_csv_quotes() {
        let rows = vec![
            json!({"a": "x", "b": 12}),
            json!({"a": "longer", "b": null}),
        ];
        assert_eq!(table(&rows, &["a", "b"]), "a       b\nx       12\nlonger\n");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
