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
//! - [`ui`]: the web UI under `/ui/` (and `/`'s redirect to it).

pub mod agent_api;
pub mod cache;
pub mod cluster_api;
pub mod kv;
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

/// Builds the agent's router.
pub fn router(agent: AppState) -> Router {
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
        .route("/api/v1/cluster/members", get(cluster_api::members))
        .route("/api/v1/cluster/join", post(cluster_api::join))
        .route("/api/v1/cluster/remove", post(cluster_api::remove))
        .route("/api/v1/cluster/leave", post(cluster_api::leave))
        .merge(raft::routes())
        .merge(ui::routes())
        .merge(crate::consul::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            crate::consul::headers,
        ))
        .layer(axum::middleware::from_fn_with_state(agent.clone(), observe))
        .layer(axum::Extension(Arc::new(cache::ListingCache::default())))
        .layer(axum::Extension(Arc::new(cache::FrameCache::default())))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
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
    let method = req.method().to_string();
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
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 413.
    PayloadTooLarge,
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
            ServiceError::NotTracked(_) | ServiceError::NotTtl(_) => {
                ApiError::bad_request("check", e.to_string())
            }
            ServiceError::TooLarge { .. } => ApiError::PayloadTooLarge,
            ServiceError::Cluster(e) => e.into(),
            ServiceError::Propose(e) => e.into(),
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
        let (status, message, field) = match self {
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, e.message, Some(e.field)),
            ApiError::BadRequest { message, field } => (StatusCode::BAD_REQUEST, message, field),
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
        (status, Json(body)).into_response()
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
