//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers, with the
//! propagator itself rather than the global one: the gateway and the agent speak W3C whatever
//! else a process installed.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The headers the W3C trace context travels in.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The context a request's headers carry (the current one, unchanged, when they carry none).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The context under `parent` that `headers` carry, `parent` itself when they carry none.
pub fn extract_with(parent: &Context, headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(parent, &Headers(headers))
}

/// Writes `cx`'s span context into `headers` (replacing any there): nothing when it has none.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;

    #[test]
    fn round_trips_a_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        headers.insert("tracestate", HeaderValue::from_static("vendor=x"));
        let cx = extract(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out["traceparent"], headers["traceparent"]);
        assert_eq!(out["tracestate"], "vendor=x");
    }

    #[test]
    fn nothing_to_extract_or_inject() {
        let cx = extract(&HeaderMap::new());
        assert!(!cx.span().span_context().is_valid());
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert!(out.is_empty());
    }
}
