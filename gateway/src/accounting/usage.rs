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

/// Each count a `usage` object may carry, in the order DeepSeek's wire form adds those absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Prompt,
    Completion,
    Total,
    Cached,
    Reasoning,
    CacheHit,
    CacheMiss,
}

impl Count {
    const ALL: [Self; 7] = [
        Self::Prompt,
        Self::Completion,
        Self::Total,
        Self::Cached,
        Self::Reasoning,
        Self::CacheHit,
        Self::CacheMiss,
    ];

    /// Where the count lies: a top-level field, or a field of a details object.
    fn path(self) -> &'static [&'static str] {
        match self {
            Self::Prompt => &["prompt_tokens"],
            Self::Completion => &["completion_tokens"],
            Self::Total => &["total_tokens"],
            Self::Cached => &["prompt_tokens_details", "cached_tokens"],
            Self::Reasoning => &["completion_tokens_details", "reasoning_tokens"],
            Self::CacheHit => &["prompt_cache_hit_tokens"],
            Self::CacheMiss => &["prompt_cache_miss_tokens"],
        }
    }

    /// The top-level field that holds the count.
    fn key(self) -> &'static str {
        self.path()[0]
    }

    /// The count a top-level field holds: [`Count::key`] read backwards (a `match`, which
    /// compiles to length checks before any byte is compared).
    fn at(key: &str) -> Option<Self> {
        Some(match key {
            "prompt_tokens" => Self::Prompt,
            "completion_tokens" => Self::Completion,
            "total_tokens" => Self::Total,
            "prompt_tokens_details" => Self::Cached,
            "completion_tokens_details" => Self::Reasoning,
            "prompt_cache_hit_tokens" => Self::CacheHit,
            "prompt_cache_miss_tokens" => Self::CacheMiss,
            _ => return None,
        })
    }

    /// The count's value written into `out`; a details object the provider sent keeps its
    /// other fields.
    fn write_value(self, n: u64, sent: Option<Raw<'_>>, out: &mut Vec<u8>) {
        use std::io::Write;
        match self.path() {
            [_, key] => match sent.and_then(|v| BorrowedObject::parse(v.get())) {
                Some(details) => details.render_into(&[Edit::Set(key, n.to_string().into())], out),
                None => {
                    let _ = write!(out, "{{\"{key}\":{n}}}");
                }
            },
            _ => {
                let _ = write!(out, "{n}");
            }
        }
    }
}

/// A provider's `usage` object as sent, with every count the record and the wire form read
/// found in one pass over its fields (each details object parsed once), and its `cost`.
#[derive(Debug)]
pub struct SentUsage<'a> {
    text: &'a str,
    object: BorrowedObject<'a>,
    counts: [Option<u64>; 7],
    /// Only OpenRouter reports a cost (`usage.cost`).
    pub cost: Option<Raw<'a>>,
}

impl<'a> SentUsage<'a> {
    /// `text` read, when it is an object [`BorrowedObject`] can borrow.
    pub fn parse(text: &'a str) -> Option<Self> {
        let object = BorrowedObject::parse(text)?;
        let mut counts = [None; 7];
        let mut cost = None;
        for (name, value) in object.fields() {
            if name == "cost" {
                cost = Some(value);
            } else if let Some(count) = Count::at(name) {
                counts[count as usize] = match count.path() {
                    [_, inner] => BorrowedObject::parse(value.get())
                        .and_then(|details| details.get(inner))
                        .and_then(count_text),
                    _ => count_text(value),
                };
            }
        }
        Some(Self {
            text,
            object,
            counts,
            cost,
        })
    }

    fn count(&self, count: Count) -> Option<u64> {
        self.counts[count as usize]
    }
}

impl Usage {
    pub fn prompt(&self) -> u64 {
        self.cache_hit + self.cache_miss
    }

    /// Reads a `usage` object from any provider. DeepSeek's own fields come first; the OpenAI
    /// `prompt_tokens_details.cached_tokens` is the fallback; nothing is counted twice.
    pub fn from_wire(usage: &Value) -> Option<Self> {
        Self::from_counts(|c| count(usage, c.path()))
    }

    /// [`Usage::from_wire`] over the object's fields as sent, without building a `Value`.
    pub fn from_sent(usage: &SentUsage) -> Option<Self> {
        Self::from_counts(|c| usage.count(c))
    }

    fn from_counts(count: impl Fn(Count) -> Option<u64>) -> Option<Self> {
        let prompt = count(Count::Prompt);
        let deepseek_hit = count(Count::CacheHit);
        let deepseek_miss = count(Count::CacheMiss);
        let (cache_hit, cache_miss) = match (deepseek_hit, deepseek_miss, prompt) {
            (Some(hit), Some(miss), _) => (hit, miss),
            (Some(hit), None, Some(p)) => (hit, p.saturating_sub(hit)),
            (None, Some(miss), Some(p)) => (p.saturating_sub(miss), miss),
            (_, _, Some(p)) => {
                let hit = count(Count::Cached).unwrap_or(0).min(p);
                (hit, p - hit)
            }
            (_, _, None) => return None,
        };
        let output = count(Count::Completion).unwrap_or(0);
        let reasoning = count(Count::Reasoning).unwrap_or(0).min(output);
        Some(Self {
            cache_hit,
            cache_miss,
            output,
            reasoning,
            estimated: false,
        })
    }

    /// Every count DeepSeek clients read, with its value here, in [`Count::ALL`]'s order (a
    /// count's own, `count as usize`).
    fn wire_fields(&self) -> [(Count, u64); 7] {
        let prompt = self.prompt();
        Count::ALL.map(|count| {
            let n = match count {
                Count::Prompt => prompt,
                Count::Completion => self.output,
                Count::Total => prompt + self.output,
                Count::Cached | Count::CacheHit => self.cache_hit,
                Count::Reasoning => self.reasoning,
                Count::CacheMiss => self.cache_miss,
            };
            (count, n)
        })
    }

    /// [`Usage::wire_over`] the object `sent`: its text itself when it holds every field
    /// already, with these counts (DeepSeek's own usage always does), so nothing is written
    /// anew.
    pub fn wire_for(&self, sent: &SentUsage) -> String {
        let complete = self
            .wire_fields()
            .into_iter()
            .all(|(count, n)| sent.count(count) == Some(n));
        if complete {
            sent.text.to_owned()
        } else {
            self.wire_over(&sent.object)
        }
    }

    /// The provider's `usage` object with every field DeepSeek clients read written in; its
    /// other fields keep their place and bytes (what [`Usage::write_wire`] does to a `Value`).
    pub fn wire_over(&self, sent: &BorrowedObject) -> String {
        let fields = self.wire_fields();
        let mut out = Vec::with_capacity(256);
        let mut object = ObjectWriter::new(&mut out);
        for (name, value) in sent.fields() {
            match Count::at(name).map(|count| fields[count as usize]) {
                Some((count, n)) => count.write_value(n, Some(value), object.key(name)),
                None => object.field(name, value.get()),
            }
        }
        for (count, n) in fields {
            if sent.get(count.key()).is_none() {
                count.write_value(n, None, object.key(count.key()));
            }
        }
        object.finish();
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// Writes every field DeepSeek clients read into `usage`, keeping any others the provider sent.
    pub fn write_wire(&self, usage: &mut Map<String, Value>) {
        for (count, n) in self.wire_fields() {
            match count.path() {
                [object, key] => merge_detail(usage, object, key, n),
                _ => {
                    usage.insert(count.key().into(), json!(n));
                }
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
            let sent = SentUsage::parse(text).unwrap();
            let fast = Usage::from_sent(&sent).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            let slow = Usage::from_wire(&value).unwrap();
            assert_eq!(fast, slow, "{text}");
            let Value::Object(mut map) = value else {
                unreachable!()
            };
            slow.write_wire(&mut map);
            let wire = fast.wire_for(&sent);
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
            let sent = SentUsage::parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(Usage::from_sent(&sent), None, "{text}");
            assert_eq!(Usage::from_wire(&value), None, "{text}");
        }
    }

    /// Each count is read from where [`Count::path`] says it lies, and from nowhere else.
    #[test]
    fn every_count_is_read_from_its_own_field() {
        for count in Count::ALL {
            assert_eq!(Count::at(count.key()), Some(count));
            assert_eq!(Count::ALL[count as usize], count);
            let text = match count.path() {
                [key] => format!(r#"{{"{key}":7,"other":8}}"#),
                [outer, inner] => format!(r#"{{"{outer}":{{"{inner}":7,"other":8}}}}"#),
                _ => unreachable!(),
            };
            let sent = SentUsage::parse(&text).unwrap();
            for other in Count::ALL {
                let want = (other == count).then_some(7);
                assert_eq!(sent.count(other), want, "{other:?} in {text}");
            }
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
