//! The gateway's harness: test backends on 127.0.0.1:0 that record what reaches them and can
//! be killed, and a gateway in between, on top of `signpost-testkit` (the in-process agent on
//! 127.0.0.1:0 and deadline polling every crate's tests share).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use signpost_gateway::{Gateway, GatewayConfig, RouteStatus};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

pub use signpost_testkit::{eventually, http_client, Served, TestAgent};

/// What the gateway's tests ask of a test agent beyond the shared harness.
pub trait AgentExt {
    /// Registers the backend at 127.0.0.1:`port` as instance `id` of `service`, with
    /// `metadata` and no check (so passing); fails the test unless the agent accepts it.
    async fn add_instance(&self, service: &str, id: &str, port: u16, metadata: Value);
}

impl AgentExt for TestAgent {
    async fn add_instance(&self, service: &str, id: &str, port: u16, metadata: Value) {
        let body = json!({ "id": id, "address": "127.0.0.1", "port": port, "metadata": metadata });
        let (status, answer) = self.register(service, body).await;
        assert!((200..300).contains(&status), "register: {status} {answer}");
    }
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<TestBody>> + Send + Sync>;

/// A test upstream on 127.0.0.1:0 (HTTP/1.1, or h2c with prior knowledge).
pub struct Backend {
    pub addr: SocketAddr,
    /// Every request that reached it.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn respond(status: u16, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

impl Backend {
    /// A backend answering 200 with a JSON echo of what it got: its name, the method, the path
    /// and query, and the headers.
    pub async fn echo(name: &str) -> Backend {
        Self::echo_at("127.0.0.1", name).await
    }

    /// [`Backend::echo`] listening on another loopback address (`127.0.0.2`…).
    pub async fn echo_at(ip: &str, name: &str) -> Backend {
        let owned = name.to_string();
        Self::start_at(ip, false, move |req| {
            let name = owned.clone();
            async move {
                let headers: BTreeMap<String, String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                    .collect();
                let method = req.method().to_string();
                let uri = req.uri().to_string();
                let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                let json = json!({
                    "backend": name, "method": method, "uri": uri, "headers": headers,
                    "body_len": body.unwrap_or(0),
                });
                let mut r = respond(200, serde_json::to_vec(&json).unwrap());
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                r
            }
        })
        .await
    }

    /// A backend answering with `handler`.
    pub async fn start<F, Fut>(h2c: bool, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_at("127.0.0.1", h2c, handler).await
    }

    /// [`Backend::start`] listening on loopback address `ip`.
    pub async fn start_at<F, Fut>(ip: &str, h2c: bool, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = {
            let seen = seen.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                // Owned by this task: killing the task closes every connection.
                let mut conns = JoinSet::new();
                loop {
                    let (stream, _) = tokio::select! {
                        a = listener.accept() => a.unwrap(),
                        Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                    };
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let handler = handler.clone();
                    let seen = seen.clone();
                    conns.spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            seen.lock().unwrap().push(Seen {
                                method: req.method().to_string(),
                                uri: req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                version: req.version(),
                                headers: req.headers().clone(),
                            });
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        });
                        let io = TokioIo::new(stream);
                        if h2c {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .with_upgrades()
                                .await;
                        }
                    });
                }
            })
        };
        Backend {
            addr,
            seen,
            accepted,
            task: Some(task),
        }
    }

    /// Stops accepting and closes every connection, like a killed process.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A gateway on 127.0.0.1:0 (proxy and admin) fed by `agent`.
pub struct TestGateway {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    served: Served,
}

impl TestGateway {
    /// Starts a gateway with the TOML `config` (its listen addresses and registry are
    /// replaced by test ones).
    pub async fn start(agent: &TestAgent, config: &str) -> TestGateway {
        let mut config = GatewayConfig::from_toml(config).unwrap();
        config.registry.addrs = vec![agent.base.clone()];
        Self::start_with(config).await
    }

    pub async fn start_with(config: GatewayConfig) -> TestGateway {
        Self::start_serving(config, None).await
    }

    /// Like [`TestGateway::start`], serving clients with `workers` worker threads
    /// (`Gateway::serve_workers`).
    pub async fn start_workers(agent: &TestAgent, config: &str, workers: usize) -> TestGateway {
        let mut config = GatewayConfig::from_toml(config).unwrap();
        config.registry.addrs = vec![agent.base.clone()];
        config.workers = workers;
        Self::start_serving(config, Some(workers)).await
    }

    async fn start_serving(config: GatewayConfig, workers: Option<usize>) -> TestGateway {
        let gateway = Arc::new(Gateway::start(config).unwrap());
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let serving = gateway.clone();
        let (addr, served) = match workers {
            None => {
                let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = proxy.local_addr().unwrap();
                let served = Served::spawn("the gateway", |stopped| async move {
                    serving.serve(proxy, admin, stopped).await;
                });
                (addr, served)
            }
            Some(n) => {
                let proxy =
                    signpost_gateway::bind_workers("127.0.0.1:0".parse().unwrap(), n).unwrap();
                let addr = proxy[0].local_addr().unwrap();
                let served = Served::spawn("the gateway", |stopped| async move {
                    serving.serve_workers(proxy, admin, stopped).await.unwrap();
                });
                (addr, served)
            }
        };
        TestGateway {
            gateway,
            addr,
            admin: admin_addr,
            client: http_client(),
            served,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// What `GET /` on the admin port answers.
    pub async fn admin_index(&self) -> Value {
        let resp = self.client.get(self.admin_url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Service `name` as `GET /` on the admin port shows it (`Null` when not listed).
    pub async fn admin_service(&self, name: &str) -> Value {
        let index = self.admin_index().await;
        index["services"]
            .as_array()
            .and_then(|list| list.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn route(&self, name: &str) -> Option<RouteStatus> {
        self.gateway.routes().into_iter().find(|r| r.name == name)
    }

    /// Waits until route `name` has exactly `n` upstreams.
    pub async fn wait_upstreams(&self, name: &str, n: usize) {
        eventually(&format!("route {name} has {n} upstreams"), || async {
            self.route(name).is_some_and(|r| r.upstreams.len() == n)
        })
        .await;
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Stops serving and waits for the drain.
    pub async fn shutdown(mut self) {
        self.served.shutdown().await;
    }
}

/// A port nothing listens on (bound, then released).
pub async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Sends `req` over a fresh HTTP/1.1 connection to `addr` with exactly the headers given
/// (reqwest would add and normalise some); returns the response with its body collected.
pub async fn raw_request(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, bytes)
}
