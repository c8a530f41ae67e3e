//! Self-registration: register an instance with a TTL, heartbeat it in the background, and
//! deregister it gracefully, or let the agent check it.
//!
//! With [`RegistrationBuilder::http_check`], [`RegistrationBuilder::tcp_check`] or
//! [`RegistrationBuilder::grpc_check`] the agent runs the check itself (the instance starts
//! critical until the first probe passes) and no heartbeat loop runs; deregistration works the
//! same.
//!
//! [`Registration::builder`] describes the instance; [`RegistrationBuilder::register`] registers
//! it and returns a [`RegistrationHandle`] whose background task heartbeats every `ttl / 3`:
//! - a heartbeat answered [`RegistryError::NotFound`] (the agent restarted without its state,
//!   the TTL lapsed and the instance was removed, an etcd lease expired) registers again;
//! - any other failure is logged and retried with backoff (capped at `ttl / 3`);
//! - [`RegistrationHandle::deregister`] stops heartbeating and deregisters;
//!   [`RegistrationHandle::deregister_on`] does so once a shutdown future resolves; dropping
//!   the handle deregisters in the background (best effort).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backoff::{Backoff, Jitter};
use crate::instance::{Instance, Lifecycle};
use crate::registry::{AgentCheck, CheckTarget, RegistrationSpec, Registry, RegistryError};

/// The TTL used when none is set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Entry point of self-registration; see [`Registration::builder`].
#[derive(Debug)]
pub struct Registration;

impl Registration {
    /// Describes an instance of `service` reachable at `address:port`. The id defaults to
    /// `<service>-<address>-<port>` (the agent's own default), the TTL to [`DEFAULT_TTL`].
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use signpost_client::registration::Registration;
    /// use signpost_client::registry::signpost::SignpostRegistry;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = Arc::new(SignpostRegistry::new(["127.0.0.1:8500"])?);
    /// let handle = Registration::builder("user-service", "10.0.0.7", 8080)
    ///     .tags(["v2"])
    ///     .metadata([("zone", "eu-west-1a")])
    ///     .ttl(Duration::from_secs(10))
    ///     .deregister_after(Duration::from_secs(60))
    ///     .register(registry)
    ///     .await?;
    /// println!("registered as {}", handle.id());
    /// // ... serve ...
    /// handle.deregister().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(
        service: impl Into<String>,
        address: impl Into<String>,
        port: u16,
    ) -> RegistrationBuilder {
        RegistrationBuilder {
            service: service.into(),
            address: address.into(),
            port,
            id: None,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            weight: 100,
            ttl: DEFAULT_TTL,
            deregister_after: None,
            check: None,
            starting: false,
            drain: Duration::ZERO,
        }
    }
}

/// Describes an instance to register; made by [`Registration::builder`]. The example of
/// [`RegistrationBuilder::spec`] shows every setter.
#[derive(Debug, Clone)]
#[must_use = "nothing is registered until `register` is called"]
pub struct RegistrationBuilder {
    /// The service the instance belongs to.
    service: String,
    /// Where clients reach it.
    address: String,
    /// Its port.
    port: u16,
    /// Explicit id; `None` means `<service>-<address>-<port>`.
    id: Option<String>,
    /// Tags (e.g. versions, regions).
    tags: Vec<String>,
    /// Free-form metadata (e.g. the zone).
    metadata: BTreeMap<String, String>,
    /// Relative weight for weighted balancers.
    weight: u32,
    /// Heartbeat TTL.
    ttl: Duration,
    /// Remove the instance after it has been unhealthy this long.
    deregister_after: Option<Duration>,
    /// A check the agent runs instead of heartbeats.
    check: Option<AgentCheck>,
    /// Register as `starting` (out of discovery) until [`RegistrationHandle::ready`].
    starting: bool,
    /// How long a graceful deregistration waits between announcing `stopping` and leaving.
    drain: Duration,
}

impl RegistrationBuilder {
    /// Sets the instance id (default `<service>-<address>-<port>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Adds metadata entries.
    pub fn metadata<I, K, V>(mut self, entries: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.metadata
            .extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets the weight (1..=10000, default 100).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the heartbeat TTL (default 10 s); the handle heartbeats every `ttl / 3`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Asks the registry to remove the instance once it has been unhealthy this long (a crashed
    /// process then disappears instead of lingering as critical).
    pub fn deregister_after(mut self, after: Duration) -> Self {
        self.deregister_after = Some(after);
        self
    }

    /// Asks the agent to `GET` `url` every `interval` (each probe allowed `timeout`) instead of
    /// heartbeating: 2xx is passing, 429 warning, anything else critical. No heartbeat loop
    /// runs. The notes' example: `.http_check(url, 10 s, 3 s).deregister_after(1 min)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use signpost_client::registration::Registration;
    /// use signpost_client::registry::CheckTarget;
    ///
    /// let spec = Registration::builder("users", "10.0.0.7", 8080)
    ///     .http_check("http://10.0.0.7:8080/health", Duration::from_secs(10), Duration::from_secs(3))
    ///     .deregister_after(Duration::from_secs(60))
    ///     .spec();
    /// let check = spec.check.unwrap();
    /// assert_eq!(check.target, CheckTarget::Http("http://10.0.0.7:8080/health".into()));
    /// assert_eq!((check.interval, check.timeout), (Duration::from_secs(10), Duration::from_secs(3)));
    /// ```
    pub fn http_check(self, url: impl Into<String>, interval: Duration, timeout: Duration) -> Self {
        self.agent_check(CheckTarget::Http(url.into()), interval, timeout)
    }

    /// Asks the agent to connect to `addr` (`host:port`) every `interval` instead of
    /// heartbeating; see [`RegistrationBuilder::http_check`].
    pub fn tcp_check(self, addr: impl Into<String>, interval: Duration, timeout: Duration) -> Self {
        self.agent_check(CheckTarget::Tcp(addr.into()), interval, timeout)
    }

    /// Asks the agent to call `grpc.health.v1.Health/Check` at `target` (`host:port`, or
    /// `host:port/service`) every `interval` instead of heartbeating; see
    /// [`RegistrationBuilder::http_check`].
    pub fn grpc_check(
        self,
        target: impl Into<String>,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        self.agent_check(CheckTarget::Grpc(target.into()), interval, timeout)
    }

    /// Any agent-run check.
    pub fn agent_check(
        mut self,
        target: CheckTarget,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        self.check = Some(AgentCheck {
            target,
            interval,
            timeout,
        });
        self
    }

    /// Registers the instance as `starting`: registered, but not discovered until
    /// [`RegistrationHandle::ready`] announces it `up` (e.g. once caches are warm).
    pub fn starting(mut self) -> Self {
        self.starting = true;
        self
    }

    /// Sets the drain time (default zero): a graceful deregistration first announces
    /// `stopping`, so clients stop choosing the instance, keeps heartbeating for this long
    /// while requests in flight finish, then deregisters. Zero deregisters at once, as
    /// before lifecycle states.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// The registration this builder describes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use signpost_client::registration::Registration;
    ///
    /// let spec = Registration::builder("users", "10.0.0.7", 8080).spec();
    /// assert_eq!(spec.instance.id, "users-10.0.0.7-8080"); // the default id
    /// assert_eq!((spec.instance.weight, spec.ttl), (100, Duration::from_secs(10)));
    ///
    /// let spec = Registration::builder("users", "10.0.0.7", 8080)
    ///     .id("users-1")
    ///     .tags(["v2", "eu"])
    ///     .metadata([("zone", "eu-west-1a")])
    ///     .weight(5)
    ///     .ttl(Duration::from_secs(3))
    ///     .deregister_after(Duration::from_secs(60))
    ///     .spec();
    /// assert_eq!(spec.instance.id, "users-1");
    /// assert_eq!(spec.instance.tags, ["v2", "eu"]);
    /// assert_eq!(spec.instance.metadata["zone"], "eu-west-1a");
    /// assert_eq!(spec.instance.weight, 5);
    /// assert_eq!(spec.ttl, Duration::from_secs(3));
    /// assert_eq!(spec.deregister_after, Some(Duration::from_secs(60)));
    /// ```
    pub fn spec(&self) -> RegistrationSpec {
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-{}-{}", self.service, self.address, self.port));
        RegistrationSpec {
            instance: Instance {
                id,
                service: self.service.clone(),
                address: self.address.clone(),
                port: self.port,
                tags: self.tags.clone(),
                metadata: self.metadata.clone(),
                weight: self.weight,
                state: if self.starting {
                    Lifecycle::Starting
                } else {
                    Lifecycle::Up
                },
                maintenance: None,
            },
            ttl: self.ttl,
            deregister_after: self.deregister_after,
            check: self.check.clone(),
        }
    }

    /// Registers the instance and starts heartbeating it. Fails if the first registration
    /// fails (nothing runs in the background then). Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use signpost_client::registration::Registration;
    /// # use signpost_client::registry::signpost::SignpostRegistry;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = Arc::new(SignpostRegistry::new(["127.0.0.1:8500"])?);
    /// let handle = Registration::builder("users", "10.0.0.7", 8080).register(registry).await?;
    /// # Ok(()) }
    /// ```
    pub async fn register(
        self,
        registry: Arc<dyn Registry>,
    ) -> Result<RegistrationHandle, RegistryError> {
        let spec = self.spec();
        if spec.check.is_none() && spec.ttl.is_zero() {
            return Err(RegistryError::invalid(
                "registration",
                "ttl must be above zero",
            ));
        }
        let drain = self.drain;
        let registered = registry.register(&spec);
        crate::otel::registry_call("registry.register", &spec.instance.service, registered).await?;
        if let Some(check) = &spec.check {
            tracing::info!(
                service = %spec.instance.service,
                id = %spec.instance.id,
                "registered; the agent checks {:?} every {:?}",
                check.target,
                check.interval
            );
            let (stop, _) = oneshot::channel();
            return Ok(RegistrationHandle {
                state: Arc::new(Mutex::new(spec.instance.state)),
                spec: Arc::new(spec),
                registry,
                drain,
                running: Some(Running { stop, task: None }),
            });
        }
        tracing::info!(
            service = %spec.instance.service,
            id = %spec.instance.id,
            "registered; heartbeating every {:?}",
            heartbeat_interval(spec.ttl)
        );
        let state = Arc::new(Mutex::new(spec.instance.state));
        let spec = Arc::new(spec);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(heartbeat_loop(
            registry.clone(),
            spec.clone(),
            state.clone(),
            stopped,
        ));
        Ok(RegistrationHandle {
            spec,
            state,
            registry,
            drain,
            running: Some(Running {
                stop,
                task: Some(task),
            }),
        })
    }
}

/// The background heartbeat of a live handle.
#[derive(Debug)]
struct Running {
    /// Tells the heartbeat task to stop.
    stop: oneshot::Sender<()>,
    /// The heartbeat task, awaited before deregistering so it cannot re-register afterwards;
    /// `None` when the agent runs the check (nothing heartbeats).
    task: Option<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// A registered instance, heartbeated in the background until deregistered or dropped.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use signpost_client::registration::Registration;
/// # use signpost_client::registry::signpost::SignpostRegistry;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(SignpostRegistry::new(["127.0.0.1:8500"])?);
/// let handle = Registration::builder("users", "10.0.0.7", 8080).register(registry).await?;
/// // Deregister on Ctrl-C (or SIGTERM through tokio::signal::unix).
/// handle.deregister_on(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the handle deregisters the instance"]
pub struct RegistrationHandle {
    /// What was registered (re-registrations send the same, in the state last announced).
    spec: Arc<RegistrationSpec>,
    /// The lifecycle state last announced, shared with the heartbeat task so a
    /// re-registration sends it (an instance that announced `up` does not come back
    /// `starting`).
    state: Arc<Mutex<Lifecycle>>,
    /// Time between announcing `stopping` and deregistering.
    drain: Duration,
    /// Where it was registered.
    registry: Arc<dyn Registry>,
    /// The heartbeat task; `None` once deregistered.
    running: Option<Running>,
}

impl std::fmt::Debug for RegistrationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationHandle")
            .field("spec", &self.spec)
            .field("state", &self.state())
            .field("heartbeating", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl RegistrationHandle {
    /// The registered instance's id.
    ///
    /// ```no_run
    /// # fn run(handle: signpost_client::registration::RegistrationHandle) {
    /// println!("registered as {}", handle.id());
    /// # }
    /// ```
    pub fn id(&self) -> &str {
        &self.spec.instance.id
    }

    /// The service the instance is registered under.
    pub fn service(&self) -> &str {
        &self.spec.instance.service
    }

    /// Everything that was registered (with the state it registered in).
    pub fn spec(&self) -> &RegistrationSpec {
        &self.spec
    }

    /// The lifecycle state last announced.
    pub fn state(&self) -> Lifecycle {
        *lock(&self.state)
    }

    /// Announces `state` and remembers it for re-registrations.
    async fn announce(&self, state: Lifecycle) -> Result<(), RegistryError> {
        let (service, id) = (self.service(), self.id());
        self.registry.set_state(service, id, state).await?;
        *lock(&self.state) = state;
        tracing::info!(%service, %id, "announced {state}");
        Ok(())
    }

    /// Announces the instance `up` (after registering with
    /// [`RegistrationBuilder::starting`]): from now on it is discovered.
    pub async fn ready(&self) -> Result<(), RegistryError> {
        self.announce(Lifecycle::Up).await
    }

    /// Stops heartbeating and deregisters the instance.
    ///
    /// ```no_run
    /// # async fn run(handle: signpost_client::registration::RegistrationHandle) {
    /// if let Err(e) = handle.deregister().await {
    ///     eprintln!("deregistration failed (the TTL will expire it): {e}");
    /// }
    /// # }
    /// ```
    pub async fn deregister(mut self) -> Result<(), RegistryError> {
        if !self.drain.is_zero() {
            // Clients stop choosing it now; heartbeats go on while requests in flight finish.
            if let Err(e) = self.announce(Lifecycle::Stopping).await {
                tracing::warn!(service = %self.service(), id = %self.id(), "announcing stopping failed: {e}");
            }
            tokio::time::sleep(self.drain).await;
        }
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        let result = self.registry.deregister(self.service(), self.id());
        let result =
            crate::otel::registry_call("registry.deregister", self.service(), result).await;
        match &result {
            Ok(()) => tracing::info!(service = %self.service(), id = %self.id(), "deregistered"),
            Err(e) => {
                tracing::warn!(service = %self.service(), id = %self.id(), "deregistration failed: {e}")
            }
        }
        result
    }

    /// Waits for `shutdown` (e.g. SIGTERM), then deregisters. Spawn it, or await it as the
    /// last step of `main`.
    ///
    /// ```no_run
    /// # async fn run(handle: signpost_client::registration::RegistrationHandle) {
    /// use tokio::signal::unix::{signal, SignalKind};
    /// let mut term = signal(SignalKind::terminate()).expect("signal handler");
    /// tokio::spawn(handle.deregister_on(async move { term.recv().await; }));
    /// # }
    /// ```
    pub async fn deregister_on<F>(self, shutdown: F) -> Result<(), RegistryError>
    where
        F: Future<Output = ()>,
    {
        shutdown.await;
        self.deregister().await
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let registry = self.registry.clone();
        let spec = self.spec.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    running.stop().await;
                    let (service, id) = (&spec.instance.service, &spec.instance.id);
                    match registry.deregister(service, id).await {
                        Ok(()) => tracing::info!(%service, %id, "deregistered (handle dropped)"),
                        Err(e) => {
                            tracing::warn!(%service, %id, "deregistration on drop failed: {e}")
                        }
                    }
                });
            }
            Err(_) => {
                // No runtime: stop heartbeating; the TTL removes the instance.
                if let Some(task) = running.task {
                    task.abort();
                }
            }
        }
    }
}

/// The shared state, even if a holder panicked (it is a plain value, never half-written).
fn lock(state: &Mutex<Lifecycle>) -> std::sync::MutexGuard<'_, Lifecycle> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Time between heartbeats: a third of the TTL, so two may be lost before it lapses.
fn heartbeat_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(10))
}

/// Heartbeats `spec` until told to stop; re-registers on `NotFound`, backs off on other errors.
async fn heartbeat_loop(
    registry: Arc<dyn Registry>,
    spec: Arc<RegistrationSpec>,
    state: Arc<Mutex<Lifecycle>>,
    mut stop: oneshot::Receiver<()>,
) {
    let interval = heartbeat_interval(spec.ttl);
    let (service, id) = (&spec.instance.service, &spec.instance.id);
    let mut delay = interval;
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let beat = async {
            let beat = registry.heartbeat(service, id);
            match crate::otel::registry_call("registry.heartbeat", service, beat).await {
                Err(why @ RegistryError::NotFound { .. }) => {
                    tracing::info!(%service, %id, "registry does not know the instance ({why}); registering again");
                    let mut current = (*spec).clone();
                    current.instance.state = *lock(&state);
                    registry.register(&current).await
                }
                other => other,
            }
        };
        let result = tokio::select! {
            _ = &mut stop => return,
            r = beat => r,
        };
        match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(%service, %id, "heartbeats recovered after {failures} failures");
                }
                failures = 0;
                delay = interval;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                delay = Backoff {
                    base: Duration::from_millis(100),
                    max: interval,
                    jitter: Jitter::Full,
                }
                .delay(failures.saturating_add(1));
                tracing::warn!(%service, %id, "heartbeat failed ({e}); retrying in {delay:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use futures::stream::BoxStream;

    use crate::instance::Update;

    /// A registry that records calls and answers heartbeats from a script.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        /// Answers of the next heartbeats (`Ok` once the script runs out).
        beats: Mutex<std::collections::VecDeque<Result<(), RegistryError>>>,
    }

    impl Recorder {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Registry for Recorder {
        fn register<'a>(
            &'a self,
            spec: &'a RegistrationSpec,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.record(format!("register {}", spec.instance.id));
            Box::pin(async { Ok(()) })
        }
        fn deregister<'a>(
            &'a self,
            _: &'a str,
            id: &'a str,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.record(format!("deregister {id}"));
            Box::pin(async { Ok(()) })
        }
        fn heartbeat<'a>(
            &'a self,
            _: &'a str,
            id: &'a str,
        ) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.record(format!("heartbeat {id}"));
            let answer = self.beats.lock().unwrap().pop_front().unwrap_or(Ok(()));
            Box::pin(async move { answer })
        }
        fn list<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>> {
            Box::pin(async { Ok((1, vec![])) })
        }
        fn watch(&self, _: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
            Box::pin(futures::stream::empty())
        }
        fn watch_services(
            &self,
        ) -> BoxStream<'static, Result<crate::registry::ServiceSet, RegistryError>> {
            Box::pin(futures::stream::empty())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_every_third_of_the_ttl_and_reregisters_on_not_found() {
        let reg = Arc::new(Recorder::default());
        reg.beats.lock().unwrap().extend([
            Ok(()),
            Err(RegistryError::NotFound {
                what: "svc/h-1".into(),
                body: signpost_api::ErrorBody {
                    error: "restarted".into(),
                    field: None,
                },
            }),
            Err(RegistryError::Unavailable {
                agent: "a".into(),
                cause: crate::registry::Cause::Closed,
            }),
        ]);
        let handle = Registration::builder("svc", "10.0.0.1", 80)
            .id("i1")
            .ttl(Duration::from_secs(3))
            .register(reg.clone())
            .await
            .unwrap();
        assert_eq!(reg.calls(), ["register i1"]);
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(reg.calls().len(), 1, "no heartbeat before ttl/3");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(reg.calls(), ["register i1", "heartbeat i1"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            reg.calls()[2..],
            ["heartbeat i1", "register i1"],
            "NotFound registers again"
        );
        // The failure backs off (≤ ttl/3), then heartbeats resume.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = reg.calls();
        assert!(calls.len() >= 6, "{calls:?}");
        handle.deregister().await.unwrap();
        assert_eq!(reg.calls().last().unwrap(), "deregister i1");
        let n = reg.calls().len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(reg.calls().len(), n, "no heartbeats after deregistering");
    }

    #[tokio::test(start_paused = true)]
    async fn drop_deregisters_in_the_background() {
        let reg = Arc::new(Recorder::default());
        let handle = Registration::builder("svc", "10.0.0.1", 80)
            .register(reg.clone())
            .await
            .unwrap();
        assert_eq!(handle.id(), "svc-10.0.0.1-80");
        drop(handle);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            reg.calls(),
            ["register svc-10.0.0.1-80", "deregister svc-10.0.0.1-80"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deregister_on_waits_for_the_shutdown_future() {
        let reg = Arc::new(Recorder::default());
        let handle = Registration::builder("svc", "h", 1)
            .ttl(Duration::from_secs(30))
            .register(reg.clone())
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(handle.deregister_on(async move {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(reg.calls(), ["register svc-h-1"]);
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(reg.calls(), ["register svc-h-1", "deregister svc-h-1"]);
    }

    #[tokio::test]
    async fn a_zero_ttl_is_refused() {
        let reg = Arc::new(Recorder::default());
        let err = Registration::builder("svc", "h", 1)
            .ttl(Duration::ZERO)
            .register(reg.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Rejected { status: None, .. }),
            "{err}"
        );
        assert!(reg.calls().is_empty());
    }
}
