//! The control plane: follows services through the SDK's watch-driven discovery, reads routes
//! declared in the registry, and publishes a new [`Snapshot`] whenever anything changes.
//!
//! - Every service a `[[route]]` names is followed from the start.
//! - With `registry.routes_from_metadata`, the SDK's catalog watch
//!   ([`Discovery::catalog`] over [`Registry::watch_services`], with the SDK's failover and
//!   reconnect backoff) reports which services exist; each is followed too, and the
//!   `gateway.*` metadata of its instances declares its route ([`crate::metadata`]). A service
//!   that leaves the catalog loses its route; one whose instances are all unhealthy keeps it
//!   (answering 503) until it leaves.
//! - Each followed service gets its own SDK [`Discovery`], so dropping the service stops its
//!   watch. A small task per service turns list changes into a rebuild signal; bursts of
//!   changes coalesce into one rebuild.
//! - Instances at addresses in `[registry] deny_cidrs` are left out of every list before
//!   anything reads it (routes, declarations); each refusal is logged once and shown in the
//!   admin API. Declared routes pass [`crate::guard::RoutePolicy`]; a refused one is logged
//!   once per change and shown as the service's problem.
//! - With `[auto_routes]`, the services requests name are followed on demand (see
//!   [`crate::auto`]): at most `max_services`, only while the catalog lists them, each with a
//!   route `<prefix>/<service>` unless a configured or declared route has that prefix.
//! - The same loop sweeps idle upstream connections.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use signpost_client::discovery::{Catalog, Discovery, DiscoveryOptions};
use signpost_client::registry::Registry;
use signpost_client::{Endpoints, ServiceWatch};
use signpost_core::cidr::{literal_ip, AddressPolicy};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::guard::RoutePolicy;
use crate::metadata;
use crate::pool::HostPool;
use crate::route::{Protocol, RouteSpec, RouteTable};
use crate::state::{RefusedInstance, Route, RouteEntry, ServiceView, Shared, Snapshot, Upstream};

/// A followed service.
struct Followed {
    /// Its instance list.
    watch: ServiceWatch,
    /// The discovery that feeds only this service (dropping it ends the watch).
    _discovery: Discovery,
    /// Turns list changes into rebuild signals.
    forwarder: JoinHandle<()>,
    /// Whether the catalog lists it now.
    in_catalog: bool,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// The SDK discovery options of every followed service (and the catalog).
pub(crate) fn discovery_options(config: &GatewayConfig) -> DiscoveryOptions {
    DiscoveryOptions {
        cache_dir: config.registry.cache_dir.clone(),
        ..DiscoveryOptions::default()
    }
}

pub(crate) struct Controller {
    /// Where snapshots go.
    shared: Arc<Shared>,
    /// The configuration.
    config: Arc<GatewayConfig>,
    /// The configured routes, resolved.
    config_specs: Vec<RouteSpec>,
    /// Services named by configured routes (always followed).
    configured: HashSet<String>,
    /// Where registry routes may go.
    policy: RoutePolicy,
    /// Instance addresses never forwarded to (`registry.deny_cidrs`).
    addresses: Arc<AddressPolicy>,
    /// Per followed service: the version of the discovery list last screened, the list
    /// without denied instances (the same `Arc` when none is), and the denied ones.
    screened: HashMap<String, Screened>,
    /// Where instance lists come from.
    registry: Arc<dyn Registry>,
    /// Followed services by name.
    followed: HashMap<String, Followed>,
    /// The route each registry service last declared.
    declared: HashMap<String, RouteSpec>,
    /// The last metadata problem logged per service (logged once per change).
    problems: HashMap<String, metadata::MetadataError>,
    /// Live routes (reused while their spec is unchanged).
    routes: Vec<Arc<Route>>,
    /// Connection pools by instance address and protocol.
    pools: HashMap<(String, Protocol), Arc<HostPool>>,
    /// Set by any followed list's change.
    dirty: Arc<Notify>,
    /// The registry's services as the catalog watch last listed them (`None`: not yet).
    catalog: Option<Arc<BTreeSet<String>>>,
    /// Services followed because a request named them under `[auto_routes] prefix`.
    auto_followed: BTreeSet<String>,
    /// The TLS client of `https` routes' pools (`None`: no usable `[upstream_tls]`).
    upstream_tls: Option<signpost_tls::tokio_rustls::TlsConnector>,
}

/// A service's list with the instances at denied addresses left out.
struct Screened {
    /// The discovery list's version it was made from.
    source: u64,
    /// What routes and declarations read.
    allowed: Arc<Endpoints>,
    /// What was left out, and why.
    refused: Vec<RefusedInstance>,
}

/// `list` without the instances whose address `policy` refuses, and those instances. The
/// same list (no copy, same version) when none is refused; otherwise a new list, made once per
/// discovery version so the selector's per-instance state survives unrelated rebuilds.
fn screen(policy: &AddressPolicy, list: &Arc<Endpoints>) -> (Arc<Endpoints>, Vec<RefusedInstance>) {
    let refused: Vec<RefusedInstance> = list
        .iter()
        .filter_map(|i| {
            let ip = literal_ip(&i.address)?;
            let refusal = policy.check(ip).err()?;
            Some(RefusedInstance {
                id: i.id.clone(),
                address: i.authority(),
                reason: format!("address {refusal} (registry.deny_cidrs)"),
            })
        })
        .collect();
    if refused.is_empty() {
        return (list.clone(), refused);
    }
    let allowed = list
        .iter()
        .filter(|i| !refused.iter().any(|r| r.id == i.id))
        .cloned()
        .collect();
    (Arc::new(Endpoints::new(list.index(), allowed)), refused)
}

impl Controller {
    pub(crate) fn new(
        shared: Arc<Shared>,
        config: Arc<GatewayConfig>,
        config_specs: Vec<RouteSpec>,
        registry: Arc<dyn Registry>,
        upstream_tls: Option<signpost_tls::tokio_rustls::TlsConnector>,
    ) -> Controller {
        let configured = config_specs.iter().map(|s| s.service.clone()).collect();
        let policy = RoutePolicy::new(config.registry.metadata_prefixes.as_deref(), &config_specs);
        let addresses = Arc::new(AddressPolicy::deny_only(config.registry.deny_cidrs.clone()));
        let mut controller = Controller {
            shared,
            config,
            config_specs,
            configured,
            policy,
            addresses,
            screened: HashMap::new(),
            registry,
            followed: HashMap::new(),
            declared: HashMap::new(),
            problems: HashMap::new(),
            routes: Vec::new(),
            pools: HashMap::new(),
            dirty: Arc::new(Notify::new()),
            catalog: None,
            auto_followed: BTreeSet::new(),
            upstream_tls,
        };
        let services: Vec<String> = controller.configured.iter().cloned().collect();
        for service in services {
            controller.follow(&service);
        }
        controller.rebuild();
        controller
    }

    /// The discovery handles of the configured services (for readiness).
    pub(crate) fn configured_watches(&self) -> Vec<ServiceWatch> {
        self.configured
            .iter()
            .filter_map(|s| self.followed.get(s).map(|f| f.watch.clone()))
            .collect()
    }

    fn follow(&mut self, service: &str) -> &mut Followed {
        if !self.followed.contains_key(service) {
            let discovery = Discovery::new(self.registry.clone(), discovery_options(&self.config));
            let watch = discovery.service(service);
            let mut updates = watch.updates();
            let mut status = watch.status_updates();
            let dirty = self.dirty.clone();
            // List changes, and status changes (the first list known: see `RouteEntry::resolved`).
            let forwarder = tokio::spawn(async move {
                loop {
                    let alive = tokio::select! {
                        changed = updates.changed() => changed.is_ok(),
                        changed = status.changed() => changed.is_ok(),
                    };
                    if !alive {
                        break;
                    }
                    dirty.notify_one();
                }
            });
            tracing::debug!(%service, "following service");
            self.followed.insert(
                service.to_string(),
                Followed {
                    watch,
                    _discovery: discovery,
                    forwarder,
                    in_catalog: false,
                },
            );
        }
        self.followed.get_mut(service).expect("just inserted")
    }

    /// Notes the catalog; with `routes_from_metadata`, follows what it lists; drops what left
    /// it (configured services stay).
    fn on_catalog(&mut self, services: &BTreeSet<String>) {
        if self.config.registry.routes_from_metadata {
            for service in services {
                self.follow(service).in_catalog = true;
            }
        }
        for (name, f) in self.followed.iter_mut() {
            f.in_catalog = services.contains(name);
        }
        self.auto_followed
            .retain(|service| services.contains(service));
        let configured = &self.configured;
        self.followed
            .retain(|name, f| f.in_catalog || configured.contains(name));
        self.catalog = Some(Arc::new(services.clone()));
    }

    /// Follows the services requests named under `[auto_routes] prefix` (those the catalog
    /// lists, up to `max_services`).
    fn on_demand(&mut self) {
        let asked = self.shared.demand.take();
        let Some(catalog) = self.catalog.clone() else {
            return;
        };
        let max = self.config.auto_routes.max_services;
        for service in asked {
            if !catalog.contains(&service) || self.auto_followed.contains(&service) {
                continue;
            }
            if self.auto_followed.len() >= max {
                tracing::warn!(%service, max, "not routing the service by name: auto_routes.max_services reached");
                continue;
            }
            tracing::debug!(%service, "routing the service by name");
            self.follow(&service).in_catalog = true;
            self.auto_followed.insert(service);
        }
    }

    /// Re-reads the routes registry services declare.
    fn update_declared(&mut self) {
        if !self.config.registry.routes_from_metadata {
            return;
        }
        for (service, f) in &self.followed {
            if !f.in_catalog {
                continue;
            }
            let Some(instances) = self.screened.get(service).map(|s| &s.allowed) else {
                continue;
            };
            if instances.is_empty() {
                // Unhealthy or not yet known: keep what it declared (503 rather than 404).
                continue;
            }
            match metadata::spec_from_instances(&self.config, &self.policy, service, instances) {
                Ok(Some(spec)) => {
                    self.problems.remove(service);
                    if self.declared.get(service) != Some(&spec) {
                        tracing::info!(
                            %service,
                            prefix = %spec.prefix,
                            host = spec.host.as_deref().unwrap_or("*"),
                            "route declared in the registry"
                        );
                        self.declared.insert(service.clone(), spec);
                    }
                }
                Ok(None) => {
                    self.problems.remove(service);
                    if self.declared.remove(service).is_some() {
                        tracing::info!(%service, "service no longer declares a route");
                    }
                }
                Err(problem) => {
                    if self.problems.get(service) != Some(&problem) {
                        tracing::warn!(%service, "not routing the service: {problem}");
                        self.problems.insert(service.clone(), problem);
                    }
                    self.declared.remove(service);
                }
            }
        }
        let followed = &self.followed;
        self.declared.retain(|service, spec| {
            let keep = followed.get(service).is_some_and(|f| f.in_catalog);
            if !keep {
                tracing::info!(%service, prefix = %spec.prefix, "service left the registry; route removed");
            }
            keep
        });
    }

    /// Screens every followed service's current list against `deny_cidrs`, logging each
    /// instance newly refused.
    fn update_screened(&mut self) {
        let followed = &self.followed;
        self.screened
            .retain(|service, _| followed.contains_key(service));
        for (service, f) in &self.followed {
            let list = f.watch.instances();
            let previous = self.screened.get(service);
            if previous.is_some_and(|p| p.source == list.version()) {
                continue;
            }
            let (allowed, refused) = screen(&self.addresses, &list);
            for r in &refused {
                let known = previous.is_some_and(|p| p.refused.contains(r));
                if !known {
                    tracing::warn!(%service, instance = %r.id, "not forwarding to the instance: {}", r.reason);
                }
            }
            self.screened.insert(
                service.clone(),
                Screened {
                    source: list.version(),
                    allowed,
                    refused,
                },
            );
        }
    }

    /// Builds and publishes a new snapshot.
    fn rebuild(&mut self) {
        self.update_screened();
        self.update_declared();

        let mut specs = self.config_specs.clone();
        let mut taken: HashSet<(Option<String>, String)> = specs
            .iter()
            .map(|s| (s.host.clone(), s.prefix.clone()))
            .collect();
        let mut declared: Vec<&RouteSpec> = self.declared.values().collect();
        declared.sort_by(|a, b| a.service.cmp(&b.service));
        for spec in declared {
            if taken.insert((spec.host.clone(), spec.prefix.clone())) {
                specs.push(spec.clone());
            } else {
                tracing::debug!(
                    service = %spec.service,
                    prefix = %spec.prefix,
                    "registry route shadowed by another route with the same host and prefix"
                );
            }
        }

        if let Some(prefix) = &self.config.auto_routes.prefix {
            let base = crate::auto::base(prefix);
            for service in &self.auto_followed {
                let Some(spec) = crate::auto::spec(&self.config, &base, service) else {
                    continue;
                };
                if taken.insert((None, spec.prefix.clone())) {
                    specs.push(spec);
                }
            }
        }

        let previous = std::mem::take(&mut self.routes);
        let mut used_pools = HashSet::new();
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let route = previous
                .iter()
                .find(|r| r.spec == spec)
                .cloned()
                .unwrap_or_else(|| Arc::new(Route::new(spec, &self.config)));
            let Some(followed) = self.followed.get(&route.spec.service) else {
                continue;
            };
            let Some(instances) = self.screened.get(&route.spec.service) else {
                continue;
            };
            let instances = instances.allowed.clone();
            let stats = route.stats_for(&instances);
            let upstreams: Box<[Upstream]> = instances
                .iter()
                .zip(stats)
                .map(|(instance, stats)| {
                    let key = (instance.authority(), route.spec.protocol);
                    used_pools.insert(key.clone());
                    let max_idle = self.config.upstream.max_idle_per_instance;
                    let shards = self.config.worker_threads();
                    let deny = &self.addresses;
                    let tls = &self.upstream_tls;
                    let pool = self
                        .pools
                        .entry(key)
                        .or_insert_with_key(|(authority, protocol)| {
                            Arc::new(HostPool::new(
                                authority.clone(),
                                *protocol,
                                max_idle,
                                shards,
                                deny.clone(),
                                (*protocol == Protocol::Https)
                                    .then(|| tls.clone())
                                    .flatten(),
                            ))
                        })
                        .clone();
                    Upstream { pool, stats }
                })
                .collect();
            self.routes.push(route.clone());
            entries.push(RouteEntry {
                route,
                instances,
                upstreams,
                watch: followed.watch.clone(),
                resolved: followed.watch.status().ready,
            });
        }
        self.pools.retain(|key, _| used_pools.contains(key));
        let mut services: Vec<ServiceView> = self
            .followed
            .iter()
            .map(|(name, f)| ServiceView {
                name: name.clone(),
                watch: f.watch.clone(),
                configured: self.configured.contains(name),
                in_catalog: f.in_catalog,
                declared: self.declared.get(name).cloned(),
                problem: self.problems.get(name).map(ToString::to_string),
                refused_instances: self
                    .screened
                    .get(name)
                    .map(|s| s.refused.clone())
                    .unwrap_or_default(),
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let auto = self
            .config
            .auto_routes
            .prefix
            .as_deref()
            .map(|prefix| crate::auto::AutoView {
                base: crate::auto::base(prefix),
                catalog: self.catalog.clone(),
                full: self.auto_followed.len() >= self.config.auto_routes.max_services,
                max: self.config.auto_routes.max_services,
            });
        self.shared.publish(Snapshot {
            table: RouteTable::new(entries),
            services,
            auto,
        });
    }

    fn sweep(&self) {
        for pool in self.pools.values() {
            pool.sweep();
        }
    }

    /// Runs until `stop` turns true (or its sender is dropped). With `catalog`, follows the
    /// services its [`Discovery::catalog`] lists.
    pub(crate) async fn run(mut self, catalog: Option<Discovery>, mut stop: watch::Receiver<bool>) {
        let mut catalog: Option<Catalog> = catalog.as_ref().map(Discovery::catalog);
        // A connection is closed by the second sweep that finds it idle: after between half
        // and all of idle_timeout.
        let idle = self.config.upstream.idle_timeout.to_std();
        let mut sweep = tokio::time::interval((idle / 2).max(Duration::from_millis(500)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    if *stop.borrow() {
                        return;
                    }
                }
                _ = self.dirty.notified() => self.rebuild(),
                _ = self.shared.demand.notify.notified() => {
                    self.on_demand();
                    self.rebuild();
                }
                changed = changed_opt(&mut catalog) => {
                    if changed.is_err() {
                        catalog = None;
                        continue;
                    }
                    let set = catalog
                        .as_mut()
                        .and_then(|c| c.borrow_and_update().clone());
                    if let Some(set) = set {
                        self.on_catalog(&set.services);
                        self.rebuild();
                    }
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }
}

/// Waits for the catalog's next change (forever when there is no catalog watcher).
async fn changed_opt(catalog: &mut Option<Catalog>) -> Result<(), watch::error::RecvError> {
    match catalog {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}
