//! `user-service`: an example service for the Signpost demo.
//!
//! Binds `--host:--port` (or `$PORT`; 0: any free port) and serves users from an in-memory
//! store as JSON: create (`POST /users`), read (`GET /users`, `GET /users/{id}`), update
//! (`PUT /users/{id}`) and delete (`DELETE /users/{id}`). It registers under `user-service`
//! with an HTTP check the agent runs against its own `/health` (the SDK's
//! `Registration::http_check`: no heartbeats), deregisters on SIGINT/SIGTERM, and reads its
//! settings live from the KV key `app/user-service/config` (JSON `{"greeting", "page_size"}`)
//! through the SDK's `Config` watch: a change shows in the next response, and a value that does
//! not decode keeps the last good settings. Every response carries the instance id (in the body
//! and in `x-instance-id`) so the demo can show how calls spread.
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set it exports a server span per request, continuing the
//! caller's `traceparent`.
//!
//! ```sh
//! cargo run -p user-service -- --agent http://127.0.0.1:8500 --port 0
//! curl -s localhost:<port>/users/1
//! curl -s -X POST localhost:<port>/users -d '{"name":"Ken","email":"ken@example.com"}' -H 'content-type: application/json'
//! signpost kv put app/user-service/config '{"greeting":"Bonjour","page_size":2}'
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signpost_client::config::{Config, ConfigOptions, Format};
use signpost_client::registry::signpost::SignpostRegistry;
use signpost_client::registry::Registry;
use signpost_client::Registration;

/// The service name this example registers under.
const SERVICE: &str = "user-service";
/// The KV key its settings live in.
const CONFIG_KEY: &str = "app/user-service/config";

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
    #[arg(long, env = "PORT", default_value_t = 0)]
    port: u16,
    /// Instance id [default: user-service-<port>].
    #[arg(long)]
    id: Option<String>,
    /// How often the agent checks `/health`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    check_interval: Duration,
    /// How long one check may take.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    check_timeout: Duration,
    /// Zone, registered as metadata `zone` (for zone-aware consumers).
    #[arg(long)]
    zone: Option<String>,
}

/// The settings read live from [`CONFIG_KEY`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
struct Settings {
    /// Said in every answer.
    greeting: String,
    /// How many users `GET /users` lists.
    page_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            greeting: "Hello".into(),
            page_size: 10,
        }
    }
}

/// A stored user.
#[derive(Debug, Clone, Serialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// What a create or an update sends.
#[derive(Debug, Deserialize)]
struct UserInput {
    name: Option<String>,
    email: Option<String>,
}

/// The in-memory store.
#[derive(Debug, Default)]
struct Store {
    /// Users by id.
    users: BTreeMap<u64, User>,
    /// The id the next created user gets.
    next_id: u64,
}

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    /// This instance's id, echoed in every response.
    instance: Arc<str>,
    /// The data served.
    store: Arc<RwLock<Store>>,
    /// The settings in force (replaced whole by the config watch).
    settings: Arc<RwLock<Arc<Settings>>>,
}

impl AppState {
    fn settings(&self) -> Arc<Settings> {
        self.settings.read().expect("settings lock").clone()
    }
}

fn seed() -> Store {
    let users: BTreeMap<u64, User> = [
        (1, "Ada Lovelace", "ada@example.com"),
        (2, "Alan Turing", "alan@example.com"),
        (3, "Grace Hopper", "grace@example.com"),
        (4, "Edsger Dijkstra", "edsger@example.com"),
        (5, "Barbara Liskov", "barbara@example.com"),
    ]
    .into_iter()
    .map(|(id, name, email)| {
        (
            id,
            User {
                id,
                name: name.into(),
                email: email.into(),
            },
        )
    })
    .collect();
    Store { users, next_id: 6 }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(one).put(update).delete(remove))
        .route("/settings", get(settings))
        .route("/health", get(health))
        .route_layer(axum::middleware::from_fn(traced))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            instance_header,
        ))
        .with_state(state)
}

/// A 4xx with `{"error", "field"}`.
fn bad(status: StatusCode, s: &AppState, field: &str, error: String) -> Response {
    (
        status,
        Json(json!({ "instance": &*s.instance, "error": error, "field": field })),
    )
        .into_response()
}

fn not_found(s: &AppState, id: u64) -> Response {
    bad(StatusCode::NOT_FOUND, s, "id", format!("no user {id}"))
}

/// Why a create or update body is refused: the field to blame and the message.
struct Refusal {
    field: &'static str,
    error: String,
}

/// The body as JSON with `name` and `email` non-empty when given (and given at all when
/// `all`), or why not.
fn accept(input: Result<Json<UserInput>, JsonRejection>, all: bool) -> Result<UserInput, Refusal> {
    let Json(input) = input.map_err(|e| Refusal {
        field: "body",
        error: e.body_text(),
    })?;
    for (field, value) in [("name", &input.name), ("email", &input.email)] {
        let error = match value {
            Some(v) if v.trim().is_empty() => format!("{field} must not be empty"),
            None if all => format!("{field} is required"),
            _ => continue,
        };
        return Err(Refusal { field, error });
    }
    Ok(input)
}

async fn list(State(s): State<AppState>) -> Json<serde_json::Value> {
    let settings = s.settings();
    let store = s.store.read().expect("store lock");
    let users: Vec<&User> = store.users.values().take(settings.page_size).collect();
    Json(json!({
        "instance": &*s.instance,
        "greeting": settings.greeting,
        "total": store.users.len(),
        "users": users,
    }))
}

async fn one(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    let user = s.store.read().expect("store lock").users.get(&id).cloned();
    match user {
        Some(user) => Json(json!({
            "instance": &*s.instance,
            "greeting": s.settings().greeting,
            "user": user,
        }))
        .into_response(),
        None => not_found(&s, id),
    }
}

async fn create(
    State(s): State<AppState>,
    input: Result<Json<UserInput>, JsonRejection>,
) -> Response {
    let input = match accept(input, true) {
        Ok(i) => i,
        Err(r) => return bad(StatusCode::BAD_REQUEST, &s, r.field, r.error),
    };
    let user = {
        let mut store = s.store.write().expect("store lock");
        let id = store.next_id;
        store.next_id += 1;
        let user = User {
            id,
            name: input.name.unwrap_or_default(),
            email: input.email.unwrap_or_default(),
        };
        store.users.insert(id, user.clone());
        user
    };
    (
        StatusCode::CREATED,
        Json(json!({ "instance": &*s.instance, "user": user })),
    )
        .into_response()
}

async fn update(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    input: Result<Json<UserInput>, JsonRejection>,
) -> Response {
    let input = match accept(input, false) {
        Ok(i) => i,
        Err(r) => return bad(StatusCode::BAD_REQUEST, &s, r.field, r.error),
    };
    let mut store = s.store.write().expect("store lock");
    let Some(user) = store.users.get_mut(&id) else {
        drop(store);
        return not_found(&s, id);
    };
    if let Some(name) = input.name {
        user.name = name;
    }
    if let Some(email) = input.email {
        user.email = email;
    }
    let user = user.clone();
    drop(store);
    Json(json!({ "instance": &*s.instance, "user": user })).into_response()
}

async fn remove(State(s): State<AppState>, Path(id): Path<u64>) -> Response {
    let removed = s.store.write().expect("store lock").users.remove(&id);
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&s, id),
    }
}

async fn settings(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "instance": &*s.instance, "settings": &*s.settings() }))
}

async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "instance": &*s.instance }))
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

/// Adds `x-instance-id` to every response.
async fn instance_header(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&s.instance) {
        response.headers_mut().insert("x-instance-id", value);
    }
    response
}

/// Follows [`CONFIG_KEY`]: each new value replaces the settings in force (and is logged); a
/// value that does not decode, or an agent that is away, keeps them.
async fn follow_settings(config: Config, into: Arc<RwLock<Arc<Settings>>>) {
    let mut watch = config.watch::<Settings>(CONFIG_KEY, Format::Json);
    while let Some(state) = watch.changed().await {
        if let Some(problem) = &state.problem {
            println!("settings kept: {problem}");
        }
        let Some(value) = state.value else { continue };
        let changed = {
            let mut current = into.write().expect("settings lock");
            let changed = !Arc::ptr_eq(&current, &value.value);
            *current = value.value.clone();
            changed
        };
        if changed && state.problem.is_none() {
            println!(
                "settings index={} greeting={:?} page_size={}",
                value.index, value.value.greeting, value.value.page_size
            );
        }
    }
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
    // Traces to OTEL_EXPORTER_OTLP_ENDPOINT, when it is set.
    let telemetry = signpost_telemetry::service::install_from_env(SERVICE)?;

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
        store: Arc::new(RwLock::new(seed())),
        settings: Arc::new(RwLock::new(Arc::new(Settings::default()))),
    };
    let config = Config::native([args.agent.clone()], ConfigOptions::default())?;
    let settings_task = tokio::spawn(follow_settings(config, state.settings.clone()));

    let registry: Arc<dyn Registry> = Arc::new(SignpostRegistry::new([args.agent.clone()])?);
    let health_url = format!("http://{}:{}/health", args.host, addr.port());
    let mut builder = Registration::builder(SERVICE, args.host.clone(), addr.port())
        .id(id.clone())
        .http_check(health_url, args.check_interval, args.check_timeout)
        .deregister_after(Duration::from_secs(60));
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
    settings_task.abort();
    registration.deregister().await?;
    if let Some(provider) = telemetry {
        // Exports the spans still queued.
        tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    }
    Ok(())
}
