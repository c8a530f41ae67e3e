//! `ServiceClient` end to end: real axum backends on 127.0.0.1:0, and for discovery an
//! in-process Signpost agent.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use signpost_client::balance::{ConsistentHash, RoundRobin, ZoneAware};
use signpost_client::breaker::{BreakerConfig, BreakerState, OutlierConfig};
use signpost_client::client::{CallError, ServiceClient, StaticInstances};
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::registration::Registration;
use signpost_client::retry::{Backoff, Jitter, RetryBudget, RetryPolicy};
use signpost_client::Instance;
use tokio::sync::oneshot;

mod common;
use common::{eventually, AgentExt, TestAgent};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Backends

/// A backend's shared state, visible to the test.
#[derive(Clone)]
struct Shared {
    /// The instance id it answers with.
    id: String,
    /// Requests served.
    hits: Arc<AtomicUsize>,
    /// When non-zero, every route but `/health` answers this status.
    fail_with: Arc<AtomicU16>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Who {
    instance: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct User {
    id: u64,
    name: String,
}

fn router(shared: Shared) -> Router {
    async fn who(State(s): State<Shared>) -> axum::response::Response {
        if let Some(code) = failing(&s) {
            return code.into_response();
        }
        Json(Who { instance: s.id }).into_response()
    }
    async fn user(State(s): State<Shared>, Path(id): Path<u64>) -> axum::response::Response {
        if let Some(code) = failing(&s) {
            return code.into_response();
        }
        if id == 0 {
            return (StatusCode::NOT_FOUND, "no such user").into_response();
        }
        Json(User {
            id,
            name: format!("user {id} from {}", s.id),
        })
        .into_response()
    }
    async fn echo(State(s): State<Shared>, Json(body): Json<Value>) -> axum::response::Response {
        if let Some(code) = failing(&s) {
            return code.into_response();
        }
        Json(json!({ "instance": s.id, "echo": body })).into_response()
    }
    async fn remove(State(s): State<Shared>, Path(id): Path<u64>) -> Json<Value> {
        s.hits.fetch_add(1, Ordering::SeqCst);
        Json(json!({ "instance": s.id, "deleted": id }))
    }
    async fn status(State(s): State<Shared>, Path(code): Path<u16>) -> StatusCode {
        s.hits.fetch_add(1, Ordering::SeqCst);
        StatusCode::from_u16(code).unwrap()
    }
    async fn slow(State(s): State<Shared>) -> Json<Who> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Json(Who { instance: s.id })
    }
    fn failing(s: &Shared) -> Option<StatusCode> {
        s.hits.fetch_add(1, Ordering::SeqCst);
        match s.fail_with.load(Ordering::SeqCst) {
            0 => None,
            code => Some(StatusCode::from_u16(code).unwrap()),
        }
    }
    Router::new()
        .route("/who", get(who))
        .route("/users/{id}", get(user).put(echo).delete(remove))
        .route("/echo", post(echo))
        .route("/status/{code}", get(status).post(status))
        .route("/slow", get(slow))
        .route("/text", get(|| async { "not json" }))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route("/health", get(|| async { "ok" }))
        .with_state(shared)
}

/// An axum backend on its own runtime and thread, so that killing it closes every connection,
/// like a process dying.
struct Backend {
    shared: Shared,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(id: &str) -> Backend {
        let shared = Shared {
            id: id.to_string(),
            hits: Arc::default(),
            fail_with: Arc::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let app = router(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound_tx.send(listener.local_addr().unwrap()).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: all sockets close.
        });
        let addr = bound_rx.recv().unwrap();
        Backend {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn instance(&self) -> Instance {
        Instance {
            id: self.shared.id.clone(),
            service: "users".into(),
            address: "127.0.0.1".into(),
            port: self.addr.port(),
            tags: vec![],
            metadata: BTreeMap::new(),
            weight: 100,
            state: Default::default(),
            maintenance: None,
        }
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn fail_with(&self, code: u16) {
        self.shared.fail_with.store(code, Ordering::SeqCst);
    }

    /// Stops the backend; returns once its runtime (and every connection) is gone.
    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::start(&format!("users-{i}")))
        .collect()
}

fn fixed(backends: &[Backend]) -> StaticInstances {
    StaticInstances::new("users", backends.iter().map(Backend::instance).collect())
}

/// Fast backoff so retries do not slow the tests down.
fn quick_retries() -> RetryPolicy {
    RetryPolicy::default().backoff(Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
        jitter: Jitter::Full,
    })
}

// ---------------------------------------------------------------------------------------------
// With discovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_discovered_instances_and_fail_over_when_one_dies() {
    let agent = TestAgent::start().await;
    let registry = agent.registry();
    let mut backends = backends(3);
    let mut registrations = Vec::new();
    for b in &backends {
        let handle = Registration::builder("users", "127.0.0.1", b.addr.port())
            .id(b.shared.id.clone())
            .ttl(Duration::from_secs(30))
            .register(registry.clone())
            .await
            .unwrap();
        registrations.push(handle);
    }
    let discovery = Discovery::new(registry.clone(), DiscoveryOptions::default());
    let watch = discovery.service("users");
    let probe = watch.clone();
    eventually("all three instances are discovered", || {
        let n = probe.instances().len();
        async move { n == 3 }
    })
    .await;
    let client = ServiceClient::builder(watch.clone())
        .balancer(RoundRobin::new())
        .retry(quick_retries())
        .timeout(Duration::from_secs(5))
        .build();

    // Spread: round robin over three instances, each answers a third of the calls.
    let mut answered: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let reply = client
            .request(Method::GET, "/who")
            .send::<Who>()
            .await
            .unwrap();
        assert_eq!(reply.body.instance, reply.instance.id);
        assert_eq!(reply.attempts, 1);
        *answered.entry(reply.body.instance).or_default() += 1;
    }
    assert_eq!(answered.len(), 3, "{answered:?}");
    assert!(answered.values().all(|n| *n == 10), "{answered:?}");

    // One instance dies but stays registered: GETs are retried on another instance, so no call
    // fails; its breaker opens and it stops being tried.
    backends[1].kill();
    let dead = backends[1].shared.id.clone();
    let mut failed = 0;
    for i in 0..60 {
        match client.get::<User>(&format!("/users/{}", i + 1)).await {
            Ok(user) => assert!(!user.name.ends_with(&dead)),
            Err(e) => {
                failed += 1;
                eprintln!("call {i} failed: {e}");
            }
        }
    }
    assert_eq!(failed, 0, "GETs are retried away from the dead instance");
    let selector = client.selector();
    assert_ne!(selector.breaker_state(&dead), BreakerState::Closed);

    // POSTs are not idempotent: only connect errors (nothing sent) are retried, so at most the
    // request racing the dead connection could fail.
    let mut failed_posts = 0;
    for i in 0..30 {
        if client
            .post::<_, Value>("/echo", &json!({ "n": i }))
            .await
            .is_err()
        {
            failed_posts += 1;
        }
    }
    assert!(failed_posts <= 1, "{failed_posts} POSTs failed");

    // It is deregistered: discovery drops it, and the client never tries it again.
    let dead_registration = registrations.remove(1);
    dead_registration.deregister().await.unwrap();
    eventually("the dead instance leaves the list", || {
        let n = probe.instances().len();
        async move { n == 2 }
    })
    .await;
    let mut answered: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let reply = client
            .request(Method::GET, "/who")
            .send::<Who>()
            .await
            .unwrap();
        assert_eq!(reply.attempts, 1);
        *answered.entry(reply.body.instance).or_default() += 1;
    }
    assert_eq!(answered.len(), 2);
    assert!(!answered.contains_key(&dead));

    // A new instance registers: the client starts using it without being rebuilt.
    let newcomer = Backend::start("users-new");
    let _reg = Registration::builder("users", "127.0.0.1", newcomer.addr.port())
        .id("users-new")
        .ttl(Duration::from_secs(30))
        .register(registry.clone())
        .await
        .unwrap();
    eventually("the new instance is discovered", || {
        let n = probe.instances().len();
        async move { n == 3 }
    })
    .await;
    for _ in 0..9 {
        client.get::<Who>("/who").await.unwrap();
    }
    assert_eq!(newcomer.hits(), 3);
    drop(registrations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_down_fails_fast_with_circuit_open_and_recovers() {
    let agent = TestAgent::start().await;
    let registry = agent.registry();
    let backends = backends(2);
    let mut registrations = Vec::new();
    for b in &backends {
        registrations.push(
            Registration::builder("users", "127.0.0.1", b.addr.port())
                .id(b.shared.id.clone())
                .register(registry.clone())
                .await
                .unwrap(),
        );
    }
    let discovery = Discovery::new(registry, DiscoveryOptions::default());
    let watch = discovery.service("users");
    watch.ready().await.unwrap();
    eventually("both instances are discovered", || {
        let n = watch.instances().len();
        async move { n == 2 }
    })
    .await;
    let client = ServiceClient::builder(watch.clone())
        .breaker(BreakerConfig {
            consecutive_failures: 3,
            cool_down: Duration::from_millis(300),
            ..BreakerConfig::default()
        })
        .no_outlier_detection()
        .retry(quick_retries())
        .build();

    // Both answer 503: calls fail (after retrying the other instance) until both breakers open.
    for b in &backends {
        b.fail_with(503);
    }
    let mut calls = 0;
    let err = loop {
        calls += 1;
        assert!(calls < 20, "breakers never opened");
        match client.get::<Who>("/who").await {
            Err(CallError::CircuitOpen { service }) => {
                assert_eq!(service, "users");
                break CallError::CircuitOpen { service };
            }
            Err(CallError::Status { code: 503, .. }) => {}
            Err(CallError::RetryBudgetExhausted { last }) => {
                assert_eq!(last.status(), Some(503))
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(matches!(err, CallError::CircuitOpen { .. }));
    // Open: no request reaches any backend, and the answer is immediate.
    let hits: usize = backends.iter().map(Backend::hits).sum();
    let started = Instant::now();
    for _ in 0..50 {
        assert!(matches!(
            client.get::<Who>("/who").await,
            Err(CallError::CircuitOpen { .. })
        ));
    }
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(backends.iter().map(Backend::hits).sum::<usize>(), hits);

    // They recover: after the cool-down a probe goes through, succeeds, and the circuit closes.
    for b in &backends {
        b.fail_with(0);
    }
    eventually("calls succeed again", || {
        let client = client.clone();
        async move { client.get::<Who>("/who").await.is_ok() }
    })
    .await;
    let selector = client.selector();
    eventually("both breakers close", || {
        let closed = backends
            .iter()
            .all(|b| selector.breaker_state(&b.shared.id) == BreakerState::Closed);
        let client = client.clone();
        async move {
            let _ = client.get::<Who>("/who").await;
            closed
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Fixed instances (no agent needed)

#[tokio::test]
async fn typed_json_calls() {
    let backends = backends(1);
    let client = ServiceClient::builder(fixed(&backends)).build();

    let user: User = client.get("/users/7").await.unwrap();
    assert_eq!(user.id, 7);
    assert_eq!(user.name, "user 7 from users-0");

    let echoed: Value = client
        .post("/echo", &json!({ "name": "ada" }))
        .await
        .unwrap();
    assert_eq!(echoed["echo"]["name"], "ada");
    let put: Value = client.put("/users/7", &user).await.unwrap();
    assert_eq!(put["echo"]["id"], 7);
    let deleted: Value = client.delete("/users/7").await.unwrap();
    assert_eq!(deleted, json!({ "instance": "users-0", "deleted": 7 }));

    // An empty body decodes as `()`.
    client.get::<()>("/empty").await.unwrap();
    // Something that is not the expected JSON is a decode error.
    assert!(matches!(
        client.get::<User>("/text").await,
        Err(CallError::Decode { .. })
    ));
    assert!(matches!(
        client.get::<User>("users/7").await,
        Err(CallError::InvalidRequest(_))
    ));
    // Headers and the reply's metadata.
    let reply = client
        .request(Method::GET, "/who")
        .header("x-request-id", "abc")
        .send::<Who>()
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.instance.id, "users-0");
    assert_eq!(reply.headers["content-type"], "application/json");
}

#[tokio::test]
async fn no_instances_is_a_typed_error() {
    let client = ServiceClient::builder(StaticInstances::new("nobody", vec![])).build();
    match client.get::<Value>("/who").await {
        Err(CallError::NoInstances { service }) => assert_eq!(service, "nobody"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_and_do_not_open_breakers() {
    let backends = backends(2);
    let client = ServiceClient::builder(fixed(&backends))
        .breaker(BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        })
        .retry(quick_retries())
        .build();
    for _ in 0..10 {
        match client.get::<User>("/users/0").await {
            Err(CallError::Status { code, body, .. }) => {
                assert_eq!(code, 404);
                assert_eq!(body, "no such user");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Ten calls, ten requests: no retries.
    assert_eq!(backends.iter().map(Backend::hits).sum::<usize>(), 10);
    let selector = client.selector();
    assert!(selector.breakers().unwrap().all_closed());
    // A 500 is the instance's fault but not retried by default either.
    assert_eq!(
        client
            .get::<Value>("/status/500")
            .await
            .unwrap_err()
            .status(),
        Some(500)
    );
    assert_eq!(backends.iter().map(Backend::hits).sum::<usize>(), 11);
}

#[tokio::test]
async fn gateway_errors_are_retried_on_another_instance_for_idempotent_calls_only() {
    let backends = backends(2);
    backends[0].fail_with(503);
    let client = ServiceClient::builder(fixed(&backends))
        .balancer(RoundRobin::new())
        .no_breaker()
        .no_outlier_detection()
        .retry(quick_retries())
        .build();
    // Round robin starts at users-0, which fails; the retry goes to users-1.
    let reply = client
        .request(Method::GET, "/who")
        .send::<Who>()
        .await
        .unwrap();
    assert_eq!(reply.body.instance, "users-1");
    assert_eq!(reply.attempts, 2);
    assert_eq!((backends[0].hits(), backends[1].hits()), (1, 1));

    // A POST to users-0 is not retried.
    let err = client
        .post::<_, Value>("/echo", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.instance(), Some("users-0"));
    assert_eq!((backends[0].hits(), backends[1].hits()), (2, 1));

    // Unless the caller vouches for it.
    let reply = client
        .request(Method::POST, "/echo")
        .json(&json!({}))
        .idempotent(true)
        .send::<Value>()
        .await
        .unwrap();
    assert_eq!(reply.body["instance"], "users-1");
}

#[tokio::test]
async fn connect_errors_are_retried_for_any_method() {
    let mut backends = backends(2);
    backends[0].kill();
    let client = ServiceClient::builder(fixed(&backends))
        .balancer(RoundRobin::new())
        .retry(quick_retries())
        .build();
    for i in 0..10 {
        let reply: Value = client.post("/echo", &json!({ "i": i })).await.unwrap();
        assert_eq!(reply["instance"], "users-1");
    }
}

#[tokio::test]
async fn timeouts_produce_timeout_errors() {
    let backends = backends(1);
    let client = ServiceClient::builder(fixed(&backends))
        .timeout(Duration::from_millis(100))
        .build();
    let started = Instant::now();
    match client.get::<Who>("/slow").await {
        Err(CallError::Timeout { instance, after }) => {
            assert_eq!(instance, "users-0");
            assert_eq!(after, Duration::from_millis(100));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The per-call timeout can be raised for one call.
    let quick: Who = client
        .request(Method::GET, "/who")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .body;
    assert_eq!(quick.instance, "users-0");
}

#[tokio::test]
async fn an_empty_retry_budget_is_reported() {
    let backends = backends(2);
    for b in &backends {
        b.fail_with(503);
    }
    let client = ServiceClient::builder(fixed(&backends))
        .no_breaker()
        .retry(quick_retries().budget_with(Arc::new(RetryBudget::new(
            0.0,
            0,
            Duration::from_secs(10),
        ))))
        .build();
    match client.get::<Who>("/who").await {
        Err(CallError::RetryBudgetExhausted { last }) => assert_eq!(last.status(), Some(503)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(backends.iter().map(Backend::hits).sum::<usize>(), 1);
}

#[tokio::test]
async fn the_retry_budget_bounds_retries_when_everything_fails() {
    let backends = backends(3);
    for b in &backends {
        b.fail_with(503);
    }
    let client = ServiceClient::builder(fixed(&backends))
        .no_breaker()
        .no_outlier_detection()
        .retry(
            quick_retries()
                .max_attempts(3)
                .budget_with(Arc::new(RetryBudget::new(0.2, 2, Duration::from_secs(60)))),
        )
        .build();
    for _ in 0..100 {
        assert!(client.get::<Who>("/who").await.is_err());
    }
    let requests: usize = backends.iter().map(Backend::hits).sum();
    // 100 calls + at most 20 % + the 2-per-second reserve (a few seconds' worth at most).
    assert!(requests >= 120, "{requests}");
    assert!(requests <= 100 + 20 + 2 * 10, "{requests} requests");
}

#[tokio::test]
async fn outlier_ejection_takes_a_failing_instance_out_of_rotation() {
    let backends = backends(2);
    backends[0].fail_with(500);
    let client = ServiceClient::builder(fixed(&backends))
        .balancer(RoundRobin::new())
        .no_breaker()
        .outlier_detection(OutlierConfig {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(60),
            ..OutlierConfig::default()
        })
        .retry(RetryPolicy::none())
        .build();
    for _ in 0..20 {
        let _ = client.get::<Who>("/who").await;
    }
    // Two failures, then ejected: every later call went to users-1.
    assert_eq!(backends[0].hits(), 2);
    assert_eq!(backends[1].hits(), 18);
    assert!(client.selector().is_ejected("users-0"));
}

#[tokio::test]
async fn consistent_hashing_routes_a_key_to_the_same_instance() {
    let backends = backends(4);
    let client = ServiceClient::builder(fixed(&backends))
        .balancer(ConsistentHash::new())
        .build();
    for user in 0..10 {
        let key = format!("user-{user}");
        let first = client
            .request(Method::GET, "/who")
            .key(&key)
            .send::<Who>()
            .await
            .unwrap()
            .body;
        for _ in 0..3 {
            let again = client
                .request(Method::GET, "/who")
                .key(&key)
                .send::<Who>()
                .await
                .unwrap()
                .body;
            assert_eq!(again, first);
        }
    }
}

#[tokio::test]
async fn zone_aware_routing_stays_local_and_spills_over_when_the_local_zone_fails() {
    let backends = backends(3);
    let instances: Vec<Instance> = backends
        .iter()
        .zip(["eu-1a", "eu-1a", "eu-1b"])
        .map(|(b, zone)| Instance {
            metadata: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            ..b.instance()
        })
        .collect();
    let client = ServiceClient::builder(StaticInstances::new("users", instances))
        .balancer(RoundRobin::new())
        .filter(ZoneAware::new("eu-1a"))
        .breaker(BreakerConfig {
            consecutive_failures: 2,
            cool_down: Duration::from_secs(60),
            ..BreakerConfig::default()
        })
        .no_outlier_detection()
        .retry(quick_retries())
        .build();
    for _ in 0..20 {
        client.get::<Who>("/who").await.unwrap();
    }
    assert_eq!((backends[0].hits(), backends[1].hits()), (10, 10));
    assert_eq!(backends[2].hits(), 0);

    // The local zone fails: GETs are retried into the other zone at once, and once both local
    // breakers are open every call goes there first time.
    backends[0].fail_with(503);
    backends[1].fail_with(503);
    for _ in 0..5 {
        let reply = client
            .request(Method::GET, "/who")
            .send::<Who>()
            .await
            .unwrap();
        assert_eq!(reply.body.instance, "users-2");
    }
    let selector = client.selector();
    assert_eq!(selector.breaker_state("users-0"), BreakerState::Open);
    assert_eq!(selector.breaker_state("users-1"), BreakerState::Open);
    let reply = client
        .request(Method::GET, "/who")
        .send::<Who>()
        .await
        .unwrap();
    assert_eq!(
        (reply.body.instance.as_str(), reply.attempts),
        ("users-2", 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Over a platform's registry

/// A service that must not depend on a registry finds its peer in the environment Kubernetes
/// injects, and calls it like any discovered service.
#[tokio::test]
async fn calls_a_service_found_in_the_environment() {
    use signpost_client::registry::env::EnvRegistry;
    let backends = backends(1);
    let port = backends[0].addr.port().to_string();
    let env = EnvRegistry::from_vars([
        ("USERS_SERVICE_HOST", "127.0.0.1"),
        ("USERS_SERVICE_PORT", port.as_str()),
    ]);
    let discovery = Discovery::new(Arc::new(env), DiscoveryOptions::default());
    let watch = discovery.service("users");
    watch.ready().await.unwrap();
    let client = ServiceClient::builder(watch.clone()).build();
    let user: User = client.get("/users/3").await.unwrap();
    assert_eq!(user.name, "user 3 from users-0");
    assert_eq!(backends[0].hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// Fallbacks

/// The process's Prometheus recorder (installed once for this test binary), to read the SDK's
/// counters back.
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        handle
    })
}

/// `signpost_client_fallbacks_total{service="<service>"}` in the render, 0 when absent.
fn fallbacks_counted(service: &str) -> u64 {
    let needle = format!("signpost_client_fallbacks_total{{service=\"{service}\"}} ");
    prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_fallback_answers_when_every_instance_is_down_and_the_metric_counts_it() {
    use signpost_client::client::Fallback;
    prometheus();
    let t = TestAgent::start().await;
    // Two registered, passing instances whose ports nobody listens on.
    for id in ["a", "b"] {
        let port = common::closed_port();
        let body = json!({"id": id, "address": "127.0.0.1", "port": port});
        assert_eq!(t.register("profiles", body).await.0, 201);
    }
    let discovery = Discovery::new(t.registry(), DiscoveryOptions::default());
    let watch = discovery.service("profiles");
    watch.ready().await.unwrap();
    eventually("both discovered", || async { watch.instances().len() == 2 }).await;
    let client = ServiceClient::builder(watch)
        .balancer(RoundRobin::new())
        .retry(RetryPolicy::default().max_attempts(2))
        .timeout(Duration::from_secs(2))
        .fallback(Fallback::from_fn(|call| {
            Some(json!({"id": call.path.trim_start_matches("/profiles/"), "name": "guest"}))
        }))
        .build();

    let before = fallbacks_counted("profiles");
    let reply = client
        .request(Method::GET, "/profiles/7")
        .send::<Value>()
        .await
        .expect("the fallback answers");
    assert!(reply.from_fallback);
    assert_eq!(reply.body, json!({"id": "7", "name": "guest"}));
    // Typed calls go through it too.
    let typed: Value = client.get("/profiles/8").await.unwrap();
    assert_eq!(typed["id"], "8");
    assert_eq!(fallbacks_counted("profiles"), before + 2);

    // With no instance at all (every one deregistered), the fallback still answers.
    for id in ["a", "b"] {
        assert_eq!(t.deregister("profiles", id).await, 204);
    }
    eventually("none left", || async { client.instances().is_empty() }).await;
    let reply = client
        .request(Method::GET, "/profiles/9")
        .send::<Value>()
        .await
        .unwrap();
    assert!(reply.from_fallback);
    assert_eq!(fallbacks_counted("profiles"), before + 3);

    // Without a fallback the same call is an error, and nothing is counted.
    let bare = ServiceClient::builder(StaticInstances::new("bare", vec![])).build();
    let err = bare.get::<Value>("/x").await.unwrap_err();
    assert!(matches!(err, CallError::NoInstances { .. }), "{err}");
    assert_eq!(fallbacks_counted("bare"), 0);
}

#[tokio::test]
async fn a_healthy_backend_answers_itself_and_a_client_error_is_not_covered_up() {
    use signpost_client::client::Fallback;
    let backend = Backend::start("real");
    let client = ServiceClient::builder(StaticInstances::new("users", vec![backend.instance()]))
        .fallback(Fallback::value(json!("fallback")))
        .build();
    let reply = client
        .request(Method::GET, "/who")
        .send::<Value>()
        .await
        .unwrap();
    assert!(!reply.from_fallback);
    assert_eq!(reply.attempts, 1);
    let err = client.get::<Value>("/status/404").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}
