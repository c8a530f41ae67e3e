//! The fault scenarios. Each starts its own cluster and workload, runs its rounds (each under
//! load: a fault strikes once writes are flowing), then [`finish`]es: every acknowledged
//! registration on every node, and a linearizable history.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::checker::{self, Micros, Outcome, Read};
use crate::harness::{Cluster, Options, Run, Status, POLL, SLOW};
use crate::workload::{service_name, service_of, Workload, SERVICES};
use crate::{p50_max, Settings, SERIAL};

/// The target for electing a new leader after losing one. With openraft 0.9 and the
/// default timing a follower of a known leader waits out its leader lease (its
/// `election_timeout_max`) plus its election timeout (drawn once, from the node's own fifth of
/// 300–600 ms: see `RaftConfig::election_timeouts`) plus up to one tick (150 ms) after the last
/// heartbeat, so elections land at ~0.7–1.3 s; a vote lost to a longer log or a split vote
/// costs another round. Every run reports how many elections missed it; with
/// `SIGNPOST_FAULT_STRICT=1` each one must make it.
const FAILOVER_TARGET: Duration = Duration::from_secs(2);

/// The most any single election may take before the test fails regardless.
const FAILOVER_LIMIT: Duration = Duration::from_secs(8);

/// Writes must go through every running node again within this of the new leader's election
/// (a forward to a dead or paused leader must not hold a node's writes for its full 10 s
/// timeout).
const RESUME_LIMIT: Duration = Duration::from_secs(3);

/// `[raft] election_timeout_max` of the test clusters (the default).
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(600);

/// `[raft] snapshot_every` of the test clusters: small, so restarts and catch-ups go through
/// snapshots.
const SNAPSHOT_EVERY: u64 = 200;

/// Entries openraft keeps in the log after a snapshot (`max_in_snapshot_log_to_keep`, set in
/// `signpost-server/src/agent.rs`): a follower further behind than that needs a snapshot.
const LOG_KEPT_AFTER_SNAPSHOT: u64 = 1000;

/// Clients of the steady load.
const WRITERS: usize = 4;
const READERS: usize = 2;

/// Acknowledged writes a round waits for before striking.
const UNDER_LOAD: usize = 20;

async fn start(settings: &Settings) -> (Cluster, Workload) {
    eprintln!("settings: {settings:?}");
    let cluster = Cluster::start(Options {
        nodes: settings.nodes,
        snapshot_every: SNAPSHOT_EVERY,
        tls: false,
    })
    .await;
    let workload = Workload::start(cluster.targets.clone(), WRITERS, READERS, settings.seed);
    for node in &cluster.nodes {
        workload.acked_since(0, Some(node.http), SLOW).await;
    }
    (cluster, workload)
}

/// How long after `since` writes were acknowledged again: through any node, and through every
/// node in `nodes`.
async fn resumption(
    cluster: &Cluster,
    workload: &Workload,
    since: Micros,
    nodes: &[usize],
) -> (Duration, Duration) {
    let first = workload.acked_since(since, None, SLOW).await;
    let mut last = first;
    for &i in nodes {
        last = last.max(
            workload
                .acked_since(since, Some(cluster.nodes[i].http), SLOW)
                .await,
        );
    }
    (
        Duration::from_micros(first - since),
        Duration::from_micros(last - since),
    )
}

/// One round's failover: who led, who took over, and how long that and the writes took.
struct Failover {
    leader: usize,
    before: Status,
    new: usize,
    after: Status,
    /// From the fault until another node led.
    took: Duration,
    /// From the fault until writes were acknowledged again: through any node, and through
    /// every other node.
    first: Duration,
    all: Duration,
    struck_at: Instant,
}

/// Once writes are flowing, strikes the stable leader with `fault` (kill, pause), then waits
/// for another node to lead and for writes to resume through every other node.
async fn strike_leader(
    cluster: &mut Cluster,
    workload: &Workload,
    fault: fn(&mut Cluster, usize),
) -> Failover {
    workload.under_load(UNDER_LOAD).await;
    let (leader, before) = cluster.stable_leader().await;
    let others: Vec<usize> = cluster
        .running()
        .into_iter()
        .filter(|&i| i != leader)
        .collect();
    let struck_at = Instant::now();
    fault(cluster, leader);
    let (new, after, took) = cluster
        .new_leader(&others, before.term, struck_at, Duration::from_secs(10))
        .await;
    let since = workload.recorder.at(struck_at);
    let (first, all) = resumption(cluster, workload, since, &others).await;
    Failover {
        leader,
        before,
        new,
        after,
        took,
        first,
        all,
        struck_at,
    }
}

/// Checks election times against [`FAILOVER_LIMIT`] (and [`FAILOVER_TARGET`] when strict), and
/// that writes went through every node soon after each election.
fn assert_failovers(name: &str, elections: &[Duration], resumed_everywhere: &[Duration]) {
    let over: Vec<&Duration> = elections.iter().filter(|d| **d > FAILOVER_TARGET).collect();
    eprintln!(
        "{name}: {} of {} elections took longer than {FAILOVER_TARGET:?}: {over:?}",
        over.len(),
        elections.len()
    );
    let strict = std::env::var_os("SIGNPOST_FAULT_STRICT").is_some();
    let limit = if strict {
        FAILOVER_TARGET
    } else {
        FAILOVER_LIMIT
    };
    let worst = elections.iter().max().copied().unwrap_or_default();
    assert!(
        worst <= limit,
        "{name}: an election took {worst:?}, over {limit:?}: {elections:?}"
    );
    for (took, all) in elections.iter().zip(resumed_everywhere) {
        let lag = all.saturating_sub(*took);
        assert!(
            lag <= RESUME_LIMIT,
            "{name}: writes through some node resumed {lag:?} after the election (it took \
             {took:?}), over {RESUME_LIMIT:?}"
        );
    }
}

/// Kill -9 the leader under load: another node leads, writes resume through every node, and
/// the killed node, restarted on its data dir, catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let settings = Settings::from_env();
    let (mut cluster, workload) = start(&settings).await;
    let (mut failovers, mut firsts, mut everywhere, mut catch_ups) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=settings.rounds(3) {
        let Failover {
            leader,
            before,
            new,
            after,
            took,
            first,
            all,
            ..
        } = strike_leader(&mut cluster, &workload, Cluster::kill).await;
        cluster.restart(leader);
        let restarted = Instant::now();
        cluster.caught_up().await;
        let caught_up = restarted.elapsed();
        eprintln!(
            "kill-leader round {round}: killed node {} (term {}); node {} leads (term {}) after \
             {took:?}; writes resumed after {first:?} (through every node after {all:?}); the \
             restarted node caught up in {caught_up:?}",
            leader + 1,
            before.term,
            new + 1,
            after.term,
        );
        failovers.push(took);
        firsts.push(first);
        everywhere.push(all);
        catch_ups.push(caught_up);
    }
    eprintln!(
        "kill-leader: {} nodes, {} rounds; new leader {}; writes resumed {} (every node {}); \
         restart catch-up {}",
        settings.nodes,
        failovers.len(),
        p50_max(&failovers),
        p50_max(&firsts),
        p50_max(&everywhere),
        p50_max(&catch_ups)
    );
    assert_failovers("kill-leader", &failovers, &everywhere);
    finish("kill-leader", &cluster, workload).await;
}

/// Cut the leader (with one follower, in a 5-node cluster) off from the majority: the old
/// leader does not acknowledge writes or serve consistent reads, the majority elects a leader
/// and accepts writes, and once healed the old leader steps down and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_steps_down() {
    let _serial = SERIAL.lock().await;
    let settings = Settings::from_env();
    let (cluster, workload) = start(&settings).await;
    let rec = workload.recorder.clone();
    let (mut elections, mut everywhere, mut step_downs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=settings.rounds(2) {
        workload.under_load(UNDER_LOAD).await;
        let (leader, before) = cluster.stable_leader().await;
        let mut minority = vec![leader];
        if settings.nodes == 5 {
            minority.push((leader + 1) % 5);
        }
        let majority: Vec<usize> = (0..settings.nodes)
            .filter(|i| !minority.contains(i))
            .collect();
        let cut_at = Instant::now();
        cluster.net.partition(&minority);
        // While cut off, the old leader is asked to write and to read linearizably; both must
        // end (time out or fail) before the partition heals. Meanwhile the majority elects a
        // leader, and every majority node takes writes (asked directly: the workload's writers
        // spend much of a partition waiting on the cut-off nodes).
        let old = cluster.nodes[leader].http;
        let majority_side = async {
            let (new, after, took) = cluster
                .new_leader(&majority, before.term, cut_at, Duration::from_secs(10))
                .await;
            let direct = rec.add(cluster.nodes[new].http).await;
            assert_eq!(
                direct.outcome,
                Outcome::Ok,
                "the majority's new leader refused a write"
            );
            let writes = majority.iter().map(|&i| {
                let (rec, http) = (rec.clone(), cluster.nodes[i].http);
                async move {
                    let deadline = Instant::now() + SLOW;
                    while rec.add(http).await.outcome != Outcome::Ok {
                        assert!(
                            Instant::now() < deadline,
                            "the majority node at {http} took no write in {SLOW:?}"
                        );
                    }
                    cut_at.elapsed()
                }
            });
            let all = futures::future::join_all(writes)
                .await
                .into_iter()
                .max()
                .unwrap_or_default();
            (new, after, took, all)
        };
        let (probe, read, (new, after, took, all)) =
            tokio::join!(rec.add(old), rec.read(old, 0), majority_side);
        assert_ne!(
            probe.outcome,
            Outcome::Ok,
            "the partitioned old leader acknowledged a write"
        );
        assert!(
            read.is_none(),
            "the partitioned old leader answered a consistent read: {read:?}"
        );
        let healed_at = Instant::now();
        cluster.net.heal();
        let old_id = leader as u64 + 1;
        let (stepped, stepped_after) = cluster
            .poll(SLOW, "the old leader to step down", |s| {
                s[leader]
                    .as_ref()
                    .filter(|st| {
                        st.role == "follower"
                            && st.term >= after.term
                            && st.leader.is_some_and(|l| l != old_id)
                    })
                    .map(|st| (st.clone(), healed_at.elapsed()))
            })
            .await;
        cluster.caught_up().await;
        eprintln!(
            "partition round {round}: cut {:?} off (leader node {}, term {}); node {} leads \
             (term {}) after {took:?}, and writes went through all its nodes after {all:?}; the \
             old leader's write ended {:?} and its consistent read failed; healed, it stepped down to follower of node {} (term {}) after \
             {stepped_after:?}",
            minority.iter().map(|i| i + 1).collect::<Vec<_>>(),
            leader + 1,
            before.term,
            new + 1,
            after.term,
            probe.outcome,
            stepped.leader.unwrap_or_default(),
            stepped.term,
        );
        elections.push(took);
        everywhere.push(all);
        step_downs.push(stepped_after);
    }
    eprintln!(
        "partition: {} nodes, {} rounds; majority elected in {}; writes through all its nodes \
         {}; old leader stepped down {} after healing",
        settings.nodes,
        elections.len(),
        p50_max(&elections),
        p50_max(&everywhere),
        p50_max(&step_downs)
    );
    assert_failovers("partition", &elections, &everywhere);
    finish("partition", &cluster, workload).await;
}

/// Kill a follower, write until the leader has purged the log the follower would need, restart
/// it: it installs a snapshot and then holds every acknowledged registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_through_a_snapshot() {
    let _serial = SERIAL.lock().await;
    let settings = Settings::from_env();
    let (mut cluster, workload) = start(&settings).await;
    // Each round writes some 1200 Raft entries (half a minute on a busy debug build), so the
    // long form runs a fifth of the rounds here.
    let rounds = settings.rounds.map_or(1, |r| r.div_ceil(5));
    let mut ballast = Vec::new();
    for round in 1..=rounds {
        workload.under_load(UNDER_LOAD).await;
        let (leader, _) = cluster.stable_leader().await;
        let follower = (leader + 1) % settings.nodes;
        let behind = cluster
            .status(follower)
            .await
            .expect("the follower answers")
            .last_log;
        cluster.kill(follower);
        // Instances with bulky metadata, registered while the follower is down (in the first
        // round; later rounds keep them), make the snapshot it needs several MiB: more than one
        // chunk, and far more than the API's body limit.
        if round == 1 {
            ballast = register_ballast(&cluster).await;
        }
        // A node purges its log up to `snapshot - LOG_KEPT_AFTER_SNAPSHOT` once no replication
        // is using those entries (the leader retries the dead follower every 500 ms, so the
        // purge trails the snapshot). Once the purge passes the follower's last entry on every
        // node, whichever leads when it returns can only send it a snapshot. Waiting for one
        // more snapshot lets the purge after the first one happen.
        let target = behind + LOG_KEPT_AFTER_SNAPSHOT + 1 + SNAPSHOT_EVERY;
        let writing = Instant::now();
        let running = cluster.running();
        cluster
            .poll_every(
                Duration::from_millis(200),
                Duration::from_secs(120),
                &format!("every running node to snapshot past index {target}"),
                |s| {
                    running
                        .iter()
                        .all(|&i| {
                            s[i].as_ref()
                                .is_some_and(|st| st.snapshot.is_some_and(|i| i >= target))
                        })
                        .then_some(())
                },
            )
            .await;
        let (now_leading, at_leader) = cluster.stable_leader().await;
        let wrote_for = writing.elapsed();
        let acked: Vec<u64> = workload.recorder.acknowledged();
        cluster.restart(follower);
        let restarted = Instant::now();
        for s in 0..SERVICES {
            let want: BTreeSet<u64> = acked
                .iter()
                .copied()
                .filter(|id| service_of(*id) == s)
                .collect();
            let deadline = Instant::now() + SLOW;
            loop {
                cluster.nodes[follower].assert_alive();
                if let Some(have) = local_set_if_up(&cluster, follower, &service_name(s)).await {
                    if have.is_superset(&want) {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "the restarted follower lacks acknowledged ids of {} after {SLOW:?}",
                    service_name(s)
                );
                tokio::time::sleep(POLL).await;
            }
        }
        let caught_up = restarted.elapsed();
        let have = local_set_if_up(&cluster, follower, BALLAST_SERVICE)
            .await
            .unwrap_or_default();
        assert!(
            ballast.iter().all(|id| have.contains(id)),
            "the restarted follower holds {} of the {} bulky instances registered while it was \
             down",
            ballast.iter().filter(|id| have.contains(id)).count(),
            ballast.len()
        );
        let log = cluster.nodes[follower].log();
        assert!(
            log.contains("install_full_snapshot"),
            "the restarted follower caught up without installing a snapshot:\n{log}"
        );
        cluster.caught_up().await;
        eprintln!(
            "follower-snapshot round {round}: killed follower node {} at log index {behind}; \
             wrote for {wrote_for:?} until every node's snapshot passed {target} (leader node {}: \
             snapshot {}, log {}); restarted, it installed a snapshot and held all {} \
             acknowledged ids and {} bulky ones ({} KiB of metadata) after {caught_up:?}",
            follower + 1,
            now_leading + 1,
            at_leader.snapshot.unwrap_or(0),
            at_leader.last_log,
            acked.len(),
            ballast.len(),
            ballast.len() * BALLAST_METADATA / 1024,
        );
    }
    finish("follower-snapshot", &cluster, workload).await;
}

/// SIGSTOP the leader for longer than the election timeout: the others elect a leader
/// meanwhile and writes resume through them; after SIGCONT the paused node steps down and
/// catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_steps_down() {
    let _serial = SERIAL.lock().await;
    let settings = Settings::from_env();
    let (mut cluster, workload) = start(&settings).await;
    let (mut elections, mut firsts, mut everywhere, mut step_downs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=settings.rounds(2) {
        let Failover {
            leader,
            before,
            new,
            after,
            took,
            first,
            all,
            struck_at: paused_at,
        } = strike_leader(&mut cluster, &workload, Cluster::pause).await;
        // Paused for longer than the election timeout, whatever the election took.
        if let Some(rest) = ELECTION_TIMEOUT_MAX.checked_sub(paused_at.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let paused_for = paused_at.elapsed();
        let continued_at = Instant::now();
        cluster.resume(leader);
        let old_id = leader as u64 + 1;
        let (stepped, stepped_after) = cluster
            .poll(SLOW, "the resumed old leader to step down", |s| {
                s[leader]
                    .as_ref()
                    .filter(|st| {
                        st.role == "follower"
                            && st.term >= after.term
                            && st.leader.is_some_and(|l| l != old_id)
                    })
                    .map(|st: &Status| (st.clone(), continued_at.elapsed()))
            })
            .await;
        cluster.caught_up().await;
        eprintln!(
            "pause-leader round {round}: paused node {} (term {}) for {paused_for:?}; node {} \
             leads (term {}) after {took:?}; writes resumed after {first:?} (through every \
             node after {all:?}); resumed, it stepped down to follower (term {}) after \
             {stepped_after:?}",
            leader + 1,
            before.term,
            new + 1,
            after.term,
            stepped.term,
        );
        elections.push(took);
        firsts.push(first);
        everywhere.push(all);
        step_downs.push(stepped_after);
    }
    eprintln!(
        "pause-leader: {} nodes, {} rounds; new leader {}; writes resumed {} (every node {}); \
         paused leader stepped down {} after SIGCONT",
        settings.nodes,
        elections.len(),
        p50_max(&elections),
        p50_max(&firsts),
        p50_max(&everywhere),
        p50_max(&step_downs)
    );
    assert_failovers("pause-leader", &elections, &everywhere);
    finish("pause-leader", &cluster, workload).await;
}

/// The service of the bulky instances (outside the checked workload).
const BALLAST_SERVICE: &str = "ballast";
/// How many bulky instances the snapshot scenario registers.
const BALLAST: usize = 1000;
/// Metadata bytes of each (8 values of 500 bytes: the validation limit is 512 per value).
const BALLAST_METADATA: usize = 8 * 500;

/// Registers [`BALLAST`] instances with [`BALLAST_METADATA`] bytes of metadata each, 16 at a
/// time, through the running nodes; returns their ids (numbered far from the workload's).
async fn register_ballast(cluster: &Cluster) -> Vec<u64> {
    use futures::StreamExt as _;
    let client = crate::harness::client(Duration::from_secs(10));
    let running = cluster.running();
    let metadata: serde_json::Map<String, serde_json::Value> = (0..8)
        .map(|k| (format!("k{k}"), "x".repeat(500).into()))
        .collect();
    let ids: Vec<u64> = (0..BALLAST as u64).map(|i| 1_000_000_000 + i).collect();
    futures::stream::iter(ids.iter().enumerate())
        .for_each_concurrent(16, |(n, id)| {
            let url = format!(
                "http://{}/api/v1/services/{BALLAST_SERVICE}/instances",
                cluster.nodes[running[n % running.len()]].http
            );
            let body = serde_json::json!({
                "id": format!("i-{id}"),
                "address": "10.200.0.1",
                "port": 9000,
                "metadata": metadata,
            });
            let client = &client;
            async move {
                for attempt in 1.. {
                    match client.post(&url).json(&body).send().await {
                        Ok(resp) if resp.status().is_success() => return,
                        other if attempt < 5 => {
                            eprintln!("bulky registration {id}: {other:?}; retrying");
                        }
                        other => panic!("bulky registration {id} failed: {other:?}"),
                    }
                }
            }
        })
        .await;
    ids
}

/// Node `i`'s local set of `service`, or `None` while it does not answer.
async fn local_set_if_up(cluster: &Cluster, i: usize, service: &str) -> Option<BTreeSet<u64>> {
    let url = format!(
        "http://{}/api/v1/services/{service}/instances?status=any",
        cluster.nodes[i].http
    );
    let resp = crate::harness::client(Duration::from_secs(5))
        .get(url)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    crate::workload::ids_of(&resp.json().await.ok()?)
}

/// The end of every scenario: stop the clients, wait until every node holds the same set of
/// instances including every acknowledged one (local reads), record that final state as one
/// more read, and check the history of every service.
async fn finish(name: &str, cluster: &Cluster, workload: Workload) {
    let rec = workload.stop().await;
    assert!(
        cluster.nodes.iter().all(|n| n.run == Run::Running),
        "{name}: every node runs again at the end"
    );
    let acked: BTreeSet<u64> = rec.acknowledged().into_iter().collect();
    let started = Instant::now();
    let deadline = started + SLOW;
    let (finals, invoke, complete) = loop {
        cluster.caught_up().await;
        let invoke = rec.now();
        let mut per_node = Vec::new();
        for i in 0..cluster.nodes.len() {
            let mut sets = Vec::new();
            for s in 0..SERVICES {
                sets.push(cluster.local_set(i, &service_name(s)).await);
            }
            per_node.push(sets);
        }
        let complete = rec.now();
        let all: BTreeSet<u64> = per_node[0].iter().flatten().copied().collect();
        let missing: Vec<(u64, Vec<u64>)> = per_node
            .iter()
            .enumerate()
            .map(|(i, sets)| {
                let have: BTreeSet<u64> = sets.iter().flatten().copied().collect();
                (i as u64 + 1, acked.difference(&have).copied().collect())
            })
            .filter(|(_, m): &(u64, Vec<u64>)| !m.is_empty())
            .collect();
        let same = per_node.iter().all(|sets| *sets == per_node[0]);
        if same && missing.is_empty() {
            break (per_node.swap_remove(0), invoke, complete);
        }
        assert!(
            Instant::now() < deadline,
            "{name}: after {SLOW:?} the nodes still differ (same: {same}; {} ids on node 1); \
             acknowledged ids missing by node: {missing:?}",
            all.len()
        );
        tokio::time::sleep(POLL).await;
    };
    for (s, set) in finals.into_iter().enumerate() {
        rec.record_read(
            s,
            Read {
                invoke,
                complete,
                set,
            },
        );
    }
    let mut total = checker::Checked::default();
    for (s, history) in rec.histories().iter().enumerate() {
        match checker::check(history) {
            Ok(c) => {
                total.adds += c.adds;
                total.acknowledged += c.acknowledged;
                total.failed += c.failed;
                total.unknown_seen += c.unknown_seen;
                total.reads += c.reads;
            }
            Err(v) => panic!(
                "{name}: the history of {} is not linearizable: {v}\n{}",
                service_name(s),
                describe(history, &v)
            ),
        }
    }
    let failed_reads = rec.reads_failed.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{name}: converged in {:?}; every node holds all {} acknowledged ids; history \
         linearizable: {} operations checked ({} adds: {} acknowledged, {} certainly failed, {} \
         of unknown outcome ({} of them seen applied); {} consistent reads + {SERVICES} final \
         reads; {} reads failed, unchecked)",
        started.elapsed(),
        acked.len(),
        total.adds + total.reads,
        total.adds,
        total.acknowledged,
        total.failed,
        total.adds - total.acknowledged - total.failed,
        total.unknown_seen,
        total.reads - SERVICES,
        failed_reads,
    );
}

/// The operations a violation names, for the failure message.
fn describe(history: &checker::History, v: &checker::Violation) -> String {
    use checker::Violation as V;
    let (ids, reads): (Vec<u64>, Vec<usize>) = match v {
        V::NeverAdded { id, read }
        | V::FailedAddSeen { id, read }
        | V::LostAdd { id, read }
        | V::ReadFromFuture { id, read } => (vec![*id], vec![*read]),
        V::Incomparable { a, b, .. } => (vec![], vec![*a, *b]),
        V::StaleRead { earlier, later, .. } => (vec![], vec![*earlier, *later]),
        V::AddOrder {
            first,
            second,
            read,
        } => (vec![*first, *second], vec![*read]),
        V::Malformed(_) => (vec![], vec![]),
    };
    let mut out = String::new();
    for id in ids {
        if let Some(a) = history.adds.iter().find(|a| a.id == id) {
            out.push_str(&format!("  {a:?}\n"));
        }
    }
    for r in reads {
        let read = &history.reads[r];
        out.push_str(&format!(
            "  read #{r}: [{}, {}] µs, {} ids\n",
            read.invoke,
            read.complete,
            read.set.len()
        ));
    }
    out
}
