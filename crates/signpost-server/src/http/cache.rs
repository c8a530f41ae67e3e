//! The HTTP layer's rendered answers, so that what many clients are sent is serialised once.
//!
//! - [`ListingCache`]: a service's instance list under a status filter, each valid while the
//!   service's index is the one it was rendered at. Discovery traffic is mostly repeats of the
//!   same read; listings and the watch stream's `reset` events answer from here. A service's
//!   index moves with every change to it, and the same index always means the same list (the
//!   log is applied in order everywhere), so a rendering is valid exactly while its index is
//!   current. Bounded whatever names clients ask for (as the Consul face's cache): an empty
//!   listing (an absent service, or nothing passes the filter) is never kept, since it costs
//!   nothing to make, and past [`MAX_LISTINGS`] renderings or [`MAX_LISTING_BYTES`] of them
//!   the cache starts over empty, which also drops the renderings of services since removed.
//! - [`FrameCache`]: the watch stream's frames of each recent change (`add`, `update`,
//!   `remove`), rendered by the first watcher that sends each and shared by all the others, so
//!   ten thousand watchers of a service serialise a change once, not ten thousand times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;

use super::services::{ListQuery, StatusFilter};

/// Renderings [`ListingCache`] holds at most; past it the cache starts over.
pub const MAX_LISTINGS: usize = 4096;
/// Bytes of renderings [`ListingCache`] holds at most; past it the cache starts over.
pub const MAX_LISTING_BYTES: usize = 64 << 20;

/// A rendered listing and how many instances it lists (an empty one is not kept).
pub type Rendered = (Bytes, usize);

/// The cache, one per router.
#[derive(Default)]
pub struct ListingCache {
    /// The renderings and their total size.
    entries: Mutex<Listings>,
}

/// [`ListingCache`]'s contents.
#[derive(Default)]
struct Listings {
    /// (service, variant) → (the index it was rendered at, the rendering).
    map: HashMap<(String, u8), (u64, Bytes)>,
    /// Bytes of every rendering in `map`.
    bytes: usize,
}

impl ListingCache {
    /// `service`'s list under `query` at `index`: from the cache, or made by `render` (and
    /// cached when the query is a plain status filter and the list is not empty; tag-filtered
    /// reads are rendered every time).
    pub fn listing(
        &self,
        service: &str,
        query: &ListQuery,
        index: u64,
        render: impl FnOnce() -> Rendered,
    ) -> Bytes {
        let variant = match (query.tags.is_empty(), query.status) {
            (true, StatusFilter::Any) => 0,
            (true, StatusFilter::Only(s)) => 1 + s as u8,
            (false, _) => return render().0,
        };
        let key = (service.to_string(), variant);
        if let Some((at, bytes)) = self.lock().map.get(&key) {
            if *at == index {
                return bytes.clone();
            }
        }
        let (bytes, listed) = render();
        if listed > 0 && bytes.len() <= MAX_LISTING_BYTES {
            self.lock().insert(key, index, bytes.clone());
        }
        bytes
    }

    /// Renderings held (for tests).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no rendering is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listings> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Listings {
    /// Keeps `bytes` as the rendering of `key` at `index`, in place of the one before; starts
    /// over first if the cache would go past its bounds.
    fn insert(&mut self, key: (String, u8), index: u64, bytes: Bytes) {
        if let Some((_, old)) = self.map.remove(&key) {
            self.bytes -= old.len();
        }
        if self.map.len() >= MAX_LISTINGS || self.bytes + bytes.len() > MAX_LISTING_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += bytes.len();
        self.map.insert(key, (index, bytes));
    }
}

/// Frames one change can be sent as: one per event name of the watch stream.
pub const FRAMES_PER_CHANGE: usize = 3;

/// Recent changes whose frames are kept. A watcher is at most
/// [`crate::store::WATCH_BUFFER`] changes of its service behind (then it gets a `reset`), and
/// watchers of a busy service are mostly at its latest change; one further behind than this
/// many changes of every service renders its own frame.
const FRAME_SLOTS: usize = 4096;

/// The frames of one change, each made the first time it is asked for.
type Frames = [OnceLock<Bytes>; FRAMES_PER_CHANGE];

/// One place of the ring: the change that holds it (its seq) and that change's frames.
type Slot = RwLock<Option<(u64, Arc<Frames>)>>;

/// The watch stream's frames of recent changes, one per router. Keyed by the change's
/// [`crate::service::Change::seq`] (changes can share a Raft index, never a `seq`), in a ring
/// of [`FRAME_SLOTS`]: slot `seq % FRAME_SLOTS` holds the frames of the latest change that
/// reached it.
pub struct FrameCache {
    /// The ring: (the change's seq, its frames).
    slots: Box<[Slot]>,
    /// Frames rendered so far (`signpost_watch_frames_rendered_total`): with every watcher
    /// sharing, this grows with changes, not with watchers.
    renders: AtomicU64,
}

impl Default for FrameCache {
    fn default() -> Self {
        FrameCache {
            slots: (0..FRAME_SLOTS).map(|_| RwLock::new(None)).collect(),
            renders: AtomicU64::new(0),
        }
    }
}

impl FrameCache {
    /// Frame number `frame` (below [`FRAMES_PER_CHANGE`]) of change `seq`: the one rendered
    /// already, or made by `render` now. Every caller asking for one frame of one change must
    /// render it the same way.
    pub fn frame(&self, seq: u64, frame: usize, render: impl FnOnce() -> Bytes) -> Bytes {
        let render = || {
            self.renders.fetch_add(1, Ordering::Relaxed);
            render()
        };
        match self.frames(seq) {
            Some(frames) => frames[frame].get_or_init(render).clone(),
            // A later change has taken the slot: this watcher is far behind; it renders alone.
            None => render(),
        }
    }

    /// The frames of change `seq`, claiming its slot if an older change holds it; `None` if
    /// a later one does.
    fn frames(&self, seq: u64) -> Option<Arc<Frames>> {
        let slot = &self.slots[(seq % FRAME_SLOTS as u64) as usize];
        match &*slot.read().unwrap_or_else(|e| e.into_inner()) {
            Some((at, frames)) if *at == seq => return Some(frames.clone()),
            Some((at, _)) if *at > seq => return None,
            _ => {}
        }
        let mut slot = slot.write().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((at, frames)) if *at == seq => Some(frames.clone()),
            Some((at, _)) if *at > seq => None,
            _ => {
                let frames = Arc::new(Frames::default());
                *slot = Some((seq, frames.clone()));
                Some(frames)
            }
        }
    }

    /// How many frames have been rendered, for metrics and tests.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
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
                (Bytes::from(format!("{index}")), 1)
            })
        };
        assert_eq!(render(&plain, 3), "3");
        assert_eq!(render(&plain, 3), "3");
        assert_eq!(render(&plain, 4), "4", "a new index renders again");
        render(&tagged, 4);
        render(&tagged, 4);
        assert_eq!(calls, 4, "tag-filtered reads are never cached");
    }

    #[test]
    fn an_empty_listing_is_not_kept() {
        let cache = ListingCache::default();
        let plain = ListQuery::parse(None).unwrap();
        let mut calls = 0;
        for _ in 0..2 {
            let body = cache.listing("absent", &plain, 5, || {
                calls += 1;
                (Bytes::from("[]"), 0)
            });
            assert_eq!(body, "[]");
        }
        assert_eq!(calls, 2, "rendered each time: cheap, and not worth a place");
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded_whatever_names_are_asked_for() {
        let cache = ListingCache::default();
        let plain = ListQuery::parse(None).unwrap();
        // Many names, each listed once (services that came and went): never more than the
        // bound held.
        for n in 0..3 * MAX_LISTINGS {
            cache.listing(&format!("churn-{n}"), &plain, 7, || (Bytes::from("[x]"), 1));
            assert!(cache.len() <= MAX_LISTINGS, "{}", cache.len());
        }
        // A listing too large to hold is answered, not kept; big ones start the cache over.
        let huge = Bytes::from(vec![b'x'; MAX_LISTING_BYTES + 1]);
        assert_eq!(
            cache.listing("huge", &plain, 7, || (huge.clone(), 1)).len(),
            huge.len()
        );
        let half = Bytes::from(vec![b'x'; MAX_LISTING_BYTES / 2 + 1]);
        cache.listing("big-a", &plain, 7, || (half.clone(), 1));
        cache.listing("big-b", &plain, 7, || (half.clone(), 1));
        assert_eq!(
            cache.len(),
            1,
            "the second big rendering started the cache over"
        );
        assert!(cache.lock().bytes <= MAX_LISTING_BYTES);
    }

    #[test]
    fn a_frame_is_rendered_once_per_change_and_shared() {
        let cache = FrameCache::default();
        let frame = |seq: u64, n: usize| cache.frame(seq, n, || Bytes::from(format!("{n}@{seq}")));
        assert_eq!(frame(7, 0), "0@7");
        assert_eq!(frame(7, 0), "0@7");
        assert_eq!(
            cache.renders(),
            1,
            "the second watcher shares the first's frame"
        );
        assert_eq!(
            frame(7, 2),
            "2@7",
            "another frame of the change renders its own"
        );
        assert_eq!(frame(8, 0), "0@8", "so does another change");
        assert_eq!(cache.renders(), 3);
    }

    #[test]
    fn a_watcher_behind_the_ring_renders_its_own_frame() {
        let cache = FrameCache::default();
        let late = 5 + FRAME_SLOTS as u64;
        assert_eq!(cache.frame(late, 1, || Bytes::from("late")), "late");
        // Change 5's slot now belongs to a later change: 5 is rendered, and not cached over it.
        assert_eq!(cache.frame(5, 1, || Bytes::from("early")), "early");
        assert_eq!(cache.frame(5, 1, || Bytes::from("early")), "early");
        assert_eq!(cache.frame(late, 1, || Bytes::from("other")), "late");
        assert_eq!(cache.renders(), 3);
    }
}
