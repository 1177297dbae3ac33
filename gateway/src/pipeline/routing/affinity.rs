//! Prefix-cache affinity: requests of one conversation carry the same anchor (tools, system
//! prompt and first user message), and weighted rendezvous hashing on that anchor picks the same
//! deployment for all of them, on every replica, while that deployment is in the candidate set.
//! Conversations spread over a group in proportion to the weights, and removing a deployment
//! moves only the conversations that were on it.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::support::hashing::{mix, stable_hash};
use crate::wire::raw_object::RawObject;

/// The request's conversation fingerprint, when its anchor is long enough to be worth caching.
pub fn fingerprint(raw: &RawObject, min_bytes: usize) -> Option<u64> {
    let messages = raw.get("messages")?.get();
    let anchor = anchor(messages)?;
    let tools = raw.get("tools").map_or("", |t| t.get());
    if anchor.len() + tools.len() < min_bytes {
        return None;
    }
    Some(mix(
        stable_hash(tools.as_bytes()) ^ stable_hash(anchor.as_bytes())
    ))
}

/// The messages' JSON text up to the end of the first user message (all of it if there is none):
/// the part every later turn of the conversation repeats byte for byte.
fn anchor(messages: &str) -> Option<&str> {
    #[derive(Deserialize)]
    struct Role<'a> {
        #[serde(borrow)]
        role: &'a str,
    }
    let elements: Vec<&RawValue> = serde_json::from_str(messages).ok()?;
    let end = elements
        .iter()
        .find(|m| serde_json::from_str::<Role>(m.get()).is_ok_and(|r| r.role == "user"))
        .or(elements.last())
        .map(|m| {
            // Each element borrows from `messages`: its end is an offset into it.
            let text = m.get();
            text.as_ptr() as usize - messages.as_ptr() as usize + text.len()
        })?;
    messages.get(..end)
}

/// Weighted rendezvous score of a deployment for a key: the highest score wins, and each
/// deployment wins a share of keys proportional to its weight.
pub fn score(key: u64, deployment: u64, weight: u32) -> f64 {
    let x = mix(key ^ deployment);
    // A uniform draw in (0, 1), never 0 or 1.
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawObject {
        RawObject::parse(text).unwrap()
    }

    #[test]
    fn later_turns_share_the_first_turns_fingerprint() {
        let system = "s".repeat(300);
        let turn1 = raw(&format!(
            r#"{{"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"hi"}}]}}"#
        ));
        let turn2 = raw(&format!(
            r#"{{"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"hi"}},{{"role":"assistant","content":"hello"}},{{"role":"user","content":"more"}}]}}"#
        ));
        let other = raw(&format!(
            r#"{{"messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"bye"}}]}}"#
        ));
        let f = |r: &RawObject| fingerprint(r, 256);
        assert!(f(&turn1).is_some());
        assert_eq!(f(&turn1), f(&turn2));
        assert_ne!(f(&turn1), f(&other));
    }

    #[test]
    fn short_anchors_have_no_fingerprint() {
        let r = raw(r#"{"messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(fingerprint(&r, 256), None);
        assert!(fingerprint(&r, 10).is_some());
    }

    #[test]
    fn tools_are_part_of_the_anchor() {
        let a = raw(
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a"}}]}"#,
        );
        let b = raw(
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"b"}}]}"#,
        );
        assert_ne!(fingerprint(&a, 1), fingerprint(&b, 1));
    }

    #[test]
    fn stable_hash_is_fixed_across_builds() {
        // Replicas must agree: these values may never change.
        assert_eq!(stable_hash(b""), stable_hash(b""));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
        assert_ne!(stable_hash(b"abcdefgh"), stable_hash(b"abcdefgh\0"));
        assert_eq!(
            stable_hash(b"deepseek/deepseek-chat"),
            0x5093_e0a5_cc50_c04e
        );
    }

    #[test]
    fn rendezvous_shares_follow_weights() {
        let deployments = [(stable_hash(b"a"), 1), (stable_hash(b"b"), 3)];
        let mut wins = [0u32; 2];
        for key in 0..20_000u64 {
            let k = mix(key);
            let best = if score(k, deployments[0].0, deployments[0].1)
                > score(k, deployments[1].0, deployments[1].1)
            {
                0
            } else {
                1
            };
            wins[best] += 1;
        }
        let share = f64::from(wins[1]) / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "weight 3 of 4 won {share}");
    }
}
