//! The one normalised usage record every provider adapter produces, and its rendering back into
//! DeepSeek's wire form. Pricing, limits, metrics and the ledger all read this record.

use serde_json::{Map, Value, json};

use crate::wire::raw_object::{BorrowedObject, Edit, ObjectWriter, Raw};

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

/// A count as JSON text: an unsigned integer, as `Value::as_u64` reads one.
fn count_text(v: Raw<'_>) -> Option<u64> {
    v.get().parse().ok()
}

/// One field DeepSeek clients read: a count at the top level, or inside a details object.
#[derive(Debug, Clone, Copy)]
enum WireField {
    Top(&'static str, u64),
    Detail(&'static str, &'static str, u64),
}

impl WireField {
    fn key(self) -> &'static str {
        match self {
            Self::Top(key, _) | Self::Detail(key, _, _) => key,
        }
    }

    /// The field's value written into `out`; a details object the provider sent keeps its
    /// other fields.
    fn write_value(self, sent: Option<Raw<'_>>, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            Self::Top(_, n) => {
                let _ = write!(out, "{n}");
            }
            Self::Detail(_, key, n) => match sent.and_then(|v| BorrowedObject::parse(v.get())) {
                Some(details) => details.render_into(&[Edit::Set(key, n.to_string().into())], out),
                None => {
                    let _ = write!(out, "{{\"{key}\":{n}}}");
                }
            },
        }
    }
}

impl Usage {
    pub fn prompt(&self) -> u64 {
        self.cache_hit + self.cache_miss
    }

    /// Reads a `usage` object from any provider. DeepSeek's own fields come first; the OpenAI
    /// `prompt_tokens_details.cached_tokens` is the fallback; nothing is counted twice.
    pub fn from_wire(usage: &Value) -> Option<Self> {
        Self::from_counts(|path| count(usage, path))
    }

    /// [`Usage::from_wire`] over the object's fields as sent, without building a `Value`.
    pub fn from_object(usage: &BorrowedObject) -> Option<Self> {
        Self::from_counts(|path| match path {
            [key] => count_text(usage.get(key)?),
            [outer, inner] => {
                let details = BorrowedObject::parse(usage.get(outer)?.get())?;
                count_text(details.get(inner)?)
            }
            _ => None,
        })
    }

    fn from_counts(count: impl Fn(&[&str]) -> Option<u64>) -> Option<Self> {
        let prompt = count(&["prompt_tokens"]);
        let deepseek_hit = count(&["prompt_cache_hit_tokens"]);
        let deepseek_miss = count(&["prompt_cache_miss_tokens"]);
        let (cache_hit, cache_miss) = match (deepseek_hit, deepseek_miss, prompt) {
            (Some(hit), Some(miss), _) => (hit, miss),
            (Some(hit), None, Some(p)) => (hit, p.saturating_sub(hit)),
            (None, Some(miss), Some(p)) => (p.saturating_sub(miss), miss),
            (_, _, Some(p)) => {
                let cached = count(&["prompt_tokens_details", "cached_tokens"]);
                let hit = cached.unwrap_or(0).min(p);
                (hit, p - hit)
            }
            (_, _, None) => return None,
        };
        let output = count(&["completion_tokens"]).unwrap_or(0);
        let reasoning = count(&["completion_tokens_details", "reasoning_tokens"])
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

    /// Every field DeepSeek clients read, in the order they are added when absent.
    fn wire_fields(&self) -> [WireField; 7] {
        let prompt = self.prompt();
        [
            WireField::Top("prompt_tokens", prompt),
            WireField::Top("completion_tokens", self.output),
            WireField::Top("total_tokens", prompt + self.output),
            WireField::Detail("prompt_tokens_details", "cached_tokens", self.cache_hit),
            WireField::Detail(
                "completion_tokens_details",
                "reasoning_tokens",
                self.reasoning,
            ),
            WireField::Top("prompt_cache_hit_tokens", self.cache_hit),
            WireField::Top("prompt_cache_miss_tokens", self.cache_miss),
        ]
    }

    /// [`Usage::wire_over`] the object `sent`, parsed from `text`: the text itself when it
    /// holds every field already, with these counts (DeepSeek's own usage always does), so
    /// nothing is written anew.
    pub fn wire_for(&self, sent: &BorrowedObject, text: &str) -> String {
        let complete = self.wire_fields().into_iter().all(|field| match field {
            WireField::Top(key, n) => sent.get(key).and_then(count_text) == Some(n),
            WireField::Detail(object, key, n) => {
                sent.get(object)
                    .and_then(|v| BorrowedObject::parse(v.get()))
                    .and_then(|details| details.get(key).and_then(count_text))
                    == Some(n)
            }
        });
        if complete {
            text.to_owned()
        } else {
            self.wire_over(sent)
        }
    }

    /// The provider's `usage` object with every field DeepSeek clients read written in; its
    /// other fields keep their place and bytes (what [`Usage::write_wire`] does to a `Value`).
    pub fn wire_over(&self, sent: &BorrowedObject) -> String {
        let fields = self.wire_fields();
        let mut out = Vec::with_capacity(256);
        let mut object = ObjectWriter::new(&mut out);
        for (name, value) in sent.fields() {
            match fields.iter().find(|f| f.key() == name) {
                Some(field) => field.write_value(Some(value), object.key(name)),
                None => object.field(name, value.get()),
            }
        }
        for field in fields {
            if sent.get(field.key()).is_none() {
                field.write_value(None, object.key(field.key()));
            }
        }
        object.finish();
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// Writes every field DeepSeek clients read into `usage`, keeping any others the provider sent.
    pub fn write_wire(&self, usage: &mut Map<String, Value>) {
        for field in self.wire_fields() {
            match field {
                WireField::Top(key, n) => {
                    usage.insert(key.into(), json!(n));
                }
                WireField::Detail(object, key, n) => merge_detail(usage, object, key, n),
            }
        }
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

    /// The usage text the fast path writes, against the `Value` path's, byte for byte once both
    /// are re-serialised (the same fields, values and order).
    #[test]
    fn usage_written_over_the_sent_fields_matches_the_value_path() {
        let cases = [
            r#"{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":64},"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36,"completion_tokens_details":{"reasoning_tokens":30}}"#,
            r#"{"completion_tokens":10,"prompt_tokens":100,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0}}"#,
            r#"{"prompt_tokens": 7, "cost": 0.00012, "is_byok": false, "completion_tokens_details": null}"#,
            r#"{"prompt_tokens":5,"prompt_tokens_details":[1],"extra":{"nested":[1,2,{"a":"\u00e9"}]}}"#,
            r#"{"prompt_cache_hit_tokens":3,"prompt_cache_miss_tokens":4,"completion_tokens":2}"#,
            // Every field, one count that does not add up: written anew.
            r#"{"prompt_tokens":100,"completion_tokens":50,"total_tokens":149,"prompt_tokens_details":{"cached_tokens":64},"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36,"completion_tokens_details":{"reasoning_tokens":30}}"#,
        ];
        for text in cases {
            let sent = BorrowedObject::parse(text).unwrap();
            let fast = Usage::from_object(&sent).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            let slow = Usage::from_wire(&value).unwrap();
            assert_eq!(fast, slow, "{text}");
            let Value::Object(mut map) = value else {
                unreachable!()
            };
            slow.write_wire(&mut map);
            let wire = fast.wire_for(&sent, text);
            // Complete as sent (DeepSeek's own form), the text is kept byte for byte.
            assert_eq!(wire == text, text == cases[0], "{text}");
            let written: Value = serde_json::from_str(&wire).unwrap();
            assert_eq!(
                written.to_string(),
                Value::Object(map).to_string(),
                "{text}"
            );
        }
        // Counts that are not unsigned integers are absent, as `as_u64` reads them.
        for text in [
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":1.5}"#,
            r#"{"prompt_tokens":"9"}"#,
        ] {
            let sent = BorrowedObject::parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(Usage::from_object(&sent), None, "{text}");
            assert_eq!(Usage::from_wire(&value), None, "{text}");
        }
    }

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
