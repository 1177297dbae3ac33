//! Every price by name: the built-in catalogue, with the operator's entries replacing any
//! built-in price of the same name; and the slot a deployment reads its price from, which a
//! prices reload swaps.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::Schedule;
use crate::support::config::prices::{PriceConfig, catalogue};

#[derive(Debug, Default)]
pub struct PriceBook {
    schedules: HashMap<String, Arc<Schedule>>,
}

impl PriceBook {
    /// The book of the catalogue and `operator`'s entries (validated).
    pub fn new<'a>(operator: impl IntoIterator<Item = &'a PriceConfig>) -> Self {
        let mut groups: BTreeMap<&str, Vec<&PriceConfig>> = BTreeMap::new();
        for p in catalogue::prices() {
            groups.entry(&p.name).or_default().push(p);
        }
        let mut theirs: BTreeMap<&str, Vec<&PriceConfig>> = BTreeMap::new();
        for p in operator {
            theirs.entry(&p.name).or_default().push(p);
        }
        // An operator's price replaces the built-in one whole: its eras, not a merge.
        groups.extend(theirs);
        let schedules = groups
            .into_iter()
            .map(|(name, entries)| (name.to_owned(), Arc::new(Schedule::build(&entries))))
            .collect();
        Self { schedules }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Schedule>> {
        self.schedules.get(name)
    }
}

/// A deployment's price: its name, and the schedule in force (swapped whole on reload; a
/// request keeps the one it was routed with).
#[derive(Debug)]
pub struct PriceSlot {
    pub name: String,
    current: RwLock<Arc<Schedule>>,
}

impl PriceSlot {
    pub fn new(name: String, schedule: Arc<Schedule>) -> Self {
        Self {
            name,
            current: RwLock::new(schedule),
        }
    }

    pub fn get(&self) -> Arc<Schedule> {
        self.current.read().expect("price lock").clone()
    }

    pub fn set(&self, schedule: Arc<Schedule>) {
        *self.current.write().expect("price lock") = schedule;
    }
}
