//! TTL checks across a restart: the new leader gives every TTL instance a fresh deadline
//! (grace) instead of expiring it for heartbeats it could not have seen, and expiry still works.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{poll_until, Agent};

const TTL: Duration = Duration::from_secs(3);

#[tokio::test]
async fn ttl_grace_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut agent = Agent::start(dir.path(), ["--data-dir", data.to_str().unwrap()]).await;

    let (status, ack) = agent
        .register(
            "api",
            &json!({"id": "a1", "address": "10.1.0.1", "port": 9000, "check": {"ttl": "3s"}}),
        )
        .await;
    assert_eq!(status, 201, "{ack}");
    let registered = Instant::now();

    // Heartbeat past one TTL after the registration, so that a restart which judged the
    // instance by its (persisted) registration time instead of granting a fresh deadline
    // would find it overdue at once.
    let mut cadence = tokio::time::interval(Duration::from_millis(500));
    let mut last_heartbeat;
    loop {
        cadence.tick().await;
        let (status, body) = agent.heartbeat("api", "a1").await;
        assert_eq!(status, 200, "heartbeat: {body}");
        assert_eq!(body["status"], "passing", "{body}");
        last_heartbeat = Instant::now();
        if registered.elapsed() > TTL + Duration::from_millis(500) {
            break;
        }
    }

    agent.kill9();
    let took = agent.restart().await;
    let restarted = agent.spawned_at;
    eprintln!(
        "restarted in {took:?}, {:?} after the last heartbeat",
        last_heartbeat.elapsed()
    );

    let instance = agent.get_json("/api/v1/services/api/instances/a1").await;
    assert_eq!(
        instance["status"], "passing",
        "the TTL instance was not given a fresh deadline after the restart: {instance}"
    );

    // No more heartbeats: it must expire, but not before a full TTL since the new agent
    // started leading (which is after it was spawned).
    let expired_at = poll_until(
        Duration::from_secs(10),
        "the TTL instance to turn critical",
        || async {
            let i = agent.get_json("/api/v1/services/api/instances/a1").await;
            (i["status"] == "critical").then(Instant::now)
        },
    )
    .await;
    let since_spawn = expired_at - restarted;
    eprintln!("turned critical {since_spawn:?} after the restart was spawned");
    assert!(
        since_spawn >= TTL,
        "turned critical {since_spawn:?} after the restart, before a full TTL of grace"
    );
    // The passing listing no longer offers it.
    let passing = agent.get_json("/api/v1/services/api/instances").await;
    assert_eq!(passing["instances"], json!([]), "{passing}");
}
