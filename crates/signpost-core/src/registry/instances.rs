//! A service's instances: ordered by id, each held once behind an `Arc` that events,
//! responses and the agent's caches share. The id is the instance's own (no second copy as a
//! map key). Written and read as a map of id to instance, as the registry always wrote it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compact::Interner;
use crate::model::Instance;

/// An instance, ordered and found by its id.
#[derive(Debug, Clone)]
struct ById(Arc<Instance>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// A service's instances by id.
#[derive(Debug, Clone, Default)]
pub(super) struct Instances(BTreeSet<ById>);

impl PartialEq for Instances {
    /// Same ids, and equal instances under them.
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| *a.0 == *b.0)
    }
}

impl Instances {
    pub(super) fn get(&self, id: &str) -> Option<&Arc<Instance>> {
        self.0.get(id).map(|i| &i.0)
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.0.contains(id)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Inserts or replaces (by id) `instance`; returns the one replaced.
    pub(super) fn insert(&mut self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        self.0.replace(ById(instance)).map(|old| old.0)
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Arc<Instance>> {
        self.0.take(id).map(|i| i.0)
    }

    /// The instances in id order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Instance> {
        self.0.iter().map(|i| &*i.0)
    }

    /// Shares every instance's metadata and check through `interner` (after a restore).
    pub(super) fn intern(&mut self, interner: &mut Interner) {
        self.0 = std::mem::take(&mut self.0)
            .into_iter()
            .map(|i| ById(Arc::new(interner.instance(Arc::unwrap_or_clone(i.0)))))
            .collect();
    }
}

impl Serialize for Instances {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|i| (&i.0.id, &*i.0)))
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Instance>::deserialize(d)?;
        let mut out = BTreeSet::new();
        for (id, instance) in map {
            if id != instance.id {
                return Err(serde::de::Error::custom(format!(
                    "instance {:?} filed under id {id:?}",
                    instance.id
                )));
            }
            out.insert(ById(Arc::new(instance)));
        }
        Ok(Instances(out))
    }
}
