//! The gateway cannot be hijacked through the registry: routes declared in instance metadata
//! stay where the operator allows, and instances at denied addresses are never forwarded to.
//! Each refusal is visible in the admin API with its reason, and configured routes keep
//! their traffic.

use serde_json::{json, Value};

use crate::common::{eventually, AgentExt, Backend, TestAgent, TestGateway};

/// Registers instance `id` of `service` at `address:port` with `metadata`.
async fn add_at(agent: &TestAgent, service: &str, id: &str, address: &str, port: u16, meta: Value) {
    let body = json!({ "id": id, "address": address, "port": port, "metadata": meta });
    let (status, answer) = agent.register(service, body).await;
    assert!((200..300).contains(&status), "register: {status} {answer}");
}

/// Waits until the admin API shows `service` with a problem, and returns it.
async fn problem_of(gw: &TestGateway, service: &str) -> String {
    eventually(
        &format!("the admin API shows {service}'s problem"),
        || async { gw.admin_service(service).await["problem"].is_string() },
    )
    .await;
    gw.admin_service(service).await["problem"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_metadata_route_cannot_take_a_configured_routes_path() {
    let agent = TestAgent::start().await;
    let users = Backend::echo("users").await;
    let evil = Backend::echo("evil").await;
    let orders = Backend::echo("orders").await;
    agent
        .add_instance("users", "users-1", users.port(), json!({}))
        .await;
    // Inside the configured route's subtree, and on its very prefix with a host (host routes
    // beat host-less ones of the same prefix).
    agent
        .add_instance(
            "evil",
            "evil-1",
            evil.port(),
            json!({ "gateway.prefix": "/api/users/login" }),
        )
        .await;
    agent
        .add_instance(
            "evil-host",
            "evil-host-1",
            evil.port(),
            json!({ "gateway.prefix": "/api/users", "gateway.host": "127.0.0.1" }),
        )
        .await;
    // A neighbour the policy allows, to show registry routes still work here.
    agent
        .add_instance(
            "orders",
            "orders-1",
            orders.port(),
            json!({ "gateway.prefix": "/api/orders" }),
        )
        .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [registry]
        metadata_prefixes = ["/api/"]
        [[route]]
        prefix = "/api/users"
        service = "users"
        "#,
    )
    .await;
    gw.wait_upstreams("/api/users", 1).await;
    gw.wait_upstreams("/api/orders", 1).await;

    let problem = problem_of(&gw, "evil").await;
    assert!(problem.contains("gateway.prefix"), "{problem}");
    assert!(
        problem.contains("configured route \"/api/users\""),
        "{problem}"
    );
    assert!(problem.contains("owns its whole subtree"), "{problem}");
    let problem = problem_of(&gw, "evil-host").await;
    assert!(
        problem.contains("host 127.0.0.1 prefix \"/api/users\" would take traffic"),
        "{problem}"
    );
    assert_eq!(
        gw.admin_service("evil").await["declared_prefix"],
        Value::Null
    );

    for path in ["/api/users/login", "/api/users", "/api/users/7"] {
        let (status, body) = gw.get(path).await;
        assert_eq!((status, &body["backend"]), (200, &json!("users")), "{path}");
    }
    assert!(evil.requests().is_empty());
    assert_eq!(gw.get("/api/orders/1").await.1["backend"], "orders");
    let routes: Vec<String> = gw.gateway.routes().into_iter().map(|r| r.name).collect();
    assert_eq!(routes, ["/api/orders", "/api/users"]);
}

#[tokio::test]
async fn a_metadata_route_outside_metadata_prefixes_is_refused() {
    let agent = TestAgent::start().await;
    let web = Backend::echo("web").await;
    let admin = Backend::echo("admin").await;
    let users = Backend::echo("users").await;
    agent
        .add_instance("web", "web-1", web.port(), json!({}))
        .await;
    agent
        .add_instance(
            "admin",
            "admin-1",
            admin.port(),
            json!({ "gateway.prefix": "/admin" }),
        )
        .await;
    agent
        .add_instance(
            "users",
            "users-1",
            users.port(),
            json!({ "gateway.prefix": "/svc/users" }),
        )
        .await;
    // A catch-all configured route, with /svc/ delegated to the registry.
    let gw = TestGateway::start(
        &agent,
        r#"
        [registry]
        metadata_prefixes = ["/svc/"]
        [[route]]
        prefix = "/"
        service = "web"
        "#,
    )
    .await;
    gw.wait_upstreams("/", 1).await;
    gw.wait_upstreams("/svc/users", 1).await;
    let problem = problem_of(&gw, "admin").await;
    assert!(
        problem.contains("prefix \"/admin\" is not under registry.metadata_prefixes (/svc/)"),
        "{problem}"
    );
    let (status, body) = gw.get("/admin/delete-everything").await;
    assert_eq!((status, &body["backend"]), (200, &json!("web")));
    assert_eq!(gw.get("/svc/users/1").await.1["backend"], "users");
    assert!(admin.requests().is_empty());

    // Without metadata_prefixes a service may claim only its own name; a catch-all then owns
    // everything.
    let other = Backend::echo("other").await;
    agent
        .add_instance(
            "other",
            "other-1",
            other.port(),
            json!({ "gateway.prefix": "/web" }),
        )
        .await;
    let gw = TestGateway::start(&agent, "").await;
    let problem = problem_of(&gw, "other").await;
    assert!(
        problem.contains("prefix \"/web\" is not /other or below it"),
        "{problem}"
    );
    assert_eq!(gw.get("/web").await.0, 404);
    assert_eq!(gw.get("/svc/users/1").await.0, 404);
    assert!(other.requests().is_empty());
}

#[tokio::test]
async fn instances_at_denied_addresses_are_never_forwarded_to() {
    let agent = TestAgent::start().await;
    let good = Backend::echo("good").await;
    // A loopback address stands in for the metadata service, so nothing leaves the machine
    // even if the guard failed.
    let denied = Backend::echo_at("127.0.0.2", "denied").await;
    agent
        .add_instance("web", "web-good", good.port(), json!({}))
        .await;
    add_at(
        &agent,
        "web",
        "web-denied",
        "127.0.0.2",
        denied.port(),
        json!({}),
    )
    .await;
    add_at(
        &agent,
        "meta",
        "meta-1",
        "127.0.0.2",
        denied.port(),
        json!({ "gateway.prefix": "/meta" }),
    )
    .await;
    // The default ranges: listed as refused without ever being dialled.
    add_at(&agent, "cloud", "cloud-1", "169.254.169.254", 80, json!({})).await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [registry]
        deny_cidrs = ["127.0.0.2/32", "169.254.0.0/16", "fe80::/10"]
        [[route]]
        prefix = "/web"
        service = "web"
        "#,
    )
    .await;
    eventually("the denied instance is listed as refused", || async {
        gw.admin_service("web").await["refused_instances"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    })
    .await;
    let refused = &gw.admin_service("web").await["refused_instances"][0];
    assert_eq!(refused["id"], "web-denied");
    assert_eq!(refused["address"], format!("127.0.0.2:{}", denied.port()));
    assert_eq!(
        refused["reason"],
        "address 127.0.0.2 is in the denied range 127.0.0.2/32 (registry.deny_cidrs)"
    );
    gw.wait_upstreams("/web", 1).await;
    for _ in 0..10 {
        let (status, body) = gw.get("/web/x").await;
        assert_eq!((status, &body["backend"]), (200, &json!("good")));
    }

    // A service whose only instance is denied declares nothing: no route.
    eventually("meta's instance is refused", || async {
        gw.admin_service("meta").await["refused_instances"][0]["id"] == "meta-1"
    })
    .await;
    assert!(gw.route("/meta").is_none());
    assert_eq!(gw.get("/meta/latest").await.0, 404);
    assert!(denied.requests().is_empty());

    let cloud = gw.admin_service("cloud").await;
    let reason = cloud["refused_instances"][0]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("169.254.0.0/16"), "{cloud}");
}

#[tokio::test]
async fn a_host_name_resolving_into_a_denied_range_is_not_dialled() {
    let agent = TestAgent::start().await;
    let backend = Backend::echo("behind-a-name").await;
    add_at(
        &agent,
        "named",
        "named-1",
        "localhost",
        backend.port(),
        json!({}),
    )
    .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [registry]
        deny_cidrs = ["127.0.0.0/8", "::1/128"]
        [[route]]
        prefix = "/named"
        service = "named"
        [route.retry]
        attempts = 1
        "#,
    )
    .await;
    gw.wait_upstreams("/named", 1).await;
    let (status, body) = gw.get("/named").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["kind"], "upstream_failed");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("registry.deny_cidrs"), "{error}");
    assert!(backend.requests().is_empty());
}
