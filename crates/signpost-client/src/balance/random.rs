use super::{Balancer, Candidate, FastRng, PickContext};

/// Picks a candidate uniformly at random. Stateless apart from its random source.
///
/// ```
/// use signpost_client::balance::{BalancerExt, PickContext, Random};
/// # let instances = vec![signpost_client::Instance {
/// #     id: "a".into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None }];
/// let picked = Random::new().pick_from(&instances, &PickContext::new()).unwrap();
/// assert_eq!(picked.id, "a");
/// ```
#[derive(Debug)]
pub struct Random {
    /// Where the randomness comes from.
    rng: FastRng,
}

impl Random {
    /// A random balancer seeded from the OS.
    pub fn new() -> Self {
        Random {
            rng: FastRng::new(),
        }
    }

    /// A random balancer with a fixed seed: the same picks every run (tests).
    pub fn with_seed(seed: u64) -> Self {
        Random {
            rng: FastRng::seeded(seed),
        }
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => Some(candidates[self.rng.below(n as u64) as usize]),
        }
    }
}
