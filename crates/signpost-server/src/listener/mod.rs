//! The agent's HTTP listeners (the API, and the dedicated Raft listener): a hand-written accept
//! loop on hyper-util, so that each connection can be checked before it is served.
//!
//! For each accepted connection, in order:
//! 1. the per-client connection cap ([`limits::ClientLimits::connection`]; over it the
//!    connection is closed at once);
//! 2. TLS, when configured: the handshake with the acceptor's current certificate (reloaded on
//!    SIGHUP or when the files change, see [`signpost_tls::ReloadingAcceptor`]), within the
//!    request-head deadline;
//! 3. HTTP/1.1 (or HTTP/2: by ALPN over TLS, by its preface in clear text), the request head
//!    due within `[limits] http_header_timeout` (10 s by default), every request given the
//!    client's address as [`ConnectInfo`] and, over TLS with a verified client certificate, a
//!    [`ClientCertified`] mark.
//!
//! Each listener also bounds what a connection may hold (`[limits]`, see the README's
//! "Listener limits"):
//! - at most `http_max_conns` connections are served at once; over it the loop stops
//!   accepting, and new connections wait in the kernel's listen backlog until one closes
//!   (waiting, rather than closing them, keeps a burst of legitimate clients working);
//! - a keep-alive connection idle between requests is closed after `http_idle_timeout` (or the
//!   header timeout, if shorter: hyper times the next request head from the moment the
//!   connection goes idle, so one timer, set to the lesser of the two, serves both);
//! - a request body must arrive within `http_body_timeout` of its head, or the request is
//!   answered 408 ([`body`]).
//!
//! At shutdown the loop stops accepting, asks every connection to finish its current exchange
//! (hyper-util's graceful shutdown), and closes what is still open after the grace period.

pub mod body;
pub mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use signpost_tls::ReloadingAcceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::agent::Agent;
use limits::{ClientLimits, Held, Refusal};

/// Marks a request that came over TLS with a client certificate the listener verified against
/// its CA (mutual TLS): member calls require it when TLS is configured.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertified;

/// How one listener serves.
#[derive(Clone)]
pub struct ListenerOptions {
    /// For logs: `http` or `raft`.
    pub name: &'static str,
    /// TLS, when the listener speaks HTTPS only.
    pub tls: Option<Arc<ReloadingAcceptor>>,
    /// How long a client has to finish the TLS handshake and to send each request head.
    pub header_timeout: Duration,
    /// Per-client connection cap (the API listener; members are not limited).
    pub limits: Option<Arc<ClientLimits>>,
    /// How long open connections get to finish after the stop signal.
    pub grace: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive, from its head (then: 408).
    pub body_timeout: Duration,
    /// Most connections served at once (0: no limit); more wait in the backlog.
    pub max_conns: usize,
}

/// Serves `app` on `listener` until `stop` resolves, then drains (see the module doc).
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    app: Router,
    options: ListenerOptions,
    stop: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let (stopping, stopped) = watch::channel(false);
    let mut conns = JoinSet::new();
    let slots = (options.max_conns > 0).then(|| Arc::new(Semaphore::new(options.max_conns)));
    tokio::pin!(stop);
    loop {
        // A free slot first: at the cap, connections wait in the listen backlog.
        let slot = match &slots {
            Some(slots) => tokio::select! {
                biased;
                () = &mut stop => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => Some(slot),
                    Err(_) => break,
                },
            },
            None => None,
        };
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let held = match &options.limits {
                        Some(limits) => match limits.connection(peer.ip()) {
                            Some(held) => Some(held),
                            None => {
                                limits::count(&agent, Refusal::ConnsPerClient);
                                tracing::debug!(%peer, "too many connections from this client; closed");
                                drop(stream);
                                continue;
                            }
                        },
                        None => None,
                    };
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(stream, Conn {
                        agent: agent.clone(),
                        peer,
                        app: app.clone(),
                        options: options.clone(),
                        watcher: graceful.watcher(),
                        stopped: stopped.clone(),
                        _held: held,
                        _slot: slot,
                    }));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving and try again shortly.
                    tracing::warn!(listener = options.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    stopping.send_replace(true);
    let open = conns.len();
    if open > 0 {
        tracing::debug!(listener = options.name, open, "draining connections");
    }
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = options.name,
            "requests still running after {:?}; closing them",
            options.grace
        );
    }
    conns.shutdown().await;
    Ok(())
}

/// One accepted connection and what serving it needs.
struct Conn {
    agent: Arc<Agent>,
    peer: SocketAddr,
    app: Router,
    options: ListenerOptions,
    /// Registers the connection for the graceful shutdown.
    watcher: Watcher,
    /// Turns true when the listener stops: a connection still in its handshake gives up.
    stopped: watch::Receiver<bool>,
    /// Its slot in the per-client connection count.
    _held: Option<Held>,
    /// Its slot under the listener's connection cap.
    _slot: Option<OwnedSemaphorePermit>,
}

/// Why a connection ended before its first request.
enum Early {
    /// Nothing (or no complete handshake) in time.
    Timeout,
    /// The listener stopped.
    Stopped,
    /// The client went away or the handshake failed.
    Failed,
}

/// Runs `step` within the header deadline, giving up when the listener stops.
async fn in_time<T>(
    deadline: Duration,
    stopped: &mut watch::Receiver<bool>,
    step: impl Future<Output = std::io::Result<T>>,
) -> Result<T, Early> {
    tokio::select! {
        r = tokio::time::timeout(deadline, step) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!("connection failed before its first request: {e}");
                Err(Early::Failed)
            }
            Err(_) => Err(Early::Timeout),
        },
        _ = stopped.wait_for(|s| *s) => Err(Early::Stopped),
    }
}

async fn connection(stream: TcpStream, mut conn: Conn) {
    let deadline = conn.options.header_timeout;
    let early = match conn.options.tls.clone() {
        None => {
            // hyper's header timer starts once it reads a request head, and its HTTP/2
            // detection reads without one: the protocol is told apart here, in time (a client
            // that sends nothing, or one byte of the HTTP/2 preface, is cut off).
            match in_time(deadline, &mut conn.stopped, sniff_h2(&stream)).await {
                Ok(None) => return,
                Ok(Some(h2)) => {
                    let Conn {
                        agent,
                        peer,
                        app,
                        options,
                        watcher,
                        ..
                    } = conn;
                    // Boxed: the connection's task then holds only this protocol's state,
                    // not room for the TLS path's too (it is held for as long as the
                    // connection is open: by every open watch).
                    Box::pin(serve_http(
                        agent, h2, stream, peer, app, options, watcher, false,
                    ))
                    .await;
                    return;
                }
                Err(e) => e,
            }
        }
        Some(tls) => {
            let acceptor = tls.acceptor();
            let accept = Box::pin(acceptor.accept(stream));
            match in_time(deadline, &mut conn.stopped, accept).await {
                Ok(tls_stream) => {
                    let (_, session) = tls_stream.get_ref();
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let certified = session.peer_certificates().is_some_and(|c| !c.is_empty());
                    let Conn {
                        agent,
                        peer,
                        app,
                        options,
                        watcher,
                        ..
                    } = conn;
                    Box::pin(serve_http(
                        agent, h2, tls_stream, peer, app, options, watcher, certified,
                    ))
                    .await;
                    return;
                }
                Err(e) => e,
            }
        }
    };
    if let Early::Timeout = early {
        limits::count(&conn.agent, Refusal::HeaderTimeout);
        tracing::debug!(peer = %conn.peer, "no request or handshake within {deadline:?}; closed");
    }
}

/// The HTTP/2 connection preface a prior-knowledge (h2c) client opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a clear-text connection speaks HTTP/2 (its first bytes are the preface) or HTTP/1
/// (any byte that departs from it); `None` when the client closes first. Reads nothing: the
/// bytes stay for hyper.
async fn sniff_h2(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // A prefix of the preface so far: wait for more (peek answers at once while the
        // bytes already here are all there is).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_http<I>(
    agent: Arc<Agent>,
    h2: bool,
    io: I,
    peer: SocketAddr,
    app: Router,
    options: ListenerOptions,
    watcher: Watcher,
    certified: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let body_timeout = options.body_timeout;
    let counter = agent.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        let expired = Arc::new(AtomicBool::new(false));
        let mut req = req
            .map(|b| axum::body::Body::new(body::TimedBody::new(b, body_timeout, expired.clone())));
        req.extensions_mut().insert(ConnectInfo(peer));
        if certified {
            req.extensions_mut().insert(ClientCertified);
        }
        let app = app.clone();
        let agent = counter.clone();
        async move {
            let response = app.oneshot(req).await;
            if expired.load(Ordering::Relaxed) {
                limits::count(&agent, Refusal::BodyTimeout);
                return Ok(body::timed_out(body_timeout));
            }
            response
        }
    });
    // hyper's own HTTP/1 and HTTP/2 connections (the protocol is known by now), rather than
    // hyper-util's auto connection, whose state has room for both. No route upgrades a
    // connection, so HTTP/1 is served without upgrades.
    let served = if h2 {
        let conn =
            http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(io), service);
        watcher.watch(conn).await
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout.min(options.idle_timeout))
            .serve_connection(TokioIo::new(io), service);
        watcher.watch(conn).await
    };
    if let Err(e) = served {
        let timed_out = e.is_timeout();
        if timed_out && requests.load(Ordering::Relaxed) == 0 {
            limits::count(&agent, Refusal::HeaderTimeout);
            tracing::debug!(%peer, listener = options.name, "request head not sent within {:?}; closed", options.header_timeout);
        } else {
            tracing::debug!(%peer, listener = options.name, "connection ended: {e}");
        }
    }
}
