use std::time::Duration;

use tokio::time::Instant;

use super::{Balancer, Candidate, EndpointStats, FastRng, Outcome, PickContext};

/// Power of two choices over a peak-sensitive EWMA of latency (Finagle's and linkerd's
/// balancer).
///
/// Each pick draws two distinct candidates at random and takes the one with the lower cost,
/// `latency estimate × (requests in flight + 1)`. The estimate jumps up to any slower
/// observation at once (peak-sensitive) and otherwise moves towards new observations with a
/// time constant `decay` (10 s by default); between observations it decays towards zero, so an
/// instance that was slow long ago gets tried again. An instance never observed costs
/// `default_rtt`. A failed request counts as at least `failure_penalty`, so an instance that
/// fails fast does not attract traffic. The estimate and the in-flight count live in each
/// endpoint's [`EndpointStats`]; the balancer holds only its settings.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::balance::{BalancerExt, EndpointStats, InFlight, Outcome, PeakEwma, PickContext};
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let instances = vec![mk("fast"), mk("slow")];
/// let stats = [EndpointStats::new(), EndpointStats::new()];
/// let p2c = PeakEwma::new();
/// for _ in 0..3 {
///     InFlight::start(&p2c, &stats[0]).finish_with_latency(Outcome::Success, Duration::from_millis(5));
///     InFlight::start(&p2c, &stats[1]).finish_with_latency(Outcome::Success, Duration::from_millis(500));
/// }
/// assert_eq!(p2c.pick_with(&instances, &stats, &PickContext::new()), Some(0));
/// ```
#[derive(Debug)]
pub struct PeakEwma {
    /// Time constant of the moving average.
    decay: Duration,
    /// The estimate for an instance never observed.
    default_rtt: Duration,
    /// The least latency a failed request counts as.
    failure_penalty: Duration,
    /// Draws the two choices.
    rng: FastRng,
}

/// One endpoint's latency estimate (kept in its [`EndpointStats`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rtt {
    /// Estimated latency in nanoseconds.
    estimate_ns: f64,
    /// When the estimate was last updated.
    at: Instant,
}

impl PeakEwma {
    /// Decay 10 s, default RTT 30 ms, failure penalty 1 s.
    pub fn new() -> Self {
        PeakEwma {
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

    /// The current cost of the endpoint with `stats`: decayed latency estimate (ns) × (in
    /// flight + 1).
    pub fn cost(&self, stats: &EndpointStats) -> f64 {
        self.cost_of(stats, Instant::now())
    }

    /// The current latency estimate of the endpoint with `stats` (decayed to now).
    pub fn latency_estimate(&self, stats: &EndpointStats) -> Duration {
        match *lock(stats) {
            Some(rtt) => Duration::from_nanos(self.decayed(rtt, Instant::now()) as u64),
            None => self.default_rtt,
        }
    }

    /// The estimate decayed towards zero for the time since its last update.
    fn decayed(&self, rtt: Rtt, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(rtt.at).as_secs_f64();
        rtt.estimate_ns * (-elapsed / self.decay.as_secs_f64()).exp()
    }

    fn cost_of(&self, stats: &EndpointStats, now: Instant) -> f64 {
        let Some(rtt) = *lock(stats) else {
            return self.default_rtt.as_nanos() as f64;
        };
        let pending = stats.in_flight() as f64;
        self.decayed(rtt, now) * (pending + 1.0)
    }
}

/// The endpoint's estimate, locked.
fn lock(stats: &EndpointStats) -> std::sync::MutexGuard<'_, Option<Rtt>> {
    stats.rtt.lock().unwrap_or_else(|e| e.into_inner())
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

    fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
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
        let cost = |i: usize| self.cost_of(candidates[i].stats(), now);
        let chosen = if cost(a) <= cost(b) { a } else { b };
        Some(candidates[chosen])
    }

    fn on_start(&self, stats: &EndpointStats) {
        // A first request: the estimate starts at the default, decaying from now.
        lock(stats).get_or_insert_with(|| Rtt {
            estimate_ns: self.default_rtt.as_nanos() as f64,
            at: Instant::now(),
        });
    }

    fn on_end(&self, stats: &EndpointStats, outcome: Outcome, latency: Duration) {
        let observed = match outcome {
            Outcome::Success => latency,
            Outcome::Failure => latency.max(self.failure_penalty),
            Outcome::Cancelled => return,
        };
        let observed = observed.as_nanos() as f64;
        let now = Instant::now();
        let mut guard = lock(stats);
        let Some(rtt) = guard.as_mut() else {
            return;
        };
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
