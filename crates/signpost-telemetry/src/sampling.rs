//! The sampling decision, shared by the exporting tracer provider and code that decides before
//! it makes a span (the gateway: an unsampled request costs no span, no name and no
//! attributes, only a `traceparent`).
//!
//! The provider samples parent-based with a trace-id ratio for roots, as OpenTelemetry's
//! `ParentBased(TraceIdRatioBased)`; [`Sampler`] adds one thing: a root whose caller already
//! decided to sample it ([`presampled`]) is sampled, so a decision made ahead is not drawn a
//! second time (the SDK picks a root's trace id itself, so the ratio would apply twice).

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

/// The installed provider's sampling ratio, as `f64` bits (set by [`crate::init`]).
static RATIO: AtomicU64 = AtomicU64::new(0);

/// The sampling ratio of roots in this process's exporting provider (0 while tracing is off).
pub fn ratio() -> f64 {
    f64::from_bits(RATIO.load(Ordering::Relaxed))
}

pub(crate) fn set_ratio(ratio: f64) {
    RATIO.store(ratio.to_bits(), Ordering::Relaxed);
}

/// Whether a root span of trace `trace_id` is sampled at `ratio`: OpenTelemetry's
/// `TraceIdRatioBased` rule (the trace id's low 63 bits against the ratio), so every process
/// sampling by ratio agrees on a trace.
pub fn root_sampled(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    // The bound is below 2^63 and non-negative: the cast cannot wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]);
    (low >> 1) < bound
}

/// Marks a context whose next root span was already decided to be sampled.
#[derive(Debug, Clone, Copy)]
struct Presampled;

/// `cx` with the mark that the root span started under it is sampled whatever the ratio:
/// for code that decided with [`root_sampled`] ahead of making the span.
pub fn presampled(cx: &Context) -> Context {
    cx.with_value(Presampled)
}

/// Parent-based sampling with a trace-id ratio for roots, and roots marked [`presampled`]
/// always sampled.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    /// The ratio of roots sampled.
    ratio: f64,
}

impl Sampler {
    pub(crate) fn new(ratio: f64) -> Sampler {
        Sampler { ratio }
    }
}

impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context.filter(|cx| cx.has_active_span());
        let sampled = match parent {
            Some(cx) => cx.span().span_context().is_sampled(),
            None => {
                parent_context.is_some_and(|cx| cx.get::<Presampled>().is_some())
                    || root_sampled(self.ratio, trace_id)
            }
        };
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::Sampler as SdkSampler;

    fn decide(sampler: &dyn ShouldSample, cx: Option<&Context>, trace_id: TraceId) -> bool {
        let result = sampler.should_sample(cx, trace_id, "s", &SpanKind::Server, &[], &[]);
        result.decision == SamplingDecision::RecordAndSample
    }

    fn remote(sampled: bool) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            TraceFlags::default().with_sampled(sampled),
            true,
            TraceState::NONE,
        ))
    }

    #[test]
    fn decides_as_the_sdks_parent_based_ratio_sampler() {
        for ratio in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let ours = Sampler::new(ratio);
            let sdk = SdkSampler::ParentBased(Box::new(SdkSampler::TraceIdRatioBased(ratio)));
            let mut sampled = 0;
            for i in 0..2_000u64 {
                // Trace ids spread over the whole range.
                let id = TraceId::from(u128::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) << 1);
                let expected = decide(&sdk, None, id);
                assert_eq!(root_sampled(ratio, id), expected, "ratio {ratio}, id {id}");
                assert_eq!(decide(&ours, None, id), expected);
                assert_eq!(decide(&ours, Some(&Context::new()), id), expected);
                sampled += usize::from(expected);
            }
            let share = sampled as f64 / 2_000.0;
            assert!((share - ratio).abs() < 0.05, "ratio {ratio}: {share}");
            for parent_sampled in [true, false] {
                let cx = remote(parent_sampled);
                assert_eq!(
                    decide(&ours, Some(&cx), TraceId::from(7u128)),
                    parent_sampled
                );
                assert_eq!(
                    decide(&sdk, Some(&cx), TraceId::from(7u128)),
                    parent_sampled
                );
            }
        }
    }

    #[test]
    fn a_presampled_root_is_sampled_but_a_parent_still_decides() {
        let never = Sampler::new(0.0);
        let id = TraceId::from(u128::MAX);
        assert!(!decide(&never, Some(&Context::new()), id));
        assert!(decide(&never, Some(&presampled(&Context::new())), id));
        // An unsampled parent wins over the mark.
        assert!(!decide(&never, Some(&presampled(&remote(false))), id));
    }
}
