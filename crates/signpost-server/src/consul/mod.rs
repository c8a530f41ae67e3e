//! The Consul-compatible HTTP API, served on the same port as the native API and over the same
//! registry: an instance registered through one face is visible through the other.
//!
//! - [`agent`]: `/v1/agent/*` (service and check registration, TTL updates, self).
//! - [`catalog`]: `/v1/catalog/*`, `/v1/health/*`, `/v1/status/*`.
//! - [`kv`]: `/v1/kv/*` (also the native `/api/v1/kv/*`).
//! - [`types`]: Consul's JSON shapes, built from Signpost's model.
//!
//! Every GET takes Consul's blocking-query parameters (`index`, `wait`), answers with
//! `X-Consul-Index` (never 0; it moves only when that result's data changes),
//! `X-Consul-KnownLeader` and `X-Consul-LastContact`, and accepts `stale`, `consistent`, `dc`
//! (this agent's only), and a token in `X-Consul-Token` or `?token=`.

pub mod agent;
pub mod catalog;
pub mod kv;
pub mod types;

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use signpost_core::model::Dur;

use crate::http::{ApiError, AppState};

/// Longest blocking wait Consul allows.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Consul's default blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The Consul routes, to merge into the agent's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/members", get(agent::members))
        .route("/v1/agent/service/{id}", get(agent::service))
        .route("/v1/agent/service/register", put(agent::register_service))
        .route(
            "/v1/agent/service/deregister/{id}",
            put(agent::deregister_service),
        )
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/check/register", put(agent::register_check))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent::deregister_check),
        )
        .route("/v1/agent/check/pass/{id}", put(agent::check_pass))
        .route("/v1/agent/check/warn/{id}", put(agent::check_warn))
        .route("/v1/agent/check/fail/{id}", put(agent::check_fail))
        .route("/v1/agent/check/update/{id}", put(agent::check_update))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/node/{name}", get(catalog::node))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/health/service/{name}", get(catalog::health_service))
        .route("/v1/health/checks/{name}", get(catalog::health_checks))
        .route("/v1/health/state/{state}", get(catalog::health_state))
        .route("/v1/health/node/{name}", get(catalog::health_node))
        .route("/v1/status/leader", get(catalog::status_leader))
        .route("/v1/status/peers", get(catalog::status_peers))
        .route(
            "/v1/kv/{*key}",
            get(kv::consul_get)
                .put(kv::consul_put)
                .delete(kv::consul_delete),
        )
        .route(
            "/v1/kv/",
            get(kv::consul_get_root).delete(kv::consul_delete_root),
        )
}

/// Consul's query parameters, parsed once per request.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub index: Option<u64>,
    pub wait: Option<Duration>,
    pub passing: bool,
    pub tags: Vec<String>,
    pub recurse: bool,
    pub keys: bool,
    pub raw: bool,
    pub separator: Option<String>,
    pub cas: Option<u64>,
    pub flags: Option<u64>,
    pub note: Option<String>,
    /// Any parameter this agent understands but refuses (`acquire`, `release`, ...).
    pub unsupported: Option<String>,
    /// `?consistent`: read through the leader's read index.
    pub consistent: bool,
}

impl Query {
    /// Parses the query string; `dc` must be this agent's, and `filter` is refused.
    pub fn parse(raw: Option<&str>, datacenter: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request("query", format!("malformed query string: {e}")))?;
        let mut q = Query::default();
        // Consul turns `recurse`, `keys` and `raw` on by their mere presence, whatever the value
        // (py-consul sends `keys=True`); `passing` takes Go's booleans, empty meaning true.
        let present = |_: &str| true;
        let go_bool =
            |v: &str| v.is_empty() || matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True");
        for (key, value) in pairs {
            match key.as_str() {
                "index" => {
                    q.index = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "index",
                            format!("index must be an unsigned integer, got {value:?}"),
                        )
                    })?)
                }
                "wait" => {
                    let d: Dur = value
                        .parse()
                        .map_err(|e: String| ApiError::bad_request("wait", e))?;
                    q.wait = Some(d.to_std().min(MAX_WAIT));
                }
                "dc" if !value.is_empty() && value != datacenter => {
                    return Err(ApiError::bad_request(
                        "dc",
                        format!(
                            "unknown datacenter {value:?}: this agent serves {datacenter:?} only"
                        ),
                    ));
                }
                "filter" => {
                    return Err(ApiError::bad_request(
                        "filter",
                        "filter expressions are not supported by Signpost; use tag and passing",
                    ))
                }
                "passing" => q.passing = go_bool(&value),
                "tag" => q.tags.push(value),
                "recurse" => q.recurse = present(&value),
                "keys" => q.keys = present(&value),
                "raw" => q.raw = present(&value),
                "separator" => q.separator = Some(value),
                "cas" => {
                    q.cas = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "cas",
                            format!("cas must be an unsigned integer, got {value:?}"),
                        )
                    })?)
                }
                "flags" => {
                    q.flags = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "flags",
                            format!("flags must be an unsigned integer, got {value:?}"),
                        )
                    })?)
                }
                "note" => q.note = Some(value),
                "consistent" => q.consistent = present(&value),
                "acquire" | "release" => q.unsupported = Some(key),
                // Accepted and needing no action: stale (local reads are the default), cached,
                // token (until ACLs), near, ns, partition, replace-existing-checks, ...
                _ => {}
            }
        }
        Ok(q)
    }

    /// Waits, for a blocking query, until `wait_for` says the index moved past `index`.
    /// With `consistent`, first makes the read linearizable (an error if no leader confirms).
    pub async fn block<F, Fut>(&self, agent: &AppState, wait_for: F) -> Result<(), ApiError>
    where
        F: FnOnce(u64, Duration) -> Fut,
        Fut: Future<Output = u64>,
    {
        if self.consistent {
            crate::cluster::linearize(agent)
                .await
                .map_err(ApiError::Unavailable)?;
        }
        if let Some(index) = self.index.filter(|i| *i > 0) {
            let wait = self.wait.unwrap_or(DEFAULT_WAIT);
            // Consul adds up to wait/16 of jitter so that many watchers do not return at once.
            let jitter = rand::random_range(0..=wait.as_millis() as u64 / 16);
            let wait = wait + Duration::from_millis(jitter);
            tokio::select! {
                _ = wait_for(index, wait) => {}
                _ = agent.closed() => {}
            }
        }
        Ok(())
    }
}

/// Adds Consul's response headers.
pub fn with_meta(agent: &AppState, index: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    let known = agent.raft.metrics().borrow().current_leader.is_some();
    headers.insert(
        "x-consul-knownleader",
        HeaderValue::from_static(if known { "true" } else { "false" }),
    );
    let contact = agent.last_contact_ms().unwrap_or(0);
    headers.insert("x-consul-lastcontact", HeaderValue::from(contact));
    headers.insert("x-signpost-index", HeaderValue::from(index.max(1)));
    response
}
