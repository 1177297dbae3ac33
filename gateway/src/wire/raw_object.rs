//! A JSON object kept as its fields' original text, in order.
//!
//! The gateway edits a few top-level fields (`model`, `stream_options`, mode switches) and must leave
//! every other byte alone: re-serialising `messages` or `tools` would change the prompt bytes and
//! break the provider's prefix cache, which costs ten times more per token.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::json_scan::{plain_end, string_end, value_end, whitespace_end};

/// The object's text, and where each field's value lies in it: one allocation for the text and
/// one for the list, where a box per value cost an allocation, a copy and a free per field of
/// every request, answer and stream chunk.
#[derive(Debug)]
pub struct RawObject {
    text: String,
    fields: Vec<(Key, Range<usize>)>,
}

/// A field's value as JSON text, checked when its object was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }
}

/// A field's name: the names the APIs use are borrowed ([`known`]), so a parsed request,
/// answer or stream chunk allocates for a name only when it is not one of them.
type Key = Cow<'static, str>;

/// Every top-level field of the chat, completion and chunk objects the gateway parses on each
/// request and each streamed chunk (any other name is owned), and [`known`] over them: a
/// `match`, which compiles to length checks before any byte is compared (a binary search over
/// the list cost ~280 instructions a name, five names a chunk).
macro_rules! known_keys {
    ($($name:literal,)*) => {
        #[cfg(test)]
        const KNOWN_KEYS: &[&str] = &[$($name),*];

        /// `name` from the known names, when it is one.
        fn known(name: &str) -> Option<&'static str> {
            match name {
                $($name => Some($name),)*
                _ => None,
            }
        }
    };
}

known_keys! {
    "choices",
    "created",
    "echo",
    "error",
    "frequency_penalty",
    "id",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "model",
    "n",
    "object",
    "parallel_tool_calls",
    "presence_penalty",
    "prompt",
    "reasoning_effort",
    "response_format",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "suffix",
    "system_fingerprint",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "usage",
    "user",
}

/// `name` as a [`Key`]: borrowed when it is a known name.
fn key_of(name: &str) -> Key {
    known(name).map_or_else(|| Cow::Owned(name.to_owned()), Cow::Borrowed)
}

/// Deserialises a field name into a [`Key`] without an intermediate `String`.
struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(key_of(name))
    }
    fn visit_string<E: de::Error>(self, name: String) -> Result<Key, E> {
        Ok(known(&name).map_or(Cow::Owned(name), Cow::Borrowed))
    }
}

struct KeySeed;

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
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
    /// `text` as an object (whitespace around it allowed, as serde_json allows it).
    pub fn from_string(text: String) -> Result<Self, serde_json::Error> {
        let fields = fields_of(&text)?;
        Ok(Self { text, fields })
    }

    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        Self::from_string(text.to_owned())
    }

    /// Bytes as an object, copied once they parsed.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            // Checked once here, the text is parsed as a `str`: from bytes, serde_json checks
            // every string and every value's text again (~2 K instructions a request).
            Ok(text) => {
                let fields = fields_of(text)?;
                Ok(Self {
                    text: text.to_owned(),
                    fields,
                })
            }
            // Parsed as bytes, so the error is serde_json's own, with its line and column.
            Err(_) => {
                spans(
                    &mut serde_json::Deserializer::from_slice(bytes),
                    bytes.as_ptr(),
                )?;
                Err(de::Error::custom("invalid UTF-8"))
            }
        }
    }

    /// The object's whole text, as it was parsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn get(&self, key: &str) -> Option<Raw<'_>> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, at)| Raw(&self.text[at.clone()]))
    }

    /// The object's text with the edits applied; untouched fields keep their exact bytes.
    pub fn render(&self, edits: &[Edit]) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(edits, &mut out);
        out
    }

    /// [`RawObject::render`], appended to `out`: the text between the edited fields is copied
    /// as it is, whitespace and all, where writing each field anew cost ~2 K instructions a
    /// stream chunk.
    pub fn render_into(&self, edits: &[Edit], out: &mut Vec<u8>) {
        let text = self.text.as_str();
        // Parsed, the text is an object: `{` after any leading whitespace, `}` last but for any
        // trailing whitespace.
        let open = text.len() - text.trim_start().len();
        let close = text.trim_end().len() - 1;
        let added: usize = edits
            .iter()
            .map(|e| match e {
                Edit::Set(k, v) => k.len() + v.len() + 4,
                Edit::Remove(_) => 0,
            })
            .sum();
        out.reserve(close - open + 1 + added);
        out.push(b'{');
        // `text[..copied]` is in `out` or left out; `kept` says whether a field is in `out`.
        let mut copied = open + 1;
        let mut kept = false;
        let mut previous_end = copied;
        for (key, at) in &self.fields {
            match edit_for(edits, key) {
                None => kept = true,
                Some(Edit::Set(_, new)) => {
                    out.extend_from_slice(&text.as_bytes()[copied..at.start]);
                    out.extend_from_slice(new.as_bytes());
                    copied = at.end;
                    kept = true;
                }
                Some(Edit::Remove(_)) if kept => {
                    // Out with the comma before it: from the end of the field before.
                    out.extend_from_slice(&text.as_bytes()[copied..previous_end]);
                    copied = at.end;
                }
                Some(Edit::Remove(_)) => {
                    // Nothing before it is kept: out with the comma after it, if any.
                    let rest = &text[at.end..];
                    let after = rest.len() - rest.trim_start().len();
                    copied = at.end + after + usize::from(rest[after..].starts_with(','));
                }
            }
            previous_end = at.end;
        }
        out.extend_from_slice(&text.as_bytes()[copied..close]);
        for edit in edits {
            if let Edit::Set(key, new) = edit
                && self.get(key).is_none()
            {
                if kept {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                out.extend_from_slice(new.as_bytes());
                kept = true;
            }
        }
        out.push(b'}');
    }
}

/// The edit that touches `key`, if any (the first, when several do).
fn edit_for<'e, 'a>(edits: &'e [Edit<'a>], key: &str) -> Option<&'e Edit<'a>> {
    edits.iter().find(|e| e.key() == key)
}

/// Finds a repeated field name: by looking back over the few names an API object has, and by
/// the names' hashes once there are many (a body of a million fields, looked back over, would
/// take some 10^11 comparisons).
#[derive(Default)]
struct Repeats {
    /// Made only past [`Repeats::FEW`] names: most objects never need it.
    hashes: Option<(foldhash::fast::RandomState, foldhash::HashSet<u64>)>,
}

impl Repeats {
    /// Names past which the hashes are kept.
    const FEW: usize = 16;

    /// Whether `name` is one of the names in `before` (every name seen so far).
    fn seen<K: AsRef<str>>(&mut self, before: &[(K, Range<usize>)], name: &str) -> bool {
        use std::hash::BuildHasher;
        if before.len() < Self::FEW {
            return before.iter().any(|(k, _)| k.as_ref() == name);
        }
        let (state, hashes) = self.hashes.get_or_insert_with(|| {
            let state = foldhash::fast::RandomState::default();
            let hashes = before
                .iter()
                .map(|(k, _)| state.hash_one(k.as_ref()))
                .collect();
            (state, hashes)
        });
        // A hash already there is a repeat or, rarely, two names that hash alike.
        !hashes.insert(state.hash_one(name)) && before.iter().any(|(k, _)| k.as_ref() == name)
    }
}

/// The fields of the object `text`, each named by `key` and found where its value lies:
/// scanned ([`super::json_scan`]) when every key is written plainly and none repeats, `None`
/// for anything else (not an object, not JSON, an escaped or repeated key).
fn scanned_members<'t, K: AsRef<str>>(
    text: &'t str,
    key: impl Fn(&'t str) -> K,
) -> Option<Vec<(K, Range<usize>)>> {
    let b = text.as_bytes();
    let open = whitespace_end(b, 0);
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let mut fields = Vec::with_capacity(8);
    let mut repeats = Repeats::default();
    let mut i = whitespace_end(b, open + 1);
    if b.get(i) != Some(&b'}') {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, escaped) = string_end(b, i + 1)?;
            let name = &text[i + 1..end - 1];
            if escaped || repeats.seen(&fields, name) {
                return None;
            }
            let colon = whitespace_end(b, end);
            if b.get(colon) != Some(&b':') {
                return None;
            }
            let start = whitespace_end(b, colon + 1);
            let stop = value_end(b, start)?;
            fields.push((key(name), start..stop));
            i = whitespace_end(b, stop);
            match b.get(i)? {
                b',' => i = whitespace_end(b, i + 1),
                b'}' => break,
                _ => return None,
            }
        }
    }
    (whitespace_end(b, i + 1) == b.len()).then_some(fields)
}

/// The object `text`'s fields: scanned, or where the scan leaves it, from serde_json, whose
/// error the caller then sees (and which unescapes a key written with escapes).
fn fields_of(text: &str) -> Result<Vec<(Key, Range<usize>)>, serde_json::Error> {
    match scanned_members(text, key_of) {
        Some(fields) => Ok(fields),
        None => spans(&mut serde_json::Deserializer::from_str(text), text.as_ptr()),
    }
}

/// The fields of the object `de` reads, each value as its span in the text that starts at
/// `base` (serde_json lends a value's text out of its input, so where it lies is known).
fn spans<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    base: *const u8,
) -> Result<Vec<(Key, Range<usize>)>, serde_json::Error> {
    struct ObjectVisitor(*const u8);
    impl<'de> Visitor<'de> for ObjectVisitor {
        type Value = Vec<(Key, Range<usize>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields: Self::Value = Vec::with_capacity(8);
            let mut repeats = Repeats::default();
            while let Some(key) = map.next_key_seed(KeySeed)? {
                if repeats.seen(&fields, &key) {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                let value = map.next_value::<&'de RawValue>()?.get();
                let start = value.as_ptr() as usize - self.0 as usize;
                fields.push((key, start..start + value.len()));
            }
            Ok(fields)
        }
    }
    let fields = de.deserialize_map(ObjectVisitor(base))?;
    de.end()?;
    Ok(fields)
}

/// A JSON object's fields borrowed from its text: read and re-rendered with one allocation
/// (the field list), for the small objects rewritten on every answer (`usage` and its details).
/// A key written with escapes cannot be borrowed: such an object is not parsed as one.
#[derive(Debug)]
pub struct BorrowedObject<'a> {
    fields: Vec<(&'a str, Raw<'a>)>,
}

impl<'a> BorrowedObject<'a> {
    /// `text` as an object, or `None` when it is not one (or has an escaped or repeated key,
    /// or is nested deeper than the scanner follows).
    pub fn parse(text: &'a str) -> Option<Self> {
        let fields = scanned_members(text, |name| name)?
            .into_iter()
            .map(|(name, at)| (name, Raw(&text[at])))
            .collect();
        Some(Self { fields })
    }

    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The fields in their order.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, Raw<'a>)> + '_ {
        self.fields.iter().copied()
    }

    /// The object's text with the edits applied, as [`RawObject::render_into`] does.
    pub fn render_into(&self, edits: &[Edit], out: &mut Vec<u8>) {
        render_fields(self.fields.iter().map(|(k, v)| (*k, v.get())), edits, out);
    }
}

/// Writes a JSON object field by field: the braces, the commas between fields, the keys.
pub struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Starts a field named `key`; its value is to be written into what is returned.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// A field whose value is JSON text already.
    pub fn field(&mut self, key: &str, value: &str) {
        self.key(key).extend_from_slice(value.as_bytes());
    }

    pub fn finish(self) {
        self.out.push(b'}');
    }
}

/// A string as JSON: plain text (every key an API uses, and nearly every name) is copied as it
/// is, and only text that needs escapes goes through serde_json's escaping.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if plain_end(text.as_bytes(), 0) == text.len() {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    }
}

/// Writes an object of `fields` (key, value text) with `edits` applied: a set field keeps its
/// place, a set field that was absent follows the others in the edits' order.
fn render_fields<'f>(
    fields: impl Iterator<Item = (&'f str, &'f str)> + Clone,
    edits: &[Edit],
    out: &mut Vec<u8>,
) {
    let size: usize = fields.clone().map(|(k, v)| k.len() + v.len() + 4).sum();
    out.reserve(size + 64);
    let mut object = ObjectWriter::new(out);
    for (key, value) in fields.clone() {
        match edit_for(edits, key) {
            None => object.field(key, value),
            Some(Edit::Set(_, new)) => object.field(key, new),
            Some(Edit::Remove(_)) => {}
        }
    }
    for edit in edits {
        if let Edit::Set(key, new) = edit
            && !fields.clone().any(|(k, _)| k == *key)
        {
            object.field(key, new);
        }
    }
    object.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn text_is_written_as_serde_json_writes_it(
            text in "[ -~\u{0}-\u{1f}\u{7f}-\u{ff}é😀\"\\\\]{0,40}"
        ) {
            let mut out = Vec::new();
            write_str(&mut out, &text);
            proptest::prop_assert_eq!(&out, &serde_json::to_vec(&text).unwrap());
        }
    }

    /// Object text near JSON: members whose keys and values are valid or broken, spaced and
    /// separated rightly or not.
    fn near_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just(r#""model""#.to_owned()),
            Just(r#""usage""#.to_owned()),
            Just(r#""mod\u0065l""#.to_owned()),
            Just(r#""x\"y""#.to_owned()),
            Just("model".to_owned()),
            "\"[a-z\u{1}é]{0,3}\"",
        ];
        let value = prop_oneof![
            Just("1".to_owned()),
            Just("-0.5E2".to_owned()),
            Just("01".to_owned()),
            Just("null".to_owned()),
            Just("nul".to_owned()),
            Just(r#"[1,{"a":[]}]"#.to_owned()),
            Just("[1,]".to_owned()),
            Just(r#"{"a" :"\n"}"#.to_owned()),
            Just(r#""\q""#.to_owned()),
            "\"[a-z\\\\\"é]{0,6}\"",
        ];
        let space = prop_oneof![Just(""), Just(" "), Just("\n\t")];
        let sep = prop_oneof![Just(","), Just(",,"), Just(""), Just(":")];
        let member = (space.clone(), key, space.clone(), value, space.clone())
            .prop_map(|(a, k, b, v, c)| format!("{a}{k}:{b}{v}{c}"));
        (
            prop::collection::vec((member, sep), 0..5),
            space,
            prop_oneof![Just("{"), Just("["), Just("")],
            prop_oneof![Just("}"), Just("]"), Just("} x"), Just("")],
        )
            .prop_map(|(members, space, open, close)| {
                let mut text = format!("{space}{open}");
                let last = members.len().saturating_sub(1);
                for (i, (member, sep)) in members.iter().enumerate() {
                    text.push_str(member);
                    if i < last {
                        text.push_str(sep);
                    }
                }
                text.push_str(close);
                text
            })
    }

    proptest::proptest! {
        /// What the scan finds is what serde_json finds, and it leaves to serde_json only what
        /// serde_json refuses or must unescape (a key written with escapes).
        #[test]
        fn the_scan_finds_the_fields_serde_json_finds(text in near_object()) {
            let scanned = scanned_members(&text, key_of);
            let theirs = spans(&mut serde_json::Deserializer::from_str(&text), text.as_ptr());
            match (&scanned, &theirs) {
                (Some(ours), Ok(theirs)) => proptest::prop_assert_eq!(ours, theirs),
                (Some(_), Err(e)) => proptest::prop_assert!(false, "scanned {text:?}: {e}"),
                (None, Ok(_)) => proptest::prop_assert!(
                    text.contains(r#""mod\u0065l""#) || text.contains(r#""x\"y""#),
                    "left {text:?} to serde_json"
                ),
                (None, Err(_)) => {}
            }
            proptest::prop_assert_eq!(BorrowedObject::parse(&text).is_some(), scanned.is_some());
        }
    }

    #[test]
    fn keys_that_need_escapes_are_written_escaped() {
        let text = r#"{"a\"b":1,"c\\d":2,"e\nf":3,"plain":4}"#;
        let obj = RawObject::parse(text).unwrap();
        let out = String::from_utf8(obj.render(&[])).unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn a_borrowed_object_renders_as_the_owned_one_and_refuses_what_it_cannot_borrow() {
        let text = r#"{"z": 1,"messages":[{"role":"user","content":"h\u00e9  llo"}] ,"model":"a"}"#;
        let edits = [
            Edit::Set("model", "\"b\"".into()),
            Edit::Set("stream_options", r#"{"include_usage":true}"#.into()),
            Edit::Remove("z"),
        ];
        let owned = RawObject::parse(text).unwrap();
        let borrowed = BorrowedObject::parse(text).unwrap();
        let mut out = Vec::new();
        borrowed.render_into(&edits, &mut out);
        // The same object; the owned one keeps the spaces between fields as well.
        let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(value(&out), value(&owned.render(&edits)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[{"role":"user","content":"h\u00e9  llo"}],"model":"b","stream_options":{"include_usage":true}}"#
        );
        assert_eq!(borrowed.get("model").unwrap().get(), "\"a\"");
        assert_eq!(borrowed.fields().count(), 3);
        assert!(BorrowedObject::parse(r#"{"mod\u0065l":1}"#).is_none());
        assert!(BorrowedObject::parse(r#"{"a":1,"a":2}"#).is_none());
        assert!(BorrowedObject::parse("[1]").is_none());
        assert!(BorrowedObject::parse("null").is_none());
    }

    #[test]
    fn untouched_fields_keep_their_bytes_and_order() {
        let text = r#"{"z": 1,"messages":[{"role":"user","content":"h\u00e9  llo"}] ,"model":"a","x":{"b":2,"a":1}}"#;
        let obj = RawObject::parse(text).unwrap();
        let out = obj.render(&[
            Edit::Set("model", "\"b\"".into()),
            Edit::Set("stream_options", r#"{"include_usage":true}"#.into()),
            Edit::Remove("z"),
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[{"role":"user","content":"h\u00e9  llo"}] ,"model":"b","x":{"b":2,"a":1},"stream_options":{"include_usage":true}}"#
        );
    }

    /// Every way of removing, replacing and adding fields, checked against the object each
    /// should give (and that the text stays JSON).
    #[test]
    fn edits_splice_into_the_text_in_every_position() {
        let texts = [
            r#"{"a":1,"b":2,"c":3}"#,
            " { \"a\" : 1 ,\n \"b\" :2, \"c\":3 } \n",
            r#"{"a":1}"#,
            "{}",
            "{ }",
        ];
        let names = ["a", "b", "c"];
        // Each field: kept, replaced or removed; plus a field added or not.
        for text in texts {
            let obj = RawObject::parse(text).unwrap();
            let original: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).unwrap();
            for choice in 0..3usize.pow(3) * 2 {
                let mut edits = Vec::new();
                let mut want = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    let present = original.get(*name);
                    match (choice / 3usize.pow(i as u32)) % 3 {
                        0 => {
                            if let Some(v) = present {
                                want.insert(name.to_string(), v.clone());
                            }
                        }
                        1 => {
                            edits.push(Edit::Set(name, format!("[{i}]").into()));
                            want.insert(name.to_string(), serde_json::json!([i]));
                        }
                        _ => edits.push(Edit::Remove(name)),
                    }
                }
                if choice >= 27 {
                    edits.push(Edit::Set("added", "true".into()));
                    want.insert("added".into(), serde_json::Value::Bool(true));
                }
                let out = obj.render(&edits);
                let got: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| {
                        panic!("{text:?} {edits:?}: {e}: {}", String::from_utf8_lossy(&out))
                    });
                assert_eq!(got, want, "{text:?} {edits:?}");
            }
        }
    }

    #[test]
    fn known_names_are_borrowed_and_others_owned_even_when_escaped() {
        let text = r#"{"model":"a","mod\u0065l2":1,"x-custom":2,"str\u0065am":true}"#;
        let obj = RawObject::parse(text).unwrap();
        let kinds: Vec<(&str, bool)> = obj
            .fields
            .iter()
            .map(|(k, _)| (k.as_ref(), matches!(k, Cow::Borrowed(_))))
            .collect();
        assert_eq!(
            kinds,
            [
                ("model", true),
                ("model2", false),
                ("x-custom", false),
                ("stream", true)
            ]
        );
        assert_eq!(obj.get("stream").unwrap().get(), "true");
        assert!(KNOWN_KEYS.iter().all(|k| known(k) == Some(*k)));
        assert_eq!(known("models"), None);
        assert_eq!(known("mode"), None);
    }

    #[test]
    fn values_are_found_where_they_lie_in_the_text_however_it_is_spaced() {
        let text = " {\"a\" : [1, {\"b\":\"\\u00e9\"}] ,\n\"c\":\"x\", \"d\":{}}\n";
        for obj in [
            RawObject::parse(text).unwrap(),
            RawObject::from_slice(text.as_bytes()).unwrap(),
        ] {
            assert_eq!(obj.get("a").unwrap().get(), r#"[1, {"b":"\u00e9"}]"#);
            assert_eq!(obj.get("c").unwrap().get(), r#""x""#);
            assert_eq!(obj.get("d").unwrap().get(), "{}");
            assert_eq!(obj.get("b"), None);
            assert_eq!(obj.text(), text);
        }
        assert!(RawObject::parse(r#"{"a":1} x"#).is_err());
        // Bytes that are not UTF-8 fail where serde_json finds them, in its words.
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":1}\xff",
            b"{\"a\":1,\xff}",
        ] {
            let err = RawObject::from_slice(bad).unwrap_err().to_string();
            let theirs = serde_json::from_slice::<serde_json::Value>(bad).unwrap_err();
            assert_eq!(err, theirs.to_string());
            assert!(err.contains("column"), "{err}");
        }
    }

    /// Many fields: a repeat is found however far apart the two are, by the scan and by
    /// serde_json (a key with an escape sends the text there), and distinct ones all kept.
    #[test]
    fn a_repeat_among_thousands_of_fields_is_found_both_ways() {
        let many = |escaped: bool, repeat: bool| {
            let mut text = String::from(if escaped {
                r#"{"\u0061":0"#
            } else {
                r#"{"a":0"#
            });
            for i in 0..5000 {
                text.push_str(&format!(r#","f{i}":{i}"#));
            }
            if repeat {
                text.push_str(r#","f17":1"#);
            }
            text.push('}');
            text
        };
        for escaped in [false, true] {
            let obj = RawObject::parse(&many(escaped, false)).unwrap();
            assert_eq!(obj.get("f4999").unwrap().get(), "4999");
            assert_eq!(obj.get("a").unwrap().get(), "0");
            let err = RawObject::parse(&many(escaped, true)).unwrap_err();
            assert!(err.to_string().contains("duplicate field `f17`"), "{err}");
        }
        assert!(BorrowedObject::parse(&many(false, false)).is_some());
        assert!(BorrowedObject::parse(&many(false, true)).is_none());
    }

    #[test]
    fn rejects_duplicate_fields() {
        let err = RawObject::parse(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate field `a`"));
    }

    #[test]
    fn rejects_non_objects() {
        assert!(RawObject::parse("[1]").is_err());
    }
}
