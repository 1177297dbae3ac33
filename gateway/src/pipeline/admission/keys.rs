//! Virtual keys: clients present `Authorization: Bearer <key>`; the gateway keeps only SHA-256
//! digests and looks the presented key's digest up, so neither the config, the store nor a
//! timing side channel gives a key away (a lookup's time depends on the digest, which tells an
//! attacker nothing about any key's secret). The keys in force are swapped whole when the
//! store changes ([`LiveKeys`]).

use std::sync::{Arc, RwLock};

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

/// A key from the store: its digest, who it is, and the instant (Unix milliseconds) it stops
/// working, if any (an expiry, or a rotated secret's grace period).
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub digest: Digest32,
    pub principal: Principal,
    pub not_after_ms: Option<i64>,
}

/// One accepted secret's holder.
#[derive(Debug, Clone)]
pub struct Entry {
    principal: Principal,
    not_after_ms: Option<i64>,
}

/// How requests are authenticated.
#[derive(Debug)]
pub enum KeyStore {
    /// Configured and stored keys, by digest (hashed with foldhash: a digest is as random as
    /// a hash gets, and SipHash cost ~250 instructions a request).
    Keys(foldhash::HashMap<Digest32, Entry>),
    /// No keys configured: any bearer (or none) is accepted. Only allowed on loopback listeners.
    OpenLoopback(Principal),
}

impl KeyStore {
    pub fn from_config(keys: &[KeyConfig]) -> Result<Self, KeyError> {
        Self::with_stored(keys, Vec::new())
    }

    /// The file's keys and the store's; a stored key whose id the file also has is left out
    /// (the file's wins), and with none of either any caller is accepted (loopback only).
    pub fn with_stored(keys: &[KeyConfig], stored: Vec<StoredKey>) -> Result<Self, KeyError> {
        if keys.is_empty() && stored.is_empty() {
            // Not an admin: admin routes always need a configured key.
            return Ok(Self::OpenLoopback(Principal {
                key_id: Arc::from("local"),
                team: Arc::from("local"),
                admin: false,
            }));
        }
        let mut entries = foldhash::HashMap::with_capacity_and_hasher(
            keys.len() + stored.len(),
            foldhash::fast::RandomState::default(),
        );
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
            entries.insert(
                digest,
                Entry {
                    principal: Principal {
                        key_id: Arc::from(k.id.as_str()),
                        team: Arc::from(k.team.as_str()),
                        admin: k.admin,
                    },
                    not_after_ms: None,
                },
            );
        }
        for s in stored {
            if keys.iter().any(|k| *k.id == *s.principal.key_id) {
                continue;
            }
            entries.entry(s.digest).or_insert(Entry {
                principal: s.principal,
                not_after_ms: s.not_after_ms,
            });
        }
        Ok(Self::Keys(entries))
    }

    /// Keys mode with no key: every caller is refused.
    pub fn nobody() -> Self {
        Self::Keys(foldhash::HashMap::default())
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::OpenLoopback(_))
    }

    /// Resolves the value of an `Authorization` header (or `x-api-key`) to a principal, as of
    /// `now_ms` (an expired key, or a rotated secret past its grace, resolves to nothing).
    pub fn authenticate(&self, presented: Option<&str>, now_ms: i64) -> Option<Principal> {
        match self {
            Self::OpenLoopback(p) => Some(p.clone()),
            Self::Keys(entries) => {
                let entry = entries.get(&sha256(presented?.as_bytes()))?;
                entry
                    .not_after_ms
                    .is_none_or(|end| now_ms < end)
                    .then(|| entry.principal.clone())
            }
        }
    }
}

/// The keys in force, swapped whole when the store changes; a request reads one version.
#[derive(Debug)]
pub struct LiveKeys(RwLock<Arc<KeyStore>>);

impl LiveKeys {
    pub fn new(keys: KeyStore) -> Self {
        Self(RwLock::new(Arc::new(keys)))
    }

    pub fn current(&self) -> Arc<KeyStore> {
        self.0.read().expect("keys lock").clone()
    }

    pub fn replace(&self, keys: KeyStore) {
        *self.0.write().expect("keys lock") = Arc::new(keys);
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

    /// `alice` of `research`, whose secret is `sk-alice`.
    fn alice() -> KeyConfig {
        KeyConfig {
            id: "alice".into(),
            team: "research".into(),
            key_sha256: Some(hex(&sha256(b"sk-alice"))),
            key_env: None,
            admin: false,
            default_classification: crate::support::config::Classification::Internal,
            clearance: crate::support::config::Classification::Restricted,
            opt_ins: Vec::new(),
        }
    }

    fn store() -> KeyStore {
        KeyStore::from_config(&[alice()]).unwrap()
    }

    #[test]
    fn accepts_the_right_key_and_only_it() {
        let s = store();
        let p = s.authenticate(Some("sk-alice"), 0).unwrap();
        assert_eq!(&*p.key_id, "alice");
        assert_eq!(&*p.team, "research");
        assert!(s.authenticate(Some("sk-alicf"), 0).is_none());
        assert!(s.authenticate(None, 0).is_none());
    }

    #[test]
    fn stored_keys_end_when_they_say_and_the_file_wins_an_id() {
        let principal = |id: &str| Principal {
            key_id: Arc::from(id),
            team: Arc::from("ops"),
            admin: false,
        };
        let stored = vec![
            StoredKey {
                digest: sha256(b"sk-bob"),
                principal: principal("bob"),
                not_after_ms: Some(1_000),
            },
            StoredKey {
                digest: sha256(b"sk-bob-forever"),
                principal: principal("bob"),
                not_after_ms: None,
            },
            StoredKey {
                digest: sha256(b"sk-fake-alice"),
                principal: principal("alice"),
                not_after_ms: None,
            },
        ];
        let s = KeyStore::with_stored(&[alice()], stored).unwrap();
        assert!(s.authenticate(Some("sk-bob"), 999).is_some());
        assert!(s.authenticate(Some("sk-bob"), 1_000).is_none());
        assert!(s.authenticate(Some("sk-bob-forever"), i64::MAX).is_some());
        assert!(s.authenticate(Some("sk-fake-alice"), 0).is_none());
        assert!(s.authenticate(Some("sk-alice"), 0).is_some());
        assert!(KeyStore::with_stored(&[], Vec::new()).unwrap().is_open());
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
