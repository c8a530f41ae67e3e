//! The HTTP layer's rendered answers, so that what many clients are sent is serialised once.
//!
//! - [`ListingCache`]: a service's instance list under a status filter, each valid while the
//!   service's index is the one it was rendered at. Discovery traffic is mostly repeats of the
//!   same read; listings and the watch stream's `reset` events answer from here. A service's
//!   index moves with every change to it, and the same index always means the same list (the
//!   log is applied in order everywhere), so a rendering is valid exactly while its index is
//!   current.
//! - [`FrameCache`]: the watch stream's frames of each recent change (`add`, `update`,
//!   `remove`), rendered by the first watcher that sends each and shared by all the others, so
//!   ten thousand watchers of a service serialise a change once, not ten thousand times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

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
