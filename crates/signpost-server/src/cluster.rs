//! Clustering: joining, leaving, and the requests a follower hands to the leader.
//!
//! Any member accepts writes: a follower forwards the proposal to the leader over the leader's
//! Raft listener (`/raft/propose`). Linearizable reads use the leader's read index
//! (`/raft/read_index`), then wait until this node has applied that far. Heartbeats and TTL
//! updates, which only the leader's health checker can act on, are forwarded too (`/raft/ttl`).
//! Membership changes are openraft joint-consensus changes made by the leader (`/raft/join`,
//! `/raft/remove`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use signpost_core::health::{Action, HeartbeatError};
use signpost_core::{Command, Instance, InstanceKey, Request, Response, Status};

use crate::agent::Agent;
use crate::raft::{Node, NodeId};

/// How long one forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A member asking to be added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub raft_addr: String,
    pub http_addr: String,
}

/// A request to remove a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub node_id: NodeId,
}

/// A TTL update handed to the leader: a heartbeat (`passing`) or Consul's warn/fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TtlRequest {
    pub key: InstanceKey,
    pub status: Status,
}

/// Why a TTL update failed, as the leader reports it.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum TtlError {
    #[error("instance {0} is not registered")]
    NotFound(String),
    #[error("instance {0} has no ttl check to renew")]
    NotTracked(String),
    #[error("instance {0} is checked actively by the agent; only ttl checks take heartbeats")]
    NotTtl(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A member as `signpost members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub raft_addr: String,
    pub http_addr: String,
    /// `leader`, `follower`, or `learner` (not yet voting).
    pub role: String,
    pub voter: bool,
    /// The last log index known replicated to it (from the leader's view), or its own applied
    /// index for this node.
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's log, when known.
    pub lag: Option<u64>,
}

/// Starts the background work that keeps this member in its cluster.
pub(crate) fn spawn_member_upkeep(agent: &Arc<Agent>, fresh: bool) {
    if fresh && !agent.config.join.is_empty() {
        let agent = agent.clone();
        tokio::spawn(async move { join_loop(agent).await });
    }
}

/// Asks the cluster (any of `join` addresses) to add this node, until it is a voter.
async fn join_loop(agent: Arc<Agent>) {
    let req = JoinRequest {
        node_id: agent.node_id,
        raft_addr: agent.node.raft_addr.clone(),
        http_addr: agent.node.http_addr.clone(),
    };
    let mut delay = Duration::from_millis(100);
    loop {
        for addr in &agent.config.join {
            let path = "/api/v1/cluster/join";
            let sent = agent
                .peers
                .post_json(addr, path, &req, Duration::from_secs(60))
                .await;
            match sent {
                Ok(resp) if resp.status.is_success() => {
                    tracing::info!(via = %addr, "joined the cluster");
                    return;
                }
                Ok(resp) => {
                    let status = resp.status;
                    let body = String::from_utf8_lossy(&resp.body);
                    tracing::warn!(via = %addr, %status, "join refused: {body}");
                }
                Err(e) => tracing::warn!(via = %addr, "cannot reach the cluster to join: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = agent.closed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn post<Req: Serialize, Resp: DeserializeOwned>(
    agent: &Agent,
    node: &Node,
    path: &str,
    body: &Req,
) -> Result<Resp, String> {
    let resp = agent
        .peers
        .post_json(&node.raft_addr, path, body, FORWARD_TIMEOUT)
        .await
        .map_err(|e| format!("cannot reach the leader at {}: {e}", node.raft_addr))?;
    if !resp.status.is_success() {
        return Err(format!("the leader answered {}", resp.status));
    }
    resp.json()
        .map_err(|e| format!("unreadable answer from the leader: {e}"))
}

/// The leader's node, or why there is none to forward to.
fn leader_node(agent: &Agent) -> Result<Node, String> {
    agent
        .leader()
        .map(|(_, node)| node)
        .ok_or_else(|| "no leader is known; try again shortly".to_string())
}

/// The membership as this node last applied it.
fn membership(agent: &Agent) -> openraft::Membership<NodeId, Node> {
    agent
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone()
}

/// Hands a proposal to `leader`.
pub(crate) async fn forward_propose(
    agent: &Agent,
    leader: &Node,
    request: &Request,
) -> Result<Response, String> {
    post::<_, Result<Response, String>>(agent, leader, "/raft/propose", request).await?
}

/// The leader's side of a forwarded proposal: applied here, or an error if this node no longer
/// leads (the follower then finds the new leader).
pub async fn accept_proposal(agent: &Agent, request: Request) -> Result<Response, String> {
    match agent.raft.client_write(request).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err("not the leader any more".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Makes the next read linearizable: the leader confirms its leadership with a quorum and gives
/// its commit index; this node waits until it has applied that far.
pub async fn linearize(agent: &Agent) -> Result<(), String> {
    let index = if agent.is_leader() {
        read_index(agent).await?
    } else {
        let leader = leader_node(agent)?;
        post::<_, Result<u64, String>>(agent, &leader, "/raft/read_index", &()).await??
    };
    agent
        .raft
        .wait(Some(FORWARD_TIMEOUT))
        .applied_index_at_least(Some(index), "consistent read")
        .await
        .map_err(|e| format!("this node did not catch up for a consistent read: {e}"))?;
    Ok(())
}

/// The leader's read index.
pub async fn read_index(agent: &Agent) -> Result<u64, String> {
    agent
        .raft
        .ensure_linearizable()
        .await
        .map(|id| id.map_or(0, |l| l.index))
        .map_err(|e| e.to_string())
}

/// Applies a TTL update on the leader, forwarding it there if this node does not lead.
/// Returns the instance as it stands afterwards.
pub async fn ttl_update(agent: &Agent, req: TtlRequest) -> Result<Instance, TtlError> {
    if !agent.is_leader() {
        let leader = leader_node(agent).map_err(TtlError::Unavailable)?;
        return post::<_, Result<Instance, TtlError>>(agent, &leader, "/raft/ttl", &req)
            .await
            .map_err(TtlError::Unavailable)?;
    }
    let name = req.key.to_string();
    let instance = agent
        .store
        .read()
        .registry
        .instance(&req.key.service, &req.key.id)
        .cloned()
        .ok_or_else(|| TtlError::NotFound(name.clone()))?;
    let action = agent
        .health
        .set_ttl_status(&instance, req.status)
        .map_err(|e| match e {
            HeartbeatError::NotTracked => TtlError::NotTracked(name.clone()),
            HeartbeatError::NotTtl => TtlError::NotTtl(name.clone()),
        })?;
    match action {
        Some(Action::SetStatus { key, status }) => {
            match agent.propose(Command::SetStatus { key, status }).await {
                Ok(Response::StatusSet(updated)) => Ok(updated),
                Ok(Response::NotFound) => Err(TtlError::NotFound(name)),
                Ok(_) => Ok(instance),
                Err(e) => Err(TtlError::Unavailable(e.to_string())),
            }
        }
        _ => Ok(instance),
    }
}

/// Adds a member (on the leader; forwarded there otherwise): first as a learner that catches up,
/// then as a voter, each a joint-consensus change.
pub async fn join(agent: &Agent, req: JoinRequest) -> Result<(), String> {
    if !agent.is_leader() {
        let leader = leader_node(agent)?;
        return post::<_, Result<(), String>>(agent, &leader, "/raft/join", &req).await?;
    }
    let node = Node::new(&req.raft_addr, &req.http_addr);
    let membership = membership(agent);
    let is_voter = membership.voter_ids().any(|id| id == req.node_id);
    if membership.get_node(&req.node_id) != Some(&node) {
        agent
            .raft
            .add_learner(req.node_id, node.clone(), true)
            .await
            .map_err(|e| format!("cannot add node {} as a learner: {e}", req.node_id))?;
        if is_voter {
            // A known voter came back with new addresses.
            agent
                .raft
                .change_membership(
                    ChangeMembers::SetNodes(BTreeMap::from([(req.node_id, node)])),
                    false,
                )
                .await
                .map_err(|e| format!("cannot update node {}: {e}", req.node_id))?;
        }
    }
    if !is_voter {
        agent
            .raft
            .change_membership(
                ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(|e| format!("cannot make node {} a voter: {e}", req.node_id))?;
    }
    tracing::info!(node_id = req.node_id, "member added");
    Ok(())
}

/// Removes a member (on the leader; forwarded there otherwise).
pub async fn remove(agent: &Agent, req: RemoveRequest) -> Result<(), String> {
    if !agent.is_leader() {
        let leader = leader_node(agent)?;
        return post::<_, Result<(), String>>(agent, &leader, "/raft/remove", &req).await?;
    }
    let membership = membership(agent);
    if membership.get_node(&req.node_id).is_none() {
        return Err(format!("node {} is not a member", req.node_id));
    }
    if membership.voter_ids().any(|id| id == req.node_id) {
        agent
            .raft
            .change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(|e| format!("cannot remove node {}: {e}", req.node_id))?;
    } else {
        agent
            .raft
            .change_membership(
                ChangeMembers::RemoveNodes(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(|e| format!("cannot remove node {}: {e}", req.node_id))?;
    }
    tracing::info!(node_id = req.node_id, "member removed");
    Ok(())
}

/// Every member with its role and replication progress, as this node sees them.
pub fn members(agent: &Agent) -> Vec<Member> {
    let m = agent.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    membership
        .nodes()
        .map(|(id, node)| {
            let voter = voters.contains(id);
            let role = if Some(*id) == m.current_leader {
                "leader"
            } else if voter {
                "follower"
            } else {
                "learner"
            };
            let matched = if *id == agent.node_id {
                m.last_applied.map(|l| l.index)
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index)
            };
            let lag = (m.state == ServerState::Leader)
                .then(|| matched.map(|i| last.saturating_sub(i)))
                .flatten();
            Member {
                id: *id,
                raft_addr: node.raft_addr.clone(),
                http_addr: node.http_addr.clone(),
                role: role.to_string(),
                voter,
                matched_index: matched,
                lag,
            }
        })
        .collect()
}
