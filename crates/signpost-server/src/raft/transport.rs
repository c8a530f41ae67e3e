//! The one way a member talks to another: [`Transport`] sends a request (a path and a body) to
//! the member listening at an address and returns its answer (a status and a body).
//!
//! Everything between members goes through it: the Raft RPCs ([`super::network`]), the requests
//! a follower hands to the leader and the join request ([`crate::cluster`]). Two
//! implementations:
//! - [`HttpTransport`]: HTTP `POST` with reqwest, what agents use in production;
//! - [`mem::MemNetwork`]: in-process dispatch to each member's router, with delays, losses and
//!   partitions, for the in-process cluster tests.

pub mod mem;

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Any error, boxed, as a [`TransportError`]'s cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Carries requests from this member to others.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to the member listening at `addr` (`host:port`, or a base URL) and
    /// returns its answer, whatever its status.
    async fn send(&self, addr: &str, request: PeerRequest) -> Result<PeerResponse, TransportError>;
}

impl dyn Transport {
    /// Sends `body` as JSON to `path` on the member at `addr`.
    pub async fn post_json(
        &self,
        addr: &str,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<PeerResponse, TransportError> {
        self.send(addr, PeerRequest::json(path, body, timeout)?)
            .await
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing could be delivered: no member listens there, or it is cut off from this one.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// Where the request was going.
        addr: String,
        /// What the connection attempt ran into.
        source: BoxError,
    },
    /// No answer came within the request's timeout; the request may or may not have been acted
    /// on.
    #[error("{addr} did not answer within {after:?}")]
    Timeout {
        /// Where the request went.
        addr: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The request or its answer was lost on the way (the in-memory network's message loss);
    /// the request may or may not have been acted on.
    #[error("the exchange with {addr} was lost in transit")]
    Dropped {
        /// Where the request went.
        addr: String,
    },
    /// The exchange broke off for another reason (a reset connection, an unreadable answer).
    #[error("the exchange with {addr} failed: {source}")]
    Failed {
        /// Where the request went.
        addr: String,
        /// What broke.
        source: BoxError,
    },
    /// The request body could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How a request body is encoded, so the receiving route can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON document (`application/json`): every route but snapshot chunks.
    Json,
    /// Raw bytes (`application/octet-stream`): snapshot chunks.
    Binary,
}

impl BodyKind {
    /// The `Content-Type` the body travels with.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyKind::Json => "application/json",
            BodyKind::Binary => "application/octet-stream",
        }
    }
}

/// A request to another member (always a `POST`).
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// The route, e.g. `/raft/append`.
    pub path: String,
    /// How `body` is encoded.
    pub kind: BodyKind,
    /// The encoded body.
    pub body: Bytes,
    /// How long to wait for the answer, delivery included.
    pub timeout: Duration,
}

impl PeerRequest {
    /// A request carrying `body` as JSON.
    pub fn json(
        path: impl Into<String>,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        Ok(PeerRequest {
            path: path.into(),
            kind: BodyKind::Json,
            body: Bytes::from(serde_json::to_vec(body)?),
            timeout,
        })
    }

    /// A request carrying raw bytes.
    pub fn binary(path: impl Into<String>, body: impl Into<Bytes>, timeout: Duration) -> Self {
        PeerRequest {
            path: path.into(),
            kind: BodyKind::Binary,
            body: body.into(),
            timeout,
        }
    }
}

/// Another member's answer.
#[derive(Debug, Clone)]
pub struct PeerResponse {
    /// The HTTP status it answered with.
    pub status: StatusCode,
    /// The whole answer body.
    pub body: Bytes,
}

impl PeerResponse {
    /// The body decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Members over HTTP: each request a `POST` to `http://{addr}{path}`.
#[derive(Clone)]
pub struct HttpTransport {
    /// One connection pool for every peer.
    client: reqwest::Client,
}

impl HttpTransport {
    /// Connects from `source` when given (the member's own Raft address), so a peer — or a
    /// fault-injecting proxy in a test — can tell who is calling.
    pub fn new(source: Option<IpAddr>) -> Self {
        signpost_tls::install_default_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(source)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client with these settings builds");
        HttpTransport { client }
    }

    /// Sorts a reqwest failure into the transport's errors.
    fn error(addr: &str, after: Duration, e: reqwest::Error) -> TransportError {
        let addr = addr.to_string();
        if e.is_connect() {
            TransportError::Unreachable {
                addr,
                source: Box::new(e),
            }
        } else if e.is_timeout() {
            TransportError::Timeout { addr, after }
        } else {
            TransportError::Failed {
                addr,
                source: Box::new(e),
            }
        }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, addr: &str, request: PeerRequest) -> Result<PeerResponse, TransportError> {
        let after = request.timeout;
        let response = self
            .client
            .post(format!("{}{}", base_url(addr), request.path))
            .header(http::header::CONTENT_TYPE, request.kind.content_type())
            .body(request.body)
            .timeout(after)
            .send()
            .await
            .map_err(|e| Self::error(addr, after, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Self::error(addr, after, e))?;
        Ok(PeerResponse { status, body })
    }
}

/// `http://{addr}`, or `addr` itself (without a trailing slash) when it is already a URL.
pub(crate) fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_sorts_refused_and_slow_peers_apart() {
        let transport = HttpTransport::new(None);
        // A port that was just free: nothing listens there.
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let req = || PeerRequest::json("/raft/vote", &(), Duration::from_millis(200)).unwrap();
        let err = transport.send(&closed, req()).await.unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");

        // A peer that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        });
        let err = transport.send(&addr, req()).await.unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn http_posts_the_body_with_its_content_type() {
        let app = axum::Router::new().route(
            "/echo",
            axum::routing::post(|headers: http::HeaderMap, body: Bytes| async move {
                let ct = headers[http::header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .to_string();
                (StatusCode::ACCEPTED, format!("{ct} {}", body.len()))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _server = tokio::spawn(async move { axum::serve(listener, app).await });
        let transport = HttpTransport::new(None);
        let timeout = Duration::from_secs(5);

        let reply = transport
            .send(&addr, PeerRequest::binary("/echo", vec![0u8; 10], timeout))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(&reply.body[..], b"application/octet-stream 10");

        let url = format!("http://{addr}/");
        let reply = transport
            .send(&url, PeerRequest::json("/echo", &[1, 2], timeout).unwrap())
            .await
            .unwrap();
        assert_eq!(&reply.body[..], b"application/json 5");
    }
}
