//! Registries behind one trait.
//!
//! - [`signpost::SignpostRegistry`]: the Signpost agent's native HTTP API (SSE watch, blocking
//!   query fallback, failover between agents).
//! - [`etcd::EtcdRegistry`]: etcd v3, instances as leased keys under `/services/`.
//! - [`consul::ConsulRegistry`]: any Consul-compatible agent (Consul, or Signpost's Consul face),
//!   watched with blocking queries.
//! - [`dns::DnsRegistry`]: the platform's DNS (a Kubernetes headless service's SRV or A/AAAA
//!   records, or Signpost's own DNS interface), re-resolved on the records' TTL. Watch-only.
//! - [`env::EnvRegistry`]: the `<NAME>_SERVICE_HOST`/`_PORT` variables Kubernetes injects.
//!   Watch-only.
//! - [`RegistryError`] (in `error.rs`): why a call failed, with a typed [`Cause`] for
//!   unavailability; shared by every backend.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::instance::{Instance, Update};

pub(crate) mod agents;
pub mod consul;
pub mod dns;
pub mod env;
pub(crate) mod error;
pub mod etcd;
pub mod signpost;

pub use error::{AnswerError, Cause, ConfigError, RegistryError, TransportKind};
pub use signpost_tls::ClientTls;

/// What an instance registers with.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationSpec {
    /// The instance to register (its `service` and `id` name it in the registry).
    pub instance: Instance,
    /// Heartbeat TTL; the registry marks the instance unhealthy (or drops it) when it lapses.
    pub ttl: Duration,
    /// Remove the instance once it has been unhealthy this long (registries that support it).
    pub deregister_after: Option<Duration>,
    /// A check the agent runs itself instead of the TTL check (no heartbeats are sent then);
    /// `None` registers the TTL check. Signpost and Consul run them; etcd refuses them.
    pub check: Option<AgentCheck>,
}

/// A health check the agent runs against the instance (HTTP, TCP or gRPC), as the agent's
/// registration API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCheck {
    /// What the agent probes.
    pub target: CheckTarget,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
}

/// What an [`AgentCheck`] probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// `GET` of this URL: 2xx passing, 429 warning, anything else critical.
    Http(String),
    /// A TCP connection to this `host:port`.
    Tcp(String),
    /// `grpc.health.v1.Health/Check` at this `host:port` (or `host:port/service`).
    Grpc(String),
}

/// The services a registry knows, as of one index: what [`Registry::watch_services`] yields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSet {
    /// The registry index this set reflects (Consul's `X-Consul-Index`, etcd's revision).
    pub index: u64,
    /// The services' names.
    pub services: BTreeSet<String>,
}

/// A service registry: where instances register and where clients find them.
///
/// Object-safe, so discovery and registration hold an `Arc<dyn Registry>` and any backend plugs
/// in. Indexes are per backend but always grow with changes: Signpost's per-service Raft index,
/// etcd's revision.
///
/// Most code does not call a registry directly but goes through
/// [`crate::discovery::Discovery`] (reading) and [`crate::registration::Registration`]
/// (self-registration). Used directly:
///
/// ```no_run
/// use futures::StreamExt;
/// use signpost_client::registry::{Registry, signpost::SignpostRegistry};
/// use signpost_client::Update;
///
/// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
/// let registry = SignpostRegistry::new(["127.0.0.1:8500"])?;
/// let (index, instances) = registry.list("users").await?;
/// let mut changes = registry.watch("users");
/// while let Some(update) = changes.next().await {
///     match update? {
///         Update::Reset { instances, .. } => println!("{} instances", instances.len()),
///         Update::Add { instance, .. } | Update::Update { instance, .. } => println!("{}", instance.id),
///         Update::Remove { id, .. } => println!("{id} left"),
///     }
/// }
/// # Ok(()) }
/// ```
pub trait Registry: Send + Sync + 'static {
    /// Registers (or re-registers) an instance with a TTL.
    fn register<'a>(
        &'a self,
        spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Removes an instance.
    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Renews an instance's TTL. `NotFound` tells the caller to register again.
    fn heartbeat<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>>;
    /// Announces an instance's lifecycle state (`starting`, `up`, `stopping`) so clients stop
    /// choosing it before it leaves. Registries without lifecycle states accept it and do
    /// nothing (the default), so a graceful shutdown there is a plain deregistration.
    fn set_state<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
        state: crate::instance::Lifecycle,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let _ = (service, id, state);
        Box::pin(async { Ok(()) })
    }
    /// The healthy instances of `service` and the index they reflect.
    fn list<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>>;
    /// Changes to `service`'s healthy instances, starting with a `Reset`. The stream ends or
    /// yields an error when the connection is lost; the caller reconnects.
    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>>;
    /// The set of services the registry knows: the current set first, then a new set whenever
    /// it may have changed (a set equal to the last one can come again). Fails over between
    /// agents like every call; the stream ends or yields an error when the connection is lost,
    /// and the caller reconnects ([`crate::discovery::Discovery::catalog`] does, with backoff).
    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>>;
}
