//! Accept loops: the proxy listener (HTTP/1.1 and h2c, upgrades allowed) and the admin
//! listener (HTTP/1.1). Each connection is one task; at shutdown the loops stop accepting, ask
//! every connection to finish its current exchange, and wait up to the grace period before
//! dropping the stragglers.
//!
//! A client connection on which no request starts for [`IDLE_CLOSE`] to twice that (an idle
//! keep-alive connection, or a request head that never completes) is asked to finish and
//! close. One timer per connection checks a request counter, instead of hyper's header-read
//! timer, which allocates and arms a timer for every request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::headers::ClientInfo;
use crate::proxy::ConnState;
use crate::state::Shared;

/// How long a client connection may go without starting a request before it is closed (checked
/// once per period, so it closes after one to two periods of silence).
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// Which listener a loop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    /// Client traffic.
    Proxy,
    /// The admin API.
    Admin,
}

/// Serves `listener` until `stop` turns true, then drains within `grace`.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    face: Face,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                if *stop.borrow() {
                    break;
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let stop = stop.clone();
                    conns.spawn(async move {
                        match face {
                            Face::Proxy => proxy_connection(shared, stream, peer, stop).await,
                            Face::Admin => admin_connection(shared, stream, stop).await,
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving open connections and
                    // try again shortly.
                    tracing::warn!("accept failed: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = stop.changed() => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let open = conns.len();
    if open > 0 {
        tracing::info!(?face, open, "draining connections");
    }
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            ?face,
            left = conns.len(),
            "connections still busy after {grace:?}; closing them"
        );
        conns.shutdown().await;
    }
}

/// Runs a connection to its end; when `stop` turns true, or when no request started (the
/// counter `requests` did not move) during a whole [`IDLE_CLOSE`] period, asks it to finish its
/// current exchange and close. (A macro: hyper-util's two connection types share no trait.)
macro_rules! run_graceful {
    ($conn:expr, $stop:expr, $requests:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let mut stop = $stop;
        let requests: &AtomicU64 = $requests;
        let mut seen = requests.load(Ordering::Relaxed);
        let mut idle = std::pin::pin!(tokio::time::sleep(IDLE_CLOSE));
        let result = loop {
            tokio::select! {
                biased;
                result = conn.as_mut() => break result,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                }
                () = idle.as_mut() => {
                    let now = requests.load(Ordering::Relaxed);
                    if now == seen {
                        tracing::debug!("closing a connection idle for {IDLE_CLOSE:?}");
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                    seen = now;
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE);
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!("connection ended: {e}");
        }
    }};
}

/// Counts a connection as open while alive.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.metrics.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Replaced by the per-connection idle check of `run_graceful!` (see the module doc).
        .header_read_timeout(None)
        .keep_alive(true)
        // Small response heads and bodies go out in one buffer: a body chunk is copied instead
        // of queued, so the upstream connection's read buffer it points into is free again at
        // once and can be reused for the next response instead of reallocated.
        .writev(false);
    builder.http2().timer(TokioTimer::new());
    builder
}

async fn proxy_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) {
    shared.metrics.accepted.fetch_add(1, Ordering::Relaxed);
    shared.metrics.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(shared.clone());
    let state = Arc::new(ConnState {
        shared,
        client: ClientInfo::new(peer.ip()),
        requests: AtomicU64::new(0),
    });
    let conn_state = state.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        state.requests.fetch_add(1, Ordering::Relaxed);
        crate::proxy::handle(state.clone(), req)
    });
    let builder = builder();
    run_graceful!(
        builder.serve_connection_with_upgrades(TokioIo::new(stream), service),
        stop,
        &conn_state.requests
    );
}

async fn admin_connection(shared: Arc<Shared>, stream: TcpStream, stop: watch::Receiver<bool>) {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let response = crate::admin::handle(&shared, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let builder = builder();
    run_graceful!(
        builder.serve_connection(TokioIo::new(stream), service),
        stop,
        &requests
    );
}
