//! What every layer leans on: the configuration, the Redis link, the caller's identity, hashes,
//! randomness and secrets. Nothing here knows about requests.

pub mod config;
pub mod hashing;
pub mod principal;
pub mod random;
pub mod redis_link;
pub mod secret;
pub mod state_dir;
