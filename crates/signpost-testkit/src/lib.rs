//! The harness the workspace's integration tests share: an in-process Signpost agent on
//! 127.0.0.1 (in memory or durable, restartable on the same port) with a small HTTP client for
//! its API, and polling with a deadline instead of fixed sleeps.
//!
//! Each crate's `tests/` keeps only what is its own (the SDK's registry clients, the gateway's
//! backends, the server's SSE reader) and builds on this.
//!
//! [`otlp`]: an OTLP/HTTP trace receiver, for the tracing tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use signpost_server::{Agent, AgentConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod otlp;

/// Where an agent keeps its state.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In memory (`--dev`): a restart forgets everything.
    Dev,
    /// Durable in this directory: a restart finds everything again.
    Durable(PathBuf),
}

/// A running in-process agent. Dropping it stops it; [`TestAgent::shutdown`] also waits until
/// it has stopped.
pub struct TestAgent {
    /// The agent itself, for what the HTTP API does not reach.
    pub agent: Arc<Agent>,
    /// Where it answers HTTP.
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub base: String,
    /// A client for its API (no proxy).
    pub client: reqwest::Client,
    served: Served,
}

impl TestAgent {
    /// An in-memory agent on a free port, its health checker ticking every 20 ms.
    pub async fn start() -> TestAgent {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestAgent::start`], with `tweak` applied to the configuration first.
    pub async fn start_with(tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
        let mut config = Self::config(Storage::Dev);
        tweak(&mut config);
        Self::launch(config, 0, |_| async {}).await
    }

    /// An agent keeping its state in `storage`, on `port` (0: any free port). Starting one on
    /// the port and directory of an agent just shut down restarts it.
    pub async fn start_on(storage: Storage, port: u16) -> TestAgent {
        Self::launch(Self::config(storage), port, |_| async {}).await
    }

    /// The configuration [`TestAgent::start_on`] uses: `storage`, health ticks of 20 ms.
    pub fn config(storage: Storage) -> AgentConfig {
        let mut config = AgentConfig::default();
        match storage {
            Storage::Dev => config.dev = true,
            Storage::Durable(dir) => config.data_dir = Some(dir),
        }
        config.health.tick = signpost_core::model::Dur(20);
        config
    }

    /// Starts an agent with `config` on `port` (0: any free port) and runs `before_serving`
    /// once it leads but before it answers HTTP (clients connecting meanwhile wait in the
    /// listen backlog).
    pub async fn launch<F, Fut>(config: AgentConfig, port: u16, before_serving: F) -> TestAgent
    where
        F: FnOnce(Arc<Agent>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let listener = bind(port).await;
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let agent = start_agent(config, addr).await;
        eventually("the agent leads", || async { agent.is_leader() }).await;
        before_serving(agent.clone()).await;
        let serving = agent.clone();
        let served = Served::spawn("the agent", |stopped| async move {
            serving
                .serve(listener, stopped)
                .await
                .expect("the agent serves until stopped");
        });
        TestAgent {
            agent,
            addr,
            base: format!("http://{addr}"),
            client: http_client(),
            served,
        }
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The URL of `path` on this agent.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: the status code and the JSON body (`null` when there is none).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers an instance of `service` over HTTP: the status code and the JSON body.
    pub async fn register(&self, service: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/services/{service}/instances")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Deregisters an instance over HTTP: the status code.
    pub async fn deregister(&self, service: &str, id: &str) -> u16 {
        let resp = self
            .client
            .delete(self.url(&format!("/api/v1/services/{service}/instances/{id}")))
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }

    /// Ids of `service`'s instances with `status` (`passing`, `critical`, `any`, ...), in the
    /// agent's order (not sorted here, so a test can check that order).
    pub async fn ids(&self, service: &str, status: &str) -> Vec<String> {
        let (code, body) = self
            .get(&format!(
                "/api/v1/services/{service}/instances?status={status}"
            ))
            .await;
        assert_eq!(code, 200, "{body}");
        body["instances"]
            .as_array()
            .expect("a listing has instances")
            .iter()
            .map(|i| i["id"].as_str().expect("an instance has an id").to_string())
            .collect()
    }

    /// The status of one instance, or `None` if it is not registered.
    pub async fn status_of(&self, service: &str, id: &str) -> Option<String> {
        let (code, body) = self
            .get(&format!("/api/v1/services/{service}/instances/{id}"))
            .await;
        if code != 200 {
            return None;
        }
        body["status"].as_str().map(str::to_string)
    }

    /// Stops the agent and waits until it has (HTTP closed, Raft and storage shut down).
    pub async fn shutdown(mut self) {
        self.served.shutdown().await;
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.served.stop();
        self.agent.health().stop();
    }
}

/// A server running in a task until told to stop: what [`TestAgent`] and other suites' test
/// servers (the gateway's) stand on. Dropping it tells the server to stop without waiting.
pub struct Served {
    /// What is served, for failure messages ("the agent").
    what: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The future a server is given to learn that it should stop (drain and return).
pub type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Served {
    /// Spawns `serve(stopped)`; `stopped` resolves once [`Served::stop`] is called or this
    /// handle is dropped.
    pub fn spawn<F, Fut>(what: &'static str, serve: F) -> Served
    where
        F: FnOnce(Stopped) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped: Stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        Served {
            what,
            stop: Some(stop),
            task: Some(tokio::spawn(serve(stopped))),
        }
    }

    /// Tells the server to stop; does not wait.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Tells the server to stop and waits until its task has ended; fails the test if that
    /// takes over 15 s or the task panicked.
    pub async fn shutdown(&mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let what = self.what;
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .unwrap_or_else(|_| panic!("{what} stops within its drain grace"))
                .unwrap_or_else(|e| panic!("{what} ended with {e}"));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client for loopback tests: no proxy, whatever the environment says.
pub fn http_client() -> reqwest::Client {
    signpost_tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain reqwest client builds")
}

/// Binds 127.0.0.1:`port`, retrying for up to 10 s while a previous owner lets go of it.
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

/// Starts an agent, retrying for up to 10 s while a previous agent's database is still being
/// closed.
async fn start_agent(config: AgentConfig, addr: SocketAddr) -> Arc<Agent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Agent::start(config.clone(), addr).await {
            Ok(agent) => return agent,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the agent does not start: {e:#}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Polls `check` every 10 ms until it holds; fails after 10 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), check).await
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
