//! Unit tests of discovery: the push-empty guard as a pure function, and the
//! background task against a scripted in-memory registry, with paused time where time matters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::registry::{RegistrationSpec, RegistryError, ServiceSet};

type Item = Result<Update, RegistryError>;

/// The registry is down.
fn outage() -> RegistryError {
    RegistryError::Unavailable {
        agent: "scripted".into(),
        cause: crate::registry::Cause::Closed,
    }
}

/// A registry whose watches are fed by the test and whose `list` answers what the test says.
#[derive(Default)]
struct Scripted {
    /// The feed of each future `watch()` call, in order; with none left, a watch fails at once.
    feeds: Mutex<VecDeque<mpsc::UnboundedReceiver<Item>>>,
    /// What `list()` answers (`None`: unavailable).
    list: Mutex<Option<Vec<Instance>>>,
    /// How many times `watch()` was called.
    watches: AtomicUsize,
    /// How many times `list()` was called.
    lists: AtomicUsize,
    /// The feed of each future `watch_services()` call; with none left, it fails at once.
    catalogs: Mutex<VecDeque<mpsc::UnboundedReceiver<Result<ServiceSet, RegistryError>>>>,
    /// How many times `watch_services()` was called.
    catalog_watches: AtomicUsize,
}

impl Scripted {
    /// Adds a watch feed and returns its sender.
    fn feed(&self) -> mpsc::UnboundedSender<Item> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.feeds.lock().unwrap().push_back(rx);
        tx
    }

    /// Adds a `watch_services` feed and returns its sender.
    fn catalog_feed(&self) -> mpsc::UnboundedSender<Result<ServiceSet, RegistryError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.catalogs.lock().unwrap().push_back(rx);
        tx
    }

    fn answer_list(&self, list: Option<Vec<Instance>>) {
        *self.list.lock().unwrap() = list;
    }
}

impl Registry for Scripted {
    fn register<'a>(&'a self, _: &'a RegistrationSpec) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Ok(()) })
    }
    fn deregister<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Ok(()) })
    }
    fn heartbeat<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Ok(()) })
    }
    fn list<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let answer = self.list.lock().unwrap().clone();
        Box::pin(async move { answer.map(|l| (99, l)).ok_or_else(outage) })
    }
    fn watch(&self, _: &str) -> BoxStream<'static, Item> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        match self.feeds.lock().unwrap().pop_front() {
            Some(rx) => tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed(),
            None => futures::stream::once(async { Err(outage()) }).boxed(),
        }
    }
    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>> {
        self.catalog_watches.fetch_add(1, Ordering::SeqCst);
        match self.catalogs.lock().unwrap().pop_front() {
            Some(rx) => tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed(),
            None => futures::stream::once(async { Err(outage()) }).boxed(),
        }
    }
}

fn inst(id: &str) -> Instance {
    Instance {
        id: id.into(),
        service: "svc".into(),
        address: "10.0.0.1".into(),
        port: 80,
        tags: vec![],
        metadata: Default::default(),
        weight: 100,
        state: Default::default(),
        maintenance: None,
    }
}

fn ids(list: &[Instance]) -> Vec<&str> {
    list.iter().map(|i| i.id.as_str()).collect()
}

fn reset(index: u64, ids: &[&str]) -> Item {
    Ok(Update::Reset {
        index,
        instances: ids.iter().map(|i| inst(i)).collect(),
    })
}

fn remove(index: u64, id: &str) -> Item {
    Ok(Update::Remove {
        index,
        id: id.into(),
    })
}

/// Waits (on the channel, not the clock) until the list has these ids.
async fn until_ids(watch: &ServiceWatch, want: &[&str]) {
    let mut rx = watch.updates();
    let got = rx.wait_for(|l| ids(l) == want).await;
    assert!(got.is_ok(), "discovery stopped");
}

async fn until_status(watch: &ServiceWatch, f: impl FnMut(&WatchStatus) -> bool) {
    let mut rx = watch.status_updates();
    rx.wait_for(f).await.unwrap();
}

/// Lets every ready task run without moving the paused clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn discovery(registry: Arc<Scripted>, options: DiscoveryOptions) -> Discovery {
    Discovery::new(registry, options)
}

#[tokio::test(start_paused = true)]
async fn guard_holds_an_unconfirmed_empty_list_for_the_hold_time() {
    let mut g = EmptyGuard::new(Duration::from_secs(30));
    let t0 = Instant::now();
    // Non-emptying candidates, and anything while nothing is published, go straight through.
    assert_eq!(g.assess(2, 1, t0), Verdict::Publish);
    assert_eq!(g.assess(0, 0, t0), Verdict::Publish);
    // Emptying a non-empty list asks for confirmation first.
    assert_eq!(g.assess(2, 0, t0), Verdict::Confirm);
    g.unconfirmed(Instant::now());
    assert_eq!(g.deadline(), Some(t0 + Duration::from_secs(30)));
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(g.assess(2, 0, Instant::now()), Verdict::Hold);
    // A second failed confirmation does not extend the hold.
    g.unconfirmed(Instant::now());
    assert_eq!(g.deadline(), Some(t0 + Duration::from_secs(30)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(g.assess(2, 0, Instant::now()), Verdict::Publish);
    assert_eq!(g.deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn guard_hold_ends_when_instances_come_back_or_the_registry_confirms() {
    let mut g = EmptyGuard::new(Duration::from_secs(30));
    assert_eq!(g.assess(1, 0, Instant::now()), Verdict::Confirm);
    g.unconfirmed(Instant::now());
    assert_eq!(g.assess(1, 3, Instant::now()), Verdict::Publish);
    assert_eq!(g.deadline(), None);
    // After a hold ended early, the next emptying update asks again.
    assert_eq!(g.assess(3, 0, Instant::now()), Verdict::Confirm);
    g.settled();
    assert_eq!(g.deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn follows_resets_adds_and_removes_sorted_by_id() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["b", "a"])).unwrap();
    assert_eq!(ids(&w.ready().await.unwrap()), ["a", "b"]);
    feed.send(Ok(Update::Add {
        index: 2,
        instance: inst("c"),
    }))
    .unwrap();
    until_ids(&w, &["a", "b", "c"]).await;
    let mut moved = inst("c");
    moved.port = 81;
    feed.send(Ok(Update::Update {
        index: 3,
        instance: moved,
    }))
    .unwrap();
    let mut rx = w.updates();
    rx.wait_for(|l| l.iter().any(|i| i.port == 81))
        .await
        .unwrap();
    feed.send(remove(4, "a")).unwrap();
    until_ids(&w, &["b", "c"]).await;
    let s = w.status();
    assert!(s.ready && s.connected);
    assert_eq!((s.source, s.index), (Source::Registry, 4));
    // A second handle shares the task.
    let again = d.service("svc");
    assert_eq!(ids(&again.instances()), ["b", "c"]);
    assert_eq!(reg.watches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn changed_returns_each_new_list_once() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let mut w = d.service("svc");
    feed.send(reset(1, &["a"])).unwrap();
    assert_eq!(ids(&w.changed().await.unwrap()), ["a"]);
    // A reset with the same list publishes nothing.
    feed.send(reset(2, &["a"])).unwrap();
    feed.send(reset(3, &["a", "b"])).unwrap();
    assert_eq!(ids(&w.changed().await.unwrap()), ["a", "b"]);
    // A handle obtained later waits for the next change, not the ones before it.
    let mut late = d.service("svc");
    assert!(tokio::time::timeout(Duration::from_secs(1), late.changed())
        .await
        .is_err());
    feed.send(remove(4, "a")).unwrap();
    assert_eq!(ids(&late.changed().await.unwrap()), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_empty_update_is_held_for_empty_hold() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let options = DiscoveryOptions {
        empty_hold: Duration::from_secs(30),
        ..DiscoveryOptions::default()
    };
    let d = discovery(reg.clone(), options);
    let w = d.service("svc");
    feed.send(reset(1, &["a", "b"])).unwrap();
    until_ids(&w, &["a", "b"]).await;
    feed.send(remove(2, "a")).unwrap();
    until_ids(&w, &["b"]).await;
    assert_eq!(
        reg.lists.load(Ordering::SeqCst),
        0,
        "no confirmation needed"
    );

    reg.answer_list(None); // the registry cannot confirm
    feed.send(remove(3, "b")).unwrap();
    until_status(&w, |s| s.holding_empty).await;
    assert_eq!(reg.lists.load(Ordering::SeqCst), 1);
    assert_eq!(ids(&w.instances()), ["b"]);

    tokio::time::advance(Duration::from_secs(29)).await;
    settle().await;
    assert_eq!(ids(&w.instances()), ["b"], "still held after 29 s");
    assert_eq!(
        reg.lists.load(Ordering::SeqCst),
        1,
        "confirmed once, not polled"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    until_ids(&w, &[]).await;
    assert!(!w.status().holding_empty);
}

#[tokio::test(start_paused = true)]
async fn an_empty_update_confirmed_by_the_registry_applies_at_once() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    reg.answer_list(Some(vec![]));
    let before = Instant::now();
    feed.send(remove(2, "a")).unwrap();
    until_ids(&w, &[]).await;
    assert_eq!(Instant::now(), before, "no waiting");
    assert_eq!(reg.lists.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_registry_that_disagrees_with_an_empty_update_wins() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    reg.answer_list(Some(vec![inst("c")]));
    feed.send(reset(2, &[])).unwrap();
    until_ids(&w, &["c"]).await;
    assert!(!w.status().holding_empty);
}

#[tokio::test(start_paused = true)]
async fn instances_returning_during_a_hold_end_it() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    feed.send(remove(2, "a")).unwrap();
    until_status(&w, |s| s.holding_empty).await;
    feed.send(Ok(Update::Add {
        index: 3,
        instance: inst("z"),
    }))
    .unwrap();
    until_ids(&w, &["z"]).await;
    assert!(!w.status().holding_empty);
}

#[tokio::test(start_paused = true)]
async fn serves_the_last_list_while_disconnected_and_resets_on_reconnect() {
    let reg = Arc::new(Scripted::default());
    let first = reg.feed();
    let options = DiscoveryOptions {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        ..DiscoveryOptions::default()
    };
    let d = discovery(reg.clone(), options);
    let w = d.service("svc");
    first.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    assert!(w.status().connected);

    // Outage: the stream fails; the next two attempts fail too (no feeds queued).
    first.send(Err(outage())).unwrap();
    until_status(&w, |s| !s.connected).await;
    assert_eq!(ids(&w.instances()), ["a"], "stale on error");
    let mut watches = w.status_updates();
    tokio::time::advance(Duration::from_secs(3)).await;
    settle().await;
    assert!(reg.watches.load(Ordering::SeqCst) >= 2, "it retried");
    assert_eq!(ids(&w.instances()), ["a"], "still serving the last list");

    // Back: the opening reset carries what changed meanwhile.
    let second = reg.feed();
    second.send(reset(5, &["a", "b"])).unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    until_ids(&w, &["a", "b"]).await;
    watches
        .wait_for(|s| s.connected && s.index == 5)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_just_ends_is_reconnected_too() {
    let reg = Arc::new(Scripted::default());
    let first = reg.feed();
    let second = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    first.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    drop(first);
    second.send(reset(2, &["b"])).unwrap();
    until_ids(&w, &["b"]).await;
    assert_eq!(reg.watches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn ready_times_out_when_nothing_is_known() {
    let reg = Arc::new(Scripted::default());
    let options = DiscoveryOptions {
        ready_timeout: Duration::from_secs(2),
        ..DiscoveryOptions::default()
    };
    let d = discovery(reg.clone(), options);
    let w = d.service("svc");
    let err = w.ready().await.unwrap_err();
    assert_eq!(
        err,
        DiscoveryError::NotReady {
            service: "svc".into(),
            waited: Duration::from_secs(2)
        }
    );
    assert!(w.instances().is_empty());
    assert!(err.to_string().contains("svc"));
}

#[tokio::test(start_paused = true)]
async fn the_task_stops_when_discovery_and_handles_are_gone() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    drop(d);
    drop(w);
    // The task dropped its stream: the feed's receiver is gone.
    tokio::time::timeout(Duration::from_secs(5), feed.closed())
        .await
        .expect("task stopped");
}

#[tokio::test]
async fn persists_each_list_and_serves_it_when_the_registry_is_down_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let options = DiscoveryOptions {
        cache_dir: Some(dir.path().join("cache")),
        ready_timeout: Duration::from_secs(10),
        ..DiscoveryOptions::default()
    };
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), options.clone());
    let w = d.service("svc");
    feed.send(reset(7, &["a", "b"])).unwrap();
    until_ids(&w, &["a", "b"]).await;
    let path = dir.path().join("cache").join("svc.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok());
        if saved.is_some_and(|c| c.index == 7 && ids(&c.instances) == ["a", "b"]) {
            break;
        }
        assert!(Instant::now() < deadline, "cache file written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["svc.json"]);

    // A fresh process while the registry is down: the cached list is served.
    let down = Arc::new(Scripted::default());
    let fresh = discovery(down.clone(), options);
    let w2 = fresh.service("svc");
    assert_eq!(ids(&w2.ready().await.unwrap()), ["a", "b"]);
    assert_eq!(w2.status().source, Source::Cache);
    assert!(!w2.status().connected);

    // The registry comes back with a different list: it replaces the cache.
    let feed2 = down.feed();
    feed2.send(reset(9, &["b"])).unwrap();
    until_ids(&w2, &["b"]).await;
    assert_eq!(w2.status().source, Source::Registry);
}

#[tokio::test]
async fn a_corrupt_or_foreign_cache_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.json"), b"{not json").unwrap();
    let foreign = CacheFile {
        service: "other".into(),
        index: 1,
        instances: vec![inst("x")],
    };
    std::fs::write(
        dir.path().join("svc2.json"),
        serde_json::to_vec(&foreign).unwrap(),
    )
    .unwrap();
    let options = DiscoveryOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ready_timeout: Duration::from_millis(300),
        ..DiscoveryOptions::default()
    };
    let d = discovery(Arc::new(Scripted::default()), options);
    assert!(d.service("svc").ready().await.is_err());
    assert!(d.service("svc2").ready().await.is_err());
}

#[test]
fn cache_file_names_are_sanitised() {
    let p = cache_path(Path::new("/c"), "../etc/passwd");
    assert_eq!(p, Path::new("/c/.._etc_passwd.json"));
    assert_eq!(
        cache_path(Path::new("/c"), "user-service"),
        Path::new("/c/user-service.json")
    );
}

#[tokio::test(start_paused = true)]
async fn each_published_list_has_a_new_version_and_an_unchanged_list_keeps_it() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a", "b"])).unwrap();
    until_ids(&w, &["a", "b"]).await;
    let first = w.instances();
    assert_eq!(first.index(), 1);
    // Same length, other instances: a new version.
    feed.send(reset(2, &["a", "c"])).unwrap();
    until_ids(&w, &["a", "c"]).await;
    let second = w.instances();
    assert!(second.version() > first.version());
    // An update that changes nothing publishes nothing: the version stays.
    feed.send(reset(3, &["a", "c"])).unwrap();
    feed.send(remove(4, "nobody")).unwrap();
    settle().await;
    until_status(&w, |s| s.index == 4).await;
    assert_eq!(w.instances().version(), second.version());
}

#[tokio::test(start_paused = true)]
async fn changes_start_with_a_reset_and_carry_the_updates_behind_each_list() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a", "b"])).unwrap();
    until_ids(&w, &["a", "b"]).await;
    let mut changes = w.changes();
    assert_eq!(
        changes.next().await,
        Some(Update::Reset {
            index: 1,
            instances: vec![inst("a"), inst("b")],
        })
    );
    feed.send(Ok(Update::Add {
        index: 2,
        instance: inst("c"),
    }))
    .unwrap();
    feed.send(remove(3, "a")).unwrap();
    assert_eq!(
        changes.next().await,
        Some(Update::Add {
            index: 2,
            instance: inst("c"),
        })
    );
    assert_eq!(
        changes.next().await,
        Some(Update::Remove {
            index: 3,
            id: "a".into(),
        })
    );
    // A reconnect's Reset comes through as a Reset.
    drop(feed);
    let again = reg.feed();
    again.send(reset(4, &["c"])).unwrap();
    assert_eq!(
        changes.next().await,
        Some(Update::Reset {
            index: 4,
            instances: vec![inst("c")],
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_falls_behind_gets_a_reset_of_the_current_list() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let w = d.service("svc");
    feed.send(reset(1, &["a"])).unwrap();
    until_ids(&w, &["a"]).await;
    let mut changes = w.changes();
    assert!(matches!(
        changes.next().await,
        Some(Update::Reset { index: 1, .. })
    ));
    let n = u64::try_from(CHANGES_CAPACITY).unwrap() * 2;
    for i in 0..n {
        feed.send(Ok(Update::Add {
            index: 2 + i,
            instance: inst(&format!("x{i:03}")),
        }))
        .unwrap();
    }
    let last = format!("x{:03}", n - 1);
    let mut rx = w.updates();
    rx.wait_for(|l| l.iter().any(|i| i.id == last))
        .await
        .unwrap();
    match changes.next().await {
        Some(Update::Reset { index, instances }) => {
            assert_eq!(index, 1 + n);
            assert_eq!(instances.len(), 1 + n as usize);
        }
        other => panic!("expected a Reset after falling behind, got {other:?}"),
    }
}

fn set(index: u64, names: &[&str]) -> Result<ServiceSet, RegistryError> {
    Ok(ServiceSet {
        index,
        services: names.iter().map(|n| n.to_string()).collect(),
    })
}

#[tokio::test(start_paused = true)]
async fn the_catalog_follows_the_set_of_services_and_reconnects_with_backoff() {
    let reg = Arc::new(Scripted::default());
    let feed = reg.catalog_feed();
    let d = discovery(reg.clone(), DiscoveryOptions::default());
    let mut catalog = d.catalog();
    assert!(catalog.borrow().is_none(), "nothing known yet");
    feed.send(set(1, &["a", "b"])).unwrap();
    let names = |c: &Option<ServiceSet>| {
        c.as_ref()
            .map(|s| s.services.iter().cloned().collect::<Vec<_>>())
    };
    catalog.wait_for(|c| c.is_some()).await.unwrap();
    assert_eq!(names(&catalog.borrow_and_update()).unwrap(), ["a", "b"]);
    // The same set at another index is not a change.
    feed.send(set(2, &["a", "b"])).unwrap();
    feed.send(set(3, &["a", "c"])).unwrap();
    catalog.changed().await.unwrap();
    assert_eq!(names(&catalog.borrow_and_update()).unwrap(), ["a", "c"]);
    // A second handle shares the watch.
    let _again = d.catalog();
    assert_eq!(reg.catalog_watches.load(Ordering::SeqCst), 1);

    // The watch breaks: the last set stays, and a later watch (after a backoff) brings the
    // new one.
    drop(feed);
    settle().await;
    assert_eq!(names(&catalog.borrow()).unwrap(), ["a", "c"]);
    let feed = reg.catalog_feed();
    feed.send(set(9, &["d"])).unwrap();
    tokio::time::timeout(Duration::from_secs(30), catalog.changed())
        .await
        .expect("reconnected")
        .unwrap();
    assert_eq!(names(&catalog.borrow()).unwrap(), ["d"]);
    assert!(reg.catalog_watches.load(Ordering::SeqCst) >= 2);
}
