//! Maintenance and lifecycle state of an instance, on the native API:
//! `PUT /api/v1/services/{service}/instances/{id}/maintenance?enable=true&reason=…` and
//! `PUT /api/v1/services/{service}/instances/{id}/state` with `{"state": "stopping"}`.
//! The query parsing of `enable`/`reason` is shared with Consul's
//! `PUT /v1/agent/service/maintenance/{id}`.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use signpost_core::validate;
use signpost_core::InstanceKey;

use super::{with_index, ApiError, AppState, JsonBody};
use crate::service::{self, Caller};

/// What a maintenance request asks: `enable` (required) and an optional `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceQuery {
    /// True: put the instance into maintenance; false: take it out.
    pub enable: bool,
    /// Why (kept with the mark; shown in listings and Consul's maintenance check).
    pub reason: Option<String>,
}

impl MaintenanceQuery {
    /// Parses `enable=true|false&reason=…`; `enable` missing or not a boolean is a 400 naming
    /// it. Other parameters are ignored, as Consul does.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request("query", format!("malformed query string: {e}")))?;
        let mut enable = None;
        let mut reason = None;
        for (key, value) in pairs {
            match key.as_str() {
                "enable" => {
                    enable = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(ApiError::bad_request(
                                "enable",
                                format!("enable must be true or false, got {other:?}"),
                            ))
                        }
                    })
                }
                "reason" => reason = Some(value),
                _ => {}
            }
        }
        let enable = enable
            .ok_or_else(|| ApiError::bad_request("enable", "give enable=true or enable=false"))?;
        Ok(MaintenanceQuery { enable, reason })
    }
}

/// `PUT /api/v1/services/{service}/instances/{id}/maintenance?enable=…&reason=…`: answers the
/// instance after the change.
pub async fn maintenance(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((service, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = MaintenanceQuery::parse(raw.as_deref())?;
    let key = InstanceKey::new(validate::service_name(&service)?, id);
    let instance = service::set_maintenance(&agent, &caller, &key, q.enable, q.reason).await?;
    Ok(with_index(instance.modify_index, Json(instance)))
}

/// The body of `PUT …/state`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    /// `starting`, `up` or `stopping`; text, so a wrong name is reported against this field.
    state: Option<String>,
}

/// `PUT /api/v1/services/{service}/instances/{id}/state` with `{"state": "stopping"}`: answers
/// the instance after the change.
pub async fn state(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((service, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<StateBody>,
) -> Result<Response, ApiError> {
    let text = body
        .state
        .ok_or_else(|| ApiError::bad_request("state", "give state: starting, up or stopping"))?;
    let state = validate::lifecycle(&text)?;
    let key = InstanceKey::new(validate::service_name(&service)?, id);
    let instance = service::set_lifecycle(&agent, &caller, &key, state).await?;
    Ok(with_index(instance.modify_index, Json(instance)))
}
