//! Signpost's API gateway: a reverse proxy on hyper 1 that finds each request's service in the
//! registry and forwards it to a healthy instance.
//!
//! # Layout
//! - [`config`]: the TOML configuration, validated at start; its errors are typed
//!   ([`config::Problem`], [`config::ValueError`]) and each names its problem.
//! - [`route`]: route specs and longest-prefix / host matching (pure).
//! - [`guard`]: what a registration may make the gateway do: where registry routes may go
//!   (`metadata_prefixes`, configured routes own their subtrees), and `deny_cidrs` (pure;
//!   [`guard::Refusal`] says why a route was refused).
//! - [`metadata`]: routes declared in the registry through instance metadata (pure;
//!   [`metadata::MetadataError`] names the instance, key and problem).
//! - [`headers`]: hop-by-hop removal, `X-Forwarded-*`, `X-Request-Id` (pure).
//! - `auto`: `[auto_routes]`: routes by service name, followed lazily, bounded.
//! - `control`: the control plane: SDK discovery per service, the SDK's catalog watch
//!   (`Discovery::catalog`), snapshots.
//! - `state`: the immutable snapshot the request path reads (one atomic load per request).
//! - `proxy`: the request path: selection (the SDK's `Selector`, whose chosen position
//!   indexes the upstreams), one attempt, the retry decision (the SDK's `RetryPolicy` and
//!   budget), the response.
//! - `deadline`: response deadlines on one lazily re-armed timer per client connection.
//! - `pool`: upstream connections: pooled HTTP/1.1 keep-alive connections driven by the
//!   request's own task; one multiplexed h2c connection per instance.
//! - [`body`]: streaming request and response bodies.
//! - [`error`]: the one place failures become JSON responses.
//! - `metrics`, `admin`: `/metrics` and `GET /` on the admin port.
//! - `server`: accept loops, client connection timeouts (`[limits]`) and graceful shutdown.
//! - `upgrade`: upgraded (WebSocket) connections: spliced, capped, idle-closed, closed at
//!   shutdown.
//! - `trace`: the W3C trace each proxied request continues or starts, and its server span.
//!
//! ```no_run
//! use signpost_gateway::{Gateway, GatewayConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = GatewayConfig::from_toml(r#"
//!     [registry]
//!     addrs = ["127.0.0.1:8500"]
//!     [[route]]
//!     prefix = "/users"
//!     service = "users"
//! "#)?;
//! let gateway = Gateway::start(config)?;
//! let proxy = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let admin = tokio::net::TcpListener::bind("127.0.0.1:9901").await?;
//! gateway.serve(proxy, admin, async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod body;
pub mod compress;
pub mod config;
pub mod error;
pub mod guard;
pub mod headers;
pub mod metadata;
pub mod route;

mod admin;
mod auto;
mod control;
mod deadline;
mod metrics;
mod pool;
mod proxy;
mod server;
mod state;
mod trace;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use signpost_client::discovery::Discovery;
use signpost_client::registry::{Registry, RegistryError};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use admin::{DiscoveryStatus, RefusedInstance, RouteStatus, ServiceStatus, UpstreamStatus};
pub use config::{ConfigError, GatewayConfig};
pub use error::ProxyError;
pub use route::RouteSpec;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry client could not be built.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// A TLS certificate, key or CA could not be loaded.
    #[error("{section}: {source}")]
    Tls {
        /// `tls` or `upstream_tls`.
        section: &'static str,
        /// What went wrong.
        source: signpost_tls::TlsError,
    },
}

/// ALPN protocols the TLS listener offers (the server speaks both).
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How often the listener's certificate files are checked for a change (SIGHUP reloads at
/// once).
const TLS_POLL: Duration = Duration::from_secs(1);

/// The listener's reloadable TLS, if `[tls]` is set.
fn listener_tls(
    config: &GatewayConfig,
) -> Result<Option<Arc<signpost_tls::ReloadingAcceptor>>, GatewayError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let spec = signpost_tls::ServerTls {
        cert_file: tls.cert_file.clone(),
        key_file: tls.key_file.clone(),
        ca_file: None,
        verify_incoming: false,
    };
    signpost_tls::ReloadingAcceptor::new(spec, ALPN)
        .map(Some)
        .map_err(|source| GatewayError::Tls {
            section: "tls",
            source,
        })
}

/// The TLS client of `https` routes. Without `upstream_tls.ca_file` it trusts the system's
/// roots; when there are none it is an error only if a configured route needs it (a
/// registry route declaring `https` then fails its requests with 502).
fn upstream_tls(
    config: &GatewayConfig,
    specs: &[RouteSpec],
) -> Result<Option<signpost_tls::tokio_rustls::TlsConnector>, GatewayError> {
    let u = &config.upstream_tls;
    let client = signpost_tls::ClientTls {
        ca_file: u.ca_file.clone(),
        cert_file: u.cert_file.clone(),
        key_file: u.key_file.clone(),
        skip_verify: false,
    };
    let needed = !client.is_default() || specs.iter().any(|s| s.protocol == route::Protocol::Https);
    match client.client_config() {
        Ok(mut tls) => {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Some(Arc::new(tls).into()))
        }
        Err(source) if needed => Err(GatewayError::Tls {
            section: "upstream_tls",
            source,
        }),
        Err(e) => {
            tracing::debug!("no upstream TLS (only needed by https routes): {e}");
            Ok(None)
        }
    }
}

/// A running gateway's control plane. Serve traffic with [`Gateway::serve`]; dropping the
/// gateway stops discovery.
pub struct Gateway {
    /// Shared with the request path and the admin API.
    shared: Arc<state::Shared>,
    /// The configuration it started with.
    config: Arc<GatewayConfig>,
    /// The discovery handles of the configured routes' services.
    configured: Vec<signpost_client::ServiceWatch>,
    /// Stops the controller (and the catalog watcher) when dropped or set.
    stop: watch::Sender<bool>,
    /// The controller task.
    controller: JoinHandle<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.config.listen)
            .field("routes", &self.config.routes.len())
            .finish()
    }
}

impl Gateway {
    /// Validates `config` and starts the control plane against the registry `[registry]`
    /// describes: the Signpost agents it names (with its token and TLS settings), the DNS
    /// server of `kind = "dns"`, or the environment with `kind = "env"`.
    /// Must be called within a tokio runtime. Routes answer 503 until their service's first
    /// instance list arrives (see [`Gateway::ready`]).
    pub fn start(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let registry = config::discovery::build(&config.registry)?;
        Self::start_with_registry(config, registry)
    }

    /// Like [`Gateway::start`] with any SDK registry. With `registry.routes_from_metadata`, the
    /// services to follow for registry routes come from the registry's
    /// [`Registry::watch_services`] (through the SDK's [`Discovery::catalog`], which fails over
    /// and reconnects).
    ///
    /// [`Discovery::catalog`]: signpost_client::discovery::Discovery::catalog
    pub fn start_with_registry(
        config: GatewayConfig,
        registry: Arc<dyn Registry>,
    ) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let mut config = config;
        // DNS and the environment know neither metadata nor a catalog to follow.
        config.registry.routes_from_metadata &= config.registry.kind.has_metadata();
        let specs = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                config.route_spec(r).map_err(|problems| {
                    problems
                        .into_iter()
                        .map(|problem| config::Problem::Route { index, problem })
                        .collect()
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Invalid)?;
        let tls = listener_tls(&config)?;
        let upstream_tls = upstream_tls(&config, &specs)?;
        let config = Arc::new(config);
        let shared = Arc::new(state::Shared::new(&config, tls));
        // Declared routes and auto routes both need the registry's list of services.
        let follow_catalog =
            config.registry.routes_from_metadata || config.auto_routes.prefix.is_some();
        let catalog = follow_catalog
            .then(|| Discovery::new(registry.clone(), control::discovery_options(&config)));
        let controller = control::Controller::new(
            shared.clone(),
            config.clone(),
            specs,
            registry,
            upstream_tls,
        );
        let configured = controller.configured_watches();
        let (stop, stopped) = watch::channel(false);
        let controller = tokio::spawn(controller.run(catalog, stopped));
        Ok(Gateway {
            shared,
            config,
            configured,
            stop,
            controller,
        })
    }

    /// Waits until every configured route's service has a first instance list, at most
    /// `timeout`. Returns whether they all did.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let all = futures::future::join_all(self.configured.iter().map(|w| w.ready()));
        match tokio::time::timeout(timeout, all).await {
            Ok(results) => results.iter().all(Result::is_ok),
            Err(_) => false,
        }
    }

    /// The routes in matching order, with their upstreams' health (what `GET /` on the admin
    /// port answers).
    pub fn routes(&self) -> Vec<RouteStatus> {
        admin::routes(&self.shared.snapshot())
    }

    /// The services the gateway follows (configured ones, and with
    /// `registry.routes_from_metadata` every one in the catalog), with the routes they declare.
    pub fn services(&self) -> Vec<ServiceStatus> {
        admin::services(&self.shared.snapshot())
    }

    /// Prometheus text (what `GET /metrics` on the admin port answers).
    pub fn metrics(&self) -> String {
        metrics::render(&self.shared, &self.shared.snapshot())
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Serves client traffic on `proxy` and the admin API on `admin` until `shutdown`
    /// resolves; then stops accepting and gives open connections `shutdown_grace` to finish.
    pub async fn serve(
        &self,
        proxy: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let grace = self.config.shutdown_grace.to_std();
        let (stop, stopped) = watch::channel(false);
        let reloader = self.watch_tls(stopped.clone());
        let proxy = tokio::spawn(server::accept_loop(
            self.shared.clone(),
            proxy,
            server::Face::Proxy,
            stopped.clone(),
            grace,
        ));
        let admin = tokio::spawn(server::accept_loop(
            self.shared.clone(),
            admin,
            server::Face::Admin,
            stopped,
            grace,
        ));
        shutdown.await;
        let _ = stop.send(true);
        let _ = tokio::join!(proxy, admin);
        if let Some(reloader) = reloader {
            let _ = reloader.await;
        }
    }

    /// With `[tls]`, a task that reloads the listener's certificate on SIGHUP and when its
    /// files change, until `stopped` turns true.
    fn watch_tls(&self, mut stopped: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        let tls = self.shared.tls.clone()?;
        Some(tokio::spawn(tls.watch(TLS_POLL, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })))
    }

    /// Serves client traffic with one worker thread per listener in `proxy` (see
    /// [`bind_workers`]), and the admin API on `admin` on the calling runtime, until `shutdown`
    /// resolves; then stops accepting and gives open connections `shutdown_grace` to finish.
    ///
    /// Each worker runs its own single-threaded tokio runtime and accept loop, and keeps its own
    /// idle upstream connections, so a request, the client connection it came on and the
    /// upstream connection it goes out on stay on one thread: no work stealing, no wake-ups
    /// across threads. The kernel spreads new connections over the listeners (`SO_REUSEPORT`).
    /// This is how `signpost gateway` serves with `workers` other than 1.
    pub async fn serve_workers(
        &self,
        proxy: Vec<std::net::TcpListener>,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let grace = self.config.shutdown_grace.to_std();
        let (stop, stopped) = watch::channel(false);
        let reloader = self.watch_tls(stopped.clone());
        let mut finished = Vec::with_capacity(proxy.len());
        let mut started = Ok(());
        for (index, listener) in proxy.into_iter().enumerate() {
            let (done, finish) = oneshot::channel::<()>();
            let shared = self.shared.clone();
            let stopped = stopped.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    pool::set_shard(index);
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(async move {
                            match TcpListener::from_std(listener) {
                                Ok(listener) => {
                                    server::accept_loop(
                                        shared,
                                        listener,
                                        server::Face::Proxy,
                                        stopped,
                                        grace,
                                    )
                                    .await;
                                }
                                Err(e) => tracing::error!(worker = index, "cannot serve: {e}"),
                            }
                        }),
                        Err(e) => tracing::error!(worker = index, "cannot start a runtime: {e}"),
                    }
                    drop(done);
                });
            match spawned {
                Ok(_) => finished.push(finish),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        let admin = tokio::spawn(server::accept_loop(
            self.shared.clone(),
            admin,
            server::Face::Admin,
            stopped,
            grace,
        ));
        if started.is_ok() {
            shutdown.await;
        }
        let _ = stop.send(true);
        // Each worker drops its end when its runtime is done.
        for finish in finished {
            let _ = finish.await;
        }
        let _ = admin.await;
        if let Some(reloader) = reloader {
            let _ = reloader.await;
        }
        started
    }
}

/// `count` listeners on `addr`, all bound with `SO_REUSEPORT` so the kernel spreads connections
/// over them, for [`Gateway::serve_workers`]. With port 0 the first one picks the port and the
/// others share it. Must be called within a tokio runtime.
pub fn bind_workers(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.controller.abort();
    }
}
