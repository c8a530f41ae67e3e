//! Consul's KV API, `/v1/kv/*`: the operations of [`crate::service::kv`] (shared with the native
//! `/api/v1/kv/*`), answered in Consul's shapes: `KvPair` lists, a bare 404 for a missing key,
//! `true`/`false` for writes.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::types::KvPair;
use super::{with_meta, Query};
use crate::http::{ApiError, AppState};
use crate::service::kv::{self, KvFound};
use crate::service::{self, Caller};

fn parse(agent: &AppState, raw: Option<&str>) -> Result<Query, ApiError> {
    Query::parse(raw, &agent.config().datacenter)
}

async fn get(
    agent: AppState,
    caller: Caller,
    key: String,
    raw: Option<String>,
) -> Result<Response, ApiError> {
    let q = parse(&agent, raw.as_deref())?;
    let read = q.kv_read(key);
    kv::check_key(&read.key, read.listing())?;
    q.block(&agent, |i, w| kv::wait(&agent, &read, i, w))
        .await?;
    let (index, found) = kv::get(&agent, &caller, &read)?;
    let response = match found {
        KvFound::Keys(keys) if keys.is_empty() => StatusCode::NOT_FOUND.into_response(),
        KvFound::Keys(keys) => Json(keys).into_response(),
        KvFound::Entries(entries) if entries.is_empty() => StatusCode::NOT_FOUND.into_response(),
        KvFound::Entries(entries) if q.raw && !q.recurse => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            entries[0].value.clone(),
        )
            .into_response(),
        KvFound::Entries(entries) => {
            let pairs: Vec<KvPair> = entries
                .iter()
                .map(|e| KvPair {
                    key: &e.key,
                    value: &e.value,
                    flags: e.flags,
                    create_index: e.create_index,
                    modify_index: e.modify_index,
                    lock_index: e.lock_index,
                })
                .collect();
            Json(pairs).into_response()
        }
    };
    Ok(with_meta(&agent, index, response))
}

async fn delete(
    agent: AppState,
    caller: Caller,
    key: String,
    raw: Option<String>,
) -> Result<Response, ApiError> {
    let q = parse(&agent, raw.as_deref())?;
    let ok = kv::delete(&agent, &caller, key, q.recurse, q.cas).await?;
    Ok(with_meta(&agent, service::last_index(&agent), Json(ok)))
}

/// `GET /v1/kv/:key`
pub async fn consul_get(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    get(agent, caller, key, raw).await
}

/// `GET /v1/kv/` (the root, with `recurse` or `keys`)
pub async fn consul_get_root(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    get(agent, caller, String::new(), raw).await
}

/// `PUT /v1/kv/:key` → `true` or `false`
pub async fn consul_put(
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
        key,
        body.to_vec(),
        q.flags.unwrap_or(0),
        q.cas,
    )
    .await?;
    Ok(with_meta(&agent, service::last_index(&agent), Json(ok)))
}

/// `DELETE /v1/kv/:key` → `true` or `false`
pub async fn consul_delete(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    delete(agent, caller, key, raw).await
}

/// `DELETE /v1/kv/?recurse`
pub async fn consul_delete_root(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    delete(agent, caller, String::new(), raw).await
}
