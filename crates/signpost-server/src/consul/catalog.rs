//! `/v1/catalog/*`, `/v1/health/*` and `/v1/status/*`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use serde_json::Value;
use signpost_core::acl::{Access, Resource};
use signpost_core::{validate, Instance, Status};

use super::cache::{Key, Read, RenderCache};
use super::types::{self, NodeInfo};
use super::{with_meta, Query};
use crate::http::{ApiError, AppState};
use crate::service::{self, Caller};

fn parse(agent: &AppState, raw: &Option<String>) -> Result<Query, ApiError> {
    Query::parse(raw.as_deref(), &agent.config().datacenter)
}

/// A service name from a path; names that cannot exist simply have no instances.
fn service_name(raw: &str) -> Option<String> {
    validate::service_name(raw).ok()
}

async fn block_on_service(
    agent: &AppState,
    q: &Query,
    service: &Option<String>,
) -> Result<(), ApiError> {
    match service {
        Some(s) => {
            q.block(agent, |i, w| service::wait_for_service(agent, s, i, w))
                .await
        }
        None => {
            q.block(agent, |i, w| service::wait_for_catalog(agent, i, w))
                .await
        }
    }
}

fn service_index(agent: &AppState, service: &Option<String>) -> u64 {
    match service {
        Some(s) => service::service_index(agent, s),
        None => service::catalog_index(agent),
    }
}

/// `GET /v1/catalog/services`: name → tags (the union over instances).
pub async fn services(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    q.block(&agent, |i, w| service::wait_for_catalog(&agent, i, w))
        .await?;
    let (index, map) = service::with_catalog(&agent, &caller, |index, instances| {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for i in instances {
            map.entry(i.service.clone())
                .or_default()
                .extend(i.tags.iter().cloned());
        }
        (index, map)
    });
    Ok(with_meta(&agent, index, Json(map)))
}

/// Answers a per-service read: blocks on the service's own index, then maps each of its
/// instances (in id order) through `entry`, dropping those it returns `None` for.
async fn per_service(
    agent: AppState,
    caller: Caller,
    name: &str,
    raw: Option<String>,
    entry: impl Fn(&Query, &NodeInfo, &Instance) -> Option<Value>,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    let service = service_name(name);
    block_on_service(&agent, &q, &service).await?;
    let node = NodeInfo::of(&agent);
    let list: Vec<Value> = match &service {
        Some(s) => service::with_instances(&agent, &caller, s, |_, instances| {
            instances.filter_map(|i| entry(&q, &node, i)).collect()
        }),
        None => Vec::new(),
    };
    Ok(with_meta(
        &agent,
        service_index(&agent, &service),
        Json(list),
    ))
}

/// `GET /v1/catalog/service/:name`: every instance (any health), flat; rendered once per
/// index and tag filter and shared ([`super::cache`]).
pub async fn service(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(cache): Extension<Arc<RenderCache>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    shared_read(&agent, &caller, &cache, &name, &q, Read::Catalog).await
}

/// `GET /v1/catalog/nodes`: this agent, if the caller may see it (`node:read`; else an empty,
/// filtered listing).
pub async fn nodes(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    parse(&agent, &raw)?;
    let node = NodeInfo::of(&agent);
    let nodes = if caller.allows(Resource::Node, &node.name, Access::Read) {
        vec![node.json()]
    } else {
        caller.mark_filtered();
        Vec::new()
    };
    Ok(with_meta(&agent, service_index(&agent, &None), Json(nodes)))
}

/// `GET /v1/catalog/node/:name`: this agent and its services.
pub async fn node(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    let node = NodeInfo::of(&agent);
    if name != node.name {
        return Err(ApiError::NotFound(format!("unknown node {name:?}")));
    }
    service::authorize(&caller, Resource::Node, &node.name, Access::Read)?;
    q.block(&agent, |i, w| service::wait_for_catalog(&agent, i, w))
        .await?;
    let (index, instances) = service::catalog_copy(&agent, &caller, |_| true);
    let services: BTreeMap<&str, Value> = instances
        .iter()
        .map(|i| (i.id.as_str(), types::health_service(i)))
        .collect();
    let body = serde_json::json!({ "Node": node.json(), "Services": services });
    Ok(with_meta(&agent, index, Json(body)))
}

/// `GET /v1/catalog/datacenters`
pub async fn datacenters(State(agent): State<AppState>) -> Response {
    with_meta(
        &agent,
        service_index(&agent, &None),
        Json(vec![agent.config().datacenter.clone()]),
    )
}

fn health_entry(i: &Instance, node: &NodeInfo) -> Value {
    let mut checks = vec![node.serf_check()];
    checks.extend(types::service_check(i, &node.name));
    checks.extend(types::maintenance_check(i, &node.name));
    serde_json::json!({
        "Node": node.json(),
        "Service": types::health_service(i),
        "Checks": checks,
    })
}

/// `GET /v1/health/service/:name`: nested entries; `?passing` keeps passing instances only
/// (not those in maintenance, whose entry carries Consul's critical `_service_maintenance`
/// check, nor those `starting` or `stopping`). Rendered once per index and filter and shared
/// ([`super::cache`]); `?near` is accepted and ignored.
pub async fn health_service(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(cache): Extension<Arc<RenderCache>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    let read = if q.passing {
        Read::HealthPassing
    } else {
        Read::Health
    };
    shared_read(&agent, &caller, &cache, &name, &q, read).await
}

/// Whether `read` filtered by `tags` lists `i`.
fn lists(read: Read, tags: &[String], i: &Instance) -> bool {
    i.has_tags(tags) && (read != Read::HealthPassing || i.discoverable())
}

/// The JSON array `read` answers with for `instances` (already filtered).
fn render(agent: &AppState, read: Read, instances: &[Instance]) -> Bytes {
    let node = NodeInfo::of(agent);
    let list: Vec<Value> = instances
        .iter()
        .map(|i| match read {
            Read::Catalog => types::catalog_service(i, &node),
            Read::Health | Read::HealthPassing => health_entry(i, &node),
        })
        .collect();
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

/// A per-service read whose answer is shared ([`super::cache`]): blocks on the service's own
/// index, then answers with the rendering of the index it finds, made by the first request
/// that needs it (from a copy of the listed instances taken under the state's lock, rendered
/// outside it). A caller who may not read the service gets an empty, filtered listing, never a
/// shared one.
async fn shared_read(
    agent: &AppState,
    caller: &Caller,
    cache: &RenderCache,
    name: &str,
    q: &Query,
    read: Read,
) -> Result<Response, ApiError> {
    let service = service_name(name);
    block_on_service(agent, q, &service).await?;
    let Some(service) = service else {
        let empty = Json(Vec::<Value>::new());
        return Ok(with_meta(agent, service_index(agent, &None), empty));
    };
    let key = Key::new(&service, read, &q.tags);
    let shared = service::visible(caller, &service);
    let listed = |i: &&Instance| lists(read, &key.tags, i);
    // Under the lock: the index, and the shared rendering of it if there is one.
    let (index, slot) = service::with_instances(agent, caller, &service, |index, instances| {
        let mut instances = instances.peekable();
        // A service with no instances is answered alone: its empty answer costs nothing.
        let slot = (shared && instances.peek().is_some())
            .then(|| cache.slot(&key, index))
            .flatten();
        (index, slot)
    });
    let bytes = match slot {
        Some(slot) => {
            let copy = || async {
                service::with_instances(agent, caller, &service, |now, instances| {
                    (now == slot.index()).then(|| instances.filter(listed).cloned().collect())
                })
                .map(|list: Vec<Instance>| render(agent, read, &list))
            };
            match slot.ready() {
                Some(bytes) => Some(bytes),
                None => cache.rendering(&key, &slot, copy).await,
            }
        }
        None => None,
    };
    let (index, bytes) = match bytes {
        Some(bytes) => (index, bytes),
        // Not shared (a caller who may not see it, no instances, or the service moved on
        // while this request rendered): rendered for this request alone, at the index now.
        None => {
            let (index, list) =
                service::with_instances(agent, caller, &service, |now, instances| {
                    (now, instances.filter(listed).cloned().collect::<Vec<_>>())
                });
            (index, render(agent, read, &list))
        }
    };
    let body = ([(CONTENT_TYPE, "application/json")], bytes);
    Ok(with_meta(agent, index, body))
}

/// `GET /v1/health/checks/:service`
pub async fn health_checks(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    per_service(agent, caller, &name, raw, |_, node, i| {
        types::service_check(i, &node.name)
    })
    .await
}

/// `GET /v1/health/state/:state` (`any`, `passing`, `warning`, `critical`)
pub async fn health_state(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(state_name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, &raw)?;
    if !["any", "passing", "warning", "critical"].contains(&state_name.as_str()) {
        return Err(ApiError::bad_request(
            "state",
            format!("unknown check state {state_name:?}: use any, passing, warning or critical"),
        ));
    }
    q.block(&agent, |i, w| service::wait_for_catalog(&agent, i, w))
        .await?;
    let node = NodeInfo::of(&agent);
    let mut list = Vec::new();
    if types::status_matches(&state_name, Status::Passing) {
        list.push(node.serf_check());
    }
    let (index, instances) = service::catalog_copy(&agent, &caller, |i| {
        i.check.is_some() && types::status_matches(&state_name, i.status)
    });
    list.extend(
        instances
            .iter()
            .filter_map(|i| types::service_check(i, &node.name)),
    );
    Ok(with_meta(&agent, index, Json(list)))
}

/// `GET /v1/health/node/:name`: the node's checks (serfHealth and every service check).
pub async fn health_node(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    parse(&agent, &raw)?;
    let node = NodeInfo::of(&agent);
    let mut list = Vec::new();
    let mine = name == node.name;
    let (index, instances) = service::catalog_copy(&agent, &caller, |i| mine && i.check.is_some());
    if mine {
        list.push(node.serf_check());
        list.extend(
            instances
                .iter()
                .filter_map(|i| types::service_check(i, &node.name)),
        );
    }
    Ok(with_meta(&agent, index, Json(list)))
}

/// The Raft address Consul clients see for a node.
fn raft_addr(addr: &str) -> String {
    addr.to_string()
}

/// `GET /v1/status/leader`
pub async fn status_leader(State(agent): State<AppState>) -> Response {
    let m = agent.raft().metrics().borrow().clone();
    let leader = m
        .current_leader
        .and_then(|id| m.membership_config.membership().get_node(&id).cloned())
        .map(|n| raft_addr(&n.raft_addr))
        .filter(|_| !crate::vitals::failed(&agent))
        .unwrap_or_default();
    with_meta(&agent, service_index(&agent, &None), Json(leader))
}

/// `GET /v1/status/peers`
pub async fn status_peers(State(agent): State<AppState>) -> Response {
    let m = agent.raft().metrics().borrow().clone();
    let peers: Vec<String> = m
        .membership_config
        .membership()
        .nodes()
        .map(|(_, n)| raft_addr(&n.raft_addr))
        .collect();
    with_meta(&agent, service_index(&agent, &None), Json(peers))
}
