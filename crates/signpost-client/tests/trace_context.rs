//! The SDK's registry calls carry the caller's W3C trace context: with a tracer provider and
//! the W3C propagator installed (as an instrumented application has them), the requests a
//! `Registration` and a `Discovery` watch send to the agent carry a `traceparent` naming the
//! SDK's span, in the caller's trace when there is one. A recording proxy in front of an
//! in-process agent sees the headers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use opentelemetry::trace::{
    FutureExt as _, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::Context;
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::registration::Registration;
use signpost_client::registry::signpost::SignpostRegistry;

use common::{eventually, TestAgent};

/// One request the proxy forwarded: method, path and its `traceparent`.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    traceparent: Option<String>,
}

#[derive(Clone)]
struct Proxy {
    agent: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Records the request, then forwards it to the agent and streams the answer back.
async fn forward(State(proxy): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    proxy.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        traceparent: parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut headers = parts.headers;
    headers.remove(http::header::HOST);
    let answer = proxy
        .http
        .request(parts.method, format!("{}{path}", proxy.agent))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap()
}

/// (trace id, span id) of a `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test]
async fn registry_calls_and_watches_carry_the_trace_context() {
    signpost_tls::install_default_provider();
    // What an instrumented application installs: a provider (sampling everything, exporting
    // nowhere) and the W3C propagator.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let agent = TestAgent::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        agent: agent.base.clone(),
        http: reqwest::Client::new(),
        seen: seen.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(forward).with_state(proxy);
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let registry = Arc::new(SignpostRegistry::new([format!("http://{addr}")]).unwrap());

    // A registration made under the caller's span: the POST is in the caller's trace, sent
    // by the SDK's own span (a child of the caller's).
    let tracer = provider.tracer("test");
    let caller = Context::new().with_span(tracer.start("deploy"));
    let caller_ids = {
        let span = caller.span();
        let sc = span.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    };
    let handle = Registration::builder("users", "127.0.0.1", 8080)
        .ttl(Duration::from_secs(1))
        .register(registry.clone())
        .with_context(caller.clone())
        .await
        .unwrap();
    let register = seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.method == "POST" && s.path == "/api/v1/services/users/instances")
        .cloned()
        .expect("the registration went through the proxy");
    let (trace, span) = ids(register.traceparent.as_deref().expect("a traceparent"));
    assert_eq!(trace, caller_ids.0, "the caller's trace");
    assert_ne!(
        span, caller_ids.1,
        "the SDK's registry.register span, not the caller's"
    );

    // Heartbeats (in the registration's own task) carry a trace context of their own.
    let heartbeat_seen = || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|s| s.method == "PUT" && s.path.ends_with("/heartbeat"))
            .cloned()
    };
    eventually("a heartbeat", || async { heartbeat_seen().is_some() }).await;
    let heartbeat = heartbeat_seen().unwrap();
    ids(heartbeat
        .traceparent
        .as_deref()
        .expect("a heartbeat's traceparent"));

    // A watch: the request opening it carries the registry.watch span's context.
    let discovery = Discovery::new(registry.clone(), DiscoveryOptions::default());
    let users = discovery.service("users");
    let endpoints = tokio::time::timeout(Duration::from_secs(10), users.ready())
        .await
        .expect("the watch answers in time")
        .unwrap();
    assert_eq!(endpoints.instances().len(), 1);
    let watch = seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path == "/api/v1/services/users/watch")
        .cloned()
        .expect("the watch went through the proxy");
    ids(watch
        .traceparent
        .as_deref()
        .expect("the watch's traceparent"));

    handle.deregister().with_context(caller).await.unwrap();
    let deregister = seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.method == "DELETE")
        .cloned()
        .expect("the deregistration went through the proxy");
    let (trace, _) = ids(deregister.traceparent.as_deref().expect("a traceparent"));
    assert_eq!(trace, caller_ids.0);
    server.abort();
}
