//! [`EtcdRegistry`]: etcd v3 as a [`Registry`], through the `etcd-client` crate.
//!
//! # Data model
//! An instance is the JSON of an [`Instance`] stored at `<prefix><service>/<id>` (prefix
//! `/services/` by default) and attached to a lease whose TTL is the registration's TTL.
//! [`Registry::heartbeat`] keeps the lease alive; when the lease is gone (expired, revoked, etcd
//! lost it) the heartbeat answers [`RegistryError::NotFound`], so the caller registers again.
//! A key whose lease expires is deleted by etcd, so every key present is a live instance.
//!
//! # Watching
//! A watch reads the prefix (emitting [`Update::Reset`] with the read's revision as index), then
//! watches the prefix from the next revision: a put is an [`Update::Add`] (or [`Update::Update`]
//! for a key already seen), a delete an [`Update::Remove`]. If the revision the watch wants has
//! been compacted away, it reads the prefix again and emits a fresh `Reset`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions, WatchStream};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use super::{
    Cause, ClientTls, ConfigError, RegistrationSpec, Registry, RegistryError, ServiceSet,
    TransportKind,
};
use crate::instance::{Instance, Update};

/// The connection settings every etcd client here uses. `with_timeout` bounds each call until
/// its response starts, not a watch's stream; HTTP/2 keep-alive pings notice a silently dead
/// connection under an idle watch.
fn connect_options() -> etcd_client::ConnectOptions {
    use std::time::Duration;
    etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
}

/// The gRPC transport's TLS settings from `tls`'s files, each checked (and its error named)
/// by `signpost_tls` first.
fn tls_options(tls: &ClientTls) -> Result<etcd_client::TlsOptions, RegistryError> {
    const SYSTEM: &str = "etcd";
    let bad = |source| {
        RegistryError::Config(ConfigError::Tls {
            system: SYSTEM,
            source,
        })
    };
    if tls.skip_verify {
        return Err(RegistryError::Config(ConfigError::Unsupported {
            system: SYSTEM,
            what: "skipping certificate verification",
        }));
    }
    let pem = |path: &std::path::Path| std::fs::read(path).unwrap_or_default();
    let mut options = etcd_client::TlsOptions::new();
    match &tls.ca_file {
        Some(ca) => {
            signpost_tls::load_certs(ca).map_err(bad)?;
            options = options.ca_certificate(etcd_client::Certificate::from_pem(pem(ca)));
        }
        None => options = options.with_native_roots(),
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            signpost_tls::load_certs(cert).map_err(bad)?;
            signpost_tls::load_key(key).map_err(bad)?;
            options = options.identity(etcd_client::Identity::from_pem(pem(cert), pem(key)));
        }
        (None, None) => {}
        _ => return Err(bad(signpost_tls::TlsError::HalfIdentity)),
    }
    Ok(options)
}

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/services/";

/// A [`Registry`] backed by etcd v3.
///
/// Cheap to clone; clones share the connection and the lease table. Leases are remembered in
/// this process only: a heartbeat for an instance registered by another process (or before a
/// restart) answers [`RegistryError::NotFound`], so its owner registers it again on a new lease.
///
/// ```no_run
/// use std::sync::Arc;
/// use signpost_client::registry::{Registry, etcd::EtcdRegistry};
///
/// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
/// let registry = EtcdRegistry::connect(["http://127.0.0.1:2379"]).await?
///     .with_prefix("/prod/services/");
/// let (revision, instances) = registry.list("users").await?;
/// println!("users at revision {revision}: {instances:?}");
/// let registry: Arc<dyn Registry> = Arc::new(registry);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    /// The etcd connection; `etcd_client::Client` is a cheap handle, cloned per call.
    client: Client,
    /// Keys live at `<prefix><service>/<id>`.
    prefix: Arc<str>,
    /// The lease of every instance this process registered, by (service, id): heartbeats renew
    /// it, deregistration revokes it.
    leases: Arc<Mutex<HashMap<(String, String), i64>>>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// gRPC status codes this module tells apart (`tonic` is not a direct dependency).
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_NOT_FOUND: i32 = 5;
const GRPC_FAILED_PRECONDITION: i32 = 9;

/// etcd is out of reach, for `kind` of reason.
fn unavailable(kind: TransportKind, detail: String) -> RegistryError {
    RegistryError::Unavailable {
        agent: "etcd".to_string(),
        cause: Cause::Transport { kind, detail },
    }
}

/// Maps an etcd client error to a [`RegistryError`].
fn etcd_error(what: &str, e: etcd_client::Error) -> RegistryError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => match i32::from(status.code()) {
            GRPC_INVALID_ARGUMENT | GRPC_FAILED_PRECONDITION => {
                RegistryError::invalid(what, status.message())
            }
            GRPC_NOT_FOUND => RegistryError::NotFound {
                what: what.to_string(),
                body: RegistryError::body(status.message()),
            },
            _ => unavailable(TransportKind::Other, format!("{what}: {status}")),
        },
        E::TransportError(_) => unavailable(TransportKind::Connect, format!("{what}: {e}")),
        E::IoError(ref io) => {
            let kind = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => TransportKind::Refused,
                std::io::ErrorKind::ConnectionReset => TransportKind::Reset,
                std::io::ErrorKind::TimedOut => TransportKind::TimedOut,
                _ => TransportKind::Other,
            };
            unavailable(kind, format!("{what}: {e}"))
        }
        other => RegistryError::malformed(what, other),
    }
}

impl EtcdRegistry {
    /// Connects to etcd at `endpoints` (`http://host:port`), with the default prefix.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
    /// use signpost_client::registry::etcd::EtcdRegistry;
    /// let registry = EtcdRegistry::connect(["http://127.0.0.1:2379"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect<E, S>(endpoints: S) -> Result<Self, RegistryError>
    where
        E: AsRef<str>,
        S: AsRef<[E]>,
    {
        Self::connect_with(endpoints, connect_options()).await
    }

    /// Connects to etcd at `https://` `endpoints` over TLS: the server's certificate is checked
    /// against `tls.ca_file` (else the system's roots), and `tls.cert_file` / `tls.key_file`
    /// are presented when etcd requires client certificates (`--client-cert-auth`).
    /// `skip_verify` is refused: etcd's gRPC transport always verifies.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
    /// use signpost_client::registry::{etcd::EtcdRegistry, ClientTls};
    /// let tls = ClientTls { ca_file: Some("ca.pem".into()), ..ClientTls::default() };
    /// let registry = EtcdRegistry::connect_tls(["https://127.0.0.1:2379"], &tls).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_tls<E, S>(endpoints: S, tls: &ClientTls) -> Result<Self, RegistryError>
    where
        E: AsRef<str>,
        S: AsRef<[E]>,
    {
        let options = connect_options().with_tls(tls_options(tls)?);
        Self::connect_with(endpoints, options).await
    }

    async fn connect_with<E, S>(
        endpoints: S,
        options: etcd_client::ConnectOptions,
    ) -> Result<Self, RegistryError>
    where
        E: AsRef<str>,
        S: AsRef<[E]>,
    {
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| etcd_error("connect to etcd", e))?;
        Ok(Self::from_client(client))
    }

    /// Wraps an already configured client (TLS, auth, ...), with the default prefix.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use signpost_client::registry::etcd::EtcdRegistry;
    /// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
    /// let registry = EtcdRegistry::from_client(client);
    /// # Ok(()) }
    /// ```
    pub fn from_client(client: Client) -> Self {
        EtcdRegistry {
            client,
            prefix: Arc::from(DEFAULT_PREFIX),
            leases: Arc::default(),
        }
    }

    /// Uses `prefix` instead of [`DEFAULT_PREFIX`]; a trailing `/` is added if missing.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), signpost_client::registry::RegistryError> {
    /// use signpost_client::registry::etcd::EtcdRegistry;
    /// let registry = EtcdRegistry::connect(["http://127.0.0.1:2379"]).await?.with_prefix("/staging");
    /// assert_eq!(registry.prefix(), "/staging/");
    /// # Ok(()) }
    /// ```
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        self.prefix = Arc::from(prefix);
        self
    }

    /// The key prefix instances live under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The underlying etcd client (for tests and operations the trait does not cover).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn service_prefix(&self, service: &str) -> String {
        format!("{}{service}/", self.prefix)
    }

    fn key(&self, service: &str, id: &str) -> String {
        format!("{}{service}/{id}", self.prefix)
    }

    fn lease_of(&self, service: &str, id: &str) -> Option<i64> {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(service.to_string(), id.to_string()))
            .copied()
    }

    fn set_lease(&self, service: &str, id: &str, lease: Option<i64>) -> Option<i64> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_string(), id.to_string());
        match lease {
            Some(l) => leases.insert(key, l),
            None => leases.remove(&key),
        }
    }
}

/// Lease TTL in whole seconds (etcd's unit), rounded up, at least 1.
fn ttl_secs(ttl: std::time::Duration) -> i64 {
    let ms = ttl.as_millis().max(1);
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// A listed or watched value that is not an [`Instance`]'s JSON; such a key is skipped with a
/// warning, so one stray key under the prefix does not lose the list.
#[derive(Debug, thiserror::Error)]
#[error("bad instance at {key}: {source}")]
pub struct DecodeError {
    /// The key holding the value.
    pub key: String,
    /// Why its value is not an instance.
    #[source]
    pub source: serde_json::Error,
}

/// Decodes a listed or watched value; the key's last segment is the id when the value has none.
fn decode(service_prefix: &str, key: &[u8], value: &[u8]) -> Result<Instance, DecodeError> {
    let key = String::from_utf8_lossy(key);
    let id = key.strip_prefix(service_prefix).unwrap_or(&key).to_string();
    let mut instance: Instance = serde_json::from_slice(value).map_err(|source| DecodeError {
        key: key.to_string(),
        source,
    })?;
    if instance.id.is_empty() {
        instance.id = id;
    }
    Ok(instance)
}

impl Registry for EtcdRegistry {
    fn register<'a>(
        &'a self,
        spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            if spec.check.is_some() {
                return Err(RegistryError::invalid(
                    "check",
                    "etcd cannot run HTTP, TCP or gRPC checks; register with a TTL",
                ));
            }
            let i = &spec.instance;
            let value = serde_json::to_vec(i)
                .map_err(|e| RegistryError::malformed("instance to register", e))?;
            let mut client = self.client.clone();
            let lease = client
                .lease_grant(ttl_secs(spec.ttl), None)
                .await
                .map_err(|e| etcd_error("grant lease", e))?
                .id();
            client
                .put(
                    self.key(&i.service, &i.id),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(|e| etcd_error("put instance", e))?;
            // The key now hangs on the new lease; an older one (re-registration) can go.
            if let Some(old) = self.set_lease(&i.service, &i.id, Some(lease)) {
                if old != lease {
                    let _ = client.lease_revoke(old).await;
                }
            }
            Ok(())
        })
    }

    fn deregister<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            client
                .delete(self.key(service, id), None)
                .await
                .map_err(|e| etcd_error("delete instance", e))?;
            if let Some(lease) = self.set_lease(service, id, None) {
                // Best effort: the key is gone already; an unrevoked lease just expires.
                if let Err(e) = client.lease_revoke(lease).await {
                    tracing::debug!("revoking lease {lease:x} of {service}/{id}: {e}");
                }
            }
            Ok(())
        })
    }

    fn heartbeat<'a>(
        &'a self,
        service: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let Some(lease) = self.lease_of(service, id) else {
                return Err(RegistryError::NotFound {
                    what: format!("{service}/{id}"),
                    body: RegistryError::body("no lease in this process"),
                });
            };
            let mut client = self.client.clone();
            // One keep-alive round trip: etcd answers TTL 0 (an error here) for a lease it no
            // longer has.
            match client.lease_keep_alive(lease).await {
                Ok(_) => Ok(()),
                Err(etcd_client::Error::LeaseKeepAliveError(e)) => {
                    self.set_lease(service, id, None);
                    Err(RegistryError::NotFound {
                        what: format!("{service}/{id}"),
                        body: RegistryError::body(format!("lease {lease:x}: {e}")),
                    })
                }
                Err(e) => Err(etcd_error("keep lease alive", e)),
            }
        })
    }

    fn list<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>> {
        Box::pin(async move {
            let (revision, instances) = list(&self.client, &self.service_prefix(service)).await?;
            Ok((revision, instances))
        })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
        let cursor = Cursor::new(self.client.clone(), self.service_prefix(service));
        futures::stream::unfold(cursor, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
        .boxed()
    }

    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>> {
        let cursor = ServicesCursor {
            instances: Cursor::new(self.client.clone(), self.prefix.to_string()),
            members: BTreeMap::new(),
            last: None,
        };
        futures::stream::unfold(cursor, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
        .boxed()
    }
}

/// The state of one [`EtcdRegistry::watch_services`](Registry::watch_services) stream: a watch
/// of every instance under the prefix, folded into the set of services that have one.
struct ServicesCursor {
    /// The watch of every instance (ids relative to the prefix: `<service>/<id>`).
    instances: Cursor,
    /// The instance ids of each service that has any.
    members: BTreeMap<String, HashSet<String>>,
    /// The set last yielded.
    last: Option<BTreeSet<String>>,
}

impl ServicesCursor {
    async fn next(&mut self) -> Option<Result<ServiceSet, RegistryError>> {
        loop {
            let update = match self.instances.next().await? {
                Ok(update) => update,
                Err(e) => return Some(Err(e)),
            };
            let index = update.index();
            let reset = matches!(update, Update::Reset { .. });
            match update {
                Update::Reset { instances, .. } => {
                    self.members.clear();
                    for i in instances {
                        self.members.entry(i.service).or_default().insert(i.id);
                    }
                }
                Update::Add { instance, .. } | Update::Update { instance, .. } => {
                    self.members
                        .entry(instance.service)
                        .or_default()
                        .insert(instance.id);
                }
                Update::Remove { id, .. } => {
                    // Removals name the key below the prefix: `<service>/<id>`.
                    if let Some((service, id)) = id.split_once('/') {
                        if let Some(ids) = self.members.get_mut(service) {
                            ids.remove(id);
                            if ids.is_empty() {
                                self.members.remove(service);
                            }
                        }
                    }
                }
            }
            let services: BTreeSet<String> = self.members.keys().cloned().collect();
            if reset || self.last.as_ref() != Some(&services) {
                self.last = Some(services.clone());
                return Some(Ok(ServiceSet { index, services }));
            }
        }
    }
}

/// Reads every instance under `prefix`: the read's revision and the decodable instances.
async fn list(client: &Client, prefix: &str) -> Result<(u64, Vec<Instance>), RegistryError> {
    let (revision, keyed) = list_keyed(client, prefix).await?;
    Ok((revision, keyed.into_iter().map(|(_, i)| i).collect()))
}

/// [`list`], with each instance's key below `prefix` (what watch events name it by).
async fn list_keyed(
    client: &Client,
    prefix: &str,
) -> Result<(u64, Vec<(String, Instance)>), RegistryError> {
    let mut client = client.clone();
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| etcd_error("list instances", e))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut instances = Vec::with_capacity(resp.kvs().len());
    for kv in resp.kvs() {
        match decode(prefix, kv.key(), kv.value()) {
            Ok(i) => {
                let key = String::from_utf8_lossy(kv.key());
                let below = key.strip_prefix(prefix).unwrap_or(&key).to_string();
                instances.push((below, i));
            }
            Err(e) => tracing::warn!("skipping {e}"),
        }
    }
    Ok((u64::try_from(revision).unwrap_or(0), instances))
}

/// Where an etcd watch stream is.
enum State {
    /// Read the prefix and emit a `Reset`.
    List,
    /// Open a watch from this revision.
    Open(i64),
    /// Reading watch responses.
    Watching(Box<WatchStream>),
    /// Ended after an error.
    Done,
}

/// The state of one [`EtcdRegistry::watch`] stream.
struct Cursor {
    /// The etcd connection.
    client: Client,
    /// `<prefix><service>/`.
    prefix: String,
    /// Where the stream is.
    state: State,
    /// Ids currently present, to tell an `Add` from an `Update` and skip unknown removals.
    known: HashSet<String>,
    /// Updates decoded from a response but not yet handed out.
    pending: VecDeque<Update>,
}

impl Cursor {
    /// A watch of every instance under `prefix`, starting with a listing.
    fn new(client: Client, prefix: String) -> Self {
        Cursor {
            client,
            prefix,
            state: State::List,
            known: HashSet::new(),
            pending: VecDeque::new(),
        }
    }

    async fn next(&mut self) -> Option<Result<Update, RegistryError>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
            }
            match &mut self.state {
                State::Done => return None,
                State::List => match list_keyed(&self.client, &self.prefix).await {
                    Ok((revision, keyed)) => {
                        let (known, instances) = keyed.into_iter().unzip();
                        self.known = known;
                        self.state = State::Open(i64::try_from(revision).unwrap_or(0) + 1);
                        return Some(Ok(Update::Reset {
                            index: revision,
                            instances,
                        }));
                    }
                    Err(e) => return self.fail(e),
                },
                State::Open(from) => {
                    let options = WatchOptions::new().with_prefix().with_start_revision(*from);
                    let mut client = self.client.clone();
                    match client.watch(self.prefix.as_str(), Some(options)).await {
                        Ok(stream) => self.state = State::Watching(Box::new(stream)),
                        Err(e) => return self.fail(etcd_error("watch", e)),
                    }
                }
                State::Watching(stream) => match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                tracing::info!(
                                    prefix = %self.prefix,
                                    compacted = resp.compact_revision(),
                                    "etcd watch fell behind a compaction; listing again"
                                );
                                self.state = State::List;
                                continue;
                            }
                            let reason = resp.cancel_reason().to_string();
                            return self.fail(unavailable(
                                TransportKind::Other,
                                format!("etcd cancelled the watch: {reason}"),
                            ));
                        }
                        for event in resp.events() {
                            let Some(kv) = event.kv() else { continue };
                            let index = u64::try_from(kv.mod_revision()).unwrap_or(0);
                            let key = String::from_utf8_lossy(kv.key());
                            let Some(id) = key.strip_prefix(self.prefix.as_str()) else {
                                continue;
                            };
                            let id = id.to_string();
                            match event.event_type() {
                                EventType::Put => {
                                    match decode(&self.prefix, kv.key(), kv.value()) {
                                        Ok(instance) => {
                                            let update = if self.known.insert(id) {
                                                Update::Add { index, instance }
                                            } else {
                                                Update::Update { index, instance }
                                            };
                                            self.pending.push_back(update);
                                        }
                                        Err(e) => tracing::warn!("skipping {e}"),
                                    }
                                }
                                EventType::Delete => {
                                    if self.known.remove(&id) {
                                        self.pending.push_back(Update::Remove { index, id });
                                    }
                                }
                            }
                        }
                    }
                    Ok(None) => {
                        return self.fail(RegistryError::Unavailable {
                            agent: "etcd".to_string(),
                            cause: Cause::Closed,
                        })
                    }
                    Err(e) => return self.fail(etcd_error("watch", e)),
                },
            }
        }
    }

    fn fail(&mut self, e: RegistryError) -> Option<Result<Update, RegistryError>> {
        self.state = State::Done;
        Some(Err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }

    #[test]
    fn decodes_values_and_falls_back_to_the_key_for_the_id() {
        let v = br#"{"id":"","service":"s","address":"a","port":1}"#;
        let i = decode("/services/s/", b"/services/s/x1", v).unwrap();
        assert_eq!(i.id, "x1");
        assert_eq!(i.weight, 100);
        let e = decode("/services/s/", b"/services/s/x1", b"nope").unwrap_err();
        assert_eq!(e.key, "/services/s/x1");
    }
}
