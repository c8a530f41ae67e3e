//! Counters and histograms for `/metrics`: plain atomics updated on the request path (no
//! registry lookup, no lock, no allocation), rendered as Prometheus text on scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use signpost_client::breaker::BreakerState;

use crate::state::{Shared, Snapshot};

/// Latency bucket bounds in microseconds (and their `le` labels).
const BUCKETS_US: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const BUCKET_LABELS: [&str; 15] = [
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1", "2.5", "5", "10",
];

/// A latency histogram: one counter per bucket (not cumulative; summed on render), a sum and
/// nothing else.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket; the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|b| *b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Why an attempt at an upstream failed (the `kind` label of upstream errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptFailure {
    /// No connection could be made.
    Connect = 0,
    /// No response head within the route's timeout.
    Timeout = 1,
    /// The connection broke.
    Transport = 2,
    /// The upstream answered 5xx.
    Status5xx = 3,
}

const ATTEMPT_FAILURES: [(AttemptFailure, &str); 4] = [
    (AttemptFailure::Connect, "connect"),
    (AttemptFailure::Timeout, "timeout"),
    (AttemptFailure::Transport, "transport"),
    (AttemptFailure::Status5xx, "status_5xx"),
];

/// Errors the gateway answered itself on a route (the `kind` label; `no_route` is global).
pub(crate) const ROUTE_ERROR_KINDS: [&str; 4] = [
    "no_instances",
    "circuit_open",
    "upstream_failed",
    "upstream_timeout",
];

/// Per-route counters.
#[derive(Debug, Default)]
pub(crate) struct RouteMetrics {
    /// Responses by status class: index `status / 100` (0 unused).
    responses: [AtomicU64; 6],
    /// Time until the response head was ready, gateway errors included.
    pub(crate) latency: Histogram,
    /// Retries made.
    pub(crate) retries: AtomicU64,
    /// Gateway-made errors by [`ROUTE_ERROR_KINDS`] index.
    errors: [AtomicU64; 4],
}

impl RouteMetrics {
    /// Counts a response of `status` ready after `elapsed`.
    pub(crate) fn response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).min(5);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }

    /// Counts a gateway-made error of `kind` (one of [`ROUTE_ERROR_KINDS`]).
    pub(crate) fn error(&self, kind: &str) {
        if let Some(i) = ROUTE_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Per-route, per-instance counters.
#[derive(Debug, Default)]
pub(crate) struct UpstreamStats {
    /// Attempts sent to the instance.
    pub(crate) attempts: AtomicU64,
    /// Failed attempts by [`AttemptFailure`].
    failures: [AtomicU64; 4],
}

impl UpstreamStats {
    pub(crate) fn failure(&self, kind: AttemptFailure) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed attempts of any kind.
    pub(crate) fn failures(&self) -> u64 {
        self.failures
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .sum()
    }
}

/// Gateway-wide counters.
#[derive(Debug, Default)]
pub(crate) struct GatewayMetrics {
    /// Requests no route matched.
    pub(crate) no_route: AtomicU64,
    /// Requests refused before routing: a path the gateway does not forward (400 `bad_path`,
    /// see [`crate::route::path`]).
    pub(crate) bad_path: AtomicU64,
    /// Upgrade requests refused because `[limits] max_upgraded` upgraded connections were
    /// open (503 `upgrade_limit`).
    pub(crate) upgrade_limit: AtomicU64,
    /// Requests for one service more than `[auto_routes] max_services` follows (503
    /// `auto_route_limit`).
    pub(crate) auto_route_limit: AtomicU64,
    /// Client connections accepted.
    pub(crate) accepted: AtomicU64,
    /// Client connections open now.
    pub(crate) open: AtomicU64,
}

/// Appends `value` escaped for a Prometheus label.
fn label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric as Prometheus text.
pub(crate) fn render(shared: &Shared, snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(8192);
    let routes = snapshot.table.entries();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    header(
        &mut out,
        "signpost_gateway_requests_total",
        "counter",
        "Responses sent, by route and status class (route=\"\" for requests no route matched).",
    );
    let no_route = load(&shared.metrics.no_route);
    let bad_path = load(&shared.metrics.bad_path);
    let upgrade_limit = load(&shared.metrics.upgrade_limit);
    let auto_route_limit = load(&shared.metrics.auto_route_limit);
    let _ = writeln!(
        out,
        "signpost_gateway_requests_total{{route=\"\",code=\"4xx\"}} {}",
        no_route + bad_path
    );
    let _ = writeln!(
        out,
        "signpost_gateway_requests_total{{route=\"\",code=\"5xx\"}} {}",
        upgrade_limit + auto_route_limit
    );
    for e in routes {
        for (class, n) in e.route.metrics.responses.iter().enumerate().skip(1) {
            out.push_str("signpost_gateway_requests_total{route=\"");
            label(&mut out, &e.route.spec.name);
            let _ = writeln!(out, "\",code=\"{class}xx\"}} {}", load(n));
        }
    }

    header(
        &mut out,
        "signpost_gateway_request_duration_seconds",
        "histogram",
        "Time until the response head was ready (upstream answer or gateway error), by route.",
    );
    for e in routes {
        let h = &e.route.metrics.latency;
        let mut cumulative = 0;
        for (i, le) in BUCKET_LABELS.iter().enumerate() {
            cumulative += load(&h.counts[i]);
            out.push_str("signpost_gateway_request_duration_seconds_bucket{route=\"");
            label(&mut out, &e.route.spec.name);
            let _ = writeln!(out, "\",le=\"{le}\"}} {cumulative}");
        }
        cumulative += load(&h.counts[BUCKETS_US.len()]);
        out.push_str("signpost_gateway_request_duration_seconds_bucket{route=\"");
        label(&mut out, &e.route.spec.name);
        let _ = writeln!(out, "\",le=\"+Inf\"}} {cumulative}");
        out.push_str("signpost_gateway_request_duration_seconds_sum{route=\"");
        label(&mut out, &e.route.spec.name);
        let _ = writeln!(out, "\"}} {}", load(&h.sum_us) as f64 / 1e6);
        out.push_str("signpost_gateway_request_duration_seconds_count{route=\"");
        label(&mut out, &e.route.spec.name);
        let _ = writeln!(out, "\"}} {cumulative}");
    }

    header(
        &mut out,
        "signpost_gateway_errors_total",
        "counter",
        "Errors the gateway answered itself, by route and kind (404 no_route, 400 bad_path, 503 no_instances/circuit_open/upgrade_limit/auto_route_limit, 502 upstream_failed, 504 upstream_timeout).",
    );
    let _ = writeln!(
        out,
        "signpost_gateway_errors_total{{route=\"\",kind=\"no_route\"}} {no_route}"
    );
    let _ = writeln!(
        out,
        "signpost_gateway_errors_total{{route=\"\",kind=\"bad_path\"}} {bad_path}"
    );
    let _ = writeln!(
        out,
        "signpost_gateway_errors_total{{route=\"\",kind=\"upgrade_limit\"}} {upgrade_limit}"
    );
    let _ = writeln!(
        out,
        "signpost_gateway_errors_total{{route=\"\",kind=\"auto_route_limit\"}} {auto_route_limit}"
    );
    for e in routes {
        for (i, kind) in ROUTE_ERROR_KINDS.iter().enumerate() {
            out.push_str("signpost_gateway_errors_total{route=\"");
            label(&mut out, &e.route.spec.name);
            let _ = writeln!(
                out,
                "\",kind=\"{kind}\"}} {}",
                load(&e.route.metrics.errors[i])
            );
        }
    }

    header(
        &mut out,
        "signpost_gateway_retries_total",
        "counter",
        "Retries made, by route.",
    );
    for e in routes {
        out.push_str("signpost_gateway_retries_total{route=\"");
        label(&mut out, &e.route.spec.name);
        let _ = writeln!(out, "\"}} {}", load(&e.route.metrics.retries));
    }

    let upstream_labels = |out: &mut String, e: &crate::state::RouteEntry, i: usize| {
        out.push_str("{route=\"");
        label(out, &e.route.spec.name);
        out.push_str("\",upstream=\"");
        label(out, &e.instances[i].id);
        out.push_str("\",address=\"");
        label(out, e.upstreams[i].pool.authority());
        out.push('"');
    };

    header(
        &mut out,
        "signpost_gateway_upstream_requests_total",
        "counter",
        "Attempts sent to each instance, by route and upstream.",
    );
    for e in routes {
        for (i, u) in e.upstreams.iter().enumerate() {
            out.push_str("signpost_gateway_upstream_requests_total");
            upstream_labels(&mut out, e, i);
            let _ = writeln!(out, "}} {}", load(&u.stats.attempts));
        }
    }

    header(
        &mut out,
        "signpost_gateway_upstream_errors_total",
        "counter",
        "Failed attempts, by route, upstream and kind (connect, timeout, transport, status_5xx).",
    );
    for e in routes {
        for (i, u) in e.upstreams.iter().enumerate() {
            for (kind, name) in ATTEMPT_FAILURES {
                out.push_str("signpost_gateway_upstream_errors_total");
                upstream_labels(&mut out, e, i);
                let _ = writeln!(
                    out,
                    ",kind=\"{name}\"}} {}",
                    load(&u.stats.failures[kind as usize])
                );
            }
        }
    }

    header(
        &mut out,
        "signpost_gateway_breaker_state",
        "gauge",
        "Circuit breaker of each instance: 0 closed, 1 open, 2 half-open.",
    );
    for e in routes {
        let states = e.route.selector.endpoint_states(&e.instances);
        for i in 0..e.upstreams.len() {
            let state = states[i].breaker_state();
            let v = match state {
                BreakerState::Closed => 0,
                BreakerState::Open => 1,
                BreakerState::HalfOpen => 2,
            };
            out.push_str("signpost_gateway_breaker_state");
            upstream_labels(&mut out, e, i);
            let _ = writeln!(out, "}} {v}");
        }
    }

    header(
        &mut out,
        "signpost_gateway_outlier_ejected",
        "gauge",
        "1 while outlier detection has ejected the instance.",
    );
    for e in routes {
        let states = e.route.selector.endpoint_states(&e.instances);
        for i in 0..e.upstreams.len() {
            let ejected = e.route.selector.ejected(&states[i]);
            out.push_str("signpost_gateway_outlier_ejected");
            upstream_labels(&mut out, e, i);
            let _ = writeln!(out, "}} {}", u8::from(ejected));
        }
    }

    header(
        &mut out,
        "signpost_gateway_route_instances",
        "gauge",
        "Healthy instances the route can send to, as discovered.",
    );
    for e in routes {
        out.push_str("signpost_gateway_route_instances{route=\"");
        label(&mut out, &e.route.spec.name);
        let _ = writeln!(out, "\"}} {}", e.instances.len());
    }

    let mut pools: Vec<&std::sync::Arc<crate::pool::HostPool>> = routes
        .iter()
        .flat_map(|e| e.upstreams.iter().map(|u| &u.pool))
        .collect();
    // A pool is named by its address and protocol (the controller keeps one per pair).
    let key = |p: &crate::pool::HostPool| (p.authority().to_string(), p.protocol().as_str());
    pools.sort_by_cached_key(|p| key(p));
    pools.dedup_by(|a, b| key(a) == key(b));
    header(
        &mut out,
        "signpost_gateway_upstream_connections_opened_total",
        "counter",
        "Connections opened to each upstream address.",
    );
    for p in &pools {
        out.push_str("signpost_gateway_upstream_connections_opened_total{address=\"");
        label(&mut out, p.authority());
        let _ = writeln!(out, "\"}} {}", load(&p.stats.opened));
    }
    header(
        &mut out,
        "signpost_gateway_upstream_connections_reused_total",
        "counter",
        "Requests sent on an already open connection, by upstream address.",
    );
    for p in &pools {
        out.push_str("signpost_gateway_upstream_connections_reused_total{address=\"");
        label(&mut out, p.authority());
        let _ = writeln!(out, "\"}} {}", load(&p.stats.reused));
    }
    header(
        &mut out,
        "signpost_gateway_upstream_idle_connections",
        "gauge",
        "Idle pooled connections, by upstream address.",
    );
    for p in &pools {
        out.push_str("signpost_gateway_upstream_idle_connections{address=\"");
        label(&mut out, p.authority());
        let _ = writeln!(out, "\"}} {}", p.idle_count());
    }

    header(
        &mut out,
        "signpost_gateway_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    let _ = writeln!(
        out,
        "signpost_gateway_connections_accepted_total {}",
        load(&shared.metrics.accepted)
    );
    header(
        &mut out,
        "signpost_gateway_connections_open",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        out,
        "signpost_gateway_connections_open {}",
        load(&shared.metrics.open)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = Histogram::default();
        h.record(Duration::from_micros(250)); // le 0.00025
        h.record(Duration::from_micros(251)); // le 0.0005
        h.record(Duration::from_secs(60)); // +Inf
        assert_eq!(h.counts[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.counts[1].load(Ordering::Relaxed), 1);
        assert_eq!(h.counts[BUCKETS_US.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.sum_us.load(Ordering::Relaxed), 60_000_501);
    }

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        label(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }
}
