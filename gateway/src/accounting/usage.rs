//! The one normalised usage record every provider adapter produces, and its rendering back into
//! DeepSeek's wire form. Pricing, limits, metrics and the ledger all read this record.

use serde_json::{Map, Value, json};

/// Tokens of one request as DeepSeek bills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens served from the provider's context cache.
    pub cache_hit: u64,
    /// Prompt tokens computed afresh.
    pub cache_miss: u64,
    /// All completion tokens, reasoning included (billed at the output price).
    pub output: u64,
    /// The part of `output` spent on reasoning.
    pub reasoning: u64,
    /// True when the provider never reported usage and the gateway counted it itself.
    pub estimated: bool,
}

fn count(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

impl Usage {
    pub fn prompt(&self) -> u64 {
        self.cache_hit + self.cache_miss
    }

    /// Reads a `usage` object from any provider. DeepSeek's own fields come first; the OpenAI
    /// `prompt_tokens_details.cached_tokens` is the fallback; nothing is counted twice.
    pub fn from_wire(usage: &Value) -> Option<Self> {
        let prompt = count(usage, &["prompt_tokens"]);
        let deepseek_hit = count(usage, &["prompt_cache_hit_tokens"]);
        let deepseek_miss = count(usage, &["prompt_cache_miss_tokens"]);
        let cached = count(usage, &["prompt_tokens_details", "cached_tokens"]);
        let (cache_hit, cache_miss) = match (deepseek_hit, deepseek_miss, prompt) {
            (Some(hit), Some(miss), _) => (hit, miss),
            (Some(hit), None, Some(p)) => (hit, p.saturating_sub(hit)),
            (None, Some(miss), Some(p)) => (p.saturating_sub(miss), miss),
            (_, _, Some(p)) => {
                let hit = cached.unwrap_or(0).min(p);
                (hit, p - hit)
            }
            (_, _, None) => return None,
        };
        let output = count(usage, &["completion_tokens"]).unwrap_or(0);
        let reasoning = count(usage, &["completion_tokens_details", "reasoning_tokens"])
            .unwrap_or(0)
            .min(output);
        Some(Self {
            cache_hit,
            cache_miss,
            output,
            reasoning,
            estimated: false,
        })
    }

    /// Writes every field DeepSeek clients read into `usage`, keeping any others the provider sent.
    pub fn write_wire(&self, usage: &mut Map<String, Value>) {
        let prompt = self.prompt();
        usage.insert("prompt_tokens".into(), json!(prompt));
        usage.insert("completion_tokens".into(), json!(self.output));
        usage.insert("total_tokens".into(), json!(prompt + self.output));
        merge_detail(
            usage,
            "prompt_tokens_details",
            "cached_tokens",
            self.cache_hit,
        );
        merge_detail(
            usage,
            "completion_tokens_details",
            "reasoning_tokens",
            self.reasoning,
        );
        usage.insert("prompt_cache_hit_tokens".into(), json!(self.cache_hit));
        usage.insert("prompt_cache_miss_tokens".into(), json!(self.cache_miss));
    }

    pub fn to_wire(&self) -> Value {
        let mut map = Map::new();
        self.write_wire(&mut map);
        Value::Object(map)
    }
}

fn merge_detail(usage: &mut Map<String, Value>, object: &str, key: &str, n: u64) {
    let entry = usage
        .entry(object)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(details) = entry {
        details.insert(key.into(), json!(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepseek_fields_win_over_cached_tokens() {
        let u = Usage::from_wire(&json!({
            "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 30},
            "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36
        }))
        .unwrap();
        assert_eq!(
            u,
            Usage {
                cache_hit: 64,
                cache_miss: 36,
                output: 50,
                reasoning: 30,
                estimated: false
            }
        );
    }

    #[test]
    fn openai_cached_tokens_become_hits() {
        let u = Usage::from_wire(&json!({
            "prompt_tokens": 200, "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 128}
        }))
        .unwrap();
        assert_eq!(
            (u.cache_hit, u.cache_miss, u.output, u.reasoning),
            (128, 72, 10, 0)
        );
    }

    #[test]
    fn no_cache_information_means_all_miss() {
        let u = Usage::from_wire(&json!({"prompt_tokens": 7, "completion_tokens": 3})).unwrap();
        assert_eq!((u.cache_hit, u.cache_miss), (0, 7));
        assert!(Usage::from_wire(&json!({})).is_none());
    }

    #[test]
    fn wire_form_carries_both_cache_forms_and_keeps_extras() {
        let u = Usage {
            cache_hit: 64,
            cache_miss: 6,
            output: 9,
            reasoning: 4,
            estimated: false,
        };
        let mut map = json!({"cost": 0.001}).as_object().unwrap().clone();
        u.write_wire(&mut map);
        let v = Value::Object(map);
        assert_eq!(v["prompt_tokens"], 70);
        assert_eq!(v["total_tokens"], 79);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 64);
        assert_eq!(v["prompt_cache_hit_tokens"], 64);
        assert_eq!(v["prompt_cache_miss_tokens"], 6);
        assert_eq!(v["completion_tokens_details"]["reasoning_tokens"], 4);
        assert_eq!(v["cost"], 0.001);
        assert_eq!(Usage::from_wire(&v), Some(u));
    }
}
