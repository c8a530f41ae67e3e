//! Whether the agent can serve, decided in one place, and what it does when it cannot.
//!
//! openraft's core stops for good after a storage error (a redb commit that fails because the
//! disk is full, say) and says so in its metrics (`RaftMetrics::running_state` turns
//! `Err(Fatal)`). [`watch`] follows those metrics; once the core has stopped (other than by
//! shutdown) the agent is *failed*:
//! - `GET /health` answers 503 with the reason ([`health`]); it answers 503 too while no leader
//!   is known, and 200 `{"status":"ok"}` otherwise;
//! - every other request but `/health`, `/metrics`, `agent/self` (native and Consul) and
//!   `/v1/status/leader` (which answers `""`) is answered 503 with a JSON body ([`gate`]), so
//!   reads no longer answer as if all were well; DNS answers SERVFAIL;
//! - `agent/self` and `/metrics` (`signpost_healthy`, `signpost_unhealthy{reason}`) say why;
//! - after `[storage] fatal_exit_after` (30 s by default) the agent's fatal hook runs: the
//!   binary's exits with status 1 and a clear message, so that a supervisor restarts it (a
//!   restart replays the durable log).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::agent::Agent;
use crate::http::AppState;
use crate::raft::RaftMetrics;

/// What runs when the agent has been failed for `[storage] fatal_exit_after`: given the
/// message to print. The default ([`exit_process`]) exits the process; tests record the call.
pub type FatalHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The default [`FatalHook`]: the message to the log and stderr, then exit status 1.
pub fn exit_process() -> FatalHook {
    Arc::new(|message: &str| {
        tracing::error!("{message}");
        eprintln!("signpost: {message}");
        std::process::exit(1);
    })
}

/// Why the agent cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// The storage failed (a write or fsync did not succeed) and Raft stopped with it.
    Storage(String),
    /// Raft's core stopped for another reason (it panicked).
    RaftStopped(String),
    /// Raft runs, but no leader is known: writes cannot commit (an election, a partition).
    NoLeader,
}

impl Unhealthy {
    /// Every reason, for the `signpost_unhealthy{reason}` series.
    pub const REASONS: [&'static str; 3] = ["storage", "raft_stopped", "no_leader"];

    /// Its `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Unhealthy::Storage(_) => "storage",
            Unhealthy::RaftStopped(_) => "raft_stopped",
            Unhealthy::NoLeader => "no_leader",
        }
    }

    /// Whether the agent stays this way until it restarts.
    pub fn fatal(&self) -> bool {
        !matches!(self, Unhealthy::NoLeader)
    }

    /// A sentence for people.
    pub fn message(&self) -> String {
        match self {
            Unhealthy::Storage(e) => format!("storage failed and raft stopped: {e}"),
            Unhealthy::RaftStopped(e) => format!("raft stopped: {e}"),
            Unhealthy::NoLeader => "no raft leader is known".to_string(),
        }
    }
}

/// The agent's fatal state: set once, when Raft's core stops.
pub struct Vitals {
    /// Why the agent failed, once it has.
    failed: OnceLock<Unhealthy>,
    /// What runs `[storage] fatal_exit_after` later.
    on_fatal: FatalHook,
}

impl Vitals {
    /// Healthy, with `on_fatal` to run once failed for the grace period.
    pub fn new(on_fatal: FatalHook) -> Self {
        Vitals {
            failed: OnceLock::new(),
            on_fatal,
        }
    }

    /// Why the agent failed, if it has (until it restarts).
    pub fn failed(&self) -> Option<&Unhealthy> {
        self.failed.get()
    }
}

/// How openraft's metrics say its core stopped, if it did (other than by shutdown).
fn stopped(m: &RaftMetrics) -> Option<Unhealthy> {
    match &m.running_state {
        Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
        Err(openraft::error::Fatal::StorageError(e)) => Some(Unhealthy::Storage(e.to_string())),
        Err(e) => Some(Unhealthy::RaftStopped(e.to_string())),
    }
}

/// Whether `agent` can serve: storage and Raft running, a leader known.
pub fn check(agent: &Agent) -> Result<(), Unhealthy> {
    if let Some(failed) = agent.vitals().failed() {
        return Err(failed.clone());
    }
    let m = agent.raft().metrics().borrow().clone();
    if let Some(stopped) = stopped(&m) {
        return Err(stopped);
    }
    if m.current_leader.is_none() {
        return Err(Unhealthy::NoLeader);
    }
    Ok(())
}

/// Whether the agent has failed for good (Raft or storage stopped).
pub fn failed(agent: &Agent) -> bool {
    agent.vitals().failed().is_some()
}

/// The agent's health as `agent/self` shows it: `{"status": "ok"}` or
/// `{"status": "unhealthy", "reason", "error"}`.
pub fn report(agent: &Agent) -> serde_json::Value {
    match check(agent) {
        Ok(()) => json!({"status": "ok"}),
        Err(why) => json!({
            "status": "unhealthy",
            "reason": why.reason(),
            "error": why.message(),
        }),
    }
}

/// Sets `signpost_healthy` and `signpost_unhealthy{reason}` (call inside the agent's recorder).
pub fn record(agent: &Agent) {
    let state = check(agent);
    metrics::gauge!("signpost_healthy").set(f64::from(u8::from(state.is_ok())));
    let reason = state.err().map(|e| e.reason());
    for r in Unhealthy::REASONS {
        metrics::gauge!("signpost_unhealthy", "reason" => r)
            .set(f64::from(u8::from(reason == Some(r))));
    }
}

/// `GET /health`: 200 `{"status":"ok"}` when the agent can serve, else 503 with the reason,
/// for load balancers and orchestrators.
pub async fn health(State(agent): State<AppState>) -> Response {
    let body = report(&agent);
    let status = if body["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Paths still answered once the agent has failed: the ones that say so.
fn answered_when_failed(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/metrics" | "/api/v1/agent/self" | "/v1/agent/self" | "/v1/status/leader"
    )
}

/// Once the agent has failed, answers 503 (with the reason in an [`signpost_api::ErrorBody`])
/// to everything but the paths that report the failure.
pub async fn gate(State(agent): State<AppState>, req: Request, next: Next) -> Response {
    match agent.vitals().failed() {
        Some(why) if !answered_when_failed(req.uri().path()) => {
            crate::http::ApiError::Unavailable(format!(
                "this agent cannot serve: {}; it exits and should be restarted",
                why.message()
            ))
            .into_response()
        }
        _ => next.run(req).await,
    }
}

/// Follows Raft's metrics until shutdown begins (`closing` turns true). When Raft's core stops
/// on its own, marks the agent failed, logs why, and runs the fatal hook once it has stayed
/// failed for `grace` (unless shutdown begins first).
pub async fn watch(
    vitals: Arc<Vitals>,
    mut metrics: tokio::sync::watch::Receiver<RaftMetrics>,
    mut closing: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let why = loop {
        if *closing.borrow() {
            return;
        }
        if let Some(why) = stopped(&metrics.borrow_and_update()) {
            break why;
        }
        tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    };
    let message = format!(
        "{}; the agent cannot serve and exits in {grace:?} so that it is restarted",
        why.message()
    );
    tracing::error!("{message}");
    let _ = vitals.failed.set(why.clone());
    tokio::select! {
        biased;
        _ = closing.wait_for(|c| *c) => {}
        () = tokio::time::sleep(grace) => {
            (vitals.on_fatal)(&format!("exiting: {} (failed {grace:?} ago)", why.message()));
        }
    }
}
