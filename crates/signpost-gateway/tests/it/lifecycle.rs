//! The gateway follows lifecycle states and maintenance through the SDK: a `stopping` instance,
//! still registered, gets no traffic; taken out of maintenance, an instance gets it again.

use serde_json::json;

use crate::common::{AgentExt, Backend, TestAgent, TestGateway};

/// `PUT path` on the agent: the status code.
async fn put(agent: &TestAgent, path: &str, body: Option<serde_json::Value>) -> u16 {
    let mut req = agent.client.put(agent.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Which backend answered each of `n` requests.
async fn backends(gw: &TestGateway, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (status, body) = gw.get("/x").await;
        assert_eq!(status, 200, "{body}");
        seen.insert(body["backend"].as_str().unwrap().to_string());
    }
    seen
}

#[tokio::test]
async fn a_stopping_or_maintained_instance_gets_no_traffic_while_still_registered() {
    let agent = TestAgent::start().await;
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    agent.add_instance("svc", "a", a.port(), json!({})).await;
    agent.add_instance("svc", "b", b.port(), json!({})).await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [[route]]
        prefix = "/"
        service = "svc"
        "#,
    )
    .await;
    gw.wait_upstreams("/", 2).await;
    assert_eq!(backends(&gw, 10).await.len(), 2);

    let state = "/api/v1/services/svc/instances/b/state";
    assert_eq!(
        put(&agent, state, Some(json!({"state": "stopping"}))).await,
        200
    );
    gw.wait_upstreams("/", 1).await;
    assert_eq!(backends(&gw, 20).await, ["a".to_string()].into());
    assert_eq!(
        agent.ids("svc", "any").await,
        ["a", "b"],
        "b is still registered"
    );

    assert_eq!(put(&agent, state, Some(json!({"state": "up"}))).await, 200);
    gw.wait_upstreams("/", 2).await;
    let maintenance = "/api/v1/services/svc/instances/a/maintenance";
    assert_eq!(
        put(&agent, &format!("{maintenance}?enable=true"), None).await,
        200
    );
    gw.wait_upstreams("/", 1).await;
    assert_eq!(backends(&gw, 20).await, ["b".to_string()].into());
    assert_eq!(
        put(&agent, &format!("{maintenance}?enable=false"), None).await,
        200
    );
    gw.wait_upstreams("/", 2).await;
    assert_eq!(backends(&gw, 10).await.len(), 2);
}
