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
    /// compute (the last prompt token's logits are needed), as a cache sharing the stored blocks.
    pub fn lookup(&self, prompt: &[u32]) -> Option<KvCache<B>> {
        let max_blocks = prompt.len().saturating_sub(1) / BLOCK;
        (1..=max_blocks).rev().find_map(|blocks| {
            let len = blocks * BLOCK;
            let entry = self.index.get(&hash(&prompt[..len]))?;
            (entry.tokens[..len] == prompt[..len]).then(|| entry.cache.prefix(len))
        })
    }

    /// Remembers the full blocks of `prompt`, whose KV `cache` holds (at least) them.
    pub fn insert(&mut self, prompt: &[u32], cache: &KvCache<B>) {
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
            cache: Arc::new(cache.prefix(len)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::config::ModelConfig;
    use crate::tooling::tiny::TinySpec;

    #[test]
    fn a_hit_shares_the_stored_blocks_instead_of_copying_them() {
        let config =
            ModelConfig::from_json(&TinySpec::tiny(300).config_json().to_string()).expect("config");
        let mut live = KvCache::<Cpu>::new(&config);
        live.fill_synthetic(&Cpu, 200, 3);
        let prompt: Vec<u32> = (0..200).collect();
        let mut prefixes = PrefixCache::new(4);
        prefixes.insert(&prompt, &live);
        // A longer prompt with the same 200 tokens: three whole blocks (192 tokens) are reused.
        let longer: Vec<u32> = (0..260).collect();
        let hit = prefixes.lookup(&longer).expect("a hit");
        assert_eq!(hit.len(), 192);
        assert!(hit.shares_prefix(&live, 192));
        // A prompt that differs inside the second block reuses only the first.
        let mut other = longer.clone();
        other[100] = 9999;
        assert_eq!(prefixes.lookup(&other).expect("a hit").len(), 64);
        assert!(prefixes.lookup(&[7, 8, 9]).is_none());
    }
}
