//! The cluster API under `/api/v1/cluster`.

use serde::{Deserialize, Serialize};

/// One member of the cluster, as `GET /api/v1/cluster/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft node id.
    pub id: u64,
    /// Where its Raft traffic goes.
    pub raft_addr: String,
    /// Its HTTP API.
    pub http_addr: String,
    /// `leader`, `follower`, or `learner` (not yet voting).
    pub role: String,
    /// Whether it votes.
    #[serde(default)]
    pub voter: bool,
    /// The last log index known replicated to it, when known.
    #[serde(default)]
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's log, when known.
    #[serde(default)]
    pub lag: Option<u64>,
}

/// `GET /api/v1/cluster/members`, and the answer to a join or a remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The current leader's id, if there is one.
    #[serde(default)]
    pub leader: Option<u64>,
    /// The current Raft term.
    #[serde(default)]
    pub term: u64,
    /// Every member.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// The body of `POST /api/v1/cluster/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The new node's id (from 1).
    pub node_id: u64,
    /// The new node's Raft address.
    pub raft_addr: String,
    /// The new node's HTTP address.
    pub http_addr: String,
}

/// The body of `POST /api/v1/cluster/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// The node to remove.
    pub node_id: u64,
}

/// The answer to `POST /api/v1/cluster/leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// The id of the node that left (the one that received the request).
    pub left: u64,
}
