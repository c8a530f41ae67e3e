//! Rendered answers to the most common reads: a service's instance list under a status filter,
//! each valid while the service's index is the one it was rendered at. Discovery traffic is
//! mostly repeats of the same read; listings and the watch stream's `reset` events answer from
//! here.
//!
//! A service's index moves with every change to it, and the same index always means the same
//! list (the log is applied in order everywhere), so a rendering is valid exactly while its
//! index is current.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::services::{ListQuery, StatusFilter};

/// The cache, one per router.
#[derive(Default)]
pub struct ListingCache {
    /// (service, variant) → (the index it was rendered at, the rendering).
    entries: Mutex<HashMap<(String, u8), (u64, Bytes)>>,
}

impl ListingCache {
    /// `service`'s list under `query` at `index`: from the cache, or made by `render` (and
    /// cached when the query is a plain status filter; tag-filtered reads are rendered every
    /// time).
    pub fn listing(
        &self,
        service: &str,
        query: &ListQuery,
        index: u64,
        render: impl FnOnce() -> Bytes,
    ) -> Bytes {
        let variant = match (query.tags.is_empty(), query.status) {
            (true, StatusFilter::Any) => 0,
            (true, StatusFilter::Only(s)) => 1 + s as u8,
            (false, _) => return render(),
        };
        let key = (service.to_string(), variant);
        if let Some((at, bytes)) = self.lock().get(&key) {
            if *at == index {
                return bytes.clone();
            }
        }
        let bytes = render();
        self.lock().insert(key, (index, bytes.clone()));
        bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u8), (u64, Bytes)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_rendered_once_per_index_and_filter() {
        let cache = ListingCache::default();
        let plain = ListQuery::parse(None).unwrap();
        let tagged = ListQuery::parse(Some("tag=a")).unwrap();
        let mut calls = 0;
        let mut render = |q: &ListQuery, index: u64| {
            cache.listing("web", q, index, || {
                calls += 1;
                Bytes::from(format!("{index}"))
            })
        };
        assert_eq!(render(&plain, 3), "3");
        assert_eq!(render(&plain, 3), "3");
        assert_eq!(render(&plain, 4), "4", "a new index renders again");
        render(&tagged, 4);
        render(&tagged, 4);
        assert_eq!(calls, 4, "tag-filtered reads are never cached");
    }
}
