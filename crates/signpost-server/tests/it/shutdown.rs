//! Shutdown waits: once `serve_all` returns, every background task the agent ran has stopped,
//! its database is closed (a new agent opens the same data dir at once) and every port it
//! listened on can be bound again.

use std::time::Duration;

use serde_json::json;
use signpost_server::agent::{Listeners, Listening};
use signpost_server::service;
use signpost_server::{Agent, AgentConfig};
use signpost_testkit::http_client;
use tokio::net::{TcpListener, UdpSocket};

use crate::common::eventually;

async fn bind() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn serve_returns_only_when_every_task_has_stopped_and_the_data_dir_and_ports_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..AgentConfig::default()
    };
    config.health.tick = signpost_core::model::Dur(20);
    let (http, http_addr) = bind().await;
    let (raft, raft_addr) = bind().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns_addr = udp.local_addr().unwrap();
    let dns_tcp = TcpListener::bind(dns_addr).await.unwrap();
    let agent = Agent::start_with(
        config.clone(),
        Listening {
            http: http_addr,
            raft: Some(raft_addr),
        },
    )
    .await
    .expect("the agent starts");
    eventually("the agent leads", || async { agent.is_leader() }).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = agent.clone();
    let served = tokio::spawn(async move {
        let listeners = Listeners {
            http,
            raft: Some(raft),
            dns: Some((udp, dns_tcp)),
        };
        serving
            .serve_all(listeners, async {
                let _ = stopped.await;
            })
            .await
    });

    // Something in every background corner: an active check, an open watch.
    let client = http_client();
    let resp = client
        .post(format!("http://{http_addr}/api/v1/services/web/instances"))
        .json(&json!({
            "id": "w1", "address": "127.0.0.1", "port": 1,
            "check": {"tcp": "127.0.0.1:1", "interval": "100ms"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    eventually("the check runs", || async {
        agent.health().active_checks() == 1
    })
    .await;
    let watch = client
        .get(format!("http://{http_addr}/api/v1/services/web/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    assert!(
        agent.background_tasks() >= 5,
        "batcher, health loop, check, raft and dns listeners: {}",
        agent.background_tasks()
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), served)
        .await
        .expect("shutdown ends within the grace period")
        .unwrap()
        .expect("the agent served cleanly");

    assert_eq!(agent.background_tasks(), 0, "no task still running");
    assert!(!agent.database_open(), "the database is closed");
    for addr in [http_addr, raft_addr, dns_addr] {
        TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("tcp {addr} is free again: {e}"));
    }
    UdpSocket::bind(dns_addr)
        .await
        .unwrap_or_else(|e| panic!("udp {dns_addr} is free again: {e}"));

    // The data dir opens at once, with what was written.
    let (http, http_addr) = bind().await;
    let again = Agent::start(config, http_addr)
        .await
        .expect("a new agent opens the data dir at once");
    eventually("the new agent leads", || async { again.is_leader() }).await;
    let key = signpost_core::InstanceKey::new("web", "w1");
    assert!(service::instance(&again, &service::Caller::internal(), &key).is_ok());
    again.serve(http, async {}).await.unwrap();
    assert_eq!(again.background_tasks(), 0);
    assert!(!again.database_open());
}
