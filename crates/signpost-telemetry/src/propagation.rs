//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers, with the
//! propagator itself rather than the global one: the gateway and the agent speak W3C whatever
//! else a process installed.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanId, TraceId};
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

/// The `traceparent` value naming span `span_id` of trace `trace_id` (version `00`, the
/// sampled flag as `sampled` says), written without formatting machinery: a request path can
/// set it for every request, sampled or not.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for (i, byte) in trace_id.to_bytes().iter().enumerate() {
        value[3 + 2 * i] = HEX[usize::from(byte >> 4)];
        value[4 + 2 * i] = HEX[usize::from(byte & 0xf)];
    }
    for (i, byte) in span_id.to_bytes().iter().enumerate() {
        value[36 + 2 * i] = HEX[usize::from(byte >> 4)];
        value[37 + 2 * i] = HEX[usize::from(byte & 0xf)];
    }
    if sampled {
        value[54] = b'1';
    }
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
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
    fn traceparent_is_what_the_propagator_writes() {
        for sampled in [true, false] {
            let sc = opentelemetry::trace::SpanContext::new(
                TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128),
                SpanId::from(0xb7ad_6b71_6920_3331_u64),
                opentelemetry::trace::TraceFlags::default().with_sampled(sampled),
                false,
                opentelemetry::trace::TraceState::NONE,
            );
            let mut out = HeaderMap::new();
            inject(
                &Context::new().with_remote_span_context(sc.clone()),
                &mut out,
            );
            assert_eq!(
                traceparent(sc.trace_id(), sc.span_id(), sampled),
                out["traceparent"]
            );
        }
        assert_eq!(
            traceparent(TraceId::from(1u128), SpanId::from(2u64), true),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
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
