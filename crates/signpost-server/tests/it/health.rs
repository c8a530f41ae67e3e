//! Health checking against real sockets: TTL expiry, HTTP checks that flip, TCP checks, gRPC
//! health checks against a real gRPC server, the deregister timer and the mass-eviction guard.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::routing::get;
use serde_json::json;

use crate::common::{eventually, TestAgent};

#[tokio::test]
async fn ttl_expires_without_heartbeats_and_recovers_with_one() {
    let t = TestAgent::start().await;
    t.register(
        "svc",
        json!({"id": "a", "address": "10.0.0.1", "port": 80, "check": {"ttl": "200ms"}}),
    )
    .await;
    assert_eq!(t.status_of("svc", "a").await.as_deref(), Some("passing"));
    eventually("the ttl expires", || async {
        t.status_of("svc", "a").await.as_deref() == Some("critical")
    })
    .await;
    assert!(
        t.ids("svc", "passing").await.is_empty(),
        "critical instances are not served"
    );
    let resp = t
        .client
        .put(t.url("/api/v1/services/svc/instances/a/heartbeat"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["status"], "passing",
        "the heartbeat's answer reflects the recovery"
    );
    assert_eq!(t.ids("svc", "passing").await, ["a"]);
}

#[tokio::test]
async fn regular_heartbeats_keep_an_instance_passing() {
    let t = TestAgent::start().await;
    t.register(
        "svc",
        json!({"id": "a", "address": "10.0.0.1", "port": 80, "check": {"ttl": "300ms"}}),
    )
    .await;
    // Heartbeat every 50 ms, well inside the 300 ms TTL, for four TTL periods.
    let mut beat = tokio::time::interval(std::time::Duration::from_millis(50));
    for _ in 0..24 {
        beat.tick().await;
        let resp = t
            .client
            .put(t.url("/api/v1/services/svc/instances/a/heartbeat"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(t.status_of("svc", "a").await.as_deref(), Some("passing"));
    }
}

/// A tiny service whose `/health` answers whatever status code the test sets.
async fn flippable_server() -> (String, Arc<AtomicU16>) {
    let code = Arc::new(AtomicU16::new(200));
    let served = code.clone();
    let app = axum::Router::new().route(
        "/health",
        get(move || {
            let code = served.load(Ordering::SeqCst);
            async move { axum::http::StatusCode::from_u16(code).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, code)
}

#[tokio::test]
async fn http_check_follows_a_real_server() {
    let t = TestAgent::start().await;
    let (url, code) = flippable_server().await;
    let (status, body) = t
        .register("web", json!({"id": "w", "address": "127.0.0.1", "port": 80, "check": {"http": url, "interval": "100ms", "timeout": "1s"}}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        body["status"], "critical",
        "active checks start critical until they pass"
    );
    let status_is = |want: &'static str| {
        let t = &t;
        move || async move { t.status_of("web", "w").await.as_deref() == Some(want) }
    };
    eventually("first check passes", status_is("passing")).await;
    code.store(500, Ordering::SeqCst);
    eventually("500 turns it critical", status_is("critical")).await;
    code.store(429, Ordering::SeqCst);
    eventually("429 turns it warning", status_is("warning")).await;
    code.store(204, Ordering::SeqCst);
    eventually("2xx turns it passing", status_is("passing")).await;
}

#[tokio::test]
async fn tcp_check_against_closed_and_open_ports() {
    let t = TestAgent::start().await;
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_addr = open.local_addr().unwrap();
    // Bound while `open` holds its port, so the two cannot be the same port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    tokio::spawn(async move {
        loop {
            let _ = open.accept().await;
        }
    });
    t.register("db", json!({"id": "closed", "address": "127.0.0.1", "port": closed.port(), "check": {"tcp": closed.to_string(), "interval": "100ms"}})).await;
    t.register("db", json!({"id": "open", "address": "127.0.0.1", "port": open_addr.port(), "check": {"tcp": open_addr.to_string(), "interval": "100ms"}})).await;
    eventually("the open port passes", || async {
        t.status_of("db", "open").await.as_deref() == Some("passing")
    })
    .await;
    // The closed port has been probed at least as often as the open one by now.
    assert_eq!(
        t.status_of("db", "closed").await.as_deref(),
        Some("critical")
    );
    assert_eq!(t.ids("db", "passing").await, ["open"]);
}

/// A real gRPC server on 127.0.0.1:0 serving `grpc.health.v1.Health`, with its reporter.
async fn grpc_health_server() -> (std::net::SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap()
    });
    (addr, reporter)
}

#[tokio::test]
async fn grpc_check_follows_a_real_health_server() {
    use tonic_health::ServingStatus;

    let t = TestAgent::start().await;
    let (addr, reporter) = grpc_health_server().await;
    reporter
        .set_service_status("pkg.Users", ServingStatus::Serving)
        .await;
    // Bound while the server holds its port, so the two cannot be the same port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let check = |target: String| json!({"grpc": target, "interval": "100ms", "timeout": "1s"});
    for (id, target) in [
        ("users", format!("{addr}/pkg.Users")),
        ("overall", addr.to_string()),
        ("unknown", format!("{addr}/pkg.Nobody")),
        ("closed", format!("{closed}/pkg.Users")),
    ] {
        let (status, body) = t
            .register("grpc", json!({"id": id, "address": "127.0.0.1", "port": addr.port(), "check": check(target)}))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["status"], "critical",
            "active checks start critical until they pass"
        );
    }
    let status_is = |id: &'static str, want: &'static str| {
        let t = &t;
        move || async move { t.status_of("grpc", id).await.as_deref() == Some(want) }
    };
    eventually("SERVING passes", status_is("users", "passing")).await;
    eventually(
        "the server's overall health passes",
        status_is("overall", "passing"),
    )
    .await;
    reporter
        .set_service_status("pkg.Users", ServingStatus::NotServing)
        .await;
    eventually(
        "NOT_SERVING turns it critical",
        status_is("users", "critical"),
    )
    .await;
    reporter
        .set_service_status("pkg.Users", ServingStatus::Serving)
        .await;
    eventually(
        "SERVING again turns it passing",
        status_is("users", "passing"),
    )
    .await;
    // The other instances have been probed several times over by now.
    assert_eq!(
        t.status_of("grpc", "overall").await.as_deref(),
        Some("passing"),
        "the overall status did not follow one service's"
    );
    assert_eq!(
        t.status_of("grpc", "unknown").await.as_deref(),
        Some("critical"),
        "a service the server does not know is critical"
    );
    assert_eq!(
        t.status_of("grpc", "closed").await.as_deref(),
        Some("critical"),
        "a closed port is critical"
    );
    assert_eq!(t.ids("grpc", "passing").await, ["overall", "users"]);
}

#[tokio::test]
async fn critical_instances_are_deregistered_after_the_configured_time() {
    let t = TestAgent::start().await;
    t.register("svc", json!({"id": "a", "address": "10.0.0.1", "port": 80, "check": {"ttl": "150ms", "deregister_after": "300ms"}})).await;
    t.register(
        "svc",
        json!({"id": "b", "address": "10.0.0.1", "port": 81, "check": {"ttl": "150ms"}}),
    )
    .await;
    eventually("a is deregistered", || async {
        t.status_of("svc", "a").await.is_none()
    })
    .await;
    assert_eq!(
        t.status_of("svc", "b").await.as_deref(),
        Some("critical"),
        "b has no deregister_after"
    );
}

#[tokio::test]
async fn mass_eviction_guard_keeps_the_registry_when_heartbeats_stop_everywhere() {
    let t = TestAgent::start_with(|c| {
        c.health.guard_threshold = 0.2;
        c.health.guard_min_instances = 2;
    })
    .await;
    let ids: Vec<String> = (0..6).map(|i| format!("i{i}")).collect();
    for (n, id) in ids.iter().enumerate() {
        t.register(
            "svc",
            json!({"id": id, "address": "10.0.0.1", "port": 1000 + n, "check": {"ttl": "300ms"}}),
        )
        .await;
    }
    // Each heartbeats once: the guard counts only instances it has seen alive.
    for id in &ids {
        let resp = t
            .client
            .put(t.url(&format!("/api/v1/services/svc/instances/{id}/heartbeat")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Every heartbeat stops at once, as when the agent loses its network.
    eventually("the guard engages", || async {
        t.get("/api/v1/agent/self").await.1["eviction_guard"]["engaged"] == true
    })
    .await;
    // At most one expiry (1 of 6 is within the 20% threshold) happens before the guard holds.
    let passing = t.ids("svc", "passing").await.len();
    assert!(passing >= 5, "guard let {} of 6 expire", 6 - passing);
    let metrics = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("signpost_eviction_guard_engaged 1"),
        "{metrics}"
    );
    // It stays held while every remaining instance is past its TTL.
    eventually("every passing instance is overdue", || async {
        let (_, agent) = t.get("/api/v1/agent/self").await;
        agent["eviction_guard"]["overdue"].as_u64() == Some(passing as u64)
            && agent["eviction_guard"]["engaged"] == true
    })
    .await;
    assert_eq!(t.ids("svc", "passing").await.len(), passing);

    // Heartbeats recover: the guard releases and everyone is passing.
    for id in &ids {
        let resp = t
            .client
            .put(t.url(&format!("/api/v1/services/svc/instances/{id}/heartbeat")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    eventually("the guard releases", || async {
        t.get("/api/v1/agent/self").await.1["eviction_guard"]["engaged"] == false
    })
    .await;
    assert_eq!(t.ids("svc", "passing").await.len(), 6);
}

#[tokio::test]
async fn the_checker_tracks_exactly_the_instances_with_a_check() {
    let t = TestAgent::start().await;
    for body in [
        json!({"id": "ttl", "address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
        json!({"id": "tcp", "address": "127.0.0.1", "port": 1, "check": {"tcp": "127.0.0.1:1", "interval": "10s"}}),
        json!({"id": "none", "address": "10.0.0.1", "port": 80}),
    ] {
        let (code, body) = t.register("svc", body).await;
        assert_eq!(code, 201, "{body}");
    }
    let mut ids: Vec<String> = signpost_server::service::checked_instances(&t.agent)
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["tcp", "ttl"]);
    eventually("the active check runs", || async {
        t.agent.health().active_checks() == 1
    })
    .await;
}
