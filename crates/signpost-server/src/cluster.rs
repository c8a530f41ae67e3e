//! Clustering: this member's place in the Raft group, joining and leaving, and the requests a
//! follower hands to the leader.
//!
//! Any member accepts writes: a follower forwards the proposal to the leader over the leader's
//! Raft listener (`/raft/propose`). Linearizable reads use the leader's read index
//! (`/raft/read_index`), then wait until this node has applied that far. Heartbeats and TTL
//! updates, which only the leader's health checker can act on, are forwarded too (`/raft/ttl`,
//! see [`crate::service`]). Membership changes are openraft joint-consensus changes made by the
//! leader (`/raft/join`, `/raft/remove`).
//!
//! [`Cluster`] knows Raft and the other members, not the agent (this module does not depend on
//! [`crate::agent`]): the agent owns one, and the service layer asks it to forward.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use signpost_core::Response;

use crate::raft::transport::{Transport, TransportError};
use crate::raft::{Node, NodeId, Raft};

/// How long a write may wait for its commit. A leader cut off from its quorum never commits;
/// this bounds how long its clients wait to find out.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a write was not applied. Serialisable: it crosses `/raft/*` inside other errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// No leader can accept writes now (election under way, or this node is cut off).
    #[error("no leader can accept writes right now{}", leader.as_ref().map(|l| format!(" (last known leader: {l})")).unwrap_or_default())]
    Unavailable {
        /// The HTTP address of the last leader this node tried, for the client's message.
        leader: Option<String>,
    },
    /// The write was not confirmed in time (e.g. this leader lost its quorum). It may still be
    /// applied later, or never.
    #[error("the write was not confirmed within {0:?}; it may or may not have been applied")]
    Timeout(Duration),
    /// Raft stopped: storage failed or the agent is shutting down.
    #[error("raft is not running: {0}")]
    Fatal(String),
}

/// Wall-clock milliseconds since the Unix epoch, stamped on every proposal.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// How long one forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a write follows a leader change before giving up.
const FORWARD_ATTEMPTS: usize = 3;

// The cluster API's bodies are the wire types of `signpost-api`; re-exported so the agent's
// modules name them from here.
pub use signpost_api::{JoinRequest, Member, Members, RemoveRequest};

/// Checks that a member's Raft address is a host and a port and nothing else: no scheme, no
/// user, no path (an address like `http://evil/x?` would otherwise steer where Raft RPCs go).
pub fn validate_member_addr(addr: &str) -> Result<(), signpost_core::validate::ValidationError> {
    let bad = |why: &str| {
        Err(signpost_core::validate::ValidationError::new(
            "raft_addr",
            format!("raft_addr must be host:port ({why}), got {addr:?}"),
        ))
    };
    if addr.contains("://") {
        return bad("no scheme");
    }
    if addr.contains('@') {
        return bad("no user info");
    }
    let authority: http::uri::Authority = match addr.parse() {
        Ok(a) => a,
        Err(_) => return bad("not a host and port"),
    };
    if authority.as_str() != addr {
        return bad("not a host and port");
    }
    match authority.port_u16() {
        Some(p) if p > 0 => {}
        _ => return bad("a port from 1 to 65535 is required"),
    }
    let host = authority.host();
    if host.is_empty() {
        return bad("a host is required");
    }
    Ok(())
}

/// Why a cluster operation failed. Serialisable: a leader's answer to a forwarded request
/// carries it across `/raft/*` as this enum, so the member that forwarded it (and its HTTP
/// face) can tell the cases apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    /// No member is known to lead.
    #[error("no leader is known; try again shortly")]
    NoLeader,
    /// The leader could not be reached.
    #[error("cannot reach the leader at {addr}: {message}")]
    Unreachable {
        /// The leader's Raft address.
        addr: String,
        /// The transport's error.
        message: String,
    },
    /// The leader answered with an HTTP error.
    #[error("the leader answered {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The leader's answer could not be decoded.
    #[error("unreadable answer from the leader: {0}")]
    Unreadable(String),
    /// This node was asked as the leader but no longer leads.
    #[error("not the leader any more")]
    NotLeader,
    /// The node named is not in the membership.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// A membership change failed.
    #[error("cannot {action} node {node_id}: {message}")]
    Membership {
        /// What was attempted ("add … as a learner", "remove", ...).
        action: String,
        /// The node.
        node_id: NodeId,
        /// Raft's error.
        message: String,
    },
    /// Raft refused (a read index without a quorum, a write that failed).
    #[error("{0}")]
    Raft(String),
    /// This node did not apply the leader's read index in time.
    #[error("this node did not catch up for a consistent read: {0}")]
    Lagging(String),
}

/// This member's place in the Raft group: Raft, this node, the client for the other members.
pub struct Cluster {
    /// This node's id.
    node_id: NodeId,
    /// This node as the cluster knows it.
    node: Node,
    /// Raft itself.
    raft: Raft,
    /// What carries traffic to other members (Raft RPCs, forwarded writes and reads, joins).
    peers: Arc<dyn Transport>,
    /// How long to wait for a leader to emerge (a few election timeouts).
    patience: Duration,
    /// How long a write may wait for its commit.
    write_timeout: Duration,
    /// When this node last heard from a leader (a Raft RPC arrived), for the staleness header.
    last_contact: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Becomes true when the agent shuts down: the join loop stops.
    closing: tokio::sync::watch::Receiver<bool>,
    /// The snapshot being received over `/raft/snapshot`: its id and the bytes received so
    /// far, so that a chunk leaving a hole (which would make the in-memory buffer zero-fill up
    /// to its offset) is refused before it reaches Raft.
    intake: std::sync::Mutex<Option<(String, u64)>>,
}

impl Cluster {
    /// Wraps a started Raft node.
    pub(crate) fn new(
        node_id: NodeId,
        node: Node,
        raft: Raft,
        peers: Arc<dyn Transport>,
        patience: Duration,
        write_timeout: Duration,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Cluster {
            node_id,
            node,
            raft,
            peers,
            patience,
            write_timeout,
            last_contact: std::sync::Mutex::new(None),
            closing,
            intake: std::sync::Mutex::new(None),
        }
    }

    /// Admits a snapshot chunk of `len` bytes at `offset` of snapshot `id`: a first chunk
    /// (offset 0) starts a snapshot; a later one must belong to the snapshot being received and
    /// start at or before the bytes received so far (a resent chunk may overlap), and no
    /// snapshot may grow past [`crate::raft::network::MAX_SNAPSHOT_BYTES`].
    pub(crate) fn admit_chunk(
        &self,
        id: &str,
        offset: u64,
        len: usize,
    ) -> Result<(), crate::raft::network::ChunkError> {
        use crate::raft::network::{ChunkError, MAX_SNAPSHOT_BYTES};
        let end = offset.saturating_add(len as u64);
        if end > MAX_SNAPSHOT_BYTES {
            return Err(ChunkError::TooLarge { end });
        }
        let mut intake = self.intake.lock().unwrap_or_else(|e| e.into_inner());
        match intake.as_mut() {
            _ if offset == 0 => {
                *intake = Some((id.to_string(), end));
                Ok(())
            }
            Some((current, received)) if current == id && offset <= *received => {
                *received = (*received).max(end);
                Ok(())
            }
            Some((current, received)) if current == id => Err(ChunkError::Hole {
                offset,
                received: *received,
            }),
            _ => Err(ChunkError::NotStarted {
                id: id.to_string(),
                offset,
            }),
        }
    }

    /// Raft itself.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// This node as the cluster knows it.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// True while this node leads the Raft group.
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

    /// Whether some member is known to lead.
    pub fn knows_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }

    /// Records that the leader was just heard from.
    pub fn touched(&self) {
        *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now());
    }

    /// Milliseconds since this node last heard from the leader (0 on the leader itself).
    pub fn last_contact_ms(&self) -> Option<u64> {
        if self.is_leader() {
            return Some(0);
        }
        let at = *self.last_contact.lock().unwrap_or_else(|e| e.into_inner());
        at.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Asks the cluster (any of `join` addresses) to add this node, until it is a voter or
    /// the agent shuts down.
    pub(crate) async fn join_loop(&self, join: Vec<String>) {
        let req = JoinRequest {
            node_id: self.node_id,
            raft_addr: self.node.raft_addr.clone(),
            http_addr: self.node.http_addr.clone(),
        };
        let mut closing = self.closing.clone();
        let mut delay = Duration::from_millis(100);
        loop {
            for addr in &join {
                let sent = self
                    .peers
                    .post_json(addr, "/api/v1/cluster/join", &req, Duration::from_secs(60))
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
                _ = closing.wait_for(|c| *c) => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends `body` to `node`'s `path` and decodes its answer: every request forwarded to
    /// another member goes through here.
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
        body: &Req,
    ) -> Result<Resp, ClusterError> {
        let resp = self
            .peers
            .post_json(&node.raft_addr, path, body, FORWARD_TIMEOUT)
            .await
            .map_err(|e: TransportError| ClusterError::Unreachable {
                addr: node.raft_addr.clone(),
                message: e.to_string(),
            })?;
        if !resp.status.is_success() {
            return Err(ClusterError::Refused {
                status: resp.status.as_u16(),
            });
        }
        resp.json()
            .map_err(|e| ClusterError::Unreadable(e.to_string()))
    }

    /// Hands `body` to the leader's `path` (a `/raft/*` route) and returns its answer.
    pub(crate) async fn to_leader<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, ClusterError> {
        let leader = self.leader_node()?;
        self.post(&leader, path, body).await
    }

    /// The leader's node, or why there is none to forward to.
    fn leader_node(&self) -> Result<Node, ClusterError> {
        self.leader()
            .map(|(_, node)| node)
            .ok_or(ClusterError::NoLeader)
    }

    /// The membership as this node last applied it.
    fn membership(&self) -> openraft::Membership<NodeId, Node> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Proposes one Raft entry, following the leader (forwarding to it) across leader changes.
    pub(crate) async fn propose_entry(
        &self,
        commands: Vec<crate::raft::EncodedCommand>,
    ) -> Result<Response, ProposeError> {
        let request = crate::raft::LogRequest::from_encoded(now_ms(), commands);
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
                            // hold every write of this node (the batcher has only a few entries
                            // in flight) until the forward times out, long after a new leader
                            // took over.
                            let forwarded = tokio::select! {
                                r = self.post::<_, Result<Response, ClusterError>>(&leader, "/raft/propose", &request) => Some(r),
                                () = self.leader_changed(f.leader_id) => None,
                            };
                            match forwarded {
                                Some(Ok(Ok(resp))) => return Ok(resp),
                                Some(Ok(Err(e)) | Err(e)) => {
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
        let mut metrics = self.raft.metrics();
        // A new receiver reports openraft's current value as unseen; mark it seen, so that
        // `changed` waits for the next change rather than returning at once.
        metrics.borrow_and_update();
        let _ = tokio::time::timeout(self.patience, async {
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

    /// The leader's side of a forwarded proposal: applied here, or an error if this node no
    /// longer leads (the follower then finds the new leader).
    pub async fn accept_proposal(
        &self,
        request: crate::raft::LogRequest,
    ) -> Result<Response, ClusterError> {
        match self.raft.client_write(request).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ClusterError::NotLeader)
            }
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// Makes the next read linearizable: the leader confirms its leadership with a quorum and
    /// gives its commit index; this node waits until it has applied that far.
    pub async fn linearize(&self) -> Result<(), ClusterError> {
        let index = if self.is_leader() {
            self.read_index().await?
        } else {
            self.to_leader::<_, Result<u64, ClusterError>>("/raft/read_index", &())
                .await??
        };
        self.raft
            .wait(Some(FORWARD_TIMEOUT))
            .applied_index_at_least(Some(index), "consistent read")
            .await
            .map_err(|e| ClusterError::Lagging(e.to_string()))?;
        Ok(())
    }

    /// The leader's read index.
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|id| id.map_or(0, |l| l.index))
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Adds a member (on the leader; forwarded there otherwise): first as a learner that
    /// catches up, then as a voter, each a joint-consensus change.
    pub async fn join(&self, req: JoinRequest) -> Result<(), ClusterError> {
        if !self.is_leader() {
            return self
                .to_leader::<_, Result<(), ClusterError>>("/raft/join", &req)
                .await?;
        }
        let failed = |action: &str, e: &dyn std::fmt::Display| ClusterError::Membership {
            action: action.to_string(),
            node_id: req.node_id,
            message: e.to_string(),
        };
        let node = Node::new(&req.raft_addr, &req.http_addr);
        let membership = self.membership();
        let is_voter = membership.voter_ids().any(|id| id == req.node_id);
        if membership.get_node(&req.node_id) != Some(&node) {
            self.raft
                .add_learner(req.node_id, node.clone(), true)
                .await
                .map_err(|e| failed("add as a learner", &e))?;
            if is_voter {
                // A known voter came back with new addresses.
                self.raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(req.node_id, node)])),
                        false,
                    )
                    .await
                    .map_err(|e| failed("update", &e))?;
            }
        }
        if !is_voter {
            self.raft
                .change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
                    false,
                )
                .await
                .map_err(|e| failed("make a voter", &e))?;
        }
        tracing::info!(node_id = req.node_id, "member added");
        Ok(())
    }

    /// Removes a member (on the leader; forwarded there otherwise).
    pub async fn remove(&self, req: RemoveRequest) -> Result<(), ClusterError> {
        if !self.is_leader() {
            return self
                .to_leader::<_, Result<(), ClusterError>>("/raft/remove", &req)
                .await?;
        }
        let membership = self.membership();
        if membership.get_node(&req.node_id).is_none() {
            return Err(ClusterError::NotAMember(req.node_id));
        }
        let change = if membership.voter_ids().any(|id| id == req.node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([req.node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([req.node_id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| ClusterError::Membership {
                action: "remove".into(),
                node_id: req.node_id,
                message: e.to_string(),
            })?;
        tracing::info!(node_id = req.node_id, "member removed");
        Ok(())
    }

    /// Every member with its role and replication progress, as this node sees them.
    pub fn members(&self) -> Members {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
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
                let matched = if *id == self.node_id {
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
            .collect();
        Members {
            leader: m.current_leader,
            term: m.current_term,
            members,
        }
    }
}
