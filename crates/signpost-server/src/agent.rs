//! The agent: opens storage, starts Raft and the health checker, and serves the HTTP API.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use signpost_core::{Command, Response};
use tokio::net::TcpListener;

use crate::config::AgentConfig;
use crate::health::HealthService;
use crate::raft::{self, HttpNetworkFactory, LogStore, NodeId, Raft, StateMachine};
use crate::store::Store;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Why a write was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node cannot accept writes now (no leader, or another node leads).
    #[error("no leader can accept writes right now{}", leader.as_ref().map(|l| format!(" (leader: {l})")).unwrap_or_default())]
    Unavailable { leader: Option<String> },
    /// Raft stopped: storage failed or the agent is shutting down.
    #[error("raft is not running: {0}")]
    Fatal(String),
}

/// A running agent. Shared by the HTTP handlers, the health checker and the binary.
pub struct Agent {
    pub config: AgentConfig,
    pub node_id: NodeId,
    /// The address peers and clients reach this agent's HTTP API at.
    pub advertise_addr: SocketAddr,
    pub raft: Raft,
    pub store: Arc<Store>,
    pub health: Arc<HealthService>,
    /// This agent's own metrics registry (not the process-global one), so several agents can
    /// share a process in tests.
    pub recorder: PrometheusRecorder,
    pub started_at: SystemTime,
    /// Flips to true when shutdown begins, so long-lived requests (blocking queries, watch
    /// streams) end at once instead of holding the drain open.
    pub closing: tokio::sync::watch::Sender<bool>,
}

/// On restart of a one-member group: wait until this node leads and has applied everything in its
/// log (the committed index on disk may lag behind the last fsynced entry), so the agent never
/// answers reads from a state older than what it acknowledged. Also records a changed HTTP
/// address in the membership.
async fn catch_up_alone(
    raft: &Raft,
    node_id: NodeId,
    advertise_addr: SocketAddr,
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
    let addr = advertise_addr.to_string();
    if membership
        .get_node(&node_id)
        .is_some_and(|n| n.addr != addr)
    {
        let nodes = BTreeMap::from([(node_id, BasicNode::new(addr))]);
        raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
            .await
            .context("cannot record the new http address")?;
    }
    Ok(())
}

/// Wall-clock milliseconds since the Unix epoch, stamped on every proposal.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl Agent {
    /// Opens storage, starts Raft (initialising a one-member group on first start) and the
    /// health checker. `advertise_addr` is where this agent's HTTP API listens.
    pub async fn start(
        config: AgentConfig,
        advertise_addr: SocketAddr,
    ) -> anyhow::Result<Arc<Agent>> {
        config.validate()?;
        let db = Arc::new(raft::open_database(config.data_dir.as_deref())?);
        let store = Arc::new(Store::new());
        let state_machine = StateMachine::open(store.clone(), db.clone())
            .context("cannot restore the state machine snapshot")?;
        let log_store = LogStore::new(db);

        let rc = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "signpost".to_string(),
            heartbeat_interval: rc.heartbeat_interval.as_millis(),
            election_timeout_min: rc.election_timeout_min.as_millis(),
            election_timeout_max: rc.election_timeout_max.as_millis(),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(rc.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .context("invalid raft settings")?;

        let node_id = config.node_id;
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            HttpNetworkFactory::new(),
            log_store,
            state_machine,
        )
        .await
        .context("cannot start raft")?;

        if !raft.is_initialized().await? {
            let members = BTreeMap::from([(node_id, BasicNode::new(advertise_addr.to_string()))]);
            raft.initialize(members)
                .await
                .context("cannot initialise the raft group")?;
        } else {
            catch_up_alone(&raft, node_id, advertise_addr, &config).await?;
        }

        let recorder = PrometheusBuilder::new().build_recorder();
        let health = HealthService::new(config.guard(), config.health.tick.to_std());
        let agent = Arc::new(Agent {
            config,
            node_id,
            advertise_addr,
            raft,
            store,
            health: health.clone(),
            recorder,
            started_at: SystemTime::now(),
            closing: tokio::sync::watch::channel(false).0,
        });
        health.spawn(Arc::downgrade(&agent));
        Ok(agent)
    }

    /// Proposes `command` through Raft and returns the state machine's response once applied.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        let mut waited = false;
        loop {
            let request = signpost_core::Request::new(now_ms(), command.clone());
            match self.raft.client_write(request).await {
                Ok(resp) => return Ok(resp.data),
                // During an election nobody leads: wait for one rather than fail at once.
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                    if f.leader_id.is_none() && !waited =>
                {
                    waited = true;
                    let patience = Duration::from_millis(
                        self.config.raft.election_timeout_max.as_millis() * 3,
                    );
                    let mut metrics = self.raft.metrics();
                    let _ = tokio::time::timeout(
                        patience,
                        metrics.wait_for(|m| m.current_leader.is_some()),
                    )
                    .await;
                }
                Err(e) => return Err(propose_error(e)),
            }
        }
    }
}

fn propose_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ProposeError {
    {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ProposeError::Unavailable {
                    leader: f.leader_node.map(|n| n.addr),
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ProposeError::Fatal(e.to_string())
            }
            RaftError::Fatal(e) => ProposeError::Fatal(e.to_string()),
        }
    }
}

impl Agent {
    /// Resolves when shutdown begins.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// True while this node leads the Raft group (and so runs health checks).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
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
}
