//! What is acknowledged survives a crash: SIGKILL and restart on the same data dir.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::harness::{poll_until, Agent};

/// Registers `n` instances `i-0..i-{n-1}` spread over `services` services, `in_flight` at a
/// time; asserts each is acknowledged with 201 and returns the acknowledged instances by
/// (service, id).
async fn register_many(
    agent: &Agent,
    n: usize,
    services: usize,
    in_flight: usize,
) -> BTreeMap<(String, String), Value> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let service = format!("svc-{}", i % services);
            let body = json!({
                "id": format!("i-{i}"),
                "address": format!("10.0.{}.{}", i / 256, i % 256),
                "port": 8080 + (i % 100),
            });
            let (status, ack) = agent.register(&service, &body).await;
            assert_eq!(status, 201, "registering {service} {body} answered {ack}");
            assert_eq!(ack["id"], body["id"], "{ack}");
            assert_eq!(ack["address"], body["address"], "{ack}");
            assert_eq!(ack["port"], body["port"], "{ack}");
            assert!(ack["create_index"].as_u64().is_some_and(|i| i > 0), "{ack}");
            ((service, format!("i-{i}")), ack)
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// Every instance the agent holds, by (service, id), read through the listing API.
async fn all_instances(agent: &Agent, services: usize) -> BTreeMap<(String, String), Value> {
    let mut all = BTreeMap::new();
    for s in 0..services {
        let service = format!("svc-{s}");
        for instance in agent.instances(&service).await {
            let id = instance["id"].as_str().expect("instance id").to_string();
            assert!(
                all.insert((service.clone(), id.clone()), instance)
                    .is_none(),
                "{service}/{id} listed twice"
            );
        }
    }
    all
}

/// Asserts `after` holds exactly the instances of `expected`, each with the same id, address,
/// port and create_index (and, since nothing changed them, the same everything else).
fn assert_same_instances(
    expected: &BTreeMap<(String, String), Value>,
    after: &BTreeMap<(String, String), Value>,
) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !after.contains_key(*k))
        .collect();
    let extra: Vec<_> = after
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "after restart {} instances are missing (first: {:?}) and {} unexpected (first: {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    for (key, want) in expected {
        let got = &after[key];
        for field in ["id", "service", "address", "port", "create_index"] {
            assert_eq!(
                got[field], want[field],
                "{key:?}: {field} changed across the restart: acknowledged {want}, now {got}"
            );
        }
        assert_eq!(got, want, "{key:?} changed across the restart");
    }
}

#[tokio::test]
async fn durability_survives_sigkill() {
    const N: usize = 1_000;
    const SERVICES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let mut agent = Agent::start(dir.path(), ["--data-dir", data_arg]).await;

    let started = Instant::now();
    let acknowledged = register_many(&agent, N, SERVICES, 32).await;
    assert_eq!(acknowledged.len(), N);
    eprintln!("registered {N} instances in {:?}", started.elapsed());
    let before = all_instances(&agent, SERVICES).await;
    assert_same_instances(&acknowledged, &before);

    agent.kill9();
    let took = agent.restart().await;
    eprintln!("restart after SIGKILL with {N} instances: spawn -> ready in {took:?}");

    let after = all_instances(&agent, SERVICES).await;
    assert_same_instances(&acknowledged, &after);
    let me = agent.agent_self().await;
    assert_eq!(me["instances"]["passing"], N);
    // The restart moved to a new port: the membership records where this node now listens.
    let addr = agent.base_url().trim_start_matches("http://").to_string();
    assert_eq!(me["raft"]["members"][0]["http_addr"], addr.as_str(), "{me}");
}

#[tokio::test]
async fn restart_after_snapshot() {
    const N: usize = 450;
    const SERVICES: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("signpost.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n\n[raft]\nsnapshot_every = 100\n",
            toml_string(data.to_str().unwrap())
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let mut agent = Agent::start(dir.path(), ["--config", config_arg]).await;

    // One at a time: concurrent writes would be grouped into fewer log entries, and this test
    // needs ~500 entries for several snapshots.
    let mut acknowledged = register_many(&agent, N, SERVICES, 1).await;
    // Deregister every ninth instance: 50 of the 450.
    let gone: Vec<(String, String)> = acknowledged
        .keys()
        .filter(|(_, id)| id[2..].parse::<usize>().unwrap() % 9 == 0)
        .cloned()
        .collect();
    assert_eq!(gone.len(), 50);
    for (service, id) in &gone {
        assert_eq!(
            agent.deregister(service, id).await,
            204,
            "deregister {service}/{id}"
        );
        acknowledged.remove(&(service.clone(), id.clone()));
    }
    assert_eq!(acknowledged.len(), 400);

    // ~500 log entries with snapshot_every = 100: a snapshot must exist, and some entries
    // after it, so the restart reads both.
    let last_applied = agent.agent_self().await["raft"]["applied_index"]
        .as_u64()
        .unwrap();
    let snapshot_index = poll_until(
        Duration::from_secs(15),
        "a snapshot past index 300",
        || async {
            let s = agent.agent_self().await;
            s["raft"]["snapshot_index"].as_u64().filter(|i| *i >= 300)
        },
    )
    .await;
    eprintln!("snapshot at index {snapshot_index}, last applied {last_applied}");
    let before = all_instances(&agent, SERVICES).await;
    assert_same_instances(&acknowledged, &before);

    agent.kill9();
    let took = agent.restart().await;
    eprintln!("restart after SIGKILL from snapshot + log: spawn -> ready in {took:?}");

    let me = agent.agent_self().await;
    assert!(
        me["raft"]["snapshot_index"]
            .as_u64()
            .is_some_and(|i| i >= snapshot_index),
        "the snapshot was not kept: {me}"
    );
    let after = all_instances(&agent, SERVICES).await;
    assert_eq!(
        after.len(),
        400,
        "expected exactly 400 instances after restart"
    );
    assert_same_instances(&acknowledged, &after);
    for (service, id) in &gone {
        signpost_tls::install_default_provider();
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(agent.url(&format!("/api/v1/services/{service}/instances/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "deregistered {service}/{id} came back");
    }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}
