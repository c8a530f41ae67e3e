//! The Consul-compatible HTTP API, served on the same port as the native API and over the same
//! registry: an instance registered through one face is visible through the other.
//!
//! - [`acl`]: `/v1/acl/*` (bootstrap, policies, tokens).
//! - [`agent`]: `/v1/agent/*` (service and check registration, TTL updates, self).
//! - [`cache`]: per-service reads rendered once per index and filter, shared by every caller
//!   who may read them.
//! - [`catalog`]: `/v1/catalog/*`, `/v1/health/*`, `/v1/status/*`.
//! - [`kv`]: `/v1/kv/*` (the native `/api/v1/kv/*` is [`crate::http::kv`]; both call
//!   [`crate::service::kv`]).
//! - [`types`]: Consul's JSON shapes, built from Signpost's model.
//!
//! Every GET takes Consul's blocking-query parameters (`index`, `wait`), answers with
//! `X-Consul-Index` (never 0; it moves only when that result's data changes),
//! `X-Consul-KnownLeader` and `X-Consul-LastContact`, and accepts `stale`, `consistent`, `dc`
//! (this agent's only), and a token in `X-Consul-Token` or `?token=`.

pub mod acl;
pub mod agent;
pub mod cache;
pub mod catalog;
pub mod kv;
pub mod types;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;

pub use crate::http::query::Query;
use crate::http::AppState;

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
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(agent::service_maintenance),
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
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/policy", put(acl::create_policy))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::read_policy)
                .put(acl::update_policy)
                .delete(acl::delete_policy),
        )
        .route("/v1/acl/policies", get(acl::list_policies))
        .route("/v1/acl/token", put(acl::create_token))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{accessor_id}",
            get(acl::read_token)
                .put(acl::update_token)
                .delete(acl::delete_token),
        )
        .route("/v1/acl/tokens", get(acl::list_tokens))
        .route(
            "/v1/kv/",
            get(kv::consul_get_root).delete(kv::consul_delete_root),
        )
}

/// Puts Consul's headers on every answer under `/v1/` that has none yet: Consul clients expect
/// them on every answer, errors and unknown endpoints included.
pub async fn headers(State(agent): State<AppState>, req: Request, next: Next) -> Response {
    let consul = req.uri().path().starts_with("/v1/");
    let response = next.run(req).await;
    if consul && !response.headers().contains_key("x-consul-index") {
        let index = crate::service::catalog_index(&agent);
        return with_meta(&agent, index, response);
    }
    response
}

/// Adds Consul's response headers.
pub fn with_meta(agent: &AppState, index: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    let known = agent.cluster().knows_leader();
    headers.insert(
        "x-consul-knownleader",
        HeaderValue::from_static(if known { "true" } else { "false" }),
    );
    let contact = agent.last_contact_ms().unwrap_or(0);
    headers.insert("x-consul-lastcontact", HeaderValue::from(contact));
    headers.insert("x-signpost-index", HeaderValue::from(index.max(1)));
    response
}
