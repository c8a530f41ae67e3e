//! One client connection to the system under test, and the few operations every scenario is
//! made of, spoken the way each system is used:
//!
//! | Operation | Signpost (native HTTP API) | etcd 3.4 (`etcd-client`, gRPC) |
//! | --- | --- | --- |
//! | register | `POST /api/v1/services/{s}/instances` with a TTL check | lease grant + put with lease |
//! | discover | `GET /api/v1/services/{s}/instances` (passing only) | range over `/services/{s}/` |
//! | heartbeat | `PUT .../instances/{id}/heartbeat` | lease keep-alive |
//! | watch | SSE `GET /api/v1/services/{s}/watch` | watch on the prefix `/services/{s}/` |
//! | count | `GET /api/v1/agent/self` (instances by status) | count-only range over `/services/` |
//!
//! The value stored in etcd is the very JSON body registered with Signpost (~300 bytes), under
//! `/services/{service}/{id}`, the layout of the SDK's etcd registry. Every [`Conn`] is its own
//! connection: a `reqwest::Client` (HTTP/1.1 keep-alive) or an `etcd_client::Client` (one
//! HTTP/2 connection).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use signpost_api::watch;
use signpost_api::{sse, BatchRenewed, InstanceKey, InstanceList};

use crate::payload;

/// Key prefix of every instance in etcd.
pub const ETCD_PREFIX: &str = "/services/";

/// Longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one operation on the system under test failed. Each variant says what was being done
/// (the request line, or the etcd call) and carries the error that stopped it, so the message a
/// failed benchmark prints names the server, the request and the cause.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The `reqwest` client could not be built (TLS or resolver set-up).
    #[error("cannot build an HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// No connection to etcd could be made.
    #[error("cannot connect to etcd at {endpoint}")]
    EtcdConnect {
        /// The client URL tried.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: etcd_client::Error,
    },
    /// An HTTP request to Signpost failed in transport (connect, send, timeout, read).
    #[error("{request}")]
    Http {
        /// The request, e.g. `GET http://127.0.0.1:8500/api/v1/services/s/instances`.
        request: String,
        /// What `reqwest` reported.
        #[source]
        source: reqwest::Error,
    },
    /// Signpost answered with a status the operation does not accept.
    #[error("{request}: HTTP {status}: {body}")]
    Status {
        /// The request.
        request: String,
        /// The status received.
        status: u16,
        /// The start of the answer's body (see [`snippet`]).
        body: String,
    },
    /// A listing answered `200 OK` without an instance list.
    #[error("{request}: no instance list in the answer")]
    NoInstanceList {
        /// The request.
        request: String,
    },
    /// A heartbeat over the bare HTTP connection failed.
    #[error("{request}")]
    Raw {
        /// The request, e.g. `PUT /api/v1/heartbeats`.
        request: String,
        /// What went wrong on the connection.
        #[source]
        source: RawHttpError,
    },
    /// A heartbeat got no answer in time (the bare connection is then dropped).
    #[error("{request}: no answer in {timeout:?}")]
    NoAnswer {
        /// The request.
        request: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// A batch of heartbeats could not be encoded, or its answer decoded.
    #[error("{request}: {body}")]
    Json {
        /// The request.
        request: String,
        /// The start of the answer that did not decode (empty when encoding failed).
        body: String,
        /// What `serde_json` reported.
        #[source]
        source: serde_json::Error,
    },
    /// The agent refused to renew an instance of a batch.
    #[error("{request}: rejected {service}/{id}: {error}")]
    Rejected {
        /// The request.
        request: String,
        /// Service of the first rejected instance.
        service: String,
        /// Id of the first rejected instance.
        id: String,
        /// The agent's reason.
        error: String,
    },
    /// An etcd call failed.
    #[error("{call}")]
    Etcd {
        /// The call: `lease grant`, `put instance`, `range`, `watch`...
        call: &'static str,
        /// What `etcd-client` reported.
        #[source]
        source: etcd_client::Error,
    },
    /// A Signpost-only operation was asked of an etcd connection.
    #[error("etcd renews leases over a keep-alive stream")]
    NotSignpost,
    /// A Signpost watch did not open with a `reset` event.
    #[error("watch opened with {event:?} instead of reset")]
    NoReset {
        /// The event it opened with.
        event: String,
    },
    /// A Signpost watch ended before its `reset` event.
    #[error("watch closed before its reset")]
    ClosedBeforeReset,
    /// The first etcd watch answer was not the creation.
    #[error("etcd watch answered before it was created")]
    EtcdWatchNotCreated,
    /// The etcd watch stream ended before it was created.
    #[error("etcd closed the watch stream")]
    EtcdWatchClosed,
    /// A watch ended before the awaited instance appeared.
    #[error("{who} closed the watch before {id} appeared")]
    ClosedBeforeAdded {
        /// Which end closed it: `the server` (Signpost) or `etcd`.
        who: &'static str,
        /// The awaited instance.
        id: String,
    },
    /// The Signpost watch's body failed in transport.
    #[error("reading the watch")]
    ReadWatch(#[source] reqwest::Error),
    /// The Signpost watch's body is not valid SSE.
    #[error("reading the watch")]
    Sse(#[source] sse::ParseError),
}

/// Why the bare HTTP/1.1 connection of [`RawHttp`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RawHttpError {
    /// The TCP connect did not finish within its time.
    #[error("connecting to {host}: timed out")]
    ConnectTimeout {
        /// `host:port`.
        host: String,
    },
    /// The TCP connect failed.
    #[error("connecting to {host}")]
    Connect {
        /// `host:port`.
        host: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading the connection failed.
    #[error("talking to {host}")]
    Io {
        /// `host:port`.
        host: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection before a whole answer arrived.
    #[error("connection closed by the server")]
    Closed,
    /// The answer is not HTTP/1.1 as [`parse_response`] reads it.
    #[error(transparent)]
    Response(#[from] ResponseError),
}

/// Why [`parse_response`] cannot read an answer.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The head (status line and headers) is not UTF-8.
    #[error("response head is not UTF-8")]
    HeadNotUtf8(#[source] std::str::Utf8Error),
    /// The status line has no numeric code.
    #[error("bad status line in {head:?}")]
    StatusLine {
        /// The whole head, to show what came instead.
        head: String,
    },
    /// The `Content-Length` header is not a number.
    #[error("bad Content-Length")]
    ContentLength(#[source] std::num::ParseIntError),
    /// A chunk-size line is not hexadecimal.
    #[error("bad chunk size {line:?}")]
    ChunkSize {
        /// The line (lossily decoded).
        line: String,
    },
}

/// The systems the suite compares: Signpost and etcd, and optionally an older Signpost binary
/// as the baseline the new one is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    /// A Signpost agent.
    Signpost,
    /// An etcd 3.4 server.
    Etcd,
    /// A Signpost agent run from the older binary (`--baseline-bin`, `BASELINE_BIN`): it speaks
    /// what [`System::Signpost`] speaks, and the report divides the new figures by its figures.
    Baseline,
}

impl System {
    /// The two systems every report compares, in the order the suite runs and reports them
    /// (the baseline, when there is one, runs before each Signpost step; see
    /// [`super::suite::Plan::systems`]).
    pub const ALL: [System; 2] = [System::Signpost, System::Etcd];

    /// The name reports and error messages use.
    pub fn name(self) -> &'static str {
        match self {
            System::Signpost => "Signpost",
            System::Etcd => "etcd",
            System::Baseline => "Signpost (baseline)",
        }
    }

    /// Whether it is a Signpost agent (new or baseline): the same API, the same operations.
    pub fn is_signpost(self) -> bool {
        matches!(self, System::Signpost | System::Baseline)
    }
}

/// Where the system under test listens.
#[derive(Debug, Clone)]
pub enum Target {
    /// Base URL of a Signpost agent, e.g. `http://127.0.0.1:8500`.
    Signpost { base: Arc<str> },
    /// Client URL of an etcd server, e.g. `http://127.0.0.1:2379`.
    Etcd { endpoint: Arc<str> },
}

impl Target {
    pub fn system(&self) -> System {
        match self {
            Target::Signpost { .. } => System::Signpost,
            Target::Etcd { .. } => System::Etcd,
        }
    }

    /// Opens a new connection (lazily, on its first request).
    pub async fn connect(&self) -> Result<Conn, TargetError> {
        match self {
            Target::Signpost { base } => Ok(Conn::Signpost {
                http: http_client(Some(REQUEST_TIMEOUT))?,
                base: base.clone(),
                raw: None,
            }),
            Target::Etcd { endpoint } => Ok(Conn::Etcd {
                client: Box::new(etcd_connect(endpoint).await?),
            }),
        }
    }

    /// Instances the system holds: every status for Signpost, every key under
    /// [`ETCD_PREFIX`] for etcd (a key lives exactly as long as its lease).
    pub async fn count(&self) -> Result<u64, TargetError> {
        Ok(self.census().await?.total)
    }

    /// Instance counts and the system's write position (Raft index or etcd revision).
    pub async fn census(&self) -> Result<Census, TargetError> {
        match self {
            Target::Signpost { base } => {
                let url = format!("{base}/api/v1/agent/self");
                let http = |source| TargetError::Http {
                    request: format!("GET {url}"),
                    source,
                };
                let body: serde_json::Value = http_client(Some(Duration::from_secs(5)))?
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(http)?
                    .json()
                    .await
                    .map_err(http)?;
                let n = |k: &str| body["instances"][k].as_u64().unwrap_or(0);
                Ok(Census {
                    total: n("passing") + n("warning") + n("critical"),
                    critical: n("critical"),
                    position: body["raft"]["applied_index"].as_u64().unwrap_or(0),
                })
            }
            Target::Etcd { endpoint } => {
                let mut client = etcd_connect(endpoint).await?;
                let resp = client
                    .get(
                        ETCD_PREFIX,
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await
                    .map_err(|source| TargetError::Etcd {
                        call: "count",
                        source,
                    })?;
                Ok(Census {
                    total: u64::try_from(resp.count()).unwrap_or(0),
                    critical: 0,
                    position: resp
                        .header()
                        .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0)),
                })
            }
        }
    }
}

/// What [`Target::census`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Instances held (any status).
    pub total: u64,
    /// Signpost: instances whose check is critical (etcd has no such state: an expired lease
    /// deletes its key).
    pub critical: u64,
    /// Signpost: the last applied Raft index; etcd: the store revision. Moves on every write,
    /// so an expiry shows as a move.
    pub position: u64,
}

/// A plain HTTP client: no proxy, one connection per client in practice (one request in flight
/// at a time), optional whole-request timeout (none for streams).
pub fn http_client(timeout: Option<Duration>) -> Result<reqwest::Client, TargetError> {
    signpost_tls::install_default_provider();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(usize::MAX);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().map_err(TargetError::HttpClient)
}

/// Connects to etcd: bounded connect and per-call timeouts, as the SDK's etcd registry does.
pub async fn etcd_connect(endpoint: &str) -> Result<etcd_client::Client, TargetError> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(REQUEST_TIMEOUT);
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .map_err(|source| TargetError::EtcdConnect {
            endpoint: endpoint.to_string(),
            source,
        })
}

/// The etcd key of instance `id` of `service`.
pub fn etcd_key(service: &str, id: &str) -> String {
    format!("{ETCD_PREFIX}{service}/{id}")
}

/// Lease TTL in whole seconds (etcd's unit), rounded up, at least 1.
fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis().max(1).div_ceil(1000)).unwrap_or(i64::MAX)
}

/// One connection to the system under test.
pub enum Conn {
    Signpost {
        /// Its own client, so its own keep-alive connection.
        http: reqwest::Client,
        base: Arc<str>,
        /// A bare HTTP/1.1 connection for heartbeats, opened on the first one: at 20,000
        /// renewals/s a full HTTP client costs the generator more CPU than the server spends.
        raw: Option<Box<RawHttp>>,
    },
    Etcd {
        /// Its own client, so its own HTTP/2 connection (boxed: it is large).
        client: Box<etcd_client::Client>,
    },
}

/// How a heartbeat (or lease renewal) was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed.
    Alive,
    /// The system no longer knows the instance (Signpost 404, etcd TTL 0): it expired.
    Expired,
}

impl Conn {
    /// Registers instance `i` of `prefix` into `service`; `ttl = None` registers it without a
    /// check (etcd: without a lease). Answers the etcd lease id, if one was granted.
    ///
    /// Signpost must answer `201 Created`, or `200 OK` too when `accept_existing`.
    pub async fn register(
        &mut self,
        service: &str,
        prefix: &str,
        i: u64,
        ttl: Option<Duration>,
        accept_existing: bool,
    ) -> Result<Option<i64>, TargetError> {
        let body = payload::registration(prefix, i, ttl);
        match self {
            Conn::Signpost { http, base, .. } => {
                let url = format!("{base}/api/v1/services/{service}/instances");
                let resp = http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|source| TargetError::Http {
                        request: format!("POST {url}"),
                        source,
                    })?;
                let status = resp.status();
                let text = resp.bytes().await.unwrap_or_default();
                if status == StatusCode::CREATED || (accept_existing && status == StatusCode::OK) {
                    Ok(None)
                } else {
                    Err(TargetError::Status {
                        request: format!("POST {url}"),
                        status: status.as_u16(),
                        body: snippet(&text),
                    })
                }
            }
            Conn::Etcd { client } => {
                let key = etcd_key(service, &payload::instance_id(prefix, i));
                let lease = match ttl {
                    Some(ttl) => Some(
                        client
                            .lease_grant(ttl_secs(ttl), None)
                            .await
                            .map_err(|source| TargetError::Etcd {
                                call: "lease grant",
                                source,
                            })?
                            .id(),
                    ),
                    None => None,
                };
                let options = lease.map(|l| PutOptions::new().with_lease(l));
                client
                    .put(key, body, options)
                    .await
                    .map_err(|source| TargetError::Etcd {
                        call: "put instance",
                        source,
                    })?;
                Ok(lease)
            }
        }
    }

    /// Queries the healthy instances of `service`; answers how many there were and the bytes
    /// received. Signpost's body is only counted when `parse` (to keep the generator light).
    pub async fn discover(
        &mut self,
        service: &str,
        parse: bool,
    ) -> Result<(u64, u64), TargetError> {
        match self {
            Conn::Signpost { http, base, .. } => {
                let url = format!("{base}/api/v1/services/{service}/instances");
                let body = get_ok(http, &url).await?;
                let n = if parse {
                    count_instances(&body).ok_or_else(|| TargetError::NoInstanceList {
                        request: format!("GET {url}"),
                    })?
                } else {
                    0
                };
                Ok((n, body.len() as u64))
            }
            Conn::Etcd { client } => {
                let prefix = format!("{ETCD_PREFIX}{service}/");
                let resp = client
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(|source| TargetError::Etcd {
                        call: "range",
                        source,
                    })?;
                let bytes = resp
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key().len() + kv.value().len()) as u64)
                    .sum();
                Ok((resp.kvs().len() as u64, bytes))
            }
        }
    }

    /// Signpost only: one heartbeat for instance `id` of `service`.
    pub async fn heartbeat(&mut self, service: &str, id: &str) -> Result<Renewal, TargetError> {
        let Conn::Signpost { base, raw, .. } = self else {
            return Err(TargetError::NotSignpost);
        };
        let path = format!("/api/v1/services/{service}/instances/{id}/heartbeat");
        let (status, body) = raw_request(base, raw, &path, b"").await?;
        match status {
            200 => Ok(Renewal::Alive),
            404 => Ok(Renewal::Expired),
            other => Err(TargetError::Status {
                request: format!("PUT {path}"),
                status: other,
                body: snippet(&body),
            }),
        }
    }

    /// Signpost only: renews many instances, `(service, id)`, in one `PUT /api/v1/heartbeats`.
    /// Answers how many were renewed and the ids the agent no longer knows (expired).
    pub async fn heartbeats(
        &mut self,
        keys: &[(String, String)],
    ) -> Result<(u64, Vec<String>), TargetError> {
        const PATH: &str = "/api/v1/heartbeats";
        let Conn::Signpost { base, raw, .. } = self else {
            return Err(TargetError::NotSignpost);
        };
        let body = serde_json::to_vec(
            &keys
                .iter()
                .map(|(service, id)| InstanceKey {
                    service: service.clone(),
                    id: id.clone(),
                })
                .collect::<Vec<_>>(),
        )
        .map_err(|source| TargetError::Json {
            request: format!("PUT {PATH}"),
            body: String::new(),
            source,
        })?;
        let (status, answer) = raw_request(base, raw, PATH, &body).await?;
        if status != 200 {
            return Err(TargetError::Status {
                request: format!("PUT {PATH}"),
                status,
                body: snippet(&answer),
            });
        }
        let parsed: BatchRenewed =
            serde_json::from_slice(&answer).map_err(|source| TargetError::Json {
                request: format!("PUT {PATH}"),
                body: snippet(&answer),
                source,
            })?;
        if let Some(r) = parsed.rejected.first() {
            return Err(TargetError::Rejected {
                request: format!("PUT {PATH}"),
                service: r.key.service.clone(),
                id: r.key.id.clone(),
                error: r.error.to_string(),
            });
        }
        let renewed = u64::try_from(parsed.renewed).unwrap_or(u64::MAX);
        let gone = parsed.not_found.into_iter().map(|k| k.id).collect();
        Ok((renewed, gone))
    }

    /// Opens a watch on `service` and waits until it is established (Signpost: the `reset`
    /// event arrived; etcd: the watch is created).
    pub async fn watch(self, service: &str) -> Result<Watch, TargetError> {
        match self {
            Conn::Signpost { base, .. } => {
                let url = format!("{base}/api/v1/services/{service}/watch");
                let http = http_client(None)?;
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|source| TargetError::Http {
                        request: format!("GET {url}"),
                        source,
                    })?;
                if resp.status() != StatusCode::OK {
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap_or_default();
                    return Err(TargetError::Status {
                        request: format!("GET {url}"),
                        status,
                        body: snippet(&body),
                    });
                }
                let mut sse = SseWatch {
                    body: resp.bytes_stream().boxed(),
                    parser: sse::Parser::new(),
                    pending: VecDeque::new(),
                };
                match sse.next().await? {
                    Some(e) if e.event == watch::RESET => Ok(Watch::Sse(sse)),
                    Some(e) => Err(TargetError::NoReset { event: e.event }),
                    None => Err(TargetError::ClosedBeforeReset),
                }
            }
            Conn::Etcd { mut client } => {
                let prefix = format!("{ETCD_PREFIX}{service}/");
                let mut stream = client
                    .watch(prefix, Some(WatchOptions::new().with_prefix()))
                    .await
                    .map_err(etcd_watch)?;
                match stream.message().await.map_err(etcd_watch)? {
                    Some(r) if r.created() => Ok(Watch::Etcd {
                        stream: Box::new(stream),
                        _client: client,
                    }),
                    Some(_) => Err(TargetError::EtcdWatchNotCreated),
                    None => Err(TargetError::EtcdWatchClosed),
                }
            }
        }
    }
}

/// A bare HTTP/1.1 keep-alive connection: one request at a time, answers with a
/// `Content-Length` or chunked body. Just enough HTTP for a heartbeat, at a fraction of a full
/// client's CPU.
pub struct RawHttp {
    stream: tokio::net::TcpStream,
    /// `host:port`, for the `Host` header.
    host: String,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

impl RawHttp {
    /// Connects to the host and port of `base` (`http://host:port`).
    pub async fn connect(base: &str) -> Result<RawHttp, RawHttpError> {
        let host = base
            .strip_prefix("http://")
            .unwrap_or(base)
            .trim_end_matches('/')
            .to_string();
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&host),
        )
        .await
        .map_err(|_| RawHttpError::ConnectTimeout { host: host.clone() })?
        .map_err(|source| RawHttpError::Connect {
            host: host.clone(),
            source,
        })?;
        stream
            .set_nodelay(true)
            .map_err(|source| RawHttpError::Io {
                host: host.clone(),
                source,
            })?;
        Ok(RawHttp {
            stream,
            host,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its answer: the status code and the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), RawHttpError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let io = |source| RawHttpError::Io {
            host: self.host.clone(),
            source,
        };
        self.stream.write_all(&req).await.map_err(io)?;
        loop {
            if let Some(answer) = parse_response(&self.buf)? {
                let (status, body, used) = answer;
                self.buf.drain(..used);
                return Ok((status, body));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(RawHttpError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses one complete HTTP/1.1 response at the start of `buf`: status, body and bytes used;
/// `None` when more bytes are needed.
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, Vec<u8>, usize)>, ResponseError> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(ResponseError::HeadNotUtf8)?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ResponseError::StatusLine {
            head: head.to_string(),
        })?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(ResponseError::ContentLength)?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let start = head_end + 4;
    if chunked {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let line = &buf[at..at + eol];
            let size = std::str::from_utf8(line)
                .ok()
                .and_then(|text| {
                    usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16).ok()
                })
                .ok_or_else(|| ResponseError::ChunkSize {
                    line: String::from_utf8_lossy(line).into_owned(),
                })?;
            let data = at + eol + 2;
            if buf.len() < data + size + 2 {
                return Ok(None);
            }
            if size == 0 {
                return Ok(Some((status, body, data + 2)));
            }
            body.extend_from_slice(&buf[data..data + size]);
            at = data + size + 2;
        }
    }
    let length = length.unwrap_or(0);
    if buf.len() < start + length {
        return Ok(None);
    }
    Ok(Some((
        status,
        buf[start..start + length].to_vec(),
        start + length,
    )))
}

/// An established watch on one service.
pub enum Watch {
    /// A Signpost watch: an SSE stream.
    Sse(SseWatch),
    /// An etcd watch on the service's prefix.
    Etcd {
        /// The watch's answers (boxed: it is large).
        stream: Box<etcd_client::WatchStream>,
        /// Keeps the connection's handle alive as long as the stream.
        _client: Box<etcd_client::Client>,
    },
}

impl Watch {
    /// Waits until the instance `id` appears (Signpost: an `add` event naming it; etcd: a put
    /// of its key) and answers when that was seen.
    pub async fn until_added(&mut self, service: &str, id: &str) -> Result<Instant, TargetError> {
        match self {
            Watch::Sse(sse) => {
                let needle = format!("\"id\":\"{id}\"");
                loop {
                    match sse.next().await? {
                        Some(e) if e.event == watch::ADD && e.data.contains(&needle) => {
                            return Ok(Instant::now())
                        }
                        Some(_) => continue,
                        None => {
                            return Err(TargetError::ClosedBeforeAdded {
                                who: "the server",
                                id: id.to_string(),
                            })
                        }
                    }
                }
            }
            Watch::Etcd { stream, .. } => {
                let key = etcd_key(service, id);
                loop {
                    let Some(resp) = stream.message().await.map_err(etcd_watch)? else {
                        return Err(TargetError::ClosedBeforeAdded {
                            who: "etcd",
                            id: id.to_string(),
                        });
                    };
                    let seen = resp.events().iter().any(|e| {
                        e.event_type() == EventType::Put
                            && e.kv().is_some_and(|kv| kv.key() == key.as_bytes())
                    });
                    if seen {
                        return Ok(Instant::now());
                    }
                }
            }
        }
    }
}

/// A Signpost watch's SSE body, read event by event.
pub struct SseWatch {
    /// The SSE body as it arrives.
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    /// Splits the body into events.
    parser: sse::Parser,
    /// Events parsed but not yet handed out.
    pending: VecDeque<sse::Event>,
}

impl SseWatch {
    /// The next complete SSE event (comments and keep-alives skipped), `None` at the end.
    async fn next(&mut self) -> Result<Option<sse::Event>, TargetError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(TargetError::ReadWatch)?;
                    let events = self.parser.push(&chunk).map_err(TargetError::Sse)?;
                    self.pending.extend(events);
                }
                None => return Ok(None),
            }
        }
    }
}

/// Sends one request over `raw` (connecting it first when there is none) and reads its answer;
/// a failed or timed-out request drops the connection, so the next one starts afresh.
async fn raw_request(
    base: &str,
    raw: &mut Option<Box<RawHttp>>,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), TargetError> {
    let failed = |source| TargetError::Raw {
        request: format!("PUT {path}"),
        source,
    };
    let conn = match raw {
        Some(conn) => conn,
        None => raw.insert(Box::new(RawHttp::connect(base).await.map_err(failed)?)),
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.request("PUT", path, body)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => {
            *raw = None;
            Err(failed(e))
        }
        Err(_) => {
            *raw = None;
            Err(TargetError::NoAnswer {
                request: format!("PUT {path}"),
                timeout: REQUEST_TIMEOUT,
            })
        }
    }
}

/// An etcd watch call that failed.
fn etcd_watch(source: etcd_client::Error) -> TargetError {
    TargetError::Etcd {
        call: "watch",
        source,
    }
}

/// An error and all its sources on one line, `outer: inner: …` (`reqwest`'s own message omits
/// the cause): how a failed operation is written into a report's error samples.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Length of the `instances` array of a list answer.
pub fn count_instances(body: &[u8]) -> Option<u64> {
    let list: InstanceList<serde::de::IgnoredAny> = serde_json::from_slice(body).ok()?;
    Some(u64::try_from(list.instances.len()).unwrap_or(u64::MAX))
}

/// The start of a body (200 characters, `…` when there is more), for an error message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

/// `GET url`, answered 200: the body, or the error naming the request (the reads of both
/// faces go through here).
pub(super) async fn get_ok(http: &reqwest::Client, url: &str) -> Result<bytes::Bytes, TargetError> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|source| TargetError::Http {
            request: format!("GET {url}"),
            source,
        })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|source| TargetError::Http {
        request: format!("GET {url}: reading the answer"),
        source,
    })?;
    if status != StatusCode::OK {
        return Err(TargetError::Status {
            request: format!("GET {url}"),
            status: status.as_u16(),
            body: snippet(&body),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_are_parsed() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx: y\r\n\r\nokHTTP/1.1 404";
        let (status, body, used) = parse_response(a).unwrap().unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(&a[used..], b"HTTP/1.1 404");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok")
                .unwrap()
                .is_none()
        );
        let c =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (status, body, used) = parse_response(c).unwrap().unwrap();
        assert_eq!((status, body.as_slice(), used), (404, &b"abc"[..], c.len()));
        assert!(matches!(
            parse_response(b"nonsense\r\n\r\n"),
            Err(ResponseError::StatusLine { head }) if head == "nonsense"
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ResponseError::ContentLength(_))
        ));
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let err = parse_response(bad_chunk).unwrap_err();
        assert_eq!(err.to_string(), "bad chunk size \"zz\"");
    }

    #[test]
    fn error_chains_read_as_one_line() {
        let err = TargetError::Raw {
            request: "PUT /api/v1/heartbeats".to_string(),
            source: RawHttpError::Connect {
                host: "127.0.0.1:1".to_string(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        };
        assert_eq!(
            error_chain(&err),
            "PUT /api/v1/heartbeats: connecting to 127.0.0.1:1: connection refused"
        );
    }

    /// A port nothing listens on (it was free a moment ago).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// A server that answers every request on its one connection with `answer`.
    async fn answering(answer: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(answer).await.is_err() {
                    break;
                }
            }
        });
        base
    }

    #[tokio::test]
    async fn signpost_failures_name_the_request_and_keep_the_cause() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let target = Target::Signpost {
            base: base.clone().into(),
        };
        let mut conn = target.connect().await.unwrap();
        let err = conn.discover("users", true).await.unwrap_err();
        assert!(matches!(&err, TargetError::Http { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("GET {base}/api/v1/services/users/instances")
        );
        assert!(std::error::Error::source(&err).is_some());

        let err = conn.heartbeat("users", "u-1").await.unwrap_err();
        let TargetError::Raw { request, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            request,
            "PUT /api/v1/services/users/instances/u-1/heartbeat"
        );
        assert!(matches!(source, RawHttpError::Connect { .. }), "{source:?}");
        assert!(
            error_chain(&err).contains(": connecting to 127.0.0.1:"),
            "{}",
            error_chain(&err)
        );
        assert!(matches!(
            target.census().await,
            Err(TargetError::Http { .. })
        ));
    }

    #[tokio::test]
    async fn unexpected_heartbeat_answers_are_typed() {
        let base =
            answering(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy").await;
        let mut conn = Target::Signpost { base: base.into() }
            .connect()
            .await
            .unwrap();
        let err = conn.heartbeat("users", "u-1").await.unwrap_err();
        assert!(
            matches!(&err, TargetError::Status { status: 503, body, .. } if body == "busy"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "PUT /api/v1/services/users/instances/u-1/heartbeat: HTTP 503: busy"
        );

        let base = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!").await;
        let mut conn = Target::Signpost { base: base.into() }
            .connect()
            .await
            .unwrap();
        let keys = [("users".to_string(), "u-1".to_string())];
        let err = conn.heartbeats(&keys).await.unwrap_err();
        assert!(
            matches!(&err, TargetError::Json { body, .. } if body == "nope!"),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("PUT /api/v1/heartbeats: nope!"));
    }

    #[test]
    fn etcd_layout_and_ttl() {
        assert_eq!(etcd_key("users", "u-1"), "/services/users/u-1");
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(15)), 15);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }

    #[test]
    fn instance_lists_are_counted() {
        assert_eq!(
            count_instances(br#"{"index":1,"instances":[{},{}]}"#),
            Some(2)
        );
        assert_eq!(count_instances(b"nope"), None);
    }
}
