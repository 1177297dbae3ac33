//! The one Redis connection the limit tier and the shared spend counters use: a single node
//! (`url`) or a Redis Cluster (`nodes`), plain or TLS (rustls, server names checked, optional
//! client certificate), lazily connected and self-healing, with a deadline on every call and at
//! most one reconnection attempt a second.
//!
//! Every key dsgw writes for a request carries its team as the hash tag (`dsgw:{team}:...`), so
//! each script and each pipeline below touches one cluster slot; the one exception, the index of
//! teams, is sent on its own (see `accounting/spend/shared.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use crate::support::config::RedisConfig;

/// Least time between two connection attempts while Redis is away.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RedisLinkError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is unreachable (next connection attempt in under a second)")]
    Backoff,
    #[error("redis answered with an unexpected shape")]
    Shape,
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
}

/// How to reach Redis.
#[derive(Clone)]
enum Target {
    Node(redis::Client),
    Cluster(ClusterClient),
}

/// A live connection: either kind answers the same commands.
#[derive(Clone)]
pub enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisLink {
    target: Target,
    connection: Mutex<(Option<Connection>, Option<Instant>)>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RedisLinkError> {
    std::fs::read(path).map_err(|source| RedisLinkError::File {
        path: path.display().to_string(),
        source,
    })
}

/// The certificates a `rediss://` connection uses, read and checked now so that a config that
/// cannot connect is refused at start (and by `dsgw check`), not at the first request.
fn certificates(config: &RedisConfig) -> Result<redis::TlsCertificates, RedisLinkError> {
    let root_cert = match &config.ca_file {
        Some(path) => {
            let pem = read(path)?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(RedisLinkError::Tls(format!(
                    "{}: no PEM certificate in it",
                    path.display()
                )));
            }
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

impl RedisLink {
    /// A link to the configured node or cluster (validated: exactly one of `url` / `nodes`,
    /// one scheme). Nothing connects yet.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisLinkError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let tls = config.uses_tls();
        let certs = if tls {
            Some(certificates(config)?)
        } else {
            None
        };
        let target = match (&config.url, certs) {
            (Some(url), None) => Target::Node(redis::Client::open(url.as_str())?),
            (Some(url), Some(certs)) => {
                Target::Node(redis::Client::build_with_tls(url.as_str(), certs)?)
            }
            (None, certs) => {
                let mut builder = ClusterClient::builder(config.nodes.iter().map(String::as_str))
                    .connection_timeout(timeout * 4)
                    .response_timeout(timeout * 4);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                Target::Cluster(builder.build()?)
            }
        };
        Ok(Self {
            target,
            connection: Mutex::new((None, None)),
            timeout,
        })
    }

    /// The deadline of one call on the request path.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn connection(&self) -> Result<Connection, RedisLinkError> {
        let mut guard = self.connection.lock().await;
        if let Some(c) = &guard.0 {
            return Ok(c.clone());
        }
        if guard.1.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err(RedisLinkError::Backoff);
        }
        guard.1 = Some(Instant::now());
        let connect = async {
            Ok::<_, redis::RedisError>(match &self.target {
                Target::Node(client) => {
                    Connection::Node(ConnectionManager::new(client.clone()).await?)
                }
                // The cluster connection follows MOVED / ASK, refreshes its slot map and
                // reconnects to nodes that come back on its own.
                Target::Cluster(client) => {
                    Connection::Cluster(client.get_async_connection().await?)
                }
            })
        };
        let connection = tokio::time::timeout(self.timeout * 4, connect)
            .await
            .map_err(|_| RedisLinkError::Timeout(self.timeout * 4))??;
        guard.0 = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `pipe` within the deadline.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, RedisLinkError> {
        self.query_within(pipe, self.timeout).await
    }

    pub async fn query_within<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
        limit: Duration,
    ) -> Result<T, RedisLinkError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(limit, pipe.query_async(&mut conn))
            .await
            .map_err(|_| RedisLinkError::Timeout(limit))?
            .map_err(Into::into)
    }

    /// Opens a fresh connection (not the shared, self-healing one, so a refusal shows as what
    /// it is: a certificate not trusted, a handshake refused) and asks for `PING`: what
    /// `dsgw check --connect` runs.
    pub async fn ping(&self) -> Result<(), RedisLinkError> {
        let limit = self.timeout * 4;
        let ping = redis::cmd("PING");
        let answer = async {
            let reply: Value = match &self.target {
                Target::Node(client) => {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    ping.query_async(&mut conn).await?
                }
                Target::Cluster(client) => {
                    let mut conn = client.get_async_connection().await?;
                    ping.query_async(&mut conn).await?
                }
            };
            Ok::<_, redis::RedisError>(reply)
        };
        match tokio::time::timeout(limit, answer)
            .await
            .map_err(|_| RedisLinkError::Timeout(limit))??
        {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            Value::Okay => Ok(()),
            _ => Err(RedisLinkError::Shape),
        }
    }
}

/// Writes made after a response (a reservation's settlement, a record's spend) gathered into
/// one atomic pipeline per hash slot, sent when this is dropped: a request's settlement is one
/// round trip, whatever it touches.
#[derive(Default)]
pub struct AfterWrites {
    batches: Vec<(Arc<RedisLink>, String, Pipeline)>,
}

impl std::fmt::Debug for AfterWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterWrites")
            .field("batches", &self.batches.len())
            .finish()
    }
}

impl AfterWrites {
    /// The pipeline for `tag` (a hash tag, `{team}`) on `link`, to add commands to.
    pub fn to(&mut self, link: &Arc<RedisLink>, tag: &str) -> &mut Pipeline {
        let at = self
            .batches
            .iter()
            .position(|(l, t, _)| Arc::ptr_eq(l, link) && t == tag);
        let at = at.unwrap_or_else(|| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            self.batches.push((link.clone(), tag.to_owned(), pipe));
            self.batches.len() - 1
        });
        &mut self.batches[at].2
    }
}

impl Drop for AfterWrites {
    fn drop(&mut self) {
        for (link, _, pipe) in self.batches.drain(..) {
            let send = async move {
                if let Err(e) = link.query_within::<()>(&pipe, link.timeout() * 4).await {
                    tracing::error!(target: "dsgw::redis", error = %e, "could not write a settlement (limits and shared spend) to redis");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(send);
                }
                Err(_) => {
                    tracing::error!(target: "dsgw::redis", "no runtime to write a settlement to redis")
                }
            }
        }
    }
}
