//! Per-client limits (`[limits]`): open connections, request rate (a token bucket) and open
//! blocking queries and watch streams, each per client IP address. The accept loop asks
//! [`ClientLimits::connection`]; [`limit_requests`] is the router layer for the other two.
//! Every refusal is counted in `signpost_limits_refused_total{reason}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::config::LimitsConfig;
use crate::http::ApiError;

/// Why a client was turned away: the `reason` label of `signpost_limits_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many open connections from one address (closed at accept).
    ConnsPerClient,
    /// Over the request rate.
    RequestRate,
    /// Too many open blocking queries and watch streams.
    BlockingPerClient,
    /// The request head (or the TLS handshake) did not arrive in time.
    HeaderTimeout,
    /// A request body did not arrive in time (answered 408).
    BodyTimeout,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnsPerClient => "conns_per_client",
            Refusal::RequestRate => "request_rate",
            Refusal::BlockingPerClient => "blocking_per_client",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::BodyTimeout => "body_timeout",
        }
    }
}

/// Counts one refusal in the agent's metrics.
pub fn count(agent: &Agent, why: Refusal) {
    metrics::with_local_recorder(agent.recorder(), || {
        metrics::counter!("signpost_limits_refused_total", "reason" => why.label()).increment(1);
    });
}

/// How many of something each client address holds open.
#[derive(Default)]
struct PerClient {
    /// Address → how many are open (no entry: none).
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerClient {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one for `ip` unless it already holds `max` (0: no limit).
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Held> {
        let mut open = self.lock();
        let n = open.entry(ip).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Held {
            of: self.clone(),
            ip,
        })
    }

    fn count(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or_default()
    }
}

/// One connection or blocking request, counted against its client until dropped.
pub struct Held {
    /// Where it is counted.
    of: Arc<PerClient>,
    /// Its client.
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.of.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A client's token bucket.
struct Bucket {
    /// Requests it may make now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// Buckets kept before full ones (clients idle long enough) are forgotten.
const MAX_BUCKETS: usize = 4096;

/// The per-client state of `[limits]`.
pub struct ClientLimits {
    /// The settings.
    config: LimitsConfig,
    /// Open connections per client.
    conns: Arc<PerClient>,
    /// Open blocking queries and watch streams per client.
    blocking: Arc<PerClient>,
    /// Request-rate buckets per client.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl ClientLimits {
    /// Limits as `config` sets them.
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(ClientLimits {
            config,
            conns: Arc::default(),
            blocking: Arc::default(),
            buckets: Mutex::default(),
        })
    }

    /// Admits a new connection from `ip`, or `None` if it already has as many as allowed.
    pub fn connection(&self, ip: IpAddr) -> Option<Held> {
        self.conns
            .acquire(ip, self.config.http_max_conns_per_client)
    }

    /// Open connections from `ip`.
    pub fn connections(&self, ip: IpAddr) -> usize {
        self.conns.count(ip)
    }

    /// Open blocking queries and watch streams from `ip`.
    pub fn blocking(&self, ip: IpAddr) -> usize {
        self.blocking.count(ip)
    }

    /// Takes a token from `ip`'s bucket at `now`, or says how long until one is there.
    fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.config.http_request_rate;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = self.config.http_request_burst.unwrap_or(rate.max(1.0));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// Whether a request holds its answer open until something changes: a watch stream, or a
/// blocking query (an `index` parameter, as Consul's and the native API's blocking reads take).
fn is_blocking(req: &Request) -> bool {
    if req.method() != http::Method::GET {
        return false;
    }
    if req.uri().path().ends_with("/watch") {
        return true;
    }
    req.uri().query().is_some_and(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map(|pairs| pairs.iter().any(|(k, v)| k == "index" && v != "0"))
            .unwrap_or(false)
    })
}

/// The router layer for the request rate and the blocking cap, keyed by the client address
/// the accept loop put in the request's [`ConnectInfo`]. Member traffic (`/raft/*`) is exempt.
pub async fn limit_requests(
    State((agent, limits)): State<(Arc<Agent>, Arc<ClientLimits>)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    if req.uri().path().starts_with("/raft/") {
        return next.run(req).await;
    }
    let ip = peer.ip();
    if let Err(wait) = limits.take(ip, Instant::now()) {
        count(&agent, Refusal::RequestRate);
        let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
        return ApiError::TooManyRequests {
            message: format!(
                "too many requests from {ip}: at most {} per second; retry in {retry_after} s",
                limits.config.http_request_rate
            ),
            retry_after: Some(retry_after),
        }
        .into_response();
    }
    if !is_blocking(&req) {
        return next.run(req).await;
    }
    let max = limits.config.max_blocking_per_client;
    let Some(held) = limits.blocking.acquire(ip, max) else {
        count(&agent, Refusal::BlockingPerClient);
        return ApiError::TooManyRequests {
            message: format!(
                "too many open blocking queries and watches from {ip} (at most {max}); close one first"
            ),
            retry_after: None,
        }
        .into_response();
    };
    let response = next.run(req).await;
    // A watch stream's body outlives the handler: the slot is held until the body is done.
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &held;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: Option<f64>) -> Arc<ClientLimits> {
        ClientLimits::new(LimitsConfig {
            http_request_rate: rate,
            http_request_burst: burst,
            ..LimitsConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let l = limits(2.0, Some(3.0));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take(a, t0).unwrap();
        }
        let wait = l.take(a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        l.take(b, t0).unwrap();
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        l.take(a, t1).unwrap();
        assert!(l.take(a, t1).is_err());
        // After a long pause the bucket is full again, not fuller.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            l.take(a, t2).unwrap();
        }
        assert!(l.take(a, t2).is_err());
    }

    #[test]
    fn without_a_rate_nothing_is_limited() {
        let l = limits(0.0, None);
        let now = Instant::now();
        for _ in 0..10_000 {
            l.take([10, 0, 0, 1].into(), now).unwrap();
        }
    }

    #[test]
    fn connections_are_counted_per_client_and_released_on_drop() {
        let l = ClientLimits::new(LimitsConfig {
            http_max_conns_per_client: 2,
            ..LimitsConfig::default()
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let first = l.connection(a).unwrap();
        let _second = l.connection(a).unwrap();
        assert!(l.connection(a).is_none());
        assert!(l.connection([10, 0, 0, 2].into()).is_some());
        drop(first);
        assert_eq!(l.connections(a), 1);
        assert!(l.connection(a).is_some());
    }

    #[test]
    fn blocking_requests_are_recognised() {
        let req = |m: &str, uri: &str| {
            Request::builder()
                .method(m)
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(is_blocking(&req("GET", "/api/v1/services/web/watch")));
        assert!(is_blocking(&req(
            "GET",
            "/v1/health/service/web?index=12&wait=5s"
        )));
        assert!(is_blocking(&req("GET", "/v1/kv/a?recurse&index=3")));
        assert!(!is_blocking(&req("GET", "/v1/kv/a?index=0")));
        assert!(!is_blocking(&req("GET", "/v1/catalog/services")));
        assert!(!is_blocking(&req("PUT", "/v1/kv/a?index=3")));
    }
}
