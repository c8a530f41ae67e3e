//! A cluster whose members and clients all talk mutual TLS: it elects, replicates, and
//! survives the leader being killed; plain HTTP and clients without a certificate get nowhere.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Cluster, Options, SLOW};
use crate::SERIAL;

const SERVICE: &str = "tls-web";

/// Registers instance `i-{id}` of [`SERVICE`] through node `i`; the answer's status.
async fn register(cluster: &Cluster, i: usize, id: u64) -> u16 {
    cluster
        .http_client(Duration::from_secs(10))
        .post(cluster.url(i, &format!("/api/v1/services/{SERVICE}/instances")))
        .json(&json!({"id": format!("i-{id}"), "address": "10.0.0.1", "port": 8080}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("register through node {i}: {e}"))
        .status()
        .as_u16()
}

/// Waits until every node in `nodes` holds exactly `ids`.
async fn replicated(cluster: &Cluster, nodes: &[usize], ids: &[u64]) {
    let want: BTreeSet<u64> = ids.iter().copied().collect();
    let deadline = Instant::now() + SLOW;
    for &i in nodes {
        loop {
            if cluster.local_set(i, SERVICE).await == want {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} never held {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_elects_replicates_and_survives_a_leader_kill() {
    let _serial = SERIAL.lock().await;
    // `start` returns once every node is a voter and all follow one leader: the join and
    // the election went over mutual TLS.
    let mut cluster = Cluster::start(Options {
        nodes: 3,
        snapshot_every: 10_000,
        tls: true,
    })
    .await;
    let (leader, status) = cluster.stable_leader().await;
    let follower = (leader + 1) % 3;

    // A write through a follower is forwarded to the leader and replicated to every node.
    assert_eq!(register(&cluster, follower, 1).await, 201);
    replicated(&cluster, &[0, 1, 2], &[1]).await;

    // Clients without the cluster's certificates get nowhere.
    let plain = crate::harness::client(Duration::from_secs(5))
        .get(format!(
            "http://{}/api/v1/agent/self",
            cluster.nodes[0].http
        ))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP: {plain:?}");
    let anonymous = signpost_tls::ClientTls {
        cert_file: None,
        key_file: None,
        ..cluster.tls.clone().expect("tls")
    };
    let no_cert = crate::harness::tls_client(Duration::from_secs(5), Some(&anonymous))
        .get(cluster.url(0, "/api/v1/agent/self"))
        .send()
        .await;
    assert!(no_cert.is_err(), "no client certificate: {no_cert:?}");

    // Kill the leader: the others elect a new one over TLS and keep taking writes.
    let killed = Instant::now();
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (new_leader, _, took) = cluster
        .new_leader(&survivors, status.term, killed, SLOW)
        .await;
    eprintln!("new leader over mTLS: node index {new_leader} after {took:?}");
    let other = survivors
        .iter()
        .copied()
        .find(|&i| i != new_leader)
        .expect("two survivors");
    let mut written = false;
    let deadline = Instant::now() + SLOW;
    while !written {
        written = register(&cluster, other, 2).await == 201;
        assert!(
            written || Instant::now() < deadline,
            "writes never resumed after the leader was killed"
        );
        if !written {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    replicated(&cluster, &survivors, &[1, 2]).await;
}
