//! Upgraded (WebSocket) connections: the client's and the upstream's connections spliced
//! together once both sides switched protocols, bounded in number (`[limits] max_upgraded`),
//! closed after `[limits] upgrade_idle_timeout` without a byte either way, and closed at
//! shutdown once ordinary connections have drained (an upgraded connection never ends by
//! itself).
//!
//! Every splice is a task of one [`TaskTracker`], which is both the count the cap compares
//! against and what shutdown waits for.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// The gateway's upgraded connections.
#[derive(Debug)]
pub(crate) struct Upgrades {
    /// One task per spliced pair.
    tasks: TaskTracker,
    /// At most this many at once.
    max: usize,
    /// Closed after this long without traffic.
    idle: Duration,
    /// Turns true at shutdown: every splice closes.
    closing: watch::Sender<bool>,
}

impl Upgrades {
    /// No upgraded connection yet; at most `max`, each closed after `idle` of silence.
    pub(crate) fn new(max: usize, idle: Duration) -> Upgrades {
        Upgrades {
            tasks: TaskTracker::new(),
            max,
            idle,
            closing: watch::Sender::new(false),
        }
    }

    /// Upgraded connections open now.
    pub(crate) fn open(&self) -> usize {
        self.tasks.len()
    }

    /// Whether another upgrade would exceed the cap (the request is then refused before it is
    /// forwarded).
    pub(crate) fn full(&self) -> bool {
        self.open() >= self.max
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Splices the client's and the upstream's upgraded connections (`authority`: the
    /// upstream, for logs). Two upgrades racing for the last slot may both have been admitted
    /// by [`Upgrades::full`]; the one that finds the cap reached here is closed.
    pub(crate) fn splice(&self, client: OnUpgrade, upstream: OnUpgrade, authority: String) {
        if self.full() {
            tracing::debug!(upstream = %authority, "upgraded connection over limits.max_upgraded; closed");
            return;
        }
        let mut closing = self.closing.subscribe();
        let idle = self.idle;
        self.tasks.spawn(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(upstream = %authority, "upgrade failed: {e}");
                    return;
                }
            };
            let start = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let mut client = Active::new(TokioIo::new(client), start, last.clone());
            let mut upstream = Active::new(TokioIo::new(upstream), start, last.clone());
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                    Ok((up, down)) => tracing::debug!(
                        upstream = %authority,
                        bytes_up = up,
                        bytes_down = down,
                        "upgraded connection closed"
                    ),
                    Err(e) => tracing::debug!(upstream = %authority, "upgraded connection failed: {e}"),
                },
                () = silent_for(start, &last, idle) => {
                    tracing::debug!(upstream = %authority, "closing an upgraded connection idle for {idle:?}");
                }
                _ = closing.wait_for(|closing| *closing) => {
                    tracing::debug!(upstream = %authority, "closing an upgraded connection at shutdown");
                }
            }
        });
    }

    /// Closes every upgraded connection and waits (at most `grace`) until their tasks are
    /// done. Called by each accept loop after its connections drained; later calls find
    /// nothing left.
    pub(crate) async fn close_all(&self, grace: Duration) {
        self.closing.send_replace(true);
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "upgraded connections still open after {grace:?}"
            );
        }
    }
}

/// Resolves once nothing moved for `idle` (`last`: milliseconds after `start` of the last
/// byte either way).
async fn silent_for(start: Instant, last: &AtomicU64, idle: Duration) {
    loop {
        let seen = last.load(Ordering::Relaxed);
        tokio::time::sleep_until(start + Duration::from_millis(seen) + idle).await;
        if last.load(Ordering::Relaxed) == seen {
            return;
        }
    }
}

/// An IO that notes when bytes last moved through it.
struct Active<T> {
    /// The connection.
    io: T,
    /// Where time is counted from.
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written (shared by both sides).
    last: Arc<AtomicU64>,
}

impl<T> Active<T> {
    fn new(io: T, start: Instant, last: Arc<AtomicU64>) -> Self {
        Active { io, start, last }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_ends_only_after_a_whole_idle_period_without_traffic() {
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let idle = Duration::from_secs(60);
        let touched = last.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(40)).await;
            touched.store(40_000, Ordering::Relaxed);
        });
        silent_for(start, &last, idle).await;
        assert_eq!(start.elapsed(), Duration::from_secs(100));
    }
}
