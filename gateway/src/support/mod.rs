//! What every layer leans on: the configuration, the Redis link, the caller's identity, hashes,
//! randomness, secrets, the heap's settings and the lane a thread serves. Nothing here knows about requests.

pub mod config;
pub mod hashing;
pub mod heap;
pub mod lane;
pub mod principal;
pub mod random;
pub mod redis_link;
pub mod secret;
pub mod state_dir;
