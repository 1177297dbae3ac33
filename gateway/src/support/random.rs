//! Randomness that needs no cryptographic strength (jitter, spreading, ids) and the operating
//! system's generator for what does.

use std::hash::BuildHasher;

/// A random u64 from the process's hash keys (fresh per call); enough for jitter and spreading.
pub fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// 16 hex digits from [`random_u64`]: an id, not a secret.
pub fn random_id() -> String {
    format!("{:016x}", random_u64())
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
    fn draws_differ() {
        assert_ne!(random_u64(), random_u64());
        assert_ne!(random_hex(8), random_hex(8));
        assert_eq!(random_hex(8).len(), 16);
    }
}
