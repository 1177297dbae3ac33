//! `dsgw`: a DeepSeek-, OpenAI- and Anthropic-compatible API gateway.
//!
//! Folders name the request's phases, and dependencies point down this list:
//!
//! - [`app`]: the server, its state, the middleware stack (request ids, traces, body limit,
//!   authentication), operational endpoints;
//! - [`surface`]: the APIs clients speak, each a translation around the one pipeline;
//! - [`pipeline`]: one request's phases, admit -> route -> call -> respond -> settle, with
//!   admission (keys, policies, budgets, limits) and routing (catalogue, plan, dispatch, health);
//! - [`providers`]: the upstreams (remote dialects over HTTP, the in-process engine), emitting
//!   typed events; beside them [`store`]: keys, teams, budgets, limits and the spend ledger in
//!   SQLite or PostgreSQL;
//! - [`accounting`]: usage, prices, the completion record, spend, metrics;
//! - [`wire`] and [`support`]: wire formats and the error envelope; configuration, Redis,
//!   identity, hashing.

pub mod accounting;
pub mod app;
pub mod pipeline;
pub mod providers;
pub mod store;
pub mod support;
pub mod surface;
pub mod wire;
