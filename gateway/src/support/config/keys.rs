//! `[[keys]]`: virtual keys from the file, and the data classifications they carry.

use serde::{Deserialize, Serialize};

/// How sensitive a request's data is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Classification {
    pub const ALL: [Self; 4] = [
        Self::Public,
        Self::Internal,
        Self::Confidential,
        Self::Restricted,
    ];

    pub fn level(self) -> i64 {
        self as i64
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Confidential => "confidential",
            Self::Restricted => "restricted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Stable identifier used in logs and metrics (never the secret).
    pub id: String,
    pub team: String,
    /// Hex SHA-256 of the key (`dsgw keys new` prints it).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Environment variable holding the key in clear, as an alternative to `key_sha256`.
    #[serde(default)]
    pub key_env: Option<String>,
    /// May read every key's spend (`/v1/admin/usage`).
    #[serde(default)]
    pub admin: bool,
    /// The classification of requests without an `x-data-classification` header.
    #[serde(default = "default_classification")]
    pub default_classification: Classification,
    /// The highest classification the key may send (policies read `principal.clearance`).
    #[serde(default = "max_clearance")]
    pub clearance: Classification,
    /// Labels the key opted in to, for policies to read (for example "region:cn").
    #[serde(default)]
    pub opt_ins: Vec<String>,
}

fn default_classification() -> Classification {
    Classification::Internal
}
fn max_clearance() -> Classification {
    Classification::Restricted
}
