//! Errors mean what they say: 404 no route, 503 nothing to send to, 502 the upstream failed,
//! 504 it was too slow. An upstream's own answer passes through.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{dead_port, respond, AgentExt, Backend, TestAgent, TestGateway};

const CONFIG: &str = r#"
[[route]]
prefix = "/empty"
service = "empty"

[[route]]
prefix = "/dead"
service = "dead"

[[route]]
prefix = "/slow"
service = "slow"
timeout = "200ms"

[[route]]
prefix = "/rude"
service = "rude"

[[route]]
prefix = "/fails"
service = "fails"
"#;

#[tokio::test]
async fn each_failure_has_its_status() {
    let agent = TestAgent::start().await;
    // Registered at a port nobody listens on.
    agent
        .add_instance("dead", "dead-1", dead_port().await, json!({}))
        .await;
    // Never answers.
    let slow = Backend::start(false, |_req| async {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    agent
        .add_instance("slow", "slow-1", slow.port(), json!({}))
        .await;
    // Accepts and closes without answering.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude_port = rude.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = rude.accept().await.unwrap();
            drop(stream);
        }
    });
    agent
        .add_instance("rude", "rude-1", rude_port, json!({}))
        .await;
    // Answers 500 with a body of its own.
    let fails = Backend::start(false, |_req| async { respond(500, "backend says no") }).await;
    agent
        .add_instance("fails", "fails-1", fails.port(), json!({}))
        .await;

    let gw = TestGateway::start(&agent, CONFIG).await;
    for route in ["/dead", "/slow", "/rude", "/fails"] {
        gw.wait_upstreams(route, 1).await;
    }

    let (status, body) = gw.get("/nowhere").await;
    assert_eq!((status, &body["kind"]), (404, &json!("no_route")));
    assert!(body["error"].as_str().unwrap().contains("/nowhere"));

    let (status, body) = gw.get("/empty/x").await;
    assert_eq!((status, &body["kind"]), (503, &json!("no_instances")));
    assert_eq!(body["service"], "empty");

    let (status, body) = gw.get("/dead/x").await;
    assert_eq!((status, &body["kind"]), (502, &json!("upstream_failed")));
    assert!(body["request_id"].is_string());

    let (status, body) = gw.get("/rude/x").await;
    assert_eq!((status, &body["kind"]), (502, &json!("upstream_failed")));

    let started = Instant::now();
    let (status, body) = gw.get("/slow/x").await;
    assert_eq!((status, &body["kind"]), (504, &json!("upstream_timeout")));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let resp = gw.client.get(gw.url("/fails/x")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text().await.unwrap(), "backend says no");

    let metrics = gw.gateway.metrics();
    for line in [
        "signpost_gateway_errors_total{route=\"\",kind=\"no_route\"} 1",
        "signpost_gateway_errors_total{route=\"/empty\",kind=\"no_instances\"} 1",
        "signpost_gateway_errors_total{route=\"/slow\",kind=\"upstream_timeout\"} 1",
        "signpost_gateway_requests_total{route=\"/fails\",code=\"5xx\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn every_circuit_open_is_503() {
    let agent = TestAgent::start().await;
    let fails = Backend::start(false, |_req| async { respond(503, "down") }).await;
    agent
        .add_instance("fails", "fails-1", fails.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [breaker]
        consecutive_failures = 2
        cool_down = "1m"
        [outlier]
        consecutive_failures = 0
        [[route]]
        prefix = "/"
        service = "fails"
        [route.retry]
        attempts = 1
        "#,
    )
    .await;
    gw.wait_upstreams("/", 1).await;
    // The upstream's own 503s pass through until the breaker opens...
    assert_eq!(gw.get("/").await.0, 503);
    assert_eq!(gw.get("/").await.0, 503);
    // ...then the gateway fails fast.
    let (status, body) = gw.get("/").await;
    assert_eq!((status, &body["kind"]), (503, &json!("circuit_open")));
    let route = gw.route("/").unwrap();
    assert_eq!(route.upstreams[0].breaker, "open");
    assert!(gw
        .gateway
        .metrics()
        .contains("signpost_gateway_breaker_state{route=\"/\",upstream=\"fails-1\""));
}
