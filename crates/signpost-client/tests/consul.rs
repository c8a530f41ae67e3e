//! The Consul registry: against an in-process Signpost agent's Consul face (register, list,
//! heartbeat, deregister, datacenter, failover; discovery and self-registration over it; one
//! registry seen through both faces), and against a scripted fake Consul for what a real agent
//! cannot be made to do on demand (the token header, old Consul's 500 for an unknown check, an
//! index that stalls or goes backwards, an outage in the middle of a watch).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Value};
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::registration::Registration;
use signpost_client::registry::consul::{ConsulOptions, ConsulRegistry};
use signpost_client::registry::{Cause, RegistrationSpec, Registry, RegistryError, TransportKind};
use signpost_client::{Instance, Update};

use common::{closed_port, eventually, eventually_within, ids_of, instance, TestAgent};

fn spec(service: &str, id: &str, port: u16) -> RegistrationSpec {
    RegistrationSpec {
        instance: Instance {
            id: id.into(),
            service: service.into(),
            address: "10.0.0.9".into(),
            port,
            tags: vec!["v2".into()],
            metadata: [("zone".to_string(), "a".to_string())].into(),
            weight: 7,
            state: Default::default(),
            maintenance: None,
        },
        ttl: Duration::from_secs(5),
        deregister_after: Some(Duration::from_secs(60)),
        check: None,
    }
}

fn consul(t: &TestAgent) -> ConsulRegistry {
    ConsulRegistry::new([t.base.clone()]).unwrap()
}

/// Fast reconnects so tests do not wait on backoff.
fn fast() -> DiscoveryOptions {
    DiscoveryOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..DiscoveryOptions::default()
    }
}

type Updates = BoxStream<'static, Result<Update, RegistryError>>;

async fn next_item(stream: &mut Updates) -> Option<Result<Update, RegistryError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item within 10 s")
}

async fn next_reset(stream: &mut Updates) -> (u64, Vec<Instance>) {
    match next_item(stream).await {
        Some(Ok(Update::Reset { index, instances })) => (index, instances),
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// The native API's view of one instance.
async fn native(t: &TestAgent, service: &str, id: &str) -> (u16, Value) {
    let r = t
        .client
        .get(t.url(&format!("/api/v1/services/{service}/instances/{id}")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn consul_registry_registers_lists_heartbeats_and_deregisters() {
    let t = TestAgent::start().await;
    let reg = consul(&t);
    let s = spec("users", "u1", 8080);
    reg.register(&s).await.unwrap();
    reg.register(&s).await.unwrap(); // registering again replaces

    let (index, list) = reg.list("users").await.unwrap();
    assert!(index > 0);
    assert_eq!(list, vec![s.instance.clone()], "every field round-trips");
    // What the agent stored: passing at once, the TTL and deregister_after as given.
    let (code, body) = native(&t, "users", "u1").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "passing");
    assert_eq!(body["check"]["ttl"], "5s");
    assert_eq!(body["check"]["deregister_after"], "1m");

    reg.heartbeat("users", "u1").await.unwrap();
    assert!(matches!(
        reg.heartbeat("users", "nope").await,
        Err(RegistryError::NotFound { .. })
    ));
    // A registration the agent refuses is Rejected, with its message.
    let mut bad = s.clone();
    bad.instance.weight = 0;
    match reg.register(&bad).await {
        Err(e @ RegistryError::Rejected { .. }) => assert!(e.to_string().contains("weight"), "{e}"),
        other => panic!("{other:?}"),
    }

    reg.deregister("users", "u1").await.unwrap();
    reg.deregister("users", "u1").await.unwrap(); // already gone: still fine
    assert!(reg.list("users").await.unwrap().1.is_empty());
    assert_eq!(native(&t, "users", "u1").await.0, 404);
}

#[tokio::test]
async fn one_registry_two_faces() {
    let t = TestAgent::start().await;
    let reg = consul(&t);
    // Registered through the native API, found, heartbeated and removed through Consul's.
    assert_eq!(t.register("users", instance("native-1", 1)).await.0, 201);
    let (_, list) = reg.list("users").await.unwrap();
    assert_eq!(ids_of(&list), ["native-1"]);
    assert_eq!((list[0].address.as_str(), list[0].port), ("10.0.0.1", 1));
    assert_eq!(list[0].weight, 100, "the native default weight");
    reg.heartbeat("users", "native-1").await.unwrap();

    // Registered through Consul's, found through the native one.
    reg.register(&spec("users", "consul-1", 2)).await.unwrap();
    assert_eq!(t.ids("users", "passing").await, ["consul-1", "native-1"]);
    reg.deregister("users", "native-1").await.unwrap();
    assert_eq!(t.ids("users", "any").await, ["consul-1"]);

    // Critical instances are not listed, whichever face registered them.
    let critical = json!({
        "id": "sick", "address": "10.0.0.1", "port": 3, "check": {"ttl": "1h"}, "status": "critical"
    });
    assert_eq!(t.register("users", critical).await.0, 201);
    assert_eq!(ids_of(&reg.list("users").await.unwrap().1), ["consul-1"]);
}

#[tokio::test]
async fn discovery_over_consul_follows_registrations_and_deregistrations() {
    let t = TestAgent::start().await;
    let discovery = Discovery::new(Arc::new(consul(&t)), fast());
    let users = discovery.service("users");
    assert!(users.ready().await.unwrap().is_empty());
    assert!(users.status().connected);

    let reg = consul(&t);
    reg.register(&spec("users", "a", 1)).await.unwrap();
    eventually("a is discovered", || async {
        ids_of(&users.instances()) == ["a"]
    })
    .await;
    // An instance registered through the native API is discovered through Consul's too.
    assert_eq!(t.register("users", instance("b", 2)).await.0, 201);
    eventually("b is discovered", || async {
        ids_of(&users.instances()) == ["a", "b"]
    })
    .await;
    assert_eq!(
        users.instances()[0],
        spec("users", "a", 1).instance,
        "discovered with every field"
    );

    reg.deregister("users", "a").await.unwrap();
    eventually("a is gone", || async {
        ids_of(&users.instances()) == ["b"]
    })
    .await;
    assert_eq!(t.deregister("users", "b").await, 204);
    eventually("the list is empty", || async {
        users.instances().is_empty()
    })
    .await;
    assert!(users.status().connected, "one watch all along");
}

#[tokio::test]
async fn watch_blocks_until_the_service_changes() {
    let t = TestAgent::start().await;
    let reg = consul(&t);
    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    let mut stream = reg.watch("users");
    let (first, list) = next_reset(&mut stream).await;
    assert_eq!(ids_of(&list), ["a"]);
    // Another service changing does not wake this watch up with a new reset.
    assert_eq!(t.register("orders", instance("o", 1)).await.0, 201);
    assert_eq!(t.register("users", instance("b", 2)).await.0, 201);
    let (second, list) = next_reset(&mut stream).await;
    assert!(second > first);
    assert_eq!(ids_of(&list), ["a", "b"]);
}

#[tokio::test]
async fn self_registration_over_consul_heartbeats_and_comes_back() {
    let t = TestAgent::start().await;
    let handle = Registration::builder("users", "10.0.0.7", 8080)
        .id("u1")
        .ttl(Duration::from_secs(1))
        .register(Arc::new(consul(&t)))
        .await
        .unwrap();
    assert_eq!(t.status_of("users", "u1").await.as_deref(), Some("passing"));
    // Removed behind its back: the next heartbeat answers NotFound and it registers again.
    assert_eq!(t.deregister("users", "u1").await, 204);
    eventually_within("u1 is registered again", Duration::from_secs(5), || async {
        t.status_of("users", "u1").await.as_deref() == Some("passing")
    })
    .await;
    handle.deregister().await.unwrap();
    assert_eq!(t.status_of("users", "u1").await, None);
}

#[tokio::test]
async fn datacenter_is_sent_and_checked() {
    let t = TestAgent::start().await;
    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    let here = ConsulOptions {
        datacenter: Some("dc1".into()),
        ..ConsulOptions::default()
    };
    let reg = ConsulRegistry::with_options([t.base.clone()], here).unwrap();
    assert_eq!(ids_of(&reg.list("users").await.unwrap().1), ["a"]);
    let elsewhere = ConsulOptions {
        datacenter: Some("dc2".into()),
        ..ConsulOptions::default()
    };
    let reg = ConsulRegistry::with_options([t.base.clone()], elsewhere).unwrap();
    match reg.list("users").await {
        Err(e @ RegistryError::Rejected { .. }) => assert!(e.to_string().contains("dc2"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn calls_fail_over_from_a_dead_agent() {
    let t = TestAgent::start().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let reg = ConsulRegistry::new([dead.clone(), t.base.clone()]).unwrap();
    reg.register(&spec("users", "u1", 1)).await.unwrap();
    assert_eq!(
        reg.current_addr(),
        t.base.clone(),
        "moved to the live agent"
    );
    assert_eq!(ids_of(&reg.list("users").await.unwrap().1), ["u1"]);

    let none = ConsulRegistry::new([dead.clone()]).unwrap();
    match none.list("users").await {
        Err(RegistryError::Unavailable { agent, cause }) => {
            assert_eq!(agent, dead);
            assert!(
                matches!(
                    cause,
                    Cause::Transport {
                        kind: TransportKind::Refused,
                        ..
                    }
                ),
                "{cause:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A watch on an unreachable agent ends after its error, so discovery reconnects.
    let mut stream = none.watch("users");
    assert!(matches!(
        next_item(&mut stream).await,
        Some(Err(RegistryError::Unavailable { .. }))
    ));
    assert!(next_item(&mut stream).await.is_none());
}

/// What the fake Consul saw and will answer.
#[derive(Default)]
struct Script {
    /// `X-Consul-Index` of each health answer, in order; when empty, answers 500.
    indexes: VecDeque<u64>,
    /// Every request: method, path and query, token header.
    seen: Vec<(String, String, Option<String>)>,
}

/// A scripted Consul agent: health answers follow the script, an unknown check is old Consul's
/// 500, an unknown service id recent Consul's 404.
async fn fake_consul(script: Arc<Mutex<Script>>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{OriginalUri, State};
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::response::{IntoResponse, Response};

    type Shared = Arc<Mutex<Script>>;

    fn record(script: &Shared, method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) {
        let token = headers
            .get("x-consul-token")
            .map(|v| v.to_str().unwrap().to_string());
        let path = uri.path_and_query().unwrap().to_string();
        script
            .lock()
            .unwrap()
            .seen
            .push((method.to_string(), path, token));
    }

    async fn any(
        State(script): State<Shared>,
        method: Method,
        OriginalUri(uri): OriginalUri,
        headers: HeaderMap,
    ) -> Response {
        record(&script, &method, &uri, &headers);
        let path = uri.path();
        if path.starts_with("/v1/health/service/") {
            let next = script.lock().unwrap().indexes.pop_front();
            return match next {
                Some(index) => {
                    let body = json!([{
                        "Node": {"Node": "n1", "Address": "192.0.2.1"},
                        "Service": {"ID": format!("web-{index}"), "Service": "web", "Address": "",
                                    "Port": 80, "Tags": null, "Meta": null,
                                    "Weights": {"Passing": 1, "Warning": 1}},
                        "Checks": []
                    }]);
                    ([("x-consul-index", index.to_string())], axum::Json(body)).into_response()
                }
                None => (StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader").into_response(),
            };
        }
        if let Some(check) = path.strip_prefix("/v1/agent/check/pass/") {
            let message = format!("CheckID \"{check}\" does not have associated TTL");
            return (StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
        }
        if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
            return (
                StatusCode::NOT_FOUND,
                format!("Unknown service ID \"{id}\""),
            )
                .into_response();
        }
        StatusCode::OK.into_response()
    }

    let app = axum::Router::new().fallback(any).with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, task)
}

fn query_index(path: &str) -> u64 {
    path.split(['?', '&'])
        .find_map(|p| p.strip_prefix("index="))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn token_and_old_consul_answers() {
    let script = Arc::new(Mutex::new(Script::default()));
    let (base, server) = fake_consul(script.clone()).await;
    let options = ConsulOptions {
        token: Some("s3cret".into()),
        ..ConsulOptions::default()
    };
    let reg = ConsulRegistry::with_options([base], options).unwrap();
    reg.register(&spec("web", "web-1", 80)).await.unwrap();
    // Old Consul's 500 for an unknown check is NotFound (so the caller registers again), and is
    // not retried as an outage.
    match reg.heartbeat("web", "web-1").await {
        Err(RegistryError::NotFound { body, .. }) => {
            assert!(body.error.contains("associated TTL"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    reg.deregister("web", "web-1").await.unwrap();

    let seen = std::mem::take(&mut script.lock().unwrap().seen);
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT", "/v1/agent/service/register"),
            ("PUT", "/v1/agent/check/pass/service:web-1"),
            ("PUT", "/v1/agent/service/deregister/web-1"),
        ]
    );
    assert!(
        seen.iter().all(|(_, _, t)| t.as_deref() == Some("s3cret")),
        "{seen:?}"
    );
    server.abort();
}

#[tokio::test]
async fn watch_follows_consul_index_rules() {
    let script = Arc::new(Mutex::new(Script {
        // first answer, two unchanged answers, a change, a jump backwards, the immediate
        // re-query bringing the same index, a change.
        indexes: [5, 5, 5, 9, 3, 3, 4].into(),
        ..Script::default()
    }));
    let (base, server) = fake_consul(script.clone()).await;
    let options = ConsulOptions {
        datacenter: Some("dc1".into()),
        min_query_interval: Duration::from_millis(40),
        ..ConsulOptions::default()
    };
    let reg = ConsulRegistry::with_options([base], options).unwrap();
    let mut stream = reg.watch("web");
    let (index, list) = next_reset(&mut stream).await;
    assert_eq!(index, 5);
    // Service.Address empty: the node's address.
    assert_eq!(list[0].authority(), "192.0.2.1:80");
    let started = tokio::time::Instant::now();
    let mut resets = vec![index];
    loop {
        match next_item(&mut stream).await {
            Some(Ok(Update::Reset { index, instances })) => {
                assert_eq!(instances[0].id, format!("web-{index}"));
                resets.push(index);
            }
            Some(Err(RegistryError::Unavailable {
                cause: Cause::Status { status, body },
                ..
            })) => {
                assert!(status.is_server_error(), "{status}");
                assert!(body.error.contains("No cluster leader"), "{body}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        next_item(&mut stream).await.is_none(),
        "an error ends the watch"
    );
    assert_eq!(resets, [5, 9, 3, 4], "a reset whenever the index changes");

    let seen = std::mem::take(&mut script.lock().unwrap().seen);
    let health: Vec<&str> = seen.iter().map(|(_, p, _)| p.as_str()).collect();
    assert!(
        health
            .iter()
            .all(|p| p.starts_with("/v1/health/service/web?passing&dc=dc1")),
        "{health:?}"
    );
    let indexes: Vec<u64> = health.iter().map(|p| query_index(p)).collect();
    // 0: the first query does not block; 5 twice: unchanged, block again; 0 after going
    // backwards; the last two (answered 500) are the failed query and its retry.
    assert_eq!(indexes, [0, 5, 5, 5, 9, 0, 3, 4, 4]);
    assert!(
        health[1..]
            .iter()
            .all(|p| !p.contains("index=") || p.ends_with("&wait=5m")),
        "{health:?}"
    );
    // Queries are kept apart: seven after the first, at least 40 ms each (the retry within one
    // query is not paced).
    assert!(
        started.elapsed() >= Duration::from_millis(6 * 40),
        "{:?}",
        started.elapsed()
    );
    server.abort();
}

#[tokio::test]
async fn consul_registry_watches_the_catalog_with_blocking_queries() {
    let t = TestAgent::start().await;
    assert_eq!(t.register("users", instance("u1", 1)).await.0, 201);
    let reg = consul(&t);
    let mut sets = reg.watch_services();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), sets.next())
            .await
            .expect("a set within 10 s")
            .expect("stream open")
            .expect("no error")
    };
    let first = next().await;
    assert!(first.services.contains("users"), "{first:?}");
    assert!(!first.services.contains("orders"), "{first:?}");
    assert_eq!(t.register("orders", instance("o1", 2)).await.0, 201);
    let second = next().await;
    assert!(second.services.contains("orders"), "{second:?}");
    assert!(second.index > first.index);
}
