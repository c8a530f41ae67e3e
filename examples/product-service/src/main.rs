//! `product-service`: an example service for the Signpost demo.
//!
//! Binds `--host:--port` (or `$PORT`; 0: any free port), registers itself with the agent under
//! `product-service` with a TTL check and keeps heartbeating it (the SDK's `Registration`), serves a
//! little in-memory JSON, and deregisters on SIGINT/SIGTERM. Every response carries the
//! instance id (in the body and in `x-instance-id`) so the demo can show how calls spread.
//!
//! ```sh
//! cargo run -p product-service -- --agent http://127.0.0.1:8500 --port 0
//! curl -s localhost:<port>/products/1
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde::Serialize;
use serde_json::json;
use signpost_client::registry::signpost::SignpostRegistry;
use signpost_client::registry::Registry;
use signpost_client::Registration;

/// The service name this example registers under.
const SERVICE: &str = "product-service";

#[derive(Parser, Debug)]
#[command(about = "Example product service for the Signpost demo")]
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
    /// Instance id [default: product-service-<port>].
    #[arg(long)]
    id: Option<String>,
    /// Heartbeat TTL: the agent marks the instance critical when it lapses.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Zone, registered as metadata `zone` (for zone-aware consumers).
    #[arg(long)]
    zone: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Product {
    id: u64,
    name: &'static str,
    price_cents: u64,
}

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    /// This instance's id, echoed in every response.
    instance: Arc<str>,
    /// The data served.
    products: Arc<Vec<Product>>,
}

fn products() -> Vec<Product> {
    [
        (1, "Mechanical keyboard", 12_900),
        (2, "Trackball", 7_450),
        (3, "27\" monitor", 32_900),
        (4, "USB-C dock", 18_990),
        (5, "Desk lamp", 3_990),
    ]
    .into_iter()
    .map(|(id, name, price_cents)| Product {
        id,
        name,
        price_cents,
    })
    .collect()
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/products", get(list))
        .route("/products/{id}", get(one))
        .route("/health", get(health))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            instance_header,
        ))
        .with_state(state)
}

async fn list(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "instance": &*s.instance, "products": &*s.products }))
}

async fn one(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    match s.products.iter().find(|p| p.id == id) {
        Some(product) => {
            Json(json!({ "instance": &*s.instance, "product": product })).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "instance": &*s.instance, "error": format!("no product {id}") })),
        )
            .into_response(),
    }
}

async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "instance": &*s.instance }))
}

/// Adds `x-instance-id` to every response.
async fn instance_header(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&s.instance) {
        response.headers_mut().insert("x-instance-id", value);
    }
    response
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{SERVICE}-{}", addr.port()));
    let state = AppState {
        instance: id.clone().into(),
        products: Arc::new(products()),
    };

    let registry: Arc<dyn Registry> = Arc::new(SignpostRegistry::new([args.agent.clone()])?);
    let mut builder = Registration::builder(SERVICE, args.host.clone(), addr.port())
        .id(id.clone())
        .ttl(args.ttl)
        .deregister_after(Duration::from_secs(30));
    if let Some(zone) = &args.zone {
        builder = builder.metadata([("zone", zone.as_str())]);
    }
    let registration = builder
        .register(registry)
        .await
        .with_context(|| format!("cannot register with the agent at {}", args.agent))?;
    // One line the demo script waits for.
    println!("{SERVICE} {id} listening on http://{addr}");

    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    registration.deregister().await?;
    Ok(())
}
