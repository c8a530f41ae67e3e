//! The agent: opens storage, starts Raft and the health checker, and serves the HTTP API.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use signpost_core::{Command, Response};
use tokio::net::TcpListener;

use crate::config::AgentConfig;
use crate::health::HealthService;
use crate::raft::transport::{HttpTransport, Transport};
use crate::raft::{self, LogStore, NetworkFactory, Node, NodeId, Raft, StateMachine};
use crate::store::Store;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How many times a write follows a leader change before giving up.
const FORWARD_ATTEMPTS: usize = 3;
/// How long a write may wait for its commit. A leader cut off from its quorum never commits;
/// this bounds how long its clients wait to find out.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a write was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader can accept writes now (election under way, or this node is cut off).
    #[error("no leader can accept writes right now{}", leader.as_ref().map(|l| format!(" (last known leader: {l})")).unwrap_or_default())]
    Unavailable { leader: Option<String> },
    /// The write was not confirmed in time (e.g. this leader lost its quorum). It may still be
    /// applied later, or never.
    #[error("the write was not confirmed within {0:?}; it may or may not have been applied")]
    Timeout(Duration),
    /// Raft stopped: storage failed or the agent is shutting down.
    #[error("raft is not running: {0}")]
    Fatal(String),
}

/// A write waiting for the batcher, and where its result goes.
type Proposal = (
    Command,
    tokio::sync::oneshot::Sender<Result<Response, ProposeError>>,
);

/// Most writes grouped into one Raft entry.
const MAX_BATCH: usize = 1024;

/// Where this agent listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The HTTP API.
    pub http: SocketAddr,
    /// A dedicated Raft listener, if the agent has one (otherwise Raft RPCs use the HTTP port).
    pub raft: Option<SocketAddr>,
}

/// How to start an agent: where it listens, and what the defaults leave to tests. A
/// [`Listening`] converts into one with the defaults.
#[derive(Clone)]
pub struct StartOptions {
    /// Where the agent listens.
    pub listening: Listening,
    /// How it reaches other members; `None`: HTTP from its Raft address ([`HttpTransport`]).
    /// The in-process cluster tests give each agent its handle on a
    /// [`crate::raft::transport::mem::MemNetwork`].
    pub transport: Option<Arc<dyn Transport>>,
    /// How long a write may wait for its commit ([`WRITE_TIMEOUT`] by default); tests of a
    /// leader cut off from its quorum shorten it.
    pub write_timeout: Duration,
}

impl From<Listening> for StartOptions {
    fn from(listening: Listening) -> Self {
        StartOptions {
            listening,
            transport: None,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// A running agent. Shared by the HTTP handlers, the health checker and the binary.
pub struct Agent {
    pub config: AgentConfig,
    pub node_id: NodeId,
    /// The address clients reach this agent's HTTP API at.
    pub advertise_addr: SocketAddr,
    /// This member as the cluster knows it.
    pub node: Node,
    pub raft: Raft,
    pub store: Arc<Store>,
    pub health: Arc<HealthService>,
    /// What carries traffic to other members (Raft RPCs, forwarded writes and reads, joins).
    pub peers: Arc<dyn Transport>,
    /// How long a write may wait for its commit.
    write_timeout: Duration,
    /// Writes waiting to be grouped into one Raft entry by the batcher.
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    /// This agent's own metrics registry (not the process-global one), so several agents can
    /// share a process in tests.
    pub recorder: PrometheusRecorder,
    pub started_at: SystemTime,
    /// When this node last heard from a leader (a Raft RPC arrived), for the staleness header.
    pub last_contact: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Flips to true when shutdown begins, so long-lived requests (blocking queries, watch
    /// streams) end at once instead of holding the drain open.
    pub closing: tokio::sync::watch::Sender<bool>,
}

/// Wall-clock milliseconds since the Unix epoch, stamped on every proposal.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Agent {
    /// Starts an agent whose Raft RPCs share its HTTP port `http_addr`.
    pub async fn start(config: AgentConfig, http_addr: SocketAddr) -> anyhow::Result<Arc<Agent>> {
        Self::start_with(
            config,
            Listening {
                http: http_addr,
                raft: None,
            },
        )
        .await
    }

    /// Opens storage, starts Raft and the health checker. A fresh agent with nothing to join
    /// initialises a one-member group; with `join` addresses it asks the cluster to add it.
    pub async fn start_with(
        config: AgentConfig,
        options: impl Into<StartOptions>,
    ) -> anyhow::Result<Arc<Agent>> {
        let StartOptions {
            listening,
            transport,
            write_timeout,
        } = options.into();
        config.validate()?;
        let db = Arc::new(raft::open_database(config.data_dir.as_deref())?);
        let store = Arc::new(Store::new());
        let state_machine = StateMachine::open(store.clone(), db.clone())
            .context("cannot restore the state machine snapshot")?;
        let log_store = LogStore::new(db);

        let rc = &config.raft;
        let (election_timeout_min, election_timeout_max) = rc.election_timeouts(config.node_id);
        let raft_config = openraft::Config {
            cluster_name: "signpost".to_string(),
            heartbeat_interval: rc.heartbeat_interval.as_millis(),
            election_timeout_min,
            election_timeout_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(rc.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .context("invalid raft settings")?;

        let raft_listen = listening.raft.unwrap_or(listening.http);
        let raft_advertised = rc
            .advertise_addr
            .clone()
            .unwrap_or_else(|| raft_listen.to_string());
        let node = Node::new(raft_advertised, listening.http.to_string());
        let source = listening
            .raft
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let peers = transport.unwrap_or_else(|| Arc::new(HttpTransport::new(source)));

        let node_id = config.node_id;
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            NetworkFactory::new(peers.clone()),
            log_store,
            state_machine,
        )
        .await
        .context("cannot start raft")?;

        let fresh = !raft.is_initialized().await?;
        if fresh && config.join.is_empty() {
            raft.initialize(BTreeMap::from([(node_id, node.clone())]))
                .await
                .context("cannot initialise the raft group")?;
        } else if !fresh {
            catch_up_alone(&raft, node_id, &node, &config).await?;
        }

        let recorder = PrometheusBuilder::new().build_recorder();
        let health = HealthService::new(config.guard(), config.health.tick.to_std());
        let (proposals, queue) = tokio::sync::mpsc::channel(MAX_BATCH * 4);
        let agent = Arc::new(Agent {
            config,
            node_id,
            advertise_addr: listening.http,
            node,
            raft,
            store,
            health: health.clone(),
            peers,
            write_timeout,
            proposals,
            recorder,
            started_at: SystemTime::now(),
            last_contact: std::sync::Mutex::new(None),
            closing: tokio::sync::watch::channel(false).0,
        });
        health.spawn(Arc::downgrade(&agent));
        crate::cluster::spawn_member_upkeep(&agent, fresh);
        tokio::spawn(batcher(Arc::downgrade(&agent), queue));
        Ok(agent)
    }

    /// Proposes `command` through Raft and returns the state machine's response once applied.
    /// On a follower the command is forwarded to the leader.
    ///
    /// Concurrent proposals are grouped into one Raft entry (one fsync for the group): openraft
    /// flushes its log one entry at a time, so grouping here is what lets throughput grow with
    /// the number of writers.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.proposals
            .send((command, tx))
            .await
            .map_err(|_| ProposeError::Fatal("the agent is shutting down".into()))?;
        rx.await
            .map_err(|_| ProposeError::Fatal("the agent is shutting down".into()))?
    }

    /// Proposes one Raft entry, following the leader (forwarding to it) across leader changes.
    async fn propose_entry(&self, command: Command) -> Result<Response, ProposeError> {
        let request = signpost_core::Request::new(now_ms(), command);
        let mut last_leader = None;
        for _ in 0..FORWARD_ATTEMPTS {
            let written =
                tokio::time::timeout(self.write_timeout, self.raft.client_write(request.clone()))
                    .await
                    .map_err(|_| ProposeError::Timeout(self.write_timeout))?;
            match written {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(leader) if f.leader_id != Some(self.node_id) => {
                            last_leader = Some(leader.http_addr.clone());
                            // Give up on this leader as soon as this node learns of an election:
                            // a leader that paused or was cut off mid-request would otherwise
                            // hold every write of this node (the batcher sends one entry at a
                            // time) until the forward times out, long after a new leader took over.
                            let forwarded = tokio::select! {
                                r = crate::cluster::forward_propose(self, &leader, &request) => Some(r),
                                () = self.leader_changed(f.leader_id) => None,
                            };
                            match forwarded {
                                Some(Ok(resp)) => return Ok(resp),
                                Some(Err(e)) => {
                                    tracing::debug!("forwarding to {leader} failed: {e}")
                                }
                                None => {
                                    tracing::debug!("leader changed while forwarding to {leader}")
                                }
                            }
                        }
                        _ => {}
                    }
                    // Nobody leads, or the leader moved: wait for one, then try again.
                    self.wait_for_leader().await;
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(ProposeError::Fatal(e.to_string()))
                }
                Err(RaftError::Fatal(e)) => return Err(ProposeError::Fatal(e.to_string())),
            }
        }
        Err(ProposeError::Unavailable {
            leader: last_leader,
        })
    }

    /// Waits (bounded by a few election timeouts) until some node leads.
    pub async fn wait_for_leader(&self) {
        let patience = Duration::from_millis(self.config.raft.election_timeout_max.as_millis() * 3);
        let mut metrics = self.raft.metrics();
        // A new receiver reports openraft's current value as unseen; mark it seen, so that
        // `changed` waits for the next change rather than returning at once.
        metrics.borrow_and_update();
        let _ = tokio::time::timeout(patience, async {
            // Wait for a change first, so a stale leader id does not end the wait at once.
            let _ = metrics.changed().await;
            let _ = metrics.wait_for(|m| m.current_leader.is_some()).await;
        })
        .await;
    }

    /// Resolves when this node's view of the leader is no longer `leader`.
    async fn leader_changed(&self, leader: Option<NodeId>) {
        let mut metrics = self.raft.metrics();
        let _ = metrics.wait_for(|m| m.current_leader != leader).await;
    }

    /// Resolves when shutdown begins.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// True while this node leads the Raft group (and so runs health checks).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The current leader's node, if known.
    pub fn leader(&self) -> Option<(NodeId, Node)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Milliseconds since this node last heard from the leader (0 on the leader itself).
    pub fn last_contact_ms(&self) -> Option<u64> {
        if self.is_leader() {
            return Some(0);
        }
        let at = *self.last_contact.lock().unwrap_or_else(|e| e.into_inner());
        at.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Serves the HTTP API on `listener` until `shutdown` resolves, then drains in-flight
    /// requests (bounded by a grace period) and stops Raft.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = crate::http::router(self.clone());
        let agent = self.clone();
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            agent.closing.send_replace(true);
        });
        let mut stop = self.closing.subscribe();
        tokio::select! {
            res = server => res.context("http server failed")?,
            _ = async {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(DRAIN_GRACE).await;
            } => tracing::warn!("requests still running after {DRAIN_GRACE:?}; closing them"),
        }
        self.health.stop();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        Ok(())
    }

    /// Serves Raft RPCs (and requests forwarded by other members) on a dedicated listener until
    /// the agent starts shutting down.
    pub async fn serve_raft(self: &Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let app = crate::http::raft::router(self.clone());
        let agent = self.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { agent.closed().await })
            .await
            .context("raft listener failed")
    }
}

/// Groups waiting proposals into one Raft entry at a time: whatever queued while the previous
/// entry was being committed goes into the next.
async fn batcher(agent: std::sync::Weak<Agent>, mut queue: tokio::sync::mpsc::Receiver<Proposal>) {
    let mut batch: Vec<Proposal> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(agent) = agent.upgrade() else { return };
        let (commands, replies): (Vec<Command>, Vec<_>) = batch.drain(..).unzip();
        let command = if commands.len() == 1 {
            commands.into_iter().next().expect("one command")
        } else {
            Command::Batch(commands)
        };
        let outcome = agent.propose_entry(command).await;
        match outcome {
            Ok(Response::Batch(responses)) if responses.len() == replies.len() => {
                for (reply, response) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(response));
                }
            }
            Ok(response) if replies.len() == 1 => {
                let reply = replies.into_iter().next().expect("one reply");
                let _ = reply.send(Ok(response));
            }
            Ok(other) => {
                for reply in replies {
                    let _ = reply.send(Err(ProposeError::Fatal(format!(
                        "a batch was answered with {other:?}"
                    ))));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(match &e {
                        ProposeError::Unavailable { leader } => ProposeError::Unavailable {
                            leader: leader.clone(),
                        },
                        ProposeError::Timeout(d) => ProposeError::Timeout(*d),
                        ProposeError::Fatal(_) => ProposeError::Fatal(message.clone()),
                    }));
                }
            }
        }
    }
}

/// On restart of a one-member group: wait until this node leads and has applied everything in its
/// log (the committed index on disk may lag behind the last fsynced entry), so the agent never
/// answers reads from a state older than what it acknowledged. Also records changed addresses
/// in the membership.
async fn catch_up_alone(
    raft: &Raft,
    node_id: NodeId,
    node: &Node,
    config: &AgentConfig,
) -> anyhow::Result<()> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if voters != [node_id] {
        return Ok(());
    }
    let target = m.last_log_index.unwrap_or(0);
    let patience = Duration::from_millis(config.raft.election_timeout_max.as_millis() * 20);
    let mut rx = raft.metrics();
    tokio::time::timeout(
        patience,
        rx.wait_for(|m| {
            m.state == ServerState::Leader && m.last_applied.map_or(0, |l| l.index) >= target
        }),
    )
    .await
    .context("timed out replaying the log after restart")?
    .context("raft stopped while replaying the log")?;
    if membership.get_node(&node_id).is_some_and(|n| n != node) {
        let nodes = BTreeMap::from([(node_id, node.clone())]);
        raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
            .await
            .context("cannot record the new addresses")?;
    }
    Ok(())
}
