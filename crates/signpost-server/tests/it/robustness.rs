//! Robustness (issue 14): whatever reaches the state machine is validated, whichever route it
//! came by; the state is bounded by `[limits]` with a JSON refusal naming the limit; snapshot
//! chunks must be contiguous; blocking queries on invented names leave nothing behind; the
//! data directory is private.

use serde_json::{json, Value};
use signpost_server::service;

use crate::common::{instance, TestAgent};

/// `POST /raft/propose` with `body` (no cluster secret is configured in these agents).
async fn propose(t: &TestAgent, body: Value) -> (u16, Value) {
    let resp = t
        .client
        .post(t.url("/raft/propose"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn now_ms() -> u64 {
    signpost_server::cluster::now_ms()
}

/// A `Register` command as the state machine takes it.
fn register_command(service: &str, id: &str, check: Value) -> Value {
    json!({ "Register": {
        "id": id, "service": service, "address": "10.0.0.1", "port": 80,
        "tags": [], "metadata": {}, "weight": 100, "check": check, "status": null
    }})
}

#[tokio::test]
async fn a_proposal_from_the_year_10000_is_refused_and_listings_keep_working() {
    let t = TestAgent::start().await;
    let year_10000 = 253_402_300_800_000u64;
    let (status, body) = propose(
        &t,
        json!({ "now_ms": year_10000, "command": register_command("users", "u1", Value::Null) }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "now_ms");
    let skewed = now_ms() - 2 * 60 * 60 * 1000;
    let (status, body) = propose(
        &t,
        json!({ "now_ms": skewed, "command": register_command("users", "u1", Value::Null) }),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("now_ms")));
    let (status, body) = t.get("/api/v1/services/users/instances").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instances"], json!([]), "nothing was registered");
    t.shutdown().await;
}

#[tokio::test]
async fn a_proposed_zero_interval_check_is_refused_at_the_door() {
    let t = TestAgent::start().await;
    let check = json!({ "tcp": "10.0.0.1:80", "interval": "0ms" });
    let (status, body) = propose(
        &t,
        json!({ "now_ms": now_ms(), "command": register_command("users", "u1", check) }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "check.interval");
    let (status, body) = propose(
        &t,
        json!({ "now_ms": now_ms(), "command": register_command("users", "u1", Value::Null) }),
    )
    .await;
    assert_eq!(status, 200, "a valid proposal is applied: {body}");
    assert_eq!(t.ids("users", "passing").await, ["u1"]);
    t.shutdown().await;
}

#[tokio::test]
async fn limits_refuse_with_429_naming_the_limit_on_both_faces() {
    let t = TestAgent::start_with(|c| {
        c.limits.max_instances_per_service = 2;
        c.limits.max_kv_keys = 1;
    })
    .await;
    for port in [1, 2] {
        assert_eq!(t.register("users", instance(port)).await.0, 201);
    }
    let (status, body) = t.register("users", instance(3)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["field"], "limits.max_instances_per_service");
    assert!(body["error"].as_str().unwrap().contains('2'), "{body}");
    let consul = t
        .client
        .put(t.url("/v1/agent/service/register"))
        .json(&json!({ "Name": "users", "ID": "c3", "Address": "10.0.0.3", "Port": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(consul.status(), 429);
    let body: Value = consul.json().await.unwrap();
    assert_eq!(body["field"], "limits.max_instances_per_service");
    assert_eq!(
        t.ids("users", "passing").await.len(),
        2,
        "nothing more registered"
    );

    let put = |key: &'static str| {
        t.client
            .put(t.url(&format!("/v1/kv/{key}")))
            .body("v")
            .send()
    };
    assert_eq!(put("a").await.unwrap().status(), 200);
    let refused = put("b").await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "limits.max_kv_keys");
    t.shutdown().await;
}

#[tokio::test]
async fn a_write_over_max_entry_bytes_is_refused_with_413() {
    let t = TestAgent::start_with(|c| c.limits.max_entry_bytes = 4096).await;
    let resp = t
        .client
        .put(t.url("/v1/kv/big"))
        .body(vec![b'x'; 8192])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "limits.max_entry_bytes");
    let (status, _) = t.get("/v1/kv/big").await;
    assert_eq!(status, 404, "nothing was written");
    t.shutdown().await;
}

/// A snapshot chunk body as `/raft/snapshot` takes it.
fn chunk(id: &str, offset: u64, data: &[u8]) -> Vec<u8> {
    let req = openraft::raft::InstallSnapshotRequest::<signpost_server::raft::TypeConfig> {
        vote: openraft::Vote::new_committed(1, 2),
        meta: signpost_server::raft::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: id.into(),
        },
        offset,
        data: data.to_vec(),
        done: false,
    };
    signpost_server::raft::network::encode_snapshot_chunk(&req)
}

#[tokio::test]
async fn a_snapshot_chunk_that_leaves_a_hole_is_refused() {
    let t = TestAgent::start().await;
    let post = |body: Vec<u8>| t.client.post(t.url("/raft/snapshot")).body(body).send();
    // A chunk of a snapshot never started, far out: would zero-fill a terabyte.
    let resp = post(chunk("s1", 1 << 40, b"x")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "offset");
    // Started, then a hole after the first chunk.
    let first = post(chunk("s2", 0, b"0123")).await.unwrap();
    assert_ne!(first.status(), 400, "a first chunk is admitted");
    let resp = post(chunk("s2", 1 << 40, b"x")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = post(chunk("s2", 5, b"x")).await.unwrap();
    assert_eq!(
        resp.status(),
        400,
        "one byte past what was received is a hole"
    );
    let resp = post(chunk("s2", u64::MAX - 1, b"xyz")).await.unwrap();
    assert_eq!(resp.status(), 400, "past the 4 GiB bound");
    t.shutdown().await;
}

#[tokio::test]
async fn blocking_queries_on_invented_names_leave_no_channels_behind() {
    let t = TestAgent::start().await;
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("nobody-{i:05}-{}", i * 7919 % 10_007))
        .collect();
    for batch in names.chunks(50) {
        let queries = batch.iter().map(|name| {
            let url = t.url(&format!(
                "/api/v1/services/{name}/instances?index=1&wait=1ms"
            ));
            let client = t.client.clone();
            async move { client.get(url).send().await.unwrap().status().as_u16() }
        });
        for status in futures::future::join_all(queries).await {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(
        service::watch_channels(&t.agent),
        0,
        "every channel released"
    );

    // A blocking query cancelled with its connection releases its channel too.
    let client = t.client.clone();
    let url = t.url("/api/v1/services/cancelled/instances?index=1&wait=30s");
    let parked = tokio::spawn(async move { client.get(url).send().await });
    crate::common::eventually("the query is parked", || async {
        service::watch_channels(&t.agent) == 1
    })
    .await;
    parked.abort();
    crate::common::eventually("the cancelled query's channel is released", || async {
        service::watch_channels(&t.agent) == 0
    })
    .await;
    t.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("data");
    drop(
        signpost_server::raft::open_database(
            Some(&dir),
            None,
            signpost_server::config::DEFAULT_CACHE_SIZE,
        )
        .unwrap(),
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    assert_eq!(mode(&dir.join("signpost.redb")), 0o600, "database file");
}
