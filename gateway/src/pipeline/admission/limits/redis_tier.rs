//! The global tier: one Lua script takes every bucket of a request atomically (all or nothing) on
//! the Redis server's clock; another returns what was reserved. Keys of one request share a hash
//! tag (the team), so both scripts also run on Redis Cluster.

use std::sync::Arc;

use crate::support::redis_link::RedisLink;
use redis::Script;

use super::{Bucket, Check, Refusal};

const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i = 1, #KEYS do
  local b = (i - 1) * 4
  if ARGV[b + 1] == 'r' then
    local interval = tonumber(ARGV[b + 2])
    local tolerance = tonumber(ARGV[b + 3])
    local cost = tonumber(ARGV[b + 4])
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + cost * interval
    if new_tat - now > tolerance then return {0, i, new_tat - now - tolerance} end
    tats[i] = new_tat
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[b + 2]) then return {0, i, 1000000} end
  end
end
local out = {1, 0, 0}
for i = 1, #KEYS do
  local b = (i - 1) * 4
  if ARGV[b + 1] == 'r' then
    local interval = tonumber(ARGV[b + 2])
    local tolerance = tonumber(ARGV[b + 3])
    local ahead = tats[i] - now
    redis.call('SET', KEYS[i], tats[i], 'PX', math.floor(ahead / 1000) + 1000)
    table.insert(out, math.floor((tolerance - ahead) / interval))
    table.insert(out, ahead)
  else
    local lease = tonumber(ARGV[b + 4])
    redis.call('ZADD', KEYS[i], now + lease, ARGV[b + 3])
    redis.call('PEXPIRE', KEYS[i], math.floor(lease / 1000) + 1000)
    table.insert(out, tonumber(ARGV[b + 2]) - redis.call('ZCARD', KEYS[i]))
    table.insert(out, 0)
  end
end
return out
";

const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local b = (i - 1) * 2
  if ARGV[b + 1] == 'c' then
    redis.call('ZREM', KEYS[i], ARGV[b + 2])
  else
    local delta = tonumber(ARGV[b + 2])
    if delta ~= 0 then
      local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
      if tat < now then tat = now end
      tat = tat + delta
      if tat > now then
        redis.call('SET', KEYS[i], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
end
return 1
";

/// How long a concurrency slot survives a replica that died holding it.
const LEASE_US: u64 = 15 * 60 * 1_000_000;

pub use crate::support::redis_link::RedisLinkError as TierError;

pub struct RedisTier {
    link: Arc<RedisLink>,
    take: Script,
    settle: Script,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("link", &self.link)
            .finish()
    }
}

impl RedisTier {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            take: Script::new(TAKE),
            settle: Script::new(SETTLE),
        }
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, TierError> {
        self.link.connection().await
    }

    pub async fn take(
        &self,
        buckets: &[Bucket],
        member: &str,
    ) -> Result<Result<Vec<Check>, Refusal>, TierError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.take.prepare_invoke();
        for b in buckets {
            match b {
                Bucket::Rate {
                    key, rate, cost, ..
                } => {
                    invocation
                        .key(key)
                        .arg("r")
                        .arg(rate.interval_us)
                        .arg(rate.tolerance_us)
                        .arg(*cost);
                }
                Bucket::Concurrency { key, limit, .. } => {
                    invocation
                        .key(key)
                        .arg("c")
                        .arg(*limit)
                        .arg(member)
                        .arg(LEASE_US);
                }
            }
        }
        let reply: Vec<i64> =
            tokio::time::timeout(self.link.timeout(), invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| TierError::Timeout(self.link.timeout()))??;
        match reply.as_slice() {
            [0, bucket, retry, ..] => Ok(Err(Refusal {
                bucket: (*bucket as usize).saturating_sub(1),
                retry_after_us: (*retry).max(0) as u64,
            })),
            [1, _, _, rest @ ..] if rest.len() == 2 * buckets.len() => Ok(Ok(buckets
                .iter()
                .zip(rest.chunks_exact(2))
                .map(|(b, pair)| match b {
                    Bucket::Rate { .. } => Check::Rate {
                        tat: 0,
                        remaining: pair[0].max(0) as u64,
                        reset_us: pair[1].max(0) as u64,
                    },
                    Bucket::Concurrency { .. } => Check::Concurrency,
                })
                .collect())),
            _ => Err(TierError::Shape),
        }
    }

    pub async fn settle(
        &self,
        buckets: &[Bucket],
        deltas_us: &[i64],
        member: &str,
    ) -> Result<(), TierError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.settle.prepare_invoke();
        for (b, delta) in buckets.iter().zip(deltas_us) {
            match b {
                Bucket::Rate { key, .. } => {
                    invocation.key(key).arg("r").arg(*delta);
                }
                Bucket::Concurrency { key, .. } => {
                    invocation.key(key).arg("c").arg(member);
                }
            }
        }
        let _: i64 =
            tokio::time::timeout(self.link.timeout() * 4, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| TierError::Timeout(self.link.timeout() * 4))??;
        Ok(())
    }
}
