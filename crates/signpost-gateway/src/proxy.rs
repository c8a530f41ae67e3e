//! The request path: route, rewrite, pick an instance, forward, retry, answer.
//!
//! For each request: find the route in the current snapshot (404), rewrite the headers
//! ([`crate::headers`]), then per attempt let the route's SDK [`Selector`] pick an instance
//! (503 when there is none or every circuit is open), take or open a connection, send, and
//! wait for the response head within the route's timeout (504). The outcome goes back to the
//! selector (breaker, outlier ejection, balancer). Failures the route's [`RetryPolicy`] allows
//! — and its budget pays for — are retried on another instance: connect failures for any
//! request (nothing was sent), 5xx statuses, broken connections and timeouts only for
//! idempotent requests without a body (the body streams through and cannot be sent twice).
//! An upstream that answers is passed through as it answered; 502 means no answer came.
//!
//! [`Selector`]: signpost_client::selector::Selector

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use signpost_client::balance::{Outcome, PickContext};
use signpost_client::retry::{Decision, FailureKind, RetryPolicy};
use signpost_client::selector::SelectError;

use crate::body::{ProxyBody, UpBody};
use crate::deadline::DeadlineSlot;
use crate::error::ProxyError;
use crate::headers::{self, ClientInfo, X_REQUEST_ID};
use crate::metrics::AttemptFailure;
use crate::pool::{ConnectError, H1Conn, HostPool};
use crate::route::{self, HashOn, Protocol, RouteSpec};
use crate::state::{RouteEntry, Shared};
use crate::trace::RequestTrace;

/// What a client connection's requests share.
pub(crate) struct ConnState {
    /// The gateway.
    pub(crate) shared: Arc<Shared>,
    /// The client.
    pub(crate) client: ClientInfo,
    /// Requests started on the connection (the idle check closes connections where it stays
    /// put; see [`crate::server`]).
    pub(crate) requests: std::sync::atomic::AtomicU64,
    /// The timer HTTP/1.1 exchanges wait for their response head with, kept between requests.
    pub(crate) deadline: DeadlineSlot,
}

/// Answers one request.
pub(crate) async fn handle(
    conn: Arc<ConnState>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let shared = &*conn.shared;
    // Match and forward the canonical path, on the host the request names (route/path.rs).
    if let Err(reason) = route::path::canonicalize(&mut req) {
        let error = ProxyError::BadPath { reason };
        return Ok(refuse(shared, &conn.client, &req, error, started));
    }
    let mut snapshot = shared.snapshot();
    if snapshot.auto.is_some() {
        // Routes by service name (auto.rs): may wait for the service's first list.
        snapshot = match crate::auto::settle(shared, snapshot, &req).await {
            Ok(snapshot) => snapshot,
            Err(error) => return Ok(refuse(shared, &conn.client, &req, error, started)),
        };
    }
    let host = route::request_host(req.uri(), req.headers());
    let Some(entry) = snapshot.table.find(host, req.uri().path()) else {
        let error = ProxyError::NoRoute {
            path: req.uri().path().to_string(),
        };
        return Ok(refuse(shared, &conn.client, &req, error, started));
    };
    if headers::is_upgrade(req.headers()) && shared.upgrades.full() {
        let limit = shared.upgrades.max();
        let error = ProxyError::UpgradeLimit { limit };
        return Ok(refuse(shared, &conn.client, &req, error, started));
    }
    let trace = RequestTrace::start(shared, entry, &mut req);
    let response = forward(shared, entry, &conn, req, started, &trace);
    Ok(trace.finish(trace.instrument(response).await))
}

/// A request answered before it reached a route (404 no route, 400 bad path, 503 over a
/// cap), counted and logged.
fn refuse(
    shared: &Shared,
    client: &ClientInfo,
    req: &Request<Incoming>,
    error: ProxyError,
    started: Instant,
) -> Response<ProxyBody> {
    let counter = match error {
        ProxyError::BadPath { .. } => &shared.metrics.bad_path,
        ProxyError::UpgradeLimit { .. } => &shared.metrics.upgrade_limit,
        ProxyError::AutoRouteLimit { .. } => &shared.metrics.auto_route_limit,
        _ => &shared.metrics.no_route,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| shared.ids.next());
    if shared.access_log {
        access_log(
            req.method(),
            req.uri(),
            error.status(),
            "",
            "",
            0,
            started.elapsed(),
            &request_id,
            client,
        );
    }
    error.to_response(Some(&request_id))
}

/// A request that was never sent: its head and body, handed back for the next attempt.
type Unsent = (http::request::Parts, Option<UpBody>);

/// How one attempt failed.
enum AttemptError {
    /// No connection: nothing was sent; the request comes back untouched.
    Connect(ConnectError, Box<Unsent>),
    /// No response head in time.
    Timeout(Duration),
    /// The exchange broke.
    Transport(hyper::Error),
}

impl AttemptError {
    /// The failure as the retry policy names it.
    fn kind(&self) -> FailureKind {
        match self {
            AttemptError::Connect(..) => FailureKind::Connect,
            AttemptError::Timeout(_) => FailureKind::Timeout,
            AttemptError::Transport(_) => FailureKind::Transport,
        }
    }
}

/// The response head and how its body arrives.
struct Answer {
    /// The upstream's response (its body not yet wrapped).
    response: Response<Incoming>,
    /// The connection to drive while the body streams (HTTP/1.1), if it is still open.
    conn: Option<Box<H1Conn>>,
}

/// Forwards a routed request: per attempt, select an instance, [`attempt`] the exchange, let
/// [`retry_after`] decide whether to go again; then [`respond`] with the answer or [`fail`]
/// with the gateway's error.
async fn forward(
    shared: &Shared,
    entry: &RouteEntry,
    conn: &ConnState,
    mut req: Request<Incoming>,
    started: Instant,
    trace: &RequestTrace,
) -> Response<ProxyBody> {
    let client = &conn.client;
    let route = &*entry.route;
    let spec = &route.spec;
    let upgrade = headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let host_value = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let request_id = headers::prepare_request(
        &mut parts.headers,
        client,
        host_value.as_ref(),
        shared.trust_forwarded,
        upgrade,
        &shared.ids,
    );
    let accepted = crate::compress::Accepted::read(&spec.compress, &parts.headers);
    let ctx = pick_context(spec, client, &parts);
    let path = upstream_path(spec, &parts.uri);
    let body_empty = body.is_end_stream();
    let mut body = Some(if body_empty {
        UpBody::Empty
    } else {
        UpBody::Incoming(body)
    });
    let idempotent = RetryPolicy::is_idempotent(&parts.method);
    let attempts = route.retry.attempts();
    let may_resend = may_resend(
        &route.retry,
        &spec.retry.statuses,
        idempotent,
        body_empty,
        upgrade,
    );
    if attempts > 1 {
        if let Some(budget) = route.retry.budget() {
            budget.deposit_at(tokio::time::Instant::from_std(started));
        }
    }
    let version = parts.version;
    let mut tried: Vec<&str> = Vec::new();
    let mut attempt: u32 = 1;

    loop {
        let selected = match route.selector.select(&entry.instances, &ctx, &tried) {
            Ok(selected) => selected,
            Err(e) => {
                trace.not_selected(&e);
                let error = match e {
                    SelectError::NoInstances => ProxyError::NoInstances {
                        service: spec.service.clone(),
                    },
                    SelectError::CircuitOpen => ProxyError::CircuitOpen {
                        service: spec.service.clone(),
                    },
                };
                return fail(
                    shared,
                    entry,
                    client,
                    &parts,
                    error,
                    "",
                    attempt,
                    started,
                    &request_id,
                );
            }
        };
        let instance = selected.instance();
        let upstream = &entry.upstreams[selected.position()];
        let pool = &upstream.pool;
        upstream
            .stats
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

        // A later attempt may need the headers again; the last possible one takes them.
        let keep = may_resend && attempt < attempts;
        let request_headers = if keep {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let uri = upstream_uri(spec.protocol, &path, host_value.as_ref(), pool.authority());
        let mut up = Request::new(());
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = request_headers;
        prepare_host(
            &mut up,
            spec.protocol,
            host_value.as_ref(),
            pool.authority(),
        );

        let result = attempt_once(pool, spec, up, &mut body, upgrade, &conn.deadline).await;
        let outcome = match &result {
            Ok(answer) => AttemptOutcome::Answered(answer.response.status()),
            Err(e) => AttemptOutcome::Failed(e.kind()),
        };
        selected.finish(outcome.for_selector());
        let retry = retry_after(&route.retry, idempotent, keep, attempt, outcome);
        trace.attempt(attempt, pool.authority(), outcome, retry);

        let failure = match result {
            Ok(answer) => {
                if answer.response.status().is_server_error() {
                    upstream.stats.failure(AttemptFailure::Status5xx);
                }
                let Some(after) = retry else {
                    let response = finish_response(
                        answer,
                        pool,
                        version,
                        &request_id,
                        client_upgrade,
                        &shared.upgrades,
                    );
                    let response = crate::compress::apply(&accepted, &parts.method, response);
                    return respond(
                        shared,
                        entry,
                        client,
                        &parts,
                        response,
                        pool.authority(),
                        attempt,
                        started,
                        &request_id,
                    );
                };
                drop(wrap_body(answer, pool));
                retry_wait(route, after).await;
                tried.push(&instance.id);
                attempt += 1;
                if body.is_none() {
                    body = Some(UpBody::Empty);
                }
                continue;
            }
            Err(e) => e,
        };

        let (stat, error) = describe(&failure, spec, pool.authority());
        if let AttemptError::Connect(_, unsent) = failure {
            // Nothing was sent: the next attempt sends the request as it was.
            let (head, untouched) = *unsent;
            parts.headers = head.headers;
            body = untouched;
        }
        upstream.stats.failure(stat);
        tracing::debug!(
            route = %spec.name,
            upstream = %pool.authority(),
            attempt,
            "attempt failed: {error}"
        );
        if let Some(after) = retry {
            retry_wait(route, after).await;
            tried.push(&instance.id);
            attempt += 1;
            if body.is_none() {
                body = Some(UpBody::Empty);
            }
            continue;
        }
        return fail(
            shared,
            entry,
            client,
            &parts,
            error,
            pool.authority(),
            attempt,
            started,
            &request_id,
        );
    }
}

/// Whether a failure after sending may be retried at all: only a request without a body (and
/// no upgrade) can be sent twice, and only if the policy retries something other than connect
/// failures for it (`statuses`: the route's retried statuses).
fn may_resend(
    policy: &RetryPolicy,
    statuses: &[u16],
    idempotent: bool,
    body_empty: bool,
    upgrade: bool,
) -> bool {
    let retryable = |kind: FailureKind| policy.is_retryable(idempotent, &kind).is_ok();
    body_empty
        && !upgrade
        && policy.attempts() > 1
        && (retryable(FailureKind::Transport)
            || retryable(FailureKind::Timeout)
            || statuses.iter().any(|s| retryable(FailureKind::Status(*s))))
}

/// How one attempt ended, as far as the selector and the retry decision are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    /// The upstream answered with this status.
    Answered(StatusCode),
    /// No answer came.
    Failed(FailureKind),
}

impl AttemptOutcome {
    /// The outcome the selector records: a 5xx or no answer is the instance's failure.
    fn for_selector(self) -> Outcome {
        match self {
            AttemptOutcome::Answered(status) if !status.is_server_error() => Outcome::Success,
            _ => Outcome::Failure,
        }
    }
}

/// The retry decision: `Some(wait)` when attempt number `attempt`, which ended with `outcome`,
/// is followed by another after `wait`. A connect failure sent nothing, so the request can
/// always go again; anything else was sent and can go again only if it was kept for that
/// (`resendable`). A success or a non-5xx answer is never retried. The policy decides the rest
/// (and takes a budget token when it says yes).
fn retry_after(
    policy: &RetryPolicy,
    idempotent: bool,
    resendable: bool,
    attempt: u32,
    outcome: AttemptOutcome,
) -> Option<Duration> {
    let kind = match outcome {
        AttemptOutcome::Answered(status) if status.is_server_error() => {
            FailureKind::Status(status.as_u16())
        }
        AttemptOutcome::Answered(_) => return None,
        AttemptOutcome::Failed(kind) => kind,
    };
    if kind != FailureKind::Connect && !resendable {
        return None;
    }
    match policy.decide(idempotent, &kind, attempt) {
        Decision::Retry { after } => Some(after),
        Decision::Stop(_) => None,
    }
}

/// The counter and the gateway error of a failed attempt against `upstream`.
fn describe(
    failure: &AttemptError,
    spec: &RouteSpec,
    upstream: &str,
) -> (AttemptFailure, ProxyError) {
    match failure {
        AttemptError::Connect(e, _) => {
            let reason = e.to_string();
            let error = match e {
                ConnectError::Timeout { .. } => ProxyError::Timeout {
                    service: spec.service.clone(),
                    upstream: upstream.to_string(),
                    reason,
                },
                _ => ProxyError::Upstream {
                    service: spec.service.clone(),
                    upstream: upstream.to_string(),
                    reason,
                },
            };
            (AttemptFailure::Connect, error)
        }
        AttemptError::Timeout(after) => (
            AttemptFailure::Timeout,
            ProxyError::Timeout {
                service: spec.service.clone(),
                upstream: upstream.to_string(),
                reason: format!("no response within {after:?}"),
            },
        ),
        AttemptError::Transport(e) => (
            AttemptFailure::Transport,
            ProxyError::Upstream {
                service: spec.service.clone(),
                upstream: upstream.to_string(),
                reason: e.to_string(),
            },
        ),
    }
}

/// One attempt: the exchange with the instance behind `pool`, as the route's protocol (or an
/// upgrade) needs it, up to the response head.
async fn attempt_once(
    pool: &Arc<HostPool>,
    spec: &RouteSpec,
    up: Request<()>,
    body: &mut Option<UpBody>,
    upgrade: bool,
    deadline: &DeadlineSlot,
) -> Result<Answer, AttemptError> {
    if upgrade {
        return send_upgrade(pool, spec, up, body).await;
    }
    match spec.protocol {
        Protocol::Http1 | Protocol::Https => send_h1(pool, spec, up, body, deadline).await,
        Protocol::H2c => send_h2(pool, spec, up, body).await,
    }
}

/// The upstream's answer as the client's response, counted and logged.
#[allow(clippy::too_many_arguments)]
fn respond(
    shared: &Shared,
    entry: &RouteEntry,
    client: &ClientInfo,
    parts: &http::request::Parts,
    response: Response<ProxyBody>,
    upstream: &str,
    attempts: u32,
    started: Instant,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let route = &entry.route;
    let status = response.status();
    route.metrics.response(status.as_u16(), started.elapsed());
    if shared.access_log {
        access_log(
            &parts.method,
            &parts.uri,
            status,
            &route.spec.name,
            upstream,
            attempts,
            started.elapsed(),
            request_id,
            client,
        );
    }
    response
}

async fn retry_wait(route: &crate::state::Route, after: Duration) {
    route
        .metrics
        .retries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
}

/// A gateway-made error response, counted and logged.
#[allow(clippy::too_many_arguments)]
fn fail(
    shared: &Shared,
    entry: &RouteEntry,
    client: &ClientInfo,
    parts: &http::request::Parts,
    error: ProxyError,
    upstream: &str,
    attempts: u32,
    started: Instant,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let route = &entry.route;
    route.metrics.error(error.kind());
    if error.status() != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(route = %route.spec.name, %upstream, request_id = ?request_id, "{error}");
    }
    // Counted and logged as any answer is, with the error's status.
    respond(
        shared,
        entry,
        client,
        parts,
        error.to_response(Some(request_id)),
        upstream,
        attempts,
        started,
        request_id,
    )
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    method: &Method,
    uri: &Uri,
    status: StatusCode,
    route: &str,
    upstream: &str,
    attempts: u32,
    elapsed: Duration,
    request_id: &HeaderValue,
    client: &ClientInfo,
) {
    tracing::info!(
        target: "signpost_gateway::access",
        client = %client.ip,
        %method,
        path = %uri.path(),
        status = status.as_u16(),
        route,
        upstream,
        attempts,
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        request_id = request_id.to_str().unwrap_or("-"),
        "request"
    );
}

/// The request key of consistent hashing.
fn pick_context(
    spec: &RouteSpec,
    client: &ClientInfo,
    parts: &http::request::Parts,
) -> PickContext {
    match &spec.balancer {
        route::BalancerKind::ConsistentHash(on) => match on {
            HashOn::ClientIp => PickContext::with_key(client.ip_value.as_bytes()),
            HashOn::Path => PickContext::with_key(parts.uri.path()),
            HashOn::Header(name) => PickContext::with_key(
                parts
                    .headers
                    .get(name)
                    .map(HeaderValue::as_bytes)
                    .unwrap_or_default(),
            ),
        },
        _ => PickContext::new(),
    }
}

/// The path and query sent upstream.
fn upstream_path(spec: &RouteSpec, uri: &Uri) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !spec.strip_prefix {
        return original;
    }
    let rest = route::strip_prefix(&spec.prefix, uri.path());
    let joined = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.into_owned(),
    };
    PathAndQuery::try_from(joined).unwrap_or(original)
}

/// Origin-form for HTTP/1.1; absolute-form (scheme and authority) for h2c, whose `:authority`
/// carries the client's host.
fn upstream_uri(
    protocol: Protocol,
    path: &PathAndQuery,
    host: Option<&HeaderValue>,
    instance: &str,
) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path.clone());
    if protocol == Protocol::H2c {
        parts.scheme = Some(Scheme::HTTP);
        let authority = host
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| Authority::try_from(instance).ok());
        parts.authority = authority;
    }
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// HTTP/1.1 needs a `Host`: the client's (its `Host` header, or an HTTP/2 client's
/// `:authority`), else the instance's. HTTP/2 carries it in `:authority` instead.
fn prepare_host(
    req: &mut Request<()>,
    protocol: Protocol,
    host: Option<&HeaderValue>,
    instance: &str,
) {
    match protocol {
        Protocol::Http1 | Protocol::Https => {
            if !req.headers().contains_key(header::HOST) {
                let value = host
                    .cloned()
                    .or_else(|| HeaderValue::from_str(instance).ok());
                if let Some(v) = value {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
        }
        Protocol::H2c => {
            req.headers_mut().remove(header::HOST);
            *req.version_mut() = Version::HTTP_2;
        }
    }
}

/// Drives `conn` while `fut` (a request on it) runs; says whether `conn` is still open.
async fn drive<F: Future>(conn: &mut H1Conn, fut: F) -> (F::Output, bool) {
    let mut fut = pin!(fut);
    let mut open = true;
    let output = std::future::poll_fn(|cx| {
        if open {
            if let Poll::Ready(result) = conn.poll_drive(cx) {
                open = false;
                if let Err(e) = result {
                    tracing::debug!("upstream connection failed: {e}");
                }
            }
        }
        fut.as_mut().poll(cx)
    })
    .await;
    (output, open)
}

/// A connect failure, handing the request back.
fn unsent(e: ConnectError, head: Request<()>, body: &mut Option<UpBody>) -> AttemptError {
    let (head, ()) = head.into_parts();
    AttemptError::Connect(e, Box::new((head, body.take())))
}

/// One HTTP/1.1 attempt: a pooled connection (or a new one), the request, the response head
/// within the route's timeout (waited for with the client connection's timer, `timers`).
async fn send_h1(
    pool: &Arc<HostPool>,
    spec: &RouteSpec,
    head: Request<()>,
    body: &mut Option<UpBody>,
    timers: &DeadlineSlot,
) -> Result<Answer, AttemptError> {
    let (mut conn, mut reused) = match pool.checkout() {
        Some(conn) => (conn, true),
        None => match pool.connect_h1(spec.connect_timeout).await {
            Ok(conn) => (conn, false),
            Err(e) => return Err(unsent(e, head, body)),
        },
    };
    let mut req = head.map(|()| body.take().unwrap_or(UpBody::Empty));
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut timer = timers.take(deadline);
    loop {
        let finished = {
            let send = conn.send.try_send_request(req);
            let mut exchange = pin!(drive(&mut conn, send));
            std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(done) => Poll::Ready(Some(done)),
                Poll::Pending => timer.poll_until(deadline, cx).map(|()| None),
            })
            .await
        };
        let Some((result, open)) = finished else {
            timers.put(timer);
            return Err(AttemptError::Timeout(spec.timeout));
        };
        match result {
            Ok(response) => {
                timers.put(timer);
                return Ok(Answer {
                    response,
                    conn: open.then_some(conn),
                });
            }
            Err(mut e) => match e.take_message() {
                // Never sent: a pooled connection the upstream had closed. Try a new one.
                Some(unsent) if reused => {
                    req = unsent;
                    reused = false;
                    conn = match pool.connect_h1(spec.connect_timeout).await {
                        Ok(conn) => conn,
                        Err(err) => {
                            timers.put(timer);
                            let (head, b) = req.into_parts();
                            return Err(AttemptError::Connect(err, Box::new((head, Some(b)))));
                        }
                    };
                }
                _ => {
                    timers.put(timer);
                    return Err(AttemptError::Transport(e.into_error()));
                }
            },
        }
    }
}

/// One h2c attempt on the instance's multiplexed connection.
async fn send_h2(
    pool: &Arc<HostPool>,
    spec: &RouteSpec,
    head: Request<()>,
    body: &mut Option<UpBody>,
) -> Result<Answer, AttemptError> {
    let mut send = match pool.h2(spec.connect_timeout).await {
        Ok(send) => send,
        Err(e) => return Err(unsent(e, head, body)),
    };
    let req = head.map(|()| body.take().unwrap_or(UpBody::Empty));
    let exchange = async {
        send.ready().await?;
        send.send_request(req).await
    };
    unpooled_answer(spec.timeout, exchange).await
}

/// An upgrade handshake (WebSocket) on a connection of its own.
async fn send_upgrade(
    pool: &Arc<HostPool>,
    spec: &RouteSpec,
    head: Request<()>,
    body: &mut Option<UpBody>,
) -> Result<Answer, AttemptError> {
    let mut send = match pool.connect_upgradable(spec.connect_timeout).await {
        Ok(send) => send,
        Err(e) => return Err(unsent(e, head, body)),
    };
    let mut req = head.map(|()| body.take().unwrap_or(UpBody::Empty));
    *req.version_mut() = Version::HTTP_11;
    unpooled_answer(spec.timeout, send.send_request(req)).await
}

/// The answer of an exchange that leaves no connection to drive (h2c, an upgrade), within
/// `timeout`.
async fn unpooled_answer(
    timeout: Duration,
    exchange: impl Future<Output = hyper::Result<Response<Incoming>>>,
) -> Result<Answer, AttemptError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => Ok(Answer {
            response,
            conn: None,
        }),
        Ok(Err(e)) => Err(AttemptError::Transport(e)),
        Err(_) => Err(AttemptError::Timeout(timeout)),
    }
}

/// The body of an answer, driving its connection when it has one.
fn wrap_body(answer: Answer, pool: &Arc<HostPool>) -> (http::response::Parts, ProxyBody) {
    let (parts, incoming) = answer.response.into_parts();
    let body = match answer.conn {
        Some(conn) => ProxyBody::pooled(incoming, conn, pool.clone()),
        None => ProxyBody::stream(incoming),
    };
    (parts, body)
}

/// The client's response: hop-by-hop headers out, the request id in, and for a `101` the two
/// upgraded connections spliced together (by `upgrades`).
fn finish_response(
    answer: Answer,
    pool: &Arc<HostPool>,
    version: Version,
    request_id: &HeaderValue,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrades: &crate::upgrade::Upgrades,
) -> Response<ProxyBody> {
    let switching = answer.response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let mut upstream_upgrade = None;
    let mut answer = answer;
    if switching {
        upstream_upgrade = Some(hyper::upgrade::on(&mut answer.response));
    }
    let (mut parts, body) = wrap_body(answer, pool);
    headers::prepare_response(&mut parts.headers, switching, request_id);
    parts.version = version;
    if let (true, Some(client), Some(upstream)) = (switching, client_upgrade, upstream_upgrade) {
        upgrades.splice(client, upstream, pool.authority().to_string());
        return Response::from_parts(parts, ProxyBody::empty());
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use signpost_client::retry::RetryBudget;

    use super::*;

    const OK: AttemptOutcome = AttemptOutcome::Answered(StatusCode::OK);
    const NOT_FOUND: AttemptOutcome = AttemptOutcome::Answered(StatusCode::NOT_FOUND);
    const E500: AttemptOutcome = AttemptOutcome::Answered(StatusCode::INTERNAL_SERVER_ERROR);
    const E503: AttemptOutcome = AttemptOutcome::Answered(StatusCode::SERVICE_UNAVAILABLE);
    const CONNECT: AttemptOutcome = AttemptOutcome::Failed(FailureKind::Connect);
    const TRANSPORT: AttemptOutcome = AttemptOutcome::Failed(FailureKind::Transport);
    const TIMEOUT: AttemptOutcome = AttemptOutcome::Failed(FailureKind::Timeout);

    /// Three attempts, 502/503 retried, timeouts not, no budget.
    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(3)
            .retry_statuses([502, 503])
            .without_budget()
    }

    #[test]
    fn the_retry_decision_table() {
        // (outcome, idempotent, resendable, attempt, retried?)
        let table = [
            // Answers that are not 5xx are passed through, never retried.
            (OK, true, true, 1, false),
            (NOT_FOUND, true, true, 1, false),
            // A retried status: only an idempotent request that was kept for resending, and
            // only while attempts are left.
            (E503, true, true, 1, true),
            (E503, true, true, 2, true),
            (E503, true, true, 3, false),
            (E503, false, true, 1, false),
            (E503, true, false, 1, false),
            // A 5xx the route does not retry.
            (E500, true, true, 1, false),
            // Nothing was sent: retried whatever the method, kept or not.
            (CONNECT, false, false, 1, true),
            (CONNECT, true, false, 2, true),
            (CONNECT, true, true, 3, false),
            // A broken exchange: like a status.
            (TRANSPORT, true, true, 1, true),
            (TRANSPORT, true, false, 1, false),
            (TRANSPORT, false, true, 1, false),
            // Timeouts are not retried by this policy.
            (TIMEOUT, true, true, 1, false),
        ];
        let three = policy();
        for (outcome, idempotent, resendable, attempt, retried) in table {
            assert_eq!(
                retry_after(&three, idempotent, resendable, attempt, outcome).is_some(),
                retried,
                "{outcome:?} idempotent={idempotent} resendable={resendable} attempt={attempt}"
            );
        }
        // A route that retries timeouts does, for a resendable idempotent request.
        let timeouts = policy().retry_timeouts(true);
        assert!(retry_after(&timeouts, true, true, 1, TIMEOUT).is_some());
        assert!(retry_after(&timeouts, true, false, 1, TIMEOUT).is_none());
    }

    #[tokio::test]
    async fn an_empty_budget_stops_retries() {
        let broke =
            policy().budget_with(Arc::new(RetryBudget::new(0.0, 0, Duration::from_secs(10))));
        assert_eq!(retry_after(&broke, true, true, 1, CONNECT), None);
        assert_eq!(retry_after(&broke, true, true, 1, E503), None);
    }

    #[test]
    fn only_a_5xx_or_no_answer_counts_against_the_instance() {
        assert_eq!(OK.for_selector(), Outcome::Success);
        assert_eq!(NOT_FOUND.for_selector(), Outcome::Success);
        assert_eq!(E500.for_selector(), Outcome::Failure);
        for failed in [CONNECT, TRANSPORT, TIMEOUT] {
            assert_eq!(failed.for_selector(), Outcome::Failure);
        }
    }

    #[test]
    fn only_a_bodiless_request_the_policy_may_retry_is_kept_for_resending() {
        let p = policy();
        let statuses = [502, 503];
        assert!(may_resend(&p, &statuses, true, true, false));
        assert!(
            !may_resend(&p, &statuses, true, false, false),
            "a body streams through once"
        );
        assert!(
            !may_resend(&p, &statuses, true, true, true),
            "an upgrade is sent once"
        );
        assert!(!may_resend(
            &RetryPolicy::none(),
            &statuses,
            true,
            true,
            false
        ));
        // A POST is retried only on connect failures, which need nothing kept.
        assert!(!may_resend(&p, &statuses, false, true, false));
        // No retried status and no transport retries: nothing to keep.
        let connect_only = policy().retry_statuses([]).retry_transport(false);
        assert!(!may_resend(&connect_only, &[], true, true, false));
    }
}
