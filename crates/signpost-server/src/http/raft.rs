//! Traffic between members: Raft RPCs (the receiving side of [`crate::raft::PeerNetwork`]) and
//! the requests followers hand to the leader ([`crate::cluster`]). Served on the dedicated Raft
//! listener when there is one, and on the HTTP port otherwise.
//!
//! With `[cluster] secret` set, every call must carry it in [`SECRET_HEADER`] (compared in
//! constant time); with `[tls]` on, it must come over a connection with a client certificate
//! the listener verified against the CA. A call that does not is answered 401 and does nothing.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use signpost_core::Request;

use super::{ApiError, AppState};
use crate::cluster::{JoinRequest, RemoveRequest};
use crate::raft::network::decode_snapshot_chunk;
use crate::raft::{NodeId, TypeConfig};
use crate::service::{self, TtlRequest};

/// Largest member-to-member request body. A snapshot chunk is up to 3 MiB of data (openraft's
/// `snapshot_max_chunk_size`, sent raw); a batch of log entries, sent as JSON, can be larger. Members are trusted: the limit only bounds memory.
/// (The API's own limit, [`super::MAX_BODY`], would refuse the snapshot a follower that fell
/// behind needs as soon as the registry holds a few thousand instances.)
pub const MAX_RAFT_BODY: usize = 64 * 1024 * 1024;

/// The header a member call carries the cluster secret in.
pub const SECRET_HEADER: &str = "x-signpost-cluster-secret";

/// The member-to-member routes, behind [`member_auth`].
pub fn routes(agent: &AppState) -> Router<AppState> {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/propose", post(propose))
        .route("/raft/read_index", post(read_index))
        .route("/raft/ttl", post(ttl))
        .route("/raft/ttl_batch", post(ttl_batch))
        .route("/raft/join", post(join))
        .route("/raft/remove", post(remove))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY))
        .route_layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            member_auth,
        ))
}

/// A router serving only the member-to-member routes, for the dedicated Raft listener.
pub fn router(agent: AppState) -> Router {
    routes(&agent)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(agent)
}

/// Lets a call through only if it carries the cluster secret (when one is configured).
async fn member_auth(
    State(agent): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if agent.config().tls.enabled()
        && req
            .extensions()
            .get::<crate::listener::ClientCertified>()
            .is_none()
    {
        tracing::warn!(path = %req.uri().path(), "refused a member call without a client certificate");
        return ApiError::Unauthorized(
            "member calls need a client certificate signed by the cluster's CA".into(),
        )
        .into_response();
    }
    if let Some(secret) = &agent.config().cluster.secret {
        let presented = req
            .headers()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !secret_matches(secret.as_bytes(), presented) {
            let why = if presented.is_empty() {
                format!("member calls must carry the cluster secret in {SECRET_HEADER}")
            } else {
                "the cluster secret presented is wrong".to_string()
            };
            tracing::warn!(path = %req.uri().path(), "refused a member call: {why}");
            return ApiError::Unauthorized(why).into_response();
        }
    }
    next.run(req).await
}

/// Compares in constant time (for equal lengths; a length mismatch is refused at once, which
/// tells only the length).
fn secret_matches(expected: &[u8], presented: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    expected.ct_eq(presented).into()
}

/// The largest term or log index a member call may carry (2^62). Real clusters stay far below
/// it (a term grows by one per election, an index by one per entry); a value near `u64::MAX`
/// would overflow openraft's `term + 1` and wedge (or, in a debug build, panic) the node's
/// Raft core for good.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// Refuses a member call's vote and log ids that no member sends: a vote naming this node
/// (`me`: a member never calls itself, and openraft's core, asserting it, would act as leader
/// and follower at once), a term or index past [`MAX_TERM_OR_INDEX`], or (with `leader`) a vote
/// not committed, which a leader's `append`/`snapshot` call always is (openraft asserts it).
fn check_raft_ids<'a>(
    me: NodeId,
    vote: &openraft::Vote<NodeId>,
    leader: bool,
    log_ids: impl IntoIterator<Item = Option<&'a openraft::LogId<NodeId>>>,
) -> Result<(), ApiError> {
    if vote.leader_id().voted_for() == Some(me) {
        return Err(ApiError::bad_request(
            "vote",
            "a call from this node itself",
        ));
    }
    if vote.leader_id().term > MAX_TERM_OR_INDEX {
        return Err(ApiError::bad_request(
            "vote",
            format!("a term past {MAX_TERM_OR_INDEX}"),
        ));
    }
    if leader && !vote.is_committed() {
        return Err(ApiError::bad_request(
            "vote",
            "a leader's call carries its committed vote",
        ));
    }
    for id in log_ids.into_iter().flatten() {
        if id.leader_id.term > MAX_TERM_OR_INDEX || id.index > MAX_TERM_OR_INDEX {
            return Err(ApiError::bad_request(
                "log_id",
                format!("a term or index past {MAX_TERM_OR_INDEX}"),
            ));
        }
    }
    Ok(())
}

/// Refuses entries a leader never sends (openraft asserts this shape and does not check it in a
/// release build): they must follow `prev_log_id` with consecutive indexes, their log ids must
/// not go backwards, and none may come from a term after the sender's vote.
fn check_entries(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), ApiError> {
    let mut last = req.prev_log_id;
    for entry in &req.entries {
        let id = entry.log_id;
        let next = last.map_or(0, |l| l.index + 1);
        if id.index != next || Some(id) < last || id.leader_id.term > req.vote.leader_id().term {
            return Err(ApiError::bad_request(
                "entries",
                format!(
                    "entry {id} does not follow {} in the sender's term",
                    last.map_or("the start".to_string(), |l| l.to_string())
                ),
            ));
        }
        last = Some(id);
    }
    Ok(())
}

async fn append(
    State(agent): State<AppState>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    let ids = [req.prev_log_id.as_ref(), req.leader_commit.as_ref()]
        .into_iter()
        .chain(req.entries.iter().map(|e| Some(&e.log_id)));
    if let Err(e) =
        check_raft_ids(agent.node_id(), &req.vote, true, ids).and_then(|()| check_entries(&req))
    {
        return e.into_response();
    }
    agent.cluster().touched();
    Json(agent.raft().append_entries(req).await).into_response()
}

async fn vote(State(agent): State<AppState>, Json(req): Json<VoteRequest<NodeId>>) -> Response {
    if let Err(e) = check_raft_ids(
        agent.node_id(),
        &req.vote,
        false,
        [req.last_log_id.as_ref()],
    ) {
        return e.into_response();
    }
    Json(agent.raft().vote(req).await).into_response()
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
    if let Err(e) = check_raft_ids(
        agent.node_id(),
        &req.vote,
        true,
        [req.meta.last_log_id.as_ref()],
    ) {
        return e.into_response();
    }
    if let Err(e) = agent
        .cluster()
        .admit_chunk(&req.meta.snapshot_id, req.offset, req.data.len())
    {
        tracing::warn!("refused a snapshot chunk: {e}");
        return ApiError::bad_request("offset", e.to_string()).into_response();
    }
    agent.cluster().touched();
    Json(agent.raft().install_snapshot(req).await).into_response()
}

/// How far a forwarded proposal's time may be from the leader's clock.
pub const MAX_PROPOSAL_SKEW_MS: u64 = 60 * 60 * 1000;

/// A proposal forwarded by a follower: `Result<Response, ClusterError>`. The command passes
/// the same validation as at the faces, its size the same `limits.max_entry_bytes`, and its
/// time must be within [`MAX_PROPOSAL_SKEW_MS`] of the leader's clock; otherwise 400 (or 413)
/// naming the field, and nothing is proposed. (The state machine validates again.)
async fn propose(State(agent): State<AppState>, body: Bytes) -> Response {
    let max = agent.config().limits.max_entry_bytes;
    if body.len() > max.saturating_add(64) {
        return ApiError::EntryTooLarge { limit: max }.into_response();
    }
    let req: Request = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return ApiError::bad_request("body", e.to_string()).into_response(),
    };
    let now = crate::cluster::now_ms();
    if req.now_ms.abs_diff(now) > MAX_PROPOSAL_SKEW_MS {
        return ApiError::bad_request(
            "now_ms",
            format!(
                "the proposal's time {} ms is more than an hour from the leader's {now} ms",
                req.now_ms
            ),
        )
        .into_response();
    }
    if let Err(e) = signpost_core::validate::command(&req.command) {
        return ApiError::Invalid(e).into_response();
    }
    // Encoded here, in the request's task, once: the log store writes these bytes as they are.
    let req = match crate::raft::LogRequest::new(req) {
        Ok(req) => req,
        Err(e) => return ApiError::bad_request("body", e.to_string()).into_response(),
    };
    Json(agent.cluster().accept_proposal(req).await).into_response()
}

/// The leader's read index: `Result<u64, ClusterError>`.
async fn read_index(State(agent): State<AppState>) -> impl IntoResponse {
    Json(agent.cluster().read_index().await)
}

/// A renewal forwarded by a follower: `Result<Renewal, ServiceError>`.
async fn ttl(State(agent): State<AppState>, Json(req): Json<TtlRequest>) -> impl IntoResponse {
    Json(service::renew(&agent, &service::Caller::internal(), &req.key, req.status).await)
}

/// A heartbeat batch forwarded by a follower, as one call: `Vec<Result<Renewal, ServiceError>>`,
/// one per key, in order.
async fn ttl_batch(
    State(agent): State<AppState>,
    Json(req): Json<service::TtlBatchRequest>,
) -> impl IntoResponse {
    let caller = service::Caller::internal();
    Json(service::renew_many(&agent, &caller, req.keys, req.status).await)
}

/// A join forwarded by a follower: `Result<(), ClusterError>`; 400 if the new member's Raft
/// address is not a host and port.
async fn join(State(agent): State<AppState>, Json(req): Json<JoinRequest>) -> Response {
    if let Err(e) = crate::cluster::validate_member_addr(&req.raft_addr) {
        return ApiError::from(e).into_response();
    }
    Json(agent.cluster().join(req).await).into_response()
}

/// A removal forwarded by a follower: `Result<(), ClusterError>`.
async fn remove(
    State(agent): State<AppState>,
    Json(req): Json<RemoveRequest>,
) -> impl IntoResponse {
    Json(agent.cluster().remove(req).await)
}
