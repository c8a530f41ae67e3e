//! Routes declared in instance metadata appear and disappear without a restart.

use serde_json::json;

use crate::common::{eventually, AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn registry_routes_change_live() {
    let agent = TestAgent::start().await;
    // A configured route on "/" so requests that no registry route claims get a known answer.
    let web = Backend::echo("web").await;
    agent
        .add_instance("web", "web-1", web.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [registry]
        metadata_prefixes = ["/live", "/alive"]
        [[route]]
        prefix = "/"
        service = "web"
        "#,
    )
    .await;
    gw.wait_upstreams("/", 1).await;
    let (_, body) = gw.get("/live/hello").await;
    assert_eq!(body["backend"], "web");

    // A service appears, declaring its route.
    let live = Backend::echo("live").await;
    agent
        .add_instance(
            "live",
            "live-1",
            live.port(),
            json!({ "gateway.prefix": "/live", "gateway.strip_prefix": "true" }),
        )
        .await;
    eventually("the registry route routes", || async {
        gw.get("/live/hello").await.1["backend"] == "live"
    })
    .await;
    let (status, body) = gw.get("/live/hello?x=1").await;
    assert_eq!(status, 200);
    assert_eq!(body["uri"], "/hello?x=1");
    let route = gw.route("/live").expect("listed");
    assert_eq!(route.source, "registry");
    assert_eq!(route.service, "live");

    // A second instance joins the route.
    let live2 = Backend::echo("live-2").await;
    agent
        .add_instance(
            "live",
            "live-2",
            live2.port(),
            json!({ "gateway.prefix": "/live" }),
        )
        .await;
    gw.wait_upstreams("/live", 2).await;

    // A metadata change moves the route.
    agent
        .add_instance(
            "live",
            "live-1",
            live.port(),
            json!({ "gateway.prefix": "/alive", "gateway.strip_prefix": "true" }),
        )
        .await;
    eventually("the route moves to /alive", || async {
        gw.route("/alive").is_some() && gw.route("/live").is_none()
    })
    .await;

    // The service leaves: its route goes, and "/" takes the path again.
    assert_eq!(agent.deregister("live", "live-1").await, 204);
    assert_eq!(agent.deregister("live", "live-2").await, 204);
    eventually("the registry route is gone", || async {
        gw.route("/alive").is_none() && gw.route("/live").is_none()
    })
    .await;
    let (status, body) = gw.get("/alive/hello").await;
    assert_eq!((status, &body["backend"]), (200, &json!("web")));
}

#[tokio::test]
async fn a_service_whose_instances_are_all_unhealthy_answers_503_not_404() {
    let agent = TestAgent::start().await;
    let b = Backend::echo("svc").await;
    // An instance with a TTL check: it turns critical when the TTL passes without heartbeat.
    let resp = agent
        .client
        .post(format!("{}/api/v1/services/svc/instances", agent.base))
        .json(&json!({
            "id": "svc-1", "address": "127.0.0.1", "port": b.port(),
            "metadata": { "gateway.prefix": "/svc" },
            "check": { "ttl": "300ms" }
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let gw = TestGateway::start(&agent, "").await;
    eventually("routed", || async { gw.get("/svc/a").await.0 == 200 }).await;
    eventually("the instance expires and the route answers 503", || async {
        gw.get("/svc/a").await.0 == 503
    })
    .await;
    let (status, body) = gw.get("/svc/a").await;
    assert_eq!(status, 503);
    assert_eq!(body["kind"], "no_instances");
    assert_eq!(body["service"], "svc");
}

#[tokio::test]
async fn bad_gateway_metadata_is_reported_not_routed() {
    let agent = TestAgent::start().await;
    let b = Backend::echo("b").await;
    agent
        .add_instance(
            "odd",
            "odd-1",
            b.port(),
            json!({ "gateway.prefix": "no-slash" }),
        )
        .await;
    let gw = TestGateway::start(&agent, "").await;
    eventually("the problem is reported", || async {
        gw.gateway.services().iter().any(|s| {
            s.name == "odd"
                && s.problem
                    .as_deref()
                    .is_some_and(|p| p.contains("gateway.prefix"))
        })
    })
    .await;
    assert!(gw.gateway.routes().is_empty());
    let index: serde_json::Value = gw
        .client
        .get(gw.admin_url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index["services"][0]["name"], "odd");
    assert_eq!(index["services"][0]["in_catalog"], true);
}
