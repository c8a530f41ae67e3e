//! The KV API: Consul's `/v1/kv/*` and Signpost's native `/api/v1/kv/*`, over one store.
//!
//! Both faces share semantics (`cas`, `flags`, `recurse`, `keys` with `separator`, `raw`,
//! blocking on the key's or prefix's own index); the native face answers JSON in snake_case and
//! errors as `{"error", "field"}`.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use signpost_core::kv::{self, KvEntry};
use signpost_core::Command;

use super::types::KvPair;
use super::{with_meta, Query};
use crate::http::{ApiError, AppState};

/// Which face a request came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Face {
    Consul,
    Native,
}

fn check_key(key: &str, allow_empty: bool) -> Result<(), ApiError> {
    if allow_empty && key.is_empty() {
        return Ok(());
    }
    kv::validate_key(key).map_err(|m| ApiError::bad_request("key", m))
}

async fn get(
    agent: AppState,
    key: String,
    raw: Option<String>,
    face: Face,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &agent.config.datacenter)?;
    let listing = q.recurse || q.keys;
    check_key(&key, listing)?;
    q.block(&agent, |i, w| {
        let agent = agent.clone();
        let key = key.clone();
        async move { agent.store.wait_for_kv(&key, listing, i, w).await }
    })
    .await?;
    let state = agent.store.read();
    let store = state.registry.kv();
    let index = store.index(&key, listing);
    let respond = |r: Response| with_meta(&agent, index, r);
    if q.keys {
        let keys: BTreeSet<String> = store
            .list(&key)
            .map(|e| match &q.separator {
                Some(sep) if !sep.is_empty() => match e.key[key.len()..].find(sep.as_str()) {
                    Some(pos) => e.key[..key.len() + pos + sep.len()].to_string(),
                    None => e.key.clone(),
                },
                _ => e.key.clone(),
            })
            .collect();
        if keys.is_empty() && face == Face::Consul {
            return Ok(respond(StatusCode::NOT_FOUND.into_response()));
        }
        return Ok(respond(Json(keys).into_response()));
    }
    let entries: Vec<&KvEntry> = if q.recurse {
        store.list(&key).collect()
    } else {
        store.get(&key).into_iter().collect()
    };
    if entries.is_empty() {
        return Ok(match face {
            Face::Consul => respond(StatusCode::NOT_FOUND.into_response()),
            Face::Native => {
                respond(ApiError::NotFound(format!("key {key:?} not found")).into_response())
            }
        });
    }
    if q.raw && !q.recurse {
        let e = entries[0];
        return Ok(respond(
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                e.value.clone(),
            )
                .into_response(),
        ));
    }
    Ok(match face {
        Face::Consul => {
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
            respond(Json(pairs).into_response())
        }
        Face::Native if q.recurse => respond(Json(entries).into_response()),
        Face::Native => respond(Json(entries[0]).into_response()),
    })
}

async fn put(
    agent: AppState,
    key: String,
    raw: Option<String>,
    body: Bytes,
) -> Result<bool, ApiError> {
    let q = Query::parse(raw.as_deref(), &agent.config.datacenter)?;
    if let Some(p) = &q.unsupported {
        return Err(ApiError::bad_request(
            p,
            "sessions and locks (acquire/release) are not supported by Signpost",
        ));
    }
    check_key(&key, false)?;
    if body.len() > kv::MAX_VALUE_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let command = Command::KvSet {
        key,
        value: body.to_vec(),
        flags: q.flags.unwrap_or(0),
        cas: q.cas,
    };
    match agent.propose(command).await? {
        signpost_core::Response::Kv(ok) => Ok(ok),
        other => Err(ApiError::Internal(format!("kv set answered {other:?}"))),
    }
}

async fn delete(agent: AppState, key: String, raw: Option<String>) -> Result<bool, ApiError> {
    let q = Query::parse(raw.as_deref(), &agent.config.datacenter)?;
    if q.recurse && q.cas.is_some() {
        return Err(ApiError::bad_request(
            "cas",
            "cas cannot be combined with recurse",
        ));
    }
    check_key(&key, q.recurse)?;
    match agent
        .propose(Command::KvDelete {
            key,
            recurse: q.recurse,
            cas: q.cas,
        })
        .await?
    {
        signpost_core::Response::Kv(ok) => Ok(ok),
        other => Err(ApiError::Internal(format!("kv delete answered {other:?}"))),
    }
}

fn index_now(agent: &AppState) -> u64 {
    agent.store.read().registry.last_index()
}

/// `GET /v1/kv/:key`
pub async fn consul_get(
    State(agent): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    get(agent, key, raw, Face::Consul).await
}

/// `GET /v1/kv/` (the root, with `recurse` or `keys`)
pub async fn consul_get_root(
    State(agent): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    get(agent, String::new(), raw, Face::Consul).await
}

/// `PUT /v1/kv/:key` → `true` or `false`
pub async fn consul_put(
    State(agent): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ok = put(agent.clone(), key, raw, body).await?;
    Ok(with_meta(&agent, index_now(&agent), Json(ok)))
}

/// `DELETE /v1/kv/:key` → `true` or `false`
pub async fn consul_delete(
    State(agent): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ok = delete(agent.clone(), key, raw).await?;
    Ok(with_meta(&agent, index_now(&agent), Json(ok)))
}

/// `DELETE /v1/kv/?recurse`
pub async fn consul_delete_root(
    State(agent): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ok = delete(agent.clone(), String::new(), raw).await?;
    Ok(with_meta(&agent, index_now(&agent), Json(ok)))
}

/// `GET /api/v1/kv/{key}`: `{"key","value"(base64),"flags",...}`; `?recurse` lists; `?keys`.
pub async fn native_get(
    State(agent): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    get(agent, key, raw, Face::Native).await
}

/// `PUT /api/v1/kv/{key}` with the raw value as body: 200 `{"ok": true}`, or 409 when `cas`
/// did not match.
pub async fn native_put(
    State(agent): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ok = put(agent.clone(), key.clone(), raw, body).await?;
    native_result(&agent, ok, &key)
}

/// `DELETE /api/v1/kv/{key}`: 204, or 409 when `cas` did not match.
pub async fn native_delete(
    State(agent): State<AppState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ok = delete(agent.clone(), key.clone(), raw).await?;
    if ok {
        Ok(with_meta(&agent, index_now(&agent), StatusCode::NO_CONTENT))
    } else {
        native_result(&agent, false, &key)
    }
}

fn native_result(agent: &AppState, ok: bool, key: &str) -> Result<Response, ApiError> {
    if ok {
        let state = agent.store.read();
        let entry = state.registry.kv().get(key).cloned();
        drop(state);
        Ok(with_meta(agent, index_now(agent), Json(entry)))
    } else {
        Ok(with_meta(
            agent,
            index_now(agent),
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
