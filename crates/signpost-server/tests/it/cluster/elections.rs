//! Elections: one leader, a cut-off leader replaced, and convergence over lossy links.

use std::time::Duration;

use http::StatusCode;

use super::fixture::{eventually, Cluster};

#[tokio::test]
async fn three_members_elect_one_leader() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let leading: Vec<u64> = c
        .ids()
        .into_iter()
        .filter(|&id| c.member(id).agent.is_leader())
        .collect();
    assert_eq!(leading, vec![leader], "exactly one member leads");
    for id in c.ids() {
        assert_eq!(
            c.member(id).membership().await,
            (vec![1, 2, 3], Some(leader)),
            "member {id}'s view"
        );
    }
    c.stop().await;
}

/// The leader cut off from both followers: they elect a leader of their own and take writes
/// through either of them; the old leader's write fails (it cannot commit) instead of being
/// acknowledged, and after healing the old leader follows the new one and holds what the
/// majority wrote, and not its own failed write.
#[tokio::test]
async fn an_isolated_leader_is_replaced_and_catches_up_after_healing() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    let majority = c.others(old);
    c.net.isolate(old);

    let cut_off_write = c.member(old).register("web", "lost");
    let majority_side = async {
        let new = c.leader_among(&majority).await;
        for &id in &majority {
            let status = c.member(id).register("web", &format!("kept-{id}")).await;
            assert!(status.is_success(), "member {id} refused a write: {status}");
        }
        new
    };
    let (refused, new) = tokio::join!(cut_off_write, majority_side);
    assert_ne!(new, old);
    assert_eq!(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "the cut-off leader must not acknowledge a write it cannot commit"
    );
    let kept: Vec<String> = majority.iter().map(|id| format!("kept-{id}")).collect();
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    c.wait_for_ids(&majority, "web", &kept).await;
    assert!(c.member(old).ids("web").await.is_empty());

    c.net.heal();
    eventually("the old leader follows the new one", || async {
        c.member(old).leader_id() == Some(new) && !c.member(old).agent.is_leader()
    })
    .await;
    c.wait_for_ids(&c.ids(), "web", &kept).await;
    c.stop().await;
}

/// A fifth of all messages (requests and answers) lost and every message a little late:
/// writes still commit (clients retry what failed, as they would) and every member converges
/// on the same state.
#[tokio::test]
async fn slow_lossy_links_still_converge() {
    let c = Cluster::start(3).await;
    c.net.set_drop_rate(0.2);
    c.net.set_delay(Duration::from_millis(3));
    let ids: Vec<String> = (0..12).map(|i| format!("i{i}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let via = c.ids()[n % 3];
        eventually(&format!("{id} is written through member {via}"), || async {
            c.member(via).register("web", id).await.is_success()
        })
        .await;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    c.wait_for_ids(&c.ids(), "web", &ids).await;
    assert!(c.net.lost() > 0, "messages were lost on the way");
    c.net.set_drop_rate(0.0);
    c.net.set_delay(Duration::ZERO);
    c.leader().await;
    c.stop().await;
}
