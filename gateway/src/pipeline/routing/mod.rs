//! Which deployments a request tries, in what order, and how it moves between them.
//!
//! The [`catalog`] maps each exposed model name to its deployments. [`plan`] orders the ones a
//! request may reach: by priority group, and inside a group by health (slow ones last,
//! [`health`]) and weighted rendezvous hashing on the conversation's fingerprint
//! ([`affinity`]), so one conversation keeps hitting one provider's prefix cache. [`dispatch`]
//! walks that order with bounded attempts, backoff ([`backoff`]) and circuit breakers, and hands
//! back the first answer that reached its first byte.

pub mod affinity;
pub mod backoff;
pub mod catalog;
pub mod dispatch;
pub mod health;

use std::borrow::Borrow;
use std::time::Duration;

use crate::support::config::RoutingConfig;
use crate::wire::raw_object::RawObject;
use catalog::Deployment;

/// The order in which to try `candidates` (a model's deployments the policies allow, or
/// anything that holds one).
pub fn plan<T: Borrow<Deployment>>(
    mut order: Vec<T>,
    raw: &RawObject,
    config: &RoutingConfig,
) -> Vec<T> {
    order.sort_by_key(|d| d.borrow().priority);
    let shared = order
        .windows(2)
        .any(|w| w[0].borrow().priority == w[1].borrow().priority);
    if !shared {
        return order;
    }
    // Only groups need a key: one fingerprint per request, or a random draw for short anchors.
    let key = config
        .affinity
        .then(|| affinity::fingerprint(raw, config.affinity_min_bytes))
        .flatten()
        .unwrap_or_else(crate::support::random::random_u64);
    for group in order.chunk_by_mut(|a, b| a.borrow().priority == b.borrow().priority) {
        if group.len() < 2 {
            continue;
        }
        let slow = slow_threshold(group, config);
        group.sort_by(|a, b| {
            let (a, b) = (a.borrow(), b.borrow());
            let a_slow = is_slow(a, slow);
            let b_slow = is_slow(b, slow);
            a_slow.cmp(&b_slow).then_with(|| {
                affinity::score(key, b.id_hash, b.weight)
                    .total_cmp(&affinity::score(key, a.id_hash, a.weight))
            })
        });
    }
    order
}

/// Time to first byte above which a deployment of this group counts as slow: `slow_factor`
/// times the group's fastest closed deployment, and never below `slow_floor_ms`.
fn slow_threshold<T: Borrow<Deployment>>(group: &[T], config: &RoutingConfig) -> Option<Duration> {
    let best = group
        .iter()
        .map(Borrow::borrow)
        .filter(|d: &&Deployment| d.health.breaker.is_closed())
        .filter_map(|d| d.health.ttfb.get())
        .min()?;
    Some(
        best.mul_f64(config.slow_factor)
            .max(Duration::from_millis(config.slow_floor_ms)),
    )
}

fn is_slow(d: &Deployment, threshold: Option<Duration>) -> bool {
    matches!((d.health.ttfb.get(), threshold), (Some(t), Some(limit)) if t > limit)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::routing::catalog::Catalog;
    use crate::pipeline::routing::health::Observation;
    use crate::providers::Provider;
    use crate::support::config::{Config, ProviderConfig};

    fn catalog(deployments: &str) -> Catalog {
        let text = format!(
            r#"
[[providers]]
name = "a"
kind = "deepseek"
base_url = "http://127.0.0.1:9"
[[providers]]
name = "b"
kind = "deepseek"
base_url = "http://127.0.0.1:9"
[[providers]]
name = "c"
kind = "deepseek"
base_url = "http://127.0.0.1:9"
[[models]]
name = "m"
deployments = [{deployments}]
"#
        );
        let config = Config::parse(&text).unwrap();
        let providers = config
            .providers
            .iter()
            .enumerate()
            .map(|(i, p): (usize, &ProviderConfig)| {
                (
                    p.name().to_owned(),
                    Arc::new(Provider::start(i, p).unwrap()),
                )
            })
            .collect();
        Catalog::build(&config, &providers)
    }

    fn names(order: &[&Deployment]) -> Vec<String> {
        order.iter().map(|d| d.provider.name.clone()).collect()
    }

    fn request(first_user: &str, later: &str) -> RawObject {
        let system = "x".repeat(400);
        RawObject::parse(&format!(
            r#"{{"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{first_user}"}}{later}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn without_shared_priorities_the_list_is_the_order() {
        let c = catalog(
            r#"{ provider = "c", model = "deepseek-v4-flash" }, { provider = "a", model = "deepseek-v4-flash" }, { provider = "b", model = "deepseek-v4-flash", priority = 0 }"#,
        );
        let m = c.get("m").unwrap();
        let order = plan(
            m.deployments.iter().collect(),
            &request("hi", ""),
            &RoutingConfig::default(),
        );
        // b shares priority 0 with c: the pair comes first, then a (position 1).
        assert_eq!(order.len(), 3);
        assert_eq!(order[2].provider.name, "a");
    }

    #[test]
    fn one_conversation_sticks_to_one_deployment() {
        let c = catalog(
            r#"{ provider = "a", model = "deepseek-v4-flash", priority = 0 }, { provider = "b", model = "deepseek-v4-flash", priority = 0 }, { provider = "c", model = "deepseek-v4-flash", priority = 0 }"#,
        );
        let m = c.get("m").unwrap();
        let config = RoutingConfig::default();
        let mut firsts = std::collections::HashSet::new();
        for conversation in 0..60 {
            let opener = format!("conversation {conversation}");
            let first = names(&plan(
                m.deployments.iter().collect(),
                &request(&opener, ""),
                &config,
            ))[0]
                .clone();
            for turn in 1..4 {
                let later = format!(
                    r#",{{"role":"assistant","content":"ok"}},{{"role":"user","content":"turn {turn}"}}"#
                );
                assert_eq!(
                    names(&plan(
                        m.deployments.iter().collect(),
                        &request(&opener, &later),
                        &config
                    ))[0],
                    first
                );
            }
            firsts.insert(first);
        }
        assert_eq!(firsts.len(), 3, "conversations spread over the group");
    }

    #[test]
    fn without_affinity_a_conversation_moves() {
        let c = catalog(
            r#"{ provider = "a", model = "deepseek-v4-flash", priority = 0 }, { provider = "b", model = "deepseek-v4-flash", priority = 0 }"#,
        );
        let m = c.get("m").unwrap();
        let config = RoutingConfig {
            affinity: false,
            ..RoutingConfig::default()
        };
        let firsts: std::collections::HashSet<String> = (0..64)
            .map(|_| {
                names(&plan(
                    m.deployments.iter().collect(),
                    &request("same", ""),
                    &config,
                ))[0]
                    .clone()
            })
            .collect();
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn slow_deployments_go_last_in_their_group() {
        let c = catalog(
            r#"{ provider = "a", model = "deepseek-v4-flash", priority = 0 }, { provider = "b", model = "deepseek-v4-flash", priority = 0 }, { provider = "c", model = "deepseek-v4-flash" }"#,
        );
        let m = c.get("m").unwrap();
        let config = RoutingConfig::default();
        let a = &m.deployments[0];
        let b = &m.deployments[1];
        a.health
            .observe(Observation::Answered(Duration::from_secs(3)));
        b.health
            .observe(Observation::Answered(Duration::from_millis(100)));
        for i in 0..32 {
            let order = names(&plan(
                m.deployments.iter().collect(),
                &request(&format!("c{i}"), ""),
                &config,
            ));
            assert_eq!(order, ["b", "a", "c"]);
        }
    }
}
