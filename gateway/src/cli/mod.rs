//! The commands of the `dsgw` binary besides serving: keys, config checks, the engine's tools and
//! the policies' tools.

pub mod admin;
pub mod check;
pub mod engine;
pub mod keys;
pub mod policy;
pub mod prices;
pub mod serve;
