//! The native HTTP API: every endpoint, and every 4xx path.

use serde_json::{json, Value};

use crate::common::{instance, TestAgent};

#[tokio::test]
async fn register_creates_then_replaces_with_index_header() {
    let t = TestAgent::start().await;
    let resp = t
        .client
        .post(t.url("/api/v1/services/Users/instances"))
        .json(&json!({"address": "10.0.0.1", "port": 8080, "tags": ["v1"], "metadata": {"zone": "a"}, "weight": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let index: u64 = resp.headers()["x-signpost-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["id"], "users-10.0.0.1-8080",
        "id defaults to service-address-port"
    );
    assert_eq!(body["service"], "users", "service names are case-folded");
    assert_eq!(body["weight"], 5);
    assert_eq!(body["status"], "passing");
    assert_eq!(body["metadata"]["zone"], "a");
    assert_eq!(body["create_index"].as_u64().unwrap(), index);

    let (code, again) = t
        .register(
            "users",
            json!({"address": "10.0.0.1", "port": 8080, "tags": ["v2"]}),
        )
        .await;
    assert_eq!(code, 200, "same id replaces");
    assert_eq!(again["tags"], json!(["v2"]));
    assert_eq!(again["create_index"], body["create_index"]);
    assert!(again["modify_index"].as_u64().unwrap() > index);
    assert_eq!(again["created_at"], body["created_at"]);
    assert_eq!(t.ids("users", "any").await, vec!["users-10.0.0.1-8080"]);
}

#[tokio::test]
async fn invalid_registrations_get_400_naming_the_field_and_change_nothing() {
    let t = TestAgent::start().await;
    let cases = [
        ("users", json!({"address": "10.0.0.1", "port": 0}), "port"),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 70000}),
            "port",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": "eighty"}),
            "port",
        ),
        (
            "users",
            json!({"address": "bad host!", "port": 80}),
            "address",
        ),
        ("users", json!({"port": 80}), "address"),
        ("users", json!({"address": "10.0.0.1"}), "port"),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "weight": 0}),
            "weight",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "weight": 20000}),
            "weight",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "bogus": 1}),
            ".",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "soon"}}),
            "check.ttl",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "check": {}}),
            "check",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "check": {"grpc": "h"}}),
            "check.grpc",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "service": "orders"}),
            "service",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "metadata": {"k": "v".repeat(513)}}),
            "metadata.k",
        ),
        (
            "users",
            json!({"address": "10.0.0.1", "port": 80, "tags": (0..65).map(|i| i.to_string()).collect::<Vec<_>>()}),
            "tags",
        ),
        (
            "bad_name",
            json!({"address": "10.0.0.1", "port": 80}),
            "service",
        ),
    ];
    for (service, body, field) in cases {
        let (code, err) = t.register(service, body.clone()).await;
        assert_eq!(code, 400, "{body} → {err}");
        assert!(
            err["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
        if field != "." {
            assert_eq!(err["field"], field, "{body} → {err}");
        }
    }
    // Malformed JSON and an empty body.
    for raw in ["{not json", ""] {
        let resp = t
            .client
            .post(t.url("/api/v1/services/users/instances"))
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].is_string());
    }
    let (_, services) = t.get("/api/v1/services").await;
    assert_eq!(services, json!([]), "nothing was registered");
}

#[tokio::test]
async fn bodies_over_1_mib_get_413() {
    let t = TestAgent::start().await;
    let huge =
        json!({"address": "10.0.0.1", "port": 80, "metadata": {"k": "x".repeat(2 * 1024 * 1024)}});
    let (code, err) = t.register("users", huge).await;
    assert_eq!(code, 413);
    assert!(
        err["error"].as_str().unwrap().contains("larger than"),
        "{err}"
    );
    assert!(t.ids("users", "any").await.is_empty());
}

#[tokio::test]
async fn deregister_then_404() {
    let t = TestAgent::start().await;
    t.register(
        "users",
        json!({"id": "u1", "address": "10.0.0.1", "port": 80}),
    )
    .await;
    let url = t.url("/api/v1/services/users/instances/u1");
    let resp = t.client.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.headers().contains_key("x-signpost-index"));
    assert!(t.ids("users", "any").await.is_empty());
    let resp = t.client.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("users/u1"), "{err}");
    let resp = t
        .client
        .delete(t.url("/api/v1/services/Bad_Name/instances/u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn heartbeat_paths() {
    let t = TestAgent::start().await;
    t.register(
        "users",
        json!({"id": "ttl", "address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
    )
    .await;
    t.register(
        "users",
        json!({"id": "plain", "address": "10.0.0.1", "port": 81}),
    )
    .await;
    t.register("users", json!({"id": "tcp", "address": "10.0.0.1", "port": 82, "check": {"tcp": "127.0.0.1:1", "interval": "1m"}})).await;
    let hb = |id: &str| {
        t.client
            .put(t.url(&format!("/api/v1/services/users/instances/{id}/heartbeat")))
            .send()
    };
    let resp = hb("ttl").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "ttl");
    assert_eq!(body["status"], "passing");
    assert!(body["index"].as_u64().unwrap() > 0, "{body}");
    assert!(
        body.get("address").is_none(),
        "not the whole instance: {body}"
    );
    let resp = hb("missing").await.unwrap();
    assert_eq!(
        resp.status(),
        404,
        "unknown instance: the client must re-register"
    );
    for id in ["plain", "tcp"] {
        let resp = hb(id).await.unwrap();
        assert_eq!(resp.status(), 400, "{id}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["field"], "check", "{err}");
    }
}

#[tokio::test]
async fn batched_heartbeats_renew_many_and_name_the_rest() {
    let t = TestAgent::start().await;
    for id in ["a", "b"] {
        t.register(
            "users",
            json!({"id": id, "address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
        )
        .await;
    }
    t.register(
        "users",
        json!({"id": "plain", "address": "10.0.0.1", "port": 81}),
    )
    .await;
    let resp = t
        .client
        .put(t.url("/api/v1/heartbeats"))
        .json(&json!([
            {"service": "users", "id": "a"},
            {"service": "Users", "id": "b"},
            {"service": "users", "id": "gone"},
            {"service": "users", "id": "plain"},
            {"service": "bad name!", "id": "x"},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["renewed"], 2, "{body}");
    assert_eq!(
        body["not_found"],
        json!([{"service": "users", "id": "gone"}]),
        "the client re-registers these"
    );
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{body}");
    assert_eq!(rejected[0]["id"], "plain");
    assert_eq!(rejected[1]["id"], "x");
    assert!(rejected[0]["error"].as_str().unwrap().contains("ttl"));

    let resp = t
        .client
        .put(t.url("/api/v1/heartbeats"))
        .json(&json!({"service": "users"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "the body is an array");
}

#[tokio::test]
async fn listing_filters_by_status_and_tags() {
    let t = TestAgent::start().await;
    t.register(
        "web",
        json!({"id": "a", "address": "10.0.0.1", "port": 80, "tags": ["v1", "eu"]}),
    )
    .await;
    t.register(
        "web",
        json!({"id": "b", "address": "10.0.0.2", "port": 80, "tags": ["v2", "eu"]}),
    )
    .await;
    t.register(
        "web",
        json!({"id": "c", "address": "10.0.0.3", "port": 80, "tags": ["v1"], "status": "critical"}),
    )
    .await;
    t.register(
        "web",
        json!({"id": "d", "address": "10.0.0.4", "port": 80, "status": "warning"}),
    )
    .await;
    assert_eq!(t.ids("web", "passing").await, ["a", "b"]);
    let (_, body) = t.get("/api/v1/services/web/instances").await;
    let default: Vec<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(default, ["a", "b"], "passing only by default");
    assert_eq!(t.ids("web", "any").await, ["a", "b", "c", "d"]);
    assert_eq!(t.ids("web", "critical").await, ["c"]);
    assert_eq!(t.ids("web", "warning").await, ["d"]);
    let (_, body) = t
        .get("/api/v1/services/web/instances?status=any&tag=v1")
        .await;
    assert_eq!(body["instances"].as_array().unwrap().len(), 2);
    let (_, body) = t.get("/api/v1/services/web/instances?tag=v1&tag=eu").await;
    assert_eq!(body["instances"][0]["id"], "a");
    assert_eq!(body["instances"].as_array().unwrap().len(), 1);
    let (code, body) = t.get("/api/v1/services/nothing/instances").await;
    assert_eq!(code, 200);
    assert_eq!(body["instances"], json!([]));
    assert!(body["index"].as_u64().unwrap() >= 1, "index is never 0");

    for (query, field) in [
        ("status=sick", "status"),
        ("index=-1", "index"),
        ("index=1&wait=forever", "wait"),
    ] {
        let (code, err) = t
            .get(&format!("/api/v1/services/web/instances?{query}"))
            .await;
        assert_eq!(code, 400, "{query}");
        assert_eq!(err["field"], field, "{err}");
    }
}

#[tokio::test]
async fn services_list_counts_by_status() {
    let t = TestAgent::start().await;
    t.register("web", json!({"id": "a", "address": "10.0.0.1", "port": 80}))
        .await;
    t.register(
        "web",
        json!({"id": "b", "address": "10.0.0.1", "port": 81, "status": "critical"}),
    )
    .await;
    t.register("db", instance(5432)).await;
    let (code, body) = t.get("/api/v1/services").await;
    assert_eq!(code, 200);
    assert_eq!(body[0]["name"], "db");
    assert_eq!(body[1]["name"], "web");
    assert_eq!(
        body[1]["instances"],
        json!({"passing": 1, "warning": 0, "critical": 1})
    );
}

#[tokio::test]
async fn get_one_instance() {
    let t = TestAgent::start().await;
    t.register(
        "web",
        json!({"id": "a", "address": "db.internal", "port": 80}),
    )
    .await;
    let (code, body) = t.get("/api/v1/services/web/instances/a").await;
    assert_eq!(code, 200);
    assert_eq!(body["address"], "db.internal");
    let (code, _) = t.get("/api/v1/services/web/instances/zz").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn definitions_crud() {
    let t = TestAgent::start().await;
    let url = t.url("/api/v1/services/users/definition");
    let def = json!({
        "version": "1.2.0",
        "description": "user accounts",
        "endpoints": [{"path": "/users/{id}", "method": "get", "description": "one user",
                       "parameters": [{"name": "id", "type": "string", "required": true, "description": "user id"}]}],
        "dependencies": ["Postgres"],
        "config": {"pool": {"size": 10}, "feature_x": true}
    });
    let resp = t.client.put(&url).json(&def).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let resp = t
        .client
        .put(&url)
        .json(&json!({"version": "1.3.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, got) = t.get("/api/v1/services/users/definition").await;
    assert_eq!(code, 200);
    assert_eq!(got["version"], "1.3.0");
    assert_eq!(got["name"], "users");

    let resp = t.client.put(&url).json(&def).send().await.unwrap();
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["endpoints"][0]["method"], "GET");
    assert_eq!(got["endpoints"][0]["parameters"][0]["type"], "string");
    assert_eq!(got["dependencies"], json!(["postgres"]));
    assert_eq!(got["config"]["pool"]["size"], 10);
    let (_, services) = t.get("/api/v1/services").await;
    assert_eq!(services[0]["has_definition"], true);

    for (body, field) in [
        (json!({"dependencies": ["bad name"]}), "dependencies[0]"),
        (
            json!({"endpoints": [{"path": "no-slash", "method": "GET"}]}),
            "endpoints[0].path",
        ),
        (json!({"name": "other"}), "name"),
        (json!({"version": 3}), "version"),
    ] {
        let resp = t.client.put(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["field"], field, "{err}");
    }

    let resp = t.client.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let (code, _) = t.get("/api/v1/services/users/definition").await;
    assert_eq!(code, 404);
    let resp = t.client.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn agent_self_reports_node_and_raft() {
    let t = TestAgent::start().await;
    t.register("web", instance(80)).await;
    let (code, body) = t.get("/api/v1/agent/self").await;
    assert_eq!(code, 200);
    assert_eq!(body["node_id"], 1);
    assert_eq!(body["raft"]["role"], "leader");
    assert_eq!(body["raft"]["leader"], 1);
    assert!(body["last_index"].as_u64().unwrap() >= 2);
    assert_eq!(body["eviction_guard"]["engaged"], false);
    assert_eq!(body["instances"]["passing"], 1);
}

#[tokio::test]
async fn metrics_expose_requests_instances_and_raft() {
    let t = TestAgent::start().await;
    t.register("web", instance(80)).await;
    t.register("web", json!({"address": "10.0.0.1", "port": 0}))
        .await;
    let text = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"signpost_http_requests_total{route="/api/v1/services/{service}/instances",method="POST",status="201"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"status="400"} 1"#), "{text}");
    assert!(
        text.contains(r#"signpost_instances{status="passing"} 1"#),
        "{text}"
    );
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("signpost_raft_commit_index "))
        .expect("commit index gauge");
    assert!(commit.parse::<f64>().unwrap() >= 2.0);
    assert!(text.contains("signpost_watchers"));
    assert!(text.contains("signpost_eviction_guard_engaged 0"));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let t = TestAgent::start().await;
    let (code, body) = t.get("/api/v1/nope").await;
    assert_eq!(code, 404);
    assert!(body["error"].is_string());
    let resp = t
        .client
        .patch(t.url("/api/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());
}
