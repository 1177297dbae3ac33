//! The catalogue of exposed model names, each resolved to its ordered deployments.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ProviderKind};
use crate::health::{BreakerPolicy, Health};
use crate::pricing::Price;
use crate::upstream::Provider;

/// DeepSeek's output limits (reference: 8K non-thinking, 64K thinking including reasoning).
const MAX_OUTPUT_NON_THINKING: u32 = 8 * 1024;
const MAX_OUTPUT_THINKING: u32 = 64 * 1024;

/// One place a model can be served from.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub provider: Arc<Provider>,
    /// The model name the provider knows.
    pub upstream_model: String,
    pub price: Arc<Price>,
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
}

/// An exposed model name and how to serve it.
#[derive(Debug)]
pub struct ModelSpec {
    pub name: String,
    /// `name` as a JSON string, written into every response and chunk.
    pub name_json: String,
    pub thinking: bool,
    pub thinking_only: bool,
    pub tools: bool,
    pub max_output_tokens: Option<u32>,
    pub owned_by: String,
    pub description: Option<String>,
    pub deployments: Vec<Deployment>,
}

impl ModelSpec {
    pub fn max_output_tokens(&self, thinking: bool) -> u32 {
        self.max_output_tokens.unwrap_or(if thinking {
            MAX_OUTPUT_THINKING
        } else {
            MAX_OUTPUT_NON_THINKING
        })
    }

    #[cfg(test)]
    pub fn for_tests(name: &str, thinking: bool, thinking_only: bool, tools: bool) -> Self {
        Self {
            name: name.to_owned(),
            name_json: serde_json::to_string(name).unwrap(),
            thinking,
            thinking_only,
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
    by_name: HashMap<String, usize>,
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
        let models: Vec<Arc<ModelSpec>> = config
            .models
            .iter()
            .map(|m| {
                Arc::new(ModelSpec {
                    name: m.name.clone(),
                    name_json: serde_json::to_string(&m.name).expect("a string serialises"),
                    thinking: m.thinking,
                    thinking_only: m.thinking_only,
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
                            let default = if provider.kind == ProviderKind::Local {
                                "free"
                            } else {
                                "deepseek-v3.2"
                            };
                            let name = d.price.as_deref().unwrap_or(default);
                            let price = config
                                .prices
                                .iter()
                                .find(|p| p.name == name)
                                .and_then(|p| p.to_price().ok())
                                .or_else(|| Price::builtin(name))
                                .expect("validated price name");
                            Deployment {
                                provider,
                                upstream_model: d.model.clone(),
                                price: Arc::new(price),
                                index: position,
                                policy_id: crate::policy::deployment_id(
                                    &m.name,
                                    &d.provider,
                                    &d.model,
                                ),
                                priority: d.priority.unwrap_or(position as u32),
                                weight: d.weight,
                                id_hash: crate::routing::stable_hash(
                                    format!("{}/{}", d.provider, d.model).as_bytes(),
                                ),
                                health: Arc::new(Health::new(policy)),
                            }
                        })
                        .collect(),
                })
            })
            .collect();
        let by_name = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Self { models, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModelSpec>> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }

    /// Every model with its deployments, in configuration order.
    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.iter().map(|m| m.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.name.as_str())
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
