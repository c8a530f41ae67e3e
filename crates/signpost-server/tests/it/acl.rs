//! ACLs over real sockets: bootstrap, policies in HCL and JSON, tokens presented three ways,
//! filtered listings, refusals that change nothing, expiry, durability, and the audit log.

use reqwest::Method;
use serde_json::{json, Value};
use signpost_server::AgentConfig;
use signpost_testkit::{eventually, Storage, TestAgent};

use crate::common::instance;

/// `(status, filtered-header present, body)`.
async fn call(
    t: &TestAgent,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, bool, Value) {
    let mut req = t.client.request(method, t.url(path));
    if let Some(token) = token {
        req = req.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let filtered = resp
        .headers()
        .get("x-consul-results-filtered-by-acls")
        .is_some_and(|v| v == "true");
    (status, filtered, resp.json().await.unwrap_or(Value::Null))
}

fn acl_on(c: &mut AgentConfig) {
    c.acl.enabled = true;
}

async fn bootstrap(t: &TestAgent) -> String {
    let (code, _, body) = call(t, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(code, 200, "{body}");
    body["SecretID"].as_str().unwrap().to_string()
}

/// Creates a policy with `rules` and a token for it; returns the token's secret.
async fn token_with(t: &TestAgent, root: &str, name: &str, rules: &str) -> String {
    let (code, _, _) = call(
        t,
        Method::PUT,
        "/v1/acl/policy",
        Some(root),
        Some(json!({"Name": name, "Rules": rules})),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, body) = call(
        t,
        Method::PUT,
        "/v1/acl/token",
        Some(root),
        Some(json!({"Description": name, "Policies": [{"Name": name}]})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body["SecretID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bootstrap_works_once_and_gives_a_management_token() {
    let t = TestAgent::start_with(acl_on).await;
    let root = bootstrap(&t).await;
    let (code, _, body) = call(&t, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("bootstrap"));

    let (code, _, me) = call(&t, Method::GET, "/v1/acl/token/self", Some(&root), None).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(
        me["Policies"][0]["ID"],
        "00000000-0000-0000-0000-000000000001"
    );
    assert!(me.get("SecretID").is_none(), "reads never show the secret");

    // Management may do anything; anonymous (default deny) nothing.
    let (code, _, _) = call(
        &t,
        Method::POST,
        "/api/v1/services/api/instances",
        Some(&root),
        Some(instance(80)),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _, body) = call(
        &t,
        Method::POST,
        "/api/v1/services/api/instances",
        None,
        Some(instance(81)),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["error"],
        "permission denied: token lacks service:write on \"api\""
    );
    let (_, _, list) = call(
        &t,
        Method::GET,
        "/api/v1/services/api/instances",
        Some(&root),
        None,
    )
    .await;
    assert_eq!(
        list["instances"].as_array().unwrap().len(),
        1,
        "nothing changed"
    );
}

#[tokio::test]
async fn hcl_and_json_policies_grant_what_they_say() {
    let t = TestAgent::start_with(acl_on).await;
    let root = bootstrap(&t).await;
    let hcl = token_with(
        &t,
        &root,
        "api-writer",
        r#"service "api" { policy = "write" }
key_prefix "app/" { policy = "write" }"#,
    )
    .await;
    let json_rules = r#"{"service_prefix": {"web-": {"policy": "write"}}, "operator": "read"}"#;
    let from_json = token_with(&t, &root, "web-writer", json_rules).await;

    let post = |svc: &'static str, token: String| {
        let t = &t;
        async move {
            call(
                t,
                Method::POST,
                &format!("/api/v1/services/{svc}/instances"),
                Some(&token),
                Some(instance(80)),
            )
            .await
            .0
        }
    };
    assert_eq!(post("api", hcl.clone()).await, 201);
    assert_eq!(post("web-eu", hcl.clone()).await, 403);
    assert_eq!(post("web-eu", from_json.clone()).await, 201);
    assert_eq!(post("api", from_json.clone()).await, 403);

    let (code, _, _) = call(
        &t,
        Method::GET,
        "/api/v1/cluster/members",
        Some(&from_json),
        None,
    )
    .await;
    assert_eq!(code, 200, "operator:read");
    let (code, _, body) = call(&t, Method::GET, "/api/v1/cluster/members", Some(&hcl), None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["error"],
        "permission denied: token lacks operator:read"
    );

    // KV through both faces; Authorization: Bearer and ?token= work as X-Consul-Token does.
    let resp = t
        .client
        .put(t.url("/v1/kv/app/x"))
        .bearer_auth(&hcl)
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = t
        .client
        .put(t.url(&format!("/api/v1/kv/other?token={hcl}")))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        "permission denied: token lacks key:write on \"other\""
    );
    let (code, _, _) = call(&t, Method::GET, "/v1/kv/other", Some(&root), None).await;
    assert_eq!(code, 404, "the refused write changed nothing");

    // Invalid rules are a 400 naming the rule.
    let (code, _, body) = call(
        &t,
        Method::PUT,
        "/v1/acl/policy",
        Some(&root),
        Some(json!({"Name": "bad", "Rules": "service \"x\" { policy = \"reed\" }"})),
    )
    .await;
    assert_eq!(code, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("service \"x\"") && msg.contains("reed"),
        "{msg}"
    );
    // Managing ACLs needs acl:write.
    let (code, _, _) = call(
        &t,
        Method::PUT,
        "/v1/acl/policy",
        Some(&hcl),
        Some(json!({"Name": "mine", "Rules": ""})),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn listings_are_filtered_and_say_so() {
    let t = TestAgent::start_with(acl_on).await;
    let root = bootstrap(&t).await;
    for svc in ["api", "db"] {
        let (code, _, _) = call(
            &t,
            Method::POST,
            &format!("/api/v1/services/{svc}/instances"),
            Some(&root),
            Some(instance(80)),
        )
        .await;
        assert_eq!(code, 201);
    }
    for key in ["app/a", "secret/b"] {
        let (code, _, _) = call(
            &t,
            Method::PUT,
            &format!("/v1/kv/{key}"),
            Some(&root),
            Some(json!(1)),
        )
        .await;
        assert_eq!(code, 200);
    }
    let reader = token_with(
        &t,
        &root,
        "reader",
        r#"service "api" { policy = "read" }
key_prefix "app/" { policy = "read" }"#,
    )
    .await;

    let (code, filtered, body) =
        call(&t, Method::GET, "/v1/catalog/services", Some(&reader), None).await;
    assert_eq!(code, 200);
    assert!(filtered);
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["api"]
    );

    let (_, filtered, body) = call(&t, Method::GET, "/api/v1/services", Some(&reader), None).await;
    assert!(filtered);
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api"]);

    let (_, filtered, body) = call(&t, Method::GET, "/v1/kv/?recurse", Some(&reader), None).await;
    assert!(filtered);
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["Key"], "app/a");

    let (code, filtered, body) = call(
        &t,
        Method::GET,
        "/v1/health/service/db",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!((code, filtered), (200, true));
    assert_eq!(body, json!([]));
    let (_, filtered, body) = call(
        &t,
        Method::GET,
        "/api/v1/services/db/instances",
        Some(&reader),
        None,
    )
    .await;
    assert!(filtered);
    assert_eq!(body["instances"], json!([]));
    // The same listing for root comes from the shared cache, the filtered one never does.
    let (_, filtered, body) = call(
        &t,
        Method::GET,
        "/api/v1/services/db/instances",
        Some(&root),
        None,
    )
    .await;
    assert!(!filtered);
    assert_eq!(body["instances"].as_array().unwrap().len(), 1);
    let (_, _, body) = call(
        &t,
        Method::GET,
        "/api/v1/services/db/instances",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(body["instances"], json!([]));

    // Nothing left out: no header.
    let (_, filtered, _) = call(&t, Method::GET, "/v1/catalog/services", Some(&root), None).await;
    assert!(!filtered);
    // A single instance or a watch the token cannot read is refused.
    let (code, _, _) = call(
        &t,
        Method::GET,
        "/api/v1/services/db/watch",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn unknown_and_expired_tokens_are_refused_and_expired_ones_reaped() {
    let t = TestAgent::start_with(acl_on).await;
    let root = bootstrap(&t).await;
    let (code, _, body) = call(&t, Method::GET, "/v1/catalog/services", Some("nope"), None).await;
    assert_eq!(code, 403);
    assert_eq!(body["error"], "ACL not found");

    call(
        &t,
        Method::PUT,
        "/v1/acl/policy",
        Some(&root),
        Some(json!({"Name": "r", "Rules": "service_prefix \"\" { policy = \"read\" }"})),
    )
    .await;
    let (code, _, body) = call(
        &t,
        Method::PUT,
        "/v1/acl/token",
        Some(&root),
        Some(json!({"Policies": [{"Name": "r"}], "ExpirationTTL": "1s"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["ExpirationTime"].is_string());
    let secret = body["SecretID"].as_str().unwrap().to_string();
    let accessor = body["AccessorID"].as_str().unwrap().to_string();
    let (code, _, _) = call(&t, Method::GET, "/v1/catalog/services", Some(&secret), None).await;
    assert_eq!(code, 200);
    eventually("the token expires", || async {
        call(&t, Method::GET, "/v1/catalog/services", Some(&secret), None)
            .await
            .0
            == 403
    })
    .await;
    eventually("the leader reaps it", || async {
        signpost_server::service::acl::index(&t.agent) > 0
            && call(
                &t,
                Method::GET,
                &format!("/v1/acl/token/{accessor}"),
                Some(&root),
                None,
            )
            .await
            .0 == 404
            && !signpost_server::service::with_registry(
                &t.agent,
                &signpost_server::service::Caller::internal(),
                |r, _| r.acl().token(&accessor).is_some(),
            )
    })
    .await;
}

#[tokio::test]
async fn token_reads_hide_secrets_and_deleting_a_policy_detaches_it() {
    let t = TestAgent::start_with(acl_on).await;
    let root = bootstrap(&t).await;
    let writer = token_with(&t, &root, "w", r#"service "api" { policy = "write" }"#).await;
    let (_, _, tokens) = call(&t, Method::GET, "/v1/acl/tokens", Some(&root), None).await;
    let tokens = tokens.as_array().unwrap();
    assert_eq!(tokens.len(), 3, "bootstrap, w and anonymous: {tokens:?}");
    assert!(tokens.iter().all(|t| t.get("SecretID").is_none()));
    assert!(!serde_json::to_string(tokens).unwrap().contains(&writer));

    let (_, _, policies) = call(&t, Method::GET, "/v1/acl/policies", Some(&root), None).await;
    let id = policies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Name"] == "w")
        .unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, policy) = call(
        &t,
        Method::GET,
        &format!("/v1/acl/policy/{id}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(policy["Rules"], r#"service "api" { policy = "write" }"#);
    let (code, _, _) = call(
        &t,
        Method::DELETE,
        &format!("/v1/acl/policy/{id}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, _) = call(
        &t,
        Method::POST,
        "/api/v1/services/api/instances",
        Some(&writer),
        Some(instance(80)),
    )
    .await;
    assert_eq!(code, 403, "the token lost the policy");
    let (_, _, me) = call(&t, Method::GET, "/v1/acl/token/self", Some(&writer), None).await;
    assert_eq!(me["Policies"], json!([]));
}

#[tokio::test]
async fn with_acls_off_tokens_are_ignored_and_acl_endpoints_say_so() {
    let t = TestAgent::start().await;
    let (code, _, _) = call(
        &t,
        Method::POST,
        "/api/v1/services/api/instances",
        Some("whatever"),
        Some(instance(80)),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _, body) = call(&t, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(code, 401);
    assert_eq!(body["error"], "ACL support disabled");
}

#[tokio::test]
async fn initial_management_token_and_acl_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = |port_dir: &std::path::Path| {
        let mut c = TestAgent::config(Storage::Durable(port_dir.to_path_buf()));
        c.acl.enabled = true;
        c.acl.initial_management_token = Some("root-secret".into());
        c
    };
    let t = TestAgent::launch(config(dir.path()), 0, |_| async {}).await;
    eventually("the initial management token exists", || async {
        call(
            &t,
            Method::GET,
            "/v1/acl/token/self",
            Some("root-secret"),
            None,
        )
        .await
        .0 == 200
    })
    .await;
    let reader = token_with(
        &t,
        "root-secret",
        "r",
        r#"service "api" { policy = "read" }"#,
    )
    .await;
    let port = t.port();
    t.shutdown().await;

    let t = TestAgent::launch(config(dir.path()), port, |_| async {}).await;
    let (code, _, me) = call(&t, Method::GET, "/v1/acl/token/self", Some(&reader), None).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["Policies"][0]["Name"], "r");
    let (_, _, tokens) = call(&t, Method::GET, "/v1/acl/tokens", Some("root-secret"), None).await;
    assert_eq!(
        tokens.as_array().unwrap().len(),
        3,
        "no second initial token: {tokens}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_has_one_line_per_write_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit_path = path.clone();
    let t = TestAgent::start_with(move |c| {
        c.acl.enabled = true;
        c.audit.path = Some(audit_path);
    })
    .await;
    let root = bootstrap(&t).await; // 1
    let (code, _, _) = call(
        &t,
        Method::POST,
        "/api/v1/services/api/instances",
        Some(&root),
        Some(json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}})),
    )
    .await; // 2
    assert_eq!(code, 201);
    let hb = t
        .client
        .put(t.url("/api/v1/services/api/instances/10.0.0.1:80/heartbeat"))
        .header("X-Consul-Token", &root)
        .send()
        .await
        .unwrap();
    assert!(
        hb.status().is_success() || hb.status() == 404,
        "not audited either way"
    );
    let resp = t
        .client
        .put(t.url(&format!("/v1/kv/k?token={root}")))
        .body("v")
        .send()
        .await
        .unwrap(); // 3
    assert_eq!(resp.status(), 200);
    let (code, _, _) = call(&t, Method::PUT, "/v1/kv/k", None, Some(json!(1))).await; // 4: refused
    assert_eq!(code, 403);
    let (code, _, _) = call(&t, Method::GET, "/v1/kv/k", Some(&root), None).await; // a read
    assert_eq!(code, 200);
    let (code, _, _) = call(&t, Method::PUT, "/v1/kv/k?cas=x", Some(&root), None).await; // a 400
    assert_eq!(code, 400);

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&root), "a secret in the audit log: {text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap(),
                l["path"].as_str().unwrap(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT", "/v1/acl/bootstrap", 200),
            ("POST", "/api/v1/services/api/instances", 201),
            ("PUT", "/v1/kv/k", 200),
            ("PUT", "/v1/kv/k", 403),
        ]
    );
    let (_, _, me) = call(&t, Method::GET, "/v1/acl/token/self", Some(&root), None).await;
    assert_eq!(lines[1]["accessor_id"], me["AccessorID"]);
    assert_eq!(
        lines[3]["accessor_id"],
        "00000000-0000-0000-0000-000000000002"
    );
    assert_eq!(lines[1]["node"], "signpost-1");
    assert!(lines[1]["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
}

/// The UI's pages read with the token in the `signpost_token` cookie: a token sees only the
/// services and keys it may read, is offered the editor only where it may write, and a request
/// without a token (default deny) sees nothing. The cookie never authorizes an API write.
#[tokio::test]
async fn ui_pages_show_what_the_cookie_token_may_read_and_offer_what_it_may_write() {
    let t = TestAgent::start_with(acl_on).await;
    let root = bootstrap(&t).await;
    for (name, port) in [("web", 8080), ("secret-db", 5432)] {
        let (code, _, body) = call(
            &t,
            Method::POST,
            &format!("/api/v1/services/{name}/instances"),
            Some(&root),
            Some(instance(port)),
        )
        .await;
        assert!(code < 300, "{code} {body}");
    }
    for key in ["app/ro", "app/rw"] {
        let resp = t
            .client
            .put(t.url(&format!("/v1/kv/{key}")))
            .header("X-Consul-Token", &root)
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let viewer = token_with(
        &t,
        &root,
        "viewer",
        r#"service "web" { policy = "read" }
key_prefix "app/" { policy = "read" }
key "app/rw" { policy = "write" }"#,
    )
    .await;
    let page = |path: &str, token: Option<&str>| {
        let mut req = t.client.get(t.url(path));
        if let Some(token) = token {
            req = req.header("Cookie", format!("signpost_token={token}"));
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    let (code, html) = page("/ui/", Some(&viewer)).await;
    assert_eq!(code, 200);
    assert!(html.contains("/ui/services/web"), "{html}");
    assert!(!html.contains("secret-db"), "{html}");
    let (code, html) = page("/ui/", None).await;
    assert_eq!(code, 200);
    assert!(!html.contains("/ui/services/web") && !html.contains("secret-db"));
    let (code, html) = page("/ui/", Some(&root)).await;
    assert_eq!(code, 200);
    assert!(html.contains("/ui/services/web") && html.contains("secret-db"));

    let (code, _) = page("/ui/services/secret-db", Some(&viewer)).await;
    assert_eq!(code, 403);
    let (code, html) = page("/ui/kv/app/ro", Some(&viewer)).await;
    assert_eq!(code, 200);
    assert!(
        !html.contains("kv-save"),
        "read-only key offered an editor: {html}"
    );
    let (code, html) = page("/ui/kv/app/rw", Some(&viewer)).await;
    assert_eq!(code, 200);
    assert!(
        html.contains("kv-save"),
        "writable key offered no editor: {html}"
    );
    let (code, _) = page("/ui/cluster", Some(&viewer)).await;
    assert_eq!(code, 403, "members need operator:read");
    // A stale cookie shows the pages as the anonymous token sees them.
    let (code, html) = page("/ui/", Some("not-a-token")).await;
    assert_eq!(code, 200);
    assert!(!html.contains("/ui/services/web"));

    // The cookie is read for the pages only: the API refuses a write that carries only it.
    let resp = t
        .client
        .put(t.url("/v1/kv/app/rw"))
        .header("Cookie", format!("signpost_token={root}"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}
