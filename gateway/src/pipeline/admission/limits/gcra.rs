//! The generic cell rate algorithm, in integer microseconds, with the clock passed in so tests
//! drive time. The Redis tier runs the same arithmetic in Lua (`redis_tier.rs`).
//!
//! A limit of `n` per minute with burst `b` emits one unit every `60 s / n` and tolerates `b`
//! units at once: a bucket idle for a minute admits its whole burst immediately.

/// A bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds per unit.
    pub interval_us: u64,
    /// How far ahead of now the bucket may run: `burst * interval`.
    pub tolerance_us: u64,
}

impl Rate {
    /// `amount` per minute; rates above 60 million per minute are held at one per microsecond.
    pub fn per_minute(amount: u64, burst: Option<u64>) -> Self {
        let interval_us = (60_000_000 / amount.max(1)).max(1);
        let burst = burst.unwrap_or(amount).max(1);
        Self {
            interval_us,
            tolerance_us: burst * interval_us,
        }
    }

    /// The share of this rate one of `replicas` holds alone (while the shared store is away).
    pub fn divided(&self, replicas: u64) -> Self {
        if replicas <= 1 {
            return *self;
        }
        let interval_us = self.interval_us * replicas;
        Self {
            interval_us,
            tolerance_us: (self.burst() / replicas).max(1) * interval_us,
        }
    }

    /// Units the bucket can hold at once.
    pub fn burst(&self) -> u64 {
        self.tolerance_us / self.interval_us
    }
}

/// The outcome of taking `cost` units at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Taken: the new theoretical arrival time, units left, and microseconds until full again.
    Admitted {
        tat: u64,
        remaining: u64,
        reset_us: u64,
    },
    /// Refused: microseconds until `cost` units would be admitted.
    Refused { retry_after_us: u64 },
}

/// Takes `cost` units from a bucket whose theoretical arrival time is `tat` (0 for a new bucket).
pub fn take(rate: Rate, tat: u64, now: u64, cost: u64) -> Take {
    let start = tat.max(now);
    let new_tat = start + cost * rate.interval_us;
    if new_tat - now > rate.tolerance_us {
        return Take::Refused {
            retry_after_us: new_tat - now - rate.tolerance_us,
        };
    }
    Take::Admitted {
        tat: new_tat,
        remaining: (rate.tolerance_us - (new_tat - now)) / rate.interval_us,
        reset_us: new_tat - now,
    }
}

/// Returns (`delta < 0`) or charges (`delta > 0`) units after the fact; never below `now`.
pub fn adjust(rate: Rate, tat: u64, now: u64, delta: i64) -> u64 {
    let start = tat.max(now) as i128;
    let moved = start + delta as i128 * rate.interval_us as i128;
    moved.max(now as i128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000;

    fn admitted(t: Take) -> u64 {
        match t {
            Take::Admitted { tat, .. } => tat,
            Take::Refused { .. } => panic!("refused"),
        }
    }

    #[test]
    fn an_idle_bucket_admits_its_whole_burst_then_refills_at_the_rate() {
        let rate = Rate::per_minute(60, None); // one per second, burst 60
        let mut tat = 0;
        let now = 1_000 * MIN;
        for _ in 0..60 {
            tat = admitted(take(rate, tat, now, 1));
        }
        assert_eq!(
            take(rate, tat, now, 1),
            Take::Refused {
                retry_after_us: 1_000_000
            }
        );
        // One second later exactly one more fits.
        let later = now + 1_000_000;
        tat = admitted(take(rate, tat, later, 1));
        assert!(matches!(take(rate, tat, later, 1), Take::Refused { .. }));
    }

    #[test]
    fn burst_overrides_the_first_part_and_costs_take_several_units() {
        let rate = Rate::per_minute(600, Some(10));
        assert_eq!(rate.burst(), 10);
        let now = MIN;
        let tat = admitted(take(rate, 0, now, 7));
        match take(rate, tat, now, 3) {
            Take::Admitted { remaining, .. } => assert_eq!(remaining, 0),
            other => panic!("{other:?}"),
        }
        assert!(matches!(take(rate, tat, now, 4), Take::Refused { .. }));
        assert!(
            matches!(take(rate, 0, now, 11), Take::Refused { .. }),
            "more than the burst never fits"
        );
    }

    #[test]
    fn huge_rates_never_divide_by_zero() {
        let rate = Rate::per_minute(10_000_000_000, None);
        assert_eq!(rate.interval_us, 1);
        assert!(matches!(take(rate, 0, MIN, 1000), Take::Admitted { .. }));
    }

    #[test]
    fn refunds_give_units_back_but_never_below_now() {
        let rate = Rate::per_minute(60, None);
        let now = MIN;
        let tat = admitted(take(rate, 0, now, 50));
        let refunded = adjust(rate, tat, now, -40);
        assert_eq!(refunded, now + 10 * 1_000_000);
        assert_eq!(adjust(rate, tat, now, -500), now);
        assert_eq!(adjust(rate, tat, now, 5), tat + 5 * 1_000_000);
    }
}
