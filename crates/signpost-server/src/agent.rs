//! The agent: opens storage, starts Raft and the health checker, serves HTTP (and Raft and DNS
//! on their own listeners), and at shutdown waits for every task it started.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use openraft::ServerState;
use signpost_core::{Command, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::{AgentConfig, ConfigError};
use crate::health::HealthService;
use crate::listener::{self, limits::ClientLimits, ListenerOptions};
use crate::raft::transport::{HttpTransport, HttpTransportOptions, Transport};
use crate::raft::{self, LogStore, NetworkFactory, Node, NodeId, Raft, StateMachine};
use crate::store::Store;
use signpost_tls::ReloadingAcceptor;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
pub use crate::cluster::{now_ms, ProposeError, WRITE_TIMEOUT};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration does not hang together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir or its database cannot be opened (held by another agent, unreadable, ...).
    #[error(transparent)]
    Storage(#[from] raft::StorageOpenError),
    /// The Raft settings are invalid.
    #[error("invalid raft settings: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    /// Raft did not start, or did not initialise or catch up.
    #[error("cannot start raft: {0}")]
    Raft(String),
    /// The `[tls]` files cannot be loaded, or do not make a valid configuration.
    #[error("tls: {0}")]
    Tls(#[from] signpost_tls::TlsError),
}

/// How often the TLS files are checked for changes (SIGHUP reloads at once).
const TLS_POLL: Duration = Duration::from_secs(2);

/// The protocols the HTTPS listeners offer.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The loaded `[tls]` configuration of each listener.
struct ListenerTls {
    /// The HTTP API's.
    http: Arc<ReloadingAcceptor>,
    /// The dedicated Raft listener's (client certificates required), when there is one.
    raft: Option<Arc<ReloadingAcceptor>>,
}

use crate::batch::{Proposal, MAX_BATCH};

/// Where this agent listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The HTTP API.
    pub http: SocketAddr,
    /// A dedicated Raft listener, if the agent has one (otherwise Raft RPCs use the HTTP port).
    pub raft: Option<SocketAddr>,
}

/// How to start an agent: where it listens, and what the defaults leave to tests. A
/// [`Listening`] converts into one with the defaults.
#[derive(Clone)]
pub struct StartOptions {
    /// Where the agent listens.
    pub listening: Listening,
    /// How it reaches other members; `None`: HTTP from its Raft address ([`HttpTransport`]).
    /// The in-process cluster tests give each agent its handle on a
    /// [`crate::raft::transport::mem::MemNetwork`].
    pub transport: Option<Arc<dyn Transport>>,
    /// How long a write may wait for its commit ([`WRITE_TIMEOUT`] by default); tests of a
    /// leader cut off from its quorum shorten it.
    pub write_timeout: Duration,
    /// Opens the database on a storage backend of the caller's instead of the data dir (or
    /// memory): tests hand one that fails writes on demand.
    pub backend: Option<raft::BackendFactory>,
    /// What runs once Raft or storage has been stopped for `[storage] fatal_exit_after`;
    /// `None`: exit the process with status 1 ([`crate::vitals::exit_process`]).
    pub on_fatal: Option<crate::vitals::FatalHook>,
}

impl From<Listening> for StartOptions {
    fn from(listening: Listening) -> Self {
        StartOptions {
            listening,
            transport: None,
            write_timeout: WRITE_TIMEOUT,
            backend: None,
            on_fatal: None,
        }
    }
}

/// A running agent. Shared by the HTTP handlers, the health checker and the binary. Its parts
/// are private: faces go through [`crate::service`], the binary through the accessors.
pub struct Agent {
    /// The validated configuration it started with.
    config: AgentConfig,
    /// The address clients reach this agent's HTTP API at.
    advertise_addr: SocketAddr,
    /// Whether the member-to-member routes share the HTTP port (no dedicated Raft listener).
    raft_on_http: bool,
    /// HTTPS on the listeners, when `[tls]` is configured.
    tls: Option<ListenerTls>,
    /// This member's place in the Raft group: Raft itself, the leader, forwarding.
    cluster: Cluster,
    /// The applied state every reader sees.
    store: Arc<Store>,
    /// The leader's health checker.
    health: Arc<HealthService>,
    /// Writes waiting to be grouped into one Raft entry by the batcher.
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    /// This agent's own metrics registry (not the process-global one), so several agents can
    /// share a process in tests.
    recorder: PrometheusRecorder,
    /// When the agent started, for `/api/v1/agent/self`.
    started_at: SystemTime,
    /// Flips to true when shutdown begins, so long-lived requests (blocking queries, watch
    /// streams) and background loops end at once instead of holding the drain open.
    closing: tokio::sync::watch::Sender<bool>,
    /// Cancelled once the HTTP drain is over: the batcher stops taking writes.
    stopping: CancellationToken,
    /// Every background task the agent runs; shutdown waits until it is empty.
    tasks: TaskTracker,
    /// The database, held here so that it is this agent that closes it (and releases the data
    /// dir's lock) once Raft's storage has let go of it at shutdown.
    db: std::sync::Mutex<Option<Arc<redb::Database>>>,
    /// ACL settings and the cache of resolved tokens.
    acl: crate::service::acl::Resolver,
    /// Whether Raft or storage has stopped, and what to do then ([`crate::vitals`]).
    vitals: Arc<crate::vitals::Vitals>,
}

impl Agent {
    /// Starts an agent whose Raft RPCs share its HTTP port `http_addr`.
    pub async fn start(
        config: AgentConfig,
        http_addr: SocketAddr,
    ) -> Result<Arc<Agent>, StartError> {
        Self::start_with(
            config,
            Listening {
                http: http_addr,
                raft: None,
            },
        )
        .await
    }

    /// Opens storage, starts Raft and the health checker. A fresh agent with nothing to join
    /// initialises a one-member group; with `join` addresses it asks the cluster to add it.
    pub async fn start_with(
        config: AgentConfig,
        options: impl Into<StartOptions>,
    ) -> Result<Arc<Agent>, StartError> {
        let StartOptions {
            listening,
            transport,
            write_timeout,
            backend,
            on_fatal,
        } = options.into();
        config.validate()?;
        let db = Arc::new(raft::open_database(
            config.data_dir.as_deref(),
            backend.as_ref(),
            config.storage.cache_size,
        )?);
        let held_db = db.clone();
        let store = Arc::new(Store::with_limits(config.limits.state()));
        let state_machine = StateMachine::open(store.clone(), db.clone())?;
        let log_store = LogStore::new(db);

        let rc = &config.raft;
        let (election_timeout_min, election_timeout_max) = rc.election_timeouts(config.node_id);
        let raft_config = openraft::Config {
            cluster_name: "signpost".to_string(),
            heartbeat_interval: rc.heartbeat_interval.as_millis(),
            election_timeout_min,
            election_timeout_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(rc.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;

        let raft_listen = listening.raft.unwrap_or(listening.http);
        if config.cluster.secret.is_none()
            && !config.tls.enabled()
            && !raft_listen.ip().is_loopback()
        {
            tracing::warn!(
                raft_addr = %raft_listen,
                "member traffic (/raft/*) is served on a non-loopback address without \
                 authentication: anyone who reaches it can take over the cluster; set \
                 [cluster] secret or [tls]"
            );
        }
        let raft_advertised = rc
            .advertise_addr
            .clone()
            .unwrap_or_else(|| raft_listen.to_string());
        let node = Node::new(raft_advertised, listening.http.to_string());
        let source = listening
            .raft
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let tls = match config.tls.http() {
            Some(http) => Some(ListenerTls {
                http: ReloadingAcceptor::new(http, ALPN)?,
                raft: match (listening.raft, config.tls.raft()) {
                    (Some(_), Some(raft)) => Some(ReloadingAcceptor::new(raft, ALPN)?),
                    _ => None,
                },
            }),
            None => None,
        };
        let member_tls = config
            .tls
            .member_client()
            .map(|c| c.client_config())
            .transpose()?;
        let peers = match transport {
            Some(peers) => peers,
            None => Arc::new(HttpTransport::with_options(HttpTransportOptions {
                source,
                secret: config.cluster.secret.clone(),
                tls: member_tls,
            })),
        };

        let node_id = config.node_id;
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            NetworkFactory::new(peers.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if fresh && config.join.is_empty() {
            raft.initialize(BTreeMap::from([(node_id, node.clone())]))
                .await
                .map_err(|e| StartError::Raft(format!("cannot initialise the raft group: {e}")))?;
        } else if !fresh {
            catch_up_alone(&raft, node_id, &node, &config).await?;
        }

        let recorder = PrometheusBuilder::new().build_recorder();
        let tasks = TaskTracker::new();
        let health = HealthService::new(config.guard(), config.health.tick.to_std(), tasks.clone());
        let (proposals, queue) = tokio::sync::mpsc::channel(MAX_BATCH * 4);
        let closing = tokio::sync::watch::channel(false).0;
        let patience = Duration::from_millis(config.raft.election_timeout_max.as_millis() * 3);
        let cluster = Cluster::new(
            node_id,
            node,
            raft,
            peers,
            patience,
            write_timeout,
            closing.subscribe(),
        );
        let join = (fresh && !config.join.is_empty()).then(|| config.join.clone());
        let acl = crate::service::acl::Resolver::new(config.acl.clone());
        let agent = Arc::new(Agent {
            config,
            advertise_addr: listening.http,
            raft_on_http: listening.raft.is_none(),
            tls,
            cluster,
            store,
            health: health.clone(),
            proposals,
            recorder,
            started_at: SystemTime::now(),
            closing,
            stopping: CancellationToken::new(),
            tasks,
            db: std::sync::Mutex::new(Some(held_db)),
            acl,
            vitals: Arc::new(crate::vitals::Vitals::new(
                on_fatal.unwrap_or_else(crate::vitals::exit_process),
            )),
        });
        agent.tasks.spawn(crate::vitals::watch(
            agent.vitals.clone(),
            agent.raft().metrics(),
            agent.closing.subscribe(),
            agent.config.storage.fatal_exit_after.to_std(),
        ));
        health.spawn(Arc::downgrade(&agent));
        if let Some(addrs) = join {
            let agent = agent.clone();
            agent
                .tasks
                .clone()
                .spawn(async move { agent.cluster.join_loop(addrs).await });
        }
        if agent.acl.enabled() {
            agent.tasks.spawn(crate::service::acl::maintain(
                Arc::downgrade(&agent),
                agent.closing.subscribe(),
            ));
        }
        agent.tasks.spawn(crate::recorder::run(
            agent.recorder.handle(),
            crate::recorder::UPKEEP_EVERY,
            agent.closing.subscribe(),
        ));
        agent.tasks.spawn(crate::batch::run(
            Arc::downgrade(&agent),
            queue,
            agent.stopping.clone(),
        ));
        Ok(agent)
    }

    /// Whether Raft or storage has stopped ([`crate::vitals`]).
    pub fn vitals(&self) -> &crate::vitals::Vitals {
        &self.vitals
    }

    /// ACL settings and resolved tokens (for [`crate::service::acl`]).
    pub fn acl(&self) -> &crate::service::acl::Resolver {
        &self.acl
    }

    /// Proposes `command` through Raft and returns the state machine's response once applied.
    /// On a follower the command is forwarded to the leader.
    ///
    /// Concurrent proposals are grouped into one Raft entry (one fsync for the group): openraft
    /// flushes its log one entry at a time, so grouping here is what lets throughput grow with
    /// the number of writers.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        let command = raft::EncodedCommand::new(command)
            .map_err(|e| ProposeError::Fatal(format!("cannot encode the write: {e}")))?;
        self.propose_encoded(command).await
    }

    /// [`Agent::propose`] for a command its caller already encoded (in its own task: the
    /// batcher and the log store only copy the bytes).
    pub async fn propose_encoded(
        &self,
        command: raft::EncodedCommand,
    ) -> Result<Response, ProposeError> {
        let mut commit = crate::telemetry::CommitSpan::start();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.proposals
            .send((command, tx))
            .await
            .map_err(|_| ProposeError::Fatal("the agent is shutting down".into()))?;
        let result = rx
            .await
            .map_err(|_| ProposeError::Fatal("the agent is shutting down".into()))?;
        if let Err(e) = &result {
            commit.failed(e);
        }
        result
    }

    /// Resolves when shutdown begins.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// True while this node leads the Raft group (and so runs health checks).
    pub fn is_leader(&self) -> bool {
        self.cluster.is_leader()
    }

    /// This member's place in the Raft group.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Raft itself, for its metrics and RPCs.
    pub fn raft(&self) -> &Raft {
        self.cluster.raft()
    }

    /// This agent's Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.cluster.node_id()
    }

    /// This member as the cluster knows it (its Raft and HTTP addresses).
    pub fn node(&self) -> &Node {
        self.cluster.node()
    }

    /// The configuration the agent started with.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The address clients reach this agent's HTTP API at.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise_addr
    }

    /// Whether the member-to-member routes (`/raft/*`) are served on the HTTP port: only when
    /// the agent has no dedicated Raft listener.
    pub fn raft_on_http(&self) -> bool {
        self.raft_on_http
    }

    /// The applied state. Faces read it through [`crate::service`].
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The leader's health checker.
    pub fn health(&self) -> &Arc<HealthService> {
        &self.health
    }

    /// This agent's metrics registry.
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }

    /// When the agent started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Number of live watch subscriptions.
    pub fn watchers(&self) -> usize {
        self.store.watchers()
    }

    /// Milliseconds since this node last heard from the leader (0 on the leader itself).
    pub fn last_contact_ms(&self) -> Option<u64> {
        self.cluster.last_contact_ms()
    }

    /// Serves the HTTP API on `listener` until `shutdown` resolves; see [`Agent::serve_all`].
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_all(Listeners::http(listener), shutdown).await
    }

    /// Serves the HTTP API, and Raft and DNS on their own listeners when given, until
    /// `shutdown` resolves. Then it drains in-flight requests (bounded by a grace period),
    /// stops every background task it owns (the batcher, the health checker and its checks,
    /// the join loop, the Raft and DNS listeners), shuts Raft down, and returns once all of
    /// them have stopped and the database is closed (each wait bounded by the grace period).
    pub async fn serve_all(
        self: &Arc<Self>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let l = &self.config.limits;
        let header_timeout = l.http_header_timeout.to_std();
        let (idle_timeout, body_timeout, max_conns) = (
            l.http_idle_timeout.to_std(),
            l.http_body_timeout.to_std(),
            l.http_max_conns,
        );
        if let Some(listener) = listeners.raft {
            let app = crate::http::raft::router(self.clone());
            let agent = self.clone();
            let options = ListenerOptions {
                name: "raft",
                tls: self.tls.as_ref().and_then(|t| t.raft.clone()),
                header_timeout,
                limits: None,
                grace: DRAIN_GRACE,
                idle_timeout,
                body_timeout,
                max_conns,
            };
            self.tasks.spawn(async move {
                let closed = agent.clone();
                let stop = async move { closed.closed().await };
                if let Err(e) = listener::serve(agent, listener, app, options, stop).await {
                    tracing::error!("raft listener failed: {e}");
                }
            });
        }
        if let Some((udp, tcp)) = listeners.dns {
            let config = self.config.dns_config(self.advertise_addr.ip());
            let agent = self.clone();
            if let Ok(addr) = udp.local_addr() {
                tracing::info!(dns_addr = %addr, domain = %config.domain, "dns interface listening");
            }
            self.tasks.spawn(async move {
                let stopped = {
                    let agent = agent.clone();
                    async move { agent.closed().await }
                };
                if let Err(e) = crate::dns::serve(agent, config, udp, tcp, stopped).await {
                    tracing::error!("dns interface failed: {e}");
                }
            });
        }
        let limits = ClientLimits::new(self.config.limits.clone());
        let app = crate::http::router(self.clone()).layer(axum::middleware::from_fn_with_state(
            (self.clone(), limits.clone()),
            listener::limits::limit_requests,
        ));
        if let Some(tls) = &self.tls {
            for acceptor in std::iter::once(&tls.http).chain(tls.raft.as_ref()) {
                let acceptor = acceptor.clone();
                let closed = self.clone();
                self.tasks.spawn(async move {
                    acceptor
                        .watch(TLS_POLL, async move { closed.closed().await })
                        .await
                });
            }
        }
        let options = ListenerOptions {
            name: "http",
            tls: self.tls.as_ref().map(|t| t.http.clone()),
            header_timeout,
            limits: Some(limits),
            grace: DRAIN_GRACE,
            idle_timeout,
            body_timeout,
            max_conns,
        };
        let agent = self.clone();
        let stop = async move {
            shutdown.await;
            agent.closing.send_replace(true);
        };
        let served = listener::serve(self.clone(), listeners.http, app, options, stop).await;
        self.shutdown().await;
        served
    }

    /// Begins shutdown without waiting: long-lived requests and background loops are told to
    /// end, the health checker stops and the batcher takes no more writes.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
        self.health.stop();
        self.stopping.cancel();
    }

    /// Stops everything the agent runs in the background and waits (bounded by the grace
    /// period) until it has stopped and the database is closed. [`Agent::serve_all`] calls it
    /// after the HTTP drain; an agent that is never served (the in-process cluster tests call
    /// its routers directly) is stopped with it.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.tasks.close();
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "background tasks still running after {DRAIN_GRACE:?}"
            );
        }
        // Raft's storage workers let go of the database as they end, a moment after Raft
        // itself. Once this agent holds the last reference, dropping it closes the database
        // here and now, and the lock on the data dir with it.
        let Some(db) = self.db_handle().take() else {
            return;
        };
        while Arc::strong_count(&db) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("the database is still in use after {DRAIN_GRACE:?}");
                *self.db_handle() = Some(db);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(db);
    }

    fn db_handle(&self) -> std::sync::MutexGuard<'_, Option<Arc<redb::Database>>> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Background tasks still running (0 once [`Agent::serve_all`] has returned).
    pub fn background_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the agent's database is still open (false once [`Agent::serve_all`] has
    /// returned: the data dir can be opened again).
    pub fn database_open(&self) -> bool {
        self.db_handle().is_some()
    }
}

/// The sockets [`Agent::serve_all`] serves on, bound by the caller (port 0 in tests).
pub struct Listeners {
    /// The HTTP API (and Raft RPCs when there is no dedicated Raft listener).
    pub http: TcpListener,
    /// A dedicated Raft listener.
    pub raft: Option<TcpListener>,
    /// DNS: UDP and TCP on the same port.
    pub dns: Option<(tokio::net::UdpSocket, TcpListener)>,
}

impl Listeners {
    /// HTTP only.
    pub fn http(http: TcpListener) -> Self {
        Listeners {
            http,
            raft: None,
            dns: None,
        }
    }
}

/// On restart of a one-member group: wait until this node leads and has applied everything in its
/// log (the committed index on disk may lag behind the last fsynced entry), so the agent never
/// answers reads from a state older than what it acknowledged. Also records changed addresses
/// in the membership.
async fn catch_up_alone(
    raft: &Raft,
    node_id: NodeId,
    node: &Node,
    config: &AgentConfig,
) -> Result<(), StartError> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if voters != [node_id] {
        return Ok(());
    }
    let target = m.last_log_index.unwrap_or(0);
    let patience = Duration::from_millis(config.raft.election_timeout_max.as_millis() * 20);
    let mut rx = raft.metrics();
    tokio::time::timeout(
        patience,
        rx.wait_for(|m| {
            m.state == ServerState::Leader && m.last_applied.map_or(0, |l| l.index) >= target
        }),
    )
    .await
    .map_err(|_| StartError::Raft("timed out replaying the log after restart".into()))?
    .map_err(|e| StartError::Raft(format!("raft stopped while replaying the log: {e}")))?;
    if membership.get_node(&node_id).is_some_and(|n| n != node) {
        let nodes = BTreeMap::from([(node_id, node.clone())]);
        raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
            .await
            .map_err(|e| StartError::Raft(format!("cannot record the new addresses: {e}")))?;
    }
    Ok(())
}
