//! [`Endpoints`]: one published instance list, with the version that names it.
//!
//! Discovery publishes each new list of a service as an `Arc<Endpoints>`; everything that keeps
//! state derived from a list (the [`Selector`](crate::selector::Selector)'s per-endpoint state,
//! the gateway's upstreams) notices a new list by comparing [`Endpoints::version`], never by
//! comparing addresses. Versions come from one process-wide counter, so two lists built
//! separately (two discoveries, a fixed list and a discovered one) never share a version, and a
//! list republished with the same contents gets a new version.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::instance::Instance;

/// The next version handed out (0 is never used, so a fresh cache of version 0 always misses).
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// A published list of a service's instances, sorted as its publisher sorted it (discovery sorts
/// by id), with the version that identifies this very list.
///
/// Dereferences to `[Instance]`, so `endpoints.len()`, `endpoints.iter()` and `endpoints[i]`
/// read the list.
///
/// ```
/// use signpost_client::endpoints::Endpoints;
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let first = Endpoints::new(7, vec![mk("a")]);
/// let again = Endpoints::new(7, vec![mk("a")]);
/// assert_eq!(first.len(), 1);
/// assert_ne!(first.version(), again.version()); // same contents, another list
/// assert_eq!(first.index(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Names this list: unique in the process, growing with every list made.
    version: u64,
    /// The registry index the list reflects (0 when unknown, e.g. a fixed list).
    index: u64,
    /// The instances.
    instances: Vec<Instance>,
}

impl Endpoints {
    /// A new list at registry index `index`, with a version of its own.
    pub fn new(index: u64, instances: Vec<Instance>) -> Self {
        Endpoints {
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            index,
            instances,
        }
    }

    /// An empty list (what a service has before anything is known).
    pub fn empty() -> Self {
        Self::new(0, Vec::new())
    }

    /// The version naming this list: equal versions mean the very same list.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The registry index the list reflects.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The instances.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }
}

impl Deref for Endpoints {
    type Target = [Instance];

    fn deref(&self) -> &[Instance] {
        &self.instances
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::empty()
    }
}
