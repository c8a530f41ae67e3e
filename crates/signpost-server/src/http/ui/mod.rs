//! The web UI under `/ui/`: pages rendered on the server from [`pages`]' compile-time templates,
//! with data read through the service layer like every other face, and one small script of our
//! own (`ui.js`) for the live parts and the writes. Everything is embedded in the binary.
//!
//! - `/ui/`: services; `/ui/services/{name}`: one service; `/ui/kv/…`: the KV tree;
//!   `/ui/cluster`: members and this agent.
//! - `/ui/fragments/…`: the live sections alone, which the script swaps in when the catalog
//!   changes (it follows `GET /api/v1/services?index=`) or a service's watch stream
//!   (`GET /api/v1/services/{name}/watch`) sends an event.
//! - `/ui/assets/{ui.js,ui.css}`: the embedded assets, with an `ETag`; pages link them with
//!   `?v=<content hash>`, which may be cached for good.
//! - `GET /` redirects to `/ui/` when the request accepts HTML.
//!
//! Tokens: the script keeps an ACL token in `sessionStorage` (asked for when the API answers
//! 401/403) and sends it as `X-Consul-Token` on its API calls and as `?token=` on the watch
//! stream. For the pages themselves it mirrors the token into a cookie scoped to `/ui`
//! (`signpost_token`, `SameSite=Strict`), which [`Access`] reads: that is the seam where the
//! pages' reads and the edit actions they offer get the caller's rights once ACLs exist.

pub mod pages;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::Markup;
use serde::Deserialize;
use signpost_api::ErrorBody;
use signpost_core::acl::{Access as AclAccess, Resource};
use signpost_core::validate;
use signpost_core::Instance;

use super::{ApiError, AppState};
use crate::service::kv::{KvFound, KvRead};
use crate::service::{self, Caller, ServiceError};
use pages::{Chrome, ClusterView, Nav, ServiceRow, Sort};

/// The script, embedded.
const UI_JS: &str = include_str!("ui.js");
/// The stylesheet, embedded.
const UI_CSS: &str = include_str!("ui.css");
/// The cookie the script mirrors the tab's token into, for the pages.
pub const TOKEN_COOKIE: &str = "signpost_token";

/// The UI's routes, merged into the agent's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(services_page))
        .route("/ui/fragments/services", get(services_fragment))
        .route("/ui/services/{service}", get(service_page))
        .route(
            "/ui/fragments/services/{service}/instances",
            get(instances_fragment),
        )
        .route("/ui/kv/", get(kv_root))
        .route("/ui/kv/{*path}", get(kv_page))
        .route("/ui/cluster", get(cluster_page))
        .route("/ui/assets/{file}", get(asset))
}

/// `GET /`: to the UI when a browser asks; anything else is told there is no such endpoint.
async fn root(headers: HeaderMap) -> Response {
    let html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    if html {
        Redirect::to("/ui/").into_response()
    } else {
        ApiError::NotFound("no such endpoint".into()).into_response()
    }
}

/// The token a page request carries in the [`TOKEN_COOKIE`] cookie (the script writes it with
/// `encodeURIComponent`). The agent's `caller` middleware reads it for `/ui` paths only, which
/// are all reads: a cookie never authorizes a write, so a cross-site form cannot use it.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .and_then(|(_, value)| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("t={value}"))
                .ok()
                .and_then(|mut pairs| pairs.pop())
                .map(|(_, token)| token)
        })
        .filter(|t| !t.is_empty())
}

/// What the caller of a page may see and do: the [`Caller`] the middleware resolved from the
/// token cookie. Pages read through the service layer with it (so a listing shows only what
/// the token may read) and offer only the actions it may take.
#[derive(Debug, Clone)]
pub struct Access {
    /// The caller's rights.
    pub caller: Caller,
    /// Whether the tab sent a token.
    pub token_set: bool,
}

/// A page handler's `Access`, from the caller the `caller` middleware put in the request.
impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Access, ApiError> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal("no caller: the caller middleware did not run".into())
        })?;
        Ok(Access::new(caller, &parts.headers))
    }
}

impl Access {
    /// The access of a page request: its resolved caller and whether it carried a token.
    pub fn new(caller: Caller, headers: &HeaderMap) -> Access {
        Access {
            caller,
            token_set: cookie_token(headers).is_some(),
        }
    }

    /// Whether the caller may write `key` (or keys under the prefix `key`), and so is offered
    /// the editor, delete and create.
    pub fn can_write_kv(&self, key: &str) -> bool {
        self.caller.allows(Resource::Key, key, AclAccess::Write)
    }

    fn chrome<'a>(&self, title: &'a str, nav: Nav) -> Chrome<'a> {
        Chrome {
            title,
            nav,
            assets: &ASSETS.version,
            token_set: self.token_set,
        }
    }
}

/// A rendered page with its status; never cached (it is live data).
fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(markup.into_string()),
    )
        .into_response()
}

/// An error as a page, worded as the API words it (its `ErrorBody`), with the status the API
/// would answer.
async fn error_page(access: &Access, title: &str, nav: Nav, error: ApiError) -> Response {
    let response = error.into_response();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), super::MAX_BODY)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| status.to_string());
    page(
        status,
        pages::error_page(&access.chrome(title, nav), status.as_u16(), &message),
    )
}

/// Query of the services page and its fragment.
#[derive(Debug, Default, Deserialize)]
struct ServicesQuery {
    /// Search text (name or tag).
    #[serde(default)]
    q: String,
    /// Sort name.
    #[serde(default)]
    sort: String,
}

/// Every service with its counts and tags, and the catalog index.
fn service_rows(agent: &AppState, caller: &Caller) -> (u64, Vec<ServiceRow>) {
    let (index, summaries) = service::services(agent, caller);
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    service::with_catalog(agent, caller, |_, instances| {
        for i in instances {
            if !i.tags.is_empty() {
                tags.entry(i.service.clone())
                    .or_default()
                    .extend(i.tags.iter().cloned());
            }
        }
    });
    let rows = summaries
        .into_iter()
        .map(|s| ServiceRow {
            tags: tags.remove(&s.name).unwrap_or_default(),
            name: s.name,
            counts: s.instances,
            has_definition: s.has_definition,
        })
        .collect();
    (index, rows)
}

/// `GET /ui/`
async fn services_page(
    State(agent): State<AppState>,
    access: Access,
    Query(q): Query<ServicesQuery>,
) -> Response {
    let sort = Sort::parse(&q.sort);
    let (index, mut rows) = service_rows(&agent, &access.caller);
    sort.apply(&mut rows);
    let chrome = access.chrome("Services", Nav::Services);
    page(
        StatusCode::OK,
        pages::services_page(&chrome, index, &rows, &q.q, sort),
    )
}

/// `GET /ui/fragments/services`
async fn services_fragment(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ServicesQuery>,
) -> Response {
    let sort = Sort::parse(&q.sort);
    let (index, mut rows) = service_rows(&agent, &caller);
    sort.apply(&mut rows);
    page(
        StatusCode::OK,
        pages::services_section(index, &rows, &q.q, sort),
    )
}

/// A service's index and instances (every status), copied out.
fn instances(agent: &AppState, caller: &Caller, service: &str) -> (u64, Vec<Instance>) {
    service::with_instances(agent, caller, service, |index, it| {
        (index, it.cloned().collect())
    })
}

/// `GET /ui/services/{service}`
async fn service_page(
    State(agent): State<AppState>,
    access: Access,
    Path(name): Path<String>,
) -> Response {
    let name = match validate::service_name(&name) {
        Ok(name) => name,
        Err(e) => return error_page(&access, "Service", Nav::Services, e.into()).await,
    };
    if let Err(e) = service::authorize(&access.caller, Resource::Service, &name, AclAccess::Read) {
        return error_page(&access, "Service", Nav::Services, e.into()).await;
    }
    let (index, list) = instances(&agent, &access.caller, &name);
    let definition = service::definition(&agent, &access.caller, &name).ok();
    let chrome = access.chrome(&name, Nav::Services);
    page(
        StatusCode::OK,
        pages::service_page(
            &chrome,
            &name,
            index,
            &list,
            definition.as_ref(),
            SystemTime::now(),
        ),
    )
}

/// `GET /ui/fragments/services/{service}/instances`
async fn instances_fragment(
    State(agent): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = validate::service_name(&name)?;
    service::authorize(&caller, Resource::Service, &name, AclAccess::Read)?;
    let (index, list) = instances(&agent, &caller, &name);
    Ok(page(
        StatusCode::OK,
        pages::instances_section(&name, index, &list, SystemTime::now()),
    ))
}

/// `GET /ui/kv/`
async fn kv_root(State(agent): State<AppState>, access: Access) -> Response {
    kv_view(&agent, &access, "").await
}

/// `GET /ui/kv/{path}`: a folder when the path ends with `/`, else a key.
async fn kv_page(
    State(agent): State<AppState>,
    access: Access,
    Path(path): Path<String>,
) -> Response {
    kv_view(&agent, &access, &path).await
}

async fn kv_view(agent: &AppState, access: &Access, path: &str) -> Response {
    let fail = |e: ServiceError| error_page(access, "Key/Value", Nav::Kv, e.into());
    if path.is_empty() || path.ends_with('/') {
        let read = KvRead {
            key: path.to_string(),
            keys: true,
            separator: Some("/".to_string()),
            ..KvRead::default()
        };
        let children: Vec<String> = match service::kv::get(agent, &access.caller, &read) {
            Ok((_, KvFound::Keys(keys))) => keys.into_iter().collect(),
            Ok((_, KvFound::Entries(entries))) => entries.into_iter().map(|e| e.key).collect(),
            Err(e) => return fail(e).await,
        };
        let chrome = access.chrome("Key/Value", Nav::Kv);
        return page(
            StatusCode::OK,
            pages::kv_folder(&chrome, path, &children, access.can_write_kv(path)),
        );
    }
    if let Err(e) = service::kv::check_key(path, false) {
        return fail(e).await;
    }
    if let Err(e) = service::authorize(&access.caller, Resource::Key, path, AclAccess::Read) {
        return fail(e).await;
    }
    match service::kv::entry(agent, path) {
        Some(entry) => {
            let chrome = access.chrome(&entry.key, Nav::Kv);
            page(
                StatusCode::OK,
                pages::kv_key(&chrome, &entry, access.can_write_kv(&entry.key)),
            )
        }
        None => fail(ServiceError::NoKey(path.to_string())).await,
    }
}

/// `GET /ui/cluster`
async fn cluster_page(State(agent): State<AppState>, access: Access) -> Response {
    let members = match service::members(&agent, &access.caller) {
        Ok(members) => members,
        Err(e) => return error_page(&access, "Cluster", Nav::Cluster, e.into()).await,
    };
    let m = agent.raft().metrics().borrow().clone();
    let view = ClusterView {
        members,
        node_id: agent.node_id(),
        node_name: agent.config().node_name(),
        datacenter: agent.config().datacenter.clone(),
        version: env!("CARGO_PKG_VERSION"),
        started_at: agent.started_at(),
        role: format!("{:?}", m.state).to_lowercase(),
        applied_index: m.last_applied.map(|l| l.index),
        last_log_index: m.last_log_index,
        last_contact_ms: agent.last_contact_ms(),
        guard: agent.health().guard(),
    };
    let chrome = access.chrome("Cluster", Nav::Cluster);
    page(
        StatusCode::OK,
        pages::cluster_page(&chrome, &view, SystemTime::now()),
    )
}

/// The embedded assets and their content hashes.
struct Assets {
    /// Hash of both files: the `?v=` the pages link them with.
    version: String,
    /// `ETag` of the script.
    js_etag: String,
    /// `ETag` of the stylesheet.
    css_etag: String,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let js = fnv1a(UI_JS.as_bytes());
    let css = fnv1a(UI_CSS.as_bytes());
    Assets {
        version: format!("{:016x}", js ^ css.rotate_left(1)),
        js_etag: format!("\"{js:016x}\""),
        css_etag: format!("\"{css:016x}\""),
    }
});

/// FNV-1a, 64 bits: a content hash for cache validation (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Query of an asset request.
#[derive(Debug, Default, Deserialize)]
struct AssetQuery {
    /// The version the page linked.
    #[serde(default)]
    v: String,
}

/// `GET /ui/assets/{file}`: 304 when the `If-None-Match` names the current content; cached for
/// good when asked for by the current version, else revalidated on every use.
async fn asset(
    Path(file): Path<String>,
    Query(q): Query<AssetQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let assets = &*ASSETS;
    let (body, content_type, etag) = match file.as_str() {
        "ui.js" => (UI_JS, "text/javascript; charset=utf-8", &assets.js_etag),
        "ui.css" => (UI_CSS, "text/css; charset=utf-8", &assets.css_etag),
        _ => return Err(ApiError::NotFound(format!("no such asset {file:?}"))),
    };
    let cache = if q.v == assets.version {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let etag_value = HeaderValue::from_str(etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let head = [
        (header::ETAG, etag_value),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
    ];
    if fresh {
        return Ok((StatusCode::NOT_MODIFIED, head).into_response());
    }
    Ok((
        head,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}
