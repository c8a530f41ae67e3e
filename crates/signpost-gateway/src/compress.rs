//! Response compression for routes with `compress = ["zstd", "br", "gzip"]`.
//!
//! The request path makes two calls: [`Accepted::read`] notes what the client accepts before
//! the request head goes upstream, and [`apply`] gets that and the upstream's response and
//! either returns the response as it was or one whose body is compressed as it streams ([`Compressed`]: the upstream body read
//! frame by frame through an `async-compression` encoder, never held whole).
//!
//! The encoding is the one the client's `Accept-Encoding` rates highest (q-values, `*`,
//! `identity`; no header or `identity` alone: none), ties going to the route's order. Left
//! alone: HEAD requests, 1xx/204/206/304 answers, bodies already encoded (`Content-Encoding`),
//! types that are already compressed (images but SVG, audio, video, archives, WOFF fonts) or
//! streamed events (`text/event-stream`, which a compressor would hold back), bodies of a known
//! length under [`MIN_SIZE`], and `Cache-Control: no-transform` on either side. A response the
//! route could compress carries `Vary: Accept-Encoding` whatever the client asked; a compressed
//! one loses its `Content-Length` (and `Accept-Ranges`) and its strong `ETag` becomes weak.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::Bytes;
use futures::Stream;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::body::ProxyBody;

/// Bodies of a known length below this are sent as they are: compressing them saves little.
pub const MIN_SIZE: u64 = 1024;

/// The most compressed bytes one frame carries.
const FRAME: usize = 16 * 1024;

/// A content coding the gateway can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Zstandard (`zstd`), level 3.
    Zstd,
    /// Brotli (`br`), quality 4 (the higher ones cost far more CPU for little).
    Br,
    /// gzip, level 6.
    Gzip,
}

impl Encoding {
    /// The token in `Accept-Encoding`, `Content-Encoding` and the config file.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The encoding a config token names (`zstd`, `br`, `gzip`).
    pub fn parse(token: &str) -> Option<Encoding> {
        match token {
            "zstd" => Some(Encoding::Zstd),
            "br" => Some(Encoding::Br),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }

    /// Whether an `Accept-Encoding` coding names this encoding.
    fn named_by(self, coding: &str) -> bool {
        coding.eq_ignore_ascii_case(self.token())
            || (self == Encoding::Gzip && coding.eq_ignore_ascii_case("x-gzip"))
    }
}

/// The encoding to use among `offered` (in the route's order of preference) for a request
/// with this `Accept-Encoding`, or none.
pub fn negotiate(offered: &[Encoding], accept: Option<&HeaderValue>) -> Option<Encoding> {
    let accept = accept?.to_str().ok()?;
    let mut codings: Vec<(&str, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut params = item.split(';');
        let coding = params.next().unwrap_or("").trim();
        if coding.is_empty() {
            continue;
        }
        let mut q = 1.0;
        for param in params {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
        }
        codings.push((coding, q));
    }
    let star = codings.iter().find(|(c, _)| *c == "*").map(|(_, q)| *q);
    let mut best: Option<(Encoding, f32)> = None;
    for &encoding in offered {
        let q = codings
            .iter()
            .find(|(c, _)| encoding.named_by(c))
            .map(|(_, q)| *q)
            .or(star)
            .unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((encoding, q));
        }
    }
    best.map(|(e, _)| e)
}

/// Whether a response of this type is worth compressing.
fn compressible_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "image/svg+xml" {
        return true;
    }
    let (kind, sub) = essence.split_once('/').unwrap_or((&essence, ""));
    if matches!(kind, "image" | "video" | "audio") {
        return false;
    }
    !matches!(
        (kind, sub),
        ("text", "event-stream")
            | ("font", "woff" | "woff2")
            | ("application", "font-woff")
            | (
                "application",
                "zip"
                    | "gzip"
                    | "x-gzip"
                    | "zstd"
                    | "x-bzip2"
                    | "x-xz"
                    | "x-7z-compressed"
                    | "x-rar-compressed"
                    | "vnd.rar"
                    | "pdf"
                    | "grpc"
            )
    )
}

/// Whether a `Cache-Control` header forbids transforming the message.
fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// What a request allows, read from its head before the head goes upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The route compresses at all (its answers then vary by `Accept-Encoding`).
    enabled: bool,
    /// The encoding negotiated with the client, if any.
    encoding: Option<Encoding>,
    /// The request said `Cache-Control: no-transform`.
    no_transform: bool,
}

impl Accepted {
    /// What a request with these headers accepts from a route offering `offered` (empty: the
    /// route does not compress, and nothing is read).
    pub fn read(offered: &[Encoding], request: &HeaderMap) -> Accepted {
        if offered.is_empty() {
            return Accepted::default();
        }
        Accepted {
            enabled: true,
            encoding: negotiate(offered, request.get(ACCEPT_ENCODING)),
            no_transform: no_transform(request),
        }
    }
}

/// Whether this response could be compressed at all (before asking the client).
fn eligible(method: &Method, no_transform_asked: bool, response: &Response<ProxyBody>) -> bool {
    let status = response.status();
    let headers = response.headers();
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return false;
    }
    if headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return false;
    }
    if no_transform(headers) || no_transform_asked || !compressible_type(headers) {
        return false;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .or_else(|| response.body().size_hint().exact());
    length.is_none_or(|n| n >= MIN_SIZE)
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there.
fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|f| {
                let f = f.trim();
                f == "*" || f.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The response to send to a request that `accepted` describes and whose method is
/// `method` (for a route that does not compress: the response untouched).
pub fn apply(
    accepted: &Accepted,
    method: &Method,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if !accepted.enabled || !eligible(method, accepted.no_transform, &response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    add_vary(&mut parts.headers);
    let Some(encoding) = accepted.encoding else {
        return Response::from_parts(parts, body);
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(ACCEPT_RANGES);
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    if let Some(etag) = parts.headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                parts.headers.insert(ETAG, weak);
            }
        }
    }
    Response::from_parts(
        parts,
        ProxyBody::compressed(Compressed::new(encoding, body)),
    )
}

/// A failure of the upstream body, kept to be handed to hyper as it is (the encoder in between
/// only speaks `io::Error`).
type Failure = Arc<Mutex<Option<hyper::Error>>>;

/// The upstream body as the byte stream an encoder reads: data frames in order (trailers are
/// dropped: a compressed body is sent with none).
struct Source {
    body: ProxyBody,
    failure: Failure,
}

impl Stream for Source {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    _ => continue,
                },
                Some(Err(e)) => {
                    *this.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Poll::Ready(Some(Err(io::Error::other("the upstream body failed"))));
                }
            }
        }
    }
}

/// A response body compressed as it streams: each poll reads what the encoder needs from the
/// upstream body and hands on what it has produced, at most [`FRAME`] bytes at a time.
pub struct Compressed {
    /// The encoder's output.
    out: ReaderStream<Box<dyn AsyncRead + Send + Unpin>>,
    /// Where [`Source`] leaves the upstream's error.
    failure: Failure,
    /// The body has ended.
    done: bool,
}

impl Compressed {
    fn new(encoding: Encoding, body: ProxyBody) -> Compressed {
        let failure = Failure::default();
        let reader = StreamReader::new(Source {
            body,
            failure: failure.clone(),
        });
        let encoder: Box<dyn AsyncRead + Send + Unpin> = match encoding {
            Encoding::Zstd => Box::new(ZstdEncoder::with_quality(reader, Level::Precise(3))),
            Encoding::Br => Box::new(BrotliEncoder::with_quality(reader, Level::Precise(4))),
            Encoding::Gzip => Box::new(GzipEncoder::with_quality(reader, Level::Precise(6))),
        };
        Compressed {
            out: ReaderStream::with_capacity(encoder, FRAME),
            failure,
            done: false,
        }
    }

    /// The next compressed frame, or the upstream body's error.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut self.out).poll_next(cx)) {
            Some(Ok(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            None => {
                self.done = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.done = true;
                let failure = self
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                match failure {
                    Some(upstream) => Poll::Ready(Some(Err(upstream))),
                    None => {
                        // Encoders writing to memory do not fail; should one, the body ends
                        // short, which the client's decoder reports.
                        tracing::warn!("response compression failed: {e}");
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    /// Whether the body has ended.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests;
