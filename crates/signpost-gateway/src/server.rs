//! Accept loops: the proxy listener (HTTP/1.1 and h2c, upgrades allowed) and the admin
//! listener (HTTP/1.1). Each connection is one task; at shutdown the loops stop accepting, ask
//! every connection to finish its current exchange, and wait up to the grace period before
//! dropping the stragglers.
//!
//! A client connection on which no request starts for [`IDLE_CLOSE`] to twice that (an idle
//! keep-alive connection, or a request head that never completes) is asked to finish and
//! close. One timer per connection checks a request counter, instead of hyper's header-read
//! timer, which allocates and arms a timer for every request. The stop signal and that timer
//! are polled only when they wake the connection's task (see `SideWake`), not on each of the
//! connection's own wake-ups.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::headers::ClientInfo;
use crate::proxy::ConnState;
use crate::state::Shared;

/// How long a client connection may go without starting a request before it is closed (checked
/// once per period, so it closes after one to two periods of silence).
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

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

/// The waker the side events of a connection (the stop signal, the idle timer) are polled with:
/// it notes that one of them may be ready and wakes the connection's task. Wake-ups of the
/// connection itself (every request) then do not poll the side events, which would cost more
/// than the rest of the connection's own bookkeeping.
#[derive(Default)]
struct SideWake {
    /// A side event woke the task since they were last polled.
    fired: AtomicBool,
    /// The connection's task.
    task: AtomicWaker,
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Resolves when `stop` turns true or its sender is gone.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Runs a connection to its end; when `stop` turns true, or when no request started (the
/// counter `requests` did not move) during a whole [`IDLE_CLOSE`] period, asks it to finish its
/// current exchange and close (`shutdown`: hyper-util's two connection types share no trait
/// for it).
async fn run_graceful<C, E>(
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
    stop: watch::Receiver<bool>,
    requests: &AtomicU64,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = pin!(conn);
    let mut stop = pin!(stopped(stop));
    let mut idle = pin!(tokio::time::sleep(IDLE_CLOSE));
    let mut seen = requests.load(Ordering::Relaxed);
    let side = Arc::new(SideWake::default());
    // The first poll registers the side events.
    side.fired.store(true, Ordering::Relaxed);
    let side_waker = Waker::from(side.clone());
    let finished = std::future::poll_fn(|cx| {
        // On every poll: a wake takes the registered waker out (cheap when it is the same).
        side.task.register(cx.waker());
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        while side.fired.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&side_waker);
            if stop.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(None);
            }
            if idle.as_mut().poll(&mut side_cx).is_ready() {
                let now = requests.load(Ordering::Relaxed);
                if now == seen {
                    tracing::debug!("closing a connection idle for {IDLE_CLOSE:?}");
                    return Poll::Ready(None);
                }
                seen = now;
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + IDLE_CLOSE);
                // Poll the new deadline, so it is registered.
                side.fired.store(true, Ordering::Relaxed);
            }
        }
        Poll::Pending
    })
    .await;
    let result = match finished {
        Some(result) => result,
        None => {
            shutdown(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
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

/// A client connection: over TLS when `[tls]` is set (the handshake with the certificate
/// current at accept time), else plain.
async fn proxy_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let Some(tls) = shared.tls.clone() else {
        return serve_proxy(shared, stream, ClientInfo::new(peer.ip()), stop).await;
    };
    match tokio::time::timeout(TLS_HANDSHAKE, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => serve_proxy(shared, stream, ClientInfo::new_tls(peer.ip()), stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_proxy<S>(
    shared: Arc<Shared>,
    stream: S,
    client: ClientInfo,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.metrics.accepted.fetch_add(1, Ordering::Relaxed);
    shared.metrics.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(shared.clone());
    let state = Arc::new(ConnState {
        shared,
        client,
        requests: AtomicU64::new(0),
        deadline: Default::default(),
    });
    let conn_state = state.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        state.requests.fetch_add(1, Ordering::Relaxed);
        crate::proxy::handle(state.clone(), req)
    });
    let builder = builder();
    run_graceful(
        builder.serve_connection_with_upgrades(TokioIo::new(stream), service),
        |conn| conn.graceful_shutdown(),
        stop,
        &conn_state.requests,
    )
    .await;
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
    run_graceful(
        builder.serve_connection(TokioIo::new(stream), service),
        |conn| conn.graceful_shutdown(),
        stop,
        &requests,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::*;

    /// A connection that runs until `shutdown` is called (or `finish` fires), and says whether
    /// it was asked to shut down.
    async fn serve(
        stop: watch::Receiver<bool>,
        requests: Arc<AtomicU64>,
        finish: Option<oneshot::Receiver<()>>,
    ) -> (Duration, bool) {
        let (shut_tx, shut_rx) = oneshot::channel::<()>();
        let asked = Arc::new(AtomicBool::new(false));
        let conn = async move {
            match finish {
                Some(finish) => {
                    tokio::select! {
                        _ = finish => {}
                        _ = shut_rx => {}
                    }
                }
                None => {
                    let _ = shut_rx.await;
                }
            }
            Ok::<(), String>(())
        };
        let flag = asked.clone();
        let start = Instant::now();
        let run = run_graceful(
            conn,
            move |_| {
                flag.store(true, Ordering::Relaxed);
                let _ = shut_tx.send(());
            },
            stop,
            &requests,
        );
        // A lost wake-up would hang: fail instead (the clock is paused, so this is instant).
        tokio::time::timeout(Duration::from_secs(3600), run)
            .await
            .expect("the connection was never asked to finish");
        (start.elapsed(), asked.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_signal_still_arrives_after_an_idle_period_passed_with_requests() {
        let (stop, stopped) = watch::channel(false);
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_CLOSE / 3).await;
            counter.fetch_add(1, Ordering::Relaxed);
            // After the first idle check (which found a request) and before the second.
            tokio::time::sleep(IDLE_CLOSE).await;
            let _ = stop.send(true);
        });
        let (elapsed, asked) = serve(stopped, requests, None).await;
        assert!(asked);
        assert_eq!(elapsed, IDLE_CLOSE / 3 + IDLE_CLOSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_closed_after_the_idle_period() {
        let (_stop, stopped) = watch::channel(false);
        let (elapsed, asked) = serve(stopped, Arc::default(), None).await;
        assert!(asked);
        assert_eq!(elapsed, IDLE_CLOSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_the_period_keeps_the_connection_for_another_one() {
        let (_stop, stopped) = watch::channel(false);
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_CLOSE / 3).await;
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let (elapsed, asked) = serve(stopped, requests, None).await;
        assert!(asked);
        assert_eq!(elapsed, IDLE_CLOSE * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_signal_asks_the_connection_to_finish() {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = stop.send(true);
        });
        let (elapsed, asked) = serve(stopped, Arc::default(), None).await;
        assert!(asked);
        assert_eq!(elapsed, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_by_itself_is_not_asked_to() {
        let (_stop, stopped) = watch::channel(false);
        let (finish, finished) = oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = finish.send(());
        });
        let (elapsed, asked) = serve(stopped, Arc::default(), Some(finished)).await;
        assert!(!asked);
        assert_eq!(elapsed, Duration::from_secs(3));
    }
}
