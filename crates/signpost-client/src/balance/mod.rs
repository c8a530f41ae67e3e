//! Load balancers and instance filters.
//!
//! A [`Balancer`] picks one instance out of the candidates the caller hands it. The candidates are
//! what is left of the discovered list after health, circuit breakers, outlier ejection and
//! [`Filter`]s had their say, so they change from one pick to the next: stateful balancers keep
//! their state keyed by instance id (never by position) and forget ids that stay away.
//!
//! | Balancer | Picks | State |
//! | --- | --- | --- |
//! | [`Random`] | uniformly | none |
//! | [`RoundRobin`] | in turn | a counter |
//! | [`WeightedRandom`] | proportionally to [`Instance::weight`] | none |
//! | [`SmoothWeighted`] | nginx's smooth weighted round robin (5,1,1 → a a b a c a a) | current weight per id |
//! | [`LeastOutstanding`] | the instance with the fewest requests in flight | in-flight count per id |
//! | [`PeakEwma`] | power of two choices over peak-EWMA latency × (in flight + 1) | latency estimate per id |
//! | [`ConsistentHash`] | by request key on a ring with virtual nodes | the ring |
//!
//! The caller reports each request's life to the balancer: [`InFlight::start`] calls
//! [`Balancer::on_start`], and finishing (or dropping) the guard calls [`Balancer::on_end`] with
//! the outcome and latency. Balancers that do not care ignore both.
//!
//! ```
//! use signpost_client::balance::{Balancer, BalancerExt, InFlight, Outcome, PickContext, RoundRobin};
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
//!     })
//!     .collect();
//! let rr = RoundRobin::new();
//! let picked = rr.pick_from(&instances, &PickContext::new()).unwrap();
//! let request = InFlight::start(&rr, &picked.id);
//! // ... send the request to picked.base_url() ...
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

/// Chooses one instance per request.
///
/// `pick` receives the current candidates (already filtered by the caller) and must return one of
/// them, or `None` only when `candidates` is empty. The list may differ on every call; state is
/// keyed by [`Instance::id`].
///
/// ```
/// use signpost_client::balance::{Balancer, PickContext};
/// use signpost_client::Instance;
///
/// /// Always the first candidate: the smallest possible balancer.
/// struct First;
///
/// impl Balancer for First {
///     fn name(&self) -> &'static str {
///         "first"
///     }
///     fn pick<'a>(&self, candidates: &[&'a Instance], _ctx: &PickContext) -> Option<&'a Instance> {
///         candidates.first().copied()
///     }
/// }
/// ```
pub trait Balancer: Send + Sync + 'static {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// Picks one of `candidates`; `None` only when there are none.
    fn pick<'a>(&self, candidates: &[&'a Instance], ctx: &PickContext) -> Option<&'a Instance>;

    /// A request to instance `id` starts. Called by [`InFlight::start`].
    fn on_start(&self, id: &str) {
        let _ = id;
    }

    /// A request to instance `id` that [`Balancer::on_start`] announced ended with `outcome` after
    /// `latency`. Called exactly once per `on_start`.
    fn on_end(&self, id: &str, outcome: Outcome, latency: Duration) {
        let _ = (id, outcome, latency);
    }
}

impl<B: Balancer + ?Sized> Balancer for Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn pick<'a>(&self, candidates: &[&'a Instance], ctx: &PickContext) -> Option<&'a Instance> {
        (**self).pick(candidates, ctx)
    }
    fn on_start(&self, id: &str) {
        (**self).on_start(id)
    }
    fn on_end(&self, id: &str, outcome: Outcome, latency: Duration) {
        (**self).on_end(id, outcome, latency)
    }
}

impl<B: Balancer + ?Sized> Balancer for Box<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn pick<'a>(&self, candidates: &[&'a Instance], ctx: &PickContext) -> Option<&'a Instance> {
        (**self).pick(candidates, ctx)
    }
    fn on_start(&self, id: &str) {
        (**self).on_start(id)
    }
    fn on_end(&self, id: &str, outcome: Outcome, latency: Duration) {
        (**self).on_end(id, outcome, latency)
    }
}

/// Conveniences for every [`Balancer`].
pub trait BalancerExt: Balancer {
    /// Picks from a plain slice of instances (every one a candidate).
    ///
    /// ```
    /// use signpost_client::balance::{BalancerExt, PickContext, Random};
    ///
    /// let none: Vec<signpost_client::Instance> = vec![];
    /// assert!(Random::new().pick_from(&none, &PickContext::new()).is_none());
    /// ```
    fn pick_from<'a>(&self, instances: &'a [Instance], ctx: &PickContext) -> Option<&'a Instance> {
        let candidates: Vec<&Instance> = instances.iter().collect();
        self.pick(&candidates, ctx)
    }
}

impl<B: Balancer + ?Sized> BalancerExt for B {}

/// A request in flight, for the balancer's bookkeeping: [`Balancer::on_start`] when created,
/// [`Balancer::on_end`] when finished — or, if dropped unfinished, with [`Outcome::Cancelled`].
///
/// ```
/// use std::time::Duration;
/// use signpost_client::balance::{Balancer, InFlight, LeastOutstanding, Outcome};
///
/// let lor = LeastOutstanding::new();
/// let request = InFlight::start(&lor, "users-1");
/// assert_eq!(lor.outstanding("users-1"), 1);
/// request.finish_with_latency(Outcome::Success, Duration::from_millis(3));
/// assert_eq!(lor.outstanding("users-1"), 0);
/// ```
#[must_use = "dropping an InFlight ends the request as cancelled"]
pub struct InFlight<'b, B: Balancer + ?Sized = dyn Balancer> {
    /// Whom to tell when the request ends.
    balancer: &'b B,
    /// The instance the request went to.
    id: &'b str,
    /// When it started, for the latency.
    started: Instant,
    /// Whether `on_end` was already called (by `finish`).
    finished: bool,
}

impl<'b, B: Balancer + ?Sized> InFlight<'b, B> {
    /// Announces a request to instance `id`.
    pub fn start(balancer: &'b B, id: &'b str) -> Self {
        balancer.on_start(id);
        InFlight {
            balancer,
            id,
            started: Instant::now(),
            finished: false,
        }
    }

    /// When the request started.
    pub(crate) fn started(&self) -> Instant {
        self.started
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
        self.balancer.on_end(self.id, outcome, latency);
    }
}

impl<B: Balancer + ?Sized> Drop for InFlight<'_, B> {
    fn drop(&mut self) {
        if !self.finished {
            self.balancer
                .on_end(self.id, Outcome::Cancelled, self.started.elapsed());
        }
    }
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

/// Whether per-id state has grown well past the live candidates, so stale ids should go.
pub(crate) fn should_prune(state_len: usize, candidates: usize) -> bool {
    state_len > candidates * 2 + 16
}
