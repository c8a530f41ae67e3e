use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{should_prune, Balancer, FastRng, IdMap, Outcome, PickContext};
use crate::instance::Instance;

/// Picks the candidate with the fewest requests in flight (ties broken at random).
///
/// In-flight counts come from [`Balancer::on_start`] / [`Balancer::on_end`], i.e. from an
/// [`InFlight`](super::InFlight) guard per request, so a request that is dropped still
/// decrements its count.
///
/// ```
/// use signpost_client::balance::{BalancerExt, InFlight, LeastOutstanding, PickContext};
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100 };
/// let instances = vec![mk("busy"), mk("idle")];
/// let lor = LeastOutstanding::new();
/// let _busy = InFlight::start(&lor, "busy");
/// assert_eq!(lor.pick_from(&instances, &PickContext::new()).unwrap().id, "idle");
/// ```
#[derive(Debug)]
pub struct LeastOutstanding {
    /// Requests in flight per instance id.
    outstanding: RwLock<IdMap<Arc<AtomicUsize>>>,
    /// Breaks ties, so equally loaded instances share the traffic.
    rng: FastRng,
}

impl LeastOutstanding {
    /// A balancer that knows of no requests in flight yet.
    pub fn new() -> Self {
        LeastOutstanding {
            outstanding: RwLock::new(IdMap::default()),
            rng: FastRng::new(),
        }
    }

    /// Requests in flight to instance `id`.
    pub fn outstanding(&self, id: &str) -> usize {
        self.read().get(id).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<Arc<AtomicUsize>>> {
        self.outstanding.read().unwrap_or_else(|e| e.into_inner())
    }

    fn counter(&self, id: &str) -> Arc<AtomicUsize> {
        if let Some(counter) = self.read().get(id) {
            return counter.clone();
        }
        let mut map = self.outstanding.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }
}

impl Default for LeastOutstanding {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer for LeastOutstanding {
    fn name(&self) -> &'static str {
        "least-outstanding"
    }

    fn pick<'a>(&self, candidates: &[&'a Instance], _ctx: &PickContext) -> Option<&'a Instance> {
        let n = candidates.len();
        match n {
            0 => return None,
            1 => return Some(candidates[0]),
            _ => {}
        }
        let prune = {
            let map = self.read();
            // Start the scan at a random offset and keep the first minimum: random tie-breaking.
            let start = self.rng.below(n as u64) as usize;
            let mut best = (usize::MAX, start);
            for k in 0..n {
                let i = (start + k) % n;
                let load = map
                    .get(candidates[i].id.as_str())
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                if load < best.0 {
                    best = (load, i);
                    if load == 0 {
                        break;
                    }
                }
            }
            if !should_prune(map.len(), n) {
                return Some(candidates[best.1]);
            }
            best.1
        };
        let mut map = self.outstanding.write().unwrap_or_else(|e| e.into_inner());
        let live: std::collections::HashSet<&str> =
            candidates.iter().map(|i| i.id.as_str()).collect();
        map.retain(|id, c| live.contains(id.as_str()) || c.load(Ordering::Relaxed) > 0);
        Some(candidates[prune])
    }

    fn on_start(&self, id: &str) {
        self.counter(id).fetch_add(1, Ordering::Relaxed);
    }

    fn on_end(&self, id: &str, _outcome: Outcome, _latency: Duration) {
        if let Some(counter) = self.read().get(id) {
            let _ =
                counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}
