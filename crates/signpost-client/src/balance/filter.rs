use super::{Candidate, PickContext};
use crate::instance::Instance;

/// Narrows the candidates before the balancer picks.
///
/// Filters run after health, circuit breakers and outlier ejection, in the order they were added,
/// so a filter that spills over (like [`ZoneAware`]) sees only instances that can take traffic.
///
/// ```
/// use signpost_client::balance::{Candidate, Filter, PickContext};
///
/// /// Only instances on even ports.
/// struct EvenPorts;
///
/// impl Filter for EvenPorts {
///     fn filter(&self, candidates: &mut Vec<Candidate<'_>>, _ctx: &PickContext) {
///         candidates.retain(|i| i.port % 2 == 0);
///     }
/// }
/// ```
pub trait Filter: Send + Sync + 'static {
    /// Removes the candidates this filter rejects (it may also keep all of them).
    fn filter(&self, candidates: &mut Vec<Candidate<'_>>, ctx: &PickContext);
}

/// Keeps instances that carry every one of the given tags.
///
/// ```
/// use signpost_client::balance::{Candidate, EndpointStats, Filter, HasTags, PickContext};
/// # let mk = |id: &str, tags: &[&str]| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: tags.iter().map(|t| t.to_string()).collect(), metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let (v1, v2) = (mk("a", &["v1"]), mk("b", &["v2", "canary"]));
/// let stats = EndpointStats::new();
/// let mut candidates = vec![Candidate::new(0, &v1, &stats), Candidate::new(1, &v2, &stats)];
/// HasTags::new(["v2"]).filter(&mut candidates, &PickContext::new());
/// assert_eq!(candidates.len(), 1);
/// assert_eq!(candidates[0].id, "b");
/// ```
#[derive(Debug, Clone)]
pub struct HasTags {
    /// Tags an instance must all have.
    tags: Vec<String>,
}

impl HasTags {
    /// Keeps instances tagged with all of `tags`.
    pub fn new<I, T>(tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        HasTags {
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }
}

impl Filter for HasTags {
    fn filter(&self, candidates: &mut Vec<Candidate<'_>>, _ctx: &PickContext) {
        candidates.retain(|i| self.tags.iter().all(|t| i.tags.contains(t)));
    }
}

/// Keeps instances whose metadata has `key` equal to `value`.
///
/// ```
/// use signpost_client::balance::{Candidate, EndpointStats, Filter, MetadataEquals, PickContext};
/// # let mk = |id: &str, env: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: [("env".to_string(), env.to_string())].into(), weight: 100, state: Default::default(), maintenance: None };
/// let (prod, staging) = (mk("a", "prod"), mk("b", "staging"));
/// let stats = EndpointStats::new();
/// let mut candidates = vec![Candidate::new(0, &prod, &stats), Candidate::new(1, &staging, &stats)];
/// MetadataEquals::new("env", "prod").filter(&mut candidates, &PickContext::new());
/// assert_eq!(candidates[0].id, "a");
/// assert_eq!(candidates.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct MetadataEquals {
    /// The metadata key.
    key: String,
    /// The value it must have.
    value: String,
}

impl MetadataEquals {
    /// Keeps instances with `metadata[key] == value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        MetadataEquals {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Filter for MetadataEquals {
    fn filter(&self, candidates: &mut Vec<Candidate<'_>>, _ctx: &PickContext) {
        candidates.retain(|i| i.metadata.get(&self.key) == Some(&self.value));
    }
}

/// Zone-aware routing: prefers instances in the caller's zone (metadata `zone` by default) and
/// spills over to every candidate when fewer than `min_local` (default 1) local ones can take
/// traffic — none registered, none healthy, or all behind open breakers.
///
/// ```
/// use signpost_client::balance::{Candidate, EndpointStats, Filter, PickContext, ZoneAware};
/// # let mk = |id: &str, zone: &str| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port: 1,
/// #     tags: vec![], metadata: [("zone".to_string(), zone.to_string())].into(), weight: 100, state: Default::default(), maintenance: None };
/// let (near, far) = (mk("a", "eu-west-1a"), mk("b", "eu-west-1b"));
/// let zone = ZoneAware::new("eu-west-1a");
///
/// let stats = EndpointStats::new();
/// let mut candidates = vec![Candidate::new(0, &near, &stats), Candidate::new(1, &far, &stats)];
/// zone.filter(&mut candidates, &PickContext::new());
/// assert_eq!(candidates.len(), 1);
///
/// // The local instance is gone: spill over to the other zone.
/// let mut candidates = vec![Candidate::new(1, &far, &stats)];
/// zone.filter(&mut candidates, &PickContext::new());
/// assert_eq!(candidates[0].id, "b");
/// ```
#[derive(Debug, Clone)]
pub struct ZoneAware {
    /// The metadata key holding an instance's zone.
    key: String,
    /// The caller's zone.
    zone: String,
    /// Fewer local candidates than this and traffic spills over to all.
    min_local: usize,
}

impl ZoneAware {
    /// Prefers instances whose metadata `zone` equals `zone`.
    pub fn new(zone: impl Into<String>) -> Self {
        ZoneAware {
            key: "zone".into(),
            zone: zone.into(),
            min_local: 1,
        }
    }

    /// Reads the zone from metadata key `key` instead of `zone`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Spills over when fewer than `n` local candidates remain (at least 1).
    pub fn min_local(mut self, n: usize) -> Self {
        self.min_local = n.max(1);
        self
    }
}

impl Filter for ZoneAware {
    fn filter(&self, candidates: &mut Vec<Candidate<'_>>, _ctx: &PickContext) {
        let local = candidates
            .iter()
            .filter(|i| i.metadata.get(&self.key) == Some(&self.zone))
            .count();
        if local >= self.min_local {
            candidates.retain(|i| i.metadata.get(&self.key) == Some(&self.zone));
        }
    }
}

/// A filter from a closure: keeps the instances for which it returns `true`.
///
/// ```
/// use signpost_client::balance::{Candidate, EndpointStats, Filter, PickContext, Predicate};
/// # let mk = |id: &str, port| signpost_client::Instance {
/// #     id: id.into(), service: "s".into(), address: "127.0.0.1".into(), port,
/// #     tags: vec![], metadata: Default::default(), weight: 100, state: Default::default(), maintenance: None };
/// let (a, b) = (mk("a", 80), mk("b", 8080));
/// let stats = EndpointStats::new();
/// let mut candidates = vec![Candidate::new(0, &a, &stats), Candidate::new(1, &b, &stats)];
/// Predicate(|i: &signpost_client::Instance| i.port == 8080).filter(&mut candidates, &PickContext::new());
/// assert_eq!(candidates[0].id, "b");
/// ```
#[derive(Debug, Clone)]
pub struct Predicate<F>(pub F);

impl<F> Filter for Predicate<F>
where
    F: Fn(&Instance) -> bool + Send + Sync + 'static,
{
    fn filter(&self, candidates: &mut Vec<Candidate<'_>>, _ctx: &PickContext) {
        candidates.retain(|i| (self.0)(i));
    }
}
