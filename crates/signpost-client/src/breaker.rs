//! Circuit breakers and outlier ejection.
//!
//! - [`CircuitBreaker`]: one per instance (and optionally one per service). **Closed** lets
//!   everything through and counts results; after `consecutive_failures` failures in a row, or a
//!   failure ratio of at least `failure_ratio` over the rolling `window` once it holds
//!   `min_requests` results, it turns **Open** and rejects everything for `cool_down`; then it is
//!   **HalfOpen** and lets at most `half_open_probes` requests through at a time. A successful
//!   probe closes it (after `half_open_successes` successes), a failed one opens it again.
//! - [`Breakers`]: the per-instance breakers of one service, keyed by instance id.
//! - [`OutlierDetector`]: `consecutive_failures` 5xx / connect failures in a row eject an instance
//!   for `base_ejection × times ejected` (capped at `max_ejection`, and the multiplier drains
//!   again while the instance behaves); never more than `max_ejection_percent` of the instances at
//!   once, and never permanently.
//!
//! Time is [`tokio::time::Instant`], so tests drive it with `tokio::time::pause()` and
//! `advance()`; every method also has an `_at(now)` form that takes the time as an argument.
//!
//! ```
//! use signpost_client::balance::Outcome;
//! use signpost_client::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
//!
//! let breaker = CircuitBreaker::new(BreakerConfig { consecutive_failures: 2, ..Default::default() });
//! for _ in 0..2 {
//!     let permit = breaker.try_acquire().expect("closed");
//!     breaker.record(permit, Outcome::Failure);
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(breaker.try_acquire().is_err());
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::{IdMap, Outcome};

/// When a [`CircuitBreaker`] opens and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (0: never on this rule). Default 5.
    pub consecutive_failures: u32,
    /// Open when failures / results over the window reach this ratio (above 1.0: never on this
    /// rule). Default 0.5.
    pub failure_ratio: f64,
    /// The rolling window the ratio is computed over (ten buckets). Default 10 s.
    pub window: Duration,
    /// The ratio rule applies only once the window holds this many results. Default 20.
    pub min_requests: u32,
    /// How long the breaker stays open before probing. Default 5 s.
    pub cool_down: Duration,
    /// Probes allowed in flight at once while half-open (at least 1). Default 1.
    pub half_open_probes: u32,
    /// Successful probes needed to close (at least 1). Default 1.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests: 20,
            cool_down: Duration::from_secs(5),
            half_open_probes: 1,
            half_open_successes: 1,
        }
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Everything goes through.
    Closed,
    /// Everything is rejected until the cool-down ends.
    Open,
    /// A bounded number of probes go through.
    HalfOpen,
}

/// A request was rejected because its breaker is open (or half-open with every probe slot
/// taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; next probe in {retry_after:?}")]
pub struct BreakerOpen {
    /// Time until the breaker lets a probe through (zero: as soon as a probe slot frees up).
    pub retry_after: Duration,
}

/// Admission for one request through a [`CircuitBreaker`]; hand it back with
/// [`CircuitBreaker::record`] (which also accepts [`Outcome::Cancelled`] to return a probe slot
/// without a verdict).
#[must_use = "a permit must be handed back with CircuitBreaker::record"]
#[derive(Debug)]
pub struct Permit {
    /// The breaker's generation when admitted; results from an older generation are ignored.
    generation: u64,
    /// Whether this request holds a half-open probe slot.
    probe: bool,
}

impl Permit {
    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A circuit breaker. Thread-safe; share it by reference or `Arc`.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::balance::Outcome;
/// use signpost_client::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// match breaker.try_acquire() {
///     Ok(permit) => {
///         // ... make the call ...
///         breaker.record(permit, Outcome::Success);
///     }
///     Err(open) => println!("skipping: {open}"),
/// }
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// # }
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    /// Thresholds and timings.
    config: BreakerConfig,
    /// The state machine.
    inner: Mutex<Inner>,
    /// Shared count of breakers that are not closed ([`Breakers::all_closed`]'s fast path).
    not_closed: Option<Arc<AtomicUsize>>,
}

#[derive(Debug)]
struct Inner {
    /// Where the machine is.
    state: State,
    /// Bumped on every transition; permits from an older generation no longer count.
    generation: u64,
    /// Failures in a row while closed.
    consecutive: u32,
    /// Results over the rolling window while closed.
    window: Window,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// Ten buckets covering the rolling window.
#[derive(Debug)]
struct Window {
    /// Time zero for bucket numbering.
    epoch: Instant,
    /// Length of one bucket.
    bucket: Duration,
    /// `(bucket number, successes, failures)`; slot `n % 10` holds bucket `n` if its number says
    /// so.
    buckets: [(u64, u32, u32); WINDOW_BUCKETS],
}

const WINDOW_BUCKETS: usize = 10;

impl Window {
    fn new(window: Duration, now: Instant) -> Window {
        Window {
            epoch: now,
            bucket: (window / WINDOW_BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [(u64::MAX, 0, 0); WINDOW_BUCKETS],
        }
    }

    fn number(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.bucket.as_nanos()) as u64
    }

    fn add(&mut self, failed: bool, now: Instant) {
        let n = self.number(now);
        let slot = &mut self.buckets[(n % WINDOW_BUCKETS as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        if failed {
            slot.2 += 1;
        } else {
            slot.1 += 1;
        }
    }

    /// `(results, failures)` over the buckets still in the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let n = self.number(now);
        self.buckets
            .iter()
            .filter(|(b, _, _)| *b != u64::MAX && *b + WINDOW_BUCKETS as u64 > n && *b <= n)
            .fold((0, 0), |(t, f), (_, ok, fail)| (t + ok + fail, f + fail))
    }

    fn clear(&mut self) {
        self.buckets = [(u64::MAX, 0, 0); WINDOW_BUCKETS];
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_gauge(config, None)
    }

    fn with_gauge(mut config: BreakerConfig, not_closed: Option<Arc<AtomicUsize>>) -> Self {
        config.half_open_probes = config.half_open_probes.max(1);
        config.half_open_successes = config.half_open_successes.max(1);
        let window = Window::new(config.window, Instant::now());
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                consecutive: 0,
                window,
            }),
            not_closed,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now. An open breaker whose cool-down is over reports `HalfOpen`.
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// The state at `now`.
    pub fn state_at(&self, now: Instant) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`CircuitBreaker::try_acquire`] would admit a request now (changes nothing).
    pub fn is_available(&self) -> bool {
        let inner = self.lock();
        match inner.state {
            // The common case needs no clock.
            State::Closed => true,
            State::Open { until } => Instant::now() >= until,
            State::HalfOpen { in_flight, .. } => in_flight < self.config.half_open_probes,
        }
    }

    /// Whether a request would be admitted at `now`.
    pub fn is_available_at(&self, now: Instant) -> bool {
        match self.lock().state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen { in_flight, .. } => in_flight < self.config.half_open_probes,
        }
    }

    /// Admits a request, or says how long until the breaker will.
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        self.acquire(Instant::now)
    }

    /// [`CircuitBreaker::try_acquire`] at `now`.
    pub fn try_acquire_at(&self, now: Instant) -> Result<Permit, BreakerOpen> {
        self.acquire(|| now)
    }

    /// [`CircuitBreaker::try_acquire`], reading the clock only if the breaker is open (a closed
    /// breaker, the common case, admits without it).
    fn acquire(&self, now: impl FnOnce() -> Instant) -> Result<Permit, BreakerOpen> {
        let mut inner = self.lock();
        if let State::Open { until } = inner.state {
            let now = now();
            if now < until {
                return Err(BreakerOpen {
                    retry_after: until - now,
                });
            }
            inner.state = State::HalfOpen {
                in_flight: 0,
                successes: 0,
            };
            inner.generation += 1;
        }
        match &mut inner.state {
            State::Closed => Ok(Permit {
                generation: inner.generation,
                probe: false,
            }),
            State::HalfOpen { in_flight, .. } => {
                if *in_flight >= self.config.half_open_probes {
                    return Err(BreakerOpen {
                        retry_after: Duration::ZERO,
                    });
                }
                *in_flight += 1;
                Ok(Permit {
                    generation: inner.generation,
                    probe: true,
                })
            }
            State::Open { .. } => unreachable!("handled above"),
        }
    }

    /// Records the result of an admitted request. Returns the new state if this result changed
    /// it. [`Outcome::Cancelled`] only gives back a probe slot.
    pub fn record(&self, permit: Permit, outcome: Outcome) -> Option<BreakerState> {
        self.record_at(permit, outcome, Instant::now())
    }

    /// [`CircuitBreaker::record`] at `now`.
    pub fn record_at(
        &self,
        permit: Permit,
        outcome: Outcome,
        now: Instant,
    ) -> Option<BreakerState> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if permit.generation != inner.generation {
            // Admitted before the last transition: its verdict is about an old state.
            return None;
        }
        let config = &self.config;
        let next = match (&mut inner.state, outcome) {
            (State::Closed, Outcome::Cancelled) => None,
            (State::Closed, Outcome::Success) => {
                inner.consecutive = 0;
                inner.window.add(false, now);
                None
            }
            (State::Closed, Outcome::Failure) => {
                inner.consecutive += 1;
                inner.window.add(true, now);
                let (total, failures) = inner.window.totals(now);
                let by_count = config.consecutive_failures > 0
                    && inner.consecutive >= config.consecutive_failures;
                let by_ratio = total >= config.min_requests.max(1)
                    && f64::from(failures) >= config.failure_ratio * f64::from(total);
                (by_count || by_ratio).then_some(State::Open {
                    until: now + config.cool_down,
                })
            }
            (State::HalfOpen { in_flight, .. }, Outcome::Cancelled) => {
                if permit.probe {
                    *in_flight = in_flight.saturating_sub(1);
                }
                None
            }
            (
                State::HalfOpen {
                    in_flight,
                    successes,
                },
                Outcome::Success,
            ) => {
                if permit.probe {
                    *in_flight = in_flight.saturating_sub(1);
                }
                *successes += 1;
                (*successes >= config.half_open_successes).then_some(State::Closed)
            }
            (State::HalfOpen { .. }, Outcome::Failure) => Some(State::Open {
                until: now + config.cool_down,
            }),
            (State::Open { .. }, _) => None,
        };
        let next = next?;
        let was_closed = matches!(inner.state, State::Closed);
        inner.state = next;
        inner.generation += 1;
        inner.consecutive = 0;
        inner.window.clear();
        let state = match next {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        if let Some(gauge) = &self.not_closed {
            match (was_closed, state) {
                (true, BreakerState::Open) => {
                    gauge.fetch_add(1, Ordering::Relaxed);
                }
                (false, BreakerState::Closed) => {
                    gauge.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        Some(state)
    }

    fn is_closed(&self) -> bool {
        matches!(self.lock().state, State::Closed)
    }
}

/// The per-instance circuit breakers of one service, created on first use and keyed by id.
///
/// ```
/// use signpost_client::breaker::{BreakerConfig, BreakerState, Breakers};
///
/// let breakers = Breakers::new(BreakerConfig::default());
/// assert_eq!(breakers.get("users-1").state(), BreakerState::Closed);
/// assert!(breakers.all_closed());
/// ```
#[derive(Debug)]
pub struct Breakers {
    /// The configuration every breaker gets.
    config: BreakerConfig,
    /// Breaker per instance id.
    map: RwLock<IdMap<Arc<CircuitBreaker>>>,
    /// How many of them are open or half-open.
    not_closed: Arc<AtomicUsize>,
}

impl Breakers {
    /// No breakers yet; each instance gets one with `config` on first use.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            map: RwLock::new(IdMap::default()),
            not_closed: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The breaker of instance `id`, created closed if it has none.
    pub fn get(&self, id: &str) -> Arc<CircuitBreaker> {
        if let Some(b) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return b.clone();
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::with_gauge(
                    self.config.clone(),
                    Some(self.not_closed.clone()),
                ))
            })
            .clone()
    }

    /// The state of instance `id`'s breaker (`Closed` if it has none).
    pub fn state(&self, id: &str) -> BreakerState {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map_or(BreakerState::Closed, |b| b.state())
    }

    /// Whether instance `id` would be admitted now.
    pub fn is_available(&self, id: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_none_or(|b| b.is_available())
    }

    /// Whether every breaker is closed (cheap: one atomic load).
    pub fn all_closed(&self) -> bool {
        self.not_closed.load(Ordering::Relaxed) == 0
    }

    /// Forgets the breakers of instances for which `keep` is false (instances that left).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, breaker| {
            let kept = keep(id);
            if !kept && !breaker.is_closed() {
                self.not_closed.fetch_sub(1, Ordering::Relaxed);
            }
            kept
        });
    }

    /// How many breakers exist.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no breaker exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When [`OutlierDetector`] ejects an instance, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Eject after this many failures (5xx, connect errors, timeouts) in a row. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; the n-th lasts n times as long. Default 30 s.
    pub base_ejection: Duration,
    /// No ejection lasts longer. Default 300 s.
    pub max_ejection: Duration,
    /// At most this share of the instances (in percent, rounded down) is ejected at once.
    /// Default 50.
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Outlier ejection: takes instances that keep failing out of rotation for a while.
///
/// The ejection multiplier grows by one with every ejection and drains by one for every
/// `base_ejection` the instance spends back in rotation, so a flapping instance stays out longer
/// and longer (up to `max_ejection`) while one that recovered starts from scratch.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::breaker::{OutlierConfig, OutlierDetector};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let outliers = OutlierDetector::new(OutlierConfig { consecutive_failures: 2, ..Default::default() });
/// outliers.record("users-1", true, 4);
/// let ejected_for = outliers.record("users-1", true, 4);
/// assert_eq!(ejected_for, Some(Duration::from_secs(30)));
/// assert!(outliers.is_ejected("users-1"));
/// # }
/// ```
#[derive(Debug)]
pub struct OutlierDetector {
    /// Thresholds and timings.
    config: OutlierConfig,
    /// Per-instance failure streak and ejection state.
    hosts: Mutex<IdMap<Host>>,
    /// How many hosts hold an ejection (possibly already expired); the fast path when 0.
    ejected: AtomicUsize,
    /// How many hosts have a failure streak; successes skip the lock when 0.
    streaks: AtomicUsize,
}

#[derive(Debug, Default)]
struct Host {
    /// Failures in a row.
    consecutive: u32,
    /// Ejected until then.
    ejected_until: Option<Instant>,
    /// The ejection multiplier.
    ejections: u32,
    /// When the last ejection ended (for draining the multiplier).
    returned_at: Option<Instant>,
}

impl OutlierDetector {
    /// Nothing ejected yet.
    pub fn new(config: OutlierConfig) -> Self {
        OutlierDetector {
            config,
            hosts: Mutex::new(IdMap::default()),
            ejected: AtomicUsize::new(0),
            streaks: AtomicUsize::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdMap<Host>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one result of instance `id` (`failed`: a 5xx, connect error or timeout) in a
    /// service of `total` instances. Returns the ejection time if this result ejected it.
    pub fn record(&self, id: &str, failed: bool, total: usize) -> Option<Duration> {
        self.record_at(id, failed, total, Instant::now())
    }

    /// [`OutlierDetector::record`] at `now`.
    pub fn record_at(
        &self,
        id: &str,
        failed: bool,
        total: usize,
        now: Instant,
    ) -> Option<Duration> {
        if !failed && self.streaks.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut hosts = self.lock();
        if !failed {
            if let Some(host) = hosts.get_mut(id) {
                self.end_streak(host);
            }
            return None;
        }
        let currently_ejected = hosts
            .values()
            .filter(|h| h.ejected_until.is_some_and(|until| now < until))
            .count();
        let host = match hosts.get_mut(id) {
            Some(host) => host,
            None => hosts.entry(id.to_string()).or_default(),
        };
        self.expire(host, now);
        if host.ejected_until.is_some() {
            return None;
        }
        host.consecutive += 1;
        if host.consecutive == 1 {
            self.streaks.fetch_add(1, Ordering::Relaxed);
        }
        if self.config.consecutive_failures == 0
            || host.consecutive < self.config.consecutive_failures
        {
            return None;
        }
        let max_ejected = total * usize::from(self.config.max_ejection_percent.min(100)) / 100;
        if currently_ejected >= max_ejected {
            return None;
        }
        // Drain the multiplier for the time spent back in rotation, then grow it.
        if let Some(returned) = host.returned_at {
            let base = self.config.base_ejection.as_nanos().max(1);
            let periods = now.saturating_duration_since(returned).as_nanos() / base;
            host.ejections = host
                .ejections
                .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
        }
        host.ejections = host.ejections.saturating_add(1);
        let duration = self
            .config
            .base_ejection
            .saturating_mul(host.ejections)
            .min(self.config.max_ejection);
        host.ejected_until = Some(now + duration);
        self.end_streak(host);
        self.ejected.fetch_add(1, Ordering::Relaxed);
        Some(duration)
    }

    /// Resets `host`'s failure streak.
    fn end_streak(&self, host: &mut Host) {
        if host.consecutive > 0 {
            host.consecutive = 0;
            self.streaks.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends `host`'s ejection if its time is up.
    fn expire(&self, host: &mut Host, now: Instant) {
        if let Some(until) = host.ejected_until {
            if now >= until {
                host.ejected_until = None;
                host.returned_at = Some(until);
                self.ejected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether instance `id` is ejected now.
    pub fn is_ejected(&self, id: &str) -> bool {
        self.is_ejected_at(id, Instant::now())
    }

    /// Whether instance `id` is ejected at `now`.
    pub fn is_ejected_at(&self, id: &str, now: Instant) -> bool {
        if self.none_ejected() {
            return false;
        }
        let mut hosts = self.lock();
        match hosts.get_mut(id) {
            Some(host) => {
                self.expire(host, now);
                host.ejected_until.is_some()
            }
            None => false,
        }
    }

    /// Whether no instance is (or was, with the ejection not yet noticed to be over) ejected:
    /// one atomic load, the fast path for callers filtering every request.
    pub fn none_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed) == 0
    }

    /// Forgets instances for which `keep` is false (instances that left).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut hosts = self.lock();
        hosts.retain(|id, host| {
            let kept = keep(id);
            if !kept && host.ejected_until.is_some() {
                self.ejected.fetch_sub(1, Ordering::Relaxed);
            }
            if !kept && host.consecutive > 0 {
                self.streaks.fetch_sub(1, Ordering::Relaxed);
            }
            kept
        });
    }
}
