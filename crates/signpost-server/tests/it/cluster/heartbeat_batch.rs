//! A heartbeat batch sent to a follower travels to the leader as one call.

use http::{Method, StatusCode};
use serde_json::json;

use super::fixture::{eventually, Cluster};

#[tokio::test]
async fn a_follower_forwards_a_heartbeat_batch_as_one_call() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.member(c.others(leader)[0]);
    let mut keys = Vec::new();
    for i in 0..50 {
        let id = format!("i{i}");
        let body = json!({"id": id, "address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}});
        let (status, answer) = c
            .member(leader)
            .post("/api/v1/services/web/instances", body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        keys.push(json!({"service": "web", "id": id}));
    }
    keys.push(json!({"service": "web", "id": "nobody"}));
    eventually("the follower has applied every registration", || async {
        c.member(follower.id).ids("web").await.len() == 50
    })
    .await;
    let (single, batched) = (
        c.net.delivered("/raft/ttl"),
        c.net.delivered("/raft/ttl_batch"),
    );
    let (status, answer) = follower
        .call(Method::PUT, "/api/v1/heartbeats", Some(json!(keys)))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["renewed"], 50, "{answer}");
    assert_eq!(
        answer["not_found"],
        json!([{"service": "web", "id": "nobody"}])
    );
    assert_eq!(c.net.delivered("/raft/ttl_batch"), batched + 1, "one call");
    assert_eq!(c.net.delivered("/raft/ttl"), single, "not one call per key");
    c.stop().await;
}
