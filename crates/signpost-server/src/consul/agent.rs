//! `/v1/agent/*`: service and check registration on this agent, TTL check updates, and self.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use signpost_core::model::NewInstance;
use signpost_core::validate::{self, Registration};
use signpost_core::{Instance, Status};

use super::types::{self, CheckDefinition, NodeInfo, ServiceRegistration};
use super::{with_meta, Query};
use crate::http::{ApiError, AppState, JsonBody};
use crate::service::{self, Caller, ServiceError};

/// Decodes a Consul request body after canonicalising its keys, naming the field at fault.
fn decode<T: serde::de::DeserializeOwned>(mut body: Value) -> Result<T, ApiError> {
    types::canonicalize(&mut body);
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest {
            message: format!("invalid JSON body: {}", e.inner()),
            field: (path != ".").then_some(path),
        }
    })
}

fn parse(agent: &AppState, raw: &Option<String>) -> Result<Query, ApiError> {
    Query::parse(raw.as_deref(), &agent.config().datacenter)
}

fn catalog_index(agent: &AppState) -> u64 {
    service::catalog_index(agent)
}

/// Finds an instance by its id alone (Consul's service ids are unique per agent). Found as the
/// agent itself: the operation that follows decides whether the caller may touch it.
fn find_instance(agent: &AppState, id: &str) -> Option<Instance> {
    service::instance_by_id(agent, id)
}

/// Finds the instance whose check has `check_id` (as [`find_instance`]).
fn find_by_check(agent: &AppState, check_id: &str) -> Option<Instance> {
    service::instance_by_check(agent, check_id)
}

/// `GET /v1/agent/self`
pub async fn agent_self(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    service::authorize_agent_read(&agent, &caller)?;
    let node = NodeInfo::of(&agent);
    let body = json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Revision": "signpost",
            "Server": true,
            "Version": format!("1.17.0+signpost.{}", env!("CARGO_PKG_VERSION")),
        },
        "Member": {
            "Name": node.name,
            "Addr": node.address,
            "Port": agent.advertise_addr().port(),
            "Tags": {"dc": node.datacenter, "role": "consul", "build": "signpost"},
            "Status": 1,
        },
        "Meta": {"signpost": "true"},
        "Stats": {"signpost": {
            "version": env!("CARGO_PKG_VERSION"),
            "health": crate::vitals::report(&agent),
        }},
    });
    Ok(with_meta(&agent, catalog_index(&agent), Json(body)))
}

/// `GET /v1/agent/members`: the cluster's members as Serf would list them.
pub async fn members(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let dc = agent.config().datacenter.clone();
    let list: Vec<Value> = service::members(&agent, &caller)?
        .members
        .into_iter()
        .map(|m| {
            let (addr, port) = m
                .raft_addr
                .rsplit_once(':')
                .map(|(a, p)| (a.to_string(), p.parse::<u16>().unwrap_or(0)))
                .unwrap_or((m.raft_addr.clone(), 0));
            json!({
                "Name": if m.id == agent.node_id() { agent.config().node_name() } else { format!("signpost-{}", m.id) },
                "Addr": addr,
                "Port": port,
                "Tags": {"dc": dc, "role": "consul", "id": m.id.to_string(), "raft_role": m.role},
                "Status": 1,
            })
        })
        .collect();
    Ok(with_meta(&agent, catalog_index(&agent), Json(list)))
}

/// `GET /v1/agent/services`: every instance registered, keyed by id.
pub async fn services(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    q.block(&agent, |i, w| service::wait_for_catalog(&agent, i, w))
        .await?;
    let dc = &agent.config().datacenter;
    let (index, instances) = service::catalog_copy(&agent, &caller, |_| true);
    let map: BTreeMap<&str, Value> = instances
        .iter()
        .map(|i| (i.id.as_str(), types::agent_service(i, dc)))
        .collect();
    Ok(with_meta(&agent, index, Json(map)))
}

/// `GET /v1/agent/service/:id`
pub async fn service(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    if let Some(found) = find_instance(&agent, &id) {
        let service = found.service.clone();
        q.block(&agent, |i, w| {
            service::wait_for_service(&agent, &service, i, w)
        })
        .await?;
    }
    let instance = find_instance(&agent, &id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown service ID {id:?}")))?;
    let instance = service::instance(&agent, &caller, &instance.key())?;
    Ok(with_meta(
        &agent,
        instance.modify_index,
        Json(types::agent_service(&instance, &agent.config().datacenter)),
    ))
}

/// Turns a Consul registration into Signpost's, naming Consul's fields in errors.
fn to_registration(agent: &AppState, reg: ServiceRegistration) -> Result<NewInstance, ApiError> {
    if reg
        .kind
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != "typical")
    {
        return Err(ApiError::bad_request(
            "Kind",
            "only typical services are supported (no Connect proxies or gateways)",
        ));
    }
    let name = reg
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Name", "Name is required"))?;
    let mut checks: Vec<CheckDefinition> = reg.checks.unwrap_or_default();
    if let Some(c) = reg.check {
        checks.insert(0, c);
    }
    if checks.len() > 1 {
        return Err(ApiError::bad_request(
            "Checks",
            "Signpost runs one health check per service instance; give one Check",
        ));
    }
    let (check, status) = match checks.first() {
        Some(def) => {
            let (spec, status) = def
                .to_spec("Check")
                .map_err(|(field, m)| ApiError::bad_request(&field, m))?;
            (Some(spec), status)
        }
        None => (None, None),
    };
    let address = reg
        .address
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| agent.advertise_addr().ip().to_string());
    let weight = reg.weights.and_then(|w| w.passing);
    // Consul services may have no port (py-consul omits it); Signpost stores port 0 for them,
    // which the native API never accepts. The rest is validated with a stand-in port.
    let port = reg.port.unwrap_or(0);
    let registration = Registration {
        id: Some(
            reg.id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| name.clone()),
        ),
        service: None,
        address: Some(address),
        port: Some(if port == 0 { 1 } else { port }),
        tags: reg.tags.unwrap_or_default(),
        metadata: reg.meta.unwrap_or_default(),
        weight,
        check,
        status,
        state: None,
    };
    let mut new = validate::registration(&name, registration).map_err(|e| {
        let field = match e.field.as_str() {
            "service" => "Name".to_string(),
            "id" => "ID".to_string(),
            "address" => "Address".to_string(),
            "port" => "Port".to_string(),
            "weight" => "Weights.Passing".to_string(),
            "tags" => "Tags".to_string(),
            f if f.starts_with("metadata") => f.replacen("metadata", "Meta", 1),
            "check.ttl" => "Check.TTL".to_string(),
            "check.http" => "Check.HTTP".to_string(),
            "check.tcp" => "Check.TCP".to_string(),
            "check.grpc" => "Check.GRPC".to_string(),
            f if f.starts_with("check") => f.replacen("check", "Check", 1),
            f => f.to_string(),
        };
        ApiError::bad_request(&field, e.message)
    })?;
    if port == 0 {
        new.port = 0;
    }
    Ok(new)
}

/// `PUT /v1/agent/service/register`
pub async fn register_service(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    parse(&agent, &raw)?;
    let reg: ServiceRegistration = decode(body)?;
    let new = to_registration(&agent, reg)?;
    // Service ids are unique per Consul agent: the same id under another name is a conflict.
    if let Some(other) = find_instance(&agent, &new.id).filter(|i| i.service != new.service) {
        return Err(ApiError::bad_request(
            "ID",
            format!(
                "service ID {:?} is already registered for service {:?}",
                new.id, other.service
            ),
        ));
    }
    service::register(&agent, &caller, new).await?;
    Ok(with_meta(&agent, catalog_index(&agent), StatusCode::OK))
}

/// `PUT /v1/agent/service/deregister/:id`
pub async fn deregister_service(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = find_instance(&agent, &id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown service ID {id:?}")))?;
    service::deregister(&agent, &caller, &instance.key())
        .await
        .map_err(|e| match e {
            ServiceError::NotRegistered(_) => {
                ApiError::NotFound(format!("unknown service ID {id:?}"))
            }
            e => e.into(),
        })?;
    Ok(with_meta(&agent, catalog_index(&agent), StatusCode::OK))
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true|false&reason=…`: puts the instance into
/// maintenance (it stays registered, out of discovery) or takes it out. `enable` is required.
pub async fn service_maintenance(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = crate::http::lifecycle::MaintenanceQuery::parse(raw.as_deref())?;
    let instance = find_instance(&agent, &id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown service ID {id:?}")))?;
    service::set_maintenance(&agent, &caller, &instance.key(), q.enable, q.reason)
        .await
        .map_err(|e| match e {
            ServiceError::NotRegistered(_) => {
                ApiError::NotFound(format!("unknown service ID {id:?}"))
            }
            e => e.into(),
        })?;
    Ok(with_meta(&agent, catalog_index(&agent), StatusCode::OK))
}

/// `GET /v1/agent/checks`
pub async fn checks(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    parse(&agent, &raw)?;
    let node = agent.config().node_name();
    let (index, instances) = service::catalog_copy(&agent, &caller, |i| i.check.is_some());
    let map: BTreeMap<String, Value> = instances
        .iter()
        .filter_map(|i| types::service_check(i, &node))
        .map(|c| (c["CheckID"].as_str().unwrap_or_default().to_string(), c))
        .collect();
    Ok(with_meta(&agent, index, Json(map)))
}

/// Re-registers `instance` with `check` in place of its current one.
async fn replace_check(
    agent: &AppState,
    caller: &Caller,
    instance: &Instance,
    check: Option<signpost_core::CheckSpec>,
    status: Option<Status>,
) -> Result<(), ApiError> {
    let new = NewInstance {
        id: instance.id.clone(),
        service: instance.service.clone(),
        address: instance.address.clone(),
        port: instance.port,
        tags: instance.tags.clone(),
        metadata: instance.metadata.clone(),
        weight: instance.weight,
        check,
        status,
        state: instance.state,
    };
    service::register(agent, caller, new).await?;
    Ok(())
}

/// `PUT /v1/agent/check/register`: attaches a check to a service instance.
pub async fn register_check(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let def: CheckDefinition = decode(body)?;
    let service_id = def.service_id.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            "ServiceID",
            "Signpost checks belong to a service instance: give ServiceID (node-level checks are not supported)",
        )
    })?;
    let instance = find_instance(&agent, &service_id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown service ID {service_id:?}")))?;
    let (spec, status) = def
        .to_spec("Check")
        .map_err(|(field, m)| ApiError::bad_request(field.trim_start_matches("Check."), m))?;
    validate::check(&spec).map_err(|e| ApiError::bad_request(&e.field, e.message))?;
    replace_check(&agent, &caller, &instance, Some(spec), status).await?;
    Ok(with_meta(&agent, catalog_index(&agent), StatusCode::OK))
}

/// `PUT /v1/agent/check/deregister/:check_id`
pub async fn deregister_check(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(check_id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = find_by_check(&agent, &check_id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown check ID {check_id:?}")))?;
    replace_check(&agent, &caller, &instance, None, Some(Status::Passing)).await?;
    Ok(with_meta(&agent, catalog_index(&agent), StatusCode::OK))
}

/// Sets a TTL check's status on the leader (forwarded there from a follower).
async fn set_ttl(
    agent: &AppState,
    caller: &Caller,
    check_id: &str,
    status: Status,
) -> Result<Response, ApiError> {
    let key = service::key_by_check(agent, check_id, Instance::key)
        .ok_or_else(|| ApiError::NotFound(format!("unknown check ID {check_id:?}")))?;
    match service::renew(agent, caller, &key, status).await {
        Ok(_) => Ok(with_meta(agent, catalog_index(agent), StatusCode::OK)),
        Err(ServiceError::NotRegistered(_)) => {
            Err(ApiError::NotFound(format!("unknown check ID {check_id:?}")))
        }
        Err(ServiceError::NotTracked(_) | ServiceError::NotTtl(_)) => Err(ApiError::bad_request(
            "CheckID",
            format!("check {check_id:?} is not a TTL check; only TTL checks are updated this way"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `PUT /v1/agent/check/pass/:check_id`
pub async fn check_pass(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_ttl(&agent, &caller, &id, Status::Passing).await
}

/// `PUT /v1/agent/check/warn/:check_id`
pub async fn check_warn(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_ttl(&agent, &caller, &id, Status::Warning).await
}

/// `PUT /v1/agent/check/fail/:check_id`
pub async fn check_fail(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_ttl(&agent, &caller, &id, Status::Critical).await
}

/// The body of `check/update`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckUpdate {
    /// The status to set.
    #[serde(rename = "Status")]
    status: Option<String>,
    /// The check's output (accepted, not kept).
    #[serde(rename = "Output")]
    output: Option<String>,
}

/// `PUT /v1/agent/check/update/:check_id` with `{"Status": ..., "Output": ...}`
pub async fn check_update(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let update: CheckUpdate = decode(body)?;
    let _ = update.output;
    let status = update
        .status
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("Status", "Status is required"))?
        .parse::<Status>()
        .map_err(|m| ApiError::bad_request("Status", m.to_string()))?;
    set_ttl(&agent, &caller, &id, status).await
}
