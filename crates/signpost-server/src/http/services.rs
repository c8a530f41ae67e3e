//! The native registry API: instances and service definitions.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use signpost_api::{BatchRenewed, InstanceList, Rejected, Renewed};
use signpost_core::model::Dur;
use signpost_core::validate::{self, DefinitionInput, Registration};
use signpost_core::{Instance, InstanceKey, Status};

use super::cache::ListingCache;
use super::{with_index, ApiError, AppState, JsonBody};
use crate::service::{self, Caller, ServiceError};

/// Longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// How long a blocking query waits when it names no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// Which statuses a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Every status (`status=any`).
    Any,
    /// This status only.
    Only(Status),
}

impl StatusFilter {
    /// Whether `status` passes the filter.
    pub fn matches(self, status: Status) -> bool {
        match self {
            StatusFilter::Any => true,
            StatusFilter::Only(s) => s == status,
        }
    }
}

/// The blocking part of a native read's query string: `index`, `wait` and `consistent`. The
/// instance listing and the services summary take it alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// The index the client has seen; the read waits until the index passes it (0 or absent:
    /// answer at once).
    pub index: Option<u64>,
    /// How long to wait for a change (at most [`MAX_WAIT`]).
    pub wait: Duration,
    /// Read through the leader's read index (linearizable) instead of this node's state.
    pub consistent: bool,
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking {
            index: None,
            wait: DEFAULT_WAIT,
            consistent: false,
        }
    }
}

impl Blocking {
    /// Parses a query string of which only the blocking parameters matter (others are ignored,
    /// as Consul does).
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Blocking::default();
        for (key, value) in pairs(raw)? {
            q.take(&key, &value)?;
        }
        Ok(q)
    }

    /// Takes `key=value` if it is a blocking parameter (true), or leaves it (false).
    fn take(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "consistent" => self.consistent = value.is_empty() || value == "true",
            "index" => {
                self.index = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(
                        "index",
                        format!("index must be a non-negative integer, got {value:?}"),
                    )
                })?)
            }
            "wait" => {
                let d: Dur = value
                    .parse()
                    .map_err(|e: signpost_core::model::BadDuration| {
                        ApiError::bad_request("wait", e.to_string())
                    })?;
                self.wait = d.to_std().min(MAX_WAIT);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Makes the read linearizable if asked, then, if the client named an index above 0, waits
    /// with `wait_for` (a service-layer wait: until the index passes it, the wait ends or the
    /// agent shuts down).
    pub async fn block<F, Fut>(&self, agent: &AppState, wait_for: F) -> Result<(), ApiError>
    where
        F: FnOnce(u64, Duration) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if self.consistent {
            service::linearize(agent).await?;
        }
        if let Some(index) = self.index.filter(|i| *i > 0) {
            wait_for(index, self.wait).await;
        }
        Ok(())
    }
}

/// The `key=value` pairs of a query string.
fn pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request("query", format!("malformed query string: {e}")))
}

/// The query string of listings and watches: `status`, repeated `tag`, and the
/// [`Blocking`] parameters.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Which statuses to list (passing by default).
    pub status: StatusFilter,
    /// Only instances with every one of these tags.
    pub tags: Vec<String>,
    /// `index`, `wait`, `consistent`.
    pub blocking: Blocking,
}

impl ListQuery {
    /// Parses the query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            status: StatusFilter::Only(Status::Passing),
            tags: Vec::new(),
            blocking: Blocking::default(),
        };
        for (key, value) in pairs(raw)? {
            if q.blocking.take(&key, &value)? {
                continue;
            }
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
                // Unknown parameters are ignored, as Consul does.
                _ => {}
            }
        }
        Ok(q)
    }

    /// Whether `instance` passes the status and tag filters. A passing listing (the default)
    /// is discovery: it leaves out instances in maintenance or not `up`; `status=any` shows
    /// them, with their state.
    pub fn matches(&self, instance: &Instance) -> bool {
        let discovery = self.status == StatusFilter::Only(Status::Passing);
        self.status.matches(instance.status)
            && (!discovery || instance.serving())
            && instance.has_tags(&self.tags)
    }
}

/// `GET /api/v1/services`, optionally blocking: with `index`, it answers once the catalog's
/// index (that of the last change to any service) passes it, or when `wait` ends.
pub async fn list_services(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Blocking::parse(raw.as_deref())?;
    q.block(&agent, |index, wait| {
        service::wait_for_catalog(&agent, index, wait)
    })
    .await?;
    let (index, services) = service::services(&agent, &caller);
    Ok(with_index(index, Json(services)))
}

/// `POST /api/v1/services/{service}/instances`
pub async fn register(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(service): Path<String>,
    JsonBody(body): JsonBody<Registration>,
) -> Result<Response, ApiError> {
    let new = validate::registration(&service, body)?;
    let done = service::register(&agent, &caller, new).await?;
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_index(
        done.instance.modify_index,
        (status, Json(done.instance)),
    ))
}

/// `GET /api/v1/services/{service}/instances`, optionally blocking.
pub async fn list_instances(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(cache): Extension<Arc<ListingCache>>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let q = ListQuery::parse(raw.as_deref())?;
    q.blocking
        .block(&agent, |index, wait| {
            service::wait_for_service(&agent, &service, index, wait)
        })
        .await?;
    // A listing the caller may not see is rendered empty, never taken from the shared cache.
    let visible = service::visible(&caller, &service);
    let (index, body) = service::with_instances(&agent, &caller, &service, |index, instances| {
        let index = index.max(1);
        let mut render = || {
            let instances: Vec<&Instance> = instances.filter(|i| q.matches(i)).collect();
            let listed = instances.len();
            let list = InstanceList { index, instances };
            let body = bytes::Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
            (body, listed)
        };
        let body = if visible {
            cache.listing(&service, &q, index, render)
        } else {
            render().0
        };
        (index, body)
    });
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
    Extension(caller): Extension<Caller>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = InstanceKey::new(validate::service_name(&service)?, id);
    let instance = service::instance(&agent, &caller, &key)?;
    Ok(with_index(instance.modify_index, Json(instance)))
}

/// `DELETE /api/v1/services/{service}/instances/{id}`
pub async fn deregister(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = InstanceKey::new(validate::service_name(&service)?, id);
    let index = service::deregister(&agent, &caller, &key).await?;
    Ok(with_index(index, StatusCode::NO_CONTENT))
}

/// `PUT /api/v1/services/{service}/instances/{id}/heartbeat` (forwarded to the leader, whose
/// health checker holds the TTL deadlines). Answers `{"id", "status", "index"}`: the instance's
/// status and modify index after the renewal, not the whole instance.
pub async fn heartbeat(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = InstanceKey {
        service: validate::service_name(&service)?,
        id,
    };
    let renewed = service::renew(&agent, &caller, &key, Status::Passing).await?;
    Ok(with_index(
        renewed.index,
        Json(Renewed {
            id: &key.id,
            status: renewed.status,
            index: renewed.index,
        }),
    ))
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
    Extension(caller): Extension<Caller>,
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
    // One call for the batch: on a follower it travels to the leader whole; on the leader
    // renewals run side by side, so recoveries share Raft entries.
    let mut checked = Vec::with_capacity(keys.len());
    let mut valid = Vec::with_capacity(keys.len());
    for mut key in keys {
        match validate::service_name(&key.service) {
            Ok(service) => {
                key.service = service;
                valid.push(key.clone());
                checked.push((key, None));
            }
            Err(e) => checked.push((key, Some(e))),
        }
    }
    let outcomes = service::renew_many(&agent, &caller, valid, Status::Passing).await;
    let answer = batch_answer(BatchRenewed::default(), checked, outcomes)?;
    Ok(Json(answer).into_response())
}

/// A heartbeat batch's answer from each key's outcome, in the order sent: `checked` holds
/// every key with its name's validation error, if any; `outcomes` one renewal result per valid
/// key. Keys the cluster could not serve are listed as unavailable, and only when that is all
/// there is to say is the whole batch a 503 (none of it was renewed).
fn batch_answer(
    mut answer: BatchRenewed<InstanceKey>,
    checked: Vec<(InstanceKey, Option<validate::ValidationError>)>,
    outcomes: Vec<service::Result<service::Renewal>>,
) -> Result<BatchRenewed<InstanceKey>, ApiError> {
    let mut outcomes = outcomes.into_iter();
    let mut unavailable = None;
    for (key, malformed) in checked {
        let outcome = match malformed {
            Some(e) => {
                answer.rejected.push(Rejected {
                    error: e.to_string(),
                    key,
                });
                continue;
            }
            None => outcomes.next().expect("one outcome per valid key"),
        };
        match outcome {
            Ok(_) => answer.renewed += 1,
            Err(ServiceError::NotRegistered(_)) => answer.not_found.push(key),
            Err(e @ (ServiceError::Cluster(_) | ServiceError::Propose(_))) => {
                unavailable.get_or_insert(e);
                answer.unavailable.push(key);
            }
            Err(e) => answer.rejected.push(Rejected {
                error: e.to_string(),
                key,
            }),
        }
    }
    if let Some(e) = unavailable {
        if answer.renewed == 0 && answer.not_found.is_empty() && answer.rejected.is_empty() {
            return Err(ApiError::Unavailable(e.to_string()));
        }
    }
    Ok(answer)
}

/// `PUT /api/v1/services/{service}/definition`
pub async fn put_definition(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(service): Path<String>,
    JsonBody(body): JsonBody<DefinitionInput>,
) -> Result<Response, ApiError> {
    let definition = validate::definition(&service, body)?;
    let done = service::define(&agent, &caller, definition).await?;
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_index(
        done.definition.modify_index,
        (status, Json(done.definition)),
    ))
}

/// `GET /api/v1/services/{service}/definition`
pub async fn get_definition(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let def = service::definition(&agent, &caller, &service)?;
    Ok(with_index(def.modify_index, Json(def)))
}

/// `DELETE /api/v1/services/{service}/definition`
pub async fn delete_definition(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let service = validate::service_name(&service)?;
    let index = service::undefine(&agent, &caller, &service).await?;
    Ok(with_index(index, StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use crate::agent::ProposeError;
    use crate::service::Renewal;

    fn key(id: &str) -> InstanceKey {
        InstanceKey {
            service: "web".into(),
            id: id.into(),
        }
    }

    fn timeout() -> ServiceError {
        ServiceError::Propose(ProposeError::Timeout(std::time::Duration::from_secs(10)))
    }

    fn renewed() -> service::Result<Renewal> {
        Ok(Renewal {
            status: Status::Passing,
            index: 3,
        })
    }

    #[test]
    fn one_unavailable_renewal_does_not_turn_the_batch_into_a_503() {
        let checked = vec![(key("a"), None), (key("b"), None), (key("c"), None)];
        let outcomes = vec![renewed(), Err(timeout()), renewed()];
        let answer = batch_answer(BatchRenewed::default(), checked, outcomes).unwrap();
        assert_eq!(answer.renewed, 2);
        assert_eq!(answer.unavailable, vec![key("b")]);
        assert!(answer.rejected.is_empty() && answer.not_found.is_empty());
    }

    #[test]
    fn a_batch_nothing_of_which_could_be_served_is_a_503() {
        let checked = vec![(key("a"), None), (key("b"), None)];
        let outcomes = vec![Err(timeout()), Err(timeout())];
        let err = batch_answer(BatchRenewed::default(), checked, outcomes).unwrap_err();
        assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    }
}
