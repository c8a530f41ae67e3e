//! Longest-prefix and host routing, prefix stripping.

use serde_json::json;

use crate::common::{AgentExt, Backend, TestAgent, TestGateway};

const CONFIG: &str = r#"
access_log = true
[[route]]
prefix = "/api"
service = "api"

[[route]]
name = "users"
prefix = "/api/users"
service = "users"
strip_prefix = true

[[route]]
name = "admin"
host = "admin.example.com"
prefix = "/api"
service = "admin"

[[route]]
name = "tenants"
host = "*.tenants.example"
prefix = "/"
service = "tenants"
"#;

async fn setup() -> (TestAgent, TestGateway, Vec<Backend>) {
    let agent = TestAgent::start().await;
    let mut backends = Vec::new();
    for service in ["api", "users", "admin", "tenants"] {
        let b = Backend::echo(service).await;
        agent
            .add_instance(service, service, b.port(), json!({}))
            .await;
        backends.push(b);
    }
    let gw = TestGateway::start(&agent, CONFIG).await;
    for name in ["/api", "users", "admin", "tenants"] {
        gw.wait_upstreams(name, 1).await;
    }
    (agent, gw, backends)
}

#[tokio::test]
async fn the_longest_prefix_wins_and_strip_prefix_rewrites_the_path() {
    let (_agent, gw, _backends) = setup().await;

    let (status, body) = gw.get("/api/users/7?fields=name").await;
    assert_eq!(status, 200);
    assert_eq!(body["backend"], "users");
    assert_eq!(body["uri"], "/7?fields=name", "prefix stripped, query kept");

    let (status, body) = gw.get("/api/users").await;
    assert_eq!(
        (status, &body["backend"], &body["uri"]),
        (200, &json!("users"), &json!("/"))
    );

    let (status, body) = gw.get("/api/orders/1").await;
    assert_eq!(status, 200);
    assert_eq!(body["backend"], "api");
    assert_eq!(
        body["uri"], "/api/orders/1",
        "no strip_prefix: the path is unchanged"
    );

    // Whole segments: /api/usersx is not under /api/users.
    let (_, body) = gw.get("/api/usersx").await;
    assert_eq!(body["backend"], "api");

    // Nothing matches /apix or /.
    for path in ["/apix", "/"] {
        let (status, body) = gw.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["kind"], "no_route");
    }
}

#[tokio::test]
async fn host_routes_win_over_host_less_routes() {
    let (_agent, gw, _backends) = setup().await;
    let get = |host: &'static str, path: &'static str| {
        let req = gw.client.get(gw.url(path)).header("host", host);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = get("admin.example.com", "/api/x").await;
    assert_eq!((status, &body["backend"]), (200, &json!("admin")));
    // Case and port do not matter.
    let (_, body) = get("ADMIN.Example.com:8080", "/api/x").await;
    assert_eq!(body["backend"], "admin");
    // Another host falls back to the host-less route.
    let (_, body) = get("www.example.com", "/api/x").await;
    assert_eq!(body["backend"], "api");
    // The longer host-less prefix still wins over the shorter host route.
    let (_, body) = get("admin.example.com", "/api/users/1").await;
    assert_eq!(body["backend"], "users");
    // Wildcard hosts match any subdomain, not the bare domain.
    let (_, body) = get("acme.tenants.example", "/anything").await;
    assert_eq!(body["backend"], "tenants");
    let (status, _) = get("tenants.example", "/anything").await;
    assert_eq!(status, 404);
}
