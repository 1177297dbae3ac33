//! The catalogue of exposed model names, each resolved to its ordered deployments.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::health::{BreakerPolicy, Health};
use crate::accounting::metrics::Series;
use crate::accounting::pricing::{PriceBook, PriceSlot};
use crate::accounting::settlement::DeploymentName;
use crate::providers::Provider;
use crate::providers::call::Mode;
use crate::support::config::{Config, DeploymentConfig, ModelConfig};
use crate::support::hashing::stable_hash;

/// DeepSeek's output limits (reference: 8K non-thinking, 64K thinking including reasoning).
const MAX_OUTPUT_NON_THINKING: u32 = 8 * 1024;
const MAX_OUTPUT_THINKING: u32 = 64 * 1024;

/// How a model runs when a request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelMode {
    /// Answers directly unless a request asks for thinking (`deepseek-chat`).
    NonThinking,
    /// Reasons first unless a request turns it off (`deepseek-reasoner`).
    Thinking,
    /// Always reasons; a request that turns it off is refused (`deepseek-v3.2-speciale`).
    ThinkingOnly,
}

impl ModelMode {
    pub fn of(config: &ModelConfig) -> Self {
        match (config.thinking, config.thinking_only) {
            (_, true) => Self::ThinkingOnly,
            (true, false) => Self::Thinking,
            (false, false) => Self::NonThinking,
        }
    }

    /// The mode of a request that names none.
    pub fn default_mode(self) -> Mode {
        match self {
            Self::NonThinking => Mode::NonThinking,
            Self::Thinking | Self::ThinkingOnly => Mode::Thinking,
        }
    }
}

/// The policy entity id of a deployment.
pub fn deployment_id(model: &str, provider: &str, upstream_model: &str) -> String {
    format!("{model}/{provider}/{upstream_model}")
}

/// One place a model can be served from.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub provider: Arc<Provider>,
    /// `provider/upstream_model`, as its records name it; `name.upstream_model()` is the
    /// model name the provider knows.
    pub name: DeploymentName,
    /// What it charges (reloadable).
    pub price: Arc<PriceSlot>,
    /// Its provider's own cost figure is the truth (OpenRouter reports one per request).
    pub provider_cost_is_truth: bool,
    /// Position in its model's list.
    pub index: usize,
    /// `model/provider/upstream_model`: the entity policies decide on.
    pub policy_id: String,
    /// Tried before higher values; equal values share traffic by `weight`.
    pub priority: u32,
    pub weight: u32,
    /// Hash of the deployment's identity, stable across replicas, for rendezvous hashing.
    pub id_hash: u64,
    /// Circuit breaker and latency, fed by every call.
    pub health: Arc<Health>,
    /// Its metric series (model name, provider).
    pub series: Arc<Series>,
}

impl Deployment {
    fn build(
        config: &Config,
        book: &PriceBook,
        model: &str,
        position: usize,
        d: &DeploymentConfig,
        provider: Arc<Provider>,
        policy: BreakerPolicy,
    ) -> Self {
        let name = config.deployment_price(d).expect("validated price");
        let schedule = book.get(&name).expect("validated price name").clone();
        let provider_cost_is_truth =
            provider.kind == crate::support::config::ProviderKind::Openrouter;
        Self {
            name: DeploymentName::new(&provider.name, &d.model),
            provider,
            price: Arc::new(PriceSlot::new(name, schedule)),
            provider_cost_is_truth,
            index: position,
            policy_id: deployment_id(model, &d.provider, &d.model),
            priority: d.priority.unwrap_or(position as u32),
            weight: d.weight,
            id_hash: stable_hash(format!("{}/{}", d.provider, d.model).as_bytes()),
            health: Arc::new(Health::new(policy)),
            series: Arc::new(Series::new(model, &d.provider)),
        }
    }
}

/// An exposed model name and how to serve it.
#[derive(Debug)]
pub struct ModelSpec {
    /// Shared with every record of a request for it.
    pub name: Arc<str>,
    /// `name` as a JSON string, written into every response and chunk.
    pub name_json: String,
    pub mode: ModelMode,
    pub tools: bool,
    pub max_output_tokens: Option<u32>,
    pub owned_by: String,
    pub description: Option<String>,
    pub deployments: Vec<Deployment>,
}

impl ModelSpec {
    pub fn max_output_tokens(&self, mode: Mode) -> u32 {
        self.max_output_tokens.unwrap_or(match mode {
            Mode::Thinking => MAX_OUTPUT_THINKING,
            Mode::NonThinking => MAX_OUTPUT_NON_THINKING,
        })
    }

    #[cfg(test)]
    pub fn for_tests(name: &str, mode: ModelMode, tools: bool) -> Self {
        Self {
            name: name.into(),
            name_json: serde_json::to_string(name).unwrap(),
            mode,
            tools,
            max_output_tokens: None,
            owned_by: "deepseek".to_owned(),
            description: None,
            deployments: Vec::new(),
        }
    }
}

/// All exposed models, in configuration order.
#[derive(Debug)]
pub struct Catalog {
    models: Vec<Arc<ModelSpec>>,
    /// foldhash, not SipHash: built once from the config, looked up on every request.
    by_name: foldhash::HashMap<String, usize>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    owned_by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

impl Catalog {
    pub fn build(config: &Config, providers: &HashMap<String, Arc<Provider>>) -> Self {
        let policy = BreakerPolicy::from(&config.routing);
        let book = PriceBook::new(config.operator_prices());
        let models: Vec<Arc<ModelSpec>> = config
            .models
            .iter()
            .map(|m| {
                Arc::new(ModelSpec {
                    name: m.name.as_str().into(),
                    name_json: serde_json::to_string(&m.name).expect("a string serialises"),
                    mode: ModelMode::of(m),
                    tools: m.tools,
                    max_output_tokens: m.max_output_tokens,
                    owned_by: m.owned_by.clone(),
                    description: m.description.clone(),
                    deployments: m
                        .deployments
                        .iter()
                        .enumerate()
                        .map(|(position, d)| {
                            let provider = providers[&d.provider].clone();
                            Deployment::build(config, &book, &m.name, position, d, provider, policy)
                        })
                        .collect(),
                })
            })
            .collect();
        let by_name = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.to_string(), i))
            .collect();
        Self { models, by_name }
    }

    /// Swaps every deployment's schedule for `book`'s of the same name, all or none: a book
    /// missing one of them is refused and the prices in force stay.
    pub fn reprice(&self, book: &PriceBook) -> Result<(), String> {
        let deployments = || self.models.iter().flat_map(|m| &m.deployments);
        if let Some(d) = deployments().find(|d| book.get(&d.price.name).is_none()) {
            return Err(format!(
                "price {:?} (of {}/{}) is no longer defined",
                d.price.name,
                d.provider.name,
                d.name.upstream_model()
            ));
        }
        for d in deployments() {
            d.price
                .set(book.get(&d.price.name).expect("checked above").clone());
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModelSpec>> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }

    /// Every model with its deployments, in configuration order.
    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.iter().map(|m| m.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| &*m.name)
    }

    /// The `/v1/models` body in DeepSeek's shape.
    pub fn list_json(&self) -> String {
        let list = ModelList {
            object: "list",
            data: self
                .models
                .iter()
                .map(|m| ModelEntry {
                    id: &m.name,
                    object: "model",
                    owned_by: &m.owned_by,
                    description: m.description.as_deref(),
                })
                .collect(),
        };
        serde_json::to_string(&list).expect("model list serialises")
    }
}
