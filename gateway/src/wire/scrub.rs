//! Scrubbing text that leaves the process (an upstream's error message relayed to a client or
//! a log line) of secrets and of anything shaped like a credential.

/// `text` as it may leave the process (to a client, a log line): every one of `secrets`
/// replaced, and anything shaped like a credential too (`Bearer <token>`, `sk-...` keys), since
/// an upstream may echo a header or a key it was given or holds.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    const HIDDEN: &str = "[redacted]";
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        out = out.replace(*s, HIDDEN);
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b);
    let mut clean = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while !rest.is_empty() {
        let lower = rest.to_ascii_lowercase();
        let bearer = lower.find("bearer ").map(|i| (i, i + 7, 1));
        let key = lower.find("sk-").map(|i| (i, i, 16));
        let Some((at, body, least)) = [bearer, key].into_iter().flatten().min_by_key(|m| m.0)
        else {
            clean.push_str(rest);
            break;
        };
        let len = rest.as_bytes()[body..]
            .iter()
            .take_while(|b| token(**b))
            .count();
        let word_start = at == 0 || !token(rest.as_bytes()[at - 1]);
        if len >= least && word_start {
            clean.push_str(&rest[..body]);
            clean.push_str(HIDDEN);
            rest = &rest[body + len..];
        } else {
            let step = body.max(at + 1);
            clean.push_str(&rest[..step]);
            rest = &rest[step..];
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_text_loses_secrets_and_credentials() {
        let text = "bad header Authorization: Bearer sk-abcdefghijklmnopqrstuvwx; key k3y-VALUE-123 and sk-short task-force";
        let out = scrub(text, &["k3y-VALUE-123"]);
        assert_eq!(
            out,
            "bad header Authorization: Bearer [redacted]; key [redacted] and sk-short task-force"
        );
        assert_eq!(scrub("sk-0123456789abcdefXYZ", &[]), "[redacted]");
        assert_eq!(scrub("no secrets here", &["tiny"]), "no secrets here");
    }
}
