//! Providers: the upstreams a deployment points at. Remote ones are spoken to over HTTP in one of
//! the OpenAI chat dialects ([`remote`]); the local one is the in-process engine ([`local`]).
//! Either way a call ([`call::Call`]) yields a whole completion or a stream of events
//! ([`reply`]), in DeepSeek's shape.

pub mod call;
pub mod local;
pub mod remote;
pub mod reply;

use std::time::Duration;

use crate::support::config::{ProviderConfig, ProviderKind};
use crate::wire::error::ApiError;
use call::{Call, Target};
pub use local::LocalProvider;
pub use remote::{HttpProvider, install_tls};
use reply::Started;

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
    /// Connects to (or, for the local engine, starts) the provider `config` describes.
    pub fn start(index: usize, config: &ProviderConfig) -> Result<Self, ProviderError> {
        let transport = match config {
            ProviderConfig::Local(local) => {
                Transport::Local(LocalProvider::plan(index, local)?.start()?)
            }
            _ => Transport::Remote(Box::new(HttpProvider::from_config(index, config)?)),
        };
        Ok(Self {
            name: config.name().to_owned(),
            kind: config.kind(),
            region: config.region().map(str::to_owned),
            transport,
        })
    }

    /// Whether strict functions sent here get what `strict` promises: remote providers have a
    /// strict path (DeepSeek's `/beta`, the flag vLLM, SGLang and OpenRouter take); the local
    /// engine constrains JSON objects, not a tool's schema.
    pub fn enforces_strict(&self) -> bool {
        matches!(self.transport, Transport::Remote(_))
    }

    /// Checks everything [`Provider::start`] would refuse, without starting anything: secrets
    /// in the environment, URLs, a local model's files.
    pub fn check(index: usize, config: &ProviderConfig) -> Result<(), ProviderError> {
        match config {
            ProviderConfig::Local(local) => LocalProvider::plan(index, local).map(drop),
            _ => HttpProvider::from_config(index, config).map(drop),
        }
    }

    /// Sends `call` to this provider as `target` says. Nothing is read past the point where
    /// the client could be answered: a stream comes back unread.
    pub async fn call(&self, call: &Call<'_>, target: &Target<'_>) -> Result<Started, ApiError> {
        match &self.transport {
            Transport::Remote(remote) => remote.call(call, target).await,
            // On the premises: policies' redaction obligations are for remote providers.
            Transport::Local(local) => local.call(call).await,
        }
    }

    /// How long a stream may take to produce its first event (a local engine queues instead).
    pub fn first_event_timeout(&self) -> Option<Duration> {
        match &self.transport {
            Transport::Remote(remote) => Some(remote.first_byte_timeout()),
            Transport::Local(_) => None,
        }
    }
}
