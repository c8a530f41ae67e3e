//! ACL tokens: the Signpost and Consul registries send their token as `X-Consul-Token` on
//! every call (short calls, SSE watches, blocking queries), and a 403 is
//! `RegistryError::Forbidden` with the agent's message, answered once and never retried on
//! another agent. Against a recording server that refuses what its script says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use signpost_client::registry::consul::{ConsulOptions, ConsulRegistry};
use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
use signpost_client::registry::{RegistrationSpec, Registry, RegistryError};
use signpost_client::Instance;

/// One request the recorder saw: method, path and query, `X-Consul-Token`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
}

/// What the recorder answers: the catalog listings answer once (so the next query is a
/// blocking one), then everything is refused.
#[derive(Default)]
struct Recorder {
    seen: Vec<Seen>,
    catalog_answered: bool,
}

type Shared = Arc<Mutex<Recorder>>;

const DENIED: &str = "permission denied: token lacks service:write on \"web\"";

async fn answer(
    State(rec): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let mut rec = rec.lock().unwrap();
    rec.seen.push(Seen {
        method: method.to_string(),
        path: uri.path_and_query().unwrap().to_string(),
        token: headers
            .get("x-consul-token")
            .map(|v| v.to_str().unwrap().to_string()),
    });
    let catalog = matches!(uri.path(), "/api/v1/services" | "/v1/catalog/services");
    if catalog && !rec.catalog_answered {
        rec.catalog_answered = true;
        let body = if uri.path() == "/api/v1/services" {
            json!([])
        } else {
            json!({})
        };
        return (
            [("x-signpost-index", "5"), ("x-consul-index", "5")],
            axum::Json(body),
        )
            .into_response();
    }
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "error": DENIED })),
    )
        .into_response()
}

/// A recording server on a loopback port; its base URL, its record, and the task to abort.
async fn recorder() -> (String, Shared, tokio::task::JoinHandle<()>) {
    let rec = Shared::default();
    let app = axum::Router::new().fallback(answer).with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, rec, task)
}

fn spec() -> RegistrationSpec {
    RegistrationSpec {
        instance: Instance {
            id: "web-1".into(),
            service: "web".into(),
            address: "10.0.0.9".into(),
            port: 80,
            tags: vec![],
            metadata: Default::default(),
            weight: 1,
            state: Default::default(),
            maintenance: None,
        },
        ttl: Duration::from_secs(5),
        deregister_after: None,
        check: None,
    }
}

/// Asserts `result` is `Forbidden` carrying the agent's message.
#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, RegistryError>) {
    match result {
        Err(e @ RegistryError::Forbidden { .. }) => {
            assert!(e.is_forbidden());
            assert!(!e.is_unavailable());
            let RegistryError::Forbidden { body, .. } = &e else {
                unreachable!()
            };
            assert_eq!(body.error, DENIED);
            assert!(e.to_string().contains(DENIED), "{e}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

async fn next<T>(stream: &mut futures::stream::BoxStream<'static, T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item within 10 s")
}

/// Every call of `registry` is refused once, with the token on it; a second agent behind the
/// refusing one is never asked.
async fn refused_everywhere(registry: &dyn Registry) {
    assert_forbidden(registry.register(&spec()).await);
    assert_forbidden(registry.heartbeat("web", "web-1").await);
    assert_forbidden(registry.deregister("web", "web-1").await);
    assert_forbidden(registry.list("web").await);
    let mut watch = registry.watch("web");
    assert_forbidden(next(&mut watch).await.expect("an error"));
    assert!(next(&mut watch).await.is_none(), "a refusal ends the watch");
    let mut catalog = registry.watch_services();
    let first = next(&mut catalog).await.expect("the first catalog answer");
    assert_eq!(first.unwrap().index, 5);
    assert_forbidden(next(&mut catalog).await.expect("an error"));
}

fn paths(seen: &[Seen]) -> Vec<(&str, &str)> {
    seen.iter()
        .map(|s| (s.method.as_str(), s.path.split('?').next().unwrap()))
        .collect()
}

#[tokio::test]
async fn signpost_registry_sends_its_token_everywhere_and_stops_on_403() {
    let (base, rec, server) = recorder().await;
    let (spare, spare_rec, spare_server) = recorder().await;
    let options = SignpostOptions {
        token: Some("s3cret".into()),
        blocking_wait: Duration::from_secs(1),
        ..SignpostOptions::default()
    };
    let registry = SignpostRegistry::with_options([base.clone(), spare], options).unwrap();
    refused_everywhere(&registry).await;

    let seen = rec.lock().unwrap().seen.clone();
    assert_eq!(
        paths(&seen),
        [
            ("POST", "/api/v1/services/web/instances"),
            ("PUT", "/api/v1/services/web/instances/web-1/heartbeat"),
            ("DELETE", "/api/v1/services/web/instances/web-1"),
            ("GET", "/api/v1/services/web/instances"),
            ("GET", "/api/v1/services/web/watch"),
            ("GET", "/api/v1/services"),
            ("GET", "/api/v1/services"),
        ],
        "each call once: a 403 is not retried"
    );
    assert!(
        seen.iter().all(|s| s.token.as_deref() == Some("s3cret")),
        "{seen:?}"
    );
    assert!(
        seen[6].path.contains("index=5"),
        "the second catalog query blocks: {}",
        seen[6].path
    );
    assert!(
        spare_rec.lock().unwrap().seen.is_empty(),
        "a refusal does not fail over"
    );
    assert_eq!(registry.current_addr(), base);

    // The admin calls the CLI uses are refused the same way.
    assert_forbidden(registry.services().await);
    assert_forbidden(registry.kv_get("app/color").await);
    server.abort();
    spare_server.abort();
}

#[tokio::test]
async fn signpost_registry_without_a_token_sends_none() {
    let (base, rec, server) = recorder().await;
    let registry = SignpostRegistry::new([base]).unwrap();
    assert_forbidden(registry.list("web").await);
    let seen = rec.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].token, None);
    server.abort();
}

#[tokio::test]
async fn consul_registry_sends_its_token_everywhere_and_stops_on_403() {
    let (base, rec, server) = recorder().await;
    let (spare, spare_rec, spare_server) = recorder().await;
    let options = ConsulOptions {
        token: Some("c0nsul".into()),
        blocking_wait: Duration::from_secs(1),
        min_query_interval: Duration::from_millis(1),
        ..ConsulOptions::default()
    };
    let registry = ConsulRegistry::with_options([base, spare], options).unwrap();
    refused_everywhere(&registry).await;

    let seen = rec.lock().unwrap().seen.clone();
    assert_eq!(
        paths(&seen),
        [
            ("PUT", "/v1/agent/service/register"),
            ("PUT", "/v1/agent/check/pass/service:web-1"),
            ("PUT", "/v1/agent/service/deregister/web-1"),
            ("GET", "/v1/health/service/web"),
            ("GET", "/v1/health/service/web"),
            ("GET", "/v1/catalog/services"),
            ("GET", "/v1/catalog/services"),
        ],
        "each call once: a 403 is not retried"
    );
    assert!(
        seen.iter().all(|s| s.token.as_deref() == Some("c0nsul")),
        "{seen:?}"
    );
    assert!(seen[6].path.contains("index=5"), "{}", seen[6].path);
    assert!(spare_rec.lock().unwrap().seen.is_empty());
    server.abort();
    spare_server.abort();
}

#[test]
fn a_token_that_cannot_be_a_header_is_a_config_error() {
    for token in ["line\nbreak", "nul\0"] {
        let options = SignpostOptions {
            token: Some(token.into()),
            ..SignpostOptions::default()
        };
        assert!(matches!(
            SignpostRegistry::with_options(["127.0.0.1:1"], options),
            Err(RegistryError::Config(_))
        ));
    }
}
