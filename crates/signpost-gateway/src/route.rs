//! Routes: what they say ([`RouteSpec`]) and how a request finds one ([`RouteTable`]). Pure:
//! no IO, no clock; unit-tested in `route/tests.rs`.
//!
//! Matching: a route matches when its host (if it has one) matches the request's host and its
//! prefix matches the path on whole segments. Among matching routes the longest prefix wins; on
//! equal prefixes an exact host beats a wildcard host, which beats no host.

use std::time::Duration;

use http::{HeaderMap, HeaderName, Uri};

pub mod path;

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// A `[[route]]` in the config file.
    Config,
    /// Instance metadata in the registry (`gateway.prefix`).
    Registry,
    /// `[auto_routes]`: a service named by the request path (see `crate::auto`).
    Auto,
}

impl RouteSource {
    /// `config` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteSource::Config => "config",
            RouteSource::Registry => "registry",
            RouteSource::Auto => "auto",
        }
    }
}

/// The protocol spoken to a route's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge: one multiplexed connection per instance.
    H2c,
    /// HTTP/1.1 over TLS, the instance's certificate verified against `[upstream_tls]`
    /// (`ca_file`, else the system's roots), pooled like `Http1`.
    Https,
}

impl Protocol {
    /// `http1`, `h2c` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::Https => "https",
        }
    }
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP address.
    ClientIp,
    /// The request path (before prefix stripping).
    Path,
    /// A request header's value (requests without it hash like an empty value).
    Header(HeaderName),
}

/// The SDK balancer a route uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalancerKind {
    /// `signpost_client::balance::RoundRobin`.
    RoundRobin,
    /// `signpost_client::balance::Random`.
    Random,
    /// `signpost_client::balance::WeightedRandom`.
    WeightedRandom,
    /// `signpost_client::balance::SmoothWeighted`.
    SmoothWeighted,
    /// `signpost_client::balance::LeastOutstanding`.
    LeastOutstanding,
    /// `signpost_client::balance::PeakEwma`.
    PeakEwma,
    /// `signpost_client::balance::ConsistentHash` on the given key.
    ConsistentHash(HashOn),
}

impl BalancerKind {
    /// The config name.
    pub fn as_str(&self) -> &'static str {
        match self {
            BalancerKind::RoundRobin => "round_robin",
            BalancerKind::Random => "random",
            BalancerKind::WeightedRandom => "weighted_random",
            BalancerKind::SmoothWeighted => "smooth_weighted",
            BalancerKind::LeastOutstanding => "least_outstanding",
            BalancerKind::PeakEwma => "peak_ewma",
            BalancerKind::ConsistentHash(_) => "consistent_hash",
        }
    }
}

/// A route's retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySpec {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Upstream statuses that are retried.
    pub statuses: Vec<u16>,
    /// Whether timeouts are retried.
    pub timeouts: bool,
    /// The first retry's backoff.
    pub backoff: Duration,
}

/// Everything a route says: matching and forwarding settings, no runtime state. Two routes
/// with equal specs are the same route (its breakers and balancer state carry over when the
/// configuration is rebuilt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Name in metrics, logs and the admin API.
    pub name: String,
    /// Lower-case host (`*.example.com` for any subdomain), or any host.
    pub host: Option<String>,
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// The registry service requests go to.
    pub service: String,
    /// Remove `prefix` from the path sent upstream.
    pub strip_prefix: bool,
    /// Which SDK balancer picks the instance.
    pub balancer: BalancerKind,
    /// Time until the upstream's response headers.
    pub timeout: Duration,
    /// Time to connect to an instance.
    pub connect_timeout: Duration,
    /// Retries.
    pub retry: RetrySpec,
    /// Only instances with this tag.
    pub tag: Option<String>,
    /// HTTP/1.1, h2c or HTTPS upstream.
    pub protocol: Protocol,
    /// Config file or registry.
    pub source: RouteSource,
    /// Encodings responses may be compressed with, in order of preference (empty: none).
    pub compress: Vec<crate::compress::Encoding>,
}

/// The default name of a route: its host (if any) followed by its prefix.
pub fn default_name(host: Option<&str>, prefix: &str) -> String {
    match host {
        Some(h) => format!("{h}{prefix}"),
        None => prefix.to_string(),
    }
}

/// Whether `prefix` matches `path` on whole segments: `/api` matches `/api`, `/api/` and
/// `/api/x` but not `/apix`; a prefix ending in `/` (like `/`) matches everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

/// Whether a route's host pattern (lower case) matches the request's host (any case, no port).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The path sent upstream when `prefix` is stripped from `path` (which it matches): the rest,
/// always starting with `/`.
pub fn strip_prefix<'p>(prefix: &str, path: &'p str) -> std::borrow::Cow<'p, str> {
    let rest = &path[prefix.len().min(path.len())..];
    if rest.starts_with('/') {
        std::borrow::Cow::Borrowed(rest)
    } else {
        std::borrow::Cow::Owned(format!("/{rest}"))
    }
}

/// The request's host without port: the URI's authority (HTTP/2, absolute-form requests), else
/// the `Host` header. `None` when there is neither or it is not valid text.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.host() {
        Some(h) => return Some(h.trim_start_matches('[').trim_end_matches(']')),
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `::1`.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Routes ordered for matching. Generic over the entry so the proxy can keep its runtime state
/// next to each spec.
#[derive(Debug)]
pub struct RouteTable<T> {
    /// Longest prefix first; on equal prefixes exact hosts, then wildcards, then none.
    entries: Vec<T>,
}

impl<T: AsRef<RouteSpec>> RouteTable<T> {
    /// Orders `entries` for matching.
    pub fn new(mut entries: Vec<T>) -> Self {
        entries.sort_by(|a, b| {
            let (a, b) = (a.as_ref(), b.as_ref());
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| host_rank(&a.host).cmp(&host_rank(&b.host)))
                .then_with(|| a.prefix.cmp(&b.prefix))
                .then_with(|| a.host.cmp(&b.host))
        });
        RouteTable { entries }
    }

    /// The route for a request to `host` (no port; `None` when the request names none) and
    /// `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&T> {
        self.entries.iter().find(|e| {
            let spec = e.as_ref();
            let host_ok = match (&spec.host, host) {
                (None, _) => true,
                (Some(pattern), Some(host)) => host_matches(pattern, host),
                (Some(_), None) => false,
            };
            host_ok && prefix_matches(&spec.prefix, path)
        })
    }

    /// Every entry, in matching order.
    pub fn entries(&self) -> &[T] {
        &self.entries
    }
}

/// 0: exact host, 1: wildcard, 2: any host.
fn host_rank(host: &Option<String>) -> u8 {
    match host {
        Some(h) if h.starts_with("*.") => 1,
        Some(_) => 0,
        None => 2,
    }
}

impl AsRef<RouteSpec> for RouteSpec {
    fn as_ref(&self) -> &RouteSpec {
        self
    }
}

#[cfg(test)]
mod tests;
