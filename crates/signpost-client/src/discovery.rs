//! Cached, watch-driven discovery: [`Discovery`] hands out a [`ServiceWatch`] per service, whose
//! instance list a background task keeps current from [`Registry::watch`].
//!
//! What the background task guarantees:
//! - **Stale on error.** When the watch breaks, the last known list keeps being served; the task
//!   reconnects with exponential backoff and full jitter, and the `Reset` that opens the new watch
//!   brings every change made meanwhile.
//! - **Persistence** (optional, [`DiscoveryOptions::cache_dir`]). Each new list is written to
//!   `<cache_dir>/<service>.json` (written to a temporary file, then renamed). A process that
//!   starts while the registry is unreachable serves that file instead of nothing.
//! - **Push-empty protection.** An update that would empty a non-empty list is checked at once
//!   with a fresh [`Registry::list`]: a confirmed empty list is applied, a non-empty one replaces
//!   the update, and if the registry cannot answer the empty list is held back for
//!   [`DiscoveryOptions::empty_hold`] (any non-empty update ends the hold).
//!
//! Readers never wait on the task: [`ServiceWatch::instances`] is a read of a
//! [`tokio::sync::watch`] channel of versioned [`Endpoints`], and [`ServiceWatch::updates`] hands
//! out that channel's receiver for code that wants to react to changes. Code that wants the
//! changes themselves (the tower adapter) reads [`ServiceWatch::changes`]: a `Reset` of the
//! current list, then the `Add / Update / Remove`s the task published.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};
use crate::endpoints::Endpoints;
use crate::instance::{Instance, Update};
use crate::registry::Registry;

mod catalog;
#[cfg(test)]
mod tests;

pub use catalog::Catalog;

/// Tunables of a [`Discovery`]. `Default` gives production values.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::discovery::DiscoveryOptions;
/// let options = DiscoveryOptions {
///     cache_dir: Some("/var/cache/myapp/discovery".into()),
///     empty_hold: Duration::from_secs(60),
///     ..DiscoveryOptions::default()
/// };
/// ```
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Where to persist each service's last list (`<dir>/<service>.json`); `None` persists
    /// nothing.
    pub cache_dir: Option<PathBuf>,
    /// How long an unconfirmed update that would empty a non-empty list is held back.
    pub empty_hold: Duration,
    /// How long [`ServiceWatch::ready`] waits for a first list.
    pub ready_timeout: Duration,
    /// First reconnect delay cap; doubles on every failed attempt.
    pub backoff_initial: Duration,
    /// Largest reconnect delay cap.
    pub backoff_max: Duration,
    /// How long the confirming [`Registry::list`] of push-empty protection may take.
    pub confirm_timeout: Duration,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            cache_dir: None,
            empty_hold: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(2),
        }
    }
}

impl DiscoveryOptions {
    /// How a lost watch (of a service, or of the catalog) waits before it reconnects: from
    /// `backoff_initial` doubling up to `backoff_max`, with full jitter.
    pub fn reconnect_backoff(&self) -> Backoff {
        Backoff {
            base: self.backoff_initial,
            max: self.backoff_max,
            jitter: Jitter::Full,
        }
    }
}

/// Why a discovery call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No list (from the registry or the cache file) arrived in time.
    #[error("no instance list for {service} within {waited:?}: the registry is unreachable and nothing is cached")]
    NotReady {
        /// The service asked for.
        service: String,
        /// How long [`ServiceWatch::ready`] waited.
        waited: Duration,
    },
    /// The background task is gone (it only stops once every handle is dropped, so this means
    /// it panicked).
    #[error("the discovery task for {service} has stopped")]
    Closed {
        /// The service asked for.
        service: String,
    },
}

/// Where the list a [`ServiceWatch`] serves came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nothing is known yet.
    None,
    /// The registry (live, or stale since the last disconnect: see [`WatchStatus::connected`]).
    Registry,
    /// The cache file, because the registry was unreachable at start.
    Cache,
}

/// The state of one service's background watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStatus {
    /// A list is known (from the registry or the cache file).
    pub ready: bool,
    /// A watch is open and has delivered its opening `Reset`.
    pub connected: bool,
    /// Where the served list came from.
    pub source: Source,
    /// The registry index of the last update applied (0 before any).
    pub index: u64,
    /// An update that would empty the list is being held back (push-empty protection).
    pub holding_empty: bool,
}

/// Client-side discovery: one cached, watch-driven instance list per service.
///
/// Cheap to clone (clones share the services). The first [`Discovery::service`] call for a name
/// starts that service's background task; later calls return handles to the same list. A task
/// stops once the `Discovery` and every handle of its service are dropped.
///
/// ```no_run
/// use std::sync::Arc;
/// use signpost_client::discovery::{Discovery, DiscoveryOptions};
/// use signpost_client::registry::signpost::SignpostRegistry;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(SignpostRegistry::new(["127.0.0.1:8500"])?);
/// let discovery = Discovery::new(registry, DiscoveryOptions::default());
/// let users = discovery.service("user-service");
/// users.ready().await?;
/// for instance in users.instances().iter() {
///     println!("{} at {}", instance.id, instance.base_url());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<DiscoveryInner>,
}

struct DiscoveryInner {
    /// Where lists come from.
    registry: Arc<dyn Registry>,
    /// Tunables shared by every service's task.
    options: DiscoveryOptions,
    /// One handle per followed service; holding it keeps the service's task alive as long as
    /// the `Discovery` lives.
    services: Mutex<HashMap<String, ServiceWatch>>,
    /// The set of services, once [`Discovery::catalog`] was called (holding it keeps its task
    /// alive as long as the `Discovery` lives).
    catalog: Mutex<Option<Catalog>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<String> = self
            .inner
            .services
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Discovery")
            .field("services", &services)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Discovery {
    /// Discovery over `registry`. No task starts until [`Discovery::service`] is called.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use signpost_client::discovery::{Discovery, DiscoveryOptions};
    /// # use signpost_client::registry::signpost::SignpostRegistry;
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = Arc::new(SignpostRegistry::new(["127.0.0.1:8500"])?);
    /// let discovery = Discovery::new(registry, DiscoveryOptions::default());
    /// # Ok(()) }
    /// ```
    pub fn new(registry: Arc<dyn Registry>, options: DiscoveryOptions) -> Self {
        Discovery {
            inner: Arc::new(DiscoveryInner {
                registry,
                options,
                services: Mutex::new(HashMap::new()),
                catalog: Mutex::new(None),
            }),
        }
    }

    /// The handle of `service`'s instance list, starting its background task on first use.
    /// Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn run(discovery: signpost_client::discovery::Discovery) {
    /// let users = discovery.service("user-service");
    /// let same = discovery.service("user-service"); // shares the task and the list
    /// # }
    /// ```
    pub fn service(&self, service: &str) -> ServiceWatch {
        let mut services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(watch) = services.get(service) {
            let mut watch = watch.clone();
            // A new handle's `changed` waits for the next change, not one that already happened.
            watch.instances.mark_unchanged();
            return watch;
        }
        let watch = Follower::spawn(
            service.to_string(),
            self.inner.registry.clone(),
            self.inner.options.clone(),
        );
        services.insert(service.to_string(), watch.clone());
        watch
    }

    /// The registry this discovery reads.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// The options this discovery was built with.
    pub fn options(&self) -> &DiscoveryOptions {
        &self.inner.options
    }
}

/// A handle to one service's current healthy instances. Cheap to clone.
///
/// Reading is lock-free for the task and never waits on the network: the background task
/// publishes each new list as an `Arc<Endpoints>` (sorted by id, with a version of its own) and
/// readers take the current one.
///
/// ```no_run
/// # async fn run(discovery: signpost_client::discovery::Discovery) -> Result<(), signpost_client::discovery::DiscoveryError> {
/// let mut users = discovery.service("user-service");
/// users.ready().await?;                 // first list known (or an error after ready_timeout)
/// let now = users.instances();          // Arc<Endpoints>, never blocks
/// let next = users.changed().await?;    // the list after its next change
/// let mut rx = users.updates();         // a tokio watch receiver of the same lists
/// rx.changed().await.ok();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceWatch {
    /// The service's name.
    service: Arc<str>,
    /// The published lists.
    instances: watch::Receiver<Arc<Endpoints>>,
    /// The changes behind each published list, for [`ServiceWatch::changes`].
    changes: broadcast::Sender<Arc<Published>>,
    /// The task's state (readiness, connection).
    status: watch::Receiver<WatchStatus>,
    /// How long [`ServiceWatch::ready`] waits.
    ready_timeout: Duration,
}

impl std::fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatch")
            .field("service", &self.service)
            .field("instances", &self.instances.borrow().len())
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl ServiceWatch {
    /// The service this handle follows.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The current healthy instances, sorted by id. Empty until the first list is known.
    ///
    /// ```no_run
    /// # fn run(users: signpost_client::discovery::ServiceWatch) {
    /// let instances = users.instances();
    /// if let Some(first) = instances.first() {
    ///     println!("calling {}", first.base_url());
    /// }
    /// # }
    /// ```
    pub fn instances(&self) -> Arc<Endpoints> {
        self.instances.borrow().clone()
    }

    /// Waits for the next change of the list, then returns the new list. "Next" is relative to
    /// the last list this handle returned from `changed`, or to when it was obtained from
    /// [`Discovery::service`] (a clone inherits its original's position).
    ///
    /// ```no_run
    /// # async fn run(mut users: signpost_client::discovery::ServiceWatch) {
    /// while let Ok(list) = users.changed().await {
    ///     println!("now {} instances", list.len());
    /// }
    /// # }
    /// ```
    pub async fn changed(&mut self) -> Result<Arc<Endpoints>, DiscoveryError> {
        self.instances
            .changed()
            .await
            .map_err(|_| DiscoveryError::Closed {
                service: self.service.to_string(),
            })?;
        Ok(self.instances.borrow_and_update().clone())
    }

    /// Waits until a first list is known (from the registry, or from the cache file when the
    /// registry is unreachable) and returns it; [`DiscoveryError::NotReady`] after
    /// [`DiscoveryOptions::ready_timeout`].
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::discovery::ServiceWatch) {
    /// match users.ready().await {
    ///     Ok(list) => println!("{} instances", list.len()),
    ///     Err(e) => eprintln!("starting without users: {e}"),
    /// }
    /// # }
    /// ```
    pub async fn ready(&self) -> Result<Arc<Endpoints>, DiscoveryError> {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(self.ready_timeout, async {
            status.wait_for(|s| s.ready).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(self.instances()),
            Ok(Err(_)) => Err(DiscoveryError::Closed {
                service: self.service.to_string(),
            }),
            Err(_) => Err(DiscoveryError::NotReady {
                service: self.service.to_string(),
                waited: self.ready_timeout,
            }),
        }
    }

    /// A receiver of the instance lists, for code that reacts to changes (balancers, the tower
    /// adapter): `borrow()` is the current list, `changed().await` waits for the next one. Each
    /// call returns an independent receiver; its current value counts as seen only after
    /// `borrow_and_update()`.
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::discovery::ServiceWatch) {
    /// let mut rx = users.updates();
    /// loop {
    ///     let list = rx.borrow_and_update().clone();
    ///     println!("rebuilding the balancer over {} instances", list.len());
    ///     if rx.changed().await.is_err() {
    ///         break; // discovery stopped
    ///     }
    /// }
    /// # }
    /// ```
    pub fn updates(&self) -> watch::Receiver<Arc<Endpoints>> {
        self.instances.clone()
    }

    /// The changes of the list as a stream of [`Update`]s: first a `Reset` with the current
    /// list, then the `Add / Update / Remove`s (or a `Reset`) behind every list published after
    /// it. A reader that falls more than 64 lists behind gets a `Reset` of the current list
    /// instead of the changes it missed. Ends when the discovery task stops.
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::discovery::ServiceWatch) {
    /// use futures::StreamExt;
    /// use signpost_client::Update;
    /// let mut changes = users.changes();
    /// while let Some(update) = changes.next().await {
    ///     match update {
    ///         Update::Reset { instances, .. } => println!("{} instances", instances.len()),
    ///         Update::Add { instance, .. } => println!("+{}", instance.id),
    ///         Update::Update { instance, .. } => println!("~{}", instance.id),
    ///         Update::Remove { id, .. } => println!("-{id}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn changes(&self) -> BoxStream<'static, Update> {
        // Subscribe before reading the current list, so nothing published in between is lost;
        // what the current list already holds is skipped by version.
        let published = self.changes.subscribe();
        let lists = self.instances.clone();
        let current = lists.borrow().clone();
        let state = ChangeCursor {
            published,
            lists,
            seen: current.version(),
            pending: std::collections::VecDeque::from([reset_of(&current)]),
        };
        futures::stream::unfold(state, |mut c| async move {
            let update = c.next().await?;
            Some((update, c))
        })
        .boxed()
    }

    /// The background watch's current state.
    ///
    /// ```no_run
    /// # fn run(users: signpost_client::discovery::ServiceWatch) {
    /// let status = users.status();
    /// if !status.connected {
    ///     println!("serving a stale list from {:?}", status.source);
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> WatchStatus {
        *self.status.borrow()
    }

    /// A receiver of [`WatchStatus`] changes (e.g. to wait until the watch reconnects).
    pub fn status_updates(&self) -> watch::Receiver<WatchStatus> {
        self.status.clone()
    }
}

/// The changes that made one published list.
#[derive(Debug)]
struct Published {
    /// The version of the list they made.
    version: u64,
    /// The changes, in order.
    updates: Vec<Update>,
}

/// A `Reset` carrying `endpoints`.
fn reset_of(endpoints: &Endpoints) -> Update {
    Update::Reset {
        index: endpoints.index(),
        instances: endpoints.to_vec(),
    }
}

/// The state of one [`ServiceWatch::changes`] stream.
struct ChangeCursor {
    /// The changes behind each published list.
    published: broadcast::Receiver<Arc<Published>>,
    /// The lists (read again after falling behind).
    lists: watch::Receiver<Arc<Endpoints>>,
    /// The version of the last list this stream has brought its reader to.
    seen: u64,
    /// Updates to yield before reading more.
    pending: std::collections::VecDeque<Update>,
}

impl ChangeCursor {
    async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(update);
            }
            match self.published.recv().await {
                // Already part of the list the stream started from (or caught up to).
                Ok(p) if p.version <= self.seen => {}
                Ok(p) => {
                    self.seen = p.version;
                    self.pending.extend(p.updates.iter().cloned());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let current = self.lists.borrow().clone();
                    self.seen = current.version();
                    self.pending.push_back(reset_of(&current));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Push-empty protection as a pure state machine: the caller passes the time in.
#[derive(Debug)]
pub(crate) struct EmptyGuard {
    /// How long an unconfirmed emptying update is held.
    hold: Duration,
    /// When the current hold ends, if one is running.
    until: Option<Instant>,
}

/// What to do with a candidate list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Publish the candidate.
    Publish,
    /// The candidate would empty the list: ask the registry whether it really is empty.
    Confirm,
    /// Keep serving the current list.
    Hold,
}

impl EmptyGuard {
    pub(crate) fn new(hold: Duration) -> Self {
        EmptyGuard { hold, until: None }
    }

    /// Judges a candidate list of `candidate_len` instances replacing `published_len` ones.
    pub(crate) fn assess(
        &mut self,
        published_len: usize,
        candidate_len: usize,
        now: Instant,
    ) -> Verdict {
        if candidate_len > 0 || published_len == 0 {
            self.until = None;
            return Verdict::Publish;
        }
        match self.until {
            None => Verdict::Confirm,
            Some(until) if now >= until => {
                self.until = None;
                Verdict::Publish
            }
            Some(_) => Verdict::Hold,
        }
    }

    /// The registry could not confirm: start holding (unless already holding).
    pub(crate) fn unconfirmed(&mut self, now: Instant) {
        if self.until.is_none() {
            self.until = Some(now + self.hold);
        }
    }

    /// The confirmation settled it (either way): no hold.
    pub(crate) fn settled(&mut self) {
        self.until = None;
    }

    /// When the running hold ends.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.until
    }
}

/// The cache file's content.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    service: String,
    index: u64,
    instances: Vec<Instance>,
}

/// `<dir>/<service>.json`, with anything but `[A-Za-z0-9._-]` in the name replaced.
fn cache_path(dir: &Path, service: &str) -> PathBuf {
    let name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.json"))
}

async fn read_cache(path: &Path, service: &str) -> Option<CacheFile> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(%service, "cannot read discovery cache {}: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(cache) if cache.service == service => Some(cache),
        Ok(cache) => {
            tracing::warn!(%service, "discovery cache {} is for {}; ignoring it", path.display(), cache.service);
            None
        }
        Err(e) => {
            tracing::warn!(%service, "ignoring corrupt discovery cache {}: {e}", path.display());
            None
        }
    }
}

/// Writes the cache atomically: a temporary file beside it, then a rename.
async fn write_cache(path: &Path, cache: &CacheFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    tokio::fs::write(&tmp, &json).await?;
    if let Err(e) = tokio::fs::rename(&tmp, path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    Ok(())
}

/// The background task of one service.
struct Follower {
    service: String,
    registry: Arc<dyn Registry>,
    options: DiscoveryOptions,
    /// Publishes instance lists to every [`ServiceWatch`].
    list_tx: watch::Sender<Arc<Endpoints>>,
    /// Publishes the changes behind each list ([`ServiceWatch::changes`]).
    changes_tx: broadcast::Sender<Arc<Published>>,
    /// The changes applied to `view` since the last published list.
    unpublished: Vec<Update>,
    /// The cache-age gauge's memory of when the watch was lost.
    age: crate::metrics::CacheAge,
    /// Publishes the task's state.
    status_tx: watch::Sender<WatchStatus>,
    /// The registry's view as last received, by id (may differ from what is published while an
    /// emptying update is held).
    view: BTreeMap<String, Instance>,
    /// Push-empty protection.
    guard: EmptyGuard,
    /// `<cache_dir>/<service>.json`, when persisting.
    cache_path: Option<PathBuf>,
    /// The cache file's list, loaded at start; taken when served.
    cached: Option<CacheFile>,
}

impl Follower {
    fn spawn(
        service: String,
        registry: Arc<dyn Registry>,
        options: DiscoveryOptions,
    ) -> ServiceWatch {
        let (list_tx, list_rx) = watch::channel(Arc::new(Endpoints::empty()));
        let (changes_tx, _) = broadcast::channel(CHANGES_CAPACITY);
        let (status_tx, status_rx) = watch::channel(WatchStatus {
            ready: false,
            connected: false,
            source: Source::None,
            index: 0,
            holding_empty: false,
        });
        let handle = ServiceWatch {
            service: Arc::from(service.as_str()),
            instances: list_rx,
            changes: changes_tx.clone(),
            status: status_rx,
            ready_timeout: options.ready_timeout,
        };
        let follower = Follower {
            cache_path: options
                .cache_dir
                .as_deref()
                .map(|d| cache_path(d, &service)),
            guard: EmptyGuard::new(options.empty_hold),
            service,
            registry,
            options,
            list_tx,
            changes_tx,
            unpublished: Vec::new(),
            age: Default::default(),
            status_tx,
            view: BTreeMap::new(),
            cached: None,
        };
        tokio::spawn(follower.run());
        handle
    }

    async fn run(mut self) {
        if let Some(path) = &self.cache_path {
            self.cached = read_cache(path, &self.service).await;
        }
        let mut attempt: u32 = 0;
        loop {
            let mut stream = self.registry.watch(&self.service);
            let mut watch_span = crate::otel::WatchSpan::start(&self.service);
            let error = loop {
                let hold = self.guard.deadline();
                tokio::select! {
                    _ = self.list_tx.closed() => return,
                    _ = sleep_until_opt(hold) => self.hold_over().await,
                    item = watch_span.in_span(stream.next()) => match item {
                        Some(Ok(update)) => {
                            if matches!(update, Update::Reset { .. }) {
                                watch_span.connected();
                                attempt = 0;
                                if !self.status_tx.borrow().connected {
                                    tracing::info!(service = %self.service, "watch connected");
                                }
                                self.status_tx.send_modify(|s| s.connected = true);
                            }
                            self.apply(update).await;
                        }
                        Some(Err(e)) => break Some(e),
                        None => break None,
                    }
                }
            };
            drop(stream);
            self.status_tx.send_modify(|s| s.connected = false);
            self.age.lost(&self.service);
            self.serve_cache_if_nothing();
            let delay = self
                .options
                .reconnect_backoff()
                .delay(attempt.saturating_add(1));
            attempt = attempt.saturating_add(1);
            match &error {
                Some(e) => tracing::warn!(
                    service = %self.service,
                    "watch failed ({e}); serving the last known list, reconnecting in {delay:?} (attempt {attempt})"
                ),
                None => tracing::warn!(
                    service = %self.service,
                    "watch ended; serving the last known list, reconnecting in {delay:?} (attempt {attempt})"
                ),
            }
            let wake = Instant::now() + delay;
            loop {
                let hold = self.guard.deadline();
                tokio::select! {
                    _ = self.list_tx.closed() => return,
                    _ = sleep_until_opt(hold) => self.hold_over().await,
                    _ = tokio::time::sleep_until(wake) => break,
                }
            }
        }
    }

    /// The registry is unreachable and nothing is known: serve the cache file, once.
    fn serve_cache_if_nothing(&mut self) {
        if self.status_tx.borrow().ready {
            return;
        }
        if let Some(cache) = self.cached.take() {
            tracing::warn!(
                service = %self.service,
                "registry unreachable; serving {} cached instances (index {})",
                cache.instances.len(),
                cache.index
            );
            let mut list = cache.instances;
            list.sort_by(|a, b| a.id.cmp(&b.id));
            let endpoints = Arc::new(Endpoints::new(cache.index, list));
            self.announce(&endpoints, vec![reset_of(&endpoints)]);
            self.list_tx.send_replace(endpoints);
            self.status_tx.send_modify(|s| {
                s.ready = true;
                s.source = Source::Cache;
                s.index = cache.index;
            });
        }
    }

    /// Applies one update to the registry view, then publishes (subject to the guard).
    async fn apply(&mut self, update: Update) {
        let index = update.index();
        self.age.received(&self.service);
        self.unpublished.push(update.clone());
        match update {
            Update::Reset { instances, .. } => {
                self.view = instances.into_iter().map(|i| (i.id.clone(), i)).collect();
            }
            Update::Add { instance, .. } | Update::Update { instance, .. } => {
                self.view.insert(instance.id.clone(), instance);
            }
            Update::Remove { id, .. } => {
                self.view.remove(&id);
            }
        }
        self.status_tx.send_modify(|s| s.index = index);
        self.propose(index).await;
    }

    /// Publishes the view, unless push-empty protection holds it back.
    async fn propose(&mut self, index: u64) {
        let published = self.list_tx.borrow().len();
        match self
            .guard
            .assess(published, self.view.len(), Instant::now())
        {
            Verdict::Publish => self.publish(index).await,
            Verdict::Hold => {}
            Verdict::Confirm => {
                let confirm = tokio::time::timeout(
                    self.options.confirm_timeout,
                    self.registry.list(&self.service),
                )
                .await;
                match confirm {
                    Ok(Ok((index, instances))) => {
                        self.guard.settled();
                        if instances.is_empty() {
                            tracing::info!(service = %self.service, "registry confirms no instances left");
                        } else {
                            tracing::info!(
                                service = %self.service,
                                "an update emptied the list but the registry lists {} instances; using its list",
                                instances.len()
                            );
                        }
                        self.unpublished.push(Update::Reset {
                            index,
                            instances: instances.clone(),
                        });
                        self.view = instances.into_iter().map(|i| (i.id.clone(), i)).collect();
                        self.publish(index).await;
                    }
                    Ok(Err(e)) => self.hold(&e.to_string()),
                    Err(_) => self.hold("the registry did not answer in time"),
                }
            }
        }
    }

    fn hold(&mut self, why: &str) {
        self.guard.unconfirmed(Instant::now());
        tracing::warn!(
            service = %self.service,
            "holding back an update that would remove every instance for {:?}: cannot confirm it ({why})",
            self.options.empty_hold
        );
        self.status_tx.send_modify(|s| s.holding_empty = true);
    }

    /// The hold deadline passed: publish whatever the view is now.
    async fn hold_over(&mut self) {
        let index = self.status_tx.borrow().index;
        let published = self.list_tx.borrow().len();
        if self
            .guard
            .assess(published, self.view.len(), Instant::now())
            == Verdict::Publish
        {
            if self.view.is_empty() {
                tracing::warn!(service = %self.service, "hold expired; applying the empty list");
            }
            self.publish(index).await;
        }
    }

    /// Publishes the view if it differs from what is served, and persists it.
    async fn publish(&mut self, index: u64) {
        let list: Vec<Instance> = self.view.values().cloned().collect();
        let updates = std::mem::take(&mut self.unpublished);
        let mut published = None;
        self.list_tx.send_if_modified(|current| {
            if current.instances() == list.as_slice() {
                false
            } else {
                let endpoints = Arc::new(Endpoints::new(index, list.clone()));
                *current = endpoints.clone();
                published = Some(endpoints);
                true
            }
        });
        let changed = published.is_some();
        if let Some(endpoints) = &published {
            self.announce(endpoints, updates);
        }
        self.status_tx.send_if_modified(|s| {
            let before = *s;
            s.index = index;
            s.ready = true;
            s.source = Source::Registry;
            s.holding_empty = false;
            *s != before
        });
        self.cached = None;
        if changed {
            tracing::debug!(service = %self.service, index, "{} instances", list.len());
            if let Some(path) = &self.cache_path {
                let cache = CacheFile {
                    service: self.service.clone(),
                    index,
                    instances: list,
                };
                if let Err(e) = write_cache(path, &cache).await {
                    tracing::warn!(service = %self.service, "cannot write discovery cache {}: {e}", path.display());
                }
            }
        }
    }
}

/// How many published lists a [`ServiceWatch::changes`] reader may fall behind before it gets a
/// `Reset` instead.
const CHANGES_CAPACITY: usize = 64;

impl Follower {
    /// Tells [`ServiceWatch::changes`] readers which `updates` made `endpoints`. Before or after
    /// publishing the list alike: a reader skips the changes of every list up to the one it
    /// started from, by version.
    fn announce(&self, endpoints: &Endpoints, updates: Vec<Update>) {
        // No receivers is fine: nobody reads changes.
        let _ = self.changes_tx.send(Arc::new(Published {
            version: endpoints.version(),
            updates,
        }));
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
