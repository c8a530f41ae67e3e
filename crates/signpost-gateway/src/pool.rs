//! Connections to upstream instances: one [`HostPool`] per instance address and protocol.
//!
//! **HTTP/1.1.** Idle keep-alive connections wait on a stack (the one used last goes out
//! first, so when traffic drops the ones at the bottom stay idle and are closed). A request
//! takes one (or
//! dials a new one), and the connection is *driven by the request's own task*: the proxy polls
//! it while waiting for the response head, and the response body ([`crate::body::ProxyBody`])
//! polls it while streaming. No task per connection, no channel hop between tasks per request.
//! When the response body has been read to the end the connection goes back to the stack if it
//! can take another request. Idle connections are not polled; a checkout polls each candidate
//! once (no waker) to notice the ones the upstream closed meanwhile, and the sweeper closes the
//! ones idle through two of its rounds (it runs every `idle_timeout / 2`), so no clock is read
//! on the request path. A close noticed only by the exchange's first poll still hands the
//! unwritten request back, and it goes out on a new connection.
//!
//! **Workers.** With several worker threads (see `Gateway::serve_workers`), each keeps its own
//! idle connections (a shard of the pool, chosen by a thread-local index), so a connection is
//! registered with, woken on and reused by one thread's runtime.
//!
//! **h2c.** One multiplexed HTTP/2 connection per instance, driven by its own task; requests
//! clone its sender.
//!
//! **HTTPS.** Pooled like HTTP/1.1; each new connection does a TLS handshake (within the
//! connect timeout) verifying the instance's certificate for the address it is registered at.

use std::cell::Cell;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use signpost_core::cidr::{AddressPolicy, AddressRefusal};
use signpost_tls::rustls::pki_types::ServerName;
use signpost_tls::tokio_rustls::{client::TlsStream, TlsConnector};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::UpBody;
use crate::route::Protocol;

thread_local! {
    /// The pool shard this thread's requests use (its worker's index; 0 outside workers).
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use shard `index` of every pool (called once by each worker).
pub(crate) fn set_shard(index: usize) {
    SHARD.with(|s| s.set(index));
}

/// The sending half of an HTTP/1.1 upstream connection.
pub(crate) type H1Sender = http1::SendRequest<UpBody>;
/// The IO half of an HTTP/1.1 upstream connection; must be polled for anything to happen.
pub(crate) type H1Driver = http1::Connection<TokioIo<UpStream>, UpBody>;

/// An upstream connection's byte stream: plain TCP, or TLS over it.
pub(crate) enum UpStream {
    /// `http1` and `h2c`.
    Plain(TcpStream),
    /// `https` (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpStream::Plain(s) => s.is_write_vectored(),
            UpStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
/// A handle to an h2c connection (cheap to clone).
pub(crate) type H2Sender = http2::SendRequest<UpBody>;

/// One HTTP/1.1 connection to an instance: the sender and the driver, kept together so the
/// task that uses the connection also drives it.
pub(crate) struct H1Conn {
    /// Sends requests.
    pub(crate) send: H1Sender,
    /// Reads and writes the socket when polled; dropped as soon as it has finished, which hands
    /// a request queued on it but never written back to its sender (hyper returns such
    /// requests when the connection is dropped, not when it finishes).
    driver: Option<H1Driver>,
}

impl H1Conn {
    /// Drives the connection; `Ready` means it is finished (closed or failed).
    pub(crate) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let Some(driver) = self.driver.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(Pin::new(driver).poll(cx));
        self.driver = None;
        Poll::Ready(result)
    }

    /// Polls once without a waker (noticing a close or a finished response) and says whether
    /// the connection can take a new request now.
    pub(crate) fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_drive(&mut cx) {
            Poll::Ready(_) => false,
            Poll::Pending => self.send.is_ready(),
        }
    }
}

/// A worker's idle connections: a stack, so the connection used last is used next (its state
/// is warm in the caches, and the ones at the bottom stay idle long enough for the sweeper to
/// close them when traffic drops). Locked only by its worker and, briefly, the sweeper.
struct IdleStack {
    /// Oldest first.
    conns: Mutex<Vec<Idle>>,
    /// At most this many; a connection checked in beyond it is closed.
    capacity: usize,
}

impl IdleStack {
    fn new(capacity: usize) -> Self {
        IdleStack {
            conns: Mutex::new(Vec::new()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An idle connection.
struct Idle {
    /// The connection (boxed once when opened: it is large, and moves often).
    conn: Box<H1Conn>,
    /// A sweep has seen it idle; the next one closes it.
    marked: bool,
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP connect (or name resolution) failed.
    #[error("cannot connect to {authority}: {source}")]
    Io {
        /// The instance.
        authority: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The connect timeout passed.
    #[error("connecting to {authority} timed out after {after:?}")]
    Timeout {
        /// The instance.
        authority: String,
        /// The timeout.
        after: Duration,
    },
    /// The instance's host name resolves into `[registry] deny_cidrs`.
    #[error("refusing to connect to {authority}: {refusal} (registry.deny_cidrs)")]
    Denied {
        /// The instance.
        authority: String,
        /// The address refused.
        refusal: AddressRefusal,
    },
    /// The TLS handshake with an `https` instance failed (its certificate is not trusted or
    /// not valid for its address, ...).
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        /// The instance.
        authority: String,
        /// What rustls said.
        source: std::io::Error,
    },
    /// An `https` route but no usable `[upstream_tls]` configuration (no CA file and no
    /// system roots).
    #[error(
        "cannot speak TLS to {authority}: no upstream TLS configuration (set upstream_tls.ca_file)"
    )]
    NoTls {
        /// The instance.
        authority: String,
    },
    /// The HTTP handshake failed (h2c preface, settings).
    #[error("HTTP handshake with {authority} failed: {source}")]
    Handshake {
        /// The instance.
        authority: String,
        /// What hyper said.
        source: hyper::Error,
    },
}

/// Counters of one pool, for `/metrics` and the admin API.
#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    /// Connections opened.
    pub(crate) opened: AtomicU64,
    /// Requests sent on a pooled (reused) connection.
    pub(crate) reused: AtomicU64,
}

/// The connections to one instance address over one protocol.
pub(crate) struct HostPool {
    /// `host:port` as registered.
    authority: String,
    /// The socket address when `authority` is an IP (no name resolution per connect).
    addr: Option<SocketAddr>,
    /// Addresses never dialled: a host name is resolved at each connect and refused when
    /// any of its addresses is denied (an IP `authority` was screened by the controller).
    deny: Arc<AddressPolicy>,
    /// The TLS client of an `https` pool.
    tls: Option<TlsConnector>,
    /// HTTP/1.1, h2c or HTTPS.
    protocol: Protocol,
    /// Idle HTTP/1.1 connections, one stack per worker.
    idle: Box<[IdleStack]>,
    /// The h2c connection, if one is open.
    h2: Mutex<Option<H2Sender>>,
    /// Held while an h2c connection is being opened, so concurrent requests wait for it
    /// instead of opening their own.
    h2_dialing: tokio::sync::Mutex<()>,
    /// Counters.
    pub(crate) stats: PoolStats,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPool")
            .field("authority", &self.authority)
            .field("protocol", &self.protocol)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl HostPool {
    /// A pool for the instance at `authority` keeping at most `max_idle` idle connections,
    /// shared out among `shards` workers, never dialling an address `deny` refuses; `tls` is
    /// the client an `https` pool handshakes with.
    pub(crate) fn new(
        authority: String,
        protocol: Protocol,
        max_idle: usize,
        shards: usize,
        deny: Arc<AddressPolicy>,
        tls: Option<TlsConnector>,
    ) -> Self {
        let shards = shards.max(1);
        let per_shard = max_idle.div_ceil(shards).max(1);
        HostPool {
            addr: authority.parse().ok(),
            deny,
            tls,
            authority,
            protocol,
            idle: (0..shards).map(|_| IdleStack::new(per_shard)).collect(),
            h2: Mutex::new(None),
            h2_dialing: tokio::sync::Mutex::new(()),
            stats: PoolStats::default(),
        }
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The protocol spoken over this pool's connections (with the authority, what names the
    /// pool).
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Idle HTTP/1.1 connections (an h2c pool reports 1 while its connection is open).
    pub(crate) fn idle_count(&self) -> usize {
        match self.protocol {
            Protocol::Http1 | Protocol::Https => self.idle.iter().map(|s| s.lock().len()).sum(),
            Protocol::H2c => usize::from(
                self.h2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .is_some_and(|s| !s.is_closed()),
            ),
        }
    }

    /// An idle connection that can take a request, if there is one.
    ///
    /// Each candidate is polled once without a waker: that notices a close the connection has
    /// already seen, and it replaces the waker of the task that used the connection last, which
    /// the new request would otherwise wake for nothing. A close not seen yet is noticed by the
    /// first poll of the exchange, before anything is written; the request then comes back
    /// unsent and goes out on a new connection (see `send_h1` in [`crate::proxy`]).
    pub(crate) fn checkout(&self) -> Option<Box<H1Conn>> {
        let mut idle_conns = self.shard().lock();
        while let Some(mut idle) = idle_conns.pop() {
            if idle.conn.is_reusable() {
                self.stats.reused.fetch_add(1, Ordering::Relaxed);
                return Some(idle.conn);
            }
        }
        None
    }

    /// Puts a connection whose exchange is over back, if it can take another request.
    pub(crate) fn checkin(&self, mut conn: Box<H1Conn>) {
        // The connection was driven to the end of the response just now, so it usually says it
        // is ready already; otherwise one more poll settles it.
        if conn.send.is_ready() || conn.is_reusable() {
            // A full stack drops the connection (closing it).
            let shard = self.shard();
            let mut idle = shard.lock();
            if idle.len() < shard.capacity {
                idle.push(Idle {
                    conn,
                    marked: false,
                });
            }
        }
    }

    /// Closes idle connections that were already idle at the previous sweep, or that the
    /// upstream closed; marks the others.
    pub(crate) fn sweep(&self) {
        for shard in &self.idle {
            shard.lock().retain_mut(|idle| {
                let keep = !idle.marked && idle.conn.is_reusable();
                idle.marked = true;
                keep
            });
        }
    }

    /// The calling worker's idle connections.
    fn shard(&self) -> &IdleStack {
        let index = SHARD.with(Cell::get);
        &self.idle[index % self.idle.len()]
    }

    async fn dial(&self, timeout: Duration) -> Result<UpStream, ConnectError> {
        let io = |source| ConnectError::Io {
            authority: self.authority.clone(),
            source,
        };
        let connect = async {
            let stream = match self.addr {
                Some(addr) => TcpStream::connect(addr).await.map_err(io),
                None => {
                    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.authority.as_str())
                        .await
                        .map_err(io)?
                        .collect();
                    self.deny
                        .check_all(addrs.iter().map(SocketAddr::ip))
                        .map_err(|refusal| ConnectError::Denied {
                            authority: self.authority.clone(),
                            refusal,
                        })?;
                    TcpStream::connect(&addrs[..]).await.map_err(io)
                }
            }?;
            let _ = stream.set_nodelay(true);
            if self.protocol != Protocol::Https {
                return Ok(UpStream::Plain(stream));
            }
            let Some(tls) = &self.tls else {
                return Err(ConnectError::NoTls {
                    authority: self.authority.clone(),
                });
            };
            let host = crate::route::strip_port(&self.authority);
            let name = ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Tls {
                authority: self.authority.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|source| ConnectError::Tls {
                    authority: self.authority.clone(),
                    source,
                })?;
            Ok(UpStream::Tls(Box::new(stream)))
        };
        let stream = match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ConnectError::Timeout {
                    authority: self.authority.clone(),
                    after: timeout,
                })
            }
        };
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// A new HTTP/1.1 connection (not pooled until checked in).
    pub(crate) async fn connect_h1(&self, timeout: Duration) -> Result<Box<H1Conn>, ConnectError> {
        let stream = self.dial(timeout).await?;
        // One buffer per request head (and small body chunks copied into it) rather than a
        // vectored write of queued pieces: cheaper for the small messages a proxy mostly sends.
        let (send, driver) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake {
                authority: self.authority.clone(),
                source,
            })?;
        Ok(Box::new(H1Conn {
            send,
            driver: Some(driver),
        }))
    }

    /// A sender on the instance's h2c connection, opening it if needed.
    pub(crate) async fn h2(&self, timeout: Duration) -> Result<H2Sender, ConnectError> {
        if let Some(send) = self.open_h2() {
            return Ok(send);
        }
        let _dialing = self.h2_dialing.lock().await;
        if let Some(send) = self.open_h2() {
            return Ok(send);
        }
        let stream = self.dial(timeout).await?;
        let (send, driver) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake {
                authority: self.authority.clone(),
                source,
            })?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(upstream = %authority, "h2c connection ended: {e}");
            }
        });
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(send.clone());
        Ok(send)
    }

    /// The open h2c connection's sender, if there is one.
    fn open_h2(&self) -> Option<H2Sender> {
        let send = self
            .h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned()?;
        self.stats.reused.fetch_add(1, Ordering::Relaxed);
        Some(send)
    }

    /// A connection for an upgrade (WebSocket): never pooled, driven by its own task with
    /// upgrades enabled.
    pub(crate) async fn connect_upgradable(
        &self,
        timeout: Duration,
    ) -> Result<H1Sender, ConnectError> {
        let H1Conn { send, driver } = *self.connect_h1(timeout).await?;
        let authority = self.authority.clone();
        if let Some(driver) = driver {
            tokio::spawn(async move {
                if let Err(e) = driver.with_upgrades().await {
                    tracing::debug!(upstream = %authority, "upgraded connection ended: {e}");
                }
            });
        }
        Ok(send)
    }
}
