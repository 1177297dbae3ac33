//! `dsgw`: a DeepSeek- and OpenAI-compatible API gateway.
//!
//! A request flows one way through these modules: [`server`] (routes, auth layer, body limit) →
//! [`request`] (parse and validate, raw body kept) → [`chat`] (model resolution, budgets,
//! limits) → [`routing`] (deployment order, retries, fallback) → [`upstream`] (provider
//! dialects, HTTP) → [`relay`] (streams) → [`settlement`] (one completion record per request,
//! usage from [`usage`]).

pub mod account;
pub mod anthropic;
pub mod auth;
pub mod budgets;
pub mod chat;
pub mod config;
pub mod error;
pub mod estimate;
pub mod fim;
pub mod health;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod policy;
pub mod pricing;
pub mod raw_object;
pub mod redis_link;
pub mod relay;
pub mod request;
pub mod routing;
pub mod server;
pub mod settlement;
pub mod shared_spend;
pub mod sse;
pub mod state;
pub mod strict_schema;
pub mod upstream;
pub mod usage;
