//! The Consul-compatible API: shapes, semantics, blocking queries and KV, and that both faces
//! see the same registry.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{eventually, TestAgent};

/// The Consul face of a test agent.
trait ConsulApi {
    /// `PUT path` with a JSON body: the status code and the JSON answer.
    async fn consul_put(&self, path: &str, body: Value) -> (u16, Value);
    /// `GET path`: the status code, `X-Consul-Index` and the JSON answer; checks the other
    /// `X-Consul-*` headers are there.
    async fn consul_get(&self, path: &str) -> (u16, u64, Value);
}

impl ConsulApi for TestAgent {
    async fn consul_put(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .put(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }

    async fn consul_get(&self, path: &str) -> (u16, u64, Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let code = resp.status().as_u16();
        let index = resp.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(resp.headers()["x-consul-knownleader"], "true");
        assert!(resp.headers().contains_key("x-consul-lastcontact"));
        (code, index, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn register_in_either_case_and_read_back_through_both_faces() {
    let t = TestAgent::start().await;
    let (code, _) = t
        .consul_put(
            "/v1/agent/service/register",
            json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080,
                   "Tags": ["v1"], "Meta": {"zone": "a"}, "Weights": {"Passing": 7, "Warning": 1},
                   "Check": {"TTL": "30s", "Status": "passing", "DeregisterCriticalServiceAfter": "1m"}}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = t
        .consul_put(
            "/v1/agent/service/register",
            json!({"name": "api", "port": 9090, "tags": ["x"],
                   "check": {"http": "http://127.0.0.1:9/health", "interval": "120000ms"}}),
        )
        .await;
    assert_eq!(code, 200, "snake_case keys are accepted");

    let (_, _, services) = t.consul_get("/v1/agent/services").await;
    assert_eq!(services["web-1"]["Service"], "web");
    assert_eq!(services["web-1"]["Weights"]["Passing"], 7);
    assert_eq!(services["api"]["ID"], "api", "ID defaults to Name");
    assert_eq!(
        services["api"]["Address"], "127.0.0.1",
        "empty Address is the agent's"
    );

    // The native face sees the same instance, with the same health.
    let (_, native) = t.get("/api/v1/services/web/instances").await;
    assert_eq!(native["instances"][0]["id"], "web-1");
    assert_eq!(native["instances"][0]["weight"], 7);
    assert_eq!(native["instances"][0]["check"]["deregister_after"], "1m");

    // And a native registration shows up in Consul's health endpoint.
    t.register(
        "db",
        json!({"id": "db-1", "address": "10.0.0.9", "port": 5432}),
    )
    .await;
    let (_, _, health) = t.consul_get("/v1/health/service/db").await;
    assert_eq!(health[0]["Service"]["ID"], "db-1");
    assert_eq!(health[0]["Service"]["Port"], 5432);
    assert_eq!(health[0]["Checks"][0]["CheckID"], "serfHealth");
}

#[tokio::test]
async fn registration_errors_name_consul_fields() {
    let t = TestAgent::start().await;
    for (body, field) in [
        (json!({"Port": 80}), "Name"),
        (json!({"Name": "web", "Port": 70000}), "Port"),
        (
            json!({"Name": "web", "Port": 80, "Check": {"GRPC": "127.0.0.1"}}),
            "Check.GRPC",
        ),
        (
            json!({"Name": "web", "Port": 80, "Check": {"Args": ["/bin/true"], "Interval": "10s"}}),
            "Check.ScriptArgs",
        ),
        (
            json!({"Name": "web", "Port": 80, "Checks": [{"TTL": "10s"}, {"TTL": "20s"}]}),
            "Checks",
        ),
        (
            json!({"Name": "web", "Port": 80, "Check": {"TTL": "often"}}),
            "Check.TTL",
        ),
        (
            json!({"Name": "web", "Port": 80, "Check": {"HTTP": "http://h/x", "Method": "POST"}}),
            "Check.Method",
        ),
    ] {
        let (code, err) = t
            .consul_put("/v1/agent/service/register", body.clone())
            .await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(err["field"], field, "{body} → {err}");
    }
    let (_, _, services) = t.consul_get("/v1/agent/services").await;
    assert_eq!(services, json!({}), "nothing was registered");

    // gRPC checks in plaintext (GRPCUseTLS absent or false) and over TLS.
    for (id, check) in [
        ("g1", json!({"GRPC": "127.0.0.1:9"})),
        (
            "g2",
            json!({"grpc": "127.0.0.1:9/pkg.Users", "grpc_use_tls": false}),
        ),
        (
            "g3",
            json!({"GRPC": "127.0.0.1:9", "GRPCUseTLS": true, "TLSSkipVerify": true}),
        ),
    ] {
        let body = json!({"Name": "web", "ID": id, "Port": 80, "Check": check});
        let (code, err) = t.consul_put("/v1/agent/service/register", body).await;
        assert_eq!(code, 200, "{check} → {err}");
    }
    let (_, _, checks) = t.consul_get("/v1/agent/checks").await;
    assert_eq!(checks["service:g1"]["Type"], "grpc", "{checks}");
    assert_eq!(checks["service:g2"]["Type"], "grpc", "{checks}");
    let (_, native) = t.get("/api/v1/services/web/instances/g2").await;
    assert_eq!(native["check"]["grpc"], "127.0.0.1:9/pkg.Users", "{native}");
    assert_eq!(native["check"].get("grpc_use_tls"), None, "{native}");
    let (_, native) = t.get("/api/v1/services/web/instances/g3").await;
    assert_eq!(native["check"]["grpc_use_tls"], true, "{native}");
    assert_eq!(native["check"]["tls_skip_verify"], true, "{native}");
}

#[tokio::test]
async fn deregister_and_lookups_by_id() {
    let t = TestAgent::start().await;
    t.consul_put(
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "w1", "Port": 80}),
    )
    .await;
    let (code, _, svc) = t.consul_get("/v1/agent/service/w1").await;
    assert_eq!(code, 200);
    assert_eq!(svc["Service"], "web");
    let (code, _, _) = t.consul_get("/v1/agent/service/nope").await;
    assert_eq!(code, 404);
    let (code, _) = t
        .consul_put("/v1/agent/service/deregister/w1", Value::Null)
        .await;
    assert_eq!(code, 200);
    let (code, _) = t
        .consul_put("/v1/agent/service/deregister/w1", Value::Null)
        .await;
    assert_eq!(code, 404);
    assert!(t.ids("web", "any").await.is_empty());
}

#[tokio::test]
async fn ttl_checks_are_driven_through_pass_warn_fail_and_update() {
    let t = TestAgent::start().await;
    t.consul_put("/v1/agent/service/register", json!({"Name": "web", "ID": "w1", "Port": 80, "Check": {"CheckID": "web-ttl", "TTL": "30s"}})).await;
    let status = || async {
        let (_, _, checks) = t.consul_get("/v1/agent/checks").await;
        checks["web-ttl"]["Status"].as_str().unwrap().to_string()
    };
    assert_eq!(
        status().await,
        "critical",
        "as in Consul, a TTL check starts critical"
    );
    for (verb, want) in [
        ("pass", "passing"),
        ("warn", "warning"),
        ("fail", "critical"),
        ("pass", "passing"),
    ] {
        let (code, _) = t
            .consul_put(&format!("/v1/agent/check/{verb}/web-ttl"), Value::Null)
            .await;
        assert_eq!(code, 200, "{verb}");
        assert_eq!(status().await, want, "{verb}");
    }
    let (code, _) = t
        .consul_put(
            "/v1/agent/check/update/web-ttl",
            json!({"Status": "critical", "Output": "disk full"}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(status().await, "critical");
    assert_eq!(
        t.status_of("web", "w1").await.as_deref(),
        Some("critical"),
        "the native face agrees"
    );
    let (code, _) = t
        .consul_put("/v1/agent/check/pass/unknown", Value::Null)
        .await;
    assert_eq!(code, 404);
    let (code, err) = t
        .consul_put(
            "/v1/agent/check/update/web-ttl",
            json!({"Status": "sleepy"}),
        )
        .await;
    assert_eq!((code, err["field"].as_str()), (400, Some("Status")));
}

#[tokio::test]
async fn checks_register_and_deregister_against_a_service() {
    let t = TestAgent::start().await;
    t.consul_put(
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "w1", "Port": 80}),
    )
    .await;
    let (code, err) = t
        .consul_put(
            "/v1/agent/check/register",
            json!({"Name": "mem", "TTL": "10s"}),
        )
        .await;
    assert_eq!(
        (code, err["field"].as_str()),
        (400, Some("ServiceID")),
        "node checks are refused"
    );
    let (code, _) = t
        .consul_put(
            "/v1/agent/check/register",
            json!({"CheckID": "w1-alive", "ServiceID": "w1", "TTL": "10s", "Status": "warning"}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, _, checks) = t.consul_get("/v1/health/checks/web").await;
    assert_eq!(checks[0]["CheckID"], "w1-alive");
    assert_eq!(checks[0]["Status"], "warning");
    assert_eq!(checks[0]["Type"], "ttl");
    // Non-TTL checks cannot be set by hand.
    t.consul_put(
        "/v1/agent/check/register",
        json!({"CheckID": "w1-tcp", "ServiceID": "w1", "TCP": "127.0.0.1:9", "Interval": "1m"}),
    )
    .await;
    let (code, _) = t
        .consul_put("/v1/agent/check/pass/w1-tcp", Value::Null)
        .await;
    assert_eq!(code, 400);
    let (code, _) = t
        .consul_put("/v1/agent/check/deregister/w1-tcp", Value::Null)
        .await;
    assert_eq!(code, 200);
    let (_, _, checks) = t.consul_get("/v1/health/checks/web").await;
    assert_eq!(checks, json!([]));
    assert_eq!(t.status_of("web", "w1").await.as_deref(), Some("passing"));
}

#[tokio::test]
async fn catalog_and_health_shapes_and_filters() {
    let t = TestAgent::start().await;
    t.consul_put("/v1/agent/service/register", json!({"Name": "web", "ID": "a", "Address": "10.0.0.1", "Port": 80, "Tags": ["v1", "eu"], "Meta": {"k": "v"}})).await;
    t.consul_put("/v1/agent/service/register", json!({"Name": "web", "ID": "b", "Address": "10.0.0.2", "Port": 80, "Tags": ["v2"], "Check": {"TTL": "30s", "Status": "critical"}})).await;
    t.consul_put(
        "/v1/agent/service/register",
        json!({"Name": "db", "ID": "d", "Port": 5432}),
    )
    .await;

    let (_, _, services) = t.consul_get("/v1/catalog/services").await;
    assert_eq!(services, json!({"db": [], "web": ["eu", "v1", "v2"]}));
    let (_, _, flat) = t.consul_get("/v1/catalog/service/web").await;
    assert_eq!(
        flat.as_array().unwrap().len(),
        2,
        "the catalog lists every instance, whatever its health"
    );
    assert_eq!(flat[0]["ServiceAddress"], "10.0.0.1");
    assert_eq!(flat[0]["ServicePort"], 80);
    assert_eq!(flat[0]["ServiceMeta"]["k"], "v");
    assert_eq!(flat[0]["Node"], "signpost-1");
    assert!(flat[0]["CreateIndex"].as_u64().unwrap() > 0);
    let (_, _, tagged) = t.consul_get("/v1/catalog/service/web?tag=v2").await;
    assert_eq!(tagged[0]["ServiceID"], "b");

    let (_, _, all) = t.consul_get("/v1/health/service/web").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, _, passing) = t.consul_get("/v1/health/service/web?passing").await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    assert_eq!(passing[0]["Service"]["ID"], "a");
    let (_, _, both_tags) = t.consul_get("/v1/health/service/web?tag=v1&tag=eu").await;
    assert_eq!(both_tags.as_array().unwrap().len(), 1);
    let (_, _, none) = t.consul_get("/v1/health/service/unknown").await;
    assert_eq!(none, json!([]));

    let (_, _, critical) = t.consul_get("/v1/health/state/critical").await;
    assert_eq!(critical.as_array().unwrap().len(), 1);
    assert_eq!(critical[0]["ServiceID"], "b");
    let (_, _, any) = t.consul_get("/v1/health/state/any").await;
    assert_eq!(any.as_array().unwrap().len(), 2, "serfHealth and b's check");
    let resp = t
        .client
        .get(t.url("/v1/health/state/sleepy"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let (_, _, nodes) = t.consul_get("/v1/catalog/nodes").await;
    assert_eq!(nodes[0]["Node"], "signpost-1");
    let (_, _, dcs) = t.consul_get("/v1/catalog/datacenters").await;
    assert_eq!(dcs, json!(["dc1"]));
    let (_, _, leader) = t.consul_get("/v1/status/leader").await;
    assert_eq!(leader, json!(t.base.trim_start_matches("http://")));
    let (_, _, peers) = t.consul_get("/v1/status/peers").await;
    assert_eq!(peers, json!([t.base.trim_start_matches("http://")]));
    let (_, _, me) = t.consul_get("/v1/agent/self").await;
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], "signpost-1");
    assert!(me["Config"]["Version"]
        .as_str()
        .unwrap()
        .contains("signpost"));
}

#[tokio::test]
async fn common_parameters_dc_filter_and_token() {
    let t = TestAgent::start().await;
    let resp = t
        .client
        .get(t.url("/v1/catalog/services?dc=dc2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("dc2"), "{err}");
    let resp = t
        .client
        .get(t.url("/v1/catalog/services?filter=Service%20%3D%3D%20web"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (code, _, _) = t
        .consul_get("/v1/catalog/services?dc=dc1&stale&consistent&token=abc")
        .await;
    assert_eq!(code, 200);
    let resp = t
        .client
        .get(t.url("/v1/catalog/services"))
        .header("X-Consul-Token", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn blocking_health_query_is_per_service() {
    let t = TestAgent::start().await;
    t.consul_put(
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "a", "Port": 80}),
    )
    .await;
    let (_, index, _) = t.consul_get("/v1/health/service/web").await;
    assert!(index > 0);

    // A change to another service does not end the wait.
    let started = Instant::now();
    let client = t.client.clone();
    let url = t.url(&format!("/v1/health/service/web?index={index}&wait=300ms"));
    let quiet = tokio::spawn(async move { client.get(url).send().await.unwrap() });
    eventually("the query is parked", || async { t.agent.watchers() > 0 }).await;
    t.consul_put(
        "/v1/agent/service/register",
        json!({"Name": "db", "ID": "d", "Port": 5432}),
    )
    .await;
    let resp = quiet.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        resp.headers()["x-consul-index"].to_str().unwrap(),
        index.to_string()
    );

    // A change to this service does, promptly, with a higher index.
    let client = t.client.clone();
    let url = t.url(&format!(
        "/v1/health/service/web?index={index}&wait=120000ms"
    ));
    let woke = tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        let idx: u64 = resp.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        (Instant::now(), idx, body)
    });
    eventually("the query is parked", || async { t.agent.watchers() > 0 }).await;
    let changed = Instant::now();
    t.consul_put(
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "b", "Port": 81}),
    )
    .await;
    let (at, new_index, body) = woke.await.unwrap();
    assert!(at.duration_since(changed) < Duration::from_secs(2));
    assert!(new_index > index);
    assert_eq!(body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn kv_semantics() {
    let t = TestAgent::start().await;
    let put = |path: &str, body: &'static str| {
        let req = t.client.put(t.url(path)).body(body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(
        put("/v1/kv/app/db/url?flags=42", "postgres://a").await,
        json!(true)
    );
    assert_eq!(
        put("/v1/kv/app/db/url?cas=0", "x").await,
        json!(false),
        "cas 0 on an existing key"
    );
    let (code, index, got) = t.consul_get("/v1/kv/app/db/url").await;
    assert_eq!(code, 200);
    assert_eq!(got[0]["Key"], "app/db/url");
    assert_eq!(got[0]["Value"], "cG9zdGdyZXM6Ly9h");
    assert_eq!(got[0]["Flags"], 42);
    assert_eq!(got[0]["LockIndex"], 0);
    let modify = got[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(index, modify);
    assert_eq!(
        put(&format!("/v1/kv/app/db/url?cas={}", modify + 100), "y").await,
        json!(false)
    );
    assert_eq!(
        put(&format!("/v1/kv/app/db/url?cas={modify}"), "postgres://b").await,
        json!(true)
    );
    let raw = t
        .client
        .get(t.url("/v1/kv/app/db/url?raw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(raw, "postgres://b");

    put("/v1/kv/app/db/pool", "10").await;
    put("/v1/kv/app/cache/ttl", "30").await;
    put("/v1/kv/other", "z").await;
    let (_, _, all) = t.consul_get("/v1/kv/app/?recurse").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let (_, _, keys) = t.consul_get("/v1/kv/app/?keys&separator=/").await;
    assert_eq!(keys, json!(["app/cache/", "app/db/"]));
    let (_, _, keys) = t.consul_get("/v1/kv/?keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 4);

    let resp = t.client.get(t.url("/v1/kv/missing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );

    let del = t
        .client
        .delete(t.url("/v1/kv/app/db/?recurse"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.json::<Value>().await.unwrap(), json!(true));
    let (_, _, left) = t.consul_get("/v1/kv/app/?recurse").await;
    assert_eq!(left[0]["Key"], "app/cache/ttl");
    let resp = t
        .client
        .put(t.url("/v1/kv/lock?acquire=abc"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "sessions are refused");
    let resp = t
        .client
        .put(t.url("/v1/kv/big"))
        .body(vec![b'x'; 600 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn kv_blocking_is_per_prefix() {
    let t = TestAgent::start().await;
    t.client
        .put(t.url("/v1/kv/a/x"))
        .body("1")
        .send()
        .await
        .unwrap();
    let (_, index, _) = t.consul_get("/v1/kv/a/?recurse").await;
    let client = t.client.clone();
    let url = t.url(&format!("/v1/kv/a/?recurse&index={index}&wait=10s"));
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        resp.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    // Writes elsewhere do not answer the query…
    for i in 0..5 {
        t.client
            .put(t.url(&format!("/v1/kv/b/{i}")))
            .body("x")
            .send()
            .await
            .unwrap();
    }
    assert!(!waiter.is_finished());
    // …a delete under the prefix does.
    t.client.delete(t.url("/v1/kv/a/x")).send().await.unwrap();
    let new_index = waiter.await.unwrap();
    assert!(new_index > index);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn native_kv_face() {
    let t = TestAgent::start().await;
    let resp = t
        .client
        .put(t.url("/api/v1/kv/app/mode"))
        .body("blue")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let entry: Value = resp.json().await.unwrap();
    assert_eq!(entry["value"], "Ymx1ZQ==");
    let modify = entry["modify_index"].as_u64().unwrap();
    let resp = t
        .client
        .put(t.url("/api/v1/kv/app/mode?cas=1"))
        .body("green")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["field"], "cas");
    let resp = t
        .client
        .put(t.url(&format!("/api/v1/kv/app/mode?cas={modify}")))
        .body("green")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, got) = t.get("/api/v1/kv/app/mode").await;
    assert_eq!(code, 200);
    assert_eq!(got["value"], "Z3JlZW4=");
    let (code, _) = t.get("/api/v1/kv/app/none").await;
    assert_eq!(code, 404);
    // Consul sees the same key.
    let (_, _, consul) = t.consul_get("/v1/kv/app/mode").await;
    assert_eq!(consul[0]["Value"], "Z3JlZW4=");
    let resp = t
        .client
        .delete(t.url("/api/v1/kv/app/mode"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn go_style_leniency_keys_in_any_case_portless_services_and_present_flags() {
    let t = TestAgent::start().await;
    // Go's JSON decoder matches keys case-insensitively; py-consul relies on it.
    let (code, _) = t
        .consul_put(
            "/v1/agent/service/register",
            json!({"name": "noport", "id": "np1"}),
        )
        .await;
    assert_eq!(code, 200, "a service without a port is fine in Consul");
    let (_, _, svc) = t.consul_get("/v1/agent/service/np1").await;
    assert_eq!(svc["Port"], 0);
    let (code, err) = t
        .consul_put(
            "/v1/agent/check/register",
            json!({"name": "alive", "ttl": "10s", "id": "np1-ttl", "serviceid": "np1"}),
        )
        .await;
    assert_eq!(code, 200, "{err}");
    let (_, _, checks) = t.consul_get("/v1/agent/checks").await;
    assert_eq!(checks["np1-ttl"]["Status"], "critical");
    assert_eq!(checks["np1-ttl"]["Name"], "alive");
    // Metadata keys are the user's own and keep their spelling.
    t.consul_put(
        "/v1/agent/service/register",
        json!({"NAME": "meta", "PORT": 1, "meta": {"Service_ID": "x"}}),
    )
    .await;
    let (_, _, svc) = t.consul_get("/v1/agent/service/meta").await;
    assert_eq!(svc["Meta"], json!({"Service_ID": "x"}));

    t.client
        .put(t.url("/v1/kv/py/a"))
        .body("1")
        .send()
        .await
        .unwrap();
    t.client
        .put(t.url("/v1/kv/py/b/c"))
        .body("2")
        .send()
        .await
        .unwrap();
    let (code, _, keys) = t.consul_get("/v1/kv/py/?keys=True").await;
    assert_eq!(code, 200);
    assert_eq!(
        keys,
        json!(["py/a", "py/b/c"]),
        "keys is on by its presence"
    );
    let (_, _, all) = t.consul_get("/v1/kv/py/?recurse=false").await;
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "as in Consul, recurse is on by its presence"
    );
    let (_, _, members) = t.consul_get("/v1/agent/members").await;
    assert_eq!(members[0]["Name"], "signpost-1");
    assert_eq!(members[0]["Status"], 1);
}
