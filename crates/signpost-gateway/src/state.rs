//! What the request path reads: an immutable [`Snapshot`] of the routes, each with its current
//! instances, their connection pools and counters.
//!
//! The controller builds a new snapshot whenever routes or instance lists change and publishes
//! it with [`Shared::publish`]. Requests read it through [`Shared::snapshot`]: each worker
//! thread caches the last snapshot it saw and compares one atomic generation number per
//! request; only after a change does it take the read lock once to pick up the new one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use signpost_client::balance::{
    ConsistentHash, HasTags, LeastOutstanding, PeakEwma, Random, RoundRobin, SmoothWeighted,
    WeightedRandom,
};
use signpost_client::breaker::{BreakerConfig, OutlierConfig};
use signpost_client::retry::{Backoff, Jitter, RetryBudget, RetryPolicy};
use signpost_client::selector::Selector;
use signpost_client::{Endpoints, Instance, ServiceWatch};

use crate::config::GatewayConfig;
use crate::headers::RequestIds;
use crate::metrics::{GatewayMetrics, RouteMetrics, UpstreamStats};
use crate::pool::HostPool;
use crate::route::{BalancerKind, RouteSpec, RouteTable};

/// A route with its runtime state. Lives as long as its spec is unchanged: breakers, balancer
/// state and counters carry over from one snapshot to the next.
pub(crate) struct Route {
    /// What the route says.
    pub(crate) spec: RouteSpec,
    /// The SDK's instance selection: balancer, tag filter, per-instance breakers, ejection.
    pub(crate) selector: Selector,
    /// The SDK's retry policy, with this route's retry budget.
    pub(crate) retry: RetryPolicy,
    /// Counters.
    pub(crate) metrics: RouteMetrics,
    /// Counters per instance id (control plane only: the snapshot holds direct references).
    upstream_stats: Mutex<HashMap<String, Arc<UpstreamStats>>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("spec", &self.spec).finish()
    }
}

impl Route {
    /// A route for `spec` with the gateway-wide breaker, ejection and budget settings.
    pub(crate) fn new(spec: RouteSpec, config: &GatewayConfig) -> Route {
        let builder = Selector::builder();
        let mut builder = match &spec.balancer {
            BalancerKind::RoundRobin => builder.balancer(RoundRobin::new()),
            BalancerKind::Random => builder.balancer(Random::new()),
            BalancerKind::WeightedRandom => builder.balancer(WeightedRandom::new()),
            BalancerKind::SmoothWeighted => builder.balancer(SmoothWeighted::new()),
            BalancerKind::LeastOutstanding => builder.balancer(LeastOutstanding::new()),
            BalancerKind::PeakEwma => builder.balancer(PeakEwma::new()),
            BalancerKind::ConsistentHash(_) => builder.balancer(ConsistentHash::new()),
        };
        if let Some(tag) = &spec.tag {
            builder = builder.filter(HasTags::new([tag.clone()]));
        }
        let b = &config.breaker;
        builder = builder.breaker(BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            failure_ratio: b.failure_ratio,
            window: b.window.to_std(),
            min_requests: b.min_requests,
            cool_down: b.cool_down.to_std(),
            ..BreakerConfig::default()
        });
        let o = &config.outlier;
        builder = if o.consecutive_failures == 0 {
            builder.no_outlier_detection()
        } else {
            builder.outlier_detection(OutlierConfig {
                consecutive_failures: o.consecutive_failures,
                base_ejection: o.base_ejection.to_std(),
                max_ejection: o.max_ejection.to_std(),
                max_ejection_percent: o.max_ejection_percent,
            })
        };
        let retry = if spec.retry.attempts <= 1 {
            RetryPolicy::none()
        } else {
            let budget = &config.retry_budget;
            RetryPolicy::default()
                .max_attempts(spec.retry.attempts)
                .retry_statuses(spec.retry.statuses.iter().copied())
                .retry_timeouts(spec.retry.timeouts)
                .backoff(Backoff {
                    base: spec.retry.backoff,
                    max: spec.retry.backoff.max(std::time::Duration::from_secs(1)),
                    jitter: Jitter::Equal,
                })
                .budget_with(Arc::new(RetryBudget::new(
                    budget.ratio,
                    budget.min_per_sec,
                    budget.ttl.to_std(),
                )))
        };
        Route {
            spec,
            selector: builder.build(),
            retry,
            metrics: RouteMetrics::default(),
            upstream_stats: Mutex::new(HashMap::new()),
        }
    }

    /// The counters of instance `id` on this route, created on first use; forgets instances not
    /// in `live`.
    pub(crate) fn stats_for(&self, instances: &[Instance]) -> Vec<Arc<UpstreamStats>> {
        let mut map = self
            .upstream_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|id, _| instances.iter().any(|i| &i.id == id));
        instances
            .iter()
            .map(|i| map.entry(i.id.clone()).or_default().clone())
            .collect()
    }
}

/// One instance of a route's service as the request path needs it.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// Connections to the instance (shared by every route that reaches it).
    pub(crate) pool: Arc<HostPool>,
    /// This route's counters for the instance.
    pub(crate) stats: Arc<UpstreamStats>,
}

/// A route and its service's current instances.
pub(crate) struct RouteEntry {
    /// The route.
    pub(crate) route: Arc<Route>,
    /// The healthy instances, as discovery published them: the selector keys its endpoint
    /// states by the list's version and returns positions into it.
    pub(crate) instances: Arc<Endpoints>,
    /// Parallel to `instances` (the selector's chosen position indexes both).
    pub(crate) upstreams: Box<[Upstream]>,
    /// The discovery handle (for the admin API's view of the watch).
    pub(crate) watch: ServiceWatch,
    /// The watch had its first list when the snapshot was built (an auto route's first
    /// request waits for this; see `crate::auto`).
    pub(crate) resolved: bool,
}

impl AsRef<RouteSpec> for RouteEntry {
    fn as_ref(&self) -> &RouteSpec {
        &self.route.spec
    }
}

/// A followed service, for the admin API.
pub(crate) struct ServiceView {
    /// The service.
    pub(crate) name: String,
    /// Its discovery handle.
    pub(crate) watch: ServiceWatch,
    /// A configured route names it.
    pub(crate) configured: bool,
    /// The registry's catalog lists it.
    pub(crate) in_catalog: bool,
    /// The route its metadata declares (`gateway.prefix`), if any.
    pub(crate) declared: Option<RouteSpec>,
    /// Why its metadata declares no usable route.
    pub(crate) problem: Option<String>,
    /// Its instances at addresses in `registry.deny_cidrs`, left out of selection.
    pub(crate) refused_instances: Vec<RefusedInstance>,
}

/// An instance the gateway does not forward to, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedInstance {
    /// Instance id.
    pub id: String,
    /// `host:port` as registered.
    pub address: String,
    /// Why it is left out.
    pub reason: String,
}

/// Everything the request path reads, immutable.
pub(crate) struct Snapshot {
    /// The routes in matching order.
    pub(crate) table: RouteTable<RouteEntry>,
    /// The followed services, by name (admin API only).
    pub(crate) services: Vec<ServiceView>,
    /// `[auto_routes]`, when on: the prefix and the catalog the request path checks.
    pub(crate) auto: Option<crate::auto::AutoView>,
}

/// State shared by the control plane, the request path and the admin API.
pub(crate) struct Shared {
    /// Distinguishes gateways in one process (tests) in the per-thread snapshot cache.
    id: u64,
    /// Bumped after every publish.
    generation: AtomicU64,
    /// The current snapshot.
    current: RwLock<Arc<Snapshot>>,
    /// Gateway-wide counters.
    pub(crate) metrics: GatewayMetrics,
    /// Request id maker.
    pub(crate) ids: RequestIds,
    /// Log every request.
    pub(crate) access_log: bool,
    /// Keep client-sent `X-Forwarded-Proto`/`-Host`.
    pub(crate) trust_forwarded: bool,
    /// The proxy listener's TLS (`[tls]`), reloadable; `None`: plain HTTP.
    pub(crate) tls: Option<Arc<signpost_tls::ReloadingAcceptor>>,
    /// Client connection timeouts and caps (`[limits]`).
    pub(crate) limits: crate::config::LimitsSection,
    /// The upgraded (WebSocket) connections, capped and closed at shutdown.
    pub(crate) upgrades: crate::upgrade::Upgrades,
    /// Woken at every publish (requests waiting for an auto route's first list).
    pub(crate) published: tokio::sync::Notify,
    /// Services requests asked the control plane to follow (`[auto_routes]`).
    pub(crate) demand: crate::auto::Demand,
    /// Makes each sampled request's server span; `None` while tracing is off (nothing is done
    /// per request then).
    pub(crate) tracing: Option<crate::trace::Tracing>,
}

/// The snapshot a worker thread saw last.
struct Cached {
    /// Whose.
    gateway: u64,
    /// Which generation.
    generation: u64,
    /// The snapshot.
    snapshot: Arc<Snapshot>,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

static NEXT_GATEWAY_ID: AtomicU64 = AtomicU64::new(1);

impl Shared {
    pub(crate) fn new(
        config: &GatewayConfig,
        tls: Option<Arc<signpost_tls::ReloadingAcceptor>>,
    ) -> Shared {
        Shared {
            id: NEXT_GATEWAY_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(1),
            current: RwLock::new(Arc::new(Snapshot {
                table: RouteTable::new(Vec::new()),
                services: Vec::new(),
                auto: None,
            })),
            metrics: GatewayMetrics::default(),
            ids: RequestIds::default(),
            access_log: config.access_log,
            trust_forwarded: config.trust_forwarded_headers,
            tls,
            limits: config.limits.clone(),
            upgrades: crate::upgrade::Upgrades::new(
                config.limits.max_upgraded,
                config.limits.upgrade_idle_timeout.to_std(),
            ),
            published: tokio::sync::Notify::new(),
            demand: crate::auto::Demand::default(),
            tracing: crate::trace::Tracing::if_enabled(),
        }
    }

    /// The current snapshot: one atomic load when it has not changed since this thread's last
    /// look.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        let generation = self.generation.load(Ordering::Acquire);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(c) = cache.as_ref() {
                if c.gateway == self.id && c.generation == generation {
                    return c.snapshot.clone();
                }
            }
            let snapshot = self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            *cache = Some(Cached {
                gateway: self.id,
                generation,
                snapshot: snapshot.clone(),
            });
            snapshot
        })
    }

    /// Replaces the snapshot; requests pick it up from their next one on.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
        self.published.notify_waiters();
    }
}
