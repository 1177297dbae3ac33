//! JSON mode for the local engine: the output must be one JSON object. A byte-level pushdown
//! automaton says which continuations keep the text a prefix of valid JSON; the sampler only
//! takes tokens it accepts, generation ends as soon as the object closes, and when the token
//! budget runs low only the shortest way to close it is allowed, so an answer is whole unless
//! `max_tokens` is smaller than the shortest closing.

/// Longest run of whitespace allowed between tokens (a model stuck on spaces must move on).
const MAX_WHITESPACE: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Number {
    fn complete(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::ExpDigits)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the root object.
    Start,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `:` or `,` in an array: a value.
    Value,
    /// Inside a string; `key` when it is an object key.
    Str {
        key: bool,
    },
    /// After `\` in a string.
    Escape {
        key: bool,
    },
    /// Inside `\uXXXX`, with the hex digits still to come.
    Unicode {
        key: bool,
        left: u8,
    },
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the closing bracket.
    AfterValue,
    Number(Number),
    /// Inside `true`, `false` or `null`: the bytes still to come.
    Literal(&'static [u8]),
    /// The root object closed.
    Done,
}

/// How far a JSON text has come; cheap to clone for look-ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonState {
    stack: Vec<Frame>,
    mode: Mode,
    whitespace: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        Self {
            stack: Vec::new(),
            mode: Mode::Start,
            whitespace: 0,
        }
    }
}

impl JsonState {
    /// The root object has closed.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Feeds bytes; false (and the state is then meaningless) when they break the grammar.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(b))
    }

    /// Whether `bytes` would keep the text valid, without changing the state.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        !bytes.is_empty() && self.clone().push(bytes)
    }

    fn open(&mut self, frame: Frame) {
        self.stack.push(frame);
        self.mode = match frame {
            Frame::Object => Mode::ObjectFirst,
            Frame::Array => Mode::ArrayFirst,
        };
    }

    fn close(&mut self, frame: Frame) -> bool {
        if self.stack.pop() != Some(frame) {
            return false;
        }
        self.mode = if self.stack.is_empty() {
            Mode::Done
        } else {
            Mode::AfterValue
        };
        true
    }

    /// The start of a value.
    fn value(&mut self, b: u8) -> bool {
        self.mode = match b {
            b'{' => {
                self.open(Frame::Object);
                return true;
            }
            b'[' => {
                self.open(Frame::Array);
                return true;
            }
            b'"' => Mode::Str { key: false },
            b'-' => Mode::Number(Number::Minus),
            b'0' => Mode::Number(Number::Zero),
            b'1'..=b'9' => Mode::Number(Number::Int),
            b't' => Mode::Literal(b"rue"),
            b'f' => Mode::Literal(b"alse"),
            b'n' => Mode::Literal(b"ull"),
            _ => return false,
        };
        true
    }

    fn byte(&mut self, b: u8) -> bool {
        let in_text = matches!(
            self.mode,
            Mode::Str { .. } | Mode::Escape { .. } | Mode::Unicode { .. }
        );
        if !in_text && matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if let Mode::Number(n) = self.mode {
                if !n.complete() {
                    return false;
                }
                self.mode = Mode::AfterValue;
            }
            if matches!(self.mode, Mode::Literal(_)) {
                return false;
            }
            self.whitespace += 1;
            return self.whitespace <= MAX_WHITESPACE && self.mode != Mode::Done;
        }
        self.whitespace = 0;
        match self.mode {
            Mode::Start => {
                if b != b'{' {
                    return false;
                }
                self.open(Frame::Object);
                true
            }
            Mode::ObjectFirst => match b {
                b'"' => {
                    self.mode = Mode::Str { key: true };
                    true
                }
                b'}' => self.close(Frame::Object),
                _ => false,
            },
            Mode::Key => {
                if b != b'"' {
                    return false;
                }
                self.mode = Mode::Str { key: true };
                true
            }
            Mode::ArrayFirst => {
                if b == b']' {
                    self.close(Frame::Array)
                } else {
                    self.value(b)
                }
            }
            Mode::Value => self.value(b),
            Mode::Str { key } => {
                match b {
                    b'"' => self.mode = if key { Mode::Colon } else { Mode::AfterValue },
                    b'\\' => self.mode = Mode::Escape { key },
                    0..=0x1f => return false,
                    _ => {}
                }
                true
            }
            Mode::Escape { key } => {
                self.mode = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Mode::Str { key },
                    b'u' => Mode::Unicode { key, left: 4 },
                    _ => return false,
                };
                true
            }
            Mode::Unicode { key, left } => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                self.mode = if left == 1 {
                    Mode::Str { key }
                } else {
                    Mode::Unicode {
                        key,
                        left: left - 1,
                    }
                };
                true
            }
            Mode::Colon => {
                if b != b':' {
                    return false;
                }
                self.mode = Mode::Value;
                true
            }
            Mode::AfterValue => match (b, self.stack.last()) {
                (b',', Some(Frame::Object)) => {
                    self.mode = Mode::Key;
                    true
                }
                (b',', Some(Frame::Array)) => {
                    self.mode = Mode::Value;
                    true
                }
                (b'}', _) => self.close(Frame::Object),
                (b']', _) => self.close(Frame::Array),
                _ => false,
            },
            Mode::Number(n) => {
                let next = match (n, b) {
                    (Number::Minus, b'0') => Number::Zero,
                    (Number::Minus, b'1'..=b'9') => Number::Int,
                    (Number::Int, b'0'..=b'9') => Number::Int,
                    (Number::Zero | Number::Int, b'.') => Number::Dot,
                    (Number::Dot | Number::Frac, b'0'..=b'9') => Number::Frac,
                    (Number::Zero | Number::Int | Number::Frac, b'e' | b'E') => Number::Exp,
                    (Number::Exp, b'+' | b'-') => Number::ExpSign,
                    (Number::Exp | Number::ExpSign | Number::ExpDigits, b'0'..=b'9') => {
                        Number::ExpDigits
                    }
                    _ if n.complete() => {
                        // The number ended: the byte belongs to what follows it.
                        self.mode = Mode::AfterValue;
                        return self.byte(b);
                    }
                    _ => return false,
                };
                self.mode = Mode::Number(next);
                true
            }
            Mode::Literal(rest) => {
                if rest.first() != Some(&b) {
                    return false;
                }
                self.mode = if rest.len() == 1 {
                    Mode::AfterValue
                } else {
                    Mode::Literal(&rest[1..])
                };
                true
            }
            Mode::Done => false,
        }
    }

    /// The shortest bytes that complete the object from here.
    pub fn closing(&self) -> Vec<u8> {
        let mut s = self.clone();
        let mut out = Vec::new();
        while !s.is_complete() {
            let b = match s.mode {
                Mode::Start => b'{',
                Mode::ObjectFirst => b'}',
                Mode::Key => b'"',
                Mode::ArrayFirst => b']',
                Mode::Value => b'0',
                Mode::Str { .. } => b'"',
                Mode::Escape { .. } => b'n',
                Mode::Unicode { .. } => b'0',
                Mode::Colon => b':',
                Mode::Number(n) if !n.complete() => b'0',
                Mode::AfterValue | Mode::Number(_) => match s.stack.last() {
                    Some(Frame::Array) => b']',
                    _ => b'}',
                },
                Mode::Literal(rest) => rest[0],
                Mode::Done => break,
            };
            let ok = s.byte(b);
            debug_assert!(ok, "closing byte {b} refused");
            out.push(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_prefixes(text: &str) {
        let mut s = JsonState::default();
        for (i, b) in text.bytes().enumerate() {
            assert!(s.push(&[b]), "refused byte {i} of {text}");
        }
    }

    #[test]
    fn accepts_objects_and_knows_when_they_end() {
        for text in [
            r#"{}"#,
            r#"{"a": 1, "b": [true, false, null, -0.5e+3, "x\"y\u00e9"], "c": {"d": []}}"#,
            "{\n  \"k\": \"v\"\n}",
        ] {
            valid_prefixes(text);
            let mut s = JsonState::default();
            assert!(s.push(text.as_bytes()));
            assert!(s.is_complete(), "{text}");
            assert!(!s.accepts(b" "), "nothing after the end");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            "[1]",
            "\"s\"",
            "{a",
            "{\"a\" 1}",
            "{\"a\":01}",
            "{\"a\":1,}",
            "{\"a\":tru}",
            "{\"a\":\"\n\"}",
            "{\"a\":1]",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":\"\\x\"}",
        ] {
            let mut s = JsonState::default();
            assert!(!s.push(bad.as_bytes()) || !s.is_complete(), "{bad:?}");
        }
        let mut s = JsonState::default();
        assert!(!s.push(" ".repeat(17).as_bytes()), "endless whitespace");
    }

    #[test]
    fn closing_completes_any_prefix() {
        let text = r#"{"a": [1, {"b": "x\u00"#;
        for end in 0..=text.len() {
            let mut s = JsonState::default();
            assert!(s.push(&text.as_bytes()[..end]));
            let closing = s.closing();
            assert!(
                s.push(&closing),
                "{} + {}",
                &text[..end],
                String::from_utf8_lossy(&closing)
            );
            assert!(s.is_complete());
            let whole = format!("{}{}", &text[..end], String::from_utf8_lossy(&closing));
            let parsed: serde_json::Value = serde_json::from_str(&whole).unwrap();
            assert!(parsed.is_object());
        }
    }
}
