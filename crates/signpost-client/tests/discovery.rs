//! The Signpost registry and discovery against an in-process agent on 127.0.0.1: the native API
//! calls, the SSE watch and its blocking-query fallback, failover between agents, and
//! discovery's stale-on-error, reconnect, persistence and push-empty protection.

mod common;
#[path = "discovery/dns.rs"]
mod dns;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use signpost_client::discovery::{Discovery, DiscoveryOptions, Source};
use signpost_client::registry::signpost::SignpostRegistry;
use signpost_client::registry::{Cause, RegistrationSpec, Registry, RegistryError, TransportKind};
use signpost_client::{Instance, Update};

use common::{
    closed_port, eventually, ids_of, instance, register_directly, AgentExt, Storage, TestAgent,
};

fn spec(service: &str, id: &str, port: u16, ttl: Duration) -> RegistrationSpec {
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
        ttl,
        deregister_after: Some(Duration::from_secs(60)),
        check: None,
    }
}

/// Fast reconnects so tests do not wait on backoff.
fn fast() -> DiscoveryOptions {
    DiscoveryOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..DiscoveryOptions::default()
    }
}

async fn next_update(
    stream: &mut futures::stream::BoxStream<'static, Result<Update, RegistryError>>,
) -> Update {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an update within 10 s")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn signpost_registry_registers_lists_heartbeats_and_deregisters() {
    let t = TestAgent::start().await;
    let reg = SignpostRegistry::new([t.base.clone()]).unwrap();
    let s = spec("users", "u1", 8080, Duration::from_secs(5));
    reg.register(&s).await.unwrap();
    // Registering again is an upsert.
    reg.register(&s).await.unwrap();

    let (index, list) = reg.list("users").await.unwrap();
    assert!(index > 0);
    assert_eq!(list, vec![s.instance.clone()], "every field round-trips");
    let (code, body) = {
        let r = t
            .client
            .get(t.url("/api/v1/services/users/instances/u1"))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(code, 200);
    assert_eq!(body["check"]["ttl"], "5s");
    assert_eq!(body["check"]["deregister_after"], "1m");

    reg.heartbeat("users", "u1").await.unwrap();
    assert!(matches!(
        reg.heartbeat("users", "nope").await,
        Err(RegistryError::NotFound { .. })
    ));
    // A bad registration is refused with the agent's message.
    let mut bad = s.clone();
    bad.instance.port = 0;
    match reg.register(&bad).await {
        Err(RegistryError::Rejected {
            status: Some(status),
            body,
            ..
        }) => {
            assert_eq!(status, 400);
            assert_eq!(body.field.as_deref(), Some("port"), "{body}");
        }
        other => panic!("{other:?}"),
    }

    reg.deregister("users", "u1").await.unwrap();
    reg.deregister("users", "u1").await.unwrap(); // already gone: still fine
    assert!(reg.list("users").await.unwrap().1.is_empty());
}

#[tokio::test]
async fn list_returns_only_passing_instances() {
    let t = TestAgent::start().await;
    let reg = t.registry();
    assert_eq!(t.register("web", instance("ok", 1)).await.0, 201);
    let critical = serde_json::json!({
        "id": "bad", "address": "10.0.0.1", "port": 2, "check": {"ttl": "1h"}, "status": "critical"
    });
    assert_eq!(t.register("web", critical).await.0, 201);
    let (_, list) = reg.list("web").await.unwrap();
    assert_eq!(ids_of(&list), ["ok"]);
}

#[tokio::test]
async fn watch_delivers_a_reset_then_adds_updates_and_removes() {
    let t = TestAgent::start().await;
    let reg = t.registry();
    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    let mut stream = reg.watch("users");
    match next_update(&mut stream).await {
        Update::Reset { index, instances } => {
            assert!(index > 0);
            assert_eq!(ids_of(&instances), ["a"]);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(t.register("users", instance("b", 2)).await.0, 201);
    let add = next_update(&mut stream).await;
    assert!(
        matches!(&add, Update::Add { instance, .. } if instance.id == "b"),
        "{add:?}"
    );

    let mut moved = instance("b", 3);
    moved["tags"] = serde_json::json!(["new"]);
    assert_eq!(t.register("users", moved).await.0, 200);
    match next_update(&mut stream).await {
        Update::Update { index, instance } => {
            assert!(index > add.index());
            assert_eq!((instance.port, instance.tags), (3, vec!["new".to_string()]));
        }
        other => panic!("expected an update, got {other:?}"),
    }
    assert_eq!(t.deregister("users", "a").await, 204);
    assert!(matches!(
        next_update(&mut stream).await,
        Update::Remove { id, .. } if id == "a"
    ));
}

#[tokio::test]
async fn calls_fail_over_from_a_dead_agent_and_remember_the_good_one() {
    let t = TestAgent::start().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let reg = SignpostRegistry::new([dead.clone(), t.base.clone()]).unwrap();
    assert_eq!(reg.current_addr(), dead);
    reg.register(&spec("users", "u1", 1, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        reg.current_addr(),
        t.base.clone(),
        "moved to the live agent"
    );
    assert_eq!(ids_of(&reg.list("users").await.unwrap().1), ["u1"]);
    // Watches fail over too.
    let mut stream = reg.watch("users");
    assert!(matches!(
        next_update(&mut stream).await,
        Update::Reset { .. }
    ));

    // Every agent down: a clear Unavailable naming them.
    let none = SignpostRegistry::new([dead.clone()]).unwrap();
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
}

/// An "old agent" without the SSE endpoint: proxies the listing (including blocking queries)
/// to a real agent and answers 404 for the watch.
async fn agent_without_sse(real: String) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{OriginalUri, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    async fn proxy(State(real): State<String>, OriginalUri(uri): OriginalUri) -> impl IntoResponse {
        signpost_tls::install_default_provider();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = client.get(format!("{real}{uri}")).send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.text().await.unwrap())
    }
    let app = axum::Router::new()
        .route(
            "/api/v1/services/{service}/instances",
            axum::routing::get(proxy),
        )
        .with_state(real);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, task)
}

#[tokio::test]
async fn watch_falls_back_to_blocking_queries_without_sse() {
    let t = TestAgent::start().await;
    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    let (old, server) = agent_without_sse(t.base.clone()).await;
    let reg = SignpostRegistry::new([old]).unwrap();
    let mut stream = reg.watch("users");
    let first = match next_update(&mut stream).await {
        Update::Reset { index, instances } => {
            assert_eq!(ids_of(&instances), ["a"]);
            index
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(t.register("users", instance("b", 2)).await.0, 201);
    match next_update(&mut stream).await {
        Update::Reset { index, instances } => {
            assert!(index > first);
            assert_eq!(ids_of(&instances), ["a", "b"]);
        }
        other => panic!("{other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn discovery_follows_registrations_and_deregistrations() {
    let t = TestAgent::start().await;
    let discovery = Discovery::new(t.registry(), fast());
    let mut users = discovery.service("users");
    assert!(users.ready().await.unwrap().is_empty());
    assert!(users.status().connected);

    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    assert_eq!(ids_of(&users.changed().await.unwrap()), ["a"]);
    assert_eq!(t.register("users", instance("b", 2)).await.0, 201);
    eventually("b is discovered", || async {
        ids_of(&users.instances()) == ["a", "b"]
    })
    .await;
    // The watch receiver the balancers use sees the same lists.
    let rx = users.updates();
    assert_eq!(ids_of(&rx.borrow()), ["a", "b"]);

    assert_eq!(t.deregister("users", "a").await, 204);
    eventually("a is gone", || async {
        ids_of(&users.instances()) == ["b"]
    })
    .await;
    // Removing the last one empties the list at once: the registry confirms it.
    assert_eq!(t.deregister("users", "b").await, 204);
    eventually("the list is empty", || async {
        users.instances().is_empty()
    })
    .await;
    assert!(!users.status().holding_empty);
}

#[tokio::test]
async fn discovery_serves_the_last_list_while_the_registry_is_down_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Durable(dir.path().join("agent"));
    let t = TestAgent::start_on(storage.clone(), 0).await;
    let port = t.port();
    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    let discovery = Discovery::new(t.registry(), fast());
    let users = discovery.service("users");
    users.ready().await.unwrap();
    eventually("a is discovered", || async {
        ids_of(&users.instances()) == ["a"]
    })
    .await;

    // Registry killed: the last list is still served.
    t.shutdown().await;
    eventually("the watch notices", || async { !users.status().connected }).await;
    assert_eq!(ids_of(&users.instances()), ["a"]);

    // Registry back on the same port, with a registration made before it serves again, so it
    // can only reach discovery through the reconnect's reset.
    let t = TestAgent::launch(TestAgent::config(storage), port, |agent| async move {
        register_directly(&agent, "users", instance("b", 2)).await;
    })
    .await;
    eventually("discovery reconnects and sees b", || async {
        ids_of(&users.instances()) == ["a", "b"]
    })
    .await;
    assert!(users.status().connected);
    // And it follows live changes again.
    assert_eq!(t.deregister("users", "a").await, 204);
    eventually("a is gone", || async {
        ids_of(&users.instances()) == ["b"]
    })
    .await;
}

#[tokio::test]
async fn a_cache_file_lets_a_fresh_discovery_serve_while_the_registry_is_down() {
    let cache = tempfile::tempdir().unwrap();
    let options = DiscoveryOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..fast()
    };
    let t = TestAgent::start().await;
    assert_eq!(t.register("users", instance("a", 1)).await.0, 201);
    assert_eq!(t.register("users", instance("b", 2)).await.0, 201);
    let base = t.base.clone();
    {
        let discovery = Discovery::new(t.registry(), options.clone());
        let users = discovery.service("users");
        eventually("both are discovered", || async {
            ids_of(&users.instances()) == ["a", "b"]
        })
        .await;
        let path = cache.path().join("users.json");
        eventually("the cache file is written", || async {
            std::fs::read_to_string(&path).is_ok_and(|s| s.contains("\"b\""))
        })
        .await;
    }
    t.shutdown().await;

    // A new process while the registry is down.
    let registry: Arc<dyn Registry> = Arc::new(SignpostRegistry::new([base]).unwrap());
    let discovery = Discovery::new(registry, options);
    let users = discovery.service("users");
    let list = users.ready().await.unwrap();
    assert_eq!(ids_of(&list), ["a", "b"]);
    assert_eq!(users.status().source, Source::Cache);
    assert!(!users.status().connected);
    // A service never cached is not ready: nothing to serve.
    let options = DiscoveryOptions {
        ready_timeout: Duration::from_millis(300),
        ..discovery.options().clone()
    };
    let other = Discovery::new(discovery.registry().clone(), options).service("orders");
    assert!(other.ready().await.is_err());
}

/// The next set of services a `watch_services` stream yields, within 10 s.
async fn next_set(
    stream: &mut futures::stream::BoxStream<
        'static,
        Result<signpost_client::registry::ServiceSet, RegistryError>,
    >,
) -> Vec<String> {
    let set = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a set within 10 s")
        .expect("stream open")
        .expect("no error");
    set.services.into_iter().collect()
}

#[tokio::test]
async fn watch_services_sees_a_new_service_and_one_that_leaves() {
    let t = TestAgent::start().await;
    assert_eq!(t.register("users", instance("u1", 1)).await.0, 201);
    let reg = t.registry();
    let mut sets = reg.watch_services();
    assert_eq!(next_set(&mut sets).await, ["users"]);
    // A blocking query: the new service arrives as soon as it is registered.
    assert_eq!(t.register("orders", instance("o1", 2)).await.0, 201);
    assert_eq!(next_set(&mut sets).await, ["orders", "users"]);
    assert_eq!(t.deregister("users", "u1").await, 204);
    let mut last = next_set(&mut sets).await;
    while last != ["orders"] {
        last = next_set(&mut sets).await;
    }
}

#[tokio::test]
async fn the_catalog_of_a_discovery_fails_over_and_follows_new_services() {
    let down = format!("127.0.0.1:{}", closed_port());
    let t = TestAgent::start().await;
    let reg: Arc<dyn Registry> = Arc::new(SignpostRegistry::new([down, t.base.clone()]).unwrap());
    let discovery = Discovery::new(reg, fast());
    let mut catalog = discovery.catalog();
    assert_eq!(t.register("users", instance("u1", 1)).await.0, 201);
    let has = |c: &Option<signpost_client::registry::ServiceSet>, name: &str| {
        c.as_ref().is_some_and(|s| s.services.contains(name))
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        catalog.wait_for(|c| has(c, "users")),
    )
    .await
    .expect("users within 10 s")
    .unwrap();
    assert_eq!(t.register("payments", instance("p1", 3)).await.0, 201);
    tokio::time::timeout(
        Duration::from_secs(10),
        catalog.wait_for(|c| has(c, "payments")),
    )
    .await
    .expect("payments within 10 s")
    .unwrap();
}
