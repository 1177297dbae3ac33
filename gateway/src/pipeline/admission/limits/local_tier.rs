//! The in-process tier: GCRA buckets and concurrency counters in a map, pruned as buckets go
//! idle (an idle bucket equals a fresh one), so its size follows the active principals only.

use std::collections::HashMap;
use std::sync::Mutex;

use super::gcra::{self, Take};
use super::{Bucket, Check, Refusal};

#[derive(Debug, Default)]
pub struct LocalTier {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tats: HashMap<String, u64>,
    in_flight: HashMap<String, u64>,
    ops: u64,
}

impl LocalTier {
    /// Takes every bucket or none.
    pub fn take(&self, buckets: &[Bucket], now: u64, divisor: u64) -> Result<Vec<Check>, Refusal> {
        let mut state = self.state.lock().expect("limit state lock");
        state.ops += 1;
        if state.ops % 1024 == 0 {
            state.tats.retain(|_, tat| *tat > now);
            state.in_flight.retain(|_, n| *n > 0);
        }
        let mut checks = Vec::with_capacity(buckets.len());
        for (i, b) in buckets.iter().enumerate() {
            match b {
                Bucket::Rate {
                    key, rate, cost, ..
                } => {
                    let rate = rate.divided(divisor);
                    let tat = state.tats.get(key).copied().unwrap_or(0);
                    match gcra::take(rate, tat, now, *cost) {
                        Take::Admitted {
                            tat,
                            remaining,
                            reset_us,
                        } => checks.push(Check::Rate {
                            tat,
                            remaining,
                            reset_us,
                        }),
                        Take::Refused { retry_after_us } => {
                            return Err(Refusal {
                                bucket: i,
                                retry_after_us,
                            });
                        }
                    }
                }
                Bucket::Concurrency { key, limit, .. } => {
                    let limit = (limit / divisor).max(1);
                    let n = state.in_flight.get(key).copied().unwrap_or(0);
                    if n >= limit {
                        return Err(Refusal {
                            bucket: i,
                            retry_after_us: 1_000_000,
                        });
                    }
                    checks.push(Check::Concurrency);
                }
            }
        }
        for (b, check) in buckets.iter().zip(&checks) {
            match (b, check) {
                (Bucket::Rate { key, .. }, Check::Rate { tat, .. }) => {
                    state.tats.insert(key.clone(), *tat);
                }
                (Bucket::Concurrency { key, .. }, _) => {
                    *state.in_flight.entry(key.clone()).or_default() += 1
                }
                _ => {}
            }
        }
        Ok(checks)
    }

    /// Returns concurrency slots and reconciles token buckets by `deltas` (one per bucket).
    pub fn settle(&self, buckets: &[Bucket], deltas: &[i64], now: u64, divisor: u64) {
        let mut state = self.state.lock().expect("limit state lock");
        for (b, delta) in buckets.iter().zip(deltas) {
            match b {
                Bucket::Rate { key, rate, .. } => {
                    if *delta != 0 {
                        let tat = state.tats.get(key).copied().unwrap_or(0);
                        let moved = gcra::adjust(rate.divided(divisor), tat, now, *delta);
                        state.tats.insert(key.clone(), moved);
                    }
                }
                Bucket::Concurrency { key, .. } => {
                    if let Some(n) = state.in_flight.get_mut(key) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.tats.len() + state.in_flight.len()
    }
}
