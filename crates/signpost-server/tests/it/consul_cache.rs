//! The Consul face's shared renderings (`consul/cache.rs`): `/v1/health/service/:name` and
//! `/v1/catalog/service/:name` rendered once per (service, read, filter, index) and shared,
//! following every change, never shared across tag filters or with a caller who may not read
//! the service; and check updates found by check id, not by a scan.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use signpost_server::AgentConfig;

use crate::common::{eventually, TestAgent};

/// `(status, X-Consul-Index, filtered-by-ACLs header, body)` of a Consul call.
async fn call(
    t: &TestAgent,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, u64, bool, Value) {
    let mut req = t.client.request(method, t.url(path));
    if let Some(token) = token {
        req = req.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let index = resp.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(resp.headers().contains_key("x-consul-knownleader"));
    assert!(resp.headers().contains_key("x-consul-lastcontact"));
    let filtered = resp
        .headers()
        .get("x-consul-results-filtered-by-acls")
        .is_some_and(|v| v == "true");
    (
        status,
        index,
        filtered,
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn get(t: &TestAgent, path: &str) -> (u64, Value) {
    let (code, index, _, body) = call(t, Method::GET, path, None, None).await;
    assert_eq!(code, 200, "{path}: {body}");
    (index, body)
}

async fn put(t: &TestAgent, path: &str, body: Value) {
    let (code, _, _, answer) = call(t, Method::PUT, path, None, Some(body)).await;
    assert_eq!(code, 200, "{path}: {answer}");
}

/// The service ids of a health (nested) or catalog (flat) listing, in order.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["Service"]["ID"]
                .as_str()
                .or(e["ServiceID"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `signpost_consul_renders_total` from `/metrics`.
async fn renders(t: &TestAgent) -> u64 {
    let text = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("signpost_consul_renders_total "))
        .unwrap_or_else(|| panic!("no renders counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn ttl_service(id: &str, tags: Value) -> Value {
    json!({"Name": "web", "ID": id, "Address": "10.0.0.1", "Port": 80, "Tags": tags,
           "Check": {"TTL": "60s", "Status": "passing"}})
}

#[tokio::test]
async fn the_shared_rendering_follows_registrations_health_and_deregistrations() {
    let t = TestAgent::start().await;
    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("a", json!([])),
    )
    .await;
    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("b", json!([])),
    )
    .await;

    let before = renders(&t).await;
    let (index, first) = get(&t, "/v1/health/service/web?passing").await;
    assert_eq!(ids(&first), ["a", "b"]);
    for _ in 0..5 {
        let (again_index, again) = get(&t, "/v1/health/service/web?passing").await;
        assert_eq!((again_index, &again), (index, &first));
    }
    assert_eq!(renders(&t).await - before, 1, "repeats share one rendering");

    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("c", json!([])),
    )
    .await;
    let (registered, list) = get(&t, "/v1/health/service/web?passing").await;
    assert!(registered > index);
    assert_eq!(ids(&list), ["a", "b", "c"], "a registration renders again");

    put(&t, "/v1/agent/check/fail/service:b", json!({})).await;
    let (critical, list) = get(&t, "/v1/health/service/web?passing").await;
    assert!(critical > registered);
    assert_eq!(ids(&list), ["a", "c"], "?passing drops a critical instance");
    let (_, all) = get(&t, "/v1/health/service/web").await;
    assert_eq!(ids(&all), ["a", "b", "c"]);
    assert_eq!(all[1]["Checks"][1]["Status"], "critical");
    let (_, flat) = get(&t, "/v1/catalog/service/web").await;
    assert_eq!(ids(&flat), ["a", "b", "c"]);

    put(&t, "/v1/agent/service/deregister/a", json!({})).await;
    let (gone, list) = get(&t, "/v1/health/service/web?passing").await;
    assert!(gone > critical);
    assert_eq!(ids(&list), ["c"]);
    let (_, flat) = get(&t, "/v1/catalog/service/web").await;
    assert_eq!(
        ids(&flat),
        ["b", "c"],
        "the catalog's rendering follows too"
    );

    put(&t, "/v1/agent/service/deregister/b", json!({})).await;
    put(&t, "/v1/agent/service/deregister/c", json!({})).await;
    let (_, empty) = get(&t, "/v1/health/service/web").await;
    assert_eq!(empty, json!([]), "the last deregistration empties it");
}

#[tokio::test]
async fn tag_filters_never_share_a_rendering() {
    let t = TestAgent::start().await;
    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("a", json!(["v1", "eu"])),
    )
    .await;
    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("b", json!(["v2", "eu"])),
    )
    .await;
    for base in ["/v1/health/service/web", "/v1/catalog/service/web"] {
        for (query, want) in [
            ("?tag=v1", vec!["a"]),
            ("?tag=v2", vec!["b"]),
            ("", vec!["a", "b"]),
            ("?tag=eu", vec!["a", "b"]),
            ("?tag=eu&tag=v2", vec!["b"]),
            ("?tag=v2&tag=eu", vec!["b"]),
            ("?tag=v1&tag=v2", vec![]),
            ("?tag=v1", vec!["a"]),
        ] {
            let (_, list) = get(&t, &format!("{base}{query}")).await;
            assert_eq!(ids(&list), want, "{base}{query}");
        }
    }
    let (_, list) = get(&t, "/v1/health/service/web?passing&tag=v2&near=_agent").await;
    assert_eq!(ids(&list), ["b"], "?near is accepted and ignored");
}

#[tokio::test]
async fn blocking_queries_woken_by_one_change_share_its_rendering() {
    let t = TestAgent::start().await;
    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("a", json!([])),
    )
    .await;
    let (index, _) = get(&t, "/v1/health/service/web?passing").await;
    let before = renders(&t).await;

    const WAITERS: usize = 8;
    let mut waiting = Vec::new();
    for _ in 0..WAITERS {
        let client = t.client.clone();
        let url = t.url(&format!(
            "/v1/health/service/web?passing&index={index}&wait=60s"
        ));
        waiting.push(tokio::spawn(async move {
            let resp = client.get(url).send().await.unwrap();
            let index: u64 = resp.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (index, resp.bytes().await.unwrap())
        }));
    }
    eventually("every query is parked", || async {
        t.agent.watchers() >= WAITERS
    })
    .await;
    put(
        &t,
        "/v1/agent/service/register",
        ttl_service("b", json!([])),
    )
    .await;
    let mut bodies = Vec::new();
    for w in waiting {
        let (woke_at, body) = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("woken by the change")
            .unwrap();
        assert!(woke_at > index);
        bodies.push(body);
    }
    let list: Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(ids(&list), ["a", "b"], "woken with the new content");
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(
        renders(&t).await - before,
        1,
        "every woken query shares one rendering"
    );
}

fn acl_on(c: &mut AgentConfig) {
    c.acl.enabled = true;
}

/// A token with `rules`, made with the management token `root`.
async fn token_with(t: &TestAgent, root: &str, name: &str, rules: &str) -> String {
    let policy = json!({"Name": name, "Rules": rules});
    let (code, _, _, _) = call(t, Method::PUT, "/v1/acl/policy", Some(root), Some(policy)).await;
    assert_eq!(code, 200);
    let token = json!({"Description": name, "Policies": [{"Name": name}]});
    let (code, _, _, body) = call(t, Method::PUT, "/v1/acl/token", Some(root), Some(token)).await;
    assert_eq!(code, 200, "{body}");
    body["SecretID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_caller_who_may_not_read_the_service_never_gets_the_shared_rendering() {
    let t = TestAgent::start_with(acl_on).await;
    let (code, _, _, boot) = call(&t, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(code, 200);
    let root = boot["SecretID"].as_str().unwrap().to_string();
    let (code, _, _, _) = call(
        &t,
        Method::PUT,
        "/v1/agent/service/register",
        Some(&root),
        Some(ttl_service("a", json!([]))),
    )
    .await;
    assert_eq!(code, 200);
    let web = token_with(&t, &root, "web", r#"service "web" { policy = "read" }"#).await;
    let other = token_with(&t, &root, "other", r#"service "db" { policy = "read" }"#).await;

    for path in [
        "/v1/health/service/web?passing",
        "/v1/health/service/web",
        "/v1/catalog/service/web",
    ] {
        // The broadest caller first, so that its rendering is the one cached.
        let (code, index, filtered, full) = call(&t, Method::GET, path, Some(&root), None).await;
        assert_eq!((code, filtered), (200, false));
        assert_eq!(ids(&full), ["a"], "{path}");
        for token in [Some(other.as_str()), None] {
            let (code, seen_index, filtered, body) = call(&t, Method::GET, path, token, None).await;
            assert_eq!((code, filtered), (200, true), "{path} {token:?}");
            assert_eq!(body, json!([]), "{path} {token:?}");
            assert_eq!(seen_index, index);
        }
        let (code, _, filtered, body) = call(&t, Method::GET, path, Some(&web), None).await;
        assert_eq!((code, filtered), (200, false));
        assert_eq!(
            body, full,
            "a caller who may read it all shares the rendering"
        );
    }
}

#[tokio::test]
async fn check_updates_find_the_instance_by_check_id_across_services() {
    let t = TestAgent::start().await;
    for service in ["alpha", "beta"] {
        let (code, body) = t
            .register(
                service,
                json!({"id": "x", "address": "10.0.0.1", "port": 80,
                       "check": {"id": format!("{service}-check"), "ttl": "60s"}}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    put(&t, "/v1/agent/check/fail/beta-check", json!({})).await;
    assert_eq!(t.status_of("beta", "x").await.as_deref(), Some("critical"));
    assert_eq!(t.status_of("alpha", "x").await.as_deref(), Some("passing"));
    put(&t, "/v1/agent/check/fail/alpha-check", json!({})).await;
    put(&t, "/v1/agent/check/pass/beta-check", json!({})).await;
    assert_eq!(t.status_of("beta", "x").await.as_deref(), Some("passing"));
    assert_eq!(t.status_of("alpha", "x").await.as_deref(), Some("critical"));

    // A check id follows a re-registration that changes it.
    let (code, _) = t
        .register(
            "beta",
            json!({"id": "x", "address": "10.0.0.1", "port": 80,
                   "check": {"id": "renamed", "ttl": "60s"}}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _, _, _) = call(
        &t,
        Method::PUT,
        "/v1/agent/check/fail/beta-check",
        None,
        None,
    )
    .await;
    assert_eq!(code, 404, "the old check id is gone");
    put(&t, "/v1/agent/check/fail/renamed", json!({})).await;
    assert_eq!(t.status_of("beta", "x").await.as_deref(), Some("critical"));

    // And leaves with its instance.
    assert_eq!(t.deregister("beta", "x").await, 204);
    let (code, _, _, _) = call(&t, Method::PUT, "/v1/agent/check/pass/renamed", None, None).await;
    assert_eq!(code, 404);
    put(&t, "/v1/agent/check/pass/alpha-check", json!({})).await;
    assert_eq!(t.status_of("alpha", "x").await.as_deref(), Some("passing"));
}
