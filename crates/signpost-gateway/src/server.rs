//! Accept loops: the proxy listener (HTTP/1.1 and h2c, upgrades allowed) and the admin
//! listener (HTTP/1.1). Each connection is one task; at shutdown the loops stop accepting, ask
//! every connection to finish its current exchange, and wait up to the grace period before
//! dropping the stragglers; then the upgraded connections are closed ([`crate::upgrade`]).
//!
//! Client connections are bounded in time by `[limits]` ([`Timing`]):
//! - a request head must arrive within `header_timeout`: hyper's HTTP/1.1 head timer (armed
//!   whenever the connection waits for a head, so it also closes idle HTTP/1.1 keep-alive
//!   connections), and for any connection one check here that its first request started
//!   within that time (a client that sent part of a protocol preface, which hyper-util's
//!   version detection would wait for without end, is dropped);
//! - after that, a connection on which no request starts for half of `idle_timeout` to all
//!   of it is asked to finish its current exchange and close (HTTP/2 connections, mostly).
//!
//! One timer per connection checks a request counter for the latter. The stop signal and that
//! timer are polled only when they wake the connection's task (see `SideWake`), not on each of
//! the connection's own wake-ups.

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

/// How long a client connection may take (from `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// The first request must start within this; HTTP/1.1 heads must complete within it.
    pub(crate) head: Duration,
    /// The idle check's period: a connection on which no request started during a whole
    /// period is closed (so after one to two periods of silence).
    pub(crate) idle_period: Duration,
}

impl Timing {
    /// The timing `limits` asks for.
    pub(crate) fn new(limits: &crate::config::LimitsSection) -> Timing {
        Timing {
            head: limits.header_timeout.to_std(),
            idle_period: (limits.idle_timeout.to_std() / 2).max(Duration::from_millis(1)),
        }
    }
}

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
    let started_drain = tokio::time::Instant::now();
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
    if face == Face::Proxy {
        let left = grace.saturating_sub(started_drain.elapsed());
        shared.upgrades.close_all(left).await;
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

/// Runs a connection to its end. Closes it at once if no request started within
/// `timing.head` (nothing is in progress that a graceful close would wait for, and a stalled
/// preface would never end by itself); asks it to finish its current exchange and close
/// (`shutdown`: hyper-util's two connection types share no trait for it) when `stop` turns
/// true, or when no request started (the counter `requests` did not move) during a whole
/// `timing.idle_period` after that.
async fn run_graceful<C, E>(
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
    stop: watch::Receiver<bool>,
    requests: &AtomicU64,
    timing: Timing,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    /// Why the connection is closed before it ended by itself.
    enum Close {
        /// No request started within the head timeout: dropped.
        NoRequest,
        /// Stop signal or idle: asked to finish.
        Graceful,
    }
    let mut conn = pin!(conn);
    let mut stop = pin!(stopped(stop));
    let mut idle = pin!(tokio::time::sleep(timing.head));
    let mut seen = requests.load(Ordering::Relaxed);
    let side = Arc::new(SideWake::default());
    // The first poll registers the side events.
    side.fired.store(true, Ordering::Relaxed);
    let side_waker = Waker::from(side.clone());
    let finished = std::future::poll_fn(|cx| {
        // On every poll: a wake takes the registered waker out (cheap when it is the same).
        side.task.register(cx.waker());
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(result));
        }
        while side.fired.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&side_waker);
            if stop.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(Err(Close::Graceful));
            }
            if idle.as_mut().poll(&mut side_cx).is_ready() {
                let now = requests.load(Ordering::Relaxed);
                if now == 0 {
                    tracing::debug!(
                        "closing a connection without a request after {:?}",
                        timing.head
                    );
                    return Poll::Ready(Err(Close::NoRequest));
                }
                if now == seen {
                    tracing::debug!("closing a connection idle for {:?}", timing.idle_period);
                    return Poll::Ready(Err(Close::Graceful));
                }
                seen = now;
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + timing.idle_period);
                // Poll the new deadline, so it is registered.
                side.fired.store(true, Ordering::Relaxed);
            }
        }
        Poll::Pending
    })
    .await;
    let result = match finished {
        Ok(result) => result,
        Err(Close::NoRequest) => return,
        Err(Close::Graceful) => {
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

fn builder(timing: Timing) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `[limits] header_timeout` (see the module doc).
        .header_read_timeout(timing.head)
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
    let timing = Timing::new(&conn_state.shared.limits);
    let builder = builder(timing);
    run_graceful(
        builder.serve_connection_with_upgrades(TokioIo::new(stream), service),
        |conn| conn.graceful_shutdown(),
        stop,
        &conn_state.requests,
        timing,
    )
    .await;
}

async fn admin_connection(shared: Arc<Shared>, stream: TcpStream, stop: watch::Receiver<bool>) {
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let timing = Timing::new(&shared.limits);
    let service = service_fn(move |req: Request<Incoming>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let response = crate::admin::handle(&shared, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let builder = builder(timing);
    run_graceful(
        builder.serve_connection(TokioIo::new(stream), service),
        |conn| conn.graceful_shutdown(),
        stop,
        &requests,
        timing,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::*;

    /// Heads within 10 s; idle checks every 30 s.
    const TIMING: Timing = Timing {
        head: Duration::from_secs(10),
        idle_period: Duration::from_secs(30),
    };

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
            TIMING,
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
            tokio::time::sleep(Duration::from_secs(5)).await;
            counter.fetch_add(1, Ordering::Relaxed);
            // After the head check (which found a request) and before the idle check.
            tokio::time::sleep(Duration::from_secs(30)).await;
            let _ = stop.send(true);
        });
        let (elapsed, asked) = serve(stopped, requests, None).await;
        assert!(asked);
        assert_eq!(elapsed, Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_dropped_after_the_head_timeout() {
        let (_stop, stopped) = watch::channel(false);
        let (elapsed, asked) = serve(stopped, Arc::default(), None).await;
        assert!(!asked, "nothing in progress: dropped, not asked to finish");
        assert_eq!(elapsed, TIMING.head);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_requests_stop_is_closed_after_an_idle_period() {
        let (_stop, stopped) = watch::channel(false);
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let (elapsed, asked) = serve(stopped, requests, None).await;
        assert!(asked);
        assert_eq!(elapsed, TIMING.head + TIMING.idle_period);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_the_period_keeps_the_connection_for_another_one() {
        let (_stop, stopped) = watch::channel(false);
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(15)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let (elapsed, asked) = serve(stopped, requests, None).await;
        assert!(asked);
        assert_eq!(elapsed, TIMING.head + TIMING.idle_period * 2);
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
