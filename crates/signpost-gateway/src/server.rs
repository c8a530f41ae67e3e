//! Accept loops: the proxy listener (HTTP/1.1 and h2c, upgrades allowed) and the admin
//! listener (HTTP/1.1). Each connection is one task; at shutdown the loops stop accepting, ask
//! every connection to finish its current exchange, and wait up to the grace period before
//! dropping the stragglers.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
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

/// Runs a connection to its end; when `stop` turns true, asks it to finish its current
/// exchange first. (A macro: hyper-util's two connection types share no trait.)
macro_rules! run_graceful {
    ($conn:expr, $stop:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let mut stop = $stop;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
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
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
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
    });
    let service =
        service_fn(move |req: Request<Incoming>| crate::proxy::handle(state.clone(), req));
    let builder = builder();
    run_graceful!(
        builder.serve_connection_with_upgrades(TokioIo::new(stream), service),
        stop
    );
}

async fn admin_connection(shared: Arc<Shared>, stream: TcpStream, stop: watch::Receiver<bool>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = crate::admin::handle(&shared, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let builder = builder();
    run_graceful!(
        builder.serve_connection(TokioIo::new(stream), service),
        stop
    );
}
