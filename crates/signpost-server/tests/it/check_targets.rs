//! Health checks are not an open scanner: a registration whose HTTP, TCP or gRPC check would
//! reach a denied address (`[health] check_deny_cidrs`, default link-local) or one outside
//! `check_allow_cidrs` is a 400 that says so, on the native and the Consul API, and changes
//! nothing. The addresses used are never contacted: refused registrations start no check.

use serde_json::{json, Value};

use crate::common::TestAgent;

async fn consul_put(t: &TestAgent, path: &str, body: Value) -> (u16, Value) {
    let resp = t.client.put(t.url(path)).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn native_registrations_with_denied_check_targets_are_refused() {
    let t = TestAgent::start().await;
    // An instance with an allowed check, which a refused re-registration must not touch.
    let (code, _) = t
        .register(
            "svc",
            json!({"id": "a", "address": "127.0.0.1", "port": 1, "check": {"ttl": "1m"}}),
        )
        .await;
    assert_eq!(code, 201);
    for (check, range) in [
        (
            json!({"http": "http://169.254.169.254/latest/meta-data/", "interval": "1m"}),
            "169.254.0.0/16",
        ),
        (
            json!({"tcp": "[fe80::1]:22", "interval": "1m"}),
            "fe80::/10",
        ),
        (
            json!({"grpc": "169.254.10.1:50051/pkg.Svc", "interval": "1m"}),
            "169.254.0.0/16",
        ),
        (
            json!({"http": "https://[::ffff:169.254.169.254]/", "interval": "1m"}),
            "169.254.0.0/16",
        ),
    ] {
        for id in ["a", "b"] {
            let (code, err) = t
                .register(
                    "svc",
                    json!({"id": id, "address": "127.0.0.1", "port": 1, "check": check}),
                )
                .await;
            assert_eq!(code, 400, "{check} → {err}");
            assert_eq!(err["field"], "check", "{err}");
            let message = err["error"].as_str().unwrap();
            assert!(
                message.contains(&format!("is in the denied range {range}")),
                "{message}"
            );
            assert!(message.contains("health.check_deny_cidrs"), "{message}");
        }
    }
    let (code, _) = t.get("/api/v1/services/svc/instances/b").await;
    assert_eq!(code, 404, "nothing was registered");
    let (_, a) = t.get("/api/v1/services/svc/instances/a").await;
    assert_eq!(
        a["check"]["ttl"], "1m",
        "the existing check is untouched: {a}"
    );
}

#[tokio::test]
async fn an_allow_list_and_names_that_resolve_into_denied_ranges() {
    let t = TestAgent::start_with(|c| {
        c.health.check_allow_cidrs = Some(vec!["127.0.0.0/8".parse().unwrap()]);
        c.health.check_deny_cidrs = vec!["127.0.0.99/32".parse().unwrap()];
    })
    .await;
    let register = |check: Value| {
        let t = &t;
        async move {
            t.register(
                "svc",
                json!({"id": "x", "address": "127.0.0.1", "port": 1, "check": check}),
            )
            .await
        }
    };
    let (code, err) = register(json!({"tcp": "10.0.0.1:5432", "interval": "1m"})).await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("10.0.0.1 is outside the allowed ranges"),
        "{err}"
    );
    let (code, err) = register(json!({"tcp": "127.0.0.99:5432", "interval": "1m"})).await;
    assert_eq!(code, 400, "deny wins over allow: {err}");
    // The allow list's own range is accepted (a dead loopback port: the check just fails).
    let (code, err) = register(json!({"tcp": "127.0.0.1:1", "interval": "1m"})).await;
    assert_eq!(code, 201, "{err}");

    // A name is judged by what it resolves to.
    let t = TestAgent::start_with(|c| {
        c.health.check_deny_cidrs =
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    })
    .await;
    let (code, err) = t
        .register(
            "svc",
            json!({"id": "x", "address": "127.0.0.1", "port": 1,
                   "check": {"http": "http://localhost:1/health", "interval": "1m"}}),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("resolves (localhost)"),
        "{err}"
    );
}

#[tokio::test]
async fn consul_registrations_with_denied_check_targets_are_refused() {
    let t = TestAgent::start().await;
    for body in [
        json!({"Name": "web", "ID": "w1", "Port": 80,
               "Check": {"HTTP": "http://169.254.169.254/latest/meta-data/", "Interval": "1m"}}),
        json!({"Name": "web", "ID": "w1", "Port": 80,
               "Checks": [{"TCP": "169.254.169.254:80", "Interval": "1m"}]}),
        json!({"name": "web", "id": "w1", "port": 80,
               "check": {"grpc": "[fe80::1]:50051", "interval": "1m"}}),
    ] {
        let (code, err) = consul_put(&t, "/v1/agent/service/register", body.clone()).await;
        assert_eq!(code, 400, "{body} → {err}");
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .contains("is in the denied range"),
            "{err}"
        );
    }
    let (_, services) = t.get("/v1/agent/services").await;
    assert_eq!(services, json!({}), "nothing was registered");

    // A check attached later goes through the same gate.
    let (code, _) = consul_put(
        &t,
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "w1", "Port": 80}),
    )
    .await;
    assert_eq!(code, 200);
    let (code, err) = consul_put(
        &t,
        "/v1/agent/check/register",
        json!({"CheckID": "w1-meta", "ServiceID": "w1", "TCP": "169.254.169.254:80", "Interval": "1m"}),
    )
    .await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("169.254.169.254 is in the denied range 169.254.0.0/16"),
        "{err}"
    );
    let (_, checks) = t.get("/v1/agent/checks").await;
    assert_eq!(checks, json!({}), "no check was attached: {checks}");
}
