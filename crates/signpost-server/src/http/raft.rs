//! Raft RPCs between agents, the receiving side of [`crate::raft::HttpNetwork`].

use axum::extract::State;
use axum::Json;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::AppState;
use crate::raft::{NodeId, TypeConfig};

pub async fn append(
    State(agent): State<AppState>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> impl axum::response::IntoResponse {
    Json(agent.raft.append_entries(req).await)
}

pub async fn vote(
    State(agent): State<AppState>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> impl axum::response::IntoResponse {
    Json(agent.raft.vote(req).await)
}

pub async fn snapshot(
    State(agent): State<AppState>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> impl axum::response::IntoResponse {
    Json(agent.raft.install_snapshot(req).await)
}
