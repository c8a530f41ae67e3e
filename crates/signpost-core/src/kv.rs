//! The key/value store for configuration, replicated beside the registry.
//!
//! Keys are `/`-separated paths without a leading `/`. Every write records its log index; deletes
//! leave a tombstone holding the index of the delete, so that the index of a key or prefix (what
//! blocking queries compare against) moves when something under it is removed, and only then.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validate::ValidationError;

/// Largest value accepted, as in Consul.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 512;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
    /// Opaque client flags.
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    /// Number of times a lock was acquired on this key (sessions are not supported: always 0).
    pub lock_index: u64,
}

/// The KV state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "KvRepr")]
pub struct Kv {
    entries: BTreeMap<String, KvEntry>,
    /// Deleted keys and the index of their deletion.
    tombstones: BTreeMap<String, u64>,
    /// When (proposal time, ms) each tombstone was made, so that it can be reaped after the
    /// tombstone TTL. Tombstones from before this existed have none and are reaped first.
    #[serde(default)]
    tombstone_times: BTreeMap<String, u64>,
    /// `(time, key)` of every timed tombstone, oldest first: what [`Kv::reap`] walks.
    #[serde(default)]
    reap_order: std::collections::BTreeSet<(u64, String)>,
    /// The highest deletion index of a reaped tombstone: a floor for the index of any absent key
    /// or prefix, so an index never moves backwards when a tombstone goes.
    #[serde(default)]
    reaped_index: u64,
    /// Bytes of live keys and values (not stored in snapshots: counted again on restore).
    #[serde(skip)]
    bytes: usize,
}

/// [`Kv`] as stored: everything but the byte count, which is counted again on restore.
#[derive(Deserialize)]
struct KvRepr {
    entries: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, u64>,
    #[serde(default)]
    tombstone_times: BTreeMap<String, u64>,
    #[serde(default)]
    reap_order: std::collections::BTreeSet<(u64, String)>,
    #[serde(default)]
    reaped_index: u64,
}

impl From<KvRepr> for Kv {
    fn from(r: KvRepr) -> Self {
        let bytes = r.entries.values().map(|e| cost(&e.key, &e.value)).sum();
        Kv {
            entries: r.entries,
            tombstones: r.tombstones,
            tombstone_times: r.tombstone_times,
            reap_order: r.reap_order,
            reaped_index: r.reaped_index,
            bytes,
        }
    }
}

/// The keys under a prefix, in order.
fn under<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl PartialEq for Kv {
    fn eq(&self, other: &Self) -> bool {
        // The byte count is a cache, not state.
        self.entries == other.entries
            && self.tombstones == other.tombstones
            && self.tombstone_times == other.tombstone_times
            && self.reap_order == other.reap_order
            && self.reaped_index == other.reaped_index
    }
}

impl Eq for Kv {}

/// What a live key costs toward `limits.max_kv_bytes`.
fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl Kv {
    /// Bytes of live keys and values (what `limits.max_kv_bytes` bounds).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adjusts the byte count by `+add - sub`.
    fn account(&mut self, add: usize, sub: usize) {
        self.bytes = (self.bytes + add).saturating_sub(sub);
    }

    /// Number of tombstones kept.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// Removes the tombstones made at or before `cutoff` (proposal time, ms), and those without
    /// a time. Returns how many went.
    pub fn reap(&mut self, cutoff: u64) -> usize {
        let mut reaped = 0;
        let untimed: Vec<String> = if self.tombstones.len() > self.tombstone_times.len() {
            self.tombstones
                .keys()
                .filter(|k| !self.tombstone_times.contains_key(*k))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        for k in untimed {
            if let Some(i) = self.tombstones.remove(&k) {
                self.reaped_index = self.reaped_index.max(i);
                reaped += 1;
            }
        }
        while let Some((t, _)) = self.reap_order.first() {
            if *t > cutoff {
                break;
            }
            let (_, key) = self.reap_order.pop_first().expect("first exists");
            self.tombstone_times.remove(&key);
            if let Some(i) = self.tombstones.remove(&key) {
                self.reaped_index = self.reaped_index.max(i);
                reaped += 1;
            }
        }
        reaped
    }

    /// Forgets `key`'s tombstone time (it was written again, or deleted again).
    fn untime(&mut self, key: &str) {
        if let Some(t) = self.tombstone_times.remove(key) {
            self.reap_order.remove(&(t, key.to_string()));
        }
    }

    /// Checks the KV's own indexes agree: every tombstone time is in the reap order and back.
    pub fn check_consistency(&self) -> Result<(), String> {
        if self.reap_order.len() != self.tombstone_times.len() {
            return Err("reap order and tombstone times differ in size".into());
        }
        for (t, k) in &self.reap_order {
            if self.tombstone_times.get(k) != Some(t) {
                return Err(format!("reap order names {k:?} at {t}, times disagree"));
            }
            if !self.tombstones.contains_key(k) {
                return Err(format!("timed tombstone {k:?} has no tombstone"));
            }
        }
        for k in self.entries.keys() {
            if self.tombstones.contains_key(k) {
                return Err(format!("{k:?} is both live and a tombstone"));
            }
        }
        let bytes: usize = self.entries.values().map(|e| cost(&e.key, &e.value)).sum();
        if self.bytes() != bytes {
            return Err(format!("byte count {} but {bytes} live", self.bytes()));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        under(&self.entries, prefix).map(|(_, e)| e)
    }

    /// The index a read of `key` (or, with `recurse`, of everything under it) reflects: the
    /// latest write or delete that touched it; at least 1.
    pub fn index(&self, key: &str, recurse: bool) -> u64 {
        let idx = if recurse {
            let live = under(&self.entries, key).map(|(_, e)| e.modify_index).max();
            let dead = under(&self.tombstones, key).map(|(_, i)| *i).max();
            live.max(dead)
        } else {
            self.entries
                .get(key)
                .map(|e| e.modify_index)
                .or_else(|| self.tombstones.get(key).copied())
        };
        idx.unwrap_or(0).max(self.reaped_index).max(1)
    }

    /// Sets `key`. With `cas`, only if the key's modify index equals it (0: only if absent).
    /// Returns whether the write happened.
    pub fn set(
        &mut self,
        index: u64,
        key: &str,
        value: &[u8],
        flags: u64,
        cas: Option<u64>,
    ) -> bool {
        let existing = self.entries.get(key);
        if let Some(cas) = cas {
            let current = existing.map_or(0, |e| e.modify_index);
            if current != cas {
                return false;
            }
        }
        let entry = KvEntry {
            key: key.to_string(),
            value: value.to_vec(),
            flags,
            create_index: existing.map_or(index, |e| e.create_index),
            modify_index: index,
            lock_index: existing.map_or(0, |e| e.lock_index),
        };
        let old_cost = existing.map_or(0, |e| cost(&e.key, &e.value));
        self.account(cost(key, value), old_cost);
        self.tombstones.remove(key);
        self.untime(key);
        self.entries.insert(key.to_string(), entry);
        true
    }

    /// Whether setting `key` to `value` would cross `max_keys` or `max_bytes`: the limit's name
    /// and value, if so.
    pub fn over_limit(
        &self,
        key: &str,
        value: &[u8],
        max_keys: usize,
        max_bytes: usize,
    ) -> Option<(&'static str, usize)> {
        let existing = self.entries.get(key);
        if existing.is_none() && self.entries.len() >= max_keys {
            return Some(("max_kv_keys", max_keys));
        }
        let after = (self.bytes() + cost(key, value))
            .saturating_sub(existing.map_or(0, |e| cost(&e.key, &e.value)));
        (after > max_bytes && after > self.bytes()).then_some(("max_kv_bytes", max_bytes))
    }

    /// Deletes `key` (or everything under it with `recurse`). With `cas` (single key only), only
    /// if the key's modify index equals it. Returns whether the delete was allowed, and the keys
    /// removed.
    pub fn delete(
        &mut self,
        index: u64,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> (bool, Vec<String>) {
        self.delete_at(index, 0, key, recurse, cas)
    }

    /// [`delete`](Self::delete) at proposal time `now` (ms): the tombstones it leaves are
    /// reaped by [`reap`](Self::reap) once their TTL has passed.
    pub fn delete_at(
        &mut self,
        index: u64,
        now: u64,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
    ) -> (bool, Vec<String>) {
        if let Some(cas) = cas {
            let current = self.entries.get(key).map_or(0, |e| e.modify_index);
            if recurse || current != cas {
                return (false, Vec::new());
            }
        }
        let keys: Vec<String> = if recurse {
            under(&self.entries, key).map(|(k, _)| k.clone()).collect()
        } else {
            self.entries
                .get(key)
                .map(|e| e.key.clone())
                .into_iter()
                .collect()
        };
        for k in &keys {
            if let Some(e) = self.entries.remove(k) {
                self.account(0, cost(&e.key, &e.value));
            }
            self.tombstones.insert(k.clone(), index);
            self.untime(k);
            self.tombstone_times.insert(k.clone(), now);
            self.reap_order.insert((now, k.clone()));
        }
        (true, keys)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Checks a KV key: 1–512 bytes, no leading `/`, no control characters. The error names the
/// field `key`.
pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    let err = |m: String| Err(ValidationError::new("key", m));
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return err(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        ));
    }
    if key.starts_with('/') {
        return err(format!("key {key:?} must not start with '/'"));
    }
    if key.chars().any(char::is_control) {
        return err(format!("key {key:?} contains a control character"));
    }
    Ok(())
}

/// Serialises bytes as standard base64 text (as Consul's KV API does).
pub mod base64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_indexes() {
        let mut kv = Kv::default();
        assert!(kv.set(5, "app/db/url", b"postgres://", 7, None));
        let e = kv.get("app/db/url").unwrap();
        assert_eq!((e.create_index, e.modify_index, e.flags), (5, 5, 7));
        assert!(kv.set(9, "app/db/url", b"postgres://new", 0, None));
        let e = kv.get("app/db/url").unwrap();
        assert_eq!((e.create_index, e.modify_index), (5, 9));
        assert_eq!(kv.index("app/db/url", false), 9);
        assert_eq!(kv.index("app/", true), 9);
        assert_eq!(
            kv.index("other/", true),
            1,
            "never-written prefixes have index 1"
        );
    }

    #[test]
    fn cas_only_writes_on_matching_index() {
        let mut kv = Kv::default();
        assert!(
            kv.set(3, "k", b"a", 0, Some(0)),
            "cas 0 creates an absent key"
        );
        assert!(
            !kv.set(4, "k", b"b", 0, Some(0)),
            "cas 0 fails when present"
        );
        assert!(!kv.set(4, "k", b"b", 0, Some(2)));
        assert!(kv.set(4, "k", b"b", 0, Some(3)));
        assert_eq!(kv.get("k").unwrap().value, b"b");
        assert_eq!(kv.delete(5, "k", false, Some(3)), (false, vec![]));
        assert_eq!(
            kv.delete(5, "k", false, Some(4)),
            (true, vec!["k".to_string()])
        );
    }

    #[test]
    fn deletes_leave_tombstones_that_move_prefix_indexes() {
        let mut kv = Kv::default();
        kv.set(2, "a/1", b"x", 0, None);
        kv.set(3, "a/2", b"x", 0, None);
        kv.set(4, "b/1", b"x", 0, None);
        let (ok, keys) = kv.delete(6, "a/", true, None);
        assert!(ok);
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(kv.list("a/").count(), 0);
        assert_eq!(kv.index("a/", true), 6, "the delete moves a/'s index");
        assert_eq!(kv.index("a/1", false), 6);
        assert_eq!(kv.index("b/", true), 4, "b/ is untouched");
        kv.set(7, "a/1", b"y", 0, None);
        assert_eq!(
            kv.get("a/1").unwrap().create_index,
            7,
            "a recreated key starts afresh"
        );
    }

    #[test]
    fn list_is_prefix_ordered() {
        let mut kv = Kv::default();
        for (i, k) in ["x/b", "x/a", "xy", "x/c/d"].iter().enumerate() {
            kv.set(i as u64 + 1, k, b"", 0, None);
        }
        let keys: Vec<&str> = kv.list("x/").map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["x/a", "x/b", "x/c/d"]);
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("app/config").is_ok());
        assert_eq!(validate_key("").unwrap_err().field, "key");
        assert!(validate_key("/abs").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key(&"k".repeat(513)).is_err());
    }

    #[test]
    fn values_serialise_as_base64() {
        let e = KvEntry {
            key: "k".into(),
            value: b"hello".to_vec(),
            flags: 0,
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["value"], "aGVsbG8=");
        assert_eq!(serde_json::from_value::<KvEntry>(json).unwrap(), e);
    }
}
