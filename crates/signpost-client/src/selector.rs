//! [`Selector`]: the per-request instance selection of a [`ServiceClient`] (and of the gateway),
//! and [`EndpointState`], everything it knows about one endpoint.
//!
//! Per request, [`Selector::select`]:
//! 1. takes the [`EndpointState`] of every instance of the [`Endpoints`] it is given — one read
//!    of a table that is rebuilt only when the list's version changes (states of instances that
//!    stay are carried over, states of instances that left are dropped);
//! 2. drops instances already tried by this call, ejected outliers and instances whose breaker
//!    is open; runs the [`Filter`]s; lets the [`Balancer`] pick (reading each candidate's
//!    [`EndpointStats`]); takes the breaker's permit. Nothing left because of open breakers →
//!    [`SelectError::CircuitOpen`]; nothing at all → [`SelectError::NoInstances`];
//! 3. returns a [`Selected`]: the instance, its position in the list, and its state, which
//!    [`Selected::finish`] updates with the attempt's outcome (breaker, outlier detector,
//!    balancer statistics) without looking anything up again.
//!
//! [`ServiceClient`]: crate::client::ServiceClient

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::balance::{
    request_ended, request_started, Balancer, Candidate, EndpointStats, Filter, Outcome, PeakEwma,
    PickContext,
};
use crate::breaker::{
    BreakerConfig, BreakerState, Breakers, CircuitBreaker, OutlierConfig, OutlierDetector,
    OutlierHost, Permit,
};
use crate::endpoints::Endpoints;
use crate::instance::Instance;

#[cfg(test)]
mod tests;

/// Why [`Selector::select`] found no instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// There are no instances (or the filters left none).
    #[error("no instances")]
    NoInstances,
    /// There are instances, but every one's circuit breaker (or the service's) is open.
    #[error("every circuit is open")]
    CircuitOpen,
}

/// Everything a [`Selector`] keeps about one endpoint (instance), in one place: its circuit
/// breaker, its outlier-ejection state and the balancer statistics. Reached once per request
/// through the selector's table; it outlives list changes that keep its instance and is dropped
/// with the last list that had it.
#[derive(Debug)]
pub struct EndpointState {
    /// The instance's id (states carry over by id from one list to the next).
    id: String,
    /// The instance's circuit breaker (`None`: breakers disabled).
    breaker: Option<CircuitBreaker>,
    /// The instance's failure streak and ejection (`None`: ejection disabled).
    outlier: Option<OutlierHost>,
    /// Requests in flight and latency estimate, for the balancer.
    stats: EndpointStats,
}

impl EndpointState {
    /// The instance's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance's circuit breaker, if breakers are enabled.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The breaker's state (`Closed` when breakers are disabled).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .as_ref()
            .map_or(BreakerState::Closed, CircuitBreaker::state)
    }

    /// The instance's outlier-ejection state, if ejection is enabled.
    pub fn outlier(&self) -> Option<&OutlierHost> {
        self.outlier.as_ref()
    }

    /// The balancer statistics.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }
}

/// The endpoint states of one list, position for position.
#[derive(Debug)]
struct Table {
    /// The version of the list the states are for.
    version: u64,
    /// One state per position of that list.
    states: Arc<[Arc<EndpointState>]>,
}

/// The per-request instance selection of a [`ServiceClient`](crate::client::ServiceClient),
/// usable on its own (the gateway and the overhead benchmark use exactly this): outlier
/// ejection, per-instance and per-service circuit breakers, filters and a balancer, over one
/// [`EndpointState`] per instance.
///
/// ```
/// use signpost_client::balance::{Outcome, PickContext, RoundRobin};
/// use signpost_client::endpoints::Endpoints;
/// use signpost_client::selector::Selector;
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let endpoints = Endpoints::new(1, vec![mk("a"), mk("b")]);
/// let selector = Selector::builder().balancer(RoundRobin::new()).build();
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let selected = selector.select(&endpoints, &PickContext::new(), &[]).unwrap();
/// assert_eq!(endpoints[selected.position()].id, selected.instance().id);
/// println!("sending to {}", selected.instance().base_url());
/// selected.finish(Outcome::Success);
/// # });
/// ```
pub struct Selector {
    /// Picks among the candidates.
    balancer: Arc<dyn Balancer>,
    /// Narrow the candidates, in order.
    filters: Vec<Arc<dyn Filter>>,
    /// What the per-instance breakers share (`None`: disabled).
    breakers: Option<Breakers>,
    /// The service-wide circuit breaker (`None`: disabled).
    service_breaker: Option<CircuitBreaker>,
    /// Outlier ejection (`None`: disabled).
    outliers: Option<OutlierDetector>,
    /// The endpoint states of the last list seen.
    table: RwLock<Table>,
    /// How many times the table was rebuilt (a new list version).
    rebuilds: AtomicU64,
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("balancer", &self.balancer.name())
            .field("filters", &self.filters.len())
            .field("breakers", &self.breakers.as_ref().map(|b| b.config()))
            .field(
                "service_breaker",
                &self.service_breaker.as_ref().map(|b| b.config()),
            )
            .field("outliers", &self.outliers.as_ref().map(|o| o.config()))
            .finish()
    }
}

/// Builds a [`Selector`]; see [`Selector::builder`].
#[must_use]
pub struct SelectorBuilder {
    /// The balancer (default [`PeakEwma`]).
    balancer: Option<Arc<dyn Balancer>>,
    /// Filters, in order.
    filters: Vec<Arc<dyn Filter>>,
    /// Per-instance breaker configuration (default on).
    breaker: Option<BreakerConfig>,
    /// Service breaker configuration (default off).
    service_breaker: Option<BreakerConfig>,
    /// Outlier ejection configuration (default on).
    outliers: Option<OutlierConfig>,
}

impl Selector {
    /// A builder with the defaults: [`PeakEwma`], per-instance breakers and outlier ejection
    /// with default settings, no service breaker, no filters.
    ///
    /// ```
    /// use signpost_client::balance::{ConsistentHash, ZoneAware};
    /// use signpost_client::breaker::BreakerConfig;
    /// use signpost_client::selector::Selector;
    ///
    /// let selector = Selector::builder()
    ///     .balancer(ConsistentHash::new())
    ///     .filter(ZoneAware::new("eu-west-1a"))
    ///     .service_breaker(BreakerConfig::default())
    ///     .no_outlier_detection()
    ///     .build();
    /// ```
    pub fn builder() -> SelectorBuilder {
        SelectorBuilder {
            balancer: None,
            filters: Vec::new(),
            breaker: Some(BreakerConfig::default()),
            service_breaker: None,
            outliers: Some(OutlierConfig::default()),
        }
    }

    /// The balancer.
    pub fn balancer(&self) -> &Arc<dyn Balancer> {
        &self.balancer
    }

    /// What the per-instance breakers share, if they are enabled.
    pub fn breakers(&self) -> Option<&Breakers> {
        self.breakers.as_ref()
    }

    /// The service breaker, if enabled.
    pub fn service_breaker(&self) -> Option<&CircuitBreaker> {
        self.service_breaker.as_ref()
    }

    /// The outlier detector, if enabled.
    pub fn outliers(&self) -> Option<&OutlierDetector> {
        self.outliers.as_ref()
    }

    /// The state of instance `id` in the last list selected from, if it is there.
    pub fn endpoint(&self, id: &str) -> Option<Arc<EndpointState>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.states.iter().find(|s| s.id == id).cloned()
    }

    /// The breaker state of instance `id` (`Closed` if breakers are disabled or the instance is
    /// unknown).
    pub fn breaker_state(&self, id: &str) -> BreakerState {
        self.endpoint(id)
            .map_or(BreakerState::Closed, |s| s.breaker_state())
    }

    /// Whether instance `id` is ejected now.
    pub fn is_ejected(&self, id: &str) -> bool {
        self.endpoint(id).is_some_and(|s| self.ejected(&s))
    }

    /// Whether the endpoint with `state` is ejected now.
    pub fn ejected(&self, state: &EndpointState) -> bool {
        match (&self.outliers, &state.outlier) {
            (Some(outliers), Some(host)) => outliers.is_ejected(host),
            _ => false,
        }
    }

    /// The endpoint states of `endpoints`, position for position. Read from the table when it
    /// is for this very list (same version); otherwise the table is rebuilt for it, carrying the
    /// states of instances that stay over by id.
    pub fn endpoint_states(&self, endpoints: &Endpoints) -> Arc<[Arc<EndpointState>]> {
        {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            if table.version == endpoints.version() {
                return table.states.clone();
            }
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.version == endpoints.version() {
            return table.states.clone();
        }
        let old: HashMap<&str, &Arc<EndpointState>> =
            table.states.iter().map(|s| (s.id.as_str(), s)).collect();
        let states: Arc<[Arc<EndpointState>]> = endpoints
            .iter()
            .map(|instance| match old.get(instance.id.as_str()) {
                Some(state) => Arc::clone(state),
                None => Arc::new(self.new_state(&instance.id)),
            })
            .collect();
        drop(old);
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        *table = Table {
            version: endpoints.version(),
            states: states.clone(),
        };
        states
    }

    /// The state of an instance seen for the first time.
    fn new_state(&self, id: &str) -> EndpointState {
        EndpointState {
            id: id.to_string(),
            breaker: self.breakers.as_ref().map(Breakers::breaker),
            outlier: self.outliers.as_ref().map(OutlierDetector::host),
            stats: EndpointStats::new(),
        }
    }

    /// How many times the table was rebuilt (tests).
    #[cfg(test)]
    fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// Selects an instance of `endpoints` for one attempt, skipping the ids in `tried` unless
    /// nothing else is left. The returned [`Selected`] holds the chosen position, the breaker
    /// permit and the in-flight record; finish it with the attempt's outcome.
    pub fn select<'a>(
        &'a self,
        endpoints: &'a Endpoints,
        ctx: &PickContext,
        tried: &[&str],
    ) -> Result<Selected<'a>, SelectError> {
        let instances: &'a [Instance] = endpoints;
        if instances.is_empty() {
            return Err(SelectError::NoInstances);
        }
        let states = self.endpoint_states(endpoints);
        if let Some(service) = &self.service_breaker {
            if !service.is_available() {
                return Err(SelectError::CircuitOpen);
            }
        }
        let check_breakers = self.breakers.as_ref().is_some_and(|b| !b.all_closed());
        let check_outliers = self.outliers.as_ref().filter(|o| !o.none_ejected());
        let mut blocked = false;
        // Sorts an instance: `None` if it is not serving or its breaker blocks it, `Some(true)` if it is a
        // candidate, `Some(false)` if only a fallback (ejected or already tried).
        let mut admit = |instance: &Instance, state: &EndpointState| {
            // Starting, stopping (draining) or in maintenance: never chosen, whatever list
            // it came in.
            if !instance.serving() {
                return None;
            }
            if check_breakers && state.breaker.as_ref().is_some_and(|b| !b.is_available()) {
                blocked = true;
                return None;
            }
            let ejected = check_outliers
                .is_some_and(|o| state.outlier.as_ref().is_some_and(|h| o.is_ejected(h)));
            Some(!(ejected || tried.contains(&instance.id.as_str())))
        };
        let all = instances
            .iter()
            .zip(states.iter())
            .enumerate()
            .map(|(i, (instance, state))| (Candidate::new(i, instance, &state.stats), state));
        // Without filters and with few instances the candidates live on the stack: candidates
        // from the front, fallbacks from the back (no allocation per request).
        let first = Candidate::new(0, &instances[0], &states[0].stats);
        let mut stack = [first; STACK_CANDIDATES];
        let mut heap: Vec<Candidate<'_>>;
        let candidates: &mut [Candidate<'_>] =
            if self.filters.is_empty() && instances.len() <= STACK_CANDIDATES {
                let (mut front, mut back) = (0, STACK_CANDIDATES);
                for (candidate, state) in all {
                    match admit(candidate.instance(), state) {
                        Some(true) => {
                            stack[front] = candidate;
                            front += 1;
                        }
                        Some(false) => {
                            back -= 1;
                            stack[back] = candidate;
                        }
                        None => {}
                    }
                }
                if front > 0 {
                    &mut stack[..front]
                } else {
                    // Better an ejected or already-tried instance than none (ejection is
                    // advisory); back in the list's order.
                    let fallback = &mut stack[back..];
                    fallback.reverse();
                    fallback
                }
            } else {
                heap = Vec::with_capacity(instances.len());
                let mut fallback: Vec<Candidate<'_>> = Vec::new();
                for (candidate, state) in all {
                    match admit(candidate.instance(), state) {
                        Some(true) => heap.push(candidate),
                        Some(false) => fallback.push(candidate),
                        None => {}
                    }
                }
                if heap.is_empty() {
                    // Better an ejected or already-tried instance than none.
                    heap = fallback;
                }
                for filter in &self.filters {
                    filter.filter(&mut heap, ctx);
                }
                &mut heap
            };
        let mut len = candidates.len();
        loop {
            let Some(picked) = self.balancer.pick(&candidates[..len], ctx) else {
                return Err(if blocked {
                    SelectError::CircuitOpen
                } else {
                    SelectError::NoInstances
                });
            };
            let position = picked.position();
            let state = &states[position];
            let permit = match &state.breaker {
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        // Lost a race for the last half-open probe slot: pick again.
                        blocked = true;
                        len = retain_others(&mut candidates[..len], position);
                        continue;
                    }
                },
                None => None,
            };
            let service_permit = match &self.service_breaker {
                Some(service) => match service.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        if let (Some(breaker), Some(permit)) = (&state.breaker, permit) {
                            breaker.record(permit, Outcome::Cancelled);
                        }
                        return Err(SelectError::CircuitOpen);
                    }
                },
                None => None,
            };
            request_started(&*self.balancer, &state.stats);
            return Ok(Selected {
                selector: self,
                position,
                instance: &instances[position],
                state: Arc::clone(state),
                total: instances.len(),
                permit,
                service_permit,
                started: Some(tokio::time::Instant::now()),
            });
        }
    }
}

/// Up to this many instances, [`Selector::select`] keeps its candidates on the stack.
const STACK_CANDIDATES: usize = 16;

/// Moves the candidates other than the one at list position `position` to the front of
/// `candidates`; returns their number.
fn retain_others(candidates: &mut [Candidate<'_>], position: usize) -> usize {
    let (mut kept, mut next) = (0, 0);
    while next < candidates.len() {
        if candidates[next].position() != position {
            candidates[kept] = candidates[next];
            kept += 1;
        }
        next += 1;
    }
    kept
}

impl SelectorBuilder {
    /// The balancer (default [`PeakEwma`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Some(Arc::new(balancer));
        self
    }

    /// A balancer shared with other code (e.g. to inspect it).
    pub fn shared_balancer(mut self, balancer: Arc<dyn Balancer>) -> Self {
        self.balancer = Some(balancer);
        self
    }

    /// Adds a filter; filters run in the order added, after breakers and ejection.
    pub fn filter(mut self, filter: impl Filter) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Per-instance circuit breakers with `config` (on by default).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// No per-instance circuit breakers.
    pub fn no_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// A circuit breaker for the whole service as well (off by default).
    pub fn service_breaker(mut self, config: BreakerConfig) -> Self {
        self.service_breaker = Some(config);
        self
    }

    /// Outlier ejection with `config` (on by default).
    pub fn outlier_detection(mut self, config: OutlierConfig) -> Self {
        self.outliers = Some(config);
        self
    }

    /// No outlier ejection.
    pub fn no_outlier_detection(mut self) -> Self {
        self.outliers = None;
        self
    }

    /// The selector.
    pub fn build(self) -> Selector {
        Selector {
            balancer: self.balancer.unwrap_or_else(|| Arc::new(PeakEwma::new())),
            filters: self.filters,
            breakers: self.breaker.map(Breakers::new),
            service_breaker: self.service_breaker.map(CircuitBreaker::new),
            outliers: self.outliers.map(OutlierDetector::new),
            table: RwLock::new(Table {
                version: 0,
                states: Arc::new([]),
            }),
            rebuilds: AtomicU64::new(0),
        }
    }
}

/// An instance chosen by [`Selector::select`] for one attempt: the instance, its position in the
/// list, and its [`EndpointState`]. Finish it with the outcome; dropping it unfinished counts as
/// [`Outcome::Cancelled`] (frees a half-open probe slot, and counts the request out of the
/// endpoint's in-flight requests).
#[must_use = "finish the attempt with its outcome"]
pub struct Selected<'a> {
    /// Whose balancer, breakers and detector to tell.
    selector: &'a Selector,
    /// Where the instance is in the list selected from.
    position: usize,
    /// The chosen instance.
    instance: &'a Instance,
    /// Its state: breaker, outlier state, balancer statistics.
    state: Arc<EndpointState>,
    /// Instances in the list (for the outlier detector's ejection cap).
    total: usize,
    /// The instance breaker's permit.
    permit: Option<Permit>,
    /// The service breaker's permit.
    service_permit: Option<Permit>,
    /// When the request started; `None` once it was counted out.
    started: Option<tokio::time::Instant>,
}

impl<'a> Selected<'a> {
    /// The chosen instance.
    pub fn instance(&self) -> &'a Instance {
        self.instance
    }

    /// The chosen instance's position in the list selected from (the gateway keeps its
    /// upstreams in the same order).
    pub fn position(&self) -> usize {
        self.position
    }

    /// The chosen instance's state.
    pub fn state(&self) -> &EndpointState {
        &self.state
    }

    /// Records the attempt's outcome with the breakers, the outlier detector and the balancer.
    /// Returns the instance breaker's new state if this outcome changed it.
    pub fn finish(mut self, outcome: Outcome) -> Option<BreakerState> {
        self.complete(outcome)
    }

    fn complete(&mut self, outcome: Outcome) -> Option<BreakerState> {
        // One clock read serves the latency, the breakers and the outlier detector.
        let now = tokio::time::Instant::now();
        let selector = self.selector;
        let state = &*self.state;
        if let Some(started) = self.started.take() {
            let latency = now.saturating_duration_since(started);
            request_ended(&*selector.balancer, &state.stats, outcome, latency);
        }
        if let (Some(service), Some(permit)) =
            (&selector.service_breaker, self.service_permit.take())
        {
            service.record_at(permit, outcome, now);
        }
        if outcome != Outcome::Cancelled {
            if let (Some(outliers), Some(host)) = (&selector.outliers, &state.outlier) {
                let failed = outcome == Outcome::Failure;
                if let Some(ejected) = outliers.record_at(host, failed, self.total, now) {
                    tracing::warn!(
                        service = %self.instance.service,
                        instance = %self.instance.id,
                        ?ejected,
                        "outlier ejected"
                    );
                }
            }
        }
        let permit = self.permit.take()?;
        let transition = state.breaker.as_ref()?.record_at(permit, outcome, now);
        if let Some(state) = transition {
            tracing::info!(
                service = %self.instance.service,
                instance = %self.instance.id,
                ?state,
                "circuit breaker changed state"
            );
        }
        transition
    }
}

impl Drop for Selected<'_> {
    fn drop(&mut self) {
        if self.started.is_some() || self.permit.is_some() || self.service_permit.is_some() {
            self.complete(Outcome::Cancelled);
        }
    }
}
