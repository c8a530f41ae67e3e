//! A killed backend costs a bounded number of failed requests, then traffic avoids it.

use serde_json::json;

use crate::common::{AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn a_killed_instance_costs_a_bounded_number_of_errors() {
    let agent = TestAgent::start().await;
    let a = Backend::echo("a").await;
    let mut b = Backend::echo("b").await;
    agent.add_instance("svc", "a", a.port(), json!({})).await;
    agent.add_instance("svc", "b", b.port(), json!({})).await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [outlier]
        consecutive_failures = 3
        [[route]]
        prefix = "/"
        service = "svc"
        "#,
    )
    .await;
    gw.wait_upstreams("/", 2).await;

    // Warm up: both instances serve, with pooled connections open to each.
    let mut by_backend = std::collections::HashMap::new();
    for _ in 0..20 {
        let (status, body) = gw.get("/warm").await;
        assert_eq!(status, 200);
        *by_backend
            .entry(body["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(by_backend.len(), 2, "{by_backend:?}");

    // Kill b without telling the registry: its pooled connections die, new ones are refused.
    b.kill().await;
    let mut failures = 0;
    let mut served_by_b = 0;
    for i in 0..200 {
        // Mix idempotent GETs and POSTs with bodies (which cannot be resent once sent).
        let resp = if i % 2 == 0 {
            gw.client.get(gw.url("/after")).send().await.unwrap()
        } else {
            gw.client
                .post(gw.url("/after"))
                .body("payload")
                .send()
                .await
                .unwrap()
        };
        if resp.status() != 200 {
            failures += 1;
            continue;
        }
        let body: serde_json::Value = resp.json().await.unwrap();
        if body["backend"] == "b" {
            served_by_b += 1;
        }
    }
    assert_eq!(served_by_b, 0);
    assert!(failures <= 3, "{failures} requests failed after the kill");

    // b is out of rotation: ejected or its breaker open.
    let route = gw.route("/").unwrap();
    let b_status = route.upstreams.iter().find(|u| u.id == "b").unwrap();
    assert!(!b_status.available, "{b_status:?}");
    assert!(b_status.failures >= 1);
    let a_status = route.upstreams.iter().find(|u| u.id == "a").unwrap();
    assert!(a_status.available);
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_instance_but_bodies_are_not_resent() {
    let (_agent, _good, _bad, gw) = good_and_bad(503).await;

    // Round robin sends GETs to `bad` (every other pick); its 503 is retried on `good`.
    for _ in 0..10 {
        let (status, body) = gw.get("/x").await;
        assert_eq!(status, 200);
        assert_eq!(body["backend"], "good");
    }
    let retries = gw
        .gateway
        .metrics()
        .lines()
        .find(|l| l.starts_with("signpost_gateway_retries_total{route=\"/\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!((1..=10).contains(&retries), "{retries} retries");

    // A POST with a body streams through once: `bad`'s 503 comes back as it was.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = gw
            .client
            .post(gw.url("/x"))
            .body("data")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_resent_request_carries_the_headers_of_the_first_attempt() {
    let (_agent, good, bad, gw) = good_and_bad(502).await;

    // Round robin sends first attempts to `bad`, whose 502 is resent to `good`.
    for i in 0..2 {
        let resp = gw
            .client
            .get(gw.url("/r"))
            .header("x-custom", format!("value-{i}"))
            .header("accept", "text/plain")
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let first_attempts = bad.requests();
    assert!(
        !first_attempts.is_empty(),
        "round robin sent a first attempt to bad"
    );
    for first in first_attempts {
        let first = &first.headers;
        let resent = good
            .requests()
            .into_iter()
            .find(|seen| seen.headers.get("x-custom") == first.get("x-custom"))
            .expect("the request bad answered 502 reached good");
        // Everything the gateway sent the first time goes again: the client's headers (each
        // value of a repeated one), the forwarding headers and the same request id.
        assert_eq!(resent.headers, *first);
        assert_eq!(resent.headers.get_all("accept").iter().count(), 2);
        assert!(resent.headers.contains_key("x-request-id"));
        assert!(resent.headers.contains_key("x-forwarded-for"));
    }
}

/// A service of two instances, `good` (an echo) and `bad` (always `status`), behind a gateway
/// whose breakers and outlier ejection never take `bad` out, so round robin keeps sending it
/// first attempts.
async fn good_and_bad(status: u16) -> (TestAgent, Backend, Backend, TestGateway) {
    let agent = TestAgent::start().await;
    let good = Backend::echo("good").await;
    let bad = Backend::start(false, move |_req| async move {
        crate::common::respond(status, "failing on purpose")
    })
    .await;
    agent
        .add_instance("svc", "good", good.port(), json!({}))
        .await;
    agent
        .add_instance("svc", "bad", bad.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [outlier]
        consecutive_failures = 0
        [breaker]
        consecutive_failures = 0
        failure_ratio = 2.0
        [[route]]
        prefix = "/"
        service = "svc"
        "#,
    )
    .await;
    gw.wait_upstreams("/", 2).await;
    (agent, good, bad, gw)
}
