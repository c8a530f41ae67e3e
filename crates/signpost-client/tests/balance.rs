//! Balancer and filter properties: distributions, exact sequences, stability under change.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use signpost_client::balance::{
    Balancer, BalancerExt, Candidate, ConsistentHash, EndpointStats, Filter, HasTags, InFlight,
    LeastOutstanding, MetadataEquals, Outcome, PeakEwma, PickContext, Random, RoundRobin,
    SmoothWeighted, WeightedRandom, ZoneAware,
};
use signpost_client::Instance;

fn instance(id: &str, weight: u32) -> Instance {
    Instance {
        id: id.to_string(),
        service: "svc".into(),
        address: "127.0.0.1".into(),
        port: 8000,
        tags: vec![],
        metadata: BTreeMap::new(),
        weight,
        state: Default::default(),
        maintenance: None,
    }
}

fn named(ids: &[&str]) -> Vec<Instance> {
    ids.iter().map(|id| instance(id, 100)).collect()
}

/// Instances with their endpoint statistics, as a selector keeps them.
struct Pool {
    instances: Vec<Instance>,
    stats: Vec<EndpointStats>,
}

impl Pool {
    fn new(ids: &[&str]) -> Pool {
        Pool {
            instances: named(ids),
            stats: ids.iter().map(|_| EndpointStats::new()).collect(),
        }
    }

    fn stats(&self, id: &str) -> &EndpointStats {
        let i = self.instances.iter().position(|i| i.id == id).unwrap();
        &self.stats[i]
    }

    /// Picks among the instances `ids` (each with its own statistics).
    fn pick(&self, b: &dyn Balancer, ids: &[&str]) -> String {
        let candidates: Vec<Candidate<'_>> = self
            .instances
            .iter()
            .zip(&self.stats)
            .enumerate()
            .filter(|(_, (i, _))| ids.contains(&i.id.as_str()))
            .map(|(p, (i, s))| Candidate::new(p, i, s))
            .collect();
        b.pick(&candidates, &PickContext::new()).unwrap().id.clone()
    }

    fn counts(&self, b: &dyn Balancer, picks: usize) -> HashMap<String, usize> {
        let ids: Vec<&str> = self.instances.iter().map(|i| i.id.as_str()).collect();
        let mut counts = HashMap::new();
        for _ in 0..picks {
            *counts.entry(self.pick(b, &ids)).or_default() += 1;
        }
        counts
    }
}

fn counts(b: &dyn Balancer, instances: &[Instance], picks: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let ctx = PickContext::new();
    for _ in 0..picks {
        let id = b.pick_from(instances, &ctx).unwrap().id.clone();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[test]
fn every_balancer_returns_none_for_no_candidates_and_the_only_one_for_one() {
    let balancers: Vec<Box<dyn Balancer>> = vec![
        Box::new(Random::new()),
        Box::new(RoundRobin::new()),
        Box::new(WeightedRandom::new()),
        Box::new(SmoothWeighted::new()),
        Box::new(LeastOutstanding::new()),
        Box::new(PeakEwma::new()),
        Box::new(ConsistentHash::new()),
    ];
    let one = named(&["only"]);
    for b in &balancers {
        assert!(b.pick(&[], &PickContext::new()).is_none(), "{}", b.name());
        assert_eq!(
            b.pick_from(&one, &PickContext::with_key("k")).unwrap().id,
            "only",
            "{}",
            b.name()
        );
    }
}

#[test]
fn random_spreads_evenly() {
    let instances = named(&["a", "b", "c", "d"]);
    let counts = counts(&Random::with_seed(7), &instances, 40_000);
    for id in ["a", "b", "c", "d"] {
        let share = counts[id] as f64 / 40_000.0;
        assert!((share - 0.25).abs() < 0.02, "{id}: {share}");
    }
}

#[test]
fn round_robin_cycles_through_every_instance_in_order() {
    let instances = named(&["a", "b", "c"]);
    let rr = RoundRobin::new();
    let seq: Vec<String> = (0..9)
        .map(|_| {
            rr.pick_from(&instances, &PickContext::new())
                .unwrap()
                .id
                .clone()
        })
        .collect();
    assert_eq!(seq, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
}

#[test]
fn round_robin_keeps_going_when_the_list_shrinks() {
    let rr = RoundRobin::new();
    let three = named(&["a", "b", "c"]);
    let two = named(&["a", "c"]);
    rr.pick_from(&three, &PickContext::new());
    let picks: Vec<String> = (0..4)
        .map(|_| rr.pick_from(&two, &PickContext::new()).unwrap().id.clone())
        .collect();
    assert_eq!(picks.iter().filter(|p| *p == "a").count(), 2);
    assert_eq!(picks.iter().filter(|p| *p == "c").count(), 2);
}

#[test]
fn weighted_random_is_within_3_percent_of_the_weights_over_100k_picks() {
    let instances = vec![
        instance("a", 500),
        instance("b", 300),
        instance("c", 150),
        instance("d", 50),
    ];
    let total: u32 = instances.iter().map(|i| i.weight).sum();
    let picks = 100_000;
    let counts = counts(&WeightedRandom::with_seed(42), &instances, picks);
    for i in &instances {
        let expected = f64::from(i.weight) / f64::from(total);
        let got = counts[&i.id] as f64 / picks as f64;
        // Within 3 % of the weight's share (relative), e.g. 0.05 ± 0.0015.
        assert!(
            (got - expected).abs() <= 0.03 * expected,
            "{}: expected {expected}, got {got}",
            i.id
        );
    }
}

#[test]
fn smooth_weighted_round_robin_gives_nginx_s_exact_sequence() {
    let instances = vec![instance("a", 5), instance("b", 1), instance("c", 1)];
    let swrr = SmoothWeighted::new();
    let seq: String = (0..14)
        .map(|_| {
            swrr.pick_from(&instances, &PickContext::new())
                .unwrap()
                .id
                .clone()
        })
        .collect();
    assert_eq!(seq, "aabacaaaabacaa");
}

#[test]
fn smooth_weighted_round_robin_is_exactly_proportional_and_survives_list_changes() {
    let swrr = SmoothWeighted::new();
    let instances = vec![instance("a", 3), instance("b", 2), instance("c", 1)];
    let counts = counts(&swrr, &instances, 600);
    assert_eq!((counts["a"], counts["b"], counts["c"]), (300, 200, 100));

    // b leaves; a and c keep their 3:1 ratio over whole cycles.
    let fewer = vec![instance("a", 3), instance("c", 1)];
    let counts = self::counts(&swrr, &fewer, 400);
    assert_eq!((counts["a"], counts["c"]), (300, 100));
}

#[test]
fn least_outstanding_prefers_idle_instances() {
    let pool = Pool::new(&["a", "b", "c"]);
    let all = ["a", "b", "c"];
    let lor = LeastOutstanding::new();
    let _a1 = InFlight::start(&lor, pool.stats("a"));
    let _a2 = InFlight::start(&lor, pool.stats("a"));
    let b1 = InFlight::start(&lor, pool.stats("b"));
    for _ in 0..50 {
        assert_eq!(pool.pick(&lor, &all), "c");
    }
    let _c1 = InFlight::start(&lor, pool.stats("c"));
    let _c2 = InFlight::start(&lor, pool.stats("c"));
    // a: 2, b: 1, c: 2 → b.
    assert_eq!(pool.pick(&lor, &all), "b");
    // A dropped request (cancelled) still counts down.
    drop(b1);
    assert_eq!(pool.stats("b").in_flight(), 0);
    assert_eq!(pool.stats("a").in_flight(), 2);
}

#[test]
fn least_outstanding_breaks_ties_at_random() {
    let counts = Pool::new(&["a", "b", "c"]).counts(&LeastOutstanding::new(), 3_000);
    for id in ["a", "b", "c"] {
        assert!(counts[id] > 700, "{id}: {counts:?}");
    }
}

/// Feeds `n` results of `latency` for the endpoint with `stats`, letting `gap` of (paused) time
/// pass before each.
async fn observe(
    p2c: &PeakEwma,
    stats: &EndpointStats,
    latency: Duration,
    n: usize,
    gap: Duration,
) {
    for _ in 0..n {
        tokio::time::advance(gap).await;
        let request = InFlight::start(p2c, stats);
        request.finish_with_latency(Outcome::Success, latency);
    }
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_prefers_the_faster_instance_under_injected_latency() {
    let pool = Pool::new(&["fast", "slow", "medium"]);
    let p2c = PeakEwma::new().with_seed(1);
    observe(
        &p2c,
        pool.stats("fast"),
        Duration::from_millis(5),
        20,
        Duration::from_millis(500),
    )
    .await;
    observe(
        &p2c,
        pool.stats("medium"),
        Duration::from_millis(50),
        20,
        Duration::from_millis(500),
    )
    .await;
    observe(
        &p2c,
        pool.stats("slow"),
        Duration::from_millis(400),
        20,
        Duration::from_millis(500),
    )
    .await;

    let counts = pool.counts(&p2c, 3_000);
    // Every pair that includes "fast" picks it (2 of 3 pairs); "slow" never wins a pair.
    assert!(counts["fast"] > 1_800, "{counts:?}");
    assert!(!counts.contains_key("slow"), "{counts:?}");

    // Load matters too: with many requests in flight, the fast instance costs more.
    let in_flight: Vec<_> = (0..50)
        .map(|_| InFlight::start(&p2c, pool.stats("fast")))
        .collect();
    let two = ["fast", "medium"];
    assert_eq!(pool.pick(&p2c, &two), "medium");
    drop(in_flight);
    assert_eq!(pool.pick(&p2c, &two), "fast");
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_reacts_to_a_peak_at_once_and_forgets_it_with_time() {
    let pool = Pool::new(&["a", "b"]);
    let two = ["a", "b"];
    let p2c = PeakEwma::new().with_seed(3);
    observe(
        &p2c,
        pool.stats("a"),
        Duration::from_millis(10),
        10,
        Duration::from_secs(1),
    )
    .await;
    observe(
        &p2c,
        pool.stats("b"),
        Duration::from_millis(20),
        10,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(pool.pick(&p2c, &two), "a");

    // One slow response from a: the estimate jumps to it.
    observe(
        &p2c,
        pool.stats("a"),
        Duration::from_millis(300),
        1,
        Duration::ZERO,
    )
    .await;
    assert!(p2c.latency_estimate(pool.stats("a")) >= Duration::from_millis(299));
    assert_eq!(pool.pick(&p2c, &two), "b");

    // Fast responses again, spread over a few decay periods: a recovers.
    observe(
        &p2c,
        pool.stats("a"),
        Duration::from_millis(10),
        10,
        Duration::from_secs(5),
    )
    .await;
    observe(
        &p2c,
        pool.stats("b"),
        Duration::from_millis(20),
        1,
        Duration::ZERO,
    )
    .await;
    assert!(p2c.latency_estimate(pool.stats("a")) < Duration::from_millis(20));
    assert_eq!(pool.pick(&p2c, &two), "a");
}

#[tokio::test(start_paused = true)]
async fn p2c_peak_ewma_penalises_fast_failures() {
    let pool = Pool::new(&["failing", "ok"]);
    let two = ["failing", "ok"];
    let p2c = PeakEwma::new().with_seed(5);
    observe(
        &p2c,
        pool.stats("ok"),
        Duration::from_millis(50),
        5,
        Duration::from_millis(100),
    )
    .await;
    let request = InFlight::start(&p2c, pool.stats("failing"));
    request.finish_with_latency(Outcome::Failure, Duration::from_millis(1));
    assert_eq!(pool.pick(&p2c, &two), "ok");
}

fn owners(ring: &ConsistentHash, instances: &[Instance], keys: usize) -> Vec<String> {
    (0..keys)
        .map(|k| {
            ring.pick_from(instances, &PickContext::with_key(format!("key-{k}")))
                .unwrap()
                .id
                .clone()
        })
        .collect()
}

#[test]
fn consistent_hash_is_stable_and_moves_at_most_about_1_over_n_of_the_keys() {
    let n = 10;
    let keys = 20_000;
    let ids: Vec<String> = (0..n).map(|i| format!("inst-{i}")).collect();
    let all: Vec<Instance> = ids.iter().map(|id| instance(id, 100)).collect();
    let ring = ConsistentHash::new();
    let before = owners(&ring, &all, keys);
    // Deterministic: the same keys land on the same instances, in a fresh ring too.
    assert_eq!(before, owners(&ConsistentHash::new(), &all, keys));
    // And reasonably even: no instance owns more than twice its share.
    let mut per: HashMap<&str, usize> = HashMap::new();
    for o in &before {
        *per.entry(o.as_str()).or_default() += 1;
    }
    assert!(per.values().all(|c| *c < 2 * keys / n), "{per:?}");

    // One instance leaves: only its keys move.
    let gone = "inst-3";
    let without: Vec<Instance> = all.iter().filter(|i| i.id != gone).cloned().collect();
    let after = owners(&ring, &without, keys);
    let moved: Vec<usize> = (0..keys).filter(|k| before[*k] != after[*k]).collect();
    assert!(moved.iter().all(|k| before[*k] == gone));
    assert_eq!(moved.len(), per[gone]);
    let bound = (keys as f64 / n as f64 * 1.3) as usize;
    assert!(
        moved.len() <= bound,
        "{} keys moved, bound {bound}",
        moved.len()
    );

    // It comes back: exactly the same keys return to it.
    assert_eq!(owners(&ring, &all, keys), before);

    // A new instance joins: keys move only to it, about 1/(N+1) of them.
    let mut more = all.clone();
    more.push(instance("inst-new", 100));
    let joined = owners(&ring, &more, keys);
    let moved: Vec<usize> = (0..keys).filter(|k| before[*k] != joined[*k]).collect();
    assert!(moved.iter().all(|k| joined[*k] == "inst-new"));
    let bound = (keys as f64 / (n + 1) as f64 * 1.3) as usize;
    assert!(
        !moved.is_empty() && moved.len() <= bound,
        "{} moved",
        moved.len()
    );

    // Order of the list does not matter.
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(owners(&ConsistentHash::new(), &reversed, keys), before);
}

#[test]
fn consistent_hash_without_a_key_spreads() {
    let instances = named(&["a", "b"]);
    let counts = counts(&ConsistentHash::new(), &instances, 1_000);
    assert!(counts["a"] > 350 && counts["b"] > 350, "{counts:?}");
}

fn with(id: &str, tags: &[&str], meta: &[(&str, &str)]) -> Instance {
    Instance {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..instance(id, 100)
    }
}

fn apply(filter: &dyn Filter, instances: &[Instance]) -> Vec<String> {
    let stats = EndpointStats::new();
    let mut candidates: Vec<Candidate<'_>> = instances
        .iter()
        .enumerate()
        .map(|(p, i)| Candidate::new(p, i, &stats))
        .collect();
    filter.filter(&mut candidates, &PickContext::new());
    candidates.iter().map(|i| i.id.clone()).collect()
}

#[test]
fn tag_and_metadata_filters() {
    let instances = vec![
        with("a", &["v1"], &[("env", "prod")]),
        with("b", &["v2", "canary"], &[("env", "prod")]),
        with("c", &["v2"], &[("env", "staging")]),
    ];
    assert_eq!(apply(&HasTags::new(["v2"]), &instances), ["b", "c"]);
    assert_eq!(apply(&HasTags::new(["v2", "canary"]), &instances), ["b"]);
    assert!(apply(&HasTags::new(["v3"]), &instances).is_empty());
    assert_eq!(
        apply(&MetadataEquals::new("env", "prod"), &instances),
        ["a", "b"]
    );
    assert!(apply(&MetadataEquals::new("rack", "r1"), &instances).is_empty());
}

#[test]
fn zone_aware_prefers_the_local_zone_and_spills_over() {
    let instances = vec![
        with("a1", &[], &[("zone", "a")]),
        with("a2", &[], &[("zone", "a")]),
        with("b1", &[], &[("zone", "b")]),
        with("x", &[], &[]),
    ];
    let zone = ZoneAware::new("a");
    assert_eq!(apply(&zone, &instances), ["a1", "a2"]);

    // The local zone has nothing healthy left (the caller filtered a1 and a2 out): spill over.
    let rest: Vec<Instance> = instances[2..].to_vec();
    assert_eq!(apply(&zone, &rest), ["b1", "x"]);

    // With min_local 2, a single local instance is not enough.
    let one_local: Vec<Instance> = instances[1..].to_vec();
    assert_eq!(
        apply(&zone.clone().min_local(2), &one_local),
        ["a2", "b1", "x"]
    );
    assert_eq!(apply(&zone, &one_local), ["a2"]);

    // Another key.
    let racks = vec![with("r1", &[], &[("rack", "7")]), with("r2", &[], &[])];
    assert_eq!(apply(&ZoneAware::new("7").key("rack"), &racks), ["r1"]);
}

#[test]
fn stateful_balancers_forget_instances_that_left() {
    // Churn through many ids; the per-id state is pruned and picks stay correct.
    let swrr = SmoothWeighted::new();
    let lor = LeastOutstanding::new();
    let p2c = PeakEwma::new();
    let ring = ConsistentHash::new();
    for round in 0..200 {
        let ids: Vec<String> = (0..3).map(|i| format!("gen{round}-{i}")).collect();
        let instances: Vec<Instance> = ids.iter().map(|id| instance(id, 100)).collect();
        let stats: Vec<EndpointStats> = ids.iter().map(|_| EndpointStats::new()).collect();
        for b in [&swrr as &dyn Balancer, &lor, &p2c, &ring] {
            let picked = b
                .pick_with(&instances, &stats, &PickContext::with_key("k"))
                .unwrap();
            assert!(ids.contains(&instances[picked].id));
            let request = InFlight::start(b, &stats[picked]);
            request.finish_with_latency(Outcome::Success, Duration::from_millis(1));
        }
    }
}
