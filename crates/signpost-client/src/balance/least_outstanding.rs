use super::{Balancer, Candidate, FastRng, PickContext};

/// Picks the candidate with the fewest requests in flight (ties broken at random).
///
/// In-flight counts are the candidates' [`EndpointStats::in_flight`](super::EndpointStats::in_flight),
/// kept by an [`InFlight`](super::InFlight) guard per request (or the selector), so a request
/// that is dropped still decrements its count.
///
/// ```
/// use signpost_client::balance::{BalancerExt, EndpointStats, InFlight, LeastOutstanding, PickContext};
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let instances = vec![mk("busy"), mk("idle")];
/// let stats = [EndpointStats::new(), EndpointStats::new()];
/// let lor = LeastOutstanding::new();
/// let _busy = InFlight::start(&lor, &stats[0]);
/// assert_eq!(lor.pick_with(&instances, &stats, &PickContext::new()), Some(1));
/// ```
#[derive(Debug)]
pub struct LeastOutstanding {
    /// Breaks ties, so equally loaded instances share the traffic.
    rng: FastRng,
}

impl LeastOutstanding {
    /// A least-outstanding-requests balancer.
    pub fn new() -> Self {
        LeastOutstanding {
            rng: FastRng::new(),
        }
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

    fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
        let n = candidates.len();
        match n {
            0 => return None,
            1 => return Some(candidates[0]),
            _ => {}
        }
        // Start the scan at a random offset and keep the first minimum: random tie-breaking.
        let start = self.rng.below(n as u64) as usize;
        let mut best = (usize::MAX, start);
        for k in 0..n {
            let i = (start + k) % n;
            let load = candidates[i].stats().in_flight();
            if load < best.0 {
                best = (load, i);
                if load == 0 {
                    break;
                }
            }
        }
        Some(candidates[best.1])
    }
}
