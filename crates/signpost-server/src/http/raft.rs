//! Traffic between members: Raft RPCs (the receiving side of [`crate::raft::PeerNetwork`]) and
//! the requests followers hand to the leader ([`crate::cluster`]). Served on the dedicated Raft
//! listener when there is one, and on the HTTP port otherwise.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use signpost_core::Request;

use super::AppState;
use crate::cluster::{JoinRequest, RemoveRequest};
use crate::raft::network::decode_snapshot_chunk;
use crate::raft::{NodeId, TypeConfig};
use crate::service::{self, TtlRequest};

/// Largest member-to-member request body. A snapshot chunk is up to 3 MiB of data (openraft's
/// `snapshot_max_chunk_size`, sent raw); a batch of log entries, sent as JSON, can be larger. Members are trusted: the limit only bounds memory.
/// (The API's own limit, [`super::MAX_BODY`], would refuse the snapshot a follower that fell
/// behind needs as soon as the registry holds a few thousand instances.)
pub const MAX_RAFT_BODY: usize = 64 * 1024 * 1024;

/// The member-to-member routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/propose", post(propose))
        .route("/raft/read_index", post(read_index))
        .route("/raft/ttl", post(ttl))
        .route("/raft/join", post(join))
        .route("/raft/remove", post(remove))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY))
}

/// A router serving only the member-to-member routes, for the dedicated Raft listener.
pub fn router(agent: AppState) -> Router {
    routes().with_state(agent)
}

async fn append(
    State(agent): State<AppState>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    agent.cluster().touched();
    Json(agent.raft().append_entries(req).await)
}

async fn vote(
    State(agent): State<AppState>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> impl IntoResponse {
    Json(agent.raft().vote(req).await)
}

/// One snapshot chunk, framed by [`crate::raft::network::encode_snapshot_chunk`].
async fn snapshot(State(agent): State<AppState>, body: Bytes) -> Response {
    let req = match decode_snapshot_chunk(&body) {
        Ok(req) => req,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response()
        }
    };
    agent.cluster().touched();
    Json(agent.raft().install_snapshot(req).await).into_response()
}

/// A proposal forwarded by a follower: `Result<Response, ClusterError>`.
async fn propose(State(agent): State<AppState>, Json(req): Json<Request>) -> impl IntoResponse {
    Json(agent.cluster().accept_proposal(req).await)
}

/// The leader's read index: `Result<u64, ClusterError>`.
async fn read_index(State(agent): State<AppState>) -> impl IntoResponse {
    Json(agent.cluster().read_index().await)
}

/// A renewal forwarded by a follower: `Result<Renewal, ServiceError>`.
async fn ttl(State(agent): State<AppState>, Json(req): Json<TtlRequest>) -> impl IntoResponse {
    Json(service::renew(&agent, &service::Caller::internal(), &req.key, req.status).await)
}

/// A join forwarded by a follower: `Result<(), ClusterError>`.
async fn join(State(agent): State<AppState>, Json(req): Json<JoinRequest>) -> impl IntoResponse {
    Json(agent.cluster().join(req).await)
}

/// A removal forwarded by a follower: `Result<(), ClusterError>`.
async fn remove(
    State(agent): State<AppState>,
    Json(req): Json<RemoveRequest>,
) -> impl IntoResponse {
    Json(agent.cluster().remove(req).await)
}
