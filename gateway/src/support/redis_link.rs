//! One lazily connected, self-healing Redis connection shared by the limit tier and the shared
//! spend counters, with a deadline on every call and at most one reconnection attempt a second.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

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
}

pub struct RedisLink {
    client: redis::Client,
    connection: Mutex<(Option<ConnectionManager>, Option<Instant>)>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisLink {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: Mutex::new((None, None)),
            timeout,
        })
    }

    /// The deadline of one call on the request path.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn connection(&self) -> Result<ConnectionManager, RedisLinkError> {
        let mut guard = self.connection.lock().await;
        if let Some(c) = &guard.0 {
            return Ok(c.clone());
        }
        if guard.1.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err(RedisLinkError::Backoff);
        }
        guard.1 = Some(Instant::now());
        let manager = tokio::time::timeout(
            self.timeout * 4,
            ConnectionManager::new(self.client.clone()),
        )
        .await
        .map_err(|_| RedisLinkError::Timeout(self.timeout * 4))??;
        guard.0 = Some(manager.clone());
        Ok(manager)
    }

    /// Runs `pipe` within the deadline.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisLinkError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
            .await
            .map_err(|_| RedisLinkError::Timeout(self.timeout))?
            .map_err(Into::into)
    }
}
