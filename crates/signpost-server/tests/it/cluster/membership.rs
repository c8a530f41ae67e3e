//! Membership: a member joins a running cluster, another is removed.

use http::StatusCode;
use serde_json::json;

use super::fixture::Cluster;

#[tokio::test]
async fn a_fourth_member_joins_and_a_member_is_removed() {
    let mut c = Cluster::start(3).await;
    assert!(c.member(1).register("web", "before").await.is_success());

    // The new member's join loop asks member 1, which may have to forward to the leader.
    let four = c.add().await;
    let all = c.ids();
    c.wait_for_voters(&all, &all).await;
    c.wait_for_ids(&[four], "web", &["before"]).await;

    // Remove a follower other than the newcomer, asking the newcomer (forwarded to the leader).
    let leader = c.leader().await;
    let gone = c
        .others(leader)
        .into_iter()
        .find(|&id| id != four)
        .expect("two old followers");
    let (status, body) = c
        .member(four)
        .post("/api/v1/cluster/remove", json!({ "node_id": gone }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rest = c.others(gone);
    c.wait_for_voters(&rest, &rest).await;
    // Stopped by its operator: it must not disturb the others.
    c.net.isolate(gone);

    // The remaining three still commit, and know nothing of the removed member.
    assert!(c.member(four).register("web", "after").await.is_success());
    c.wait_for_ids(&rest, "web", &["after", "before"]).await;
    let (status, _) = c
        .member(four)
        .post("/api/v1/cluster/remove", json!({ "node_id": 99 }))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the leader's answer crosses the forward"
    );
    c.stop().await;
}
