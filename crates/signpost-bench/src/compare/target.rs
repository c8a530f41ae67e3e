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

use anyhow::{anyhow, bail, Context};
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

/// The two systems the suite compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    Signpost,
    Etcd,
}

impl System {
    pub const ALL: [System; 2] = [System::Signpost, System::Etcd];

    pub fn name(self) -> &'static str {
        match self {
            System::Signpost => "Signpost",
            System::Etcd => "etcd",
        }
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
    pub async fn connect(&self) -> anyhow::Result<Conn> {
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
    pub async fn count(&self) -> anyhow::Result<u64> {
        Ok(self.census().await?.total)
    }

    /// Instance counts and the system's write position (Raft index or etcd revision).
    pub async fn census(&self) -> anyhow::Result<Census> {
        match self {
            Target::Signpost { base } => {
                let body: serde_json::Value = http_client(Some(Duration::from_secs(5)))?
                    .get(format!("{base}/api/v1/agent/self"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
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
                    .await?;
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
pub fn http_client(timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(usize::MAX);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().context("cannot build an HTTP client")
}

/// Connects to etcd: bounded connect and per-call timeouts, as the SDK's etcd registry does.
pub async fn etcd_connect(endpoint: &str) -> anyhow::Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(REQUEST_TIMEOUT);
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("cannot connect to etcd at {endpoint}"))
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
    ) -> anyhow::Result<Option<i64>> {
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
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                let text = resp.bytes().await.unwrap_or_default();
                if status == StatusCode::CREATED || (accept_existing && status == StatusCode::OK) {
                    Ok(None)
                } else {
                    bail!("POST {url}: HTTP {status}: {}", snippet(&text))
                }
            }
            Conn::Etcd { client } => {
                let key = etcd_key(service, &payload::instance_id(prefix, i));
                let lease = match ttl {
                    Some(ttl) => Some(
                        client
                            .lease_grant(ttl_secs(ttl), None)
                            .await
                            .context("lease grant")?
                            .id(),
                    ),
                    None => None,
                };
                let options = lease.map(|l| PutOptions::new().with_lease(l));
                client
                    .put(key, body, options)
                    .await
                    .context("put instance")?;
                Ok(lease)
            }
        }
    }

    /// Queries the healthy instances of `service`; answers how many there were and the bytes
    /// received. Signpost's body is only counted when `parse` (to keep the generator light).
    pub async fn discover(&mut self, service: &str, parse: bool) -> anyhow::Result<(u64, u64)> {
        match self {
            Conn::Signpost { http, base, .. } => {
                let url = format!("{base}/api/v1/services/{service}/instances");
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                let status = resp.status();
                let body = resp.bytes().await.context("reading the answer")?;
                if status != StatusCode::OK {
                    bail!("GET {url}: HTTP {status}: {}", snippet(&body));
                }
                let n = if parse {
                    count_instances(&body)
                        .ok_or_else(|| anyhow!("GET {url}: no instance list in the answer"))?
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
                    .context("range")?;
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
    pub async fn heartbeat(&mut self, service: &str, id: &str) -> anyhow::Result<Renewal> {
        match self {
            Conn::Signpost { base, raw, .. } => {
                let path = format!("/api/v1/services/{service}/instances/{id}/heartbeat");
                if raw.is_none() {
                    *raw = Some(Box::new(RawHttp::connect(base).await?));
                }
                let Some(conn) = raw.as_mut() else {
                    bail!("no connection");
                };
                let answer =
                    tokio::time::timeout(REQUEST_TIMEOUT, conn.request("PUT", &path, b"")).await;
                let (status, body) = match answer {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        *raw = None;
                        return Err(e.context(format!("PUT {path}")));
                    }
                    Err(_) => {
                        *raw = None;
                        bail!("PUT {path}: no answer in {REQUEST_TIMEOUT:?}");
                    }
                };
                match status {
                    200 => Ok(Renewal::Alive),
                    404 => Ok(Renewal::Expired),
                    other => bail!("PUT {path}: HTTP {other}: {}", snippet(&body)),
                }
            }
            Conn::Etcd { .. } => bail!("etcd renews leases over a keep-alive stream"),
        }
    }

    /// Signpost only: renews many instances, `(service, id)`, in one `PUT /api/v1/heartbeats`.
    /// Answers how many were renewed and the ids the agent no longer knows (expired).
    pub async fn heartbeats(
        &mut self,
        keys: &[(String, String)],
    ) -> anyhow::Result<(u64, Vec<String>)> {
        const PATH: &str = "/api/v1/heartbeats";
        let Conn::Signpost { base, raw, .. } = self else {
            bail!("etcd renews leases over a keep-alive stream");
        };
        let body = serde_json::to_vec(
            &keys
                .iter()
                .map(|(service, id)| InstanceKey {
                    service: service.clone(),
                    id: id.clone(),
                })
                .collect::<Vec<_>>(),
        )?;
        if raw.is_none() {
            *raw = Some(Box::new(RawHttp::connect(base).await?));
        }
        let Some(conn) = raw.as_mut() else {
            bail!("no connection");
        };
        let (status, answer) =
            match tokio::time::timeout(REQUEST_TIMEOUT, conn.request("PUT", PATH, &body)).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    *raw = None;
                    return Err(e.context(format!("PUT {PATH}")));
                }
                Err(_) => {
                    *raw = None;
                    bail!("PUT {PATH}: no answer in {REQUEST_TIMEOUT:?}");
                }
            };
        if status != 200 {
            bail!("PUT {PATH}: HTTP {status}: {}", snippet(&answer));
        }
        let parsed: BatchRenewed = serde_json::from_slice(&answer)
            .with_context(|| format!("PUT {PATH}: {}", snippet(&answer)))?;
        if let Some(r) = parsed.rejected.first() {
            bail!(
                "PUT {PATH}: rejected {}/{}: {}",
                r.key.service,
                r.key.id,
                r.error
            );
        }
        let renewed = u64::try_from(parsed.renewed).unwrap_or(u64::MAX);
        let gone = parsed.not_found.into_iter().map(|k| k.id).collect();
        Ok((renewed, gone))
    }

    /// Opens a watch on `service` and waits until it is established (Signpost: the `reset`
    /// event arrived; etcd: the watch is created).
    pub async fn watch(self, service: &str) -> anyhow::Result<Watch> {
        match self {
            Conn::Signpost { base, .. } => {
                let url = format!("{base}/api/v1/services/{service}/watch");
                let http = http_client(None)?;
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                if resp.status() != StatusCode::OK {
                    bail!("GET {url}: HTTP {}", resp.status());
                }
                let mut watch = Watch::Sse {
                    body: resp.bytes_stream().boxed(),
                    parser: sse::Parser::new(),
                    pending: VecDeque::new(),
                };
                match watch.next_sse().await? {
                    Some(e) if e.event == watch::RESET => Ok(watch),
                    Some(e) => bail!("watch opened with {:?} instead of reset", e.event),
                    None => bail!("watch closed before its reset"),
                }
            }
            Conn::Etcd { mut client } => {
                let prefix = format!("{ETCD_PREFIX}{service}/");
                let mut stream = client
                    .watch(prefix, Some(WatchOptions::new().with_prefix()))
                    .await
                    .context("watch")?;
                match stream.message().await.context("watch")? {
                    Some(r) if r.created() => Ok(Watch::Etcd {
                        stream: Box::new(stream),
                        _client: client,
                    }),
                    Some(_) => bail!("etcd watch answered before it was created"),
                    None => bail!("etcd closed the watch stream"),
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
    pub async fn connect(base: &str) -> anyhow::Result<RawHttp> {
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
        .with_context(|| format!("connecting to {host}: timed out"))?
        .with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
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
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req).await?;
        loop {
            if let Some(answer) = parse_response(&self.buf)? {
                let (status, body, used) = answer;
                self.buf.drain(..used);
                return Ok((status, body));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses one complete HTTP/1.1 response at the start of `buf`: status, body and bytes used;
/// `None` when more bytes are needed.
pub fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, Vec<u8>, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
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
            let size_text = std::str::from_utf8(&buf[at..at + eol]).context("chunk size")?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .context("bad chunk size")?;
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
    Sse {
        /// The SSE body as it arrives.
        body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        /// Splits the body into events.
        parser: sse::Parser,
        /// Events parsed but not yet handed out.
        pending: VecDeque<sse::Event>,
    },
    Etcd {
        stream: Box<etcd_client::WatchStream>,
        /// Keeps the connection's handle alive as long as the stream.
        _client: Box<etcd_client::Client>,
    },
}

impl Watch {
    /// Waits until the instance `id` appears (Signpost: an `add` event naming it; etcd: a put
    /// of its key) and answers when that was seen.
    pub async fn until_added(&mut self, service: &str, id: &str) -> anyhow::Result<Instant> {
        match self {
            Watch::Sse { .. } => {
                let needle = format!("\"id\":\"{id}\"");
                loop {
                    match self.next_sse().await? {
                        Some(e) if e.event == watch::ADD && e.data.contains(&needle) => {
                            return Ok(Instant::now())
                        }
                        Some(_) => continue,
                        None => bail!("watch closed before {id} appeared"),
                    }
                }
            }
            Watch::Etcd { stream, .. } => {
                let key = etcd_key(service, id);
                loop {
                    let Some(resp) = stream.message().await.context("watch")? else {
                        bail!("etcd closed the watch before {id} appeared");
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

    /// The next complete SSE event (comments and keep-alives skipped), `None` at the end.
    async fn next_sse(&mut self) -> anyhow::Result<Option<sse::Event>> {
        let Watch::Sse {
            body,
            parser,
            pending,
        } = self
        else {
            bail!("not an SSE stream");
        };
        loop {
            if let Some(event) = pending.pop_front() {
                return Ok(Some(event));
            }
            match body.next().await {
                Some(chunk) => {
                    pending.extend(parser.push(&chunk.context("reading the watch")?)?);
                }
                None => return Ok(None),
            }
        }
    }
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
        assert!(parse_response(b"nonsense\r\n\r\n").is_err());
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
