//! The 4xx matrix of the native and Consul APIs, in process: each bad request goes through the
//! agent's router with `tower::ServiceExt::oneshot` (no socket), and each answer's status and
//! JSON error body are checked, then that none of them changed anything.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use serde_json::{json, Value};
use signpost_server::{Agent, AgentConfig};
use tower::ServiceExt;

use crate::common::eventually;

/// An agent in memory, not listening anywhere: requests reach its router directly.
struct App {
    agent: Arc<Agent>,
}

impl App {
    async fn start() -> App {
        let config = AgentConfig {
            dev: true,
            ..AgentConfig::default()
        };
        let agent = Agent::start(config, "127.0.0.1:1".parse().unwrap())
            .await
            .expect("the agent starts");
        eventually("the agent leads", || async { agent.is_leader() }).await;
        App { agent }
    }

    /// Sends one request through a fresh router; the status, the JSON body (`null` when there
    /// is none) and the headers.
    async fn call(&self, method: Method, uri: &str, body: Body) -> (u16, Value, HeaderMap) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = signpost_server::http::router(self.agent.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, headers)
    }

    /// What a bad request must not change: the services, one instance, the KV root.
    async fn state(&self) -> Value {
        let (_, services, _) = self
            .call(Method::GET, "/api/v1/services", Body::empty())
            .await;
        let (_, instance, _) = self
            .call(
                Method::GET,
                "/api/v1/services/users/instances/u1",
                Body::empty(),
            )
            .await;
        let (_, kv, _) = self
            .call(Method::GET, "/v1/kv/?recurse", Body::empty())
            .await;
        json!({ "services": services, "instance": instance, "kv": kv })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.agent.health().stop();
    }
}

fn err(message: &str, field: Option<&str>) -> Value {
    match field {
        Some(field) => json!({ "error": message, "field": field }),
        None => json!({ "error": message }),
    }
}

fn body(v: Value) -> Body {
    Body::from(v.to_string())
}

#[tokio::test]
async fn every_bad_request_gets_its_status_and_error_body_and_changes_nothing() {
    let app = App::start().await;
    let (code, _, _) = app
        .call(
            Method::POST,
            "/api/v1/services/users/instances",
            body(json!({"id": "u1", "address": "10.0.0.1", "port": 80})),
        )
        .await;
    assert_eq!(code, 201);
    let before = app.state().await;
    let not_registered = |id: &str| err(&format!("instance users/{id} is not registered"), None);
    let big = Body::from(vec![b'x'; signpost_core::kv::MAX_VALUE_BYTES + 1]);
    let cases: Vec<(Method, &str, Body, u16, Value)> = vec![
        // The native API.
        (
            Method::POST,
            "/api/v1/services/users/instances",
            Body::empty(),
            400,
            err("request body is empty; expected a JSON object", None),
        ),
        (
            Method::POST,
            "/api/v1/services/users/instances",
            body(json!({"address": "10.0.0.1"})),
            400,
            err("port is required", Some("port")),
        ),
        (
            Method::POST,
            "/api/v1/services/users/instances",
            body(json!({"port": 80})),
            400,
            err("address is required", Some("address")),
        ),
        (
            Method::GET,
            "/api/v1/services?index=abc",
            Body::empty(),
            400,
            err(
                "index must be a non-negative integer, got \"abc\"",
                Some("index"),
            ),
        ),
        (
            Method::GET,
            "/api/v1/services/users/instances/nope",
            Body::empty(),
            404,
            not_registered("nope"),
        ),
        (
            Method::DELETE,
            "/api/v1/services/users/instances/nope",
            Body::empty(),
            404,
            not_registered("nope"),
        ),
        (
            Method::PUT,
            "/api/v1/services/users/instances/nope/heartbeat",
            Body::empty(),
            404,
            not_registered("nope"),
        ),
        (
            Method::PUT,
            "/api/v1/services/users/instances/u1/heartbeat",
            Body::empty(),
            400,
            err("instance users/u1 has no ttl check to renew", Some("check")),
        ),
        (
            Method::GET,
            "/api/v1/services/users/instances?status=bogus",
            Body::empty(),
            400,
            err(
                "unknown status \"bogus\": expected any, passing, warning or critical",
                Some("status"),
            ),
        ),
        (
            Method::GET,
            "/api/v1/services/users/instances?index=x",
            Body::empty(),
            400,
            err(
                "index must be a non-negative integer, got \"x\"",
                Some("index"),
            ),
        ),
        (
            Method::GET,
            "/api/v1/services/users/definition",
            Body::empty(),
            404,
            err("service users has no definition", None),
        ),
        (
            Method::DELETE,
            "/api/v1/services/users/definition",
            Body::empty(),
            404,
            err("service users has no definition", None),
        ),
        (
            Method::GET,
            "/api/v1/kv/app/none",
            Body::empty(),
            404,
            err("key \"app/none\" not found", None),
        ),
        (
            Method::PUT,
            "/api/v1/kv/app/x?acquire=s",
            Body::from("v"),
            400,
            err(
                "sessions and locks (acquire/release) are not supported by Signpost",
                Some("acquire"),
            ),
        ),
        (
            Method::DELETE,
            "/api/v1/kv/app?recurse&cas=1",
            Body::empty(),
            400,
            err("cas cannot be combined with recurse", Some("cas")),
        ),
        (
            Method::PUT,
            "/api/v1/kv/app/x?dc=elsewhere",
            Body::from("v"),
            400,
            err(
                "unknown datacenter \"elsewhere\": this agent serves \"dc1\" only",
                Some("dc"),
            ),
        ),
        (
            Method::PUT,
            "/api/v1/kv/app/x?cas=7",
            Body::from("v"),
            409,
            err(
                "cas index does not match the current index of \"app/x\"",
                Some("cas"),
            ),
        ),
        (
            Method::PUT,
            "/api/v1/kv/app/big",
            big,
            413,
            err("request body is larger than 1048576 bytes", None),
        ),
        (
            Method::POST,
            "/api/v1/cluster/remove",
            body(json!({"node_id": 99})),
            404,
            err("node 99 is not a member", None),
        ),
        (
            Method::POST,
            "/api/v1/cluster/join",
            body(json!({"node_id": 0, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:1"})),
            400,
            err("node ids start at 1", Some("node_id")),
        ),
        (
            Method::GET,
            "/api/v1/nowhere",
            Body::empty(),
            404,
            err("no such endpoint", None),
        ),
        (
            Method::PATCH,
            "/api/v1/services",
            Body::empty(),
            405,
            err("method not allowed on this endpoint", None),
        ),
        // The Consul face.
        (
            Method::PUT,
            "/v1/agent/service/register",
            body(json!({"Port": 80})),
            400,
            err("Name is required", Some("Name")),
        ),
        (
            Method::PUT,
            "/v1/agent/service/register",
            body(json!({"Name": "web", "Kind": "connect-proxy"})),
            400,
            err(
                "only typical services are supported (no Connect proxies or gateways)",
                Some("Kind"),
            ),
        ),
        (
            Method::PUT,
            "/v1/agent/service/register",
            body(json!({"Name": "orders", "ID": "u1", "Port": 81})),
            400,
            err(
                "service ID \"u1\" is already registered for service \"users\"",
                Some("ID"),
            ),
        ),
        (
            Method::PUT,
            "/v1/agent/service/deregister/nope",
            Body::empty(),
            404,
            err("unknown service ID \"nope\"", None),
        ),
        (
            Method::PUT,
            "/v1/agent/check/pass/service:u1",
            Body::empty(),
            404,
            err("unknown check ID \"service:u1\"", None),
        ),
        (
            Method::PUT,
            "/v1/agent/check/update/nope",
            body(json!({})),
            400,
            err("Status is required", Some("Status")),
        ),
        (
            Method::GET,
            "/v1/catalog/services?filter=x",
            Body::empty(),
            400,
            err(
                "filter expressions are not supported by Signpost; use tag and passing",
                Some("filter"),
            ),
        ),
        (
            Method::GET,
            "/v1/health/state/bogus",
            Body::empty(),
            400,
            err(
                "unknown check state \"bogus\": use any, passing, warning or critical",
                Some("state"),
            ),
        ),
        (
            Method::GET,
            "/v1/catalog/node/other",
            Body::empty(),
            404,
            err("unknown node \"other\"", None),
        ),
        (Method::GET, "/v1/kv/none", Body::empty(), 404, Value::Null),
        (
            Method::PUT,
            "/v1/kv/a?cas=x",
            Body::from("v"),
            400,
            err("cas must be an unsigned integer, got \"x\"", Some("cas")),
        ),
    ];
    for (method, uri, request_body, status, expected) in cases {
        let (code, got, headers) = app.call(method.clone(), uri, request_body).await;
        assert_eq!((code, &got), (status, &expected), "{method} {uri}");
        if uri.starts_with("/v1/") {
            assert!(
                headers.contains_key("x-consul-index"),
                "{method} {uri}: Consul's headers on errors too"
            );
        }
    }
    assert_eq!(app.state().await, before, "no bad request changed anything");
}
