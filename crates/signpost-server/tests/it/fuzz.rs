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

/// A KV key: printable runs, any byte percent-encoded, the separators and dot segments the
/// routes could trip on, and keys past the length limit.
fn kv_key() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9_.~-]{1,12}",
        2 => prop::sample::select(vec!["/", "//", ".", "..", "%2F", "%2f", "%00", "%FF", "%", "%zz", "+", "%20", "%3F", "%23", "é", "\u{1F600}"])
            .prop_map(String::from),
        2 => prop::collection::vec(any::<u8>(), 1..8)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect()),
        1 => Just("k".repeat(600)),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// A KV request's query: the flags the KV routes read, with odd values.
fn kv_query() -> impl Strategy<Value = String> {
    let pair = (
        prop::sample::select(vec![
            "cas",
            "flags",
            "recurse",
            "keys",
            "separator",
            "raw",
            "index",
            "wait",
            "acquire",
            "x",
        ]),
        prop_oneof![
            Just(String::new()),
            Just("0".to_string()),
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            Just("-1".to_string()),
            Just("1ms".to_string()),
            "[a-zA-Z0-9/%]{0,6}",
        ],
    )
        .prop_map(|(k, v)| {
            if v.is_empty() {
                k.to_string()
            } else {
                format!("{k}={v}")
            }
        });
    prop::collection::vec(pair, 0..3).prop_map(|pairs| pairs.join("&"))
}

#[test]
fn kv_keys_never_panic_and_a_stored_value_reads_back() {
    let app = App::start();
    let faces = vec!["/v1/kv/", "/api/v1/kv/"];
    proptest!(cases(), |(
        face in prop::sample::select(faces),
        key in kv_key(),
        m in prop::sample::select(vec![Method::PUT, Method::GET, Method::DELETE]),
        q in kv_query(),
        value in prop::collection::vec(any::<u8>(), 0..32),
    )| {
        let path = format!("{face}{key}");
        let uri = if q.is_empty() { path.clone() } else { format!("{path}?{q}") };
        let (status, bytes) = app.call(m.clone(), &uri, value.clone(), false);
        if status == 0 {
            prop_assert!(may_hold(&uri), "{m} {uri}: no answer in {HELD:?}");
            return Ok(());
        }
        judge(&format!("{m} {uri}"), status, &bytes)?;
        // A plain Consul write that said `true` stored the value under that key.
        if m == Method::PUT && face == "/v1/kv/" && q.is_empty() && status == 200 && bytes == b"true" {
            let (status, read) = app.call(Method::GET, &format!("{path}?raw"), Vec::new(), false);
            prop_assert_eq!(status, 200, "{} read back: {}", path, String::from_utf8_lossy(&read));
            prop_assert_eq!(read, value, "{} read back another value", path);
        }
    });
    let (status, body) = app.call(Method::GET, "/v1/kv/?recurse", Vec::new(), false);
    assert!(
        status == 200 || status == 404,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
}

/// A check definition in Consul's shape, with wrong values often (negative or huge durations,
/// no scheme, several kinds at once).
fn consul_check() -> impl Strategy<Value = Value> {
    let duration = prop_oneof![
        Just(Value::from("10s")),
        Just(Value::from("0s")),
        Just(Value::from("-1s")),
        Just(Value::from("1ns")),
        Just(Value::from("9999999999999h")),
        Just(Value::from("soon")),
        Just(Value::from(10)),
        Just(Value::Null),
    ];
    let target = prop_oneof![
        Just(Value::from("http://127.0.0.1:1/health")),
        Just(Value::from("127.0.0.1:1")),
        Just(Value::from("ftp://x")),
        Just(Value::from("")),
        Just(Value::from("h".repeat(5000))),
        Just(Value::from(1)),
    ];
    (
        prop::sample::select(vec![
            "TTL",
            "HTTP",
            "TCP",
            "GRPC",
            "UDP",
            "ScriptArgs",
            "AliasService",
        ]),
        target,
        duration.clone(),
        duration.clone(),
        duration,
        prop::sample::select(vec!["passing", "warning", "critical", "maintenance", ""]),
        any::<bool>(),
    )
        .prop_map(|(kind, target, interval, timeout, after, status, both)| {
            let mut check = serde_json::Map::new();
            let value = if kind == "TTL" {
                interval.clone()
            } else {
                target.clone()
            };
            check.insert(kind.into(), value);
            if both {
                check.insert("HTTP".into(), target);
            }
            check.insert("Interval".into(), interval);
            check.insert("Timeout".into(), timeout);
            check.insert("DeregisterCriticalServiceAfter".into(), after);
            check.insert("Status".into(), status.into());
            Value::Object(check)
        })
}

/// A Consul service registration: every field present with a plausible or a wrong value.
fn consul_service() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        3 => prop::sample::select(vec!["web", "api", "db"]).prop_map(String::from),
        1 => ".{0,20}",
        1 => Just("n".repeat(300)),
    ];
    let port = prop_oneof![
        Just(Value::from(8080)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(65536)),
        Just(Value::from(i64::MAX)),
        Just(Value::from("80")),
        Just(Value::Null),
    ];
    let address = prop_oneof![
        Just(Value::from("10.0.0.1")),
        Just(Value::from("::1")),
        Just(Value::from("host.example")),
        Just(Value::from("")),
        Just(Value::from("1.2.3.4:5")),
        Just(Value::from("a b")),
        Just(Value::from(7)),
    ];
    (
        name,
        prop::option::of(".{0,20}"),
        port,
        address,
        prop::collection::vec(".{0,8}", 0..4),
        prop::collection::btree_map(".{0,10}", ".{0,10}", 0..4),
        (any::<i64>(), any::<i64>()),
        prop::option::of(consul_check()),
        prop::collection::vec(consul_check(), 0..3),
        json_value(),
    )
        .prop_map(
            |(name, id, port, address, tags, meta, weights, check, checks, extra)| {
                let mut s = serde_json::json!({
                    "Name": name,
                    "ID": id,
                    "Port": port,
                    "Address": address,
                    "Tags": tags,
                    "Meta": meta,
                    "Weights": { "Passing": weights.0, "Warning": weights.1 },
                    "Check": check,
                    "Checks": checks,
                });
                // One field now and then replaced by a value of another shape.
                if let (Value::Object(extra), Some(s)) = (extra, s.as_object_mut()) {
                    s.extend(extra);
                }
                s
            },
        )
}

#[test]
fn consul_registrations_never_panic_and_what_is_accepted_is_listed() {
    let app = App::start();
    proptest!(cases(), |(service in consul_service(), catalog in any::<bool>(), node in ".{0,12}")| {
        let (uri, body) = if catalog {
            let body = serde_json::json!({ "Node": node, "Address": "10.0.0.9", "Service": service.clone() });
            ("/v1/catalog/register", body)
        } else {
            ("/v1/agent/service/register", service.clone())
        };
        let (status, bytes) = app.call(Method::PUT, uri, serde_json::to_vec(&body).unwrap(), false);
        judge(&format!("PUT {uri} {body}"), status, &bytes)?;
        // Accepted: the service is there, and its listing renders.
        if status == 200 {
            if let Some(name) = service.get("Name").and_then(Value::as_str) {
                let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
                let (status, listing) = app.call(Method::GET, &format!("/v1/catalog/service/{encoded}"), Vec::new(), false);
                prop_assert_eq!(status, 200, "{} accepted, then: {}", body, String::from_utf8_lossy(&listing));
                let listing: Value = serde_json::from_slice(&listing).unwrap();
                prop_assert!(listing.as_array().is_some_and(|l| !l.is_empty()), "{} accepted, but listed as {}", body, listing);
            }
        }
    });
    for uri in [
        "/v1/catalog/services",
        "/v1/agent/services",
        "/api/v1/services",
    ] {
        let (status, body) = app.call(Method::GET, uri, Vec::new(), false);
        assert_eq!(status, 200, "{uri}: {}", String::from_utf8_lossy(&body));
    }
}

/// A registry command in the log's JSON shape, valid in structure, hostile in value: empty and
/// over-long names, port 0, zero weights, zero intervals, durations of centuries, batches.
fn command_json() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        3 => prop::sample::select(vec!["web", "api", "i1"]).prop_map(String::from),
        1 => ".{0,12}",
        1 => Just("n".repeat(5000)),
    ];
    let dur = prop::sample::select(vec!["0ms", "1ms", "10s", "0s", "99999999999h", "1h"]);
    let check = prop_oneof![
        Just(Value::Null),
        dur.clone().prop_map(|d| serde_json::json!({ "ttl": d })),
        (dur.clone(), dur.clone()).prop_map(|(i, t)| serde_json::json!({
            "http": "http://127.0.0.1:1/", "interval": i, "timeout": t
        })),
        (dur.clone(), dur).prop_map(|(i, d)| serde_json::json!({
            "tcp": "127.0.0.1:1", "interval": i, "deregister_after": d
        })),
        Just(serde_json::json!({ "ttl": "10s", "http": "http://h/" })),
    ];
    let register = (
        name.clone(),
        name.clone(),
        prop::sample::select(vec!["10.0.0.1", "", "::1", "a b", "h.example"]),
        any::<u16>(),
        prop::sample::select(vec![0u32, 1, 100, u32::MAX]),
        check,
        prop::sample::select(vec![
            Value::Null,
            Value::from("passing"),
            Value::from("critical"),
        ]),
    )
        .prop_map(|(service, id, address, port, weight, check, status)| {
            serde_json::json!({ "Register": {
                "id": id, "service": service, "address": address, "port": port,
                "tags": ["t"], "metadata": { "k": "v" }, "weight": weight,
                "check": check, "status": status,
            }})
        });
    let key = (name.clone(), name.clone())
        .prop_map(|(s, i)| serde_json::json!({ "service": s, "id": i }));
    let leaf = prop_oneof![
        4 => register,
        1 => key.clone().prop_map(|k| serde_json::json!({ "Deregister": k })),
        1 => key.clone().prop_map(|k| serde_json::json!({ "SetStatus": { "key": k, "status": "critical" } })),
        1 => (key.clone(), any::<bool>(), prop::option::of(".{0,8}")).prop_map(|(k, enable, reason)| {
            serde_json::json!({ "SetMaintenance": { "key": k, "enable": enable, "reason": reason } })
        }),
        1 => (key, prop::sample::select(vec!["starting", "up", "stopping"])).prop_map(|(k, s)| {
            serde_json::json!({ "SetLifecycle": { "key": k, "state": s } })
        }),
        1 => name.clone().prop_map(|s| serde_json::json!({ "DeleteDefinition": { "service": s } })),
        2 => (
            kv_key(),
            prop::sample::select(vec!["", "b2s=", "AAAA", "not base64!"]),
            any::<u64>(),
            prop::option::of(any::<u64>()),
        ).prop_map(|(key, value, flags, cas)| {
            serde_json::json!({ "KvSet": { "key": key, "value": value, "flags": flags, "cas": cas } })
        }),
        1 => (kv_key(), any::<bool>()).prop_map(|(key, recurse)| {
            serde_json::json!({ "KvDelete": { "key": key, "recurse": recurse, "cas": null } })
        }),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|list| serde_json::json!({ "Batch": list }))
    })
}

/// The proposer's clock: the leader's now, or far from it.
fn now_ms() -> impl Strategy<Value = u64> {
    let now = signpost_server::cluster::now_ms();
    prop_oneof![
        4 => Just(now),
        1 => Just(0),
        1 => Just(now + 2 * 3600 * 1000),
        1 => Just(253_402_300_800_000), // the year 10000
        1 => Just(u64::MAX),
    ]
}

/// A vote: a term around the current one or far above, from this node or a stranger.
fn raft_vote() -> impl Strategy<Value = openraft::Vote<u64>> {
    (
        prop_oneof![0u64..4, Just(u64::MAX)],
        prop::sample::select(vec![0u64, 1, 7]),
        any::<bool>(),
    )
        .prop_map(|(term, node, committed)| {
            if committed {
                openraft::Vote::new_committed(term, node)
            } else {
                openraft::Vote::new(term, node)
            }
        })
}

fn raft_log_id() -> impl Strategy<Value = Option<openraft::LogId<u64>>> {
    prop::option::of(
        (0u64..4, prop_oneof![0u64..8, Just(u64::MAX)]).prop_map(|(term, index)| {
            openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
        }),
    )
}

/// One member call with a body that parses as what the route expects, with hostile values.
fn raft_call() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    use signpost_server::raft::{Entry, LogRequest, SnapshotMeta, TypeConfig};
    fn request() -> impl Strategy<Value = Value> {
        (now_ms(), command_json())
            .prop_map(|(now, command)| serde_json::json!({ "now_ms": now, "command": command }))
    }
    let entry = (raft_log_id(), request()).prop_map(|(log_id, request)| {
        let log_id = log_id.unwrap_or_default();
        let payload = serde_json::from_value(request)
            .ok()
            .and_then(|r| LogRequest::new(r).ok())
            .map_or(
                openraft::EntryPayload::Blank,
                openraft::EntryPayload::Normal,
            );
        Entry { log_id, payload }
    });
    prop_oneof![
        1 => (raft_vote(), raft_log_id()).prop_map(|(vote, last)| {
            let req = openraft::raft::VoteRequest::new(vote, last);
            ("/raft/vote", serde_json::to_vec(&req).unwrap())
        }),
        2 => (raft_vote(), raft_log_id(), prop::collection::vec(entry, 0..3), raft_log_id()).prop_map(
            |(vote, prev_log_id, entries, leader_commit)| {
                let req = openraft::raft::AppendEntriesRequest::<TypeConfig> {
                    vote,
                    prev_log_id,
                    entries,
                    leader_commit,
                };
                ("/raft/append", serde_json::to_vec(&req).unwrap())
            }
        ),
        2 => (
            raft_vote(),
            raft_log_id(),
            prop::sample::select(vec!["s1", "s2", ""]),
            prop_oneof![Just(0u64), 1u64..64, Just(1 << 40), Just(u64::MAX)],
            prop::collection::vec(any::<u8>(), 0..48),
            any::<bool>(),
        )
            .prop_map(|(vote, last_log_id, id, offset, data, done)| {
                let req = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
                    vote,
                    meta: SnapshotMeta {
                        last_log_id,
                        last_membership: Default::default(),
                        snapshot_id: id.to_string(),
                    },
                    offset,
                    data,
                    done,
                };
                (
                    "/raft/snapshot",
                    signpost_server::raft::network::encode_snapshot_chunk(&req),
                )
            }),
        3 => request().prop_map(|r| ("/raft/propose", serde_json::to_vec(&r).unwrap())),
        1 => (".{0,8}", ".{0,8}", prop::sample::select(vec!["passing", "warning", "critical", "up"])).prop_map(
            |(service, id, status)| {
                let body = serde_json::json!({ "key": { "service": service, "id": id }, "status": status });
                ("/raft/ttl", serde_json::to_vec(&body).unwrap())
            }
        ),
        1 => (prop::collection::vec((".{0,8}", ".{0,8}"), 0..4), prop::sample::select(vec!["passing", "critical"])).prop_map(
            |(keys, status)| {
                let keys: Vec<Value> = keys
                    .into_iter()
                    .map(|(s, i)| serde_json::json!({ "service": s, "id": i }))
                    .collect();
                let body = serde_json::json!({ "keys": keys, "status": status });
                ("/raft/ttl_batch", serde_json::to_vec(&body).unwrap())
            }
        ),
    ]
}

/// Whether a member route's 200 answer reports that Raft itself stopped.
fn raft_stopped(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("Fatal") || text.contains("Panicked") || text.contains("Stopped")
}

#[test]
fn member_routes_survive_well_formed_hostile_calls() {
    let app = App::start();
    proptest!(cases(), |((route, body) in raft_call())| {
        let (status, bytes) = app.call(Method::POST, route, body.clone(), true);
        prop_assert!(
            status != 0 && status < 500,
            "{route} {}: {status} {}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&bytes)
        );
        if status >= 400 {
            judge(route, status, &bytes)?;
        }
        prop_assert!(
            !raft_stopped(&bytes),
            "{route} {}: Raft stopped: {}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&bytes)
        );
    });
    // Raft still runs: a write goes through once a leader is back.
    app.runtime
        .block_on(crate::common::eventually("a leader again", || async {
            app.agent.is_leader()
        }));
    let (status, body) = app.call(Method::PUT, "/v1/kv/after-fuzz", b"ok".to_vec(), false);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = app.call(Method::GET, "/api/v1/services", Vec::new(), false);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// A DNS query in wire format: `id`, one question for `name` (dotted) of `qtype`, and an EDNS
/// OPT record advertising `edns` bytes when given.
fn dns_query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        q.push(label.len() as u8);
        q.extend_from_slice(label);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    q
}

/// A DNS packet: a valid query for the names the agent serves (and some it does not), often
/// mutated (bytes overwritten, cut, extended), or plain random bytes.
fn dns_packet() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        3 => prop::sample::select(vec![
            "web.service.consul", "_web._tcp.service.consul", "blue.web.service.consul",
            "0a000001.addr.consul", "zz.addr.consul", "agent-one.node.consul", "consul",
            "ns.consul", "nothing.service.consul", "example.com", "",
        ])
        .prop_map(String::from),
        1 => "[a-zA-Z0-9._-]{0,80}",
    ];
    let qtype = prop_oneof![
        prop::sample::select(vec![1u16, 28, 33, 6, 2, 255, 16, 12, 41, 251, 252]),
        any::<u16>(),
    ];
    let edns = prop::option::of(prop_oneof![Just(0u16), Just(512), Just(4096), any::<u16>()]);
    let valid = (any::<u16>(), name, qtype, edns)
        .prop_map(|(id, name, qtype, edns)| dns_query(id, &name, qtype, edns));
    let mutated = (
        valid.clone(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(mut q, writes, cut, tail)| {
            for (at, byte) in writes {
                let at = at.index(q.len());
                q[at] = byte;
            }
            if let Some(cut) = cut {
                q.truncate(cut.index(q.len() + 1));
            }
            q.extend_from_slice(&tail);
            q
        });
    prop_oneof![
        2 => valid,
        4 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn dns_packets_never_panic_and_get_an_answer_or_an_error_code() {
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};
    let app = App::start();
    let (status, body) = app.call(
        Method::PUT,
        "/v1/agent/service/register",
        br#"{"Name":"web","ID":"web-1","Address":"10.0.0.1","Port":80,"Tags":["blue"]}"#.to_vec(),
        false,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (udp, stop) = app.runtime.block_on(async {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let config = signpost_server::dns::DnsConfig {
            node_name: "agent-one".into(),
            node_addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
            udp_answer_limit: 3,
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(signpost_server::dns::serve(
            app.agent.clone(),
            config,
            udp,
            tcp,
            async {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(udp).unwrap();
    client.set_read_timeout(Some(HELD)).unwrap();
    let buf = std::cell::RefCell::new(vec![0u8; 65_536]);
    proptest!(cases(), |(packet in dns_packet())| {
        // The packet, then a valid query: the server answers the probe (it is still up), and
        // whatever came back for the packet first is a response with a defined code.
        let probe_id = packet
            .first_chunk::<2>()
            .map_or(1, |id| u16::from_be_bytes(*id) ^ 0x8000);
        client.send(&packet).unwrap();
        let probe = dns_query(probe_id, "web.service.consul", 1, None);
        client.send(&probe).unwrap();
        let mut buf = buf.borrow_mut();
        loop {
            let n = match client.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => return Err(TestCaseError::fail(format!("{packet:?}: no answer to the probe after it: {e}"))),
            };
            let reply = &buf[..n];
            prop_assert!(n >= 12, "{packet:?}: a {n}-byte reply");
            prop_assert!(reply[2] & 0x80 != 0, "{packet:?}: a reply without QR");
            let rcode = reply[3] & 0x0F;
            // NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED.
            prop_assert!(rcode <= 5, "{packet:?}: rcode {rcode}");
            // The probe's answer: its id and its question (a mutated packet's reply may share
            // the id; one sharing the question too asked the same thing).
            let question = &probe[12..];
            if reply[..2] == probe[..2] && reply.get(12..12 + question.len()) == Some(question) {
                prop_assert_eq!(rcode, 0, "the probe's rcode");
                let answers = u16::from_be_bytes([reply[6], reply[7]]);
                prop_assert_eq!(answers, 1, "the probe's answer");
                break;
            }
        }
    });
    let _ = stop.send(());
}

/// Found by `member_routes_survive_well_formed_hostile_calls`: a vote at term `u64::MAX` was
/// granted, after which openraft's next election overflowed `term + 1` (a debug build panicked
/// its core: every later call answered `Fatal: Panicked`). Such terms, uncommitted votes in a
/// leader's call, and entries that do not follow `prev_log_id` are now refused with 400.
#[test]
fn member_calls_with_impossible_terms_or_entries_are_refused() {
    use signpost_server::raft::{Entry, TypeConfig};
    let app = App::start();
    let log_id =
        |term, index| openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index);
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(u64::MAX, 0), None);
    let uncommitted = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new(5, 7),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let gap = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(5, 7),
        prev_log_id: Some(log_id(1, 1)),
        entries: vec![Entry {
            log_id: log_id(1, 9),
            payload: openraft::EntryPayload::Blank,
        }],
        leader_commit: None,
    };
    // Found next: an append carrying this node's own (leader) vote made the leader's core
    // follow itself (a debug build panicked it).
    let own = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(1, app.agent.node_id()),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    for (route, body, field) in [
        ("/raft/vote", serde_json::to_vec(&vote).unwrap(), "vote"),
        ("/raft/append", serde_json::to_vec(&own).unwrap(), "vote"),
        (
            "/raft/append",
            serde_json::to_vec(&uncommitted).unwrap(),
            "vote",
        ),
        ("/raft/append", serde_json::to_vec(&gap).unwrap(), "entries"),
    ] {
        let (status, bytes) = app.call(Method::POST, route, body, true);
        assert_eq!(status, 400, "{route}: {}", String::from_utf8_lossy(&bytes));
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(error["field"], field, "{route}: {error}");
    }
    // Nothing changed: the node still leads, at its own term, and writes.
    assert!(app.agent.is_leader());
    let (status, body) = app.call(Method::PUT, "/v1/kv/still", b"ok".to_vec(), false);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}
