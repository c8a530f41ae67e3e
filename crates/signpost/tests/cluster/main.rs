//! Fault tests of a Signpost cluster: real `signpost agent` processes on loopback, a steady load
//! of registrations and linearizable reads, and faults — the leader killed, partitioned away,
//! paused; a follower killed and brought back through a snapshot. Every test ends by checking
//! that every acknowledged registration is on every node and that the recorded history is
//! linearizable.
//!
//! Layout:
//! - [`harness`]: the node processes (kill -9, restart, SIGSTOP/SIGCONT) and status polling;
//! - [`proxy`]: the fault-injecting TCP proxy in front of each node's Raft port (partitions);
//! - [`workload`]: writers and readers recording the history;
//! - [`checker`]: the grow-only-set linearizability checker, with its argument and unit tests;
//! - [`faults`]: the scenarios.
//!
//! Short by default (CI: a few rounds each, under a minute and a half). Knobs, all optional:
//! - `SIGNPOST_FAULT_ROUNDS=N`: rounds of every scenario (the snapshot scenario, whose rounds
//!   each write some 1200 Raft entries, runs `N/5`): the long form, e.g.
//!   `SIGNPOST_FAULT_ROUNDS=50 cargo test -p signpost --test cluster -- --nocapture`;
//! - `SIGNPOST_FAULT_NODES=5`: five nodes instead of three;
//! - `SIGNPOST_FAULT_STRICT=1`: every election must take at most 2 s (see
//!   `faults::FAILOVER_TARGET` for why that is not the default);
//! - `SIGNPOST_FAULT_SEED`: replays the clients' random choices (the seed is printed);
//! - debugging: `SIGNPOST_FAULT_TRACE=1` prints every write, `SIGNPOST_FAULT_LOGS=1` prints the
//!   nodes' log tails even on success, `SIGNPOST_FAULT_KEEP=1` keeps data dirs and logs,
//!   `SIGNPOST_FAULT_RUST_LOG` sets the nodes' `RUST_LOG`.
//!
//! Figures (elections, write resumption, catch-up, operations checked) are printed to stderr:
//! run with `--nocapture` to see them. The scenarios run one at a time: several clusters at
//! once on a small machine would starve each other's elections.

mod checker;
mod faults;
mod harness;
mod proxy;
mod tls;
mod workload;

use std::time::Duration;

/// Run settings, from the environment.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `SIGNPOST_FAULT_NODES`: 3 (default) or 5.
    pub nodes: usize,
    /// `SIGNPOST_FAULT_ROUNDS`: rounds of every scenario (default: each scenario's short form).
    pub rounds: Option<usize>,
    /// `SIGNPOST_FAULT_SEED`: the clients' random seed (default: from the clock).
    pub seed: u64,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
            })
        };
        let nodes = var("SIGNPOST_FAULT_NODES").map_or(3, |n| n as usize);
        assert!(
            nodes == 3 || nodes == 5,
            "SIGNPOST_FAULT_NODES must be 3 or 5"
        );
        let seed = var("SIGNPOST_FAULT_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        Settings {
            nodes,
            rounds: var("SIGNPOST_FAULT_ROUNDS").map(|r| (r as usize).max(1)),
            seed,
        }
    }

    /// Rounds for a scenario whose short form runs `short` rounds.
    pub fn rounds(&self, short: usize) -> usize {
        self.rounds.unwrap_or(short)
    }
}

/// Held by each scenario for its whole run, so they run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `"p50 X, max Y"` of some durations, in milliseconds.
pub fn p50_max(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    format!(
        "p50 {} ms, max {} ms (n={})",
        sorted[(sorted.len() - 1) / 2].as_millis(),
        sorted[sorted.len() - 1].as_millis(),
        sorted.len()
    )
}
