//! The tower adapter: `tower::balance::p2c::Balance` over discovered instances.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use signpost_client::tower_discover::InstanceDiscover;
use signpost_client::Instance;
use tokio::sync::watch;
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

#[tokio::test]
async fn discover_yields_inserts_removes_and_replacements() {
    let (tx, rx) = watch::channel(Arc::new(vec![instance("a", 1), instance("b", 2)]));
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

    // b moves to another port, a leaves, c joins.
    tx.send(Arc::new(vec![instance("b", 3), instance("c", 4)]))
        .unwrap();
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
    tx.send(Arc::new(vec![instance("b", 3), instance("c", 4)]))
        .unwrap();
    drop(tx);
    assert!(discover.next().await.is_none());
}

#[tokio::test]
async fn p2c_balance_reaches_every_instance_and_stops_reaching_a_removed_one() {
    let hits: Hits = Arc::default();
    let (tx, rx) = watch::channel(Arc::new(vec![instance("a", 1), instance("b", 2)]));
    let mut balance = Balance::new(InstanceDiscover::new(rx, make(hits.clone())));

    for i in 0..200u32 {
        balance.ready().await.unwrap().call(i).await.unwrap();
    }
    {
        let hits = hits.lock().unwrap();
        assert!(hits["a"] > 20 && hits["b"] > 20, "{hits:?}");
    }

    // b is removed: from the next request on, only a serves.
    tx.send(Arc::new(vec![instance("a", 1)])).unwrap();
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
    tx.send(Arc::new(vec![instance("a", 1), instance("c", 3)]))
        .unwrap();
    for i in 0..200u32 {
        balance.ready().await.unwrap().call(i).await.unwrap();
    }
    assert!(hits.lock().unwrap().get("c").copied().unwrap_or(0) > 20);
}
