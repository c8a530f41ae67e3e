//! Maintenance and lifecycle states: an instance in maintenance, `starting` or `stopping`
//! stays registered but leaves discovery (native listings, Consul's `?passing`, DNS), and
//! comes back when it is lifted.

use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::RecordType;
use serde_json::{json, Value};

use crate::common::TestAgent;
use crate::dns::{ips, v4, DnsServer};

/// `PUT path` with an optional JSON body: the status code and the JSON answer.
async fn put(t: &TestAgent, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = t.client.put(t.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// Ids in Consul's `/v1/health/service/web?passing`.
async fn consul_passing(t: &TestAgent) -> Vec<String> {
    let (code, body) = t.get("/v1/health/service/web?passing").await;
    assert_eq!(code, 200, "{body}");
    let mut ids: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn two_web_instances(t: &TestAgent) {
    for (id, last) in [("a", 1), ("b", 2)] {
        let (code, body) = t
            .register(
                "web",
                json!({"id": id, "address": format!("10.0.0.{last}"), "port": 80}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
}

#[tokio::test]
async fn maintenance_hides_an_instance_from_lists_consul_health_and_dns_and_restores_it() {
    let t = TestAgent::start().await;
    two_web_instances(&t).await;
    let d = DnsServer::start(&t, |_| {}).await;
    let before = t.get("/api/v1/services/web/instances").await.1["index"]
        .as_u64()
        .unwrap();

    let (code, body) = put(
        &t,
        "/api/v1/services/web/instances/a/maintenance?enable=true&reason=disk%20swap",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["maintenance"]["reason"], "disk swap");
    assert_eq!(body["status"], "passing", "health is untouched");

    // Out of discovery, still registered.
    assert_eq!(t.ids("web", "passing").await, vec!["b"]);
    let (_, listing) = t.get("/api/v1/services/web/instances").await;
    assert_eq!(listing["instances"].as_array().unwrap().len(), 1);
    assert!(
        listing["index"].as_u64().unwrap() > before,
        "the index moves"
    );
    let (_, any) = t.get("/api/v1/services/web/instances?status=any").await;
    let a = &any["instances"][0];
    assert_eq!(
        (a["id"].as_str(), a["state"].as_str()),
        (Some("a"), Some("up"))
    );
    assert_eq!(a["maintenance"]["reason"], "disk swap");
    assert_eq!(consul_passing(&t).await, vec!["b"]);
    let (_, all) = t.get("/v1/health/service/web").await;
    let entry = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Service"]["ID"] == "a")
        .expect("without ?passing the instance is there");
    let mark = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "_service_maintenance:a")
        .expect("Consul's maintenance check");
    assert_eq!(mark["Status"], "critical");
    assert_eq!(mark["Notes"], "disk swap");
    let r = d.udp("web.service.consul.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(2)]);

    let (code, body) = put(
        &t,
        "/api/v1/services/web/instances/a/maintenance?enable=false",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.get("maintenance").is_none(), "{body}");
    assert_eq!(t.ids("web", "passing").await, vec!["a", "b"]);
    assert_eq!(consul_passing(&t).await, vec!["a", "b"]);
    let r = d.udp("web.service.consul.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(1), v4(2)]);

    // Every instance in maintenance: DNS answers as for a service with nothing healthy.
    for id in ["a", "b"] {
        let path = format!("/api/v1/services/web/instances/{id}/maintenance?enable=true");
        assert_eq!(put(&t, &path, None).await.0, 200);
    }
    let r = d.udp("web.service.consul.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    d.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn consul_maintenance_endpoint_toggles_and_requires_a_boolean_enable() {
    let t = TestAgent::start().await;
    two_web_instances(&t).await;
    for (query, field) in [
        ("", "enable"),
        ("?enable=yes", "enable"),
        ("?reason=x", "enable"),
    ] {
        let (code, body) = put(&t, &format!("/v1/agent/service/maintenance/a{query}"), None).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    assert_eq!(
        consul_passing(&t).await,
        vec!["a", "b"],
        "a refusal changes nothing"
    );
    let (code, _) = put(&t, "/v1/agent/service/maintenance/nope?enable=true", None).await;
    assert_eq!(code, 404);

    let (code, body) = put(
        &t,
        "/v1/agent/service/maintenance/a?enable=true&reason=upgrade",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(consul_passing(&t).await, vec!["b"]);
    assert_eq!(t.ids("web", "passing").await, vec!["b"]);
    let (code, _) = put(&t, "/v1/agent/service/maintenance/a?enable=false", None).await;
    assert_eq!(code, 200);
    assert_eq!(consul_passing(&t).await, vec!["a", "b"]);
    t.shutdown().await;
}

#[tokio::test]
async fn lifecycle_states_keep_starting_and_stopping_instances_out_of_discovery() {
    let t = TestAgent::start().await;
    let (code, body) = t
        .register(
            "web",
            json!({"id": "a", "address": "10.0.0.1", "port": 80, "state": "starting"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["state"], "starting");
    let (code, body) = t
        .register("web", json!({"id": "b", "address": "10.0.0.2", "port": 80}))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["state"], "up", "the default");
    assert_eq!(t.ids("web", "passing").await, vec!["b"]);
    assert_eq!(t.ids("web", "any").await, vec!["a", "b"]);
    assert_eq!(consul_passing(&t).await, vec!["b"]);

    let (code, body) = put(
        &t,
        "/api/v1/services/web/instances/a/state",
        Some(json!({"state": "up"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(t.ids("web", "passing").await, vec!["a", "b"]);

    let (code, body) = put(
        &t,
        "/api/v1/services/web/instances/b/state",
        Some(json!({"state": "stopping"})),
    )
    .await;
    assert_eq!((code, body["state"].as_str()), (200, Some("stopping")));
    assert_eq!(t.ids("web", "passing").await, vec!["a"]);
    assert_eq!(consul_passing(&t).await, vec!["a"]);
    assert_eq!(t.status_of("web", "b").await.as_deref(), Some("passing"));

    // Bad input: 400 naming the field, nothing changes; unknown instances are 404.
    for (body, field) in [(json!({"state": "down"}), "state"), (json!({}), "state")] {
        let (code, err) = put(&t, "/api/v1/services/web/instances/b/state", Some(body)).await;
        assert_eq!(code, 400, "{err}");
        assert_eq!(err["field"], field, "{err}");
    }
    let (code, err) = t
        .register(
            "web",
            json!({"id": "c", "address": "10.0.0.3", "port": 80, "state": "sleepy"}),
        )
        .await;
    assert_eq!((code, err["field"].as_str()), (400, Some("state")), "{err}");
    assert_eq!(t.ids("web", "any").await, vec!["a", "b"]);
    let (code, _) = put(
        &t,
        "/api/v1/services/web/instances/nope/state",
        Some(json!({"state": "up"})),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = put(
        &t,
        "/api/v1/services/web/instances/nope/maintenance?enable=true",
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, err) = put(
        &t,
        "/api/v1/services/web/instances/a/maintenance?enable=maybe",
        None,
    )
    .await;
    assert_eq!((code, err["field"].as_str()), (400, Some("enable")));
    t.shutdown().await;
}
