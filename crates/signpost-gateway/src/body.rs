//! Bodies: [`UpBody`] is what the gateway sends upstream (the client's body, streamed), and
//! [`ProxyBody`] what it answers (an upstream body streamed back, or a small JSON error).
//!
//! Neither ever holds more than one frame: hyper's `Incoming` hands data over only when the
//! reader wants it, so a slow reader on one side slows the writer on the other and memory stays
//! bounded whatever the body's size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::pool::{H1Conn, HostPool};

/// A request body on its way upstream.
#[derive(Debug)]
pub enum UpBody {
    /// No body.
    Empty,
    /// The client's body, streamed.
    Incoming(Incoming),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Incoming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Incoming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Incoming(body) => body.size_hint(),
        }
    }
}

/// A response body on its way to the client.
pub struct ProxyBody {
    /// What it is.
    kind: Kind,
}

enum Kind {
    /// No body.
    Empty,
    /// A small body made by the gateway (JSON errors, the admin API).
    Full(Option<Bytes>),
    /// An HTTP/1.1 upstream's body, with the connection it arrives on.
    Pooled(Pooled),
    /// A body whose connection is driven elsewhere (h2c, upgrade handshakes).
    Stream(Incoming),
    /// Another body, compressed as it streams (see [`crate::compress`]).
    Compressed(Box<crate::compress::Compressed>),
}

/// An HTTP/1.1 upstream body and its connection: polling the body drives the connection, and
/// the connection goes back to its pool once the body is read to the end.
struct Pooled {
    /// The upstream's body (taken out on drop, before the connection is checked in).
    body: Option<Incoming>,
    /// The connection; `None` once it has finished.
    conn: Option<Box<H1Conn>>,
    /// Where the connection goes back to.
    pool: Arc<HostPool>,
    /// The body has ended.
    done: bool,
}

impl ProxyBody {
    /// No body.
    pub fn empty() -> Self {
        ProxyBody { kind: Kind::Empty }
    }

    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    /// An upstream body whose connection is driven elsewhere.
    pub(crate) fn stream(body: Incoming) -> Self {
        ProxyBody {
            kind: Kind::Stream(body),
        }
    }

    /// A body compressed as it streams.
    pub(crate) fn compressed(body: crate::compress::Compressed) -> Self {
        ProxyBody {
            kind: Kind::Compressed(Box::new(body)),
        }
    }

    /// An HTTP/1.1 upstream body arriving on `conn`, which returns to `pool` at the end.
    pub(crate) fn pooled(body: Incoming, conn: Box<H1Conn>, pool: Arc<HostPool>) -> Self {
        ProxyBody {
            kind: Kind::Pooled(Pooled {
                body: Some(body),
                conn: Some(conn),
                pool,
                done: false,
            }),
        }
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Pooled(_) => "pooled",
            Kind::Stream(_) => "stream",
            Kind::Compressed(_) => "compressed",
        };
        f.debug_struct("ProxyBody").field("kind", &kind).finish()
    }
}

impl Pooled {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        // The body first: it may hold a frame already, and polling it tells the connection
        // that the reader wants more.
        if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
            return self.on_frame(frame);
        }
        if let Some(conn) = self.conn.as_mut() {
            if let Poll::Ready(result) = conn.poll_drive(cx) {
                if let Err(e) = result {
                    tracing::debug!(upstream = %self.pool.authority(), "upstream connection failed mid-body: {e}");
                }
                self.conn = None;
            }
        }
        let frame = ready!(Pin::new(body).poll_frame(cx));
        self.on_frame(frame)
    }

    fn on_frame(
        &mut self,
        frame: Option<hyper::Result<Frame<Bytes>>>,
    ) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        if frame.is_none() {
            self.done = true;
            self.body = None;
            if let Some(conn) = self.conn.take() {
                self.pool.checkin(conn);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.as_ref().is_none_or(Body::is_end_stream)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        // Drop the body first, so the connection sees its reader gone and finishes the message
        // (or gives up on it) when checked in.
        self.body = None;
        if let Some(conn) = self.conn.take() {
            if complete {
                self.pool.checkin(conn);
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Pooled(pooled) => pooled.poll_frame(cx),
            Kind::Stream(body) => Pin::new(body).poll_frame(cx),
            Kind::Compressed(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Pooled(pooled) => pooled.is_end_stream(),
            Kind::Stream(body) => body.is_end_stream(),
            Kind::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Pooled(pooled) => pooled
                .body
                .as_ref()
                .map_or(SizeHint::with_exact(0), Body::size_hint),
            Kind::Stream(body) => body.size_hint(),
            Kind::Compressed(_) => SizeHint::default(),
        }
    }
}
