//! `[auto_routes]` (issue 18 §5): `/svc/<service>/rest` reaches `<service>` as `/rest`
//! without a route per service; configured routes win; unknown services are a 404 that leaves
//! nothing behind; the number of services followed this way is capped.

use serde_json::{json, Value};

use crate::common::{AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn a_service_named_in_the_path_is_reached_with_its_segment_stripped() {
    let agent = TestAgent::start().await;
    let users = Backend::echo("users").await;
    agent
        .add_instance("users", "u-1", users.port(), json!({}))
        .await;
    // Followed lazily (no catalog-wide following), and beside it everything followed.
    for from_metadata in [false, true] {
        let gw = TestGateway::start(
            &agent,
            &format!(
                "[registry]\nroutes_from_metadata = {from_metadata}\n\
                 [auto_routes]\nprefix = \"/svc\"\n"
            ),
        )
        .await;
        if !from_metadata {
            assert!(
                gw.gateway.services().is_empty(),
                "nothing is followed before a request names it"
            );
        }
        let (status, body) = gw.get("/svc/users/x/y?q=1").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["backend"], "users");
        assert_eq!(body["uri"], "/x/y?q=1");
        let (status, body) = gw.get("/svc/users").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["uri"], "/");
        let route = gw.route("/svc/users").expect("the auto route is listed");
        assert_eq!(route.source, "auto");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn configured_routes_win_over_auto_routes() {
    let agent = TestAgent::start().await;
    let users = Backend::echo("users").await;
    let legacy = Backend::echo("legacy").await;
    agent
        .add_instance("users", "u-1", users.port(), json!({}))
        .await;
    agent
        .add_instance("legacy", "l-1", legacy.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        "[registry]\nroutes_from_metadata = false\n[auto_routes]\nprefix = \"/svc\"\n\
         [[route]]\nprefix = \"/svc/users\"\nservice = \"legacy\"\n",
    )
    .await;
    gw.wait_upstreams("/svc/users", 1).await;
    let (status, body) = gw.get("/svc/users/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "legacy");
    assert_eq!(
        body["uri"], "/svc/users/x",
        "the configured route's own settings"
    );
    assert!(users.requests().is_empty());
}

#[tokio::test]
async fn an_unknown_service_is_a_404_that_leaves_nothing_behind() {
    let agent = TestAgent::start().await;
    let users = Backend::echo("users").await;
    agent
        .add_instance("users", "u-1", users.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        "[registry]\nroutes_from_metadata = false\n[auto_routes]\nprefix = \"/svc\"\n",
    )
    .await;
    // Known once the catalog is: a known service answers first.
    let (status, _) = gw.get("/svc/users/").await;
    assert_eq!(status, 200);
    for name in ["nosuch", "random-1", "random-2"] {
        let (status, body) = gw.get(&format!("/svc/{name}/x")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["kind"], "no_route");
    }
    // Not a service name at all: a 404 too.
    let (status, _) = gw.get("/svc/Not_A_Name/x").await;
    assert_eq!(status, 404);
    let followed: Vec<String> = gw.gateway.services().into_iter().map(|s| s.name).collect();
    assert_eq!(followed, ["users"]);
    assert_eq!(gw.gateway.routes().len(), 1);
}

#[tokio::test]
async fn services_followed_by_name_are_capped() {
    let agent = TestAgent::start().await;
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    agent
        .add_instance("alpha", "a-1", a.port(), json!({}))
        .await;
    agent.add_instance("beta", "b-1", b.port(), json!({})).await;
    let gw = TestGateway::start(
        &agent,
        "[registry]\nroutes_from_metadata = false\n\
         [auto_routes]\nprefix = \"/svc\"\nmax_services = 1\n",
    )
    .await;
    let (status, body) = gw.get("/svc/alpha/").await;
    assert_eq!(status, 200, "{body}");
    let (status, body): (u16, Value) = gw.get("/svc/beta/").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["kind"], "auto_route_limit");
    assert!(body["error"].as_str().unwrap().contains("max_services"));
    // The one followed keeps working.
    let (status, _) = gw.get("/svc/alpha/again").await;
    assert_eq!(status, 200);
}

/// `PUT`/`POST` on the agent with the management token; fails the test unless it succeeds.
async fn as_root(agent: &TestAgent, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = agent
        .client
        .request(method, agent.url(path))
        .header("X-Consul-Token", ROOT)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

const ROOT: &str = "root-secret";

#[tokio::test]
async fn a_service_the_gateways_token_may_not_read_is_a_404_like_an_unknown_one() {
    let agent = TestAgent::start_with(|c| {
        c.acl.enabled = true;
        c.acl.initial_management_token = Some(ROOT.into());
    })
    .await;
    let users = Backend::echo("users").await;
    let secret = Backend::echo("secret").await;
    for (service, port) in [("users", users.port()), ("secret", secret.port())] {
        let path = format!("/api/v1/services/{service}/instances");
        let body = json!({ "address": "127.0.0.1", "port": port });
        crate::common::eventually("the management token works", || async {
            agent
                .client
                .post(agent.url(&path))
                .header("X-Consul-Token", ROOT)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        })
        .await;
    }
    let rules = r#"service "users" { policy = "read" }"#;
    as_root(
        &agent,
        reqwest::Method::PUT,
        "/v1/acl/policy",
        json!({"Name": "gateway", "Rules": rules}),
    )
    .await;
    let token = as_root(
        &agent,
        reqwest::Method::PUT,
        "/v1/acl/token",
        json!({"Description": "gateway", "Policies": [{"Name": "gateway"}]}),
    )
    .await;
    let token = token["SecretID"].as_str().unwrap();
    let gw = TestGateway::start(
        &agent,
        &format!(
            "[registry]\nroutes_from_metadata = false\ntoken = \"{token}\"\n\
             [auto_routes]\nprefix = \"/svc\"\n"
        ),
    )
    .await;
    let (status, body) = gw.get("/svc/users/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "users");
    let (status, body) = gw.get("/svc/secret/x").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["kind"], "no_route");
    let (_, unknown) = gw.get("/svc/nosuch/x").await;
    assert_eq!(
        body,
        json!({"error": "no route for /svc/secret/x", "kind": "no_route", "request_id": body["request_id"]})
    );
    assert_eq!(unknown["kind"], body["kind"]);
    assert!(secret.requests().is_empty());
    let followed: Vec<String> = gw.gateway.services().into_iter().map(|s| s.name).collect();
    assert_eq!(followed, ["users"]);
}
