//! `/api/v1/cluster/*`: the members, and membership changes (done by the leader as
//! joint-consensus changes; any member accepts the request).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use signpost_api::Left;

use super::{ApiError, AppState, JsonBody};
use crate::cluster::{JoinRequest, RemoveRequest};
use crate::service::{self, Caller};

/// `GET /api/v1/cluster/members`
pub async fn members(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    Ok(Json(service::members(&agent, &caller)?).into_response())
}

/// `POST /api/v1/cluster/join` with `{"node_id", "raft_addr", "http_addr"}`
pub async fn join(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<JoinRequest>,
) -> Result<Response, ApiError> {
    service::join(&agent, &caller, req).await?;
    Ok(Json(service::members(&agent, &Caller::internal())?).into_response())
}

/// `POST /api/v1/cluster/remove` with `{"node_id"}`: 404 if it is not a member.
pub async fn remove(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<RemoveRequest>,
) -> Result<Response, ApiError> {
    service::remove(&agent, &caller, req).await?;
    Ok(Json(service::members(&agent, &Caller::internal())?).into_response())
}

/// `POST /api/v1/cluster/leave`: removes the agent that receives it.
pub async fn leave(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let req = RemoveRequest {
        node_id: agent.node_id(),
    };
    service::remove(&agent, &caller, req)
        .await
        .map_err(|e| match e {
            e @ service::ServiceError::PermissionDenied { .. } => ApiError::from(e),
            e => ApiError::Unavailable(e.to_string()),
        })?;
    Ok(Json(Left {
        left: agent.node_id(),
    })
    .into_response())
}
