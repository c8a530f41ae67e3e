//! Fallbacks (service degradation): what a [`ServiceClient`](super::ServiceClient) answers
//! when the service cannot — no instance is available, every breaker is open, or the retries
//! are spent — instead of failing the caller.
//!
//! A fallback is a function of the failed request and its error that returns a JSON value (or
//! `None` to let the error through); [`Fallback::value`] makes one that always answers the
//! same value. A reply made by a fallback says so ([`Reply::from_fallback`](super::Reply)),
//! and each one counts in `signpost_client_fallbacks_total{service}` (the `metrics` facade).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::{CallError, Reply};
use crate::instance::Instance;

/// The counter of replies a fallback made, labelled by `service`.
pub const FALLBACKS_TOTAL: &str = "signpost_client_fallbacks_total";

/// The request a fallback stands in for.
#[derive(Debug)]
pub struct FailedCall<'a> {
    /// The service called.
    pub service: &'a str,
    /// The request's method.
    pub method: &'a Method,
    /// The request's path (with its query).
    pub path: &'a str,
    /// Why the service could not answer.
    pub error: &'a CallError,
}

/// The function behind a fallback.
type FallbackFn = dyn Fn(&FailedCall<'_>) -> Option<serde_json::Value> + Send + Sync;

/// What a client answers when the service cannot; see the [module](self) docs.
#[derive(Clone)]
pub struct Fallback(Arc<FallbackFn>);

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fallback(..)")
    }
}

impl Fallback {
    /// A fallback computed from the failed call; `None` lets the error through.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&FailedCall<'_>) -> Option<serde_json::Value> + Send + Sync + 'static,
    {
        Fallback(Arc::new(f))
    }

    /// A fallback that always answers `value`.
    pub fn value(value: serde_json::Value) -> Self {
        Fallback(Arc::new(move |_| Some(value.clone())))
    }

    /// The reply standing in for `call`, if the error is one a fallback answers (the service
    /// could not: no instance, open breakers, timeouts, connection failures, 5xx answers,
    /// spent retries; not the caller's own mistakes such as a 4xx or a bad request) and the
    /// function gives a value. Counts it.
    pub(super) fn answer(&self, call: &FailedCall<'_>) -> Option<Reply<Bytes>> {
        if !unavailable(call.error) {
            return None;
        }
        let value = (self.0)(call)?;
        let body = Bytes::from(serde_json::to_vec(&value).ok()?);
        metrics::counter!(FALLBACKS_TOTAL, "service" => call.service.to_string()).increment(1);
        tracing::debug!(
            service = call.service,
            path = call.path,
            "answered by the fallback: {}",
            call.error
        );
        Some(Reply {
            body,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            instance: Instance {
                id: String::new(),
                service: call.service.to_string(),
                address: String::new(),
                port: 0,
                tags: Vec::new(),
                metadata: Default::default(),
                weight: 0,
                state: Default::default(),
                maintenance: None,
            },
            attempts: 0,
            from_fallback: true,
        })
    }
}

/// Whether `error` says the service could not answer (as opposed to the caller's mistake).
fn unavailable(error: &CallError) -> bool {
    match error {
        CallError::NoInstances { .. }
        | CallError::CircuitOpen { .. }
        | CallError::Timeout { .. }
        | CallError::Connect { .. }
        | CallError::Transport { .. }
        | CallError::RetryBudgetExhausted { .. } => true,
        CallError::Status { code, .. } => *code >= 500 || *code == 429,
        CallError::Decode { .. } | CallError::Encode(_) | CallError::InvalidRequest(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(error: &'a CallError) -> FailedCall<'a> {
        FailedCall {
            service: "users",
            method: &Method::GET,
            path: "/users/1",
            error,
        }
    }

    #[test]
    fn only_unavailability_is_answered_and_the_function_may_decline() {
        let fallback = Fallback::value(serde_json::json!({"name": "guest"}));
        let none = CallError::NoInstances {
            service: "users".into(),
        };
        let reply = fallback.answer(&call(&none)).expect("answered");
        assert!(reply.from_fallback);
        assert_eq!(reply.body, Bytes::from_static(br#"{"name":"guest"}"#));
        let not_found = CallError::Status {
            code: 404,
            body: String::new(),
            instance: "a".into(),
        };
        assert!(
            fallback.answer(&call(&not_found)).is_none(),
            "a 404 is the caller's answer"
        );
        let unavailable = CallError::Status {
            code: 503,
            body: String::new(),
            instance: "a".into(),
        };
        assert!(fallback.answer(&call(&unavailable)).is_some());

        let only_users = Fallback::from_fn(|c| {
            c.path
                .starts_with("/users/")
                .then(|| serde_json::json!(c.path))
        });
        let other = FailedCall {
            path: "/orders",
            ..call(&none)
        };
        assert!(only_users.answer(&other).is_none());
        let reply = only_users.answer(&call(&none)).unwrap();
        assert_eq!(reply.body, Bytes::from_static(br#""/users/1""#));
    }
}
