//! The global tier: one Lua script checks the request's budgets and takes every bucket
//! atomically (all or nothing) on the Redis server's clock; another returns what was reserved.
//! Keys of one request share a hash tag (the team: `Limiter::buckets`, `record::counter`), so
//! both scripts run on Redis Cluster, in the slot of that team.

use std::sync::Arc;

use crate::support::redis_link::{AfterWrites, RedisLink};
use redis::Script;

use super::{Bucket, Check, Refusal, SpendCap};

// Entries of four arguments each: `r` (rate: interval, tolerance, cost), `c` (concurrency: limit,
// member, lease) or `b` (a budget's spend counter in nanodollars: the amount it may not reach).
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i = 1, #KEYS do
  local b = (i - 1) * 4
  if ARGV[b + 1] == 'b' then
    if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[b + 2]) then return {2, i, 0} end
  elseif ARGV[b + 1] == 'r' then
    local interval = tonumber(ARGV[b + 2])
    local tolerance = tonumber(ARGV[b + 3])
    local cost = tonumber(ARGV[b + 4])
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + cost * interval
    if new_tat - now > tolerance then return {0, i, new_tat - now - tolerance} end
    tats[i] = new_tat
  elseif ARGV[b + 1] == 'c' then
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
  elseif ARGV[b + 1] == 'c' then
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

/// What the take script decided.
#[derive(Debug)]
pub(crate) enum Taken {
    Admitted(Vec<Check>),
    Limited(Refusal),
    /// A budget's counter has reached its amount; nothing was taken.
    OverBudget,
}

pub struct RedisTier {
    link: Arc<RedisLink>,
    take: Script,
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
        }
    }

    /// Checks `caps` and takes `buckets`, in one round trip (`EVALSHA`, loading the script
    /// first only when the server does not have it).
    pub async fn take(
        &self,
        buckets: &[Bucket],
        caps: &[SpendCap],
        member: &str,
    ) -> Result<Taken, TierError> {
        let mut conn = self.link.connection().await?;
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
        for cap in caps {
            // Counters are integer nanodollars; a budget is spent once they reach its amount.
            invocation
                .key(&cap.counter)
                .arg("b")
                .arg(cap.amount_pico.div_ceil(1000))
                .arg(0)
                .arg(0);
        }
        let reply: Vec<i64> =
            tokio::time::timeout(self.link.timeout(), invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| TierError::Timeout(self.link.timeout()))??;
        match reply.as_slice() {
            [2, ..] => Ok(Taken::OverBudget),
            [0, bucket, retry, ..] => Ok(Taken::Limited(Refusal {
                bucket: (*bucket as usize).saturating_sub(1),
                retry_after_us: (*retry).max(0) as u64,
            })),
            [1, _, _, rest @ ..] if rest.len() == 2 * buckets.len() => Ok(Taken::Admitted(
                buckets
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
                    .collect(),
            )),
            _ => Err(TierError::Shape),
        }
    }

    /// Returns a reservation: concurrency slots back, token buckets reconciled by `deltas_us`.
    /// Added to `writes` (the request's one settlement round trip) as a plain `EVAL`, which
    /// cannot fail with `NOSCRIPT` inside the transaction; nothing is sent when there is
    /// nothing to return.
    pub fn settle(
        &self,
        buckets: &[Bucket],
        deltas_us: &[i64],
        member: &str,
        tag: &str,
        writes: &mut AfterWrites,
    ) {
        let needed = buckets
            .iter()
            .zip(deltas_us)
            .any(|(b, d)| matches!(b, Bucket::Concurrency { .. }) || *d != 0);
        if !needed {
            return;
        }
        let mut eval = redis::cmd("EVAL");
        eval.arg(SETTLE).arg(buckets.len());
        for b in buckets {
            match b {
                Bucket::Rate { key, .. } | Bucket::Concurrency { key, .. } => {
                    eval.arg(key);
                }
            }
        }
        for (b, delta) in buckets.iter().zip(deltas_us) {
            match b {
                Bucket::Rate { .. } => {
                    eval.arg("r").arg(*delta);
                }
                Bucket::Concurrency { .. } => {
                    eval.arg("c").arg(member);
                }
            }
        }
        writes.to(&self.link, tag).add_command(eval).ignore();
    }
}
