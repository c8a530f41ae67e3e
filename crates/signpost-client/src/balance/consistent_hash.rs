use std::sync::{Arc, RwLock};

use super::{hash_key, Balancer, Candidate, FastRng, IdMap, PickContext};

/// Consistent hashing by request key: a hash ring with `vnodes` virtual nodes per instance.
///
/// A request with key `k` ([`PickContext::with_key`]) goes to the first candidate clockwise from
/// `hash(k)`. Ring positions depend only on the instance id, so when one of N instances leaves
/// only its own keys move (to their next neighbours), and when one joins it takes about 1/(N+1)
/// of the keys and nothing else moves. Candidates the caller filtered out (open breaker, ejected)
/// are skipped the same way. Requests without a key are spread at random.
///
/// ```
/// use signpost_client::balance::{BalancerExt, ConsistentHash, PickContext};
/// # let mk = |id: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let instances = vec![mk("a"), mk("b"), mk("c")];
/// let ring = ConsistentHash::new();
/// let ctx = PickContext::with_key("cart-1234");
/// let first = ring.pick_from(&instances, &ctx).unwrap().id.clone();
/// // The same key keeps going to the same instance.
/// assert_eq!(ring.pick_from(&instances, &ctx).unwrap().id, first);
/// ```
#[derive(Debug)]
pub struct ConsistentHash {
    /// Virtual nodes per instance.
    vnodes: usize,
    /// The ring for the instances seen last; rebuilt when an unknown candidate shows up or when
    /// most of its instances are gone.
    ring: RwLock<Arc<Ring>>,
    /// Spreads requests that carry no key.
    rng: FastRng,
}

#[derive(Debug, Default)]
struct Ring {
    /// `(position, index into ids)`, sorted by position.
    points: Vec<(u64, u32)>,
    /// The instance ids on the ring.
    ids: Vec<String>,
    /// Id → index into `ids`.
    index: IdMap<u32>,
}

impl Ring {
    fn build(ids: Vec<String>, vnodes: usize) -> Ring {
        let mut points = Vec::with_capacity(ids.len() * vnodes);
        let mut index = IdMap::default();
        for (i, id) in ids.iter().enumerate() {
            index.insert(id.clone(), i as u32);
            for v in 0..vnodes {
                points.push((vnode_position(id, v), i as u32));
            }
        }
        // Ties between instances are broken by id, so the ring does not depend on list order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| ids[a.1 as usize].cmp(&ids[b.1 as usize]))
        });
        Ring { points, ids, index }
    }
}

/// Where virtual node `v` of instance `id` sits on the ring.
fn vnode_position(id: &str, v: usize) -> u64 {
    let mut bytes = Vec::with_capacity(id.len() + 8);
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(b'#');
    bytes.extend_from_slice(v.to_string().as_bytes());
    hash_key(&bytes)
}

impl ConsistentHash {
    /// A ring with 160 virtual nodes per instance (ketama's default).
    pub fn new() -> Self {
        Self::with_vnodes(160)
    }

    /// A ring with `vnodes` virtual nodes per instance (more: smoother spread, bigger ring).
    pub fn with_vnodes(vnodes: usize) -> Self {
        ConsistentHash {
            vnodes: vnodes.max(1),
            ring: RwLock::new(Arc::new(Ring::default())),
            rng: FastRng::new(),
        }
    }

    fn current(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// For each ring id, the position in `candidates` (or `None`); `None` overall when some
    /// candidate is not on the ring.
    fn mask(ring: &Ring, candidates: &[Candidate<'_>]) -> Option<Vec<Option<u32>>> {
        let mut mask = vec![None; ring.ids.len()];
        for (pos, instance) in candidates.iter().enumerate() {
            let i = *ring.index.get(instance.id.as_str())?;
            mask[i as usize] = Some(pos as u32);
        }
        Some(mask)
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer for ConsistentHash {
    fn name(&self) -> &'static str {
        "consistent-hash"
    }

    fn pick<'a>(&self, candidates: &[Candidate<'a>], ctx: &PickContext) -> Option<Candidate<'a>> {
        match candidates.len() {
            0 => return None,
            1 => return Some(candidates[0]),
            _ => {}
        }
        let Some(key) = ctx.key_hash() else {
            return Some(candidates[self.rng.below(candidates.len() as u64) as usize]);
        };
        let mut ring = self.current();
        let start = |ring: &Ring| ring.points.partition_point(|(p, _)| *p < key);
        // Fast path: the candidates are exactly the ring's instances, in the same order, so a
        // ring index is a candidate index and the first point clockwise wins.
        if ring.ids.len() == candidates.len()
            && ring.ids.iter().zip(candidates).all(|(id, c)| *id == c.id)
        {
            let at = start(&ring) % ring.points.len();
            return Some(candidates[ring.points[at].1 as usize]);
        }
        let mut mask = Self::mask(&ring, candidates);
        if mask.is_none() || ring.ids.len() > candidates.len() * 2 + 16 {
            let ids = candidates.iter().map(|i| i.id.clone()).collect();
            ring = Arc::new(Ring::build(ids, self.vnodes));
            *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring.clone();
            mask = Self::mask(&ring, candidates);
        }
        let mask = mask.expect("every candidate is on a ring built from them");
        let first = start(&ring);
        let len = ring.points.len();
        (0..len)
            .map(|k| ring.points[(first + k) % len].1)
            .find_map(|i| mask[i as usize])
            .map(|pos| candidates[pos as usize])
    }
}
