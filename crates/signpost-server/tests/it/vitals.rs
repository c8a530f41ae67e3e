//! Failing loudly: an agent whose storage fails (a full disk, played by a redb backend that
//! fails writes on demand) reports itself unhealthy everywhere, stops answering reads as if all
//! were well, and runs its fatal hook (the binary: exit 1) after `[storage] fatal_exit_after`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::{DNSClass, Name, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use redb::backends::InMemoryBackend;
use redb::StorageBackend;
use serde_json::{json, Value};
use signpost_core::model::Dur;
use signpost_server::agent::{Listeners, Listening, StartOptions};
use signpost_server::{Agent, AgentConfig};
use signpost_testkit::{http_client, Served};
use tokio::net::{TcpListener, UdpSocket};

use crate::common::{eventually, instance};

/// In-memory storage whose writes and syncs fail while `full` is set: a disk that filled up.
#[derive(Debug)]
struct FullDisk {
    inner: InMemoryBackend,
    full: Arc<AtomicBool>,
}

impl FullDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FullDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

/// An agent on a [`FullDisk`], serving HTTP and DNS on 127.0.0.1 ports picked by the OS.
struct Failing {
    agent: Arc<Agent>,
    base: String,
    dns: SocketAddr,
    full: Arc<AtomicBool>,
    /// When the fatal hook ran, and with what message.
    exited: Arc<Mutex<Option<(Instant, String)>>>,
    served: Served,
}

async fn start(grace: Dur) -> Failing {
    let full = Arc::new(AtomicBool::new(false));
    let exited = Arc::new(Mutex::new(None));
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, dns) = (http.local_addr().unwrap(), udp.local_addr().unwrap());
    let mut config = AgentConfig {
        dev: true,
        ..AgentConfig::default()
    };
    config.storage.fatal_exit_after = grace;
    config.health.tick = Dur(20);
    let disk = full.clone();
    let hook = exited.clone();
    let options = StartOptions {
        backend: Some(Arc::new(move |builder: &redb::Builder| {
            builder.create_with_backend(FullDisk {
                inner: InMemoryBackend::new(),
                full: disk.clone(),
            })
        })),
        on_fatal: Some(Arc::new(move |message: &str| {
            *hook.lock().unwrap() = Some((Instant::now(), message.to_string()));
        })),
        ..StartOptions::from(Listening {
            http: addr,
            raft: None,
        })
    };
    let agent = Agent::start_with(config, options).await.unwrap();
    eventually("the agent leads", || async { agent.is_leader() }).await;
    let serving = agent.clone();
    let served = Served::spawn("the agent", |stopped| async move {
        let listeners = Listeners {
            http,
            raft: None,
            dns: Some((udp, tcp)),
        };
        serving.serve_all(listeners, stopped).await.unwrap();
    });
    Failing {
        agent,
        base: format!("http://{addr}"),
        dns,
        full,
        exited,
        served,
    }
}

impl Failing {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = http_client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, id: &str) -> u16 {
        let mut body = instance(8080);
        body["id"] = json!(id);
        http_client()
            .post(format!("{}/api/v1/services/web/instances", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn dns_code(&self) -> ResponseCode {
        let stream = UdpClientStream::builder(self.dns, TokioRuntimeProvider::default()).build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        client
            .query(
                Name::from_ascii("web.service.consul.").unwrap(),
                DNSClass::IN,
                RecordType::A,
            )
            .await
            .unwrap()
            .metadata
            .response_code
    }

    async fn metric(&self, line: &str) -> bool {
        let text = http_client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().any(|l| l == line)
    }
}

#[tokio::test]
async fn a_full_disk_makes_the_agent_unhealthy_everywhere_and_then_exit() {
    let grace = Duration::from_millis(1500);
    let mut t = start(Dur(1500)).await;
    assert_eq!(t.register("a").await, 201);
    assert_eq!(t.get("/health").await, (200, json!({"status": "ok"})));
    assert!(t.metric("signpost_healthy 1").await);
    let (code, leader) = t.get("/v1/status/leader").await;
    assert_eq!(code, 200);
    assert_ne!(leader, json!(""), "a leader is known while healthy");
    assert_eq!(t.dns_code().await, ResponseCode::NoError);

    // The disk fills up: the next write cannot be committed, and Raft stops with it.
    t.full.store(true, Ordering::SeqCst);
    let filled = Instant::now();
    let code = t.register("b").await;
    assert!(code >= 500, "a write on a full disk fails, got {code}");

    eventually("/health turns 503", || async {
        t.get("/health").await.0 == 503
    })
    .await;
    let (_, health) = t.get("/health").await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["reason"], "storage", "{health}");
    assert!(
        health["error"].as_str().unwrap().contains("storage"),
        "{health}"
    );
    assert_eq!(t.get("/v1/status/leader").await, (200, json!("")));
    assert!(t.metric("signpost_healthy 0").await);
    assert!(t.metric("signpost_unhealthy{reason=\"storage\"} 1").await);
    let (code, me) = t.get("/api/v1/agent/self").await;
    assert_eq!(code, 200);
    assert_eq!(me["health"]["reason"], "storage", "{me}");
    let (code, me) = t.get("/v1/agent/self").await;
    assert_eq!(code, 200);
    assert_eq!(me["Stats"]["signpost"]["health"]["status"], "unhealthy");

    // Reads no longer answer as if all were well.
    for path in [
        "/api/v1/services/web/instances",
        "/api/v1/services",
        "/v1/catalog/services",
        "/v1/health/service/web",
        "/api/v1/kv/x",
    ] {
        let (code, body) = t.get(path).await;
        assert_eq!(code, 503, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("cannot serve"),
            "{path}: {body}"
        );
    }
    assert_eq!(t.dns_code().await, ResponseCode::ServFail);

    // After the grace period, the fatal hook (the binary: exit 1) runs, once.
    eventually("the fatal hook runs", || async {
        t.exited.lock().unwrap().is_some()
    })
    .await;
    let (at, message) = t.exited.lock().unwrap().clone().unwrap();
    assert!(
        at.duration_since(filled) >= grace,
        "not before the grace period"
    );
    assert!(message.contains("storage"), "{message}");
    assert!(t.agent.vitals().failed().is_some());
    t.served.shutdown().await;
}

#[tokio::test]
async fn a_healthy_agent_never_runs_its_fatal_hook_and_shuts_down_cleanly() {
    let mut t = start(Dur(50)).await;
    assert_eq!(t.register("a").await, 201);
    t.served.shutdown().await;
    assert!(t.agent.vitals().failed().is_none());
    // Raft stopped by shutdown is not a failure; the watcher has ended (serve_all waits
    // for it), so the hook can no longer run.
    assert_eq!(t.agent.background_tasks(), 0);
    assert!(t.exited.lock().unwrap().is_none());
}

#[test]
fn udp_answers_are_cut_to_three_records_by_default_as_consul_does() {
    let c = AgentConfig::default();
    let dns = c.dns_config(std::net::IpAddr::from([127, 0, 0, 1]));
    assert_eq!(dns.udp_answer_limit, 3);
    let c = AgentConfig::from_toml("[dns]\nudp_answer_limit = 0").unwrap();
    assert_eq!(c.dns.udp_answer_limit, 0, "0 lifts the limit");
}

#[test]
fn fatal_exit_after_is_configurable_and_not_zero() {
    let c = AgentConfig::from_toml("dev = true\n[storage]\nfatal_exit_after = \"5s\"").unwrap();
    assert_eq!(c.storage.fatal_exit_after, Dur(5000));
    assert_eq!(AgentConfig::default().storage.fatal_exit_after, Dur(30_000));
    let c = AgentConfig::from_toml("dev = true\n[storage]\nfatal_exit_after = \"0s\"").unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("storage.fatal_exit_after"), "{err}");
}
