//! [`SignpostRegistry`]: the Signpost agent's native HTTP API as a [`Registry`].
//!
//! Every call goes to the last agent that answered; on a connect error, a timeout or a 5xx it
//! moves round-robin to the next address. Watches use the agent's Server-Sent Events stream
//! (`GET /api/v1/services/{service}/watch`) and fall back to blocking queries
//! (`?index=N&wait=5m`) against agents that do not serve it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::agents::{encode, error_chain, Agents, Tried};
use super::{RegistrationSpec, Registry, RegistryError};
use crate::instance::{Instance, Update};

/// Tunables of a [`SignpostRegistry`]. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct SignpostOptions {
    /// How long establishing a TCP connection to one agent may take before the next is tried.
    pub connect_timeout: Duration,
    /// Total time a short request (register, heartbeat, list, ...) may take on one agent.
    pub request_timeout: Duration,
    /// How long one blocking query waits on the agent (the `wait` parameter) in the fallback
    /// watch mode.
    pub blocking_wait: Duration,
    /// A watch connection that has received nothing for this long is considered dead. The agent
    /// sends an SSE keep-alive comment every 15 s, so this must be well above that.
    pub watch_idle_timeout: Duration,
}

impl Default for SignpostOptions {
    fn default() -> Self {
        SignpostOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            blocking_wait: Duration::from_secs(300),
            watch_idle_timeout: Duration::from_secs(45),
        }
    }
}

/// A [`Registry`] backed by one or more Signpost agents' native HTTP API.
///
/// Cheap to clone; clones share connections and the "last good agent" memory.
///
/// ```no_run
/// use std::sync::Arc;
/// use signpost_client::registry::{Registry, signpost::SignpostRegistry};
///
/// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
/// // The first agent that answers is used until it fails; then the next one.
/// let registry = SignpostRegistry::new(["http://10.0.0.1:8500", "10.0.0.2:8500"])?;
/// let (index, instances) = registry.list("users").await?;
/// println!("users at index {index}: {instances:?}");
/// let registry: Arc<dyn Registry> = Arc::new(registry);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SignpostRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// The agents, and the one that answered last.
    agents: Agents,
    /// Client for short requests (with a total timeout).
    http: reqwest::Client,
    /// Client for watch streams: no total timeout, but a read timeout so a silently dead
    /// connection is noticed (blocking queries use `http` with a per-request timeout).
    long_http: reqwest::Client,
    /// The tunables this registry was built with.
    options: SignpostOptions,
}

impl std::fmt::Debug for SignpostRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignpostRegistry")
            .field("agents", &self.inner.agents)
            .finish()
    }
}

impl SignpostRegistry {
    /// A registry talking to the agents at `addrs` (`http://host:port` or just `host:port`),
    /// with default [`SignpostOptions`]. Fails if `addrs` is empty.
    ///
    /// ```
    /// use signpost_client::registry::signpost::SignpostRegistry;
    /// let registry = SignpostRegistry::new(vec!["127.0.0.1:8500".to_string()]).unwrap();
    /// assert_eq!(registry.addrs(), ["http://127.0.0.1:8500"]);
    /// ```
    pub fn new<I, S>(addrs: I) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_options(addrs, SignpostOptions::default())
    }

    /// Like [`SignpostRegistry::new`], with explicit tunables.
    ///
    /// ```
    /// use std::time::Duration;
    /// use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
    /// let options = SignpostOptions { request_timeout: Duration::from_secs(3), ..Default::default() };
    /// let registry = SignpostRegistry::with_options(["127.0.0.1:8500"], options).unwrap();
    /// ```
    pub fn with_options<I, S>(addrs: I, options: SignpostOptions) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let agents = Agents::new(addrs, "Signpost")?;
        let build = |long: bool| {
            let b = reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(options.connect_timeout);
            let b = if long {
                b.read_timeout(options.watch_idle_timeout)
            } else {
                b.timeout(options.request_timeout)
            };
            b.build()
                .map_err(|e| RegistryError::Other(format!("cannot build the HTTP client: {e}")))
        };
        Ok(SignpostRegistry {
            inner: Arc::new(Inner {
                agents,
                http: build(false)?,
                long_http: build(true)?,
                options,
            }),
        })
    }

    /// The agents' base URLs, normalised.
    pub fn addrs(&self) -> &[String] {
        self.inner.agents.addrs()
    }

    /// The base URL of the agent calls go to first (the one that answered last).
    pub fn current_addr(&self) -> &str {
        self.inner.agents.current()
    }
}

impl SignpostRegistry {
    /// The same agents through their Consul-compatible face, for
    /// [`Registry::watch_services`]: the native `GET /api/v1/services` answers at once (it has
    /// no blocking query), while every Signpost agent also serves `GET /v1/catalog/services`
    /// with `index` and `wait`. Starts at the agent that answered last.
    fn catalog_registry(&self) -> Result<super::consul::ConsulRegistry, RegistryError> {
        let addrs = self.inner.agents.addrs();
        let start = addrs
            .iter()
            .position(|a| a == self.inner.agents.current())
            .unwrap_or(0);
        let ordered = addrs[start..].iter().chain(&addrs[..start]).cloned();
        let options = &self.inner.options;
        super::consul::ConsulRegistry::with_options(
            ordered,
            super::consul::ConsulOptions {
                connect_timeout: options.connect_timeout,
                request_timeout: options.request_timeout,
                blocking_wait: options.blocking_wait,
                ..Default::default()
            },
        )
    }
}

/// What the agent answers to a listing.
#[derive(Debug, Deserialize)]
struct ListBody {
    index: u64,
    instances: Vec<Instance>,
}

/// The registration body of `POST /api/v1/services/{service}/instances`.
#[derive(Debug, Serialize)]
struct RegisterBody<'a> {
    id: &'a str,
    address: &'a str,
    port: u16,
    tags: &'a [String],
    metadata: &'a std::collections::BTreeMap<String, String>,
    weight: u32,
    check: CheckBody,
}

/// The TTL check of a registration.
#[derive(Debug, Serialize)]
struct CheckBody {
    ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_after: Option<String>,
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Inner {
    /// Sends a request built by `build` for an agent's base URL (with the watch client when
    /// `long`), failing over to the next agent on a transport error or a 5xx. Every Signpost call is idempotent (register is an upsert,
    /// a repeated delete answers 404), so retrying on another agent is safe.
    async fn send<F>(&self, long: bool, build: F) -> Result<reqwest::Response, RegistryError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let client = if long { &self.long_http } else { &self.http };
        let build = &build;
        self.agents
            .call(|base| async move {
                match build(client, base).send().await {
                    Ok(resp) if resp.status().is_server_error() => {
                        let status = resp.status();
                        Tried::Next(format!("{status}: {}", error_message(resp).await))
                    }
                    Ok(resp) => Tried::Answer(resp),
                    Err(e) => Tried::Next(error_chain(&e)),
                }
            })
            .await
    }

    async fn list(&self, service: &str, wait: Option<(u64, Duration)>) -> ListResult {
        let path = format!("/api/v1/services/{}/instances", encode(service));
        let resp = self
            .send(false, |c, base| match wait {
                // The agent answers after at most `wait`: allow that plus a normal request.
                Some((index, wait)) => c
                    .get(format!("{base}{path}?index={index}&wait={}", millis(wait)))
                    .timeout(wait + self.options.request_timeout),
                None => c.get(format!("{base}{path}")),
            })
            .await?;
        let resp = check(resp, service, None).await?;
        let body: ListBody = resp.json().await.map_err(|e| {
            RegistryError::Other(format!("invalid listing of {service} from the agent: {e}"))
        })?;
        Ok((body.index, body.instances))
    }
}

type ListResult = Result<(u64, Vec<Instance>), RegistryError>;

/// The `error` field of an agent's JSON error body, or the raw body.
async fn error_message(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v["error"].as_str().map(str::to_string).unwrap_or(text),
        Err(_) => text.chars().take(512).collect(),
    }
}

/// Maps a non-2xx answer to a [`RegistryError`].
async fn check(
    resp: reqwest::Response,
    service: &str,
    id: Option<&str>,
) -> Result<reqwest::Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let message = error_message(resp).await;
    Err(match status {
        StatusCode::NOT_FOUND => RegistryError::NotFound(match id {
            Some(id) => format!("{service}/{id}: {message}"),
            None => format!("{service}: {message}"),
        }),
        s if s.is_client_error() => RegistryError::Rejected(format!("{s}: {message}")),
        s => RegistryError::Other(format!("{s}: {message}")),
    })
}

impl Registry for SignpostRegistry {
    fn register<'a>(
        &'a self,
        spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let i = &spec.instance;
            let body = RegisterBody {
                id: &i.id,
                address: &i.address,
                port: i.port,
                tags: &i.tags,
                metadata: &i.metadata,
                weight: i.weight,
                check: CheckBody {
                    ttl: millis(spec.ttl),
                    deregister_after: spec.deregister_after.map(millis),
                },
            };
            let path = format!("/api/v1/services/{}/instances", encode(&i.service));
            let resp = self
                .inner
                .send(false, |c, base| c.post(format!("{base}{path}")).json(&body))
                .await?;
            check(resp, &i.service, Some(&i.id)).await?;
            Ok(())
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = format!(
                "/api/v1/services/{}/instances/{}",
                encode(service),
                encode(id)
            );
            let resp = self
                .inner
                .send(false, |c, base| c.delete(format!("{base}{path}")))
                .await?;
            match check(resp, service, Some(id)).await {
                // Already gone is what we wanted.
                Ok(_) | Err(RegistryError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn heartbeat<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = format!(
                "/api/v1/services/{}/instances/{}/heartbeat",
                encode(service),
                encode(id)
            );
            let resp = self
                .inner
                .send(false, |c, base| c.put(format!("{base}{path}")))
                .await?;
            check(resp, service, Some(id)).await?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, ListResult> {
        Box::pin(self.inner.list(service, None))
    }

    fn watch_services(&self) -> BoxStream<'static, Result<super::ServiceSet, RegistryError>> {
        match self.catalog_registry() {
            Ok(consul) => consul.watch_services(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
        let cursor = WatchCursor {
            inner: self.inner.clone(),
            service: service.to_string(),
            mode: Mode::Start,
            parser: sse::Parser::default(),
            pending: VecDeque::new(),
            failed: None,
        };
        futures::stream::unfold(cursor, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
        .boxed()
    }
}

/// Where a watch stream is.
enum Mode {
    /// Not connected yet.
    Start,
    /// Reading the SSE body.
    Sse(BoxStream<'static, reqwest::Result<bytes::Bytes>>),
    /// The agent has no SSE endpoint: polling with blocking queries; the last index seen.
    Blocking(u64),
    /// The stream has ended (after an error or the end of the body).
    Done,
}

/// The state of one [`SignpostRegistry::watch`] stream.
struct WatchCursor {
    /// The registry's shared state (clients, addresses).
    inner: Arc<Inner>,
    /// The service watched.
    service: String,
    /// Where the stream is.
    mode: Mode,
    /// Turns SSE body chunks into events.
    parser: sse::Parser,
    /// Updates parsed from a chunk but not yet handed out.
    pending: VecDeque<Update>,
    /// A malformed event ends the stream once `pending` is drained.
    failed: Option<RegistryError>,
}

impl WatchCursor {
    async fn next(&mut self) -> Option<Result<Update, RegistryError>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
            }
            if let Some(e) = self.failed.take() {
                self.mode = Mode::Done;
                return Some(Err(e));
            }
            match &mut self.mode {
                Mode::Done => return None,
                Mode::Start => match open(&self.inner, &self.service).await {
                    Ok(mode) => self.mode = mode,
                    Err(e) => {
                        self.mode = Mode::Done;
                        return Some(Err(e));
                    }
                },
                Mode::Sse(body) => match body.next().await {
                    Some(Ok(chunk)) => {
                        let events = match self.parser.push(&chunk) {
                            Ok(events) => events,
                            Err(e) => {
                                self.mode = Mode::Done;
                                return Some(Err(RegistryError::Other(e.to_string())));
                            }
                        };
                        for event in events {
                            match sse::to_update(&event) {
                                Ok(Some(update)) => self.pending.push_back(update),
                                Ok(None) => {}
                                Err(e) => {
                                    // Hand out what was good first, then fail: the caller
                                    // reconnects and gets a fresh reset.
                                    self.failed = Some(RegistryError::Other(e));
                                    break;
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        self.mode = Mode::Done;
                        return Some(Err(RegistryError::Unavailable(format!(
                            "watch of {} broke: {}",
                            self.service,
                            error_chain(&e)
                        ))));
                    }
                    None => {
                        self.mode = Mode::Done;
                        return Some(Err(RegistryError::Unavailable(format!(
                            "watch of {} ended by the agent",
                            self.service
                        ))));
                    }
                },
                Mode::Blocking(index) => {
                    let last = *index;
                    let wait = self.inner.options.blocking_wait;
                    match self
                        .inner
                        .list(&self.service, (last > 0).then_some((last, wait)))
                        .await
                    {
                        Ok((idx, instances)) => {
                            if idx != last {
                                self.mode = Mode::Blocking(idx);
                                return Some(Ok(Update::Reset {
                                    index: idx,
                                    instances,
                                }));
                            }
                        }
                        Err(e) => {
                            self.mode = Mode::Done;
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }
}

/// Opens the SSE stream, or picks the blocking-query fallback if the agent has none.
async fn open(inner: &Inner, service: &str) -> Result<Mode, RegistryError> {
    let path = format!("/api/v1/services/{}/watch", encode(service));
    let resp = inner
        .send(true, |c, base| {
            c.get(format!("{base}{path}"))
                .header(reqwest::header::ACCEPT, "text/event-stream")
        })
        .await?;
    match resp.status() {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            tracing::info!(
                service = %service,
                "agent has no watch stream; falling back to blocking queries"
            );
            Ok(Mode::Blocking(0))
        }
        _ => {
            let resp = check(resp, service, None).await?;
            Ok(Mode::Sse(resp.bytes_stream().boxed()))
        }
    }
}

/// A small, pure Server-Sent Events parser and the mapping of Signpost's events to [`Update`]s.
pub(crate) mod sse {
    use serde::Deserialize;

    use crate::instance::{Instance, Update};

    /// Longest line accepted; a longer one is an error rather than unbounded memory.
    const MAX_LINE: usize = 16 * 1024 * 1024;

    /// One dispatched event.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Event {
        /// The `event:` field (`message` when absent).
        pub event: String,
        /// The `data:` lines joined with `\n`.
        pub data: String,
        /// The last `id:` field, if any.
        pub id: Option<String>,
    }

    /// Why the byte stream is not SSE.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum ParseError {
        /// A line, or an event's data, over the size limit.
        #[error("server-sent event larger than {MAX_LINE} bytes")]
        LineTooLong,
    }

    /// Incremental parser: feed it chunks as they arrive, get whole events back.
    #[derive(Debug, Default)]
    pub struct Parser {
        /// The line being read.
        line: Vec<u8>,
        /// The last byte was a CR, so an LF right after it ends nothing.
        after_cr: bool,
        /// `event:` of the event being built.
        event: Option<String>,
        /// `data:` lines of the event being built, each followed by `\n`.
        data: String,
        /// Whether any `data:` field was seen for the event being built.
        has_data: bool,
        /// Last event id (persists across events, as the spec says).
        id: Option<String>,
    }

    impl Parser {
        /// Consumes `chunk` and returns the events it completed.
        pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, ParseError> {
            let mut out = Vec::new();
            for &b in chunk {
                match b {
                    b'\n' if self.after_cr => self.after_cr = false,
                    b'\n' | b'\r' => {
                        self.after_cr = b == b'\r';
                        let line = std::mem::take(&mut self.line);
                        if let Some(event) = self.line_done(&line)? {
                            out.push(event);
                        }
                    }
                    _ => {
                        self.after_cr = false;
                        if self.line.len() >= MAX_LINE {
                            return Err(ParseError::LineTooLong);
                        }
                        self.line.push(b);
                    }
                }
            }
            Ok(out)
        }

        fn line_done(&mut self, line: &[u8]) -> Result<Option<Event>, ParseError> {
            if line.is_empty() {
                let event = self.event.take();
                if !std::mem::take(&mut self.has_data) {
                    return Ok(None);
                }
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                return Ok(Some(Event {
                    event: event.unwrap_or_else(|| "message".to_string()),
                    data,
                    id: self.id.clone(),
                }));
            }
            if line[0] == b':' {
                return Ok(None); // comment / keep-alive
            }
            let line = String::from_utf8_lossy(line);
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => {
                    if self.data.len() + value.len() >= MAX_LINE {
                        return Err(ParseError::LineTooLong);
                    }
                    self.has_data = true;
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "id" if !value.contains('\0') => self.id = Some(value.to_string()),
                _ => {} // `retry` and unknown fields are ignored
            }
            Ok(None)
        }
    }

    #[derive(Deserialize)]
    struct ResetData {
        index: u64,
        instances: Vec<Instance>,
    }

    #[derive(Deserialize)]
    struct ChangeData {
        index: u64,
        instance: Instance,
    }

    #[derive(Deserialize)]
    struct RemoveData {
        index: u64,
        instance: IdOnly,
    }

    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }

    /// Maps one of the agent's watch events to an [`Update`]; `Ok(None)` for events that carry
    /// none (unknown names), `Err` for malformed data.
    pub fn to_update(event: &Event) -> Result<Option<Update>, String> {
        fn parse<'a, T: Deserialize<'a>>(event: &'a Event) -> Result<T, String> {
            serde_json::from_str(&event.data)
                .map_err(|e| format!("malformed `{}` watch event: {e}", event.event))
        }
        Ok(Some(match event.event.as_str() {
            "reset" => {
                let d: ResetData = parse(event)?;
                Update::Reset {
                    index: d.index,
                    instances: d.instances,
                }
            }
            "add" => {
                let d: ChangeData = parse(event)?;
                Update::Add {
                    index: d.index,
                    instance: d.instance,
                }
            }
            "update" => {
                let d: ChangeData = parse(event)?;
                Update::Update {
                    index: d.index,
                    instance: d.instance,
                }
            }
            "remove" => {
                let d: RemoveData = parse(event)?;
                Update::Remove {
                    index: d.index,
                    id: d.instance.id,
                }
            }
            _ => return Ok(None),
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
            Event {
                event: event.into(),
                data: data.into(),
                id: id.map(Into::into),
            }
        }

        #[test]
        fn parses_events_split_anywhere() {
            let text = b": keep-alive\n\nevent: reset\nid: 3\ndata: {\"a\":1}\n\nevent:add\ndata:x\ndata: y\n\n";
            let whole = Parser::default().push(text).unwrap();
            assert_eq!(
                whole,
                vec![
                    ev("reset", "{\"a\":1}", Some("3")),
                    ev("add", "x\ny", Some("3"))
                ]
            );
            // Every split point gives the same events.
            for cut in 0..text.len() {
                let mut p = Parser::default();
                let mut got = p.push(&text[..cut]).unwrap();
                got.extend(p.push(&text[cut..]).unwrap());
                assert_eq!(got, whole, "cut at {cut}");
            }
        }

        #[test]
        fn handles_crlf_and_cr_line_endings() {
            let mut p = Parser::default();
            let got = p
                .push(b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r")
                .unwrap();
            assert_eq!(got, vec![ev("a", "1", None), ev("b", "2", None)]);
            // A CR at the end of one chunk and the LF at the start of the next are one newline.
            let mut p = Parser::default();
            let mut got = p.push(b"data: 1\r").unwrap();
            got.extend(p.push(b"\n\r").unwrap());
            got.extend(p.push(b"\n").unwrap());
            assert_eq!(got, vec![ev("message", "1", None)]);
        }

        #[test]
        fn ignores_comments_unknown_fields_and_dataless_events() {
            let mut p = Parser::default();
            let got = p
                .push(b":hi\nretry: 10\nfoo: bar\nevent: x\n\ndata\n\n")
                .unwrap();
            assert_eq!(got, vec![ev("message", "", None)]);
        }

        #[test]
        fn refuses_endless_lines() {
            let mut p = Parser::default();
            let big = vec![b'a'; MAX_LINE];
            assert!(p.push(&big).is_ok());
            assert_eq!(p.push(b"a"), Err(ParseError::LineTooLong));
        }

        #[test]
        fn invalid_utf8_does_not_panic() {
            let mut p = Parser::default();
            let got = p.push(b"data: \xff\xfe\n\n").unwrap();
            assert_eq!(got.len(), 1);
        }

        #[test]
        fn maps_signpost_events() {
            let inst = r#"{"id":"a","service":"users","address":"10.0.0.1","port":80,"tags":["x"],"metadata":{},"weight":5,"status":"passing","create_index":1}"#;
            let reset = ev(
                "reset",
                &format!(r#"{{"index":7,"instances":[{inst}]}}"#),
                None,
            );
            match to_update(&reset).unwrap() {
                Some(Update::Reset { index, instances }) => {
                    assert_eq!(index, 7);
                    assert_eq!(instances[0].id, "a");
                    assert_eq!(instances[0].weight, 5);
                }
                other => panic!("{other:?}"),
            }
            let add = ev("add", &format!(r#"{{"index":8,"instance":{inst}}}"#), None);
            assert!(matches!(
                to_update(&add).unwrap(),
                Some(Update::Add { index: 8, .. })
            ));
            let upd = ev(
                "update",
                &format!(r#"{{"index":9,"instance":{inst}}}"#),
                None,
            );
            assert!(matches!(
                to_update(&upd).unwrap(),
                Some(Update::Update { index: 9, .. })
            ));
            let rm = ev("remove", r#"{"index":10,"instance":{"id":"a"}}"#, None);
            assert_eq!(
                to_update(&rm).unwrap(),
                Some(Update::Remove {
                    index: 10,
                    id: "a".into()
                })
            );
            assert_eq!(to_update(&ev("ping", "{}", None)).unwrap(), None);
            assert!(to_update(&ev("add", "{not json", None)).is_err());
            assert!(to_update(&ev("reset", r#"{"index":1}"#, None)).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_addresses() {
        let r = SignpostRegistry::new(["127.0.0.1:1", "http://h:2/", " https://h:3 "]).unwrap();
        assert_eq!(
            r.addrs(),
            ["http://127.0.0.1:1", "http://h:2", "https://h:3"]
        );
        assert!(SignpostRegistry::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn registration_body_matches_the_agent_api() {
        let body = RegisterBody {
            id: "u-1",
            address: "10.0.0.7",
            port: 8080,
            tags: &["v2".to_string()],
            metadata: &[("zone".to_string(), "a".to_string())].into(),
            weight: 100,
            check: CheckBody {
                ttl: millis(Duration::from_secs(10)),
                deregister_after: Some(millis(Duration::from_secs(60))),
            },
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "id": "u-1", "address": "10.0.0.7", "port": 8080, "tags": ["v2"],
                "metadata": {"zone": "a"}, "weight": 100,
                "check": {"ttl": "10000ms", "deregister_after": "60000ms"}
            })
        );
    }
}
