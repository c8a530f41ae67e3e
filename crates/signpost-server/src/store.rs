//! The agent's in-memory view of the replicated state, and the notifications watchers wait on.
//!
//! The Raft state machine ([`crate::raft::StateMachine`]) is the only writer. HTTP handlers, DNS
//! and the health checker read through [`Store`] and subscribe to per-service notifications, so a
//! watcher of service A is never woken by a write to service B.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use signpost_core::lookup::InstanceLookup;
use signpost_core::{Event, Registry, ServiceEvent};
use tokio::sync::{broadcast, watch};

use crate::raft::{LogId, StoredMembership};

/// Capacity of each service's event channel. A watcher that falls further behind than this gets
/// a fresh `reset` instead of the missed events.
pub const WATCH_BUFFER: usize = 1024;
/// Capacity of the all-services event channel used by the health checker.
const GLOBAL_BUFFER: usize = 65_536;

/// Everything the state machine holds, under one lock so a snapshot is always consistent.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SmState {
    pub registry: Registry,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Notice {
    /// One change, in index order.
    Change(Arc<Change>),
    /// The whole state was replaced (snapshot installed): re-read everything.
    Reset,
}

/// One registry change as every subscriber receives it, shared (in an `Arc`) rather than
/// copied to each.
#[derive(Debug)]
pub struct Change {
    /// This change's place among every change this store has published (from 1, never
    /// reused). Changes can share a Raft index (a batch of writes commits as one entry), so
    /// consumers that keep something per change key it by this.
    pub seq: u64,
    /// What changed.
    pub event: ServiceEvent,
}

impl std::ops::Deref for Change {
    type Target = ServiceEvent;

    fn deref(&self) -> &ServiceEvent {
        &self.event
    }
}

struct ServiceChannel {
    index: watch::Sender<u64>,
    events: broadcast::Sender<Notice>,
}

impl ServiceChannel {
    /// Nobody waits on it or watches it.
    fn unused(&self) -> bool {
        self.index.receiver_count() == 0 && self.events.receiver_count() == 0
    }
}

/// Drops `service`'s channel when the blocking query that held it ends, however it ends
/// (answered, timed out, or cancelled with its connection), if nobody else uses it.
struct ReleaseOnDrop<'a> {
    /// The store the channel is in.
    store: &'a Store,
    /// The channel's service.
    service: &'a str,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.store.release(self.service);
    }
}

/// Shared, read-mostly state of the agent.
pub struct Store {
    state: RwLock<SmState>,
    /// Instances by instance id and check id across services (the Consul face's lookups),
    /// moved along with every write under the state's write lock and rebuilt when a snapshot
    /// replaces the state. Lock order: the state, then this.
    lookup: RwLock<InstanceLookup>,
    /// Per-service channels, created on first subscription and dropped when unused.
    channels: Mutex<HashMap<String, ServiceChannel>>,
    /// Every change, for consumers that follow all services (the health checker).
    all: broadcast::Sender<Notice>,
    /// Index of the last KV change; KV blocking queries wait on it and re-check their prefix.
    kv_index: watch::Sender<u64>,
    /// Index of the last change to any service; catalog-wide blocking queries wait on it.
    catalog_index: watch::Sender<u64>,
    /// How many changes have been published: the last [`Change::seq`].
    published: AtomicU64,
    /// The registry's bounds (`[limits]`), set again on every state replaced by a snapshot.
    limits: signpost_core::limits::Limits,
    /// The channel map's size after its last sweep: the next sweep comes when it doubles.
    swept_at: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self::with_limits(signpost_core::limits::Limits::default())
    }

    /// A store whose registry enforces `limits`.
    pub fn with_limits(limits: signpost_core::limits::Limits) -> Self {
        Store {
            state: RwLock::new(SmState {
                registry: Registry::with_limits(limits),
                ..SmState::default()
            }),
            lookup: RwLock::new(InstanceLookup::default()),
            limits,
            swept_at: AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
            all: broadcast::channel(GLOBAL_BUFFER).0,
            kv_index: watch::channel(0).0,
            catalog_index: watch::channel(0).0,
            published: AtomicU64::new(0),
        }
    }

    /// Read access to the state machine's state.
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the state and the lookup beside it, both read-locked.
    pub fn with_lookup<T>(&self, f: impl FnOnce(&SmState, &InstanceLookup) -> T) -> T {
        let state = self.read();
        let lookup = self.lookup.read().unwrap_or_else(|e| e.into_inner());
        f(&state, &lookup)
    }

    /// Runs `f` with write access, then publishes the events it returns. Only the state machine
    /// calls this.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut SmState) -> (T, Vec<Event>)) -> T {
        let (out, events) = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let (out, events) = f(&mut state);
            let mut lookup = self.lookup.write().unwrap_or_else(|e| e.into_inner());
            for event in events.iter().filter_map(Event::as_service) {
                lookup.apply(event);
            }
            (out, events)
        };
        self.publish(events);
        out
    }

    /// Replaces the whole state (snapshot install) and tells every watcher to start over.
    pub(crate) fn replace(&self, mut new: SmState) {
        new.registry.set_limits(self.limits);
        let lookup = InstanceLookup::of(&new.registry);
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            *self.lookup.write().unwrap_or_else(|e| e.into_inner()) = lookup;
            *state = new;
        }
        // Lock order everywhere: channels, then state.
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for (service, ch) in channels.iter() {
            ch.index
                .send_replace(self.read().registry.service_index(service));
            let _ = ch.events.send(Notice::Reset);
        }
        let _ = self.all.send(Notice::Reset);
        self.kv_index.send_modify(|i| *i += 1);
        self.catalog_index.send_modify(|i| *i += 1);
    }

    fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let event = match event {
                Event::Service(e) => Arc::new(Change {
                    seq: self.published.fetch_add(1, Ordering::Relaxed) + 1,
                    event: *e,
                }),
                Event::Kv { index, .. } => {
                    self.kv_index.send_if_modified(|i| {
                        let moved = index > *i;
                        *i = (*i).max(index);
                        moved
                    });
                    continue;
                }
            };
            self.catalog_index.send_if_modified(|i| {
                let moved = event.index > *i;
                *i = (*i).max(event.index);
                moved
            });
            if let Some(ch) = channels.get(&event.service) {
                if ch.unused() {
                    channels.remove(&event.service);
                } else {
                    ch.index.send_if_modified(|i| {
                        let moved = event.index > *i;
                        *i = (*i).max(event.index);
                        moved
                    });
                    let _ = ch.events.send(Notice::Change(event.clone()));
                }
            }
            let _ = self.all.send(Notice::Change(event));
        }
    }

    fn with_channel<T>(&self, service: &str, f: impl FnOnce(&ServiceChannel) -> T) -> T {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        // Channels whose receivers all went away (a watch ended, a blocking query was
        // cancelled) are swept whenever the map has doubled since the last sweep, so it stays
        // within twice the channels in use, whatever names clients ask for.
        let swept_at = self.swept_at.load(Ordering::Relaxed) as usize;
        if !channels.contains_key(service) && channels.len() >= (2 * swept_at).max(64) {
            channels.retain(|_, ch| !ch.unused());
            self.swept_at
                .store(channels.len() as u64, Ordering::Relaxed);
        }
        let ch = channels.entry(service.to_string()).or_insert_with(|| {
            let index = self.read().registry.service_index(service);
            ServiceChannel {
                index: watch::channel(index).0,
                events: broadcast::channel(WATCH_BUFFER).0,
            }
        });
        f(ch)
    }

    /// Drops `service`'s channel if nobody waits on it or watches it.
    fn release(&self, service: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if channels.get(service).is_some_and(ServiceChannel::unused) {
            channels.remove(service);
        }
    }

    /// Number of per-service channels held (for tests and metrics): only services someone
    /// waits on or watches, give or take the ones not yet swept.
    pub fn channel_count(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Subscribes to `service`'s changes. Subscribe first, then read the state: changes with an
    /// index at or below what was read are already reflected in it.
    pub fn subscribe(&self, service: &str) -> broadcast::Receiver<Notice> {
        self.with_channel(service, |ch| ch.events.subscribe())
    }

    /// Subscribes to every change of every service.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Notice> {
        self.all.subscribe()
    }

    /// Waits until `service`'s index exceeds `index`, or `wait` passes. Returns the index then.
    pub async fn wait_for_service(&self, service: &str, index: u64, wait: Duration) -> u64 {
        // A query whose index has moved on already (most polls of a changing service) is
        // answered without making the service's channel.
        let current = self.read().registry.service_index(service);
        if current > index {
            return current;
        }
        // Declared before the receiver, so dropped after it: the channel is released once this
        // query's receiver is gone.
        let _release = ReleaseOnDrop {
            store: self,
            service,
        };
        let mut rx = self.with_channel(service, |ch| ch.index.subscribe());
        let current = self.read().registry.service_index(service);
        if current > index {
            return current;
        }
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > index)).await;
        self.read().registry.service_index(service)
    }

    /// Waits until the KV index of `key` (or of everything under it, with `recurse`) exceeds
    /// `index`, or `wait` passes. Returns that index.
    pub async fn wait_for_kv(&self, key: &str, recurse: bool, index: u64, wait: Duration) -> u64 {
        let current = || self.read().registry.kv().index(key, recurse);
        let mut rx = self.kv_index.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = current();
            if now > index {
                return now;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return current(),
            }
        }
    }

    /// Waits until the catalog index (any service) exceeds `index`, or `wait` passes.
    pub async fn wait_for_catalog(&self, index: u64, wait: Duration) -> u64 {
        let mut rx = self.catalog_index.subscribe();
        let current = || self.read().registry.catalog_index();
        if current() > index {
            return current();
        }
        let _ = tokio::time::timeout(wait, async {
            while current() <= index {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        current()
    }

    /// Number of live watch subscriptions and parked blocking queries (per service, catalog
    /// and KV), for metrics.
    pub fn watchers(&self) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let per_service: usize = channels
            .values()
            .map(|ch| ch.index.receiver_count() + ch.events.receiver_count())
            .sum();
        per_service + self.catalog_index.receiver_count() + self.kv_index.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signpost_core::EventKind;

    #[test]
    fn changes_of_one_entry_share_an_index_but_never_a_seq() {
        let store = Store::new();
        let mut changes = store.subscribe("svc");
        let event = |index| {
            Event::Service(Box::new(ServiceEvent {
                service: "svc".into(),
                index,
                kind: EventKind::DefinitionChanged,
            }))
        };
        store.write(|_| ((), vec![event(7), event(7)]));
        store.write(|_| ((), vec![event(8)]));
        let mut seen = Vec::new();
        while let Ok(Notice::Change(change)) = changes.try_recv() {
            seen.push((change.event.index, change.seq));
        }
        assert_eq!(seen, [(7, 1), (7, 2), (8, 3)]);
    }

    #[test]
    fn the_lookup_follows_writes_and_a_replaced_state() {
        use signpost_core::model::{Lifecycle, NewInstance};
        use signpost_core::{Command, Request};
        let register = |service: &str| {
            Command::Register(NewInstance {
                id: "x".into(),
                service: service.into(),
                address: "10.0.0.1".into(),
                port: 80,
                tags: vec![],
                metadata: Default::default(),
                weight: 1,
                check: None,
                status: None,
                state: Lifecycle::Up,
            })
        };
        let found = |store: &Store| {
            store.with_lookup(|state, lookup| {
                lookup
                    .by_instance_id(&state.registry, "x")
                    .iter()
                    .map(|i| i.service.clone())
                    .collect::<Vec<_>>()
            })
        };
        let store = Store::new();
        let mut other = SmState::default();
        for (index, service) in [(1, "b"), (2, "a")] {
            let req = Request::new(1_700_000_000_000, register(service));
            store.write(|state| state.registry.apply(index, &req));
            if service == "b" {
                other.registry.apply(index, &req);
            }
        }
        assert_eq!(found(&store), ["a", "b"]);
        store.replace(other);
        assert_eq!(found(&store), ["b"], "rebuilt from the snapshot's registry");
    }
}
