//! The Consul face's rendered per-service reads, so that what many clients poll is serialised
//! once: `/v1/health/service/:name` (with or without `?passing`) and `/v1/catalog/service/:name`,
//! each under its `?tag=` filter, rendered once per (service, read, filter, index) and shared
//! as [`Bytes`] by every request that asks for the same thing, blocking queries woken by the
//! same change included. As with the native face's `ListingCache`, a rendering is valid
//! exactly while its service's index is the one it was rendered at.
//!
//! Sharing is safe across callers because a service's listing is all or nothing under ACLs
//! (`service:read` on the service): the handler takes a rendering from here only for a caller
//! who may read the service, and one who may not is answered an empty, filtered listing that
//! is never cached.
//!
//! Bounded whatever names and filters clients send: a service with no instances is never
//! cached (its empty answer costs nothing to make), and when the cache holds more than
//! [`MAX_ENTRIES`] renderings or [`MAX_BYTES`] of them it starts over empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// Renderings held at most; past it the cache starts over.
pub const MAX_ENTRIES: usize = 4096;
/// Bytes of renderings held at most; past it the cache starts over.
pub const MAX_BYTES: usize = 64 << 20;

/// Which per-service read a rendering answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Read {
    /// `/v1/catalog/service/:name`: every instance, flat.
    Catalog,
    /// `/v1/health/service/:name`: nested entries, any health.
    Health,
    /// `/v1/health/service/:name?passing`.
    HealthPassing,
}

/// What a rendering is of: the service, the read, and the tags it is filtered by (sorted and
/// without repeats, since their order and repeats do not change the answer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The service.
    pub service: String,
    /// The read.
    pub read: Read,
    /// `?tag=` values, sorted, deduplicated.
    pub tags: Vec<String>,
}

impl Key {
    /// The key of `read` of `service` filtered by `tags` (in any order, repeats allowed).
    pub fn new(service: &str, read: Read, tags: &[String]) -> Self {
        let mut tags = tags.to_vec();
        tags.sort_unstable();
        tags.dedup();
        Key {
            service: service.to_string(),
            read,
            tags,
        }
    }
}

/// One rendering: the index it is of, and its bytes once the first request that needed them
/// has made them (every other request at that index waits for those, not rendering its own).
#[derive(Debug)]
pub struct Slot {
    /// The service's index the rendering is of.
    index: u64,
    /// The rendering, made once.
    bytes: OnceCell<Bytes>,
    /// Whether its size is in [`RenderCache`]'s byte count (set under the map's lock).
    counted: AtomicBool,
}

impl Slot {
    /// The service's index this slot renders.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The rendering, if made already.
    pub fn ready(&self) -> Option<Bytes> {
        self.bytes.get().cloned()
    }
}

/// The entries and the bytes they hold, under one lock.
#[derive(Debug, Default)]
struct Entries {
    /// What each rendering is of → its slot.
    map: HashMap<Key, Arc<Slot>>,
    /// Bytes of the renderings counted in `map`.
    bytes: usize,
}

/// The cache, one per router.
#[derive(Debug, Default)]
pub struct RenderCache {
    /// The renderings.
    entries: Mutex<Entries>,
    /// Renderings made so far (through this cache): grows with changes, not with requests.
    renders: AtomicU64,
}

impl RenderCache {
    /// The slot of `key` at `index`: the one held already, or a new one in its place. `None`
    /// when a later rendering holds the key (a read that raced a change answers alone).
    /// Called while the state is read-locked, so the index is the current one.
    pub fn slot(&self, key: &Key, index: u64) -> Option<Arc<Slot>> {
        let mut entries = self.lock();
        if let Some(slot) = entries.map.get(key) {
            if slot.index == index {
                return Some(slot.clone());
            }
            if slot.index > index {
                return None;
            }
        }
        if entries.map.len() >= MAX_ENTRIES {
            entries.map.clear();
            entries.bytes = 0;
        }
        let slot = Arc::new(Slot {
            index,
            bytes: OnceCell::new(),
            counted: AtomicBool::new(false),
        });
        if let Some(old) = entries.map.insert(key.clone(), slot.clone()) {
            entries.uncount(&old);
        }
        Some(slot)
    }

    /// The rendering of `slot` (of `key`): the one made already, or made now by `render`,
    /// which returns `None` if it can no longer render the slot's index (the service moved
    /// on meanwhile); then this returns `None` too and the caller answers alone.
    pub async fn rendering<F, Fut>(&self, key: &Key, slot: &Arc<Slot>, render: F) -> Option<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Bytes>>,
    {
        let bytes = slot
            .bytes
            .get_or_try_init(|| async {
                let bytes = render().await.ok_or(())?;
                self.renders.fetch_add(1, Ordering::Relaxed);
                Ok::<_, ()>(bytes)
            })
            .await
            .ok()?
            .clone();
        if !slot.counted.load(Ordering::Relaxed) {
            self.count(key, slot, bytes.len());
        }
        Some(bytes)
    }

    /// Adds a newly made rendering's size to the count, if its slot is still held, and starts
    /// over when the renderings outgrow [`MAX_BYTES`].
    fn count(&self, key: &Key, slot: &Arc<Slot>, len: usize) {
        let mut entries = self.lock();
        let held = entries.map.get(key).is_some_and(|s| Arc::ptr_eq(s, slot));
        if !held || slot.counted.swap(true, Ordering::Relaxed) {
            return;
        }
        entries.bytes += len;
        if entries.bytes > MAX_BYTES {
            entries.map.clear();
            entries.bytes = 0;
        }
    }

    /// How many renderings have been made, for tests and metrics.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// Renderings held and their bytes, for tests.
    pub fn held(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.map.len(), entries.bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Entries {
    /// Takes a slot leaving the map out of the byte count.
    fn uncount(&mut self, slot: &Slot) {
        if slot.counted.swap(false, Ordering::Relaxed) {
            self.bytes -= slot.bytes.get().map_or(0, Bytes::len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(cache: &RenderCache, key: &Key, index: u64, body: &str) -> Option<Bytes> {
        let slot = cache.slot(key, index)?;
        let body = Bytes::from(body.to_string());
        cache
            .rendering(key, &slot, || async move { Some(body) })
            .await
    }

    #[tokio::test]
    async fn one_rendering_per_key_and_index() {
        let cache = RenderCache::default();
        let plain = Key::new("web", Read::Health, &[]);
        assert_eq!(get(&cache, &plain, 3, "a").await.unwrap(), "a");
        assert_eq!(get(&cache, &plain, 3, "b").await.unwrap(), "a", "shared");
        assert_eq!(cache.renders(), 1);
        assert_eq!(get(&cache, &plain, 4, "c").await.unwrap(), "c", "new index");
        let passing = Key::new("web", Read::HealthPassing, &[]);
        assert_eq!(get(&cache, &passing, 4, "p").await.unwrap(), "p");
        let tagged = Key::new("web", Read::Health, &["b".into(), "a".into(), "a".into()]);
        assert_eq!(get(&cache, &tagged, 4, "t").await.unwrap(), "t");
        let same = Key::new("web", Read::Health, &["a".into(), "b".into()]);
        assert_eq!(get(&cache, &same, 4, "u").await.unwrap(), "t", "tag order");
        assert_eq!(cache.renders(), 4);
        assert_eq!(cache.held(), (3, 3));
        assert!(
            cache.slot(&plain, 3).is_none(),
            "an older index is not cached"
        );
    }

    #[tokio::test]
    async fn a_rendering_that_cannot_be_made_is_not_cached() {
        let cache = RenderCache::default();
        let key = Key::new("web", Read::Catalog, &[]);
        let slot = cache.slot(&key, 5).unwrap();
        assert!(cache
            .rendering(&key, &slot, || async { None })
            .await
            .is_none());
        assert_eq!(get(&cache, &key, 5, "x").await.unwrap(), "x");
    }

    #[tokio::test]
    async fn the_cache_starts_over_past_its_bounds() {
        let cache = RenderCache::default();
        for n in 0..MAX_ENTRIES {
            let key = Key::new(&format!("s{n}"), Read::Catalog, &[]);
            get(&cache, &key, 1, "x").await.unwrap();
        }
        assert_eq!(cache.held(), (MAX_ENTRIES, MAX_ENTRIES));
        get(&cache, &Key::new("one-more", Read::Catalog, &[]), 1, "x").await;
        assert_eq!(cache.held(), (1, 1));
        let big = "x".repeat(MAX_BYTES / 2 + 1);
        get(&cache, &Key::new("a", Read::Catalog, &[]), 1, &big).await;
        assert_eq!(cache.held().0, 2);
        get(&cache, &Key::new("b", Read::Catalog, &[]), 1, &big).await;
        assert_eq!(cache.held(), (0, 0), "over the byte bound");
    }
}
