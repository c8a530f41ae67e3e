//! Shared harness of the SDK's integration tests: an in-process Signpost agent on 127.0.0.1
//! (in memory or durable, restartable on the same port), deadline polling, raw API helpers.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use signpost_client::registry::signpost::SignpostRegistry;
use signpost_client::registry::Registry;
use signpost_server::{Agent, AgentConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where an agent keeps its state.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In memory (`--dev`): a restart forgets everything.
    Dev,
    /// Durable in this directory: a restart finds everything again.
    Durable(PathBuf),
}

/// A running in-process agent. Dropping it stops it; [`TestAgent::shutdown`] also waits.
pub struct TestAgent {
    pub agent: Arc<Agent>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestAgent {
    /// An in-memory agent on a free port.
    pub async fn dev() -> TestAgent {
        Self::start(Storage::Dev, 0).await
    }

    /// An agent on `port` (0: any free port).
    pub async fn start(storage: Storage, port: u16) -> TestAgent {
        Self::start_with(storage, port, |_| async {}).await
    }

    /// Like [`TestAgent::start`], running `before_serving` once the agent leads but before it
    /// answers HTTP (clients connecting meanwhile wait in the listen backlog).
    pub async fn start_with<F, Fut>(storage: Storage, port: u16, before_serving: F) -> TestAgent
    where
        F: FnOnce(Arc<Agent>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut config = AgentConfig::default();
        match storage {
            Storage::Dev => config.dev = true,
            Storage::Durable(dir) => config.data_dir = Some(dir),
        }
        config.health.tick = signpost_core::model::Dur(20);
        let listener = bind(port).await;
        let addr = listener.local_addr().unwrap();
        let agent = start_agent(config, addr).await;
        eventually("the agent leads", || async { agent.is_leader() }).await;
        before_serving(agent.clone()).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = agent.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestAgent {
            agent,
            addr,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// A registry client for this agent alone.
    pub fn registry(&self) -> Arc<dyn Registry> {
        Arc::new(SignpostRegistry::new([self.base()]).unwrap())
    }

    /// Registers over HTTP; answers the status code.
    pub async fn register(&self, service: &str, body: Value) -> u16 {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/services/{service}/instances")))
            .json(&body)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }

    /// Deregisters over HTTP; answers the status code.
    pub async fn deregister(&self, service: &str, id: &str) -> u16 {
        let resp = self
            .client
            .delete(self.url(&format!("/api/v1/services/{service}/instances/{id}")))
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }

    /// Ids of `service`'s instances with `status` (`passing`, `any`, ...), sorted.
    pub async fn ids(&self, service: &str, status: &str) -> Vec<String> {
        let resp = self
            .client
            .get(self.url(&format!(
                "/api/v1/services/{service}/instances?status={status}"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let mut ids: Vec<String> = body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The status of one instance, or `None` if it is not registered.
    pub async fn status_of(&self, service: &str, id: &str) -> Option<String> {
        let resp = self
            .client
            .get(self.url(&format!("/api/v1/services/{service}/instances/{id}")))
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            return None;
        }
        let body: Value = resp.json().await.unwrap();
        body["status"].as_str().map(str::to_string)
    }

    /// Stops the agent and waits until it has (HTTP closed, Raft and storage shut down).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the agent stops within its drain grace")
                .unwrap();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.agent.health.stop();
    }
}

/// Binds 127.0.0.1:`port`, retrying briefly while a previous owner lets go of it.
pub async fn bind(port: u16) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind 127.0.0.1:{port}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Starts an agent, retrying briefly while a previous agent's database is still being closed.
async fn start_agent(config: AgentConfig, addr: SocketAddr) -> Arc<Agent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Agent::start(config.clone(), addr).await {
            Ok(agent) => return agent,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "agent does not start: {e:#}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Registers an instance straight through the agent's Raft log, without HTTP.
pub async fn register_directly(agent: &Agent, service: &str, body: Value) {
    let registration: signpost_core::validate::Registration = serde_json::from_value(body).unwrap();
    let new = signpost_core::validate::registration(service, registration).unwrap();
    agent
        .propose(signpost_core::Command::Register(new))
        .await
        .unwrap();
}

/// A registration body with a long TTL check (so it stays passing without heartbeats).
pub fn instance(id: &str, port: u16) -> Value {
    json!({ "id": id, "address": "10.0.0.1", "port": port, "check": { "ttl": "1h" } })
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls `check` every 10 ms until it holds; fails after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), &mut check).await
}

/// Polls `check` every 10 ms until it holds; fails after `limit`.
pub async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sorted ids of a list of instances.
pub fn ids_of(list: &[signpost_client::Instance]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids
}
