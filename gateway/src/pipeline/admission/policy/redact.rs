//! Personal data: detection (for the policies' `personal_data` context), redaction into stable
//! placeholders before a remote provider sees a prompt, and re-identification of the answer for
//! the caller.
//!
//! Kinds: email addresses; phone numbers in international (`+49 30 1234567`) or North American
//! (`(415) 555-0100`, `415-555-0100`) form; payment card numbers (13-19 digits passing Luhn);
//! IBANs (passing the mod-97 check); IPv4 and IPv6 addresses; API keys and secrets (OpenAI-,
//! DeepSeek-, AWS-, GitHub-, Slack- and Google-style keys, and `password=...`-style
//! assignments). A placeholder is `[KIND_xxxxxxxx]`, a keyed hash of the value: the same value
//! gets the same placeholder in every turn (so the provider's prefix cache still hits), and the
//! key keeps a provider from recovering short values (phone numbers) by brute force.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::support::hashing::{mix, stable_hash};

static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?P<secret>\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b)",
        r#"|(?i:\b(?:api[_-]?key|secret|password|passwd|token)["']?\s*[:=]\s*["']?)(?P<assigned>[^\s"'\\,;]{8,})"#,
        r"|(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})",
        r"|(?P<iban>\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b)",
        r"|(?P<card>\b\d(?:[ -]?\d){12,18}\b)",
        r"|(?P<ipv6>\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}\b)",
        r"|(?P<ipv4>\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b)",
        r"|(?P<phone>\+\d{1,3}[ .-]?(?:\(\d{1,4}\)|\d{1,4})(?:[ .-]?\d{2,4}){2,4}\b|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b)",
    ))
    .expect("the personal-data pattern compiles")
});

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[(?:EMAIL|PHONE|CARD|IBAN|IP|SECRET)_[0-9a-f]{8}\]").expect("compiles")
});

/// One piece of personal data found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Finding {
    kind: &'static str,
    start: usize,
    end: usize,
}

fn findings(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for caps in PATTERN.captures_iter(text) {
        let (kind, m) = [
            ("SECRET", "secret"),
            ("SECRET", "assigned"),
            ("EMAIL", "email"),
            ("IBAN", "iban"),
            ("CARD", "card"),
            ("IP", "ipv6"),
            ("IP", "ipv4"),
            ("PHONE", "phone"),
        ]
        .into_iter()
        .find_map(|(kind, group)| caps.name(group).map(|m| (kind, m)))
        .expect("one alternative matched");
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        let valid = match kind {
            "CARD" => luhn(m.as_str()),
            "IBAN" => iban_checksum(m.as_str()),
            "PHONE" => (9..=15).contains(&digits),
            _ => true,
        };
        if valid {
            out.push(Finding {
                kind,
                start: m.start(),
                end: m.end(),
            });
        }
    }
    out
}

fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

fn iban_checksum(text: &str) -> bool {
    let compact: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut remainder = 0u32;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        remainder = if value < 10 {
            (remainder * 10 + value) % 97
        } else {
            (remainder * 100 + value) % 97
        };
    }
    remainder == 1
}

/// Whether any of the texts holds personal data.
pub fn contains_personal_data<'a>(texts: impl IntoIterator<Item = &'a str>) -> bool {
    texts.into_iter().any(|t| !findings(t).is_empty())
}

/// Placeholders minted for one request, and the originals they stand for.
#[derive(Debug, Default, Clone)]
pub struct Vault {
    originals: HashMap<String, String>,
}

impl Vault {
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    pub fn len(&self) -> usize {
        self.originals.len()
    }

    /// Puts back the originals of this request's placeholders; other bracketed text is left.
    pub fn reidentify(&self, text: &str) -> String {
        PLACEHOLDER
            .replace_all(text, |caps: &regex::Captures<'_>| {
                let p = &caps[0];
                self.originals
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| p.to_owned())
            })
            .into_owned()
    }
}

/// Mints placeholders with a key, so the same value maps to the same placeholder everywhere
/// that shares the key (every replica, when the operator configures one).
#[derive(Debug, Clone)]
pub struct Redactor {
    key: Vec<u8>,
}

impl Redactor {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// A key drawn at start-up: placeholders are stable within this process.
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).expect("the OS provides randomness");
        Self { key }
    }

    fn placeholder(&self, kind: &str, value: &str) -> String {
        let mut keyed = self.key.clone();
        keyed.extend_from_slice(value.as_bytes());
        let h = mix(stable_hash(&keyed) ^ stable_hash(kind.as_bytes()));
        format!("[{kind}_{:08x}]", h as u32)
    }

    /// `text` with its personal data replaced; the vault learns each placeholder.
    pub fn redact(&self, text: &str, vault: &mut Vault) -> String {
        let found = findings(text);
        if found.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            let value = &text[f.start..f.end];
            let p = self.placeholder(f.kind, value);
            vault.originals.insert(p.clone(), value.to_owned());
            out.push_str(&p);
            at = f.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// Every prompt text of a `messages` array: contents (string or text parts), reasoning, and
/// tool-call arguments.
fn for_each_text(messages: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Some(list) = messages.as_array_mut() else {
        return;
    };
    for m in list {
        match m.get_mut("content") {
            Some(Value::String(s)) => f(s),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(Value::String(s)) = part.get_mut("text") {
                        f(s);
                    }
                }
            }
            _ => {}
        }
        if let Some(Value::String(s)) = m.get_mut("reasoning_content") {
            f(s);
        }
        if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
            for call in calls {
                if let Some(Value::String(s)) = call.pointer_mut("/function/arguments") {
                    f(s);
                }
            }
        }
    }
}

/// Whether the JSON text of a `messages` array holds personal data.
pub fn messages_have_personal_data(messages_json: &str) -> bool {
    let Ok(mut messages) = serde_json::from_str::<Value>(messages_json) else {
        return false;
    };
    let mut found = false;
    for_each_text(&mut messages, &mut |s| {
        found = found || !findings(s).is_empty();
    });
    found
}

/// The `messages` JSON with personal data replaced, or `None` when there was none.
pub fn redact_messages(messages_json: &str, redactor: &Redactor) -> Option<(String, Vault)> {
    let mut messages: Value = serde_json::from_str(messages_json).ok()?;
    let mut vault = Vault::default();
    for_each_text(&mut messages, &mut |s| {
        let redacted = redactor.redact(s, &mut vault);
        if redacted != *s {
            *s = redacted;
        }
    });
    (!vault.is_empty()).then(|| {
        (
            serde_json::to_string(&messages).expect("a JSON value serialises"),
            vault,
        )
    })
}

/// Re-identifies a streamed text whose placeholders may be split across chunks: a tail that
/// could be the start of a placeholder is held back until the next chunk decides it.
#[derive(Debug, Default)]
pub struct StreamReidentifier {
    pending: String,
}

impl StreamReidentifier {
    pub fn push(&mut self, vault: &Vault, delta: &str) -> String {
        self.pending.push_str(delta);
        let cut = match self.pending.rfind('[') {
            Some(i) if could_start_placeholder(&self.pending[i..]) => i,
            _ => self.pending.len(),
        };
        let ready: String = self.pending.drain(..cut).collect();
        vault.reidentify(&ready)
    }

    pub fn finish(&mut self, vault: &Vault) -> String {
        let rest = std::mem::take(&mut self.pending);
        vault.reidentify(&rest)
    }
}

/// Whether `tail` (starting with `[`) is a proper prefix of some placeholder.
fn could_start_placeholder(tail: &str) -> bool {
    if tail.len() >= "[SECRET_00000000]".len() || tail.contains(']') {
        return false;
    }
    let body = &tail[1..];
    let (kind, hex) = match body.split_once('_') {
        Some((k, h)) => (k, Some(h)),
        None => (body, None),
    };
    let kinds = ["EMAIL", "PHONE", "CARD", "IBAN", "IP", "SECRET"];
    match hex {
        None => kinds.iter().any(|k| k.starts_with(kind)),
        Some(h) => {
            kinds.contains(&kind)
                && h.len() <= 8
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<&'static str> {
        findings(text).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn finds_each_kind() {
        assert_eq!(kinds("mail jane.doe+x@example.co.uk now"), ["EMAIL"]);
        assert_eq!(
            kinds("call +49 30 1234 5678 or (415) 555-0100"),
            ["PHONE", "PHONE"]
        );
        assert_eq!(kinds("card 4111 1111 1111 1111"), ["CARD"]);
        assert_eq!(kinds("iban DE89 3704 0044 0532 0130 00"), ["IBAN"]);
        assert_eq!(
            kinds("from 192.168.10.7 and fe80::1ff:fe23:4567:890a"),
            ["IP", "IP"]
        );
        assert_eq!(kinds("key sk-abcdefghijklmnop1234 here"), ["SECRET"]);
        assert_eq!(kinds("AWS AKIAIOSFODNN7EXAMPLE"), ["SECRET"]);
        assert_eq!(kinds("password = hunter2hunter2"), ["SECRET"]);
    }

    #[test]
    fn checksums_and_shapes_keep_false_positives_out() {
        assert!(kinds("card 4111 1111 1111 1112").is_empty(), "fails Luhn");
        assert!(
            kinds("DE89 3704 0044 0532 0130 01").is_empty(),
            "fails mod 97"
        );
        assert!(kinds("on 2026-11-28 18:57 at version 1.2.3").is_empty());
        assert!(kinds("order 12345 shipped, 3 items, 999.99 USD").is_empty());
        assert!(kinds("256.1.1.1 is not an address").is_empty());
    }

    #[test]
    fn redaction_is_stable_and_reversible() {
        let r = Redactor::new(b"k".to_vec());
        let mut vault = Vault::default();
        let text = "write to jane@example.com, card 4111-1111-1111-1111, jane@example.com again";
        let redacted = r.redact(text, &mut vault);
        assert!(!redacted.contains("jane@"));
        assert!(!redacted.contains("4111"));
        let placeholders: Vec<&str> = PLACEHOLDER
            .find_iter(&redacted)
            .map(|m| m.as_str())
            .collect();
        assert_eq!(placeholders.len(), 3);
        assert_eq!(
            placeholders[0], placeholders[2],
            "same value, same placeholder"
        );
        assert_eq!(vault.len(), 2);
        assert_eq!(vault.reidentify(&redacted), text);
        // A different key mints different placeholders.
        let other = Redactor::new(b"other".to_vec()).redact(text, &mut Vault::default());
        assert_ne!(other, redacted);
    }

    #[test]
    fn unknown_placeholders_stay() {
        let vault = Vault::default();
        assert_eq!(vault.reidentify("[EMAIL_deadbeef]"), "[EMAIL_deadbeef]");
    }

    #[test]
    fn messages_are_redacted_in_every_text_field() {
        let r = Redactor::new(b"k".to_vec());
        let messages = r#"[{"role":"system","content":"ops@corp.example is the admin"},{"role":"user","content":[{"type":"text","text":"my ip is 10.1.2.3"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"mail","arguments":"{\"to\":\"bob@corp.example\"}"}}]}]"#;
        assert!(messages_have_personal_data(messages));
        let (redacted, vault) = redact_messages(messages, &r).unwrap();
        for secret in ["ops@corp", "10.1.2.3", "bob@corp"] {
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert_eq!(vault.len(), 3);
        let v: Value = serde_json::from_str(&redacted).unwrap();
        let args: Value = serde_json::from_str(
            v[2]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert!(args["to"].as_str().unwrap().starts_with("[EMAIL_"));
        assert!(redact_messages(r#"[{"role":"user","content":"hello"}]"#, &r).is_none());
    }

    #[test]
    fn streamed_placeholders_are_restored_across_every_split() {
        let r = Redactor::new(b"k".to_vec());
        let mut vault = Vault::default();
        let original = "Reply to jane@example.com [soon] today.";
        let redacted = r.redact(original, &mut vault);
        for split in 0..=redacted.len() {
            for second in split..=redacted.len() {
                let mut s = StreamReidentifier::default();
                let mut out = s.push(&vault, &redacted[..split]);
                out += &s.push(&vault, &redacted[split..second]);
                out += &s.push(&vault, &redacted[second..]);
                out += &s.finish(&vault);
                assert_eq!(out, original, "split at {split}/{second}");
            }
        }
    }
}
