//! `DnsRegistry` against Signpost's own DNS interface: an in-process agent with DNS served on
//! 127.0.0.1 ports picked by the OS (record TTL 0, so every re-resolution waits the floor).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;
use signpost_client::discovery::Discovery;
use signpost_client::registry::dns::{DnsLookup, DnsOptions, DnsRegistry};
use signpost_client::registry::{RegistrationSpec, Registry, RegistryError};
use signpost_client::Update;
use signpost_server::dns::{self, DnsConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{fast, ids_of, TestAgent};

/// The floor the tests run with; every change must show within it (plus a query's time).
const FLOOR: Duration = Duration::from_millis(200);
/// What "within the floor" allows for the query itself and a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

/// Signpost's DNS interface over a test agent.
struct AgentDns {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), dns::DnsError>>,
}

impl AgentDns {
    async fn start(t: &TestAgent) -> AgentDns {
        let config = DnsConfig {
            ttl: 0,
            node_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..DnsConfig::default()
        };
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // TCP on the same port, for truncated answers.
        let addr = udp.local_addr().unwrap();
        let tcp = match TcpListener::bind(addr).await {
            Ok(tcp) => tcp,
            Err(_) => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dns::serve(t.agent.clone(), config, udp, tcp, async {
            let _ = stopped.await;
        }));
        AgentDns {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn registry(&self) -> DnsRegistry {
        DnsRegistry::new(
            self.addr,
            DnsOptions {
                lookup: DnsLookup::signpost("consul"),
                ttl_floor: FLOOR,
                ttl_ceiling: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
            },
        )
        .unwrap()
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the DNS server stops")
            .unwrap()
            .unwrap();
    }
}

type Watch = BoxStream<'static, Result<Update, RegistryError>>;

/// The next update, which must come within the floor (and the slack); how long it took.
async fn next_within_floor(watch: &mut Watch) -> (Update, Duration) {
    let start = Instant::now();
    let update = tokio::time::timeout(FLOOR + SLACK, watch.next())
        .await
        .expect("an update within the TTL floor")
        .expect("the watch goes on")
        .expect("no error");
    (update, start.elapsed())
}

async fn register(t: &TestAgent, body: serde_json::Value) {
    let (code, resp) = t.register("web", body).await;
    assert!(code == 200 || code == 201, "{code} {resp}");
}

#[tokio::test]
async fn instances_appear_and_vanish_within_the_ttl_floor() {
    let t = TestAgent::start().await;
    let server = AgentDns::start(&t).await;
    let registry = server.registry();
    let mut watch = registry.watch("web");

    // No instance: the name does not exist, which is an empty service.
    match next_within_floor(&mut watch).await.0 {
        Update::Reset { index, instances } => {
            assert_eq!(index, 1);
            assert!(instances.is_empty(), "{instances:?}");
        }
        other => panic!("expected a reset, got {other:?}"),
    }

    // Registered: added, at its IP and port, with its weight.
    register(
        &t,
        json!({"id": "a", "address": "127.0.0.2", "port": 8001, "weight": 7, "check": {"ttl": "1h"}}),
    )
    .await;
    let (update, _) = next_within_floor(&mut watch).await;
    let Update::Add { instance, index } = update else {
        panic!("expected an add, got {update:?}");
    };
    assert_eq!(index, 2);
    assert_eq!(
        (instance.address.as_str(), instance.port),
        ("127.0.0.2", 8001)
    );
    assert_eq!(instance.id, "127.0.0.2:8001");
    assert_eq!(instance.service, "web");
    assert_eq!(instance.weight, 7);
    assert_eq!(
        registry.list("web").await.unwrap().1,
        std::slice::from_ref(&instance),
        "list answers the same"
    );

    // Deregistered: removed.
    assert_eq!(t.deregister("web", "a").await, 204);
    let (update, _) = next_within_floor(&mut watch).await;
    assert_eq!(
        update,
        Update::Remove {
            index: 3,
            id: "127.0.0.2:8001".into()
        }
    );

    // Turned critical (its TTL lapses without a heartbeat): added, then removed.
    register(
        &t,
        json!({"id": "b", "address": "127.0.0.3", "port": 8002, "check": {"ttl": "1s"}}),
    )
    .await;
    let (update, _) = next_within_floor(&mut watch).await;
    assert!(
        matches!(&update, Update::Add { instance, .. } if instance.id == "127.0.0.3:8002"),
        "{update:?}"
    );
    let critical = async {
        signpost_testkit::eventually("b turns critical", || async {
            t.status_of("web", "b").await.as_deref() == Some("critical")
        })
        .await;
        Instant::now()
    };
    let (removed, critical_at) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), watch.next()),
        critical
    );
    let removed_at = Instant::now();
    let update = removed.expect("removed once critical").unwrap().unwrap();
    assert_eq!(
        update,
        Update::Remove {
            index: 5,
            id: "127.0.0.3:8002".into()
        }
    );
    assert!(
        removed_at.saturating_duration_since(critical_at) <= FLOOR + SLACK,
        "removed {:?} after turning critical",
        removed_at.saturating_duration_since(critical_at)
    );

    server.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn discovery_follows_a_dns_registry_and_writes_are_unsupported() {
    let t = TestAgent::start().await;
    let server = AgentDns::start(&t).await;
    let registry: Arc<dyn Registry> = Arc::new(server.registry());
    register(
        &t,
        json!({"id": "a", "address": "127.0.0.2", "port": 8001, "check": {"ttl": "1h"}}),
    )
    .await;
    let discovery = Discovery::new(registry.clone(), fast());
    let web = discovery.service("web");
    web.ready().await.unwrap();
    super::eventually("a is discovered", || async {
        ids_of(&web.instances()) == ["127.0.0.2:8001"]
    })
    .await;
    register(
        &t,
        json!({"id": "b", "address": "::1", "port": 8002, "check": {"ttl": "1h"}}),
    )
    .await;
    super::eventually("b is discovered (IPv6)", || async {
        ids_of(&web.instances()) == ["127.0.0.2:8001", "[::1]:8002"]
    })
    .await;

    let spec = RegistrationSpec {
        instance: web.instances()[0].clone(),
        ttl: Duration::from_secs(10),
        deregister_after: None,
        check: None,
    };
    let err = registry.register(&spec).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Unsupported {
                operation: "register",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(registry.heartbeat("web", "a").await.is_err());
    assert!(registry.deregister("web", "a").await.is_err());

    server.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_resolver_is_unavailable() {
    // A UDP port nothing answers on (bound, then released): the query times out.
    let addr = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let registry = DnsRegistry::new(
        addr,
        DnsOptions {
            timeout: Duration::from_millis(200),
            ..DnsOptions::default()
        },
    )
    .unwrap();
    let err = registry.list("web").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let mut watch = registry.watch("web");
    assert!(watch.next().await.unwrap().unwrap_err().is_unavailable());
    assert!(
        watch.next().await.is_none(),
        "the watch ends after an error"
    );
}
