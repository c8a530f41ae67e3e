//! `consumer`: an HTTP service that calls `user-service` and `product-service` through the SDK's
//! `ServiceClient`: `GET /client/users/{id}` and `GET /client/products/{id}` answer what the
//! service answered, with which instance answered and after how many attempts.
//!
//! Discovery follows both services through the agent's watch stream; each client balances
//! round-robin, trips per-instance circuit breakers, ejects outliers and retries idempotent calls
//! on another instance. Killing an instance therefore shows up as (at most) a few retried
//! attempts, not as failed calls. The consumer registers itself under `consumer` with a TTL
//! heartbeat, binds `--port` (or `$PORT`; 0: any free port) and deregisters on SIGINT/SIGTERM.
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set it exports traces: a server span per request continuing
//! the caller's `traceparent`, and under it the SDK's client span per attempt.
//!
//! ```sh
//! cargo run -p consumer -- --agent http://127.0.0.1:8500 --port 8080
//! curl -s localhost:8080/client/users/1
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use http::Method;
use serde_json::{json, Value};
use signpost_client::balance::RoundRobin;
use signpost_client::breaker::BreakerConfig;
use signpost_client::client::{CallError, ServiceClient};
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::registry::signpost::SignpostRegistry;
use signpost_client::registry::Registry;
use signpost_client::Registration;

/// The service name the consumer registers under.
const SERVICE: &str = "consumer";

#[derive(Parser, Debug)]
#[command(about = "Example consumer for the Signpost demo: an HTTP service calling the others")]
struct Args {
    /// The Signpost agent.
    #[arg(long, env = "SIGNPOST_ADDR", default_value = "http://127.0.0.1:8500")]
    agent: String,
    /// Address to listen on and to register.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 0)]
    port: u16,
    /// Timeout of one attempt.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Heartbeat TTL of the consumer's own registration.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

/// The clients the handlers call through.
#[derive(Clone)]
struct AppState {
    /// `user-service`.
    users: Arc<ServiceClient>,
    /// `product-service`.
    products: Arc<ServiceClient>,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/client/users/{id}", get(user))
        .route("/client/products/{id}", get(product))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route_layer(axum::middleware::from_fn(traced))
        .with_state(state)
}

/// The request's server span, continuing the caller's W3C trace context, current while the
/// request is handled (recorded and exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
async fn traced(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let cx = signpost_telemetry::service::server_span(request.method(), &route, request.headers());
    let response =
        opentelemetry::trace::FutureExt::with_context(next.run(request), cx.clone()).await;
    signpost_telemetry::service::end_server_span(&cx, response.status());
    response
}

async fn user(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    forward(&s.users, &format!("/users/{id}")).await
}

async fn product(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    forward(&s.products, &format!("/products/{id}")).await
}

/// Calls `path` through `client` and answers what came back, with which instance answered and
/// after how many attempts; a service's 4xx is passed on, no instance left is a 503, any other
/// failure a 502.
async fn forward(client: &ServiceClient, path: &str) -> Response {
    let service = client.service();
    match client.request(Method::GET, path).send::<Value>().await {
        Ok(reply) => {
            println!(
                "call service={service} path={path} instance={} attempts={}",
                reply.instance.id, reply.attempts
            );
            Json(json!({
                "service": service,
                "instance": reply.instance.id,
                "attempts": reply.attempts,
                "body": reply.body,
            }))
            .into_response()
        }
        Err(e) => {
            println!("call service={service} path={path} error=\"{e}\"");
            let status = match &e {
                CallError::Status { code, .. } if *code < 500 => {
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
                }
                CallError::NoInstances { .. } | CallError::CircuitOpen { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_GATEWAY,
            };
            (
                status,
                Json(json!({ "service": service, "error": e.to_string() })),
            )
                .into_response()
        }
    }
}

fn client(discovery: &Discovery, service: &str, timeout: Duration) -> ServiceClient {
    ServiceClient::builder(discovery.service(service))
        .balancer(RoundRobin::new())
        .breaker(BreakerConfig {
            consecutive_failures: 3,
            cool_down: Duration::from_secs(2),
            ..BreakerConfig::default()
        })
        .timeout(timeout)
        .build()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,signpost_client=info".into()),
        )
        .init();
    let args = Args::parse();
    // Traces to OTEL_EXPORTER_OTLP_ENDPOINT, when it is set.
    let telemetry = signpost_telemetry::service::install_from_env(SERVICE)?;
    let registry = Arc::new(SignpostRegistry::new([args.agent.clone()])?);
    let discovery = Discovery::new(registry.clone(), DiscoveryOptions::default());
    let state = AppState {
        users: Arc::new(client(&discovery, "user-service", args.timeout)),
        products: Arc::new(client(&discovery, "product-service", args.timeout)),
    };

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    let registry: Arc<dyn Registry> = registry;
    let registration = Registration::builder(SERVICE, args.host.clone(), addr.port())
        .ttl(args.ttl)
        .register(registry)
        .await
        .with_context(|| format!("cannot register with the agent at {}", args.agent))?;
    // One line the demo script waits for.
    println!("{SERVICE} listening on http://{addr}");

    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    registration.deregister().await?;
    if let Some(provider) = telemetry {
        // Exports the spans still queued.
        tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    }
    Ok(())
}
