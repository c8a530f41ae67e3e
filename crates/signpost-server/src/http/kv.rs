//! The native KV API under `/api/v1/kv/*`: JSON in snake_case, errors as `{"error", "field"}`,
//! the index in `X-Signpost-Index`. The operations are [`crate::service::kv`]'s, shared with
//! Consul's `/v1/kv/*`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::query::Query;
use super::{with_index, ApiError, AppState};
use crate::service::kv::{self, KvFound};
use crate::service::{self, Caller, ServiceError};

fn parse(agent: &AppState, raw: Option<&str>) -> Result<Query, ApiError> {
    Query::parse(raw, &agent.config().datacenter)
}

/// `GET /api/v1/kv/{key}`: `{"key","value"(base64),"flags",...}`; `?recurse` lists; `?keys`.
pub async fn get(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, raw.as_deref())?;
    let read = q.kv_read(key);
    kv::check_key(&read.key, read.listing())?;
    q.block(&agent, |i, w| kv::wait(&agent, &read, i, w))
        .await?;
    let (index, found) = kv::get(&agent, &caller, &read)?;
    let response = match found {
        KvFound::Keys(keys) => Json(keys).into_response(),
        KvFound::Entries(entries) if entries.is_empty() => {
            ApiError::from(ServiceError::NoKey(read.key)).into_response()
        }
        KvFound::Entries(entries) if q.raw && !q.recurse => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            entries[0].value.clone(),
        )
            .into_response(),
        KvFound::Entries(entries) if q.recurse => Json(entries).into_response(),
        KvFound::Entries(entries) => Json(&entries[0]).into_response(),
    };
    Ok(with_index(index, response))
}

/// `PUT /api/v1/kv/{key}` with the raw value as body: 200 with the entry, or 409 when `cas`
/// did not match.
pub async fn put(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = parse(&agent, raw.as_deref())?;
    q.refuse_locks()?;
    let ok = kv::put(
        &agent,
        &caller,
        key.clone(),
        body.to_vec(),
        q.flags.unwrap_or(0),
        q.cas,
    )
    .await?;
    answer(&agent, ok, &key)
}

/// `DELETE /api/v1/kv/{key}`: 204, or 409 when `cas` did not match.
pub async fn delete(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse(&agent, raw.as_deref())?;
    let ok = kv::delete(&agent, &caller, key.clone(), q.recurse, q.cas).await?;
    if ok {
        Ok(with_index(
            service::last_index(&agent),
            StatusCode::NO_CONTENT,
        ))
    } else {
        answer(&agent, false, &key)
    }
}

/// The entry after a write, or the 409 of a `cas` that did not match.
fn answer(agent: &AppState, ok: bool, key: &str) -> Result<Response, ApiError> {
    let index = service::last_index(agent);
    if ok {
        Ok(with_index(index, Json(kv::entry(agent, key))))
    } else {
        Ok(with_index(
            index,
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": format!("cas index does not match the current index of {key:?}"),
                    "field": "cas",
                })),
            ),
        ))
    }
}
