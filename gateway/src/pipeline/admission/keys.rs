//! Virtual keys: clients present `Authorization: Bearer <key>`; the gateway stores only SHA-256
//! digests and compares them in constant time, so neither the config nor a timing side channel
//! gives a key away.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::support::config::KeyConfig;
use crate::support::hashing::{Digest32, decode_hex32, hex, sha256};
pub use crate::support::principal::Principal;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("keys[{index}] (id = {id:?}): environment variable {var} is not set")]
    MissingEnv {
        index: usize,
        id: String,
        var: String,
    },
    #[error("keys[{index}] (id = {id:?}): `key_sha256` is not 64 hex characters")]
    BadDigest { index: usize, id: String },
}

/// How requests are authenticated.
#[derive(Debug)]
pub enum KeyStore {
    /// Configured keys, by digest.
    Keys(Vec<(Digest32, Principal)>),
    /// No keys configured: any bearer (or none) is accepted. Only allowed on loopback listeners.
    OpenLoopback(Principal),
}

impl KeyStore {
    pub fn from_config(keys: &[KeyConfig]) -> Result<Self, KeyError> {
        if keys.is_empty() {
            // Not an admin: admin routes always need a configured key.
            return Ok(Self::OpenLoopback(Principal {
                key_id: Arc::from("local"),
                team: Arc::from("local"),
                admin: false,
            }));
        }
        let mut entries = Vec::with_capacity(keys.len());
        for (index, k) in keys.iter().enumerate() {
            let digest = match (&k.key_sha256, &k.key_env) {
                (Some(hex), _) => decode_hex32(hex).ok_or_else(|| KeyError::BadDigest {
                    index,
                    id: k.id.clone(),
                })?,
                (None, Some(var)) => {
                    let key = std::env::var(var).map_err(|_| KeyError::MissingEnv {
                        index,
                        id: k.id.clone(),
                        var: var.clone(),
                    })?;
                    sha256(key.as_bytes())
                }
                (None, None) => {
                    return Err(KeyError::BadDigest {
                        index,
                        id: k.id.clone(),
                    });
                }
            };
            entries.push((
                digest,
                Principal {
                    key_id: Arc::from(k.id.as_str()),
                    team: Arc::from(k.team.as_str()),
                    admin: k.admin,
                },
            ));
        }
        Ok(Self::Keys(entries))
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::OpenLoopback(_))
    }

    /// Resolves the value of an `Authorization` header (or `x-api-key`) to a principal.
    pub fn authenticate(&self, presented: Option<&str>) -> Option<Principal> {
        match self {
            Self::OpenLoopback(p) => Some(p.clone()),
            Self::Keys(entries) => {
                let key = presented?;
                let digest = sha256(key.as_bytes());
                // Scan every entry so the time taken does not depend on which one matched.
                let mut found = None;
                for (candidate, principal) in entries {
                    if bool::from(candidate.ct_eq(&digest)) {
                        found = Some(principal);
                    }
                }
                found.cloned()
            }
        }
    }
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A fresh 256-bit key from the operating system's generator, as `sk-dsgw-<64 hex>`.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("sk-dsgw-{}", hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        KeyStore::from_config(&[KeyConfig {
            id: "alice".into(),
            team: "research".into(),
            key_sha256: Some(hex(&sha256(b"sk-alice"))),
            key_env: None,
            admin: false,
            default_classification: crate::support::config::Classification::Internal,
            clearance: crate::support::config::Classification::Restricted,
            opt_ins: Vec::new(),
        }])
        .unwrap()
    }

    #[test]
    fn accepts_the_right_key_and_only_it() {
        let s = store();
        let p = s.authenticate(Some("sk-alice")).unwrap();
        assert_eq!(&*p.key_id, "alice");
        assert_eq!(&*p.team, "research");
        assert!(s.authenticate(Some("sk-alicf")).is_none());
        assert!(s.authenticate(None).is_none());
    }

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn generated_keys_are_256_bits_and_distinct() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "sk-dsgw-".len() + 64);
    }
}
