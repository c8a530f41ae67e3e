//! Self-registration against an in-process agent: heartbeats keep a short-TTL instance
//! passing, a forgetful agent gets the instance back, and the handle deregisters on request,
//! on a shutdown future and on drop.

mod common;

use std::time::Duration;

use signpost_client::registration::Registration;

use common::{eventually, eventually_within, AgentExt, Storage, TestAgent};

#[tokio::test]
async fn heartbeats_keep_a_one_second_ttl_instance_passing() {
    let t = TestAgent::start().await;
    let ttl = Duration::from_secs(1);
    let handle = Registration::builder("users", "10.0.0.7", 8080)
        .ttl(ttl)
        .register(t.registry())
        .await
        .unwrap();
    assert_eq!(handle.id(), "users-10.0.0.7-8080");
    // Watch it for more than three TTLs: it never leaves `passing`.
    let until = tokio::time::Instant::now() + ttl * 3 + Duration::from_millis(500);
    let mut checks = 0;
    while tokio::time::Instant::now() < until {
        assert_eq!(
            t.status_of("users", handle.id()).await.as_deref(),
            Some("passing"),
            "after {checks} checks"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = handle.id().to_string();
    handle.deregister().await.unwrap();
    assert_eq!(t.status_of("users", &id).await, None);
}

#[tokio::test]
async fn an_instance_whose_heartbeats_stop_turns_critical() {
    // The control for the test above: same TTL, no handle heartbeating.
    let t = TestAgent::start().await;
    let body = serde_json::json!({
        "id": "quiet", "address": "10.0.0.1", "port": 1, "check": {"ttl": "1s"}
    });
    assert_eq!(t.register("users", body).await.0, 201);
    eventually_within("the TTL lapses", Duration::from_secs(5), || async {
        t.status_of("users", "quiet").await.as_deref() == Some("critical")
    })
    .await;
}

#[tokio::test]
async fn re_registers_after_the_agent_forgets_it() {
    let t = TestAgent::start().await;
    let port = t.port();
    let handle = Registration::builder("users", "10.0.0.7", 8080)
        .id("u1")
        .tags(["v2"])
        .metadata([("zone", "a")])
        .weight(5)
        .ttl(Duration::from_secs(1))
        .register(t.registry())
        .await
        .unwrap();
    assert_eq!(t.status_of("users", "u1").await.as_deref(), Some("passing"));

    // An in-memory agent restarted on the same port has forgotten everything.
    t.shutdown().await;
    let t = TestAgent::start_on(Storage::Dev, port).await;
    eventually("the instance is registered again", || async {
        t.status_of("users", "u1").await.as_deref() == Some("passing")
    })
    .await;
    let (_, list) = t.registry().list("users").await.unwrap();
    assert_eq!(
        list,
        vec![handle.spec().instance.clone()],
        "with all its fields"
    );
    handle.deregister().await.unwrap();
    assert_eq!(t.status_of("users", "u1").await, None);
}

#[tokio::test]
async fn dropping_the_handle_deregisters() {
    let t = TestAgent::start().await;
    let handle = Registration::builder("users", "10.0.0.7", 8080)
        .ttl(Duration::from_secs(30))
        .register(t.registry())
        .await
        .unwrap();
    let id = handle.id().to_string();
    assert!(t.status_of("users", &id).await.is_some());
    drop(handle);
    eventually("the instance is deregistered", || async {
        t.status_of("users", &id).await.is_none()
    })
    .await;
}

#[tokio::test]
async fn deregisters_when_the_shutdown_future_resolves() {
    let t = TestAgent::start().await;
    let handle = Registration::builder("users", "10.0.0.7", 8080)
        .ttl(Duration::from_secs(30))
        .register(t.registry())
        .await
        .unwrap();
    let id = handle.id().to_string();
    let (term, on_term) = tokio::sync::oneshot::channel::<()>();
    let waiter = tokio::spawn(handle.deregister_on(async move {
        let _ = on_term.await;
    }));
    tokio::task::yield_now().await;
    assert!(t.status_of("users", &id).await.is_some());
    term.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(t.status_of("users", &id).await, None);
}

#[tokio::test]
async fn the_first_registration_failing_is_an_error() {
    let dead = format!("127.0.0.1:{}", common::closed_port());
    let registry = std::sync::Arc::new(
        signpost_client::registry::signpost::SignpostRegistry::new([dead]).unwrap(),
    );
    let err = Registration::builder("users", "10.0.0.7", 8080)
        .register(registry)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        signpost_client::registry::RegistryError::Unavailable { .. }
    ));
}

/// A small axum server whose `/health` answers 200 or 503 as `healthy` says.
async fn health_server(
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u16, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::Ordering;
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let healthy = healthy.clone();
            async move {
                if healthy.load(Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, task)
}

#[tokio::test]
async fn an_http_check_registered_by_the_sdk_follows_the_health_endpoint() {
    use signpost_client::registry::consul::ConsulRegistry;
    use signpost_client::registry::Registry;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let t = TestAgent::start().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let (port, server) = health_server(healthy.clone()).await;
    let native = t.registry();
    let consul: Arc<dyn Registry> = Arc::new(ConsulRegistry::new([t.base.clone()]).unwrap());
    for (name, registry) in [("native", native), ("consul", consul)] {
        let service = format!("web-{name}");
        let handle = Registration::builder(&service, "127.0.0.1", port)
            .http_check(
                format!("http://127.0.0.1:{port}/health"),
                Duration::from_millis(100),
                Duration::from_secs(1),
            )
            .deregister_after(Duration::from_secs(60))
            .register(registry)
            .await
            .unwrap();
        let id = handle.id().to_string();
        let status = || async { t.status_of(&service, &id).await };
        eventually(&format!("{name}: passing once /health answers"), || async {
            status().await.as_deref() == Some("passing")
        })
        .await;
        healthy.store(false, Ordering::SeqCst);
        eventually(&format!("{name}: critical when /health fails"), || async {
            status().await.as_deref() == Some("critical")
        })
        .await;
        // Nothing heartbeats it back: it stays critical over several check intervals.
        for _ in 0..6 {
            assert_eq!(status().await.as_deref(), Some("critical"), "{name}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        healthy.store(true, Ordering::SeqCst);
        eventually(
            &format!("{name}: passing again when /health recovers"),
            || async { status().await.as_deref() == Some("passing") },
        )
        .await;
        handle.deregister().await.unwrap();
        assert_eq!(status().await, None, "{name}");
    }
    server.abort();
}

/// One instance as the agent renders it (`status=any` view), or `None` once it is gone.
async fn rendered(t: &TestAgent, service: &str, id: &str) -> Option<serde_json::Value> {
    let (code, body) = t
        .get(&format!("/api/v1/services/{service}/instances/{id}"))
        .await;
    (code == 200).then_some(body)
}

#[tokio::test]
async fn a_starting_registration_is_discovered_once_ready_and_drains_as_stopping_before_leaving() {
    let t = TestAgent::start().await;
    let drain = Duration::from_millis(600);
    let handle = Registration::builder("users", "10.0.0.7", 8080)
        .starting()
        .drain(drain)
        .register(t.registry())
        .await
        .unwrap();
    let id = handle.id().to_string();
    assert_eq!(
        rendered(&t, "users", &id).await.unwrap()["state"],
        "starting"
    );
    assert!(
        t.ids("users", "passing").await.is_empty(),
        "not discovered while starting"
    );
    assert_eq!(t.ids("users", "any").await, std::slice::from_ref(&id));

    handle.ready().await.unwrap();
    assert_eq!(handle.state(), signpost_client::instance::Lifecycle::Up);
    assert_eq!(t.ids("users", "passing").await, std::slice::from_ref(&id));

    // Graceful deregistration: `stopping` (out of discovery, still registered) for the drain
    // time, then gone.
    let started = tokio::time::Instant::now();
    let leaving = tokio::spawn(handle.deregister());
    eventually("stopping is announced", || async {
        rendered(&t, "users", &id)
            .await
            .is_some_and(|i| i["state"] == "stopping")
    })
    .await;
    assert!(t.ids("users", "passing").await.is_empty());
    assert_eq!(
        t.ids("users", "any").await,
        std::slice::from_ref(&id),
        "still registered while draining"
    );
    leaving.await.unwrap().unwrap();
    assert!(started.elapsed() >= drain, "waited the drain time");
    assert_eq!(rendered(&t, "users", &id).await, None);
}

#[tokio::test]
async fn without_a_drain_time_deregistration_is_immediate_and_never_announces_stopping() {
    let t = TestAgent::start().await;
    let handle = Registration::builder("users", "10.0.0.7", 8081)
        .register(t.registry())
        .await
        .unwrap();
    let id = handle.id().to_string();
    assert_eq!(rendered(&t, "users", &id).await.unwrap()["state"], "up");
    let mut changes = signpost_testkit::http_client()
        .get(t.url("/api/v1/services/users/watch?status=any"))
        .send()
        .await
        .unwrap();
    handle.deregister().await.unwrap();
    assert_eq!(rendered(&t, "users", &id).await, None);
    // The watch saw the reset and the removal, never an update to `stopping`.
    let mut seen = String::new();
    while !seen.contains("event: remove") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), changes.chunk())
            .await
            .expect("a watch frame within 10 s")
            .unwrap()
            .expect("the watch stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("stopping"), "{seen}");
}

#[tokio::test]
async fn the_sdk_never_chooses_a_stopping_instance_while_it_is_still_registered() {
    use signpost_client::balance::{PickContext, RoundRobin};
    use signpost_client::discovery::{Discovery, DiscoveryOptions};
    use signpost_client::registry::signpost::SignpostRegistry;
    use signpost_client::selector::Selector;

    let t = TestAgent::start().await;
    for (id, port) in [("a", 1), ("b", 2)] {
        let body = serde_json::json!({"id": id, "address": "10.0.0.1", "port": port});
        assert_eq!(t.register("users", body).await.0, 201);
    }
    let discovery = Discovery::new(t.registry(), DiscoveryOptions::default());
    let users = discovery.service("users");
    users.ready().await.unwrap();
    eventually("both are discovered", || async {
        users.instances().len() == 2
    })
    .await;

    let admin = SignpostRegistry::new([t.base.clone()]).unwrap();
    let b = admin
        .set_state("users", "b", signpost_client::instance::Lifecycle::Stopping)
        .await
        .unwrap();
    assert_eq!(b.state, signpost_client::instance::Lifecycle::Stopping);
    let selector = Selector::builder().balancer(RoundRobin::new()).build();
    eventually("b leaves the discovered list", || async {
        users.instances().iter().all(|i| i.id != "b")
    })
    .await;
    for _ in 0..20 {
        let endpoints = users.instances();
        let picked = selector
            .select(&endpoints, &PickContext::new(), &[])
            .unwrap();
        assert_eq!(picked.instance().id, "a");
        picked.finish(signpost_client::balance::Outcome::Success);
    }
    assert_eq!(
        t.ids("users", "any").await,
        ["a", "b"],
        "b is still registered"
    );

    // Maintenance through the SDK's admin call, likewise.
    let a = admin
        .set_maintenance("users", "a", true, Some("disk swap"))
        .await
        .unwrap();
    assert_eq!(a.maintenance.unwrap().reason, "disk swap");
    eventually("a leaves too", || async { users.instances().is_empty() }).await;
    admin
        .set_maintenance("users", "a", false, None)
        .await
        .unwrap();
    eventually("a comes back", || async { users.instances().len() == 1 }).await;
    let err = admin
        .set_state("users", "nope", signpost_client::instance::Lifecycle::Up)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            signpost_client::registry::RegistryError::NotFound { .. }
        ),
        "{err}"
    );
}
