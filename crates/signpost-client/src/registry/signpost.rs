//! [`SignpostRegistry`]: the Signpost agent's native HTTP API as a [`Registry`].
//!
//! Every call goes to the last agent that answered; on a connect error, a timeout or a 5xx it
//! moves round-robin to the next address (calls that are not safe to repeat move on only when
//! the connection could not be made). Watches use the agent's Server-Sent Events stream
//! (`GET /api/v1/services/{service}/watch`) and fall back to blocking queries
//! (`?index=N&wait=5m`) against agents that do not serve it. [`Registry::watch_services`] is a
//! loop of blocking queries of `GET /api/v1/services` on the catalog index, with the same
//! failover. Bodies are the wire types of [`signpost_api`].
//!
//! Besides the [`Registry`] trait, [`SignpostRegistry`] has the rest of the native API as
//! methods (in `signpost/admin.rs`): the services summary, listings with a status filter,
//! service definitions, KV and cluster membership; and [`SignpostRegistry::watch_events`], the
//! watch's raw events; and Consul's ACL endpoints (in `signpost/acl.rs`). The `signpost` CLI
//! is built on them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use signpost_api::sse;
use signpost_api::watch::WatchEvent;
use signpost_api::{Check, InstanceList, Registration, ServiceSummary, Status, INDEX_HEADER};

use super::agents::{encode, Agents, ClientSettings, Tried};
use super::consul::BlockingIndex;
use super::error::error_body;
use super::ClientTls;
use super::{
    AgentCheck, AnswerError, Cause, CheckTarget, ConfigError, RegistrationSpec, Registry,
    RegistryError, ServiceSet,
};
use crate::instance::{Instance, Update};

mod acl;
mod admin;
mod lifecycle;

pub use acl::{AclPolicy, AclToken, NewPolicy, NewToken, PolicyLink};
pub use admin::{KvWrite, Registered};

/// Tunables of a [`SignpostRegistry`]. `Default` gives production values and no token.
///
/// ```
/// use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
///
/// let options = SignpostOptions { token: Some("b1gs33cr3t".into()), ..Default::default() };
/// let registry = SignpostRegistry::with_options(["127.0.0.1:8500"], options).unwrap();
/// // The token never shows up in logs.
/// assert!(!format!("{registry:?} {:?}", registry.options()).contains("b1gs33cr3t"));
///
/// let bad = SignpostOptions { token: Some("line\nbreak".into()), ..Default::default() };
/// assert!(SignpostRegistry::with_options(["127.0.0.1:8500"], bad).is_err());
/// ```
#[derive(Clone)]
pub struct SignpostOptions {
    /// ACL token sent as `X-Consul-Token` with every request, watch streams and blocking
    /// queries included; `None` sends none (the agent's anonymous token applies).
    pub token: Option<String>,
    /// TLS for `https://` agents: the CA their certificates must chain to (the system's roots
    /// when `ca_file` is `None`) and the client certificate and key presented to agents that
    /// require one (mutual TLS). The default trusts the system's roots and presents nothing.
    pub tls: ClientTls,
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
    /// How long a membership change (join, remove, leave) may take: the leader waits for the
    /// new configuration to commit, which takes longer than a plain write.
    pub membership_timeout: Duration,
}

impl Default for SignpostOptions {
    fn default() -> Self {
        SignpostOptions {
            token: None,
            tls: ClientTls::default(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            blocking_wait: Duration::from_secs(300),
            watch_idle_timeout: Duration::from_secs(45),
            membership_timeout: Duration::from_secs(120),
        }
    }
}

impl std::fmt::Debug for SignpostOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignpostOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("blocking_wait", &self.blocking_wait)
            .field("watch_idle_timeout", &self.watch_idle_timeout)
            .field("membership_timeout", &self.membership_timeout)
            .finish()
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

    /// Like [`SignpostRegistry::new`], with explicit tunables and token. Fails if `addrs` is
    /// empty or the token cannot be sent in a header.
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
        let settings = ClientSettings {
            system: "Signpost",
            token: options.token.as_deref(),
            tls: &options.tls,
            connect_timeout: options.connect_timeout,
        };
        let build = |long: bool| {
            let b = settings.builder()?;
            let b = if long {
                b.read_timeout(options.watch_idle_timeout)
            } else {
                b.timeout(options.request_timeout)
            };
            b.build()
                .map_err(|e| RegistryError::Config(ConfigError::HttpClient(e)))
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

    /// The options this registry was built with.
    pub fn options(&self) -> &SignpostOptions {
        &self.inner.options
    }
}

/// Which instances a listing or a watch returns, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    /// Passing instances only (the agent's default; what traffic may go to).
    #[default]
    Passing,
    /// Instances in this status only.
    Only(Status),
    /// Every instance, whatever its status.
    Any,
}

impl StatusFilter {
    /// The `status` query parameter, when one is needed.
    fn query(self) -> Option<&'static str> {
        match self {
            StatusFilter::Passing => None,
            StatusFilter::Only(s) => Some(s.as_str()),
            StatusFilter::Any => Some("any"),
        }
    }

    /// `path` with the filter's `status` parameter added (`sep` is `?` or `&`).
    fn append(self, path: &mut String) {
        if let Some(status) = self.query() {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str("status=");
            path.push_str(status);
        }
    }
}

/// Which failures of one agent send a call on to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failover {
    /// Any transport error or 5xx: the call is safe to repeat (register is an upsert, a
    /// repeated delete answers 404, reads).
    Any,
    /// Only a failure to connect (nothing was sent): the call may not be safe to repeat (a
    /// `cas` write, a membership change). Its 5xx answers are the answer.
    ConnectOnly,
}

/// `10000ms`: a duration as the agent parses it.
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// What a registration spec sends: the instance and its TTL check.
fn registration_body(spec: &RegistrationSpec) -> Registration {
    let i = &spec.instance;
    Registration {
        id: Some(i.id.clone()),
        address: i.address.clone(),
        port: i.port,
        tags: i.tags.clone(),
        metadata: i.metadata.clone(),
        weight: Some(i.weight),
        check: Some(match &spec.check {
            None => Check {
                ttl: Some(millis(spec.ttl)),
                deregister_after: spec.deregister_after.map(millis),
                ..Check::default()
            },
            Some(c) => agent_check(c, spec.deregister_after),
        }),
        status: None,
        // `up` is the agent's default: left out, so older agents accept the body.
        state: (!i.state.is_up()).then_some(i.state),
    }
}

/// The native check body of an agent-run check.
fn agent_check(c: &AgentCheck, deregister_after: Option<Duration>) -> Check {
    let mut check = Check {
        interval: Some(millis(c.interval)),
        timeout: Some(millis(c.timeout)),
        deregister_after: deregister_after.map(millis),
        ..Check::default()
    };
    match &c.target {
        CheckTarget::Http(url) => check.http = Some(url.clone()),
        CheckTarget::Tcp(addr) => check.tcp = Some(addr.clone()),
        CheckTarget::Grpc(addr) => check.grpc = Some(addr.clone()),
    }
    check
}

impl Inner {
    /// Sends a request built by `build` for an agent's base URL (with the watch client when
    /// `long`), failing over to the next agent as `failover` allows.
    async fn send<F>(
        &self,
        long: bool,
        failover: Failover,
        build: F,
    ) -> Result<reqwest::Response, RegistryError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let client = if long { &self.long_http } else { &self.http };
        let build = &build;
        self.agents
            .call(|base| async move {
                // The caller's trace context (a registry call's span) goes with the request.
                match crate::otel::inject(build(client, base)).send().await {
                    Ok(resp) if resp.status().is_server_error() && failover == Failover::Any => {
                        let status = resp.status();
                        let body = error_body(&resp.bytes().await.unwrap_or_default());
                        Tried::Next(Cause::Status { status, body })
                    }
                    Ok(resp) => Tried::Answer(Ok(resp)),
                    Err(e) if failover == Failover::Any || e.is_connect() => {
                        Tried::Next(Cause::transport(&e))
                    }
                    Err(e) => Tried::Answer(Err(RegistryError::Unavailable {
                        agent: base.to_string(),
                        cause: Cause::transport(&e),
                    })),
                }
            })
            .await?
    }

    /// Reads a successful answer's JSON body as `T`.
    async fn read<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        what: impl FnOnce() -> String,
    ) -> Result<T, RegistryError> {
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Unavailable {
            agent: self.agents.current().to_string(),
            cause: Cause::transport(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::malformed(what(), e))
    }

    /// A `GET` of `path` on the agent at `base`; with `wait`, a blocking query past its index
    /// (`index=N&wait=D`), allowed the wait plus a normal request's time.
    fn get(
        &self,
        c: &reqwest::Client,
        base: &str,
        path: &str,
        wait: Option<(u64, Duration)>,
    ) -> reqwest::RequestBuilder {
        match wait {
            Some((index, wait)) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                c.get(format!(
                    "{base}{path}{sep}index={index}&wait={}",
                    millis(wait)
                ))
                .timeout(wait + self.options.request_timeout)
            }
            None => c.get(format!("{base}{path}")),
        }
    }

    /// `GET` of a listing, blocking when `wait` gives an index above 0 to wait past.
    async fn list(
        &self,
        service: &str,
        filter: StatusFilter,
        wait: Option<(u64, Duration)>,
    ) -> Result<InstanceList, RegistryError> {
        let mut path = format!("/api/v1/services/{}/instances", encode(service));
        filter.append(&mut path);
        let resp = self
            .send(false, Failover::Any, |c, base| {
                self.get(c, base, &path, wait)
            })
            .await?;
        let resp = check(resp, || service.to_string()).await?;
        self.read(resp, || format!("listing of {service}")).await
    }

    /// `GET /api/v1/services`, blocking when `wait` gives an index above 0 to wait past: the
    /// catalog index the answer reflects (its `X-Signpost-Index`) and every service's summary.
    async fn services(
        &self,
        wait: Option<(u64, Duration)>,
    ) -> Result<(u64, Vec<ServiceSummary>), RegistryError> {
        let path = "/api/v1/services";
        let resp = self
            .send(false, Failover::Any, |c, base| {
                self.get(c, base, path, wait)
            })
            .await?;
        let resp = check(resp, || "services".into()).await?;
        let index = index_of(&resp).ok_or_else(|| {
            RegistryError::malformed(
                "services",
                AnswerError::MissingHeader {
                    header: INDEX_HEADER,
                    system: "Signpost",
                },
            )
        })?;
        let services = self.read(resp, || "services".into()).await?;
        Ok((index, services))
    }
}

/// The index an answer reflects: its `X-Signpost-Index` header, when present and numeric.
fn index_of(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(INDEX_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Maps a non-2xx answer to a [`RegistryError`] about `what`: 403 is
/// [`RegistryError::Forbidden`], 404 [`RegistryError::NotFound`], a 5xx (that reached here: no
/// other agent to try)
/// [`RegistryError::Unavailable`], anything else [`RegistryError::Rejected`].
async fn check(
    resp: reqwest::Response,
    what: impl FnOnce() -> String,
) -> Result<reqwest::Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let agent = origin(resp.url());
    let body = error_body(&resp.bytes().await.unwrap_or_default());
    Err(match status {
        StatusCode::FORBIDDEN => RegistryError::Forbidden { what: what(), body },
        StatusCode::NOT_FOUND => RegistryError::NotFound { what: what(), body },
        s if s.is_server_error() => RegistryError::Unavailable {
            agent,
            cause: Cause::Status { status: s, body },
        },
        s => RegistryError::Rejected {
            what: what(),
            status: Some(s),
            body,
        },
    })
}

/// `http://host:port` of a URL, for messages.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

impl Registry for SignpostRegistry {
    fn register<'a>(
        &'a self,
        spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.register_instance(&spec.instance.service, &registration_body(spec))
                .await?;
            Ok(())
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            match self.remove_instance(service, id).await {
                // Already gone is what we wanted.
                Ok(()) | Err(RegistryError::NotFound { .. }) => Ok(()),
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
                .send(false, Failover::Any, |c, base| {
                    c.put(format!("{base}{path}"))
                })
                .await?;
            check(resp, || format!("{service}/{id}")).await?;
            Ok(())
        })
    }

    fn set_state<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        state: crate::instance::Lifecycle,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            SignpostRegistry::set_state(self, service, id, state).await?;
            Ok(())
        })
    }

    fn list<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>> {
        Box::pin(async move {
            let list = self
                .inner
                .list(service, StatusFilter::Passing, None)
                .await?;
            Ok((
                list.index,
                list.instances.into_iter().map(Into::into).collect(),
            ))
        })
    }

    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>> {
        let cursor = CatalogCursor {
            inner: self.inner.clone(),
            index: BlockingIndex::default(),
            done: false,
        };
        futures::stream::unfold(cursor, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
        .boxed()
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
        self.watch_events(service, StatusFilter::Passing)
            .map(|event| event.map(to_update))
            .boxed()
    }
}

/// A watch event as the SDK's registry-neutral [`Update`].
fn to_update(event: WatchEvent) -> Update {
    match event {
        WatchEvent::Reset(list) => Update::Reset {
            index: list.index,
            instances: list.instances.into_iter().map(Into::into).collect(),
        },
        WatchEvent::Add(c) => Update::Add {
            index: c.index,
            instance: c.instance.into(),
        },
        WatchEvent::Update(c) => Update::Update {
            index: c.index,
            instance: c.instance.into(),
        },
        WatchEvent::Remove(c) => Update::Remove {
            index: c.index,
            id: c.instance.id,
        },
    }
}

impl SignpostRegistry {
    /// The raw events of `service`'s watch stream (instances with their status, as the agent
    /// renders them), for the instances `filter` selects: a `reset` first, then `add`, `update`
    /// and `remove`. Against an agent without the SSE endpoint, blocking queries give a `reset`
    /// per change. The stream yields an error and ends when the connection is lost; the caller
    /// reconnects. [`Registry::watch`] is this, as [`Update`]s of passing instances.
    pub fn watch_events(
        &self,
        service: &str,
        filter: StatusFilter,
    ) -> BoxStream<'static, Result<WatchEvent, RegistryError>> {
        let cursor = WatchCursor {
            inner: self.inner.clone(),
            service: service.to_string(),
            filter,
            mode: Mode::Start,
            parser: sse::Parser::new(),
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

/// The state of one [`SignpostRegistry::watch_services`](Registry::watch_services) stream:
/// blocking queries of `GET /api/v1/services` in a loop, each waiting past the catalog index
/// the previous answer brought.
struct CatalogCursor {
    /// The registry's shared state (clients, agents, options).
    inner: Arc<Inner>,
    /// Which index the next query blocks on, and whether an answer is news (the same index
    /// rules as a Consul catalog watch).
    index: BlockingIndex,
    /// The stream has ended (after an error).
    done: bool,
}

impl CatalogCursor {
    async fn next(&mut self) -> Option<Result<ServiceSet, RegistryError>> {
        if self.done {
            return None;
        }
        loop {
            let last = self.index.query();
            let wait = (last > 0).then_some((last, self.inner.options.blocking_wait));
            match self.inner.services(wait).await {
                Ok((index, summaries)) => {
                    if let Some(index) = self.index.observe(index) {
                        let services = summaries.into_iter().map(|s| s.name).collect();
                        return Some(Ok(ServiceSet { index, services }));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
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

/// The state of one [`SignpostRegistry::watch_events`] stream.
struct WatchCursor {
    /// The registry's shared state (clients, addresses).
    inner: Arc<Inner>,
    /// The service watched.
    service: String,
    /// Which instances the watcher sees.
    filter: StatusFilter,
    /// Where the stream is.
    mode: Mode,
    /// Turns SSE body chunks into events.
    parser: sse::Parser,
    /// Events parsed from a chunk but not yet handed out.
    pending: VecDeque<WatchEvent>,
    /// A malformed event ends the stream once `pending` is drained.
    failed: Option<RegistryError>,
}

impl WatchCursor {
    async fn next(&mut self) -> Option<Result<WatchEvent, RegistryError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if let Some(e) = self.failed.take() {
                self.mode = Mode::Done;
                return Some(Err(e));
            }
            match &mut self.mode {
                Mode::Done => return None,
                Mode::Start => match open(&self.inner, &self.service, self.filter).await {
                    Ok(mode) => self.mode = mode,
                    Err(e) => {
                        self.mode = Mode::Done;
                        return Some(Err(e));
                    }
                },
                Mode::Sse(body) => match body.next().await {
                    Some(Ok(chunk)) => {
                        let what = || format!("watch of {}", self.service);
                        let events = match self.parser.push(&chunk) {
                            Ok(events) => events,
                            Err(e) => {
                                self.mode = Mode::Done;
                                return Some(Err(RegistryError::malformed(what(), e)));
                            }
                        };
                        for event in events {
                            match WatchEvent::from_sse(&event) {
                                Ok(Some(event)) => self.pending.push_back(event),
                                Ok(None) => {}
                                Err(e) => {
                                    // Hand out what was good first, then fail: the caller
                                    // reconnects and gets a fresh reset.
                                    self.failed = Some(RegistryError::malformed(what(), e));
                                    break;
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        self.mode = Mode::Done;
                        return Some(Err(RegistryError::Unavailable {
                            agent: self.inner.agents.current().to_string(),
                            cause: Cause::transport(&e),
                        }));
                    }
                    None => {
                        self.mode = Mode::Done;
                        return Some(Err(RegistryError::Unavailable {
                            agent: self.inner.agents.current().to_string(),
                            cause: Cause::Closed,
                        }));
                    }
                },
                Mode::Blocking(index) => {
                    let last = *index;
                    let wait = self.inner.options.blocking_wait;
                    match self
                        .inner
                        .list(
                            &self.service,
                            self.filter,
                            (last > 0).then_some((last, wait)),
                        )
                        .await
                    {
                        Ok(list) => {
                            if list.index != last {
                                self.mode = Mode::Blocking(list.index);
                                return Some(Ok(WatchEvent::Reset(list)));
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
async fn open(inner: &Inner, service: &str, filter: StatusFilter) -> Result<Mode, RegistryError> {
    let mut path = format!("/api/v1/services/{}/watch", encode(service));
    filter.append(&mut path);
    let resp = inner
        .send(true, Failover::Any, |c, base| {
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
            let resp = check(resp, || service.to_string()).await?;
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with("text/event-stream") {
                return Err(RegistryError::malformed(
                    format!("watch of {service}"),
                    AnswerError::NotAnEventStream {
                        content_type: content_type.to_string(),
                    },
                ));
            }
            Ok(Mode::Sse(resp.bytes_stream().boxed()))
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
        let spec = RegistrationSpec {
            instance: Instance {
                id: "u-1".into(),
                service: "users".into(),
                address: "10.0.0.7".into(),
                port: 8080,
                tags: vec!["v2".into()],
                metadata: [("zone".to_string(), "a".to_string())].into(),
                weight: 100,
                state: Default::default(),
                maintenance: None,
            },
            ttl: Duration::from_secs(10),
            deregister_after: Some(Duration::from_secs(60)),
            check: None,
        };
        let body = registration_body(&spec);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "id": "u-1", "address": "10.0.0.7", "port": 8080, "tags": ["v2"],
                "metadata": {"zone": "a"}, "weight": 100,
                "check": {"ttl": "10000ms", "deregister_after": "60000ms"}
            })
        );
    }

    #[test]
    fn status_filters_become_query_parameters() {
        let with = |filter: StatusFilter, path: &str| {
            let mut path = path.to_string();
            filter.append(&mut path);
            path
        };
        assert_eq!(with(StatusFilter::Passing, "/a"), "/a");
        assert_eq!(with(StatusFilter::Any, "/a"), "/a?status=any");
        assert_eq!(
            with(StatusFilter::Only(Status::Critical), "/a?x=1"),
            "/a?x=1&status=critical"
        );
    }

    #[test]
    fn watch_events_become_updates() {
        let instance: signpost_api::Instance = serde_json::from_str(
            r#"{"id":"a","service":"users","address":"10.0.0.1","port":80,"tags":["x"],
                "metadata":{},"weight":5,"status":"passing","create_index":1}"#,
        )
        .unwrap();
        let change = |index| signpost_api::InstanceChange {
            index,
            instance: instance.clone(),
        };
        match to_update(WatchEvent::Reset(InstanceList {
            index: 7,
            instances: vec![instance.clone()],
        })) {
            Update::Reset { index, instances } => {
                assert_eq!(index, 7);
                assert_eq!(instances[0].id, "a");
                assert_eq!(instances[0].weight, 5);
                assert_eq!(instances[0].service, "users");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            to_update(WatchEvent::Add(change(8))),
            Update::Add { index: 8, .. }
        ));
        assert!(matches!(
            to_update(WatchEvent::Update(change(9))),
            Update::Update { index: 9, .. }
        ));
        assert_eq!(
            to_update(WatchEvent::Remove(change(10))),
            Update::Remove {
                index: 10,
                id: "a".into()
            }
        );
    }
}
