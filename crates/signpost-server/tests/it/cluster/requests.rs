//! What followers hand to the leader: writes, TTL updates, read-index reads.

use http::{Method, StatusCode};
use serde_json::json;

use super::fixture::{eventually, Cluster};

#[tokio::test]
async fn a_write_on_a_follower_is_forwarded_and_applied_everywhere() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.others(leader)[0];
    let forwarded = c.net.delivered("/raft/propose");
    assert_eq!(
        c.member(follower).register("web", "a").await,
        StatusCode::CREATED
    );
    assert!(
        c.net.delivered("/raft/propose") > forwarded,
        "the follower handed the write to the leader"
    );
    c.wait_for_ids(&c.ids(), "web", &["a"]).await;
    c.stop().await;
}

/// A heartbeat sent to a follower reaches the leader's health checker; the leader's "not
/// registered" comes back through the follower as a 404.
#[tokio::test]
async fn a_heartbeat_on_a_follower_is_forwarded_to_the_leader() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.member(c.others(leader)[0]);
    let (status, body) = c
        .member(leader)
        .post(
            "/api/v1/services/web/instances",
            json!({"id": "a", "address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let forwarded = c.net.delivered("/raft/ttl");
    eventually("the follower renews the instance", || async {
        let path = "/api/v1/services/web/instances/a/heartbeat";
        follower.call(Method::PUT, path, None).await.0 == StatusCode::OK
    })
    .await;
    assert!(c.net.delivered("/raft/ttl") > forwarded);
    let path = "/api/v1/services/web/instances/nobody/heartbeat";
    assert_eq!(
        follower.call(Method::PUT, path, None).await.0,
        StatusCode::NOT_FOUND
    );
    c.stop().await;
}

/// The leader's appends to one follower are cut, so it lags; a consistent read there still
/// sees a write acknowledged through the other follower, by waiting for the leader's read
/// index to be applied.
#[tokio::test]
async fn a_consistent_read_on_a_lagging_follower_sees_a_write_acknowledged_elsewhere() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let others = c.others(leader);
    let (writer, reader) = (c.member(others[0]), c.member(others[1]));
    c.net.cut(leader, reader.id);
    assert_eq!(writer.register("web", "fresh").await, StatusCode::CREATED);
    assert!(
        reader.ids("web").await.is_empty(),
        "the reader cannot have the write yet"
    );

    let asked = c.net.delivered("/raft/read_index");
    let read = reader.read_ids("web", true);
    let heal = async {
        eventually("the reader asks the leader for its read index", || async {
            c.net.delivered("/raft/read_index") > asked
        })
        .await;
        c.net.heal();
    };
    let (seen, ()) = tokio::join!(read, heal);
    assert_eq!(seen, Some(vec!["fresh".to_string()]));
    c.stop().await;
}
