//! Circuit breakers and outlier ejection.
//!
//! - [`CircuitBreaker`]: one per instance (and optionally one per service). **Closed** lets
//!   everything through and counts results; after `consecutive_failures` failures in a row, or a
//!   failure ratio of at least `failure_ratio` over the rolling `window` once it holds
//!   `min_requests` results, it turns **Open** and rejects everything for `cool_down`; then it is
//!   **HalfOpen** and lets at most `half_open_probes` requests through at a time. A successful
//!   probe closes it (after `half_open_successes` successes), a failed one opens it again.
//! - [`Breakers`]: what the per-instance breakers of one service share: their configuration and
//!   the count of breakers that are not closed. Each breaker it makes lives in its endpoint's
//!   state ([`crate::selector::EndpointState`]), not in a map keyed by id.
//! - [`OutlierDetector`]: `consecutive_failures` 5xx / connect failures in a row eject an instance
//!   for `base_ejection × times ejected` (capped at `max_ejection`, and the multiplier drains
//!   again while the instance behaves); never more than `max_ejection_percent` of the instances at
//!   once, and never permanently. Each instance's streak and ejection is an [`OutlierHost`],
//!   which also lives in the endpoint's state.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::Outcome;

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
    /// The counts shared with the breaker's [`Breakers`], if it has one.
    gauges: Option<Arc<BreakerGauges>>,
}

/// What the breakers of one [`Breakers`] count together.
#[derive(Debug, Default)]
struct BreakerGauges {
    /// Breakers that are not closed ([`Breakers::all_closed`]'s fast path).
    not_closed: AtomicUsize,
    /// Breakers alive.
    live: AtomicUsize,
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
        Self::with_gauges(config, None)
    }

    fn with_gauges(mut config: BreakerConfig, gauges: Option<Arc<BreakerGauges>>) -> Self {
        if let Some(g) = &gauges {
            g.live.fetch_add(1, Ordering::Relaxed);
        }
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
            gauges,
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
            crate::metrics::breaker_transition(BreakerState::HalfOpen);
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
        crate::metrics::breaker_transition(state);
        if let Some(gauges) = &self.gauges {
            match (was_closed, state) {
                (true, BreakerState::Open) => {
                    gauges.not_closed.fetch_add(1, Ordering::Relaxed);
                }
                (false, BreakerState::Closed) => {
                    gauges.not_closed.fetch_sub(1, Ordering::Relaxed);
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

impl Drop for CircuitBreaker {
    fn drop(&mut self) {
        if let Some(gauges) = &self.gauges {
            gauges.live.fetch_sub(1, Ordering::Relaxed);
            if !self.is_closed() {
                gauges.not_closed.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the per-instance circuit breakers of one service share: the configuration each gets and
/// the count of those not closed. The breakers themselves live with their endpoints (see
/// [`crate::selector::EndpointState`]); a breaker that is dropped (its instance left) leaves the
/// counts.
///
/// ```
/// use signpost_client::breaker::{BreakerConfig, BreakerState, Breakers};
///
/// let breakers = Breakers::new(BreakerConfig::default());
/// let users_1 = breakers.breaker();
/// assert_eq!(users_1.state(), BreakerState::Closed);
/// assert!(breakers.all_closed());
/// assert_eq!(breakers.len(), 1);
/// ```
#[derive(Debug)]
pub struct Breakers {
    /// The configuration every breaker gets.
    config: BreakerConfig,
    /// Counts over the breakers made here.
    gauges: Arc<BreakerGauges>,
}

impl Breakers {
    /// No breakers yet; each made by [`Breakers::breaker`] gets `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            gauges: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// A new closed breaker for one instance, counted here while it lives.
    pub fn breaker(&self) -> CircuitBreaker {
        CircuitBreaker::with_gauges(self.config.clone(), Some(self.gauges.clone()))
    }

    /// Whether every breaker is closed (cheap: one atomic load).
    pub fn all_closed(&self) -> bool {
        self.gauges.not_closed.load(Ordering::Relaxed) == 0
    }

    /// How many breakers made here are alive.
    pub fn len(&self) -> usize {
        self.gauges.live.load(Ordering::Relaxed)
    }

    /// Whether no breaker made here is alive.
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
/// The detector holds the settings and what the instances of one service share (how many are
/// ejected, and until when); each instance's streak and ejection is an [`OutlierHost`] made by
/// [`OutlierDetector::host`], kept with the instance's other state.
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
/// let users_1 = outliers.host();
/// outliers.record(&users_1, true, 4);
/// let ejected_for = outliers.record(&users_1, true, 4);
/// assert_eq!(ejected_for, Some(Duration::from_secs(30)));
/// assert!(outliers.is_ejected(&users_1));
/// # }
/// ```
#[derive(Debug)]
pub struct OutlierDetector {
    /// Thresholds and timings.
    config: OutlierConfig,
    /// What the hosts share.
    shared: Arc<OutlierShared>,
}

/// What the hosts of one [`OutlierDetector`] share.
#[derive(Debug, Default)]
struct OutlierShared {
    /// How many hosts hold an ejection (possibly already expired); the fast path when 0.
    ejected: AtomicUsize,
    /// How many hosts have a failure streak; successes skip the host's lock when 0.
    streaks: AtomicUsize,
    /// When each ejection held ends (one entry per host holding one), for the
    /// `max_ejection_percent` cap.
    until: Mutex<Vec<Instant>>,
}

impl OutlierShared {
    fn until(&self) -> std::sync::MutexGuard<'_, Vec<Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets one ejection ending at `until`.
    fn release(&self, until: Instant) {
        let mut list = self.until();
        if let Some(i) = list.iter().position(|u| *u == until) {
            list.swap_remove(i);
        }
        self.ejected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance's failure streak and ejection, for its service's [`OutlierDetector`]. Dropping it
/// (the instance left) takes its streak and ejection out of the detector's counts.
#[derive(Debug)]
pub struct OutlierHost {
    /// The streak and ejection.
    state: Mutex<Host>,
    /// The detector's shared counts.
    shared: Arc<OutlierShared>,
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

impl OutlierHost {
    fn lock(&self) -> std::sync::MutexGuard<'_, Host> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OutlierHost {
    fn drop(&mut self) {
        let host = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = host.ejected_until {
            self.shared.release(until);
        }
        if host.consecutive > 0 {
            self.shared.streaks.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl OutlierDetector {
    /// Nothing ejected yet.
    pub fn new(config: OutlierConfig) -> Self {
        OutlierDetector {
            config,
            shared: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// The state of a new instance: no streak, never ejected.
    pub fn host(&self) -> OutlierHost {
        OutlierHost {
            state: Mutex::new(Host::default()),
            shared: self.shared.clone(),
        }
    }

    /// Records one result of `host` (`failed`: a 5xx, connect error or timeout) in a service of
    /// `total` instances. Returns the ejection time if this result ejected it.
    pub fn record(&self, host: &OutlierHost, failed: bool, total: usize) -> Option<Duration> {
        self.record_at(host, failed, total, Instant::now())
    }

    /// [`OutlierDetector::record`] at `now`.
    pub fn record_at(
        &self,
        host: &OutlierHost,
        failed: bool,
        total: usize,
        now: Instant,
    ) -> Option<Duration> {
        let shared = &*self.shared;
        if !failed && shared.streaks.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut state = host.lock();
        if !failed {
            self.end_streak(&mut state);
            return None;
        }
        self.expire(&mut state, now);
        if state.ejected_until.is_some() {
            return None;
        }
        state.consecutive += 1;
        if state.consecutive == 1 {
            shared.streaks.fetch_add(1, Ordering::Relaxed);
        }
        if self.config.consecutive_failures == 0
            || state.consecutive < self.config.consecutive_failures
        {
            return None;
        }
        let max_ejected = total * usize::from(self.config.max_ejection_percent.min(100)) / 100;
        let mut until = shared.until();
        let currently_ejected = until.iter().filter(|u| now < **u).count();
        if currently_ejected >= max_ejected {
            return None;
        }
        // Drain the multiplier for the time spent back in rotation, then grow it.
        if let Some(returned) = state.returned_at {
            let base = self.config.base_ejection.as_nanos().max(1);
            let periods = now.saturating_duration_since(returned).as_nanos() / base;
            state.ejections = state
                .ejections
                .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
        }
        state.ejections = state.ejections.saturating_add(1);
        let duration = self
            .config
            .base_ejection
            .saturating_mul(state.ejections)
            .min(self.config.max_ejection);
        state.ejected_until = Some(now + duration);
        until.push(now + duration);
        drop(until);
        self.end_streak(&mut state);
        shared.ejected.fetch_add(1, Ordering::Relaxed);
        Some(duration)
    }

    /// Resets `host`'s failure streak.
    fn end_streak(&self, host: &mut Host) {
        if host.consecutive > 0 {
            host.consecutive = 0;
            self.shared.streaks.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends `host`'s ejection if its time is up.
    fn expire(&self, host: &mut Host, now: Instant) {
        if let Some(until) = host.ejected_until {
            if now >= until {
                host.ejected_until = None;
                host.returned_at = Some(until);
                self.shared.release(until);
            }
        }
    }

    /// Whether `host` is ejected now.
    pub fn is_ejected(&self, host: &OutlierHost) -> bool {
        self.is_ejected_at(host, Instant::now())
    }

    /// Whether `host` is ejected at `now`.
    pub fn is_ejected_at(&self, host: &OutlierHost, now: Instant) -> bool {
        if self.none_ejected() {
            return false;
        }
        let mut state = host.lock();
        self.expire(&mut state, now);
        state.ejected_until.is_some()
    }

    /// Whether no instance is (or was, with the ejection not yet noticed to be over) ejected:
    /// one atomic load, the fast path for callers filtering every request.
    pub fn none_ejected(&self) -> bool {
        self.shared.ejected.load(Ordering::Relaxed) == 0
    }
}
