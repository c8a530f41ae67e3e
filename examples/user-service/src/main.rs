//! `user-service`: an example service for the Signpost demo.
//!
//! Binds `--host:--port` (port 0: any free port), registers itself with the agent under
//! `user-service` with a TTL check and keeps heartbeating it (the SDK's `Registration`), serves a
//! little in-memory JSON, and deregisters on SIGINT/SIGTERM. Every response carries the
//! instance id (in the body and in `x-instance-id`) so the demo can show how calls spread.
//!
//! ```sh
//! cargo run -p user-service -- --agent http://127.0.0.1:8500 --port 0
//! curl -s localhost:<port>/users/1
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
const SERVICE: &str = "user-service";

#[derive(Parser, Debug)]
#[command(about = "Example user service for the Signpost demo")]
struct Args {
    /// The Signpost agent.
    #[arg(long, env = "SIGNPOST_ADDR", default_value = "http://127.0.0.1:8500")]
    agent: String,
    /// Address to listen on and to register.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Instance id [default: user-service-<port>].
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
struct User {
    id: u64,
    name: &'static str,
    email: &'static str,
}

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    /// This instance's id, echoed in every response.
    instance: Arc<str>,
    /// The data served.
    users: Arc<Vec<User>>,
}

fn users() -> Vec<User> {
    [
        (1, "Ada Lovelace", "ada@example.com"),
        (2, "Alan Turing", "alan@example.com"),
        (3, "Grace Hopper", "grace@example.com"),
        (4, "Edsger Dijkstra", "edsger@example.com"),
        (5, "Barbara Liskov", "barbara@example.com"),
    ]
    .into_iter()
    .map(|(id, name, email)| User { id, name, email })
    .collect()
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/users", get(list))
        .route("/users/{id}", get(one))
        .route("/health", get(health))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            instance_header,
        ))
        .with_state(state)
}

async fn list(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "instance": &*s.instance, "users": &*s.users }))
}

async fn one(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    match s.users.iter().find(|u| u.id == id) {
        Some(user) => Json(json!({ "instance": &*s.instance, "user": user })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "instance": &*s.instance, "error": format!("no user {id}") })),
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
        users: Arc::new(users()),
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
