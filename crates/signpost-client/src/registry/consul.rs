//! [`ConsulRegistry`]: any Consul-compatible agent (HashiCorp Consul, or Signpost's Consul face)
//! as a [`Registry`].
//!
//! # Calls
//! | Trait call | Consul request |
//! | --- | --- |
//! | [`Registry::register`] | `PUT /v1/agent/service/register` with a TTL check `service:<id>`, registered `passing` |
//! | [`Registry::heartbeat`] | `PUT /v1/agent/check/pass/service:<id>`; an unknown check is [`RegistryError::NotFound`] |
//! | [`Registry::deregister`] | `PUT /v1/agent/service/deregister/<id>`; an unknown id is already gone, so `Ok` |
//! | [`Registry::list`] | `GET /v1/health/service/<name>?passing`: (`X-Consul-Index`, instances) |
//! | [`Registry::watch`] | the same as blocking queries (`&index=N&wait=5m`) in a loop |
//! | [`Registry::watch_services`] | `GET /v1/catalog/services` as blocking queries in a loop (the same index rules) |
//!
//! Consul service ids are unique per agent, so heartbeat and deregistration name the instance by
//! its id alone (the SDK's default id, `<service>-<address>-<port>`, is unique anyway). An
//! unknown check is recognised both as a 404 (recent Consul, Signpost) and as the
//! `500 CheckID "…" does not have associated TTL` older Consul versions answer.
//!
//! # Instances
//! A `/v1/health/service` entry is nested: `{"Node": {...}, "Service": {...}, "Checks": [...]}`.
//! The instance is the `Service` part: `ID`, `Service`, `Port`, `Tags`, `Meta`, and
//! `Weights.Passing` as the weight (clamped to 1..=10000; Consul's default 1 when absent). An
//! empty `Service.Address` means "the node's address", as in Consul, so `Node.Address` is used.
//!
//! # Watching
//! A watch is Consul's blocking-query loop, and every answer whose index differs from the last
//! one emitted becomes an [`Update::Reset`] with the full list. The index follows Consul's
//! rules for blocking-query clients:
//! - an index below 1 is taken as 1 (an index of 0 would make every query return at once);
//! - an unchanged index (the wait ran out, or the agent woke up for nothing) emits nothing and
//!   the same query is sent again;
//! - an index that went backwards (the agent lost its state, or another agent answered) emits a
//!   `Reset` with the new list and sets the next query's index to 0, which answers at once and
//!   blocks again from there. So after such a jump a `Reset`'s index is lower than the one
//!   before; a `Reset` replaces everything, so nothing depends on it growing;
//! - the start of two queries of one watch are at least
//!   [`ConsulOptions::min_query_interval`] apart, so an agent that answers at once cannot make
//!   the loop spin.
//!
//! Any error ends the stream (after yielding the error): [`crate::discovery::Discovery`] keeps
//! serving the last list and reconnects with backoff, starting again from index 0.
//!
//! # Failover
//! As [`super::signpost::SignpostRegistry`]: calls go to the agent that answered last and move to
//! the next address on a connect error, a timeout, a 429 or a 5xx. Every call is idempotent (a
//! registration replaces an earlier one with the same id), so retrying it elsewhere is safe. With
//! HashiCorp Consul, registrations belong to the agent that received them: after a failover the
//! next heartbeat answers `NotFound` and [`crate::registration`] registers the instance again
//! on the agent now in use.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::agents::{encode, Agents, ClientSettings, Tried};
use super::error::error_body;
use super::ClientTls;
use super::{AgentCheck, CheckTarget, RegistrationSpec, Registry, RegistryError, ServiceSet};
use super::{AnswerError, Cause};
use crate::instance::{Instance, Update};
use signpost_api::ErrorBody;

/// Consul's index header.
const INDEX_HEADER: &str = "x-consul-index";
/// An answer without a usable `X-Consul-Index`.
const NO_INDEX: AnswerError = AnswerError::MissingHeader {
    header: "X-Consul-Index",
    system: "Consul",
};
/// The largest weight an [`Instance`] may have.
const MAX_WEIGHT: u32 = 10_000;

/// Tunables of a [`ConsulRegistry`]. `Default` gives production values, no token and the
/// agent's own datacenter.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::registry::consul::{ConsulOptions, ConsulRegistry};
///
/// let options = ConsulOptions {
///     token: Some("b1gs33cr3t".into()),
///     datacenter: Some("eu-west".into()),
///     blocking_wait: Duration::from_secs(60),
///     ..ConsulOptions::default()
/// };
/// let registry = ConsulRegistry::with_options(["127.0.0.1:8500"], options).unwrap();
/// assert_eq!(registry.options().datacenter.as_deref(), Some("eu-west"));
/// // The token never shows up in logs.
/// assert!(!format!("{registry:?}").contains("b1gs33cr3t"));
/// ```
#[derive(Clone)]
pub struct ConsulOptions {
    /// ACL token sent as `X-Consul-Token` with every request; `None` sends none (the agent's
    /// default token applies).
    pub token: Option<String>,
    /// TLS for `https://` agents: the CA their certificates must chain to (the system's roots
    /// when `ca_file` is `None`) and the client certificate and key presented to agents that
    /// require one (mutual TLS). The default trusts the system's roots and presents nothing.
    pub tls: ClientTls,
    /// Datacenter to discover in (`?dc=` on listings and watches); `None` means the agent's
    /// own. Registration is always local to the agent, as in Consul.
    pub datacenter: Option<String>,
    /// How long establishing a TCP connection to one agent may take before the next is tried.
    pub connect_timeout: Duration,
    /// Total time a short request (register, heartbeat, list, ...) may take on one agent.
    pub request_timeout: Duration,
    /// How long one blocking query of a watch waits on the agent (the `wait` parameter; Consul
    /// caps it at 10 minutes and adds up to `wait / 16` of jitter).
    pub blocking_wait: Duration,
    /// The shortest time between the starts of two blocking queries of one watch. Changes that
    /// come faster are delivered together in the next `Reset`.
    pub min_query_interval: Duration,
}

impl Default for ConsulOptions {
    fn default() -> Self {
        ConsulOptions {
            token: None,
            tls: ClientTls::default(),
            datacenter: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            blocking_wait: Duration::from_secs(300),
            min_query_interval: Duration::from_millis(100),
        }
    }
}

impl std::fmt::Debug for ConsulOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("datacenter", &self.datacenter)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("blocking_wait", &self.blocking_wait)
            .field("min_query_interval", &self.min_query_interval)
            .finish()
    }
}

/// A [`Registry`] backed by one or more Consul-compatible agents (Consul itself or Signpost).
///
/// Cheap to clone; clones share connections and the "last good agent" memory.
///
/// ```no_run
/// use std::sync::Arc;
/// use signpost_client::discovery::{Discovery, DiscoveryOptions};
/// use signpost_client::registry::{Registry, consul::ConsulRegistry};
///
/// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
/// // The first agent that answers is used until it fails; then the next one.
/// let registry = ConsulRegistry::new(["http://10.0.0.1:8500", "10.0.0.2:8500"])?;
/// let (index, instances) = registry.list("users").await?;
/// println!("users at index {index}: {instances:?}");
/// let discovery = Discovery::new(Arc::new(registry), DiscoveryOptions::default());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConsulRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// The agents, and the one that answered last.
    agents: Agents,
    /// The HTTP client (connect timeout only; every request sets its own total timeout, since a
    /// blocking query legitimately takes minutes), sending the token with every request.
    http: reqwest::Client,
    /// The tunables this registry was built with.
    options: ConsulOptions,
}

impl std::fmt::Debug for ConsulRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulRegistry")
            .field("agents", &self.inner.agents)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl ConsulRegistry {
    /// A registry talking to the agents at `addrs` (`http://host:port` or just `host:port`),
    /// with default [`ConsulOptions`]. Fails if `addrs` is empty.
    ///
    /// ```
    /// use signpost_client::registry::consul::ConsulRegistry;
    /// let registry = ConsulRegistry::new(["127.0.0.1:8500", "http://consul-2:8500/"]).unwrap();
    /// assert_eq!(registry.addrs(), ["http://127.0.0.1:8500", "http://consul-2:8500"]);
    /// assert!(ConsulRegistry::new(Vec::<String>::new()).is_err());
    /// ```
    pub fn new<I, S>(addrs: I) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_options(addrs, ConsulOptions::default())
    }

    /// Like [`ConsulRegistry::new`], with explicit tunables, token and datacenter. Fails if
    /// `addrs` is empty or the token cannot be sent in a header.
    ///
    /// ```
    /// use signpost_client::registry::consul::{ConsulOptions, ConsulRegistry};
    /// let options = ConsulOptions { token: Some("secret".into()), ..Default::default() };
    /// let registry = ConsulRegistry::with_options(["127.0.0.1:8500"], options).unwrap();
    ///
    /// let bad = ConsulOptions { token: Some("line\nbreak".into()), ..Default::default() };
    /// assert!(ConsulRegistry::with_options(["127.0.0.1:8500"], bad).is_err());
    /// ```
    pub fn with_options<I, S>(addrs: I, options: ConsulOptions) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let agents = Agents::new(addrs, "Consul")?;
        let http = ClientSettings {
            system: "Consul",
            token: options.token.as_deref(),
            tls: &options.tls,
            connect_timeout: options.connect_timeout,
        }
        .client()?;
        Ok(ConsulRegistry {
            inner: Arc::new(Inner {
                agents,
                http,
                options,
            }),
        })
    }

    /// The agents' base URLs, normalised.
    ///
    /// ```
    /// # use signpost_client::registry::consul::ConsulRegistry;
    /// let registry = ConsulRegistry::new([" 10.0.0.1:8500 "]).unwrap();
    /// assert_eq!(registry.addrs(), ["http://10.0.0.1:8500"]);
    /// ```
    pub fn addrs(&self) -> &[String] {
        self.inner.agents.addrs()
    }

    /// The base URL of the agent calls go to first (the one that answered last).
    ///
    /// ```
    /// # use signpost_client::registry::consul::ConsulRegistry;
    /// let registry = ConsulRegistry::new(["10.0.0.1:8500", "10.0.0.2:8500"]).unwrap();
    /// assert_eq!(registry.current_addr(), "http://10.0.0.1:8500");
    /// ```
    pub fn current_addr(&self) -> &str {
        self.inner.agents.current()
    }

    /// The options this registry was built with.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use signpost_client::registry::consul::ConsulRegistry;
    /// let registry = ConsulRegistry::new(["127.0.0.1:8500"]).unwrap();
    /// assert_eq!(registry.options().blocking_wait, Duration::from_secs(300));
    /// ```
    pub fn options(&self) -> &ConsulOptions {
        &self.inner.options
    }
}

/// A duration as Go's `time.ParseDuration` reads it, in the largest exact unit.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms > 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The body of `PUT /v1/agent/service/register`.
#[derive(Debug, Serialize)]
struct RegisterBody<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Address")]
    address: &'a str,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "Tags")]
    tags: &'a [String],
    #[serde(rename = "Meta")]
    meta: &'a BTreeMap<String, String>,
    #[serde(rename = "Weights")]
    weights: WeightsBody,
    #[serde(rename = "Check")]
    check: CheckBody,
}

/// Consul's `Weights`: the instance's weight when passing, 1 when warning (Consul's default).
#[derive(Debug, Serialize)]
struct WeightsBody {
    #[serde(rename = "Passing")]
    passing: u32,
    #[serde(rename = "Warning")]
    warning: u32,
}

/// The TTL check of a registration. It is registered `passing`: Consul starts a TTL check
/// without a status critical, which would hide the instance until its first heartbeat.
#[derive(Debug, Serialize)]
struct CheckBody {
    #[serde(rename = "CheckID")]
    check_id: String,
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    /// An agent-run check's target (`HTTP`, `TCP` or `GRPC`) and its timing.
    #[serde(flatten)]
    active: Option<ActiveCheck>,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// Consul raises anything below one minute to one minute.
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        skip_serializing_if = "Option::is_none"
    )]
    deregister_after: Option<String>,
}

/// An agent-run check in Consul's shape; it starts critical, as in Consul.
#[derive(Debug, Serialize)]
struct ActiveCheck {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(rename = "GRPC", skip_serializing_if = "Option::is_none")]
    grpc: Option<String>,
    #[serde(rename = "Interval")]
    interval: String,
    #[serde(rename = "Timeout")]
    timeout: String,
}

impl ActiveCheck {
    fn of(check: &AgentCheck) -> Self {
        let mut a = ActiveCheck {
            http: None,
            tcp: None,
            grpc: None,
            interval: go_duration(check.interval),
            timeout: go_duration(check.timeout),
        };
        match &check.target {
            CheckTarget::Http(url) => a.http = Some(url.clone()),
            CheckTarget::Tcp(addr) => a.tcp = Some(addr.clone()),
            CheckTarget::Grpc(addr) => a.grpc = Some(addr.clone()),
        }
        a
    }
}

/// The TTL check id of instance `id`: Consul's default id of a service's check.
fn check_id(id: &str) -> String {
    format!("service:{id}")
}

fn register_body(spec: &RegistrationSpec) -> RegisterBody<'_> {
    let i = &spec.instance;
    RegisterBody {
        id: &i.id,
        name: &i.service,
        address: &i.address,
        port: i.port,
        tags: &i.tags,
        meta: &i.metadata,
        weights: WeightsBody {
            passing: i.weight,
            warning: 1,
        },
        check: CheckBody {
            check_id: check_id(&i.id),
            ttl: spec.check.is_none().then(|| go_duration(spec.ttl)),
            active: spec.check.as_ref().map(ActiveCheck::of),
            status: spec.check.is_none().then_some("passing"),
            deregister_after: spec.deregister_after.map(go_duration),
        },
    }
}

/// One entry of `GET /v1/health/service/<name>`. Every field is optional and `null`-tolerant:
/// Consul writes `null` for empty tags and metadata, and one odd entry must not lose the list.
#[derive(Debug, Deserialize)]
struct HealthEntry {
    #[serde(rename = "Node", default)]
    node: Option<NodeEntry>,
    #[serde(rename = "Service", default)]
    service: Option<ServiceEntry>,
}

#[derive(Debug, Deserialize)]
struct NodeEntry {
    #[serde(rename = "Address", default)]
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ServiceEntry {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Service", default)]
    service: Option<String>,
    #[serde(rename = "Address", default)]
    address: Option<String>,
    #[serde(rename = "Port", default)]
    port: Option<i64>,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "Meta", default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "Weights", default)]
    weights: Option<WeightsEntry>,
}

#[derive(Debug, Deserialize)]
struct WeightsEntry {
    #[serde(rename = "Passing", default)]
    passing: Option<i64>,
}

/// Why one `/v1/health/service` entry cannot be an [`Instance`]; such an entry is skipped with
/// a warning, so one odd entry does not lose the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The entry has no `Service` part.
    #[error("an entry without a Service")]
    NoService,
    /// Neither `Service.Address` nor `Node.Address` is set: nowhere to connect to.
    #[error("instance {id} has no address (neither Service nor Node)")]
    NoAddress {
        /// The instance's id.
        id: String,
    },
    /// The port is not one a socket can have.
    #[error("instance {id} has port {port}")]
    BadPort {
        /// The instance's id.
        id: String,
        /// The port the agent gave.
        port: i64,
    },
}

/// Maps one health entry to an [`Instance`] of `service` (the name asked for, used when the
/// entry has none); `Err` says why the entry is unusable.
fn to_instance(entry: HealthEntry, service: &str) -> Result<Instance, EntryError> {
    let s = entry.service.ok_or(EntryError::NoService)?;
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let name = nonempty(s.service).unwrap_or_else(|| service.to_string());
    // Consul defaults a service's ID to its name.
    let id = nonempty(s.id).unwrap_or_else(|| name.clone());
    let Some(address) =
        nonempty(s.address).or_else(|| entry.node.and_then(|n| nonempty(n.address)))
    else {
        return Err(EntryError::NoAddress { id });
    };
    let port = s.port.unwrap_or(0);
    let Ok(port) = u16::try_from(port) else {
        return Err(EntryError::BadPort { id, port });
    };
    let weight = s
        .weights
        .and_then(|w| w.passing)
        .unwrap_or(1)
        .clamp(1, i64::from(MAX_WEIGHT));
    Ok(Instance {
        id,
        service: name,
        address,
        port,
        tags: s.tags.unwrap_or_default(),
        metadata: s.meta.unwrap_or_default(),
        weight: u32::try_from(weight).unwrap_or(MAX_WEIGHT),
        state: Default::default(),
        maintenance: None,
    })
}

/// Decodes a `/v1/health/service` body; unusable entries are skipped with a warning.
fn parse_entries(body: &[u8], service: &str) -> Result<Vec<Instance>, serde_json::Error> {
    let entries: Vec<HealthEntry> = serde_json::from_slice(body)?;
    let mut instances = Vec::with_capacity(entries.len());
    for entry in entries {
        match to_instance(entry, service) {
            Ok(i) => instances.push(i),
            Err(e) => tracing::warn!(%service, "skipping {e}"),
        }
    }
    Ok(instances)
}

/// Consul's index rules for a blocking-query loop, as a pure state machine: feed it the index of
/// each answer, it says whether to emit a `Reset` and which index the next query blocks on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BlockingIndex {
    /// The index the next query sends (0: answer at once).
    query: u64,
    /// The index of the last `Reset` emitted (`None` before the first).
    emitted: Option<u64>,
}

impl BlockingIndex {
    /// The `index` parameter of the next query; 0 means a non-blocking query.
    pub(crate) fn query(&self) -> u64 {
        self.query
    }

    /// Takes the index of an answer; `Some(index)` when the answer must be emitted as a `Reset`.
    pub(crate) fn observe(&mut self, got: u64) -> Option<u64> {
        // An index below 1 would make every later query return at once.
        let got = got.max(1);
        // Backwards: the next query must not block on an index the agent may not reach for a
        // long time; 0 answers at once and the loop blocks from the index that answer brings.
        self.query = if got < self.query { 0 } else { got };
        if self.emitted == Some(got) {
            return None;
        }
        self.emitted = Some(got);
        Some(got)
    }
}

/// An agent's answer, read whole (every Consul answer is a small JSON document).
struct Reply {
    status: StatusCode,
    /// `X-Consul-Index`, when present and numeric.
    index: Option<u64>,
    body: Bytes,
}

impl Reply {
    /// The agent's message: the `error` field of a JSON body (Signpost), or the text (Consul).
    fn error_body(&self) -> ErrorBody {
        error_body(&self.body)
    }

    /// Whether the agent says the service or check is unknown: 404, or the 500 that Consul
    /// versions before 1.11 answer for an unknown TTL check.
    fn is_not_found(&self) -> bool {
        if self.status == StatusCode::NOT_FOUND {
            return true;
        }
        if self.status != StatusCode::INTERNAL_SERVER_ERROR {
            return false;
        }
        let text = String::from_utf8_lossy(&self.body);
        [
            "does not have associated TTL",
            "Unknown check ID",
            "Unknown service ID",
        ]
        .iter()
        .any(|m| text.contains(m))
    }

    /// Whether another agent might do better: a 5xx that is not a "not found", or a 429.
    fn is_retryable(&self) -> bool {
        (self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS)
            && !self.is_not_found()
    }

    /// Maps a non-2xx answer to a [`RegistryError`] about `what`: 403 (Consul's `Permission
    /// denied`, `ACL not found`) is [`RegistryError::Forbidden`].
    fn check(self, what: &str) -> Result<Reply, RegistryError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let body = self.error_body();
        Err(if self.status == StatusCode::FORBIDDEN {
            RegistryError::Forbidden {
                what: what.to_string(),
                body,
            }
        } else if self.is_not_found() {
            RegistryError::NotFound {
                what: what.to_string(),
                body,
            }
        } else {
            RegistryError::Rejected {
                what: what.to_string(),
                status: Some(self.status),
                body,
            }
        })
    }
}

type ListResult = Result<(u64, Vec<Instance>), RegistryError>;

impl Inner {
    /// Sends a request built by `build` for an agent's base URL and reads the answer, failing
    /// over to the next agent on a transport error, a timeout, a 429 or a 5xx.
    async fn send<F>(&self, build: F) -> Result<Reply, RegistryError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let build = &build;
        self.agents
            .call(|base| async move {
                let resp = match build(&self.http, base).send().await {
                    Ok(resp) => resp,
                    Err(e) => return Tried::Next(Cause::transport(&e)),
                };
                let status = resp.status();
                let index = resp
                    .headers()
                    .get(INDEX_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                match resp.bytes().await {
                    Ok(body) => {
                        let reply = Reply {
                            status,
                            index,
                            body,
                        };
                        if reply.is_retryable() {
                            Tried::Next(Cause::Status {
                                status,
                                body: reply.error_body(),
                            })
                        } else {
                            Tried::Answer(reply)
                        }
                    }
                    Err(e) => Tried::Next(Cause::transport(&e)),
                }
            })
            .await
    }

    /// `GET path` (with the datacenter, when set), as a blocking query on `index` when it is
    /// above 0: the answer's `X-Consul-Index` and body. `call` names the request in errors
    /// (`list users`), `what` its answer (`listing of users`).
    async fn blocking_get(
        &self,
        mut path: String,
        index: u64,
        call: &str,
        what: &str,
    ) -> Result<(u64, Bytes), RegistryError> {
        let mut separator = if path.contains('?') { '&' } else { '?' };
        if let Some(dc) = &self.options.datacenter {
            let _ = write!(path, "{separator}dc={}", encode(dc));
            separator = '&';
        }
        let mut timeout = self.options.request_timeout;
        if index > 0 {
            let wait = self.options.blocking_wait;
            let _ = write!(path, "{separator}index={index}&wait={}", go_duration(wait));
            // The agent answers after at most `wait` plus up to `wait / 16` of jitter.
            timeout += wait + wait / 16;
        }
        let reply = self
            .send(|c, base| c.get(format!("{base}{path}")).timeout(timeout))
            .await?
            .check(call)?;
        let index = reply
            .index
            .ok_or_else(|| RegistryError::malformed(what, NO_INDEX))?;
        Ok((index, reply.body))
    }

    /// `GET /v1/health/service/<service>?passing`, blocking on `index` when it is above 0.
    async fn health(&self, service: &str, index: u64) -> ListResult {
        let path = format!("/v1/health/service/{}?passing", encode(service));
        let what = format!("listing of {service}");
        let (index, body) = self
            .blocking_get(path, index, &format!("list {service}"), &what)
            .await?;
        let instances =
            parse_entries(&body, service).map_err(|e| RegistryError::malformed(what, e))?;
        Ok((index, instances))
    }

    /// `GET /v1/catalog/services`, blocking on `index` when it is above 0: the index and the
    /// services' names.
    async fn catalog(&self, index: u64) -> Result<(u64, BTreeSet<String>), RegistryError> {
        let what = "catalog of services";
        let (index, body) = self
            .blocking_get("/v1/catalog/services".into(), index, "list services", what)
            .await?;
        let services = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&body)
            .map_err(|e| RegistryError::malformed(what, e))?
            .into_keys()
            .collect();
        Ok((index, services))
    }

    /// A short `PUT` to `path`, with `body` as JSON when given.
    async fn put(
        &self,
        path: &str,
        body: Option<&RegisterBody<'_>>,
    ) -> Result<Reply, RegistryError> {
        let timeout = self.options.request_timeout;
        self.send(|c, base| {
            let request = c.put(format!("{base}{path}")).timeout(timeout);
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        })
        .await
    }
}

impl Registry for ConsulRegistry {
    fn register<'a>(
        &'a self,
        spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let body = register_body(spec);
            let i = &spec.instance;
            self.inner
                .put("/v1/agent/service/register", Some(&body))
                .await?
                .check(&format!("register {}/{}", i.service, i.id))?;
            Ok(())
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = format!("/v1/agent/service/deregister/{}", encode(id));
            let reply = self.inner.put(&path, None).await?;
            match reply.check(&format!("deregister {service}/{id}")) {
                // Already gone is what we wanted.
                Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
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
            let path = format!("/v1/agent/check/pass/{}", encode(&check_id(id)));
            self.inner
                .put(&path, None)
                .await?
                .check(&format!("heartbeat {service}/{id}"))?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, ListResult> {
        Box::pin(self.inner.health(service, 0))
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
        let service: Arc<str> = service.into();
        blocking_loop(
            self.inner.clone(),
            move |inner, index| {
                let service = service.clone();
                async move { inner.health(&service, index).await }
            },
            |index, instances| Update::Reset { index, instances },
        )
    }

    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>> {
        blocking_loop(
            self.inner.clone(),
            |inner, index| async move { inner.catalog(index).await },
            |index, services| ServiceSet { index, services },
        )
    }
}

/// Where one blocking-query loop is.
#[derive(Default)]
struct LoopState {
    /// Consul's index rules.
    index: BlockingIndex,
    /// When the previous query started, to keep queries `min_query_interval` apart.
    last_query: Option<Instant>,
    /// The stream has ended (after an error).
    done: bool,
}

/// A blocking-query loop, the one behind [`Registry::watch`] and [`Registry::watch_services`]:
/// `query` is sent with the index [`BlockingIndex`] says, at least `min_query_interval` after
/// the previous one; an answer with a new index is yielded as `emit(index, answer)`, an
/// unchanged one is queried again, and an error is yielded and ends the stream.
fn blocking_loop<T, R, Q, F>(
    inner: Arc<Inner>,
    query: Q,
    emit: fn(u64, T) -> R,
) -> BoxStream<'static, Result<R, RegistryError>>
where
    Q: Fn(Arc<Inner>, u64) -> F + Send + 'static,
    F: Future<Output = Result<(u64, T), RegistryError>> + Send,
    T: Send + 'static,
    R: Send + 'static,
{
    let state = (LoopState::default(), inner, query);
    futures::stream::unfold(state, move |(mut st, inner, query)| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(at) = st.last_query {
                tokio::time::sleep_until(at + inner.options.min_query_interval).await;
            }
            st.last_query = Some(Instant::now());
            match query(inner.clone(), st.index.query()).await {
                Ok((index, answer)) => {
                    if let Some(index) = st.index.observe(index) {
                        return Some((Ok(emit(index, answer)), (st, inner, query)));
                    }
                }
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), (st, inner, query)));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: serde_json::Value) -> HealthEntry {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn maps_a_health_entry_to_an_instance() {
        let e = entry(serde_json::json!({
            "Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {
                "ID": "web-1", "Service": "web", "Address": "10.0.0.5", "Port": 8080,
                "Tags": ["v1"], "Meta": {"zone": "a"}, "Weights": {"Passing": 7, "Warning": 1}
            },
            "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]
        }));
        assert_eq!(
            to_instance(e, "web").unwrap(),
            Instance {
                id: "web-1".into(),
                service: "web".into(),
                address: "10.0.0.5".into(),
                port: 8080,
                tags: vec!["v1".into()],
                metadata: [("zone".to_string(), "a".to_string())].into(),
                weight: 7,
                state: Default::default(),
                maintenance: None,
            }
        );
    }

    #[test]
    fn an_empty_service_address_means_the_node_address() {
        let e = entry(serde_json::json!({
            "Node": {"Address": "10.0.0.1"},
            "Service": {"ID": "web-1", "Service": "web", "Address": "", "Port": 80}
        }));
        assert_eq!(to_instance(e, "web").unwrap().address, "10.0.0.1");
        // No address anywhere: unusable.
        let e = entry(serde_json::json!({
            "Node": {"Address": ""},
            "Service": {"ID": "web-1", "Service": "web", "Port": 80}
        }));
        assert_eq!(
            to_instance(e, "web"),
            Err(EntryError::NoAddress { id: "web-1".into() })
        );
    }

    #[test]
    fn tolerates_nulls_and_missing_fields() {
        let e = entry(serde_json::json!({
            "Node": null,
            "Service": {"ID": null, "Service": "", "Address": "h", "Port": null,
                        "Tags": null, "Meta": null, "Weights": null}
        }));
        let i = to_instance(e, "web").unwrap();
        assert_eq!((i.id.as_str(), i.service.as_str()), ("web", "web"));
        assert_eq!((i.port, i.weight), (0, 1));
        assert!(i.tags.is_empty() && i.metadata.is_empty());
    }

    #[test]
    fn clamps_weights_and_refuses_bad_ports() {
        let with = |weight: i64, port: i64| {
            to_instance(
                entry(serde_json::json!({
                    "Service": {"ID": "a", "Address": "h", "Port": port, "Weights": {"Passing": weight}}
                })),
                "web",
            )
        };
        assert_eq!(with(0, 1).unwrap().weight, 1);
        assert_eq!(with(1_000_000, 1).unwrap().weight, 10_000);
        assert_eq!(with(250, 1).unwrap().weight, 250);
        assert_eq!(
            with(1, 70_000),
            Err(EntryError::BadPort {
                id: "a".into(),
                port: 70_000
            })
        );
        assert_eq!(
            with(1, -1),
            Err(EntryError::BadPort {
                id: "a".into(),
                port: -1
            })
        );
    }

    #[test]
    fn parses_a_listing_skipping_unusable_entries() {
        let body = br#"[
            {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "a", "Service": "web", "Port": 1}},
            {"Node": {"Address": "10.0.0.1"}},
            {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "b", "Service": "web", "Port": 2}}
        ]"#;
        let list = parse_entries(body, "web").unwrap();
        let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            to_instance(entry(serde_json::json!({"Node": {"Address": "h"}})), "web"),
            Err(EntryError::NoService)
        );
        assert!(parse_entries(b"{}", "web").is_err());
        assert!(parse_entries(b"[]", "web").unwrap().is_empty());
    }

    #[test]
    fn blocking_index_emits_on_change_only() {
        let mut b = BlockingIndex::default();
        assert_eq!(b.query(), 0, "the first query does not block");
        assert_eq!(b.observe(5), Some(5), "the first answer is always emitted");
        assert_eq!(b.query(), 5);
        // The wait ran out: nothing new, block again on the same index.
        assert_eq!(b.observe(5), None);
        assert_eq!(b.query(), 5);
        assert_eq!(b.observe(9), Some(9));
        assert_eq!(b.query(), 9);
    }

    #[test]
    fn blocking_index_resets_to_zero_when_it_goes_backwards() {
        let mut b = BlockingIndex::default();
        b.observe(100);
        // The agent lost its state (or another one answered): emit its list, re-query at once.
        assert_eq!(b.observe(3), Some(3));
        assert_eq!(b.query(), 0);
        // The immediate answer brings the same index: nothing new; block on it from now on.
        assert_eq!(b.observe(3), None);
        assert_eq!(b.query(), 3);
        assert_eq!(b.observe(4), Some(4));
    }

    #[test]
    fn blocking_index_never_blocks_on_zero() {
        let mut b = BlockingIndex::default();
        assert_eq!(b.observe(0), Some(1));
        assert_eq!(
            b.query(),
            1,
            "an index of 0 would make every query return at once"
        );
        assert_eq!(b.observe(0), None);
        assert_eq!(b.query(), 1);
    }

    #[test]
    fn registration_body_matches_the_consul_api() {
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
            deregister_after: Some(Duration::from_secs(90)),
            check: None,
        };
        assert_eq!(
            serde_json::to_value(register_body(&spec)).unwrap(),
            serde_json::json!({
                "ID": "u-1", "Name": "users", "Address": "10.0.0.7", "Port": 8080,
                "Tags": ["v2"], "Meta": {"zone": "a"},
                "Weights": {"Passing": 100, "Warning": 1},
                "Check": {
                    "CheckID": "service:u-1", "TTL": "10s", "Status": "passing",
                    "DeregisterCriticalServiceAfter": "90s"
                }
            })
        );
        let spec = RegistrationSpec {
            ttl: Duration::from_millis(1500),
            deregister_after: None,
            check: None,
            ..spec
        };
        let body = serde_json::to_value(register_body(&spec)).unwrap();
        assert_eq!(body["Check"]["TTL"], "1500ms");
        assert!(body["Check"]
            .get("DeregisterCriticalServiceAfter")
            .is_none());
        // An agent-run check replaces the TTL check and starts critical, as in Consul.
        let spec = RegistrationSpec {
            check: Some(AgentCheck {
                target: CheckTarget::Http("http://10.0.0.7:8080/health".into()),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(3),
            }),
            deregister_after: Some(Duration::from_secs(60)),
            ..spec
        };
        assert_eq!(
            serde_json::to_value(register_body(&spec)).unwrap()["Check"],
            serde_json::json!({
                "CheckID": "service:u-1", "HTTP": "http://10.0.0.7:8080/health",
                "Interval": "10s", "Timeout": "3s", "DeregisterCriticalServiceAfter": "1m"
            })
        );
    }

    #[test]
    fn formats_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(300)), "5m");
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn recognises_not_found_answers_of_every_consul_version() {
        let reply = |status: u16, body: &'static str| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            index: None,
            body: Bytes::from_static(body.as_bytes()),
        };
        assert!(reply(404, "Unknown check ID").is_not_found());
        let old = reply(
            500,
            "CheckID \"service:web-1\" does not have associated TTL",
        );
        assert!(old.is_not_found() && !old.is_retryable());
        assert!(matches!(
            old.check("hb"),
            Err(RegistryError::NotFound { .. })
        ));
        let outage = reply(500, "rpc error: No cluster leader");
        assert!(!outage.is_not_found() && outage.is_retryable());
        assert!(reply(429, "slow down").is_retryable());
        assert!(matches!(
            reply(403, "Permission denied").check("x"),
            Err(RegistryError::Forbidden { body, .. })
                if body.error == "Permission denied"
        ));
        // Signpost's Consul face answers errors as JSON.
        assert_eq!(
            reply(400, r#"{"error":"Name is required","field":"Name"}"#).error_body(),
            ErrorBody {
                error: "Name is required".into(),
                field: Some("Name".into())
            }
        );
    }

    #[test]
    fn normalizes_addresses() {
        let r = ConsulRegistry::new(["127.0.0.1:1", "http://h:2/", " https://h:3 "]).unwrap();
        assert_eq!(
            r.addrs(),
            ["http://127.0.0.1:1", "http://h:2", "https://h:3"]
        );
    }
}
