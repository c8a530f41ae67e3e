//! The tower adapter: `tower::balance::p2c::Balance` over discovered instances.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use signpost_client::tower_discover::InstanceDiscover;
use signpost_client::{Instance, Update};
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, ServiceExt};

fn instance(id: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        service: "users".into(),
        address: "127.0.0.1".into(),
        port,
        tags: vec![],
        metadata: BTreeMap::new(),
        weight: 100,
        state: Default::default(),
        maintenance: None,
    }
}

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// A per-instance service that records which instance served each request.
#[derive(Clone)]
struct Recorder {
    id: String,
    hits: Hits,
}

impl Service<u32> for Recorder {
    type Response = String;
    type Error = Infallible;
    type Future = std::future::Ready<Result<String, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        *self
            .hits
            .lock()
            .unwrap()
            .entry(self.id.clone())
            .or_default() += 1;
        std::future::ready(Ok(self.id.clone()))
    }
}

fn make(hits: Hits) -> impl FnMut(&Instance) -> PendingRequests<Recorder> {
    move |instance: &Instance| {
        let svc = Recorder {
            id: instance.id.clone(),
            hits: hits.clone(),
        };
        PendingRequests::new(svc, CompleteOnResponse::default())
    }
}

/// An update channel that already holds a `Reset` to `instances`.
fn updates(instances: Vec<Instance>) -> (Sender, mpsc::UnboundedReceiver<Update>) {
    let (tx, rx) = mpsc::unbounded();
    let tx = Sender(tx, 1);
    tx.reset(instances);
    (tx, rx)
}

/// Sends updates with growing indexes.
struct Sender(mpsc::UnboundedSender<Update>, u64);

impl Sender {
    fn reset(&self, instances: Vec<Instance>) {
        self.0
            .unbounded_send(Update::Reset {
                index: self.1,
                instances,
            })
            .unwrap();
    }
    fn send(&self, update: Update) {
        self.0.unbounded_send(update).unwrap();
    }
}

#[tokio::test]
async fn discover_yields_inserts_removes_and_replacements() {
    let (tx, rx) = updates(vec![instance("a", 1), instance("b", 2)]);
    let mut discover = InstanceDiscover::new(rx, |i: &Instance| i.port);
    let mut inserted = vec![];
    for _ in 0..2 {
        match discover.next().await.unwrap().unwrap() {
            Change::Insert(id, port) => inserted.push((id, port)),
            Change::Remove(id) => panic!("unexpected remove of {id}"),
        }
    }
    inserted.sort();
    assert_eq!(inserted, [("a".to_string(), 1), ("b".to_string(), 2)]);

    // b moves to another port, a leaves, c joins (a new full list).
    tx.reset(vec![instance("b", 3), instance("c", 4)]);
    let mut changes = vec![];
    for _ in 0..4 {
        changes.push(match discover.next().await.unwrap().unwrap() {
            Change::Insert(id, port) => format!("+{id}:{port}"),
            Change::Remove(id) => format!("-{id}"),
        });
    }
    assert_eq!(changes, ["-a", "-b", "+b:3", "+c:4"]);
    assert_eq!(discover.instances().len(), 2);

    // The same list again changes nothing; the stream ends with the sender.
    tx.reset(vec![instance("b", 3), instance("c", 4)]);
    drop(tx);
    assert!(discover.next().await.is_none());
}

#[tokio::test]
async fn discover_follows_adds_updates_and_removes_without_a_full_list() {
    let (tx, rx) = updates(vec![instance("a", 1)]);
    let mut discover = InstanceDiscover::new(rx, |i: &Instance| i.port);
    let mut next = async || match discover.next().await.unwrap().unwrap() {
        Change::Insert(id, port) => format!("+{id}:{port}"),
        Change::Remove(id) => format!("-{id}"),
    };
    assert_eq!(next().await, "+a:1");
    tx.send(Update::Add {
        index: 2,
        instance: instance("b", 2),
    });
    assert_eq!(next().await, "+b:2");
    // An update that changes an instance replaces its service; one that changes nothing, and
    // the removal of an unknown id, yield nothing.
    tx.send(Update::Update {
        index: 3,
        instance: instance("a", 5),
    });
    tx.send(Update::Update {
        index: 4,
        instance: instance("b", 2),
    });
    tx.send(Update::Remove {
        index: 5,
        id: "nobody".into(),
    });
    tx.send(Update::Remove {
        index: 6,
        id: "b".into(),
    });
    assert_eq!(next().await, "-a");
    assert_eq!(next().await, "+a:5");
    assert_eq!(next().await, "-b");
    assert_eq!(
        discover.instances().keys().collect::<Vec<_>>(),
        ["a"],
        "only a is left"
    );
}

#[tokio::test]
async fn p2c_balance_reaches_every_instance_and_stops_reaching_a_removed_one() {
    let hits: Hits = Arc::default();
    let (tx, rx) = updates(vec![instance("a", 1), instance("b", 2)]);
    let mut balance = Balance::new(InstanceDiscover::new(rx, make(hits.clone())));

    for i in 0..200u32 {
        balance.ready().await.unwrap().call(i).await.unwrap();
    }
    {
        let hits = hits.lock().unwrap();
        assert!(hits["a"] > 20 && hits["b"] > 20, "{hits:?}");
    }

    // b is removed: from the next request on, only a serves.
    tx.send(Update::Remove {
        index: 2,
        id: "b".into(),
    });
    hits.lock().unwrap().clear();
    for i in 0..100u32 {
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            balance.ready().await.unwrap().call(i).await.unwrap()
        })
        .await
        .unwrap();
        assert_eq!(served, "a");
    }
    assert_eq!(hits.lock().unwrap().get("b"), None);

    // c joins and gets traffic.
    tx.send(Update::Add {
        index: 3,
        instance: instance("c", 3),
    });
    for i in 0..200u32 {
        balance.ready().await.unwrap().call(i).await.unwrap();
    }
    assert!(hits.lock().unwrap().get("c").copied().unwrap_or(0) > 20);
}
