//! The native registry API: instances and service definitions.

use futures::StreamExt;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use signpost_api::{BatchRenewed, InstanceList, Rejected, Renewed};
use signpost_core::health::{Action, HeartbeatError};
use signpost_core::model::Dur;
use signpost_core::validate::{self, DefinitionInput, Registration};
use signpost_core::{Command, Instance, InstanceKey, Status};

use super::{ApiError, AppState, JsonBody, INDEX_HEADER};
use crate::cluster::{self, TtlError, TtlRequest};

/// Longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// How long a blocking query waits when it names no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// Which statuses a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Any,
    Only(Status),
}

impl StatusFilter {
    pub fn matches(self, status: Status) -> bool {
        match self {
            StatusFilter::Any => true,
            StatusFilter::Only(s) => s == status,
        }
    }
}

/// The query string of listings and watches: `status`, repeated `tag`, `index`, `wait`.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub status: StatusFilter,
    pub tags: Vec<String>,
    pub index: Option<u64>,
    pub wait: Duration,
    /// Read through the leader's read index (linearizable) instead of this node's state.
    pub consistent: bool,
}

impl ListQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request("query", format!("malformed query string: {e}")))?;
        let mut q = ListQuery {
            status: StatusFilter::Only(Status::Passing),
            tags: Vec::new(),
            index: None,
            wait: DEFAULT_WAIT,
            consistent: false,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "status" => {
                    q.status = if value.eq_ignore_ascii_case("any") {
                        StatusFilter::Any
                    } else {
                        StatusFilter::Only(value.parse().map_err(|_| {
                            ApiError::bad_request(
                                "status",
                                format!("unknown status {value:?}: expected any, passing, warning or critical"),
                            )
                        })?)
                    }
                }
                "tag" => q.tags.push(value),
                "consistent" => q.consistent = value.is_empty() || value == "true",
                "index" => {
                    q.index = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "index",
                            format!("index must be a non-negative integer, got {value:?}"),
                        )
                    })?)
                }
                "wait" => {
                    let d: Dur = value
                        .parse()
                        .map_err(|e: String| ApiError::bad_request("wait", e))?;
                    q.wait = d.to_std().min(MAX_WAIT);
                }
                // Unknown parameters are ignored, as Consul does.
                _ => {}
            }
        }
        Ok(q)
    }

    pub fn matches(&self, instance: &Instance) -> bool {
        self.status.matches(instance.status) && instance.has_tags(&self.tags)
    }
}

fn with_index(index: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index.max(1)));
    response
}

fn not_registered(service: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("instance {service}/{id} is not registered"))
}

/// `GET /api/v1/services`
pub async fn list_services(State(agent): State<AppState>) -> Response {
    let state = agent.store.read();
    with_index(state.registry.last_index(), Json(state.registry.services()))
}

/// `POST /api/v1/services/{service}/instances`
pub async fn register(
    State(agent): State<AppState>,
    Path(service): Path<String>,
    JsonBody(body): JsonBody<Registration>,
) -> Result<Response, ApiError> {
    let new = validate::registration(&service, body)?;
    match agent.propose(Command::Register(new)).await? {
        signpost_core::Response::Registered { instance, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_index(instance.modify_index, (status, Json(instance))))
        }
        other => Err(ApiError::Internal(format!("register answered {other:?}"))),
    }
}

/// `GET /api/v1/services/{service}/instances`, optionally blocking.
pub async fn list_instances(
    State(agent): State<AppState>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let q = ListQuery::parse(raw.as_deref())?;
    if q.consistent {
        cluster::linearize(&agent)
            .await
            .map_err(ApiError::Unavailable)?;
    }
    if let Some(index) = q.index.filter(|i| *i > 0) {
        tokio::select! {
            _ = agent.store.wait_for_service(&service, index, q.wait) => {}
            _ = agent.closed() => {}
        }
    }
    let state = agent.store.read();
    let index = state.registry.service_index(&service).max(1);
    let render = || {
        let instances: Vec<&Instance> = state
            .registry
            .instances(&service)
            .filter(|i| q.matches(i))
            .collect();
        let list = InstanceList { index, instances };
        bytes::Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
    };
    // Tag-filtered reads are rendered every time; the plain ones are cached per index.
    let body = match (q.tags.is_empty(), q.status) {
        (true, StatusFilter::Any) => agent.store.rendered(&service, 0, index, render),
        (true, StatusFilter::Only(s)) => agent.store.rendered(&service, 1 + s as u8, index, render),
        (false, _) => render(),
    };
    drop(state);
    Ok(with_index(
        index,
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        ),
    ))
}

/// `GET /api/v1/services/{service}/instances/{id}`
pub async fn get_instance(
    State(agent): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let state = agent.store.read();
    let instance = state
        .registry
        .instance(&service, &id)
        .ok_or_else(|| not_registered(&service, &id))?;
    Ok(with_index(instance.modify_index, Json(instance)))
}

/// `DELETE /api/v1/services/{service}/instances/{id}`
pub async fn deregister(
    State(agent): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    if agent
        .store
        .read()
        .registry
        .instance(&service, &id)
        .is_none()
    {
        return Err(not_registered(&service, &id));
    }
    match agent
        .propose(Command::Deregister(InstanceKey::new(&service, &id)))
        .await?
    {
        signpost_core::Response::Deregistered(_) => {
            let index = agent.store.read().registry.service_index(&service);
            Ok(with_index(index, StatusCode::NO_CONTENT))
        }
        signpost_core::Response::NotFound => Err(not_registered(&service, &id)),
        other => Err(ApiError::Internal(format!("deregister answered {other:?}"))),
    }
}

/// `PUT /api/v1/services/{service}/instances/{id}/heartbeat` (forwarded to the leader, whose
/// health checker holds the TTL deadlines). Answers `{"id", "status", "index"}`: the instance's
/// status and modify index after the renewal, not the whole instance.
pub async fn heartbeat(
    State(agent): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = InstanceKey {
        service: validate::service_name(&service)?,
        id,
    };
    match renew(&agent, &key).await {
        Ok((status, index)) => Ok(with_index(
            index,
            Json(Renewed {
                id: &key.id,
                status,
                index,
            }),
        )),
        Err(e) => Err(ttl_error(&key, e)),
    }
}

/// Most instances one `PUT /api/v1/heartbeats` may renew.
pub const MAX_BATCH: usize = 10_000;

/// `PUT /api/v1/heartbeats`: renews many TTL instances in one request, a JSON array of
/// `{"service", "id"}`. Answers 200 with `{"renewed": n, "not_found": [keys],
/// "rejected": [{"service", "id", "error"}]}`: the client re-registers the instances not found;
/// the rejected ones have no TTL check or a malformed name. One request instead of one per
/// instance, as etcd renews many leases over one keep-alive stream.
pub async fn heartbeats(
    State(agent): State<AppState>,
    JsonBody(keys): JsonBody<Vec<InstanceKey>>,
) -> Result<Response, ApiError> {
    if keys.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "body",
            format!(
                "at most {MAX_BATCH} instances per batch, got {}",
                keys.len()
            ),
        ));
    }
    // Renewals run side by side: on a follower each is forwarded to the leader, and on the
    // leader a recovery is a Raft proposal; one at a time, a batch would pay a round trip or an
    // fsync per instance instead of sharing them.
    // Per key: Err(why its name is malformed), or Ok(what renewing it failed with, if anything).
    let outcomes: Vec<(InstanceKey, Result<Option<TtlError>, String>)> =
        futures::stream::iter(keys)
            .map(|mut key| {
                let agent = agent.clone();
                async move {
                    match validate::service_name(&key.service) {
                        Ok(service) => {
                            key.service = service;
                            let failed = renew(&agent, &key).await.err();
                            (key, Ok(failed))
                        }
                        Err(e) => (key, Err(e.to_string())),
                    }
                }
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .collect()
            .await;
    let mut answer = BatchRenewed::<InstanceKey>::default();
    for (key, outcome) in outcomes {
        match outcome {
            Err(error) => answer.rejected.push(Rejected { error, key }),
            Ok(None) => answer.renewed += 1,
            Ok(Some(TtlError::NotFound(_))) => answer.not_found.push(key),
            Ok(Some(TtlError::Unavailable(m))) => return Err(ApiError::Unavailable(m)),
            Ok(Some(e)) => answer.rejected.push(Rejected {
                error: e.to_string(),
                key,
            }),
        }
    }
    Ok(Json(answer).into_response())
}

/// Renewals of one batch in flight at once.
const BATCH_CONCURRENCY: usize = 64;

/// Renews `key`'s TTL; returns its status and modify index after. On the leader the instance is
/// read in place, never copied (the hot path of every heartbeat); elsewhere the renewal is
/// forwarded to the leader.
async fn renew(agent: &AppState, key: &InstanceKey) -> Result<(Status, u64), TtlError> {
    if !agent.is_leader() {
        let req = TtlRequest {
            key: key.clone(),
            status: Status::Passing,
        };
        return cluster::ttl_update(agent, req)
            .await
            .map(|i| (i.status, i.modify_index));
    }
    let action = {
        let state = agent.store.read();
        let instance = state
            .registry
            .instance(&key.service, &key.id)
            .ok_or_else(|| TtlError::NotFound(key.to_string()))?;
        match agent
            .health
            .set_ttl_status_of(key, instance, Status::Passing)
        {
            Ok(Some(action)) => action,
            Ok(None) => return Ok((instance.status, instance.modify_index)),
            Err(HeartbeatError::NotTracked) => return Err(TtlError::NotTracked(key.to_string())),
            Err(HeartbeatError::NotTtl) => return Err(TtlError::NotTtl(key.to_string())),
        }
    };
    // The heartbeat ends an outage: the recovery goes through Raft before the answer.
    let command = match action {
        Action::SetStatus { key, status } => Command::SetStatus { key, status },
        Action::Deregister { key } => Command::Deregister(key),
    };
    match agent.propose(command).await {
        Ok(signpost_core::Response::StatusSet(updated)) => {
            Ok((updated.status, updated.modify_index))
        }
        Ok(signpost_core::Response::NotFound) => Err(TtlError::NotFound(key.to_string())),
        Ok(_) => agent
            .store
            .read()
            .registry
            .instance(&key.service, &key.id)
            .map(|i| (i.status, i.modify_index))
            .ok_or_else(|| TtlError::NotFound(key.to_string())),
        Err(e) => Err(TtlError::Unavailable(e.to_string())),
    }
}

fn ttl_error(key: &InstanceKey, e: TtlError) -> ApiError {
    match e {
        TtlError::NotFound(_) => not_registered(&key.service, &key.id),
        TtlError::NotTracked(_) | TtlError::NotTtl(_) => {
            ApiError::bad_request("check", e.to_string())
        }
        TtlError::Unavailable(m) => ApiError::Unavailable(m),
    }
}

/// `PUT /api/v1/services/{service}/definition`
pub async fn put_definition(
    State(agent): State<AppState>,
    Path(service): Path<String>,
    JsonBody(body): JsonBody<DefinitionInput>,
) -> Result<Response, ApiError> {
    let definition = validate::definition(&service, body)?;
    match agent.propose(Command::PutDefinition(definition)).await? {
        signpost_core::Response::DefinitionPut {
            definition,
            created,
        } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_index(
                definition.modify_index,
                (status, Json(definition)),
            ))
        }
        other => Err(ApiError::Internal(format!(
            "definition put answered {other:?}"
        ))),
    }
}

/// `GET /api/v1/services/{service}/definition`
pub async fn get_definition(
    State(agent): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let state = agent.store.read();
    let def = state
        .registry
        .definition(&service)
        .ok_or_else(|| ApiError::NotFound(format!("service {service} has no definition")))?;
    Ok(with_index(def.modify_index, Json(def)))
}

/// `DELETE /api/v1/services/{service}/definition`
pub async fn delete_definition(
    State(agent): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    match agent
        .propose(Command::DeleteDefinition {
            service: service.clone(),
        })
        .await?
    {
        signpost_core::Response::DefinitionDeleted => {
            let index = agent.store.read().registry.service_index(&service);
            Ok(with_index(index, StatusCode::NO_CONTENT))
        }
        signpost_core::Response::NotFound => Err(ApiError::NotFound(format!(
            "service {service} has no definition"
        ))),
        other => Err(ApiError::Internal(format!(
            "definition delete answered {other:?}"
        ))),
    }
}
