//! Compact forms of what every instance carries, so that a registry of a million instances
//! fits in a few hundred bytes per instance beyond its data.
//!
//! - [`Metadata`]: an instance's metadata as one sorted boxed slice of shared strings, in place
//!   of a `BTreeMap<String, String>` (a whole B-tree node and two allocations per entry). It
//!   serialises exactly as the map did: a JSON object, keys in order.
//! - [`Interner`]: the registry's pool of shared strings (metadata keys and values) and check
//!   specs. Instances that carry the same `zone=eu-west-1a` or the same TTL check share one
//!   allocation. Entries nobody else holds are released as instances leave
//!   ([`Interner::release`]) and by a sweep whenever the pool has doubled since the last one,
//!   so the pool never holds more than twice what live instances use (plus a small floor).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{CheckSpec, Instance};

/// An instance's metadata: `(key, value)` pairs sorted by key, keys unique.
///
/// Reads like the map it replaces ([`get`](Self::get), [`iter`](Self::iter), `for (k, v) in
/// &metadata`) and is written and read as one (a JSON object with its keys in order; of a
/// repeated key, the last value wins, as a map's insert would have it).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Box<[(Arc<str>, Arc<str>)]>);

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|at| self.0[at].1.as_ref())
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// The same metadata with every key and value taken from `interner`.
    fn interned(&self, interner: &mut Interner) -> Metadata {
        Metadata(
            self.0
                .iter()
                .map(|(k, v)| (interner.string(k), interner.string(v)))
                .collect(),
        )
    }

    /// Builds from pairs in any order; of a repeated key the last value wins.
    fn from_pairs(mut pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        // A stable sort keeps repeated keys in arrival order, so the last one can win.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Metadata(out.into_boxed_slice())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Metadata {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Metadata::from_pairs(
            iter.into_iter()
                .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
                .collect(),
        )
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, Arc<str>)>,
        fn(&'a (Arc<str>, Arc<str>)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Metadata;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Metadata, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    pairs.push((Arc::from(k), Arc::from(v)));
                }
                Ok(Metadata::from_pairs(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// The registry's pool of shared strings and check specs. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    /// Metadata keys and values.
    strings: HashSet<Arc<str>>,
    /// Check specs, shared by the instances that carry equal ones.
    checks: HashSet<Arc<CheckSpec>>,
    /// Entries (strings and checks) right after the last sweep: the next runs at twice this.
    swept_at: usize,
}

/// Below this many entries the pool is not swept: small pools cost nothing worth the scan.
const SWEEP_FLOOR: usize = 1024;

impl Interner {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Strings and check specs held.
    pub fn len(&self) -> usize {
        self.strings.len() + self.checks.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared copy of `s`.
    pub fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        self.maybe_sweep();
        shared
    }

    /// The shared copy of `check`.
    pub fn check(&mut self, check: &CheckSpec) -> Arc<CheckSpec> {
        if let Some(shared) = self.checks.get(check) {
            return shared.clone();
        }
        let shared = Arc::new(check.clone());
        self.checks.insert(shared.clone());
        self.maybe_sweep();
        shared
    }

    /// `metadata` with every key and value taken from the pool.
    pub fn metadata(&mut self, metadata: &Metadata) -> Metadata {
        metadata.interned(self)
    }

    /// `instance` with its metadata and check taken from the pool.
    pub fn instance(&mut self, mut instance: Instance) -> Instance {
        instance.metadata = instance.metadata.interned(self);
        instance.check = instance.check.map(|c| self.check(&c));
        instance
    }

    /// Lets go of what only the pool and `leaving` (an instance the registry no longer holds)
    /// still hold, so that names of instances that are gone do not accumulate.
    pub fn release(&mut self, leaving: &Instance) {
        // Held by the pool and by `leaving`: nobody else.
        for (k, v) in leaving.metadata.0.iter() {
            for s in [k, v] {
                if Arc::strong_count(s) <= 2 {
                    self.strings.remove(s);
                }
            }
        }
        if let Some(c) = &leaving.check {
            if Arc::strong_count(c) <= 2 {
                self.checks.remove(c);
            }
        }
    }

    /// Drops every entry nobody else holds once the pool has doubled since the last sweep:
    /// catches what [`release`](Self::release) could not (an entry also held, at that moment,
    /// by a copy of the instance elsewhere). Amortised O(1) per insertion.
    fn maybe_sweep(&mut self) {
        if self.len() > (2 * self.swept_at).max(SWEEP_FLOOR) {
            self.sweep();
        }
    }

    /// Drops every entry nobody else holds.
    pub fn sweep(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.checks.retain(|c| Arc::strong_count(c) > 1);
        self.swept_at = self.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_and_writes_as_the_map_it_replaces() {
        let map: BTreeMap<String, String> = [("zone", "a"), ("b", "2"), ("a", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let meta = Metadata::from(map.clone());
        assert_eq!(
            serde_json::to_string(&meta).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&meta).unwrap(),
            r#"{"a":"1","b":"2","zone":"a"}"#
        );
        let back: Metadata = serde_json::from_str(r#"{"zone":"a","b":"2","a":"1"}"#).unwrap();
        assert_eq!(back, meta);
        assert_eq!(meta.get("b"), Some("2"));
        assert_eq!(meta.get("c"), None);
        let pairs: Vec<_> = meta.iter().collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2"), ("zone", "a")]);
        // A repeated key: the last value wins, as a map's would.
        let dup: Metadata = serde_json::from_str(r#"{"k":"1","j":"0","k":"2"}"#).unwrap();
        let as_map: BTreeMap<String, String> =
            serde_json::from_str(r#"{"k":"1","j":"0","k":"2"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&dup).unwrap(),
            serde_json::to_string(&as_map).unwrap()
        );
        assert_eq!(serde_json::to_string(&Metadata::new()).unwrap(), "{}");
    }

    #[test]
    fn equal_strings_and_checks_are_shared_and_released_when_unused() {
        let mut pool = Interner::new();
        let a = pool.string("eu-west-1a");
        let b = pool.string("eu-west-1a");
        assert!(Arc::ptr_eq(&a, &b));
        let ttl = CheckSpec {
            ttl: Some(crate::model::Dur(10_000)),
            ..CheckSpec::default()
        };
        let c1 = pool.check(&ttl);
        let c2 = pool.check(&ttl.clone());
        assert!(Arc::ptr_eq(&c1, &c2));
        assert_eq!(pool.len(), 2);
        drop((a, b, c1, c2));
        pool.sweep();
        assert!(pool.is_empty());
    }

    #[test]
    fn the_pool_is_swept_as_it_doubles() {
        let mut pool = Interner::new();
        let kept: Vec<Arc<str>> = (0..100).map(|n| pool.string(&format!("kept{n}"))).collect();
        for n in 0..100_000 {
            // Taken and dropped at once: garbage the sweeps must collect.
            pool.string(&format!("gone{n}"));
            assert!(pool.len() <= 2 * SWEEP_FLOOR + 1, "{}", pool.len());
        }
        pool.sweep();
        assert_eq!(pool.len(), kept.len());
    }
}
