//! Delays between attempts on a deployment that was already tried: exponential with full
//! jitter, so many clients retrying a struggling provider do not arrive in lockstep.

use std::time::Duration;

use crate::support::config::RoutingConfig;

/// The wait before round `round` (1 = the second pass over the deployments), at least the
/// provider's `Retry-After` when it gave one.
pub fn delay(
    config: &RoutingConfig,
    round: u32,
    retry_after: Option<Duration>,
    draw: u64,
) -> Duration {
    let ceiling = config
        .backoff_base_ms
        .saturating_mul(1u64 << round.saturating_sub(1).min(20))
        .min(config.backoff_max_ms);
    let jittered = Duration::from_millis(if ceiling == 0 { 0 } else { draw % ceiling });
    retry_after.map_or(jittered, |r| r.max(jittered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_below_it() {
        let c = RoutingConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..RoutingConfig::default()
        };
        for draw in [0, 1, 99, 12_345, u64::MAX] {
            assert!(delay(&c, 1, None, draw) < Duration::from_millis(100));
            assert!(delay(&c, 2, None, draw) < Duration::from_millis(200));
            assert!(delay(&c, 30, None, draw) < Duration::from_millis(1_000));
        }
        assert_eq!(delay(&c, 3, None, 399), Duration::from_millis(399));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let c = RoutingConfig::default();
        let d = delay(&c, 1, Some(Duration::from_secs(2)), 5);
        assert_eq!(d, Duration::from_secs(2));
    }
}
