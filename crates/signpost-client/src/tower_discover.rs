//! A [`tower::discover::Discover`] over discovered instances, so a tower stack — for example
//! `tower::balance::p2c::Balance` — can balance over them.
//!
//! [`InstanceDiscover`] follows a stream of instance lists (a [`ServiceWatch`]'s
//! [`updates`](ServiceWatch::updates)) and turns each new list into changes: `Insert(id,
//! service)` for every new instance (the service made by your closure), `Remove(id)` for every
//! instance gone, and `Remove` + `Insert` for an instance whose address, tags, metadata or
//! weight changed.
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

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use crate::discovery::ServiceWatch;
use crate::instance::Instance;

/// A `tower` discover stream of a service's instances; see the [module docs](self).
///
/// It yields `Result<Change<String, S>, Infallible>` keyed by instance id, which makes it a
/// [`tower::discover::Discover`]. It ends when the list's sender (the discovery task) is gone.
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use tower::discover::Change;
/// use signpost_client::tower_discover::InstanceDiscover;
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100 };
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (tx, rx) = tokio::sync::watch::channel(Arc::new(vec![mk("a")]));
/// let mut discover = InstanceDiscover::new(rx, |i| i.base_url());
/// match discover.next().await {
///     Some(Ok(Change::Insert(id, url))) => assert_eq!((id.as_str(), url.as_str()), ("a", "http://127.0.0.1:1")),
///     _ => unreachable!(),
/// }
/// tx.send(Arc::new(vec![])).unwrap();
/// assert!(matches!(discover.next().await, Some(Ok(Change::Remove(id))) if id == "a"));
/// # });
/// ```
pub struct InstanceDiscover<F, S> {
    /// The lists, the current one first.
    lists: WatchStream<Arc<Vec<Instance>>>,
    /// Makes the service for a new instance.
    make: F,
    /// The instances inserted so far, by id (to diff the next list against).
    known: HashMap<String, Instance>,
    /// Changes computed from the last list, not yet yielded.
    pending: VecDeque<Change<String, S>>,
}

impl<F, S> InstanceDiscover<F, S>
where
    F: FnMut(&Instance) -> S,
{
    /// Follows the lists of `updates`; `make` builds the service of each new instance.
    pub fn new(updates: watch::Receiver<Arc<Vec<Instance>>>, make: F) -> Self {
        InstanceDiscover {
            lists: WatchStream::new(updates),
            make,
            known: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// Follows a discovery [`ServiceWatch`].
    pub fn from_watch(watch: &ServiceWatch, make: F) -> Self {
        Self::new(watch.updates(), make)
    }

    /// The instances currently inserted, by id.
    pub fn instances(&self) -> &HashMap<String, Instance> {
        &self.known
    }

    /// Queues the changes that turn `known` into `list`.
    fn diff(&mut self, list: &[Instance]) {
        let current: HashMap<&str, &Instance> = list.iter().map(|i| (i.id.as_str(), i)).collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|id| !current.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.known.remove(&id);
            self.pending.push_back(Change::Remove(id));
        }
        for instance in list {
            match self.known.get(&instance.id) {
                Some(old) if old == instance => continue,
                Some(_) => self.pending.push_back(Change::Remove(instance.id.clone())),
                None => {}
            }
            let service = (self.make)(instance);
            self.known.insert(instance.id.clone(), instance.clone());
            self.pending
                .push_back(Change::Insert(instance.id.clone(), service));
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
            match Pin::new(&mut this.lists).poll_next(cx) {
                Poll::Ready(Some(list)) => this.diff(&list),
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
