//! Randomness that needs no cryptographic strength (jitter, spreading, ids) and the operating
//! system's generator for what does.

use std::hash::BuildHasher;

/// A random u64 from the process's hash keys (fresh per call); enough for jitter and spreading.
pub fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// 16 hex digits from [`random_u64`]: an id, not a secret.
pub fn random_id() -> String {
    let mut id = String::with_capacity(16);
    push_random_hex(&mut id);
    id
}

/// Appends 16 hex digits from [`random_u64`] (by hand: `format!` costs ten times as much, and
/// every request makes an id and a record's uid).
pub fn push_random_hex(out: &mut String) {
    let value = random_u64();
    out.extend(
        (0..16).rev().map(|nibble| {
            char::from(b"0123456789abcdef"[((value >> (nibble * 4)) & 0xf) as usize])
        }),
    );
}

/// `bytes` random bytes from the operating system's generator, in hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = getrandom::fill(&mut buf);
    crate::support::hashing::hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_lowercase_hex_digits() {
        for _ in 0..64 {
            let id = random_id();
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
        let mut two = String::new();
        push_random_hex(&mut two);
        push_random_hex(&mut two);
        assert_eq!(two.len(), 32);
        assert_ne!(two[..16], two[16..]);
    }

    #[test]
    fn draws_differ() {
        assert_ne!(random_u64(), random_u64());
        assert_ne!(random_hex(8), random_hex(8));
        assert_eq!(random_hex(8).len(), 16);
    }
}
