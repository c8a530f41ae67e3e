//! Load balancers and instance filters.
//!
//! A [`Balancer`] picks one [`Candidate`] out of the candidates the caller hands it. The
//! candidates are what is left of the discovered list after health, circuit breakers, outlier
//! ejection and [`Filter`]s had their say, so they change from one pick to the next. Each
//! candidate carries its instance, its position in the list it came from, and its
//! [`EndpointStats`]: the per-endpoint statistics (requests in flight, latency estimate) live with
//! the endpoint, not in maps inside the balancers, so a pick reads them without a lookup.
//! Balancers whose state is not per-endpoint statistics keep it keyed by instance id (never by
//! position) and forget ids that stay away.
//!
//! | Balancer | Picks | State |
//! | --- | --- | --- |
//! | [`Random`] | uniformly | none |
//! | [`RoundRobin`] | in turn | a counter |
//! | [`WeightedRandom`] | proportionally to [`Instance::weight`] | none |
//! | [`SmoothWeighted`] | nginx's smooth weighted round robin (5,1,1 → a a b a c a a) | current weight per id |
//! | [`LeastOutstanding`] | the instance with the fewest requests in flight | the endpoints' in-flight counts |
//! | [`PeakEwma`] | power of two choices over peak-EWMA latency × (in flight + 1) | the endpoints' latency estimates |
//! | [`ConsistentHash`] | by request key on a ring with virtual nodes | the ring |
//!
//! The caller reports each request's life: [`InFlight::start`] counts the request in its
//! endpoint's stats and calls [`Balancer::on_start`], and finishing (or dropping) the guard counts
//! it out and calls [`Balancer::on_end`] with the outcome and latency. Balancers that do not care
//! ignore both. (The [`Selector`](crate::selector::Selector) does all of this itself, with the
//! stats of its per-endpoint state.)
//!
//! ```
//! use signpost_client::balance::{
//!     Balancer, BalancerExt, EndpointStats, InFlight, Outcome, PickContext, RoundRobin,
//! };
//! use signpost_client::Instance;
//!
//! let instances: Vec<Instance> = (0..3)
//!     .map(|i| Instance {
//!         id: format!("users-{i}"),
//!         service: "users".into(),
//!         address: "127.0.0.1".into(),
//!         port: 8000 + i,
//!         tags: vec![],
//!         metadata: Default::default(),
//!         weight: 100,
//!         state: Default::default(),
//!         maintenance: None,
//!     })
//!     .collect();
//! let stats: Vec<EndpointStats> = instances.iter().map(|_| EndpointStats::new()).collect();
//! let rr = RoundRobin::new();
//! let picked = rr.pick_with(&instances, &stats, &PickContext::new()).unwrap();
//! let request = InFlight::start(&rr, &stats[picked]);
//! // ... send the request to instances[picked].base_url() ...
//! request.finish(Outcome::Success);
//! ```

mod consistent_hash;
mod filter;
mod least_outstanding;
mod peak_ewma;
mod random;
mod round_robin;
mod smooth_weighted;
mod weighted_random;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::instance::Instance;

pub use consistent_hash::ConsistentHash;
pub use filter::{Filter, HasTags, MetadataEquals, Predicate, ZoneAware};
pub use least_outstanding::LeastOutstanding;
pub use peak_ewma::PeakEwma;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use smooth_weighted::SmoothWeighted;
pub use weighted_random::WeightedRandom;

/// How a request to an instance ended, as far as balancing and circuit breaking are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The instance answered (any status that is not its fault, 4xx included).
    Success,
    /// The instance failed: connect error, timeout, or a 5xx.
    Failure,
    /// The request was abandoned before it ended (the caller dropped it); says nothing about the
    /// instance.
    Cancelled,
}

/// Per-request input to [`Balancer::pick`]: currently the request key consistent hashing uses.
///
/// ```
/// use signpost_client::balance::PickContext;
///
/// let ctx = PickContext::with_key("user-42");
/// assert_eq!(ctx.key_hash(), PickContext::with_key("user-42").key_hash());
/// assert_eq!(PickContext::new().key_hash(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickContext {
    /// Stable 64-bit hash of the request key, if the request has one.
    key: Option<u64>,
}

impl PickContext {
    /// A context without a request key.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context whose request key is `key` (hashed with [`hash_key`], stable across processes).
    pub fn with_key(key: impl AsRef<[u8]>) -> Self {
        PickContext {
            key: Some(hash_key(key.as_ref())),
        }
    }

    /// A context whose request key hash is `hash` (already hashed by the caller).
    pub fn with_key_hash(hash: u64) -> Self {
        PickContext { key: Some(hash) }
    }

    /// The request key's hash, if any.
    pub fn key_hash(&self) -> Option<u64> {
        self.key
    }
}

/// The statistics balancers keep about one endpoint: requests in flight and the latency
/// estimate. One per endpoint, living in the endpoint's state (the
/// [`Selector`](crate::selector::Selector) keeps one in each
/// [`EndpointState`](crate::selector::EndpointState)), so every balancer reads the same counters
/// and nothing is looked up by id per request.
///
/// ```
/// use signpost_client::balance::{EndpointStats, InFlight, LeastOutstanding, Outcome};
///
/// let (lor, stats) = (LeastOutstanding::new(), EndpointStats::new());
/// let request = InFlight::start(&lor, &stats);
/// assert_eq!(stats.in_flight(), 1);
/// request.finish(Outcome::Success);
/// assert_eq!(stats.in_flight(), 0);
/// ```
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Requests in flight to the endpoint (least outstanding, P2C's load factor).
    in_flight: AtomicUsize,
    /// P2C's peak-EWMA latency estimate (`None` until a request started).
    pub(crate) rtt: Mutex<Option<peak_ewma::Rtt>>,
}

impl EndpointStats {
    /// Nothing in flight, nothing observed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests in flight to the endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in.
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request out (never below zero).
    pub(crate) fn ended(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// One instance a [`Balancer`] may pick: the instance, its position in the list the caller
/// selects from (what the caller gets back), and its [`EndpointStats`]. Dereferences to the
/// [`Instance`]. Cheap to copy.
///
/// ```
/// use signpost_client::balance::{Candidate, EndpointStats};
/// # let a = signpost_client::Instance {
/// #     id: "a".into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let stats = EndpointStats::new();
/// let candidate = Candidate::new(3, &a, &stats);
/// assert_eq!((candidate.position(), candidate.id.as_str()), (3, "a"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Where the instance is in the caller's list.
    position: usize,
    /// The instance.
    instance: &'a Instance,
    /// Its statistics.
    stats: &'a EndpointStats,
}

impl<'a> Candidate<'a> {
    /// The instance at `position` of the caller's list, with its `stats`.
    pub fn new(position: usize, instance: &'a Instance, stats: &'a EndpointStats) -> Self {
        Candidate {
            position,
            instance,
            stats,
        }
    }

    /// The position in the caller's list.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The instance.
    pub fn instance(&self) -> &'a Instance {
        self.instance
    }

    /// The endpoint's statistics.
    pub fn stats(&self) -> &'a EndpointStats {
        self.stats
    }
}

impl std::ops::Deref for Candidate<'_> {
    type Target = Instance;

    fn deref(&self) -> &Instance {
        self.instance
    }
}

/// Chooses one instance per request.
///
/// `pick` receives the current candidates (already filtered by the caller) and must return one of
/// them, or `None` only when `candidates` is empty. The list may differ on every call; state that
/// is not the endpoints' [`EndpointStats`] is keyed by [`Instance::id`].
///
/// ```
/// use signpost_client::balance::{Balancer, Candidate, PickContext};
///
/// /// Always the first candidate: the smallest possible balancer.
/// struct First;
///
/// impl Balancer for First {
///     fn name(&self) -> &'static str {
///         "first"
///     }
///     fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
///         candidates.first().copied()
///     }
/// }
/// ```
pub trait Balancer: Send + Sync + 'static {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// Picks one of `candidates`; `None` only when there are none.
    fn pick<'a>(&self, candidates: &[Candidate<'a>], ctx: &PickContext) -> Option<Candidate<'a>>;

    /// A request to the endpoint with `stats` starts (already counted in
    /// [`EndpointStats::in_flight`]). Called by [`InFlight::start`] and the selector.
    fn on_start(&self, stats: &EndpointStats) {
        let _ = stats;
    }

    /// A request that [`Balancer::on_start`] announced ended with `outcome` after `latency`
    /// (already counted out of [`EndpointStats::in_flight`]). Called exactly once per `on_start`.
    fn on_end(&self, stats: &EndpointStats, outcome: Outcome, latency: Duration) {
        let _ = (stats, outcome, latency);
    }
}

impl<B: Balancer + ?Sized> Balancer for Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn pick<'a>(&self, candidates: &[Candidate<'a>], ctx: &PickContext) -> Option<Candidate<'a>> {
        (**self).pick(candidates, ctx)
    }
    fn on_start(&self, stats: &EndpointStats) {
        (**self).on_start(stats)
    }
    fn on_end(&self, stats: &EndpointStats, outcome: Outcome, latency: Duration) {
        (**self).on_end(stats, outcome, latency)
    }
}

impl<B: Balancer + ?Sized> Balancer for Box<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn pick<'a>(&self, candidates: &[Candidate<'a>], ctx: &PickContext) -> Option<Candidate<'a>> {
        (**self).pick(candidates, ctx)
    }
    fn on_start(&self, stats: &EndpointStats) {
        (**self).on_start(stats)
    }
    fn on_end(&self, stats: &EndpointStats, outcome: Outcome, latency: Duration) {
        (**self).on_end(stats, outcome, latency)
    }
}

/// Conveniences for every [`Balancer`].
pub trait BalancerExt: Balancer {
    /// Picks from a plain slice of instances (every one a candidate, each with the matching
    /// entry of `stats`); returns the chosen position.
    ///
    /// ```
    /// use signpost_client::balance::{BalancerExt, EndpointStats, PickContext, RoundRobin};
    /// # let mk = |id: &str| signpost_client::Instance {
    /// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
    /// #     tags: vec![], metadata: Default::default(), weight: 100,
    /// #     state: Default::default(), maintenance: None };
    /// let instances = vec![mk("a"), mk("b")];
    /// let stats = [EndpointStats::new(), EndpointStats::new()];
    /// let rr = RoundRobin::new();
    /// assert_ne!(rr.pick_with(&instances, &stats, &PickContext::new()),
    ///            rr.pick_with(&instances, &stats, &PickContext::new()));
    /// ```
    fn pick_with(
        &self,
        instances: &[Instance],
        stats: &[EndpointStats],
        ctx: &PickContext,
    ) -> Option<usize> {
        assert_eq!(
            instances.len(),
            stats.len(),
            "one EndpointStats per instance"
        );
        let candidates: Vec<Candidate<'_>> = instances
            .iter()
            .zip(stats)
            .enumerate()
            .map(|(i, (instance, stats))| Candidate::new(i, instance, stats))
            .collect();
        self.pick(&candidates, ctx).map(|c| c.position())
    }

    /// Picks from a plain slice of instances, every one a candidate with fresh statistics (for
    /// balancers that keep none, or a one-off pick).
    ///
    /// ```
    /// use signpost_client::balance::{BalancerExt, PickContext, Random};
    ///
    /// let none: Vec<signpost_client::Instance> = vec![];
    /// assert!(Random::new().pick_from(&none, &PickContext::new()).is_none());
    /// ```
    fn pick_from<'a>(&self, instances: &'a [Instance], ctx: &PickContext) -> Option<&'a Instance> {
        let stats: Vec<EndpointStats> = instances.iter().map(|_| EndpointStats::new()).collect();
        self.pick_with(instances, &stats, ctx)
            .map(|position| &instances[position])
    }
}

impl<B: Balancer + ?Sized> BalancerExt for B {}

/// A request in flight, for the endpoint's statistics and the balancer's bookkeeping: counted in
/// and [`Balancer::on_start`] when created, counted out and [`Balancer::on_end`] when finished —
/// or, if dropped unfinished, with [`Outcome::Cancelled`].
///
/// ```
/// use std::time::Duration;
/// use signpost_client::balance::{EndpointStats, InFlight, LeastOutstanding, Outcome};
///
/// let lor = LeastOutstanding::new();
/// let stats = EndpointStats::new();
/// let request = InFlight::start(&lor, &stats);
/// assert_eq!(stats.in_flight(), 1);
/// request.finish_with_latency(Outcome::Success, Duration::from_millis(3));
/// assert_eq!(stats.in_flight(), 0);
/// ```
#[must_use = "dropping an InFlight ends the request as cancelled"]
pub struct InFlight<'b, B: Balancer + ?Sized = dyn Balancer> {
    /// Whom to tell when the request ends.
    balancer: &'b B,
    /// The statistics of the endpoint the request went to.
    stats: &'b EndpointStats,
    /// When it started, for the latency.
    started: Instant,
    /// Whether `on_end` was already called (by `finish`).
    finished: bool,
}

impl<'b, B: Balancer + ?Sized> InFlight<'b, B> {
    /// Announces a request to the endpoint with `stats`.
    pub fn start(balancer: &'b B, stats: &'b EndpointStats) -> Self {
        request_started(balancer, stats);
        InFlight {
            balancer,
            stats,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Time since the request started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the request with `outcome`; the latency is the time since [`InFlight::start`].
    pub fn finish(self, outcome: Outcome) {
        let latency = self.elapsed();
        self.finish_with_latency(outcome, latency);
    }

    /// Ends the request with `outcome` and an explicitly measured `latency`.
    pub fn finish_with_latency(mut self, outcome: Outcome, latency: Duration) {
        self.finished = true;
        request_ended(self.balancer, self.stats, outcome, latency);
    }
}

impl<B: Balancer + ?Sized> Drop for InFlight<'_, B> {
    fn drop(&mut self) {
        if !self.finished {
            request_ended(
                self.balancer,
                self.stats,
                Outcome::Cancelled,
                self.started.elapsed(),
            );
        }
    }
}

/// A request to the endpoint with `stats` starts: counted in, then the balancer is told.
pub(crate) fn request_started<B: Balancer + ?Sized>(balancer: &B, stats: &EndpointStats) {
    stats.started();
    balancer.on_start(stats);
}

/// A request to the endpoint with `stats` ended: counted out, then the balancer is told.
pub(crate) fn request_ended<B: Balancer + ?Sized>(
    balancer: &B,
    stats: &EndpointStats,
    outcome: Outcome,
    latency: Duration,
) {
    stats.ended();
    balancer.on_end(stats, outcome, latency);
}

/// The stable 64-bit hash of a request key (FNV-1a followed by a 64-bit finaliser), the same in
/// every process and version, so consistent hashing agrees across clients.
///
/// ```
/// assert_eq!(
///     signpost_client::balance::hash_key(b"user-42"),
///     signpost_client::balance::hash_key(b"user-42"),
/// );
/// ```
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the whole word.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A small lock-free random source: SplitMix64 over an atomic counter. Balancers only need
/// spread, not secrecy; seeding makes tests reproducible.
#[derive(Debug)]
pub(crate) struct FastRng {
    /// The SplitMix64 state; every draw advances it by the golden-ratio increment.
    state: AtomicU64,
}

impl FastRng {
    /// Seeded from the OS.
    pub(crate) fn new() -> Self {
        Self::seeded(rand::random())
    }

    pub(crate) fn seeded(seed: u64) -> Self {
        FastRng {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
        let s = self
            .state
            .fetch_add(GOLDEN, Ordering::Relaxed)
            .wrapping_add(GOLDEN);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for any n we see).
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A fast, non-cryptographic hasher for instance-id keyed maps (FxHash's word-at-a-time
/// scheme). Ids come from the registry, not from untrusted request input.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher {
    /// The running hash.
    hash: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.hash = (self.hash.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.hash = (self.hash.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A map keyed by instance id.
pub(crate) type IdMap<V> = HashMap<String, V, BuildHasherDefault<IdHasher>>;
