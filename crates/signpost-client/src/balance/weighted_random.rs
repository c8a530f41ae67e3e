use super::{Balancer, Candidate, FastRng, PickContext};
use crate::instance::Instance;

/// Picks a candidate at random with probability proportional to its [`Instance::weight`].
///
/// A weight of 0 counts as 1, so no discovered instance is unreachable.
///
/// ```
/// use signpost_client::balance::{BalancerExt, PickContext, WeightedRandom};
/// # let mk = |id: &str, weight| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight, state: Default::default(), maintenance: None };
/// let instances = vec![mk("heavy", 900), mk("light", 100)];
/// let wr = WeightedRandom::new();
/// let heavy = (0..1000)
///     .filter(|_| wr.pick_from(&instances, &PickContext::new()).unwrap().id == "heavy")
///     .count();
/// assert!(heavy > 800);
/// ```
#[derive(Debug)]
pub struct WeightedRandom {
    /// Where the randomness comes from.
    rng: FastRng,
}

impl WeightedRandom {
    /// A weighted random balancer seeded from the OS.
    pub fn new() -> Self {
        WeightedRandom {
            rng: FastRng::new(),
        }
    }

    /// A weighted random balancer with a fixed seed (tests).
    pub fn with_seed(seed: u64) -> Self {
        WeightedRandom {
            rng: FastRng::seeded(seed),
        }
    }
}

impl Default for WeightedRandom {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn weight_of(instance: &Instance) -> u64 {
    u64::from(instance.weight.max(1))
}

impl Balancer for WeightedRandom {
    fn name(&self) -> &'static str {
        "weighted-random"
    }

    fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
        match candidates.len() {
            0 => return None,
            1 => return Some(candidates[0]),
            _ => {}
        }
        let total: u64 = candidates.iter().map(|i| weight_of(i)).sum();
        let mut point = self.rng.below(total);
        for instance in candidates {
            let w = weight_of(instance);
            if point < w {
                return Some(*instance);
            }
            point -= w;
        }
        candidates.last().copied()
    }
}
