//! The SDK's metrics, through the [`metrics`] facade: an application that installs a recorder
//! (e.g. `metrics-exporter-prometheus`) exports them with its own; without one they cost a
//! no-op call. Each hook is one line in the code it measures.
//!
//! | Metric | Kind | Labels | What |
//! | --- | --- | --- | --- |
//! | `signpost_client_discovery_updates_total` | counter | `service` | updates received from the registry (a `Reset` is a whole list) |
//! | `signpost_client_discovery_cache_age_seconds` | gauge | `service` | how long the served list has gone without a live watch behind it: 0 while connected, set at each failed (re)connection otherwise |
//! | `signpost_client_calls_total` | counter | `service`, `outcome` | [`crate::ServiceClient`] calls by outcome (`success`, `no_instances`, `circuit_open`, `timeout`, `status`, `connect`, `transport`, `budget_exhausted`, `invalid`) |
//! | `signpost_client_attempts_total` | counter | `service` | attempts (a call retried twice counts three) |
//! | `signpost_client_call_duration_seconds` | histogram | `service` | call latency, retries included |
//! | `signpost_client_breaker_transitions_total` | counter | `to` | circuit breaker transitions by the state entered (`open`, `half_open`, `closed`) |

use std::future::Future;

use bytes::Bytes;
use tokio::time::Instant;

use crate::breaker::BreakerState;
use crate::client::{CallError, Reply};

/// One update received by discovery for `service`.
pub(crate) fn update_received(service: &str) {
    ::metrics::counter!("signpost_client_discovery_updates_total", "service" => service.to_string())
        .increment(1);
}

/// How long one service's served list has gone unconfirmed, for the cache-age gauge.
#[derive(Debug, Default)]
pub(crate) struct CacheAge {
    /// When the watch was lost; `None` while connected.
    lost: Option<Instant>,
}

impl CacheAge {
    /// A watch delivered an update: the list is live (age 0).
    pub(crate) fn received(&mut self, service: &str) {
        self.lost = None;
        update_received(service);
        gauge(service, 0.0);
    }

    /// The watch failed (again): the list is as old as the first failure.
    pub(crate) fn lost(&mut self, service: &str) {
        let since = *self.lost.get_or_insert_with(Instant::now);
        gauge(service, since.elapsed().as_secs_f64());
    }
}

fn gauge(service: &str, age: f64) {
    ::metrics::gauge!("signpost_client_discovery_cache_age_seconds", "service" => service.to_string())
        .set(age);
}

/// One attempt of a call to `service`.
pub(crate) fn attempt(service: &str) {
    ::metrics::counter!("signpost_client_attempts_total", "service" => service.to_string())
        .increment(1);
}

/// Runs a call to `service`, then counts it by outcome and records its latency.
pub(crate) async fn call<F>(service: &str, call: F) -> Result<Reply<Bytes>, CallError>
where
    F: Future<Output = Result<Reply<Bytes>, CallError>>,
{
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(e) => outcome(e),
    };
    let service = service.to_string();
    ::metrics::counter!("signpost_client_calls_total", "service" => service.clone(), "outcome" => outcome)
        .increment(1);
    ::metrics::histogram!("signpost_client_call_duration_seconds", "service" => service)
        .record(started.elapsed().as_secs_f64());
    result
}

/// The `outcome` label of a failed call.
fn outcome(e: &CallError) -> &'static str {
    match e {
        CallError::NoInstances { .. } => "no_instances",
        CallError::CircuitOpen { .. } => "circuit_open",
        CallError::Timeout { .. } => "timeout",
        CallError::Status { .. } => "status",
        CallError::Connect { .. } => "connect",
        CallError::Transport { .. } => "transport",
        CallError::Decode { .. } => "decode",
        CallError::Encode(_) | CallError::InvalidRequest(_) => "invalid",
        CallError::RetryBudgetExhausted { .. } => "budget_exhausted",
    }
}

/// A circuit breaker entered `to`.
pub(crate) fn breaker_transition(to: BreakerState) {
    let to = match to {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    };
    ::metrics::counter!("signpost_client_breaker_transitions_total", "to" => to).increment(1);
}
