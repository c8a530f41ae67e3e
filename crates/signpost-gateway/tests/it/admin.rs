//! The admin port: routes and upstream health, Prometheus metrics.

use serde_json::{json, Value};

use crate::common::{AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn the_admin_port_lists_routes_health_and_metrics() {
    let agent = TestAgent::start().await;
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    agent
        .add_instance("users", "users-a", a.port(), json!({}))
        .await;
    agent
        .add_instance("users", "users-b", b.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [[route]]
        name = "users"
        prefix = "/users"
        service = "users"
        balancer = "least_outstanding"
        "#,
    )
    .await;
    gw.wait_upstreams("users", 2).await;
    for _ in 0..4 {
        assert_eq!(gw.get("/users/1").await.0, 200);
    }
    assert_eq!(gw.get("/nothing").await.0, 404);

    let client = &gw.client;
    let index: Value = client
        .get(gw.admin_url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = &index["routes"][0];
    assert_eq!(route["name"], "users");
    assert_eq!(route["prefix"], "/users");
    assert_eq!(route["service"], "users");
    assert_eq!(route["source"], "config");
    assert_eq!(route["balancer"], "least_outstanding");
    assert_eq!(route["discovery"]["ready"], true);
    let upstreams = route["upstreams"].as_array().unwrap();
    assert_eq!(upstreams.len(), 2);
    for u in upstreams {
        assert_eq!(u["healthy"], true);
        assert_eq!(u["breaker"], "closed");
        assert_eq!(u["available"], true);
    }
    let total: u64 = upstreams
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4);

    let resp = client.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let metrics = resp.text().await.unwrap();
    for line in [
        "signpost_gateway_requests_total{route=\"users\",code=\"2xx\"} 4",
        "signpost_gateway_requests_total{route=\"\",code=\"4xx\"} 1",
        "signpost_gateway_request_duration_seconds_count{route=\"users\"} 4",
        "signpost_gateway_request_duration_seconds_bucket{route=\"users\",le=\"+Inf\"} 4",
        "signpost_gateway_breaker_state{route=\"users\",upstream=\"users-a\"",
        "signpost_gateway_upstream_errors_total{route=\"users\",upstream=\"users-b\"",
        "signpost_gateway_route_instances{route=\"users\"} 2",
        "# TYPE signpost_gateway_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }

    let resp = client.get(gw.admin_url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client.post(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    gw.shutdown().await;
}
