//! The HTTP face of the agent: routes, the JSON body extractor, and the one place where errors
//! become responses.
//!
//! - [`services`]: the native registry API under `/api/v1/services`.
//! - [`watch`]: blocking queries and the Server-Sent Events watch stream.
//! - [`cache`]: the rendered listings both of them answer from, and the watch stream's frames.
//! - [`kv`]: the native KV API under `/api/v1/kv`.
//! - [`query`]: the blocking-query parameters the KV and Consul faces share.
//! - [`agent_api`]: `/api/v1/agent/self` and `/metrics`.
//! - [`cluster_api`]: `/api/v1/cluster/*`: members, join, remove, leave.
//! - [`raft`]: traffic between members under `/raft` (Raft RPCs, forwarded requests).
//! - [`audit`]: the audit log of writes.
//!
//! Every request's token is resolved once, by [`caller`], into a [`service::Caller`] in the
//! request's extensions; handlers hand it to the service layer, which alone decides what it
//! may do.
//! - [`ui`]: the web UI under `/ui/` (and `/`'s redirect to it).

pub mod agent_api;
pub mod audit;
pub mod cache;
pub mod cluster_api;
pub mod compression;
pub mod json_errors;
pub mod kv;
pub mod lifecycle;
pub mod query;
pub mod raft;
pub mod services;
pub mod ui;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use signpost_api::ErrorBody;
use signpost_core::acl::AclRefusal;
use signpost_core::validate::ValidationError;

use crate::agent::{Agent, ProposeError};
use crate::cluster::ClusterError;
use crate::service::{self, ServiceError};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Header carrying the index a response reflects (the wire crate names it).
pub use signpost_api::INDEX_HEADER;

/// What every handler is given: the agent.
pub type AppState = Arc<Agent>;

/// Builds the agent's router: the public API, and the member-to-member routes ([`raft`]) too
/// when the agent has no dedicated Raft listener (with one, they are served there only).
pub fn router(agent: AppState) -> Router {
    let members = if agent.raft_on_http() {
        raft::routes(&agent)
    } else {
        Router::new()
    };
    Router::new()
        .route("/api/v1/services", get(services::list_services))
        .route(
            "/api/v1/services/{service}/instances",
            post(services::register).get(services::list_instances),
        )
        .route(
            "/api/v1/services/{service}/instances/{id}",
            get(services::get_instance).delete(services::deregister),
        )
        .route(
            "/api/v1/services/{service}/instances/{id}/heartbeat",
            put(services::heartbeat),
        )
        .route(
            "/api/v1/services/{service}/instances/{id}/maintenance",
            put(lifecycle::maintenance),
        )
        .route(
            "/api/v1/services/{service}/instances/{id}/state",
            put(lifecycle::state),
        )
        .route("/api/v1/heartbeats", put(services::heartbeats))
        .route("/api/v1/services/{service}/watch", get(watch::sse))
        .route(
            "/api/v1/services/{service}/definition",
            put(services::put_definition)
                .get(services::get_definition)
                .delete(services::delete_definition),
        )
        .route(
            "/api/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/api/v1/agent/self", get(agent_api::agent_self))
        .route("/metrics", get(agent_api::metrics))
        .route("/health", get(crate::vitals::health))
        .route("/api/v1/cluster/members", get(cluster_api::members))
        .route("/api/v1/cluster/join", post(cluster_api::join))
        .route("/api/v1/cluster/remove", post(cluster_api::remove))
        .route("/api/v1/cluster/leave", post(cluster_api::leave))
        .merge(members)
        .merge(ui::routes())
        .merge(crate::consul::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(json_errors::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            crate::consul::headers,
        ))
        .layer(axum::middleware::from_fn_with_state(agent.clone(), caller))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            audit::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            crate::vitals::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(agent.clone(), observe))
        .layer(axum::middleware::from_fn(crate::telemetry::server_span))
        .layer(axum::Extension(Arc::new(audit_log(&agent))))
        .layer(axum::Extension(Arc::new(cache::ListingCache::default())))
        .layer(axum::Extension(Arc::new(cache::FrameCache::default())))
        .layer(axum::Extension(Arc::new(
            crate::consul::cache::RenderCache::default(),
        )))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(compression::layer())
        .with_state(agent)
}

/// The audit log the configuration asks for (a file that cannot be opened is logged; audit
/// lines then go to the tracing target only).
fn audit_log(agent: &AppState) -> audit::AuditLog {
    match &agent.config().audit.path {
        Some(path) => audit::AuditLog::open(path).unwrap_or_else(|e| {
            tracing::error!("cannot open the audit log {}: {e}", path.display());
            audit::AuditLog::default()
        }),
        None => audit::AuditLog::default(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts requests by route and status, records latency, and puts the index header on every
/// response that does not carry one. (The Consul face's own headers are
/// [`crate::consul::headers`]'s.)
async fn observe(State(agent): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method()).to_string();
    let started = Instant::now();
    let mut response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::with_local_recorder(agent.recorder(), || {
        let labels = [("route", route), ("method", method), ("status", status)];
        metrics::counter!("signpost_http_requests_total", &labels).increment(1);
        metrics::histogram!("signpost_http_request_duration_seconds", &labels[..2]).record(elapsed);
    });
    if !response.headers().contains_key(INDEX_HEADER) {
        let index = service::last_index(&agent).max(1);
        response
            .headers_mut()
            .insert(INDEX_HEADER, HeaderValue::from(index));
    }
    response
}

/// A request method as a metric label: one of a fixed set, so that invented methods cannot
/// create new series (anything else is `other`).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The header a listing answers when it left something out for lack of rights.
pub const FILTERED_HEADER: &str = "x-consul-results-filtered-by-acls";

/// The request's token: `X-Consul-Token`, `Authorization: Bearer <secret>` or `?token=`.
fn request_token(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(v) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(secret) = v.strip_prefix("Bearer ").map(str::trim) {
            if !secret.is_empty() {
                return Some(secret.to_string());
            }
        }
    }
    let query = req.uri().query()?;
    if !query.contains("token=") {
        return None;
    }
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v)
}

/// Resolves the request's token once into the [`service::Caller`] every handler hands to the
/// service layer (an unknown or expired token is 403 `ACL not found` before any handler runs).
/// After the handler, marks a filtered listing with [`FILTERED_HEADER`] and leaves the caller
/// in the response's extensions for the audit log.
async fn caller(State(agent): State<AppState>, mut req: Request, next: Next) -> Response {
    let raft = req.uri().path().starts_with("/raft/");
    let ui = req.uri().path().starts_with("/ui");
    let mut from_cookie = false;
    let token = if agent.acl().enabled() && !raft {
        request_token(&req).or_else(|| {
            // The UI's pages (all reads) carry the tab's token in a cookie.
            let token = ui.then(|| ui::cookie_token(req.headers())).flatten();
            from_cookie = token.is_some();
            token
        })
    } else {
        None
    };
    let caller = if raft {
        service::Caller::internal()
    } else {
        match service::acl::resolve(&agent, token.as_deref()) {
            Ok(caller) => caller,
            // A stale cookie (its token deleted or expired) shows the pages as the anonymous
            // token sees them; the script asks for a new token when the API refuses it.
            Err(_) if from_cookie => match service::acl::resolve(&agent, None) {
                Ok(caller) => caller,
                Err(e) => return ApiError::from(e).into_response(),
            },
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    req.extensions_mut().insert(caller.clone());
    let mut response = next.run(req).await;
    if caller.filtered() {
        response
            .headers_mut()
            .insert(FILTERED_HEADER, HeaderValue::from_static("true"));
    }
    response.extensions_mut().insert(caller);
    response
}

/// Puts the index header on a response.
pub fn with_index(index: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index.max(1)));
    response
}

/// Every error the API answers with. Client mistakes say what is wrong; internal failures are
/// logged and answered generically.
#[derive(Debug)]
pub enum ApiError {
    /// 400, naming the field at fault.
    Invalid(ValidationError),
    /// 400, with a message and maybe a field.
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field at fault, if one is.
        field: Option<String>,
    },
    /// 401: a member call without the cluster secret (or with a wrong one), or a feature
    /// that is off (Consul's answer to ACL calls with ACLs off).
    Unauthorized(String),
    /// 403: the token lacks a right, or is unknown.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 413.
    PayloadTooLarge,
    /// 429: a per-client limit ([`crate::listener::limits`]); `Retry-After` when known.
    TooManyRequests {
        /// Which limit, and what to do.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: Option<u64>,
    },
    /// 429: the state is full: a `[limits]` bound (`field` names it, `limits.max_instances`).
    LimitReached {
        /// What was refused, with the limit's value.
        message: String,
        /// The limit, as `limits.<key>`.
        limit: String,
    },
    /// 413: one write larger than `limits.max_entry_bytes` (the field names the limit).
    EntryTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// 503: try again (no leader, leader unreachable).
    Unavailable(String),
    /// 500: logged, answered generically.
    Internal(String),
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Unavailable { .. } | ProposeError::Timeout(_) => {
                ApiError::Unavailable(e.to_string())
            }
            ProposeError::Fatal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// The one place a service-layer failure becomes a status.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(e) => ApiError::Invalid(e),
            ServiceError::NotRegistered(_)
            | ServiceError::NoDefinition(_)
            | ServiceError::NoKey(_) => ApiError::NotFound(e.to_string()),
            ServiceError::CheckTarget(_) => ApiError::bad_request("check", e.to_string()),
            ServiceError::NotTracked(_) | ServiceError::NotTtl(_) => {
                ApiError::bad_request("check", e.to_string())
            }
            ServiceError::TooLarge { .. } => ApiError::PayloadTooLarge,
            ServiceError::Limit { limit, message } => ApiError::LimitReached { message, limit },
            ServiceError::EntryTooLarge { limit, .. } => ApiError::EntryTooLarge { limit },
            ServiceError::Cluster(e) => e.into(),
            ServiceError::Propose(e) => e.into(),
            ServiceError::PermissionDenied { .. } | ServiceError::AclNotFound => {
                ApiError::Forbidden(e.to_string())
            }
            ServiceError::AclDisabled => ApiError::Unauthorized(e.to_string()),
            ServiceError::Acl(ref refusal) => match refusal {
                AclRefusal::AlreadyBootstrapped => ApiError::Forbidden(e.to_string()),
                AclRefusal::NoSuchPolicy(_) | AclRefusal::NoSuchToken(_) => {
                    ApiError::NotFound(e.to_string())
                }
                AclRefusal::Rules(_) => ApiError::bad_request("Rules", e.to_string()),
                AclRefusal::DuplicateName(_) | AclRefusal::BadName(_) => {
                    ApiError::bad_request("Name", e.to_string())
                }
                AclRefusal::ExpirationChanged | AclRefusal::ExpirationPast => {
                    ApiError::bad_request("ExpirationTime", e.to_string())
                }
                AclRefusal::DuplicateToken | AclRefusal::Builtin(_) => ApiError::BadRequest {
                    message: e.to_string(),
                    field: None,
                },
            },
            ServiceError::Unexpected { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::NotAMember(_) => ApiError::NotFound(e.to_string()),
            _ => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry = None;
        let (status, message, field) = match self {
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, e.message, Some(e.field)),
            ApiError::BadRequest { message, field } => (StatusCode::BAD_REQUEST, message, field),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m, None),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m, None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m, None),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint".to_string(),
                None,
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_BODY} bytes"),
                None,
            ),
            ApiError::TooManyRequests {
                message,
                retry_after,
            } => {
                retry = retry_after;
                (StatusCode::TOO_MANY_REQUESTS, message, None)
            }
            ApiError::LimitReached { message, limit } => {
                (StatusCode::TOO_MANY_REQUESTS, message, Some(limit))
            }
            ApiError::EntryTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the write is larger than {limit} bytes"),
                Some("limits.max_entry_bytes".to_string()),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m, None),
            ApiError::Internal(cause) => {
                tracing::error!("internal error: {cause}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the agent's log".to_string(),
                    None,
                )
            }
        };
        let body = ErrorBody {
            error: message,
            field,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON request body whose errors name the offending field (`port`, `check.ttl`, …).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest {
                    message: rejection.body_text(),
                    field: None,
                }
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest {
                message: "request body is empty; expected a JSON object".into(),
                field: None,
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = format!("invalid JSON body: {}", e.inner());
                ApiError::BadRequest {
                    message,
                    field: (path != ".").then_some(path),
                }
            })
    }
}
