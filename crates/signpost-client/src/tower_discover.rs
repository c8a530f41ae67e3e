//! A [`tower::discover::Discover`] over discovered instances, so a tower stack — for example
//! `tower::balance::p2c::Balance` — can balance over them.
//!
//! [`InstanceDiscover`] follows a stream of [`Update`]s (a [`ServiceWatch`]'s
//! [`changes`](ServiceWatch::changes), or any registry's watch) and turns each into tower's
//! changes: `Add` → `Insert(id, service)` (the service made by your closure), `Remove` →
//! `Remove(id)`, `Update` → `Remove` + `Insert` of the changed instance. A `Reset` replaces the
//! whole set: `Remove` for every instance it no longer lists, `Remove` + `Insert` for every one
//! that changed, `Insert` for every new one; instances that stay as they were are left alone.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use tower::balance::p2c::Balance;
//! use tower::load::{CompleteOnResponse, PendingRequests};
//! use tower::{service_fn, Service, ServiceExt};
//! use signpost_client::tower_discover::InstanceDiscover;
//!
//! # async fn run(users: signpost_client::ServiceWatch) -> Result<(), tower::BoxError> {
//! let discover = InstanceDiscover::from_watch(&users, |instance| {
//!     let base = instance.base_url();
//!     let svc = service_fn(move |path: String| {
//!         let url = format!("{base}{path}");
//!         async move { Ok::<_, Infallible>(url) } // a real stack would send the request here
//!     });
//!     PendingRequests::new(svc, CompleteOnResponse::default())
//! });
//! let mut balance = Balance::new(discover);
//! let url = balance.ready().await?.call("/users/1".to_string()).await?;
//! println!("would call {url}");
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tower::discover::Change;

use crate::discovery::ServiceWatch;
use crate::instance::{Instance, Update};

/// A `tower` discover stream of a service's instances; see the [module docs](self).
///
/// It yields `Result<Change<String, S>, Infallible>` keyed by instance id, which makes it a
/// [`tower::discover::Discover`]. It ends when its stream of updates ends (for discovery: when
/// the discovery task is gone).
///
/// ```
/// use futures::StreamExt;
/// use tower::discover::Change;
/// use signpost_client::tower_discover::InstanceDiscover;
/// use signpost_client::Update;
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (tx, rx) = futures::channel::mpsc::unbounded();
/// tx.unbounded_send(Update::Reset { index: 1, instances: vec![mk("a")] }).unwrap();
/// let mut discover = InstanceDiscover::new(rx, |i| i.base_url());
/// match discover.next().await {
///     Some(Ok(Change::Insert(id, url))) => assert_eq!((id.as_str(), url.as_str()), ("a", "http://127.0.0.1:1")),
///     _ => unreachable!(),
/// }
/// tx.unbounded_send(Update::Remove { index: 2, id: "a".into() }).unwrap();
/// assert!(matches!(discover.next().await, Some(Ok(Change::Remove(id))) if id == "a"));
/// # });
/// ```
pub struct InstanceDiscover<F, S> {
    /// The updates.
    updates: BoxStream<'static, Update>,
    /// Makes the service for a new instance.
    make: F,
    /// The instances inserted so far, by id (what a `Reset` is compared with).
    known: HashMap<String, Instance>,
    /// Changes computed from the last update, not yet yielded.
    pending: VecDeque<Change<String, S>>,
}

impl<F, S> InstanceDiscover<F, S>
where
    F: FnMut(&Instance) -> S,
{
    /// Follows `updates`; `make` builds the service of each new instance.
    pub fn new(updates: impl Stream<Item = Update> + Send + 'static, make: F) -> Self {
        InstanceDiscover {
            updates: updates.boxed(),
            make,
            known: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// Follows a discovery [`ServiceWatch`]'s changes.
    pub fn from_watch(watch: &ServiceWatch, make: F) -> Self {
        Self::new(watch.changes(), make)
    }

    /// The instances currently inserted, by id.
    pub fn instances(&self) -> &HashMap<String, Instance> {
        &self.known
    }

    /// Queues the changes `update` makes.
    fn apply(&mut self, update: Update) {
        match update {
            Update::Reset { instances, .. } => {
                let listed: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
                let gone: Vec<String> = self
                    .known
                    .keys()
                    .filter(|id| !listed.contains(id.as_str()))
                    .cloned()
                    .collect();
                for id in gone {
                    self.remove(&id);
                }
                for instance in instances {
                    self.upsert(instance);
                }
            }
            Update::Add { instance, .. } | Update::Update { instance, .. } => self.upsert(instance),
            Update::Remove { id, .. } => self.remove(&id),
        }
    }

    /// Inserts `instance`, replacing the known one of its id if it differs.
    fn upsert(&mut self, instance: Instance) {
        match self.known.get(&instance.id) {
            Some(old) if *old == instance => return,
            Some(_) => self.pending.push_back(Change::Remove(instance.id.clone())),
            None => {}
        }
        let service = (self.make)(&instance);
        self.pending
            .push_back(Change::Insert(instance.id.clone(), service));
        self.known.insert(instance.id.clone(), instance);
    }

    /// Removes instance `id`, if it is known.
    fn remove(&mut self, id: &str) {
        if self.known.remove(id).is_some() {
            self.pending.push_back(Change::Remove(id.to_string()));
        }
    }
}

// Nothing is ever pinned in place: the stream moves its fields freely.
impl<F, S> Unpin for InstanceDiscover<F, S> {}

impl<F, S> Stream for InstanceDiscover<F, S>
where
    F: FnMut(&Instance) -> S,
{
    type Item = Result<Change<String, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match this.updates.poll_next_unpin(cx) {
                Poll::Ready(Some(update)) => this.apply(update),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<F, S> std::fmt::Debug for InstanceDiscover<F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceDiscover")
            .field("instances", &self.known.keys().collect::<Vec<_>>())
            .field("pending", &self.pending.len())
            .finish()
    }
}
