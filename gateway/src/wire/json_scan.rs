//! A strict JSON scanner that finds where values end without building anything: the fast path
//! of [`super::raw_object`], which reads the top level of every request, answer and stream
//! chunk. It accepts only what serde_json accepts (RFC 8259: no trailing commas, no comments,
//! no control characters in strings, numbers in JSON's grammar); where it cannot tell, or the
//! text is wrong, it answers `None` and the caller asks serde_json, whose error the client
//! sees. serde_json, skipping a value it does not keep, cost ~4 K instructions a stream chunk.

/// Containers nested deeper than this are left to serde_json.
const MAX_DEPTH: u32 = 128;

/// Where the whitespace at `i` ends.
pub fn whitespace_end(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Eight bytes, each marked (its high bit set) when it ends a plain run of string text: a
/// quote, a backslash or a control character. Bytes of 0x80 and above are never marked, so
/// UTF-8 text passes eight bytes at a time.
fn stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = zero_in(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash
}

/// Whether `b` ends a plain run of string text.
fn is_stop(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Where the plain run of string text at `i` ends: the first quote, backslash or control
/// character from `i`, or the end of `b`.
pub fn plain_end(b: &[u8], mut i: usize) -> usize {
    // A false mark from the borrow past a marked byte can only follow a true one, and the
    // first mark is what is read.
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let marks = stops(word);
        if marks != 0 {
            return i + (marks.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b.get(i).is_some_and(|&c| !is_stop(c)) {
        i += 1;
    }
    i
}

/// The end (past the closing quote) of the string whose text starts at `i` (just past its
/// opening quote), and whether it has escapes.
pub fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = plain_end(b, i);
        match *b.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i += match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                    _ => return None,
                };
            }
            _ => return None,
        }
    }
}

/// The end of the number at `i`: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// The end of the object key at `i` (its opening quote) and the `:` after it, with the
/// whitespace around: where the member's value starts.
fn member_value_start(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (end, _) = string_end(b, i + 1)?;
    let colon = whitespace_end(b, end);
    (b.get(colon) == Some(&b':')).then(|| whitespace_end(b, colon + 1))
}

/// The end of the JSON value that starts at `i` (no whitespace before it), when it is one.
pub fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    // One bit a level, set for an object: what a `,` and a closing bracket must match.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    loop {
        // A value starts at `i`.
        match *b.get(i)? {
            b'"' => i = string_end(b, i + 1)?.0,
            open @ (b'{' | b'[') => {
                let inner = whitespace_end(b, i + 1);
                let close = if open == b'{' { b'}' } else { b']' };
                if b.get(inner) == Some(&close) {
                    i = inner + 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    objects = (objects << 1) | u128::from(open == b'{');
                    depth += 1;
                    i = if open == b'{' {
                        member_value_start(b, inner)?
                    } else {
                        inner
                    };
                    continue;
                }
            }
            b't' if b[i..].starts_with(b"true") => i += 4,
            b'f' if b[i..].starts_with(b"false") => i += 5,
            b'n' if b[i..].starts_with(b"null") => i += 4,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            _ => return None,
        }
        // A value ended at `i`: close what it ends, up to the next value.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = whitespace_end(b, i);
            let in_object = objects & 1 == 1;
            match (*b.get(i)?, in_object) {
                (b',', true) => {
                    i = member_value_start(b, whitespace_end(b, i + 1))?;
                    break;
                }
                (b',', false) => {
                    i = whitespace_end(b, i + 1);
                    break;
                }
                (b'}', true) | (b']', false) => {
                    i += 1;
                    objects >>= 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether the whole text is one value (with whitespace around), by the scanner.
    fn scanned(text: &str) -> bool {
        let b = text.as_bytes();
        let start = whitespace_end(b, 0);
        value_end(b, start).is_some_and(|end| whitespace_end(b, end) == b.len())
    }

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn accepts_json_and_refuses_what_serde_json_refuses() {
        for ok in [
            "0",
            "-0.5e+10",
            "1E3",
            "\"a\\u00e9\\n\\\"\"",
            "\"\u{7f}é\u{1F600}\"",
            "[]",
            "{}",
            " [ 1 , { \"a\" : [ true , false , null ] } ] ",
            "{\"a\\\"b\":{\"c\":[[[]]]}}",
            // Lone surrogates: serde_json does not check a skipped string's code points.
            "\"\\ud800\"",
        ] {
            assert!(scanned(ok) && serde_accepts(ok), "{ok}");
        }
        for bad in [
            "",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{a:1}",
            "[1 2]",
            "tru",
            "nul",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}\"",
            "\"open",
            "[}",
            "{]",
            "{\"a\":1]",
            "[1}",
            "{,}",
            "[,1]",
            "1 2",
            "NaN",
            "'a'",
            "[\"a\"\"b\"]",
        ] {
            assert!(!scanned(bad), "scanned {bad:?}");
            assert!(!serde_accepts(bad), "serde_json took {bad:?}");
        }
    }

    #[test]
    fn marks_find_the_first_stop_in_a_word() {
        for at in 0..8 {
            for stop in [b'"', b'\\', 0x00, 0x1f] {
                let mut word = *b"abc\xc3\xa9xyz";
                word[at] = stop;
                let marks = stops(u64::from_le_bytes(word));
                assert_eq!(marks.trailing_zeros() / 8, at as u32, "{stop} at {at}");
            }
        }
        assert_eq!(stops(u64::from_le_bytes(*b" ~\x7f\x80\xff!#[")), 0);
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(!scanned(&deep));
        let fits = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(scanned(&fits));
    }

    /// One byte's edit: where (a fraction of the text's length), and what.
    #[derive(Debug, Clone)]
    enum Mutation {
        Insert(f64, u8),
        Replace(f64, u8),
        Delete(f64),
    }

    /// The bytes an edit puts in: JSON's punctuation, the starts of its values, what a number
    /// or an escape may hold, control characters, and one byte of a UTF-8 sequence.
    fn edit_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(
            b"{}[],:\" \\/0123456789-+.eEtfnrulsabu\x00\x01\x1f\t\n\x7f\xc3".to_vec(),
        )
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (0.0..1.0, edit_byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
            (0.0..1.0, edit_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
            (0.0..1.0).prop_map(Mutation::Delete),
        ]
    }

    /// `text` with the edits made, where the result is still UTF-8 (the scanner reads `str`).
    fn mutated(text: &str, edits: &[Mutation]) -> Option<String> {
        let mut bytes = text.as_bytes().to_vec();
        for edit in edits {
            let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
            match *edit {
                Mutation::Insert(f, b) => bytes.insert(at(f, bytes.len()), b),
                Mutation::Replace(f, b) if !bytes.is_empty() => {
                    let i = at(f, bytes.len() - 1);
                    bytes[i] = b;
                }
                Mutation::Delete(f) if !bytes.is_empty() => {
                    bytes.remove(at(f, bytes.len() - 1));
                }
                _ => {}
            }
        }
        String::from_utf8(bytes).ok()
    }

    /// Arbitrary JSON values, written by serde_json, compact or pretty.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// JSON with a byte or two changed: mostly broken, sometimes still JSON, and the
        /// scanner must say which as serde_json does.
        #[test]
        fn scanning_agrees_with_serde_json(
            value in json_value(),
            pretty in any::<bool>(),
            edits in prop::collection::vec(mutation(), 1..3),
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            if let Some(text) = mutated(&text, &edits) {
                prop_assert_eq!(scanned(&text), serde_accepts(&text), "{:?}", text);
            }
        }

        #[test]
        fn every_value_serde_json_writes_is_scanned(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            prop_assert!(scanned(&text), "{}", text);
        }
    }
}
