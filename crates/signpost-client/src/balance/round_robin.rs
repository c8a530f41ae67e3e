use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Candidate, PickContext};

/// Picks the candidates in turn.
///
/// One shared counter advances per pick, so with a stable list every instance gets every n-th
/// request; when the list changes the rotation simply continues over the new list.
///
/// ```
/// use signpost_client::balance::{BalancerExt, PickContext, RoundRobin};
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let instances = vec![mk("a"), mk("b")];
/// let rr = RoundRobin::new();
/// let ctx = PickContext::new();
/// let first = rr.pick_from(&instances, &ctx).unwrap().id.clone();
/// let second = rr.pick_from(&instances, &ctx).unwrap().id.clone();
/// assert_ne!(first, second);
/// ```
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Picks made so far; the next pick is `next % len`.
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round robin starting at the first candidate.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
        if candidates.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(candidates[n % candidates.len()])
    }
}
