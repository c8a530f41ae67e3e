//! Fuzz-style property tests of the agent's HTTP surface, through `oneshot` on the routers (no
//! socket): arbitrary methods, paths, query strings and JSON-ish bodies against the native and
//! Consul APIs never panic, never answer 5xx, and every error is a 4xx with a JSON body; the
//! same for the member routes (`/raft/*`, with the cluster secret they require).
//!
//! CI runs the default case count; a long run:
//! `PROPTEST_CASES=1000000 cargo test --release -p signpost-server --test it fuzz::`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use serde_json::Value;
use signpost_server::{Agent, AgentConfig};
use tower::ServiceExt;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

/// One agent in memory for all cases of a test, and the runtime that drives it.
struct App {
    runtime: tokio::runtime::Runtime,
    agent: Arc<Agent>,
}

impl App {
    fn start() -> App {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let agent = runtime.block_on(async {
            let mut config = AgentConfig {
                dev: true,
                ..AgentConfig::default()
            };
            config.cluster.secret = Some(SECRET.into());
            let agent = Agent::start(config, "127.0.0.1:1".parse().unwrap())
                .await
                .expect("the agent starts");
            crate::common::eventually("the agent leads", || async { agent.is_leader() }).await;
            agent
        });
        App { runtime, agent }
    }

    /// Sends one request through the agent's router: its status and body bytes.
    ///
    /// A blocking query may hold its answer for minutes and a watch streams forever, so
    /// neither may hang a case: an answer that has not come within [`HELD`] is status 0 (the
    /// caller checks only a long poll may do that), and a body still streaming after it is
    /// cut there (only a success may stream).
    fn call(&self, method: Method, uri: &str, body: Vec<u8>, secret: bool) -> (u16, Vec<u8>) {
        self.runtime.block_on(async {
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json");
            if secret {
                request = request.header(signpost_server::http::raft::SECRET_HEADER, SECRET);
            }
            let Ok(request) = request.body(Body::from(body)) else {
                return (400, b"{}".to_vec());
            };
            let answer = signpost_server::http::router(self.agent.clone()).oneshot(request);
            let Ok(response) = tokio::time::timeout(HELD, answer).await else {
                return (0, Vec::new());
            };
            let response = response.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX);
            match tokio::time::timeout(HELD, body).await {
                Ok(bytes) => (status, bytes.unwrap().to_vec()),
                Err(_) => {
                    assert!(status < 300, "{uri}: a {status} answer still streaming");
                    (status, Vec::new())
                }
            }
        })
    }
}

/// How long a case waits for an answer (or the rest of its body) before taking it as a long
/// poll or a stream.
const HELD: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a request may legitimately hold its answer: a blocking query or a watch.
fn may_hold(uri: &str) -> bool {
    uri.contains("index=") || uri.contains("/watch")
}

/// JSON-ish values: scalars, arrays and objects nested a few levels, with the field names
/// the APIs know among random ones.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "0ms",
            "0s",
            "10s",
            "http://h/",
            "h:1",
            "passing",
            "10.0.0.1",
            "9999999999999d"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "id", "service", "address", "port", "tags", "metadata", "weight", "check",
                        "ttl", "http", "tcp", "grpc", "interval", "timeout", "status", "Name",
                        "ID", "Address", "Port", "Check", "Checks", "TTL", "Interval", "HTTP",
                        "now_ms", "command", "Register", "KvSet", "Batch", "key", "value",
                    ])
                    .prop_map(String::from),
                    "[a-zA-Z_]{0,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: JSON, or arbitrary bytes now and then.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["users", "web", "i1", "a", "x%2Fy", "%00", "..", "UPPER", ""])
            .prop_map(String::from),
        1 => "[a-zA-Z0-9%._~-]{0,70}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pair = (
        prop::sample::select(vec![
            "index",
            "wait",
            "status",
            "tag",
            "recurse",
            "cas",
            "flags",
            "keys",
            "separator",
            "stale",
            "consistent",
            "passing",
            "filter",
            "token",
            "raw",
            "dc",
            "x",
        ]),
        prop_oneof![
            Just(String::new()),
            Just("18446744073709551615".to_string()),
            Just("-1".to_string()),
            Just("1ms".to_string()),
            Just("0".to_string()),
            "[a-zA-Z0-9%]{0,10}",
        ],
    )
        .prop_map(|(k, v)| format!("{k}={v}"));
    prop::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join("&"))
}

fn api_path() -> impl Strategy<Value = String> {
    let templates = vec![
        "/api/v1/services",
        "/api/v1/services/{}",
        "/api/v1/services/{}/instances",
        "/api/v1/services/{}/instances/{}",
        "/api/v1/services/{}/instances/{}/heartbeat",
        "/api/v1/services/{}/definition",
        "/api/v1/services/{}/watch",
        "/api/v1/heartbeats",
        "/api/v1/kv/{}",
        "/api/v1/agent/self",
        "/api/v1/cluster/members",
        "/v1/agent/service/register",
        "/v1/agent/service/deregister/{}",
        "/v1/agent/check/pass/{}",
        "/v1/agent/check/register",
        "/v1/catalog/register",
        "/v1/catalog/services",
        "/v1/catalog/service/{}",
        "/v1/health/service/{}",
        "/v1/kv/{}",
        "/v1/txn",
        "/v1/status/leader",
        "/{}",
    ];
    (prop::sample::select(templates), segment(), segment())
        .prop_map(|(t, a, b)| t.replacen("{}", &a, 1).replacen("{}", &b, 1))
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ])
}

/// The answer is not a server error, and an error carries a JSON body.
fn judge(what: &str, status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if status >= 400 && !body.is_empty() {
        prop_assert!(
            serde_json::from_slice::<Value>(body).is_ok(),
            "{what}: a {status} without a JSON body: {}",
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

/// 64 cases a test (CI), or `PROPTEST_CASES` for a long run.
fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn api_requests_never_panic_and_errors_are_json_4xx() {
    let app = App::start();
    proptest!(cases(), |(m in method(), path in api_path(), q in query(), b in body())| {
        let uri = if q.is_empty() { path } else { format!("{path}?{q}") };
        let (status, bytes) = app.call(m.clone(), &uri, b, false);
        if status == 0 {
            prop_assert!(may_hold(&uri), "{m} {uri}: no answer in {HELD:?}");
            return Ok(());
        }
        judge(&format!("{m} {uri}"), status, &bytes)?;
    });
    // Whatever was accepted, the stored state still renders.
    for uri in [
        "/api/v1/services",
        "/v1/catalog/services",
        "/v1/kv/?recurse",
    ] {
        let (status, body) = app.call(Method::GET, uri, Vec::new(), false);
        assert!(
            status == 200 || status == 404,
            "{uri}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn member_routes_refuse_garbage_with_4xx() {
    let app = App::start();
    let routes = vec![
        "/raft/append",
        "/raft/vote",
        "/raft/snapshot",
        "/raft/propose",
        "/raft/read_index",
        "/raft/ttl",
        "/raft/join",
        "/raft/remove",
    ];
    proptest!(cases(), |(route in prop::sample::select(routes), b in body())| {
        let (status, bytes) = app.call(Method::POST, route, b, true);
        prop_assert!(
            status != 0 && status < 500,
            "{route}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    });
    // Without the secret, nothing is even read.
    let (status, _) = app.call(Method::POST, "/raft/propose", b"{}".to_vec(), false);
    assert_eq!(status, 401);
}
