//! The one place where proxy failures become responses: JSON bodies whose status says what
//! happened (404 no route, 400 a refused path, 503 nothing to send to, 502 the upstream failed, 504 it was too
//! slow). An upstream that answers, even with a 5xx, is passed through as it answered.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::ProxyBody;

/// Why the gateway answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request's host and path.
    #[error("no route for {path}")]
    NoRoute {
        /// The request path.
        path: String,
    },
    /// The request's path is refused before routing (see [`crate::route::path`]).
    #[error("bad request path: {reason}")]
    BadPath {
        /// Which rule it breaks.
        reason: crate::route::path::PathError,
    },
    /// An upgrade (WebSocket) request while `[limits] max_upgraded` upgraded connections are
    /// open.
    #[error("too many upgraded connections (limits.max_upgraded = {limit})")]
    UpgradeLimit {
        /// The configured cap.
        limit: usize,
    },
    /// A request for one more service than `[auto_routes] max_services` follows.
    #[error("too many services routed by name (auto_routes.max_services = {limit})")]
    AutoRouteLimit {
        /// The configured cap.
        limit: usize,
    },
    /// The route's service has no healthy instance (or none with the route's tag).
    #[error("no healthy instance of {service}")]
    NoInstances {
        /// The service.
        service: String,
    },
    /// The service has instances but every one's circuit breaker is open.
    #[error("every instance of {service} is failing (circuits open)")]
    CircuitOpen {
        /// The service.
        service: String,
    },
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream {upstream} of {service} failed: {reason}")]
    Upstream {
        /// The service.
        service: String,
        /// The instance address.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// The upstream did not answer (or could not be connected to) in time.
    #[error("upstream {upstream} of {service} timed out: {reason}")]
    Timeout {
        /// The service.
        service: String,
        /// The instance address.
        upstream: String,
        /// Which timeout.
        reason: String,
    },
}

/// The JSON error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    /// What happened, for people.
    error: String,
    /// What happened, for programs: `no_route`, `bad_path`, `upgrade_limit`, `auto_route_limit`, `no_instances`, `circuit_open`,
    /// `upstream_failed`, `upstream_timeout`.
    kind: &'static str,
    /// The service the route leads to, when there is a route.
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    /// The request id (also in the `X-Request-Id` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::BadPath { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UpgradeLimit { .. } | ProxyError::AutoRouteLimit { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NoInstances { .. } | ProxyError::CircuitOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `kind` field of the JSON body (also the `kind` label of error metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::BadPath { .. } => "bad_path",
            ProxyError::UpgradeLimit { .. } => "upgrade_limit",
            ProxyError::AutoRouteLimit { .. } => "auto_route_limit",
            ProxyError::NoInstances { .. } => "no_instances",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::Upstream { .. } => "upstream_failed",
            ProxyError::Timeout { .. } => "upstream_timeout",
        }
    }

    fn service(&self) -> Option<&str> {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::BadPath { .. }
            | ProxyError::UpgradeLimit { .. }
            | ProxyError::AutoRouteLimit { .. } => None,
            ProxyError::NoInstances { service }
            | ProxyError::CircuitOpen { service }
            | ProxyError::Upstream { service, .. }
            | ProxyError::Timeout { service, .. } => Some(service),
        }
    }

    /// The response: the status, a JSON body, and the request id header when there is one.
    pub fn to_response(&self, request_id: Option<&HeaderValue>) -> Response<ProxyBody> {
        let body = ErrorBody {
            error: self.to_string(),
            kind: self.kind(),
            service: self.service(),
            request_id: request_id.and_then(|v| v.to_str().ok()),
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        json_response(self.status(), json, request_id)
    }
}

/// A JSON response of `status` with `json` as its body.
pub(crate) fn json_response(
    status: StatusCode,
    json: Vec<u8>,
    request_id: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = request_id {
        headers.insert(crate::headers::X_REQUEST_ID.clone(), id.clone());
    }
    response
}
