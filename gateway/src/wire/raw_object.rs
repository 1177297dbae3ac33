//! A JSON object kept as its fields' original text, in order.
//!
//! The gateway edits a few top-level fields (`model`, `stream_options`, mode switches) and must leave
//! every other byte alone: re-serialising `messages` or `tools` would change the prompt bytes and
//! break the provider's prefix cache, which costs ten times more per token.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Debug)]
pub struct RawObject {
    fields: Vec<(String, Box<RawValue>)>,
}

/// One change to a top-level field; a new value is JSON text, borrowed when it can be.
#[derive(Debug, Clone)]
pub enum Edit<'a> {
    /// Replace the value in place, or append the field if absent.
    Set(&'static str, Cow<'a, str>),
    Remove(&'static str),
}

impl Edit<'_> {
    /// The field the edit touches.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Set(k, _) | Self::Remove(k) => k,
        }
    }
}

impl RawObject {
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// The object's text with the edits applied; untouched fields keep their exact bytes.
    pub fn render(&self, edits: &[Edit]) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(edits, &mut out);
        out
    }

    /// [`RawObject::render`], appended to `out`.
    pub fn render_into(&self, edits: &[Edit], out: &mut Vec<u8>) {
        let size: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        out.reserve(size + 64);
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, key: &str, value: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, key).expect("writing to a Vec cannot fail");
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        let edit_for = |key: &str| {
            edits.iter().find(|e| match e {
                Edit::Set(k, _) | Edit::Remove(k) => *k == key,
            })
        };
        for (key, value) in &self.fields {
            match edit_for(key) {
                None => push(out, key, value.get()),
                Some(Edit::Set(_, new)) => push(out, key, new),
                Some(Edit::Remove(_)) => {}
            }
        }
        for edit in edits {
            if let Edit::Set(key, new) = edit
                && self.get(key).is_none()
            {
                push(out, key, new);
            }
        }
        out.push(b'}');
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    let value = map.next_value::<Box<RawValue>>()?;
                    fields.push((key, value));
                }
                Ok(RawObject { fields })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_fields_keep_their_bytes_and_order() {
        let text = r#"{"z": 1,"messages":[{"role":"user","content":"h\u00e9  llo"}] ,"model":"a","x":{"b":2,"a":1}}"#;
        let obj: RawObject = serde_json::from_str(text).unwrap();
        let out = obj.render(&[
            Edit::Set("model", "\"b\"".into()),
            Edit::Set("stream_options", r#"{"include_usage":true}"#.into()),
            Edit::Remove("z"),
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[{"role":"user","content":"h\u00e9  llo"}],"model":"b","x":{"b":2,"a":1},"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn rejects_duplicate_fields() {
        let err = serde_json::from_str::<RawObject>(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate field `a`"));
    }

    #[test]
    fn rejects_non_objects() {
        assert!(serde_json::from_str::<RawObject>("[1]").is_err());
    }
}
