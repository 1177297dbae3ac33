//! Reuse of KV caches across requests that share a prompt prefix, in 64-token blocks (the unit
//! DeepSeek caches and bills in: a prefix under 64 tokens is never a hit).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::backend::Backend;
use crate::cache::KvCache;

pub const BLOCK: usize = 64;

struct Entry<B: Backend> {
    tokens: Arc<[u32]>,
    cache: Arc<KvCache<B>>,
}

/// Snapshots of prompt caches, each reachable from every block boundary of its prompt.
pub struct PrefixCache<B: Backend> {
    /// Hash of `tokens[..k * BLOCK]` -> the snapshot holding at least that prefix.
    index: HashMap<u64, Arc<Entry<B>>>,
    /// Snapshots, oldest first, for eviction.
    order: VecDeque<Arc<Entry<B>>>,
    capacity: usize,
}

impl<B: Backend> std::fmt::Debug for PrefixCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache")
            .field("snapshots", &self.order.len())
            .finish()
    }
}

fn hash(tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    tokens.hash(&mut h);
    h.finish()
}

impl<B: Backend> PrefixCache<B> {
    /// Keeps at most `capacity` prompt snapshots (0 disables the cache).
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The longest cached block prefix of `prompt` that still leaves at least one token to
    /// compute (the last prompt token's logits are needed), as a fresh cache.
    pub fn lookup(&self, backend: &B, prompt: &[u32]) -> Option<KvCache<B>> {
        let max_blocks = prompt.len().saturating_sub(1) / BLOCK;
        (1..=max_blocks).rev().find_map(|blocks| {
            let len = blocks * BLOCK;
            let entry = self.index.get(&hash(&prompt[..len]))?;
            (entry.tokens[..len] == prompt[..len]).then(|| entry.cache.prefix(backend, len))
        })
    }

    /// Remembers the full blocks of `prompt`, whose KV `cache` holds (at least) them.
    pub fn insert(&mut self, backend: &B, prompt: &[u32], cache: &KvCache<B>) {
        let len = prompt.len().min(cache.len()) / BLOCK * BLOCK;
        if len == 0 || self.capacity == 0 {
            return;
        }
        if self
            .index
            .get(&hash(&prompt[..len]))
            .is_some_and(|e| e.tokens[..len] == prompt[..len])
        {
            return;
        }
        let entry = Arc::new(Entry {
            tokens: Arc::from(&prompt[..len]),
            cache: Arc::new(cache.prefix(backend, len)),
        });
        for blocks in 1..=len / BLOCK {
            self.index
                .insert(hash(&prompt[..blocks * BLOCK]), entry.clone());
        }
        self.order.push_back(entry);
        while self.order.len() > self.capacity {
            let old = self.order.pop_front().expect("non-empty");
            self.index.retain(|_, e| !Arc::ptr_eq(e, &old));
        }
    }
}
