//! Providers: the upstreams a deployment points at. Remote ones are spoken to over HTTP in one
//! of the OpenAI chat dialects ([`remote`], [`dialect`]); the local one is the in-process engine
//! ([`local`]).

pub mod dialect;
pub mod local;
pub mod remote;

use std::fmt;

use crate::config::{ProviderConfig, ProviderKind};

pub use local::LocalProvider;
pub use remote::{HttpProvider, install_tls};

/// A secret that cannot end up in a log line through `Debug` or `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("providers[{index}] (name = {name:?}): environment variable {var} is not set")]
    MissingKey {
        index: usize,
        name: String,
        var: String,
    },
    #[error("providers[{index}] (name = {name:?}): {message}")]
    Invalid {
        index: usize,
        name: String,
        message: String,
    },
}

/// How a provider is reached.
#[derive(Debug)]
pub enum Transport {
    Remote(Box<HttpProvider>),
    Local(LocalProvider),
}

/// A configured provider.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Free label residency policies match on.
    pub region: Option<String>,
    pub transport: Transport,
}

impl Provider {
    pub fn from_config(index: usize, config: &ProviderConfig) -> Result<Self, ProviderError> {
        let transport = match config.kind {
            ProviderKind::Local => Transport::Local(LocalProvider::from_config(index, config)?),
            _ => Transport::Remote(Box::new(HttpProvider::from_config(index, config)?)),
        };
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            region: config.region.clone(),
            transport,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-very-secret".into());
        assert!(!format!("{s:?}").contains("sk-very"));
    }
}
