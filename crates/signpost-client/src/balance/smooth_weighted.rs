use std::sync::Mutex;

use super::weighted_random::weight_of;
use super::{Balancer, Candidate, IdMap, PickContext};

/// nginx's smooth weighted round robin: deterministic, proportional to [`Instance::weight`], and
/// interleaved rather than bursty — weights 5, 1, 1 give `a a b a c a a`, then repeat.
///
/// Every pick adds each candidate's weight to its current value, picks the largest (the first
/// one on ties) and subtracts the total weight from the winner. Current values are kept per
/// instance id; an instance that (re)appears starts at 0.
///
/// ```
/// use signpost_client::balance::{BalancerExt, PickContext, SmoothWeighted};
/// # let mk = |id: &str, weight| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight, state: Default::default(), maintenance: None };
/// let instances = vec![mk("a", 5), mk("b", 1), mk("c", 1)];
/// let swrr = SmoothWeighted::new();
/// let seq: String = (0..7)
///     .map(|_| swrr.pick_from(&instances, &PickContext::new()).unwrap().id.clone())
///     .collect();
/// assert_eq!(seq, "aabacaa");
/// ```
#[derive(Debug, Default)]
pub struct SmoothWeighted {
    /// Current weight per instance id, in the order of the last candidate list (so an unchanged
    /// list needs no lookups).
    current: Mutex<Vec<(String, i64)>>,
}

impl SmoothWeighted {
    /// A smooth weighted round robin with every current weight at 0.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Whether `state` holds exactly `candidates`' ids, in order.
fn aligned(state: &[(String, i64)], candidates: &[Candidate<'_>]) -> bool {
    state.len() == candidates.len() && state.iter().zip(candidates).all(|((id, _), c)| *id == c.id)
}

impl Balancer for SmoothWeighted {
    fn name(&self) -> &'static str {
        "smooth-weighted"
    }

    fn pick<'a>(&self, candidates: &[Candidate<'a>], _ctx: &PickContext) -> Option<Candidate<'a>> {
        match candidates.len() {
            0 => return None,
            1 => return Some(candidates[0]),
            _ => {}
        }
        let mut state = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !aligned(&state, candidates) {
            // The list changed: carry each remaining id's current weight over; newcomers start
            // at 0, ids that left are forgotten.
            let old: IdMap<i64> = state.drain(..).collect();
            state.extend(
                candidates
                    .iter()
                    .map(|c| (c.id.clone(), old.get(c.id.as_str()).copied().unwrap_or(0))),
            );
        }
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (instance, (_, value))) in candidates.iter().zip(state.iter_mut()).enumerate() {
            let weight = weight_of(instance) as i64;
            *value += weight;
            total += weight;
            if best.is_none_or(|(_, b)| *value > b) {
                best = Some((i, *value));
            }
        }
        let (winner, _) = best?;
        state[winner].1 -= total;
        Some(candidates[winner])
    }
}
