use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::{should_prune, Balancer, FastRng, IdMap, Outcome, PickContext};
use crate::instance::Instance;

/// Power of two choices over a peak-sensitive EWMA of latency (Finagle's and linkerd's
/// balancer).
///
/// Each pick draws two distinct candidates at random and takes the one with the lower cost,
/// `latency estimate × (requests in flight + 1)`. The estimate jumps up to any slower
/// observation at once (peak-sensitive) and otherwise moves towards new observations with a
/// time constant `decay` (10 s by default); between observations it decays towards zero, so an
/// instance that was slow long ago gets tried again. An instance never observed costs
/// `default_rtt`. A failed request counts as at least `failure_penalty`, so an instance that
/// fails fast does not attract traffic.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::balance::{Balancer, BalancerExt, Outcome, PeakEwma, PickContext};
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100 };
/// let instances = vec![mk("fast"), mk("slow")];
/// let p2c = PeakEwma::new();
/// for _ in 0..3 {
///     p2c.on_start("fast");
///     p2c.on_end("fast", Outcome::Success, Duration::from_millis(5));
///     p2c.on_start("slow");
///     p2c.on_end("slow", Outcome::Success, Duration::from_millis(500));
/// }
/// assert_eq!(p2c.pick_from(&instances, &PickContext::new()).unwrap().id, "fast");
/// ```
#[derive(Debug)]
pub struct PeakEwma {
    /// Per-instance latency estimate and in-flight count.
    stats: RwLock<IdMap<Arc<Stats>>>,
    /// Time constant of the moving average.
    decay: Duration,
    /// The estimate for an instance never observed.
    default_rtt: Duration,
    /// The least latency a failed request counts as.
    failure_penalty: Duration,
    /// Draws the two choices.
    rng: FastRng,
}

#[derive(Debug)]
struct Stats {
    /// Requests in flight.
    outstanding: AtomicUsize,
    /// The latency estimate.
    rtt: Mutex<Rtt>,
}

#[derive(Debug, Clone, Copy)]
struct Rtt {
    /// Estimated latency in nanoseconds.
    estimate_ns: f64,
    /// When the estimate was last updated.
    at: Instant,
}

impl PeakEwma {
    /// Decay 10 s, default RTT 30 ms, failure penalty 1 s.
    pub fn new() -> Self {
        PeakEwma {
            stats: RwLock::new(IdMap::default()),
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
            rng: FastRng::new(),
        }
    }

    /// Sets the time constant of the moving average.
    pub fn decay(mut self, decay: Duration) -> Self {
        self.decay = decay.max(Duration::from_millis(1));
        self
    }

    /// Sets the estimate used for instances not yet observed.
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt = rtt;
        self
    }

    /// Sets the least latency a failure counts as (zero: failures count as observed).
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.failure_penalty = penalty;
        self
    }

    /// Fixes the random seed (tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = FastRng::seeded(seed);
        self
    }

    /// The current cost of instance `id`: decayed latency estimate (ns) × (in flight + 1).
    pub fn cost(&self, id: &str) -> f64 {
        let now = Instant::now();
        match self.read().get(id) {
            Some(stats) => self.cost_of(stats, now),
            None => self.default_rtt.as_nanos() as f64,
        }
    }

    /// The current latency estimate of instance `id` (decayed to now).
    pub fn latency_estimate(&self, id: &str) -> Duration {
        let now = Instant::now();
        match self.read().get(id) {
            Some(stats) => {
                let rtt = *stats.rtt.lock().unwrap_or_else(|e| e.into_inner());
                Duration::from_nanos(self.decayed(rtt, now) as u64)
            }
            None => self.default_rtt,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<Arc<Stats>>> {
        self.stats.read().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self, id: &str) -> Arc<Stats> {
        if let Some(stats) = self.read().get(id) {
            return stats.clone();
        }
        let mut map = self.stats.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Stats {
                    outstanding: AtomicUsize::new(0),
                    rtt: Mutex::new(Rtt {
                        estimate_ns: self.default_rtt.as_nanos() as f64,
                        at: Instant::now(),
                    }),
                })
            })
            .clone()
    }

    /// The estimate decayed towards zero for the time since its last update.
    fn decayed(&self, rtt: Rtt, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(rtt.at).as_secs_f64();
        rtt.estimate_ns * (-elapsed / self.decay.as_secs_f64()).exp()
    }

    fn cost_of(&self, stats: &Stats, now: Instant) -> f64 {
        let rtt = *stats.rtt.lock().unwrap_or_else(|e| e.into_inner());
        let pending = stats.outstanding.load(Ordering::Relaxed) as f64;
        self.decayed(rtt, now) * (pending + 1.0)
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer for PeakEwma {
    fn name(&self) -> &'static str {
        "p2c-peak-ewma"
    }

    fn pick<'a>(&self, candidates: &[&'a Instance], _ctx: &PickContext) -> Option<&'a Instance> {
        let n = candidates.len();
        match n {
            0 => return None,
            1 => return Some(candidates[0]),
            _ => {}
        }
        let a = self.rng.below(n as u64) as usize;
        let mut b = self.rng.below(n as u64 - 1) as usize;
        if b >= a {
            b += 1;
        }
        let now = Instant::now();
        let map = self.read();
        let cost = |i: usize| match map.get(candidates[i].id.as_str()) {
            Some(stats) => self.cost_of(stats, now),
            None => self.default_rtt.as_nanos() as f64,
        };
        let chosen = if cost(a) <= cost(b) { a } else { b };
        if should_prune(map.len(), n) {
            drop(map);
            let mut map = self.stats.write().unwrap_or_else(|e| e.into_inner());
            let live: std::collections::HashSet<&str> =
                candidates.iter().map(|i| i.id.as_str()).collect();
            map.retain(|id, s| {
                live.contains(id.as_str()) || s.outstanding.load(Ordering::Relaxed) > 0
            });
        }
        Some(candidates[chosen])
    }

    fn on_start(&self, id: &str) {
        self.stats(id).outstanding.fetch_add(1, Ordering::Relaxed);
    }

    fn on_end(&self, id: &str, outcome: Outcome, latency: Duration) {
        let Some(stats) = self.read().get(id).cloned() else {
            return;
        };
        let _ = stats
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let observed = match outcome {
            Outcome::Success => latency,
            Outcome::Failure => latency.max(self.failure_penalty),
            Outcome::Cancelled => return,
        };
        let observed = observed.as_nanos() as f64;
        let now = Instant::now();
        let mut rtt = stats.rtt.lock().unwrap_or_else(|e| e.into_inner());
        if observed > rtt.estimate_ns {
            // Peak-sensitive: a slower observation replaces the estimate at once.
            rtt.estimate_ns = observed;
        } else {
            let elapsed = now.saturating_duration_since(rtt.at).as_secs_f64();
            let keep = (-elapsed / self.decay.as_secs_f64()).exp();
            rtt.estimate_ns = rtt.estimate_ns * keep + observed * (1.0 - keep);
        }
        rtt.at = now;
    }
}
