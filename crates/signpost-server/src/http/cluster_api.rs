//! `/api/v1/cluster/*`: the members, and membership changes (done by the leader as
//! joint-consensus changes; any member accepts the request).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState, JsonBody};
use crate::cluster::{self, JoinRequest, RemoveRequest};

/// `GET /api/v1/cluster/members`
pub async fn members(State(agent): State<AppState>) -> Response {
    let m = agent.raft.metrics().borrow().clone();
    Json(json!({
        "leader": m.current_leader,
        "term": m.current_term,
        "members": cluster::members(&agent),
    }))
    .into_response()
}

/// `POST /api/v1/cluster/join` with `{"node_id", "raft_addr", "http_addr"}`
pub async fn join(
    State(agent): State<AppState>,
    JsonBody(req): JsonBody<JoinRequest>,
) -> Result<Response, ApiError> {
    if req.node_id == 0 {
        return Err(ApiError::bad_request("node_id", "node ids start at 1"));
    }
    cluster::join(&agent, req)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(members(State(agent)).await)
}

/// `POST /api/v1/cluster/remove` with `{"node_id"}`
pub async fn remove(
    State(agent): State<AppState>,
    JsonBody(req): JsonBody<RemoveRequest>,
) -> Result<Response, ApiError> {
    cluster::remove(&agent, req).await.map_err(|e| {
        if e.contains("is not a member") {
            ApiError::NotFound(e)
        } else {
            ApiError::Unavailable(e)
        }
    })?;
    Ok(members(State(agent)).await)
}

/// `POST /api/v1/cluster/leave`: removes the agent that receives it.
pub async fn leave(State(agent): State<AppState>) -> Result<Response, ApiError> {
    let req = RemoveRequest {
        node_id: agent.node_id,
    };
    cluster::remove(&agent, req)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(Json(json!({ "left": agent.node_id })).into_response())
}
