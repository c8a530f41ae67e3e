//! Per-call overhead of the SDK's client-side machinery, without any network: for every
//! balancer over 10 and 100 instances,
//!
//! - `pick`: the balancer's pick alone (plus the in-flight bookkeeping it needs);
//! - `call path`: what `ServiceClient` does per attempt besides HTTP — `Selector::select`
//!   (outlier and breaker checks, candidate list, pick, breaker permit, in-flight record) and
//!   `Selected::finish` (breaker, outlier detector and balancer bookkeeping).
//!
//! Run: `cargo bench -p signpost-client --bench overhead` (plain timing loop, ns per call,
//! single thread; `-- --quick` for a shorter run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signpost_client::balance::{
    Balancer, Candidate, ConsistentHash, EndpointStats, InFlight, LeastOutstanding, Outcome,
    PeakEwma, PickContext, Random, RoundRobin, SmoothWeighted, WeightedRandom,
};
use signpost_client::selector::Selector;
use signpost_client::Endpoints;
use signpost_client::Instance;

fn instances(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| Instance {
            id: format!("users-10.0.{}.{}-8080", i / 250, i % 250),
            service: "users".into(),
            address: format!("10.0.{}.{}", i / 250, i % 250),
            port: 8080,
            tags: vec!["v2".into()],
            metadata: BTreeMap::from([("zone".into(), format!("zone-{}", i % 3))]),
            weight: 50 + (i as u32 * 37) % 200,
            state: Default::default(),
            maintenance: None,
        })
        .collect()
}

fn balancers() -> Vec<Arc<dyn Balancer>> {
    vec![
        Arc::new(Random::new()),
        Arc::new(RoundRobin::new()),
        Arc::new(WeightedRandom::new()),
        Arc::new(SmoothWeighted::new()),
        Arc::new(LeastOutstanding::new()),
        Arc::new(PeakEwma::new()),
        Arc::new(ConsistentHash::new()),
    ]
}

/// Runs `op` repeatedly for about `budget` and returns nanoseconds per call.
fn time(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    // Warm up (builds per-instance state, the hash ring, ...).
    for i in 0..2_000 {
        op(i);
    }
    let mut iterations: u64 = 0;
    let mut batch: u64 = 1_000;
    let started = Instant::now();
    loop {
        for i in 0..batch {
            op(iterations + i);
        }
        iterations += batch;
        let elapsed = started.elapsed();
        if elapsed >= budget {
            return elapsed.as_nanos() as f64 / iterations as f64;
        }
        batch = (batch * 2).min(1_000_000);
    }
}

fn ctx(i: u64) -> PickContext {
    PickContext::with_key_hash(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 50 } else { 300 });
    println!("SDK per-call overhead (ns/call, single thread, no network)");
    println!();
    println!(
        "| {:<17} | {:>9} | {:>10} | {:>14} |",
        "balancer", "instances", "pick", "call path"
    );
    println!("|{:-<19}|{:->11}|{:->12}|{:->16}|", "", "", "", "");
    for n in [10, 100] {
        let list = Endpoints::new(1, instances(n));
        let stats: Vec<EndpointStats> = list.iter().map(|_| EndpointStats::new()).collect();
        let candidates: Vec<Candidate<'_>> = list
            .iter()
            .zip(&stats)
            .enumerate()
            .map(|(p, (i, s))| Candidate::new(p, i, s))
            .collect();
        for balancer in balancers() {
            let pick = time(budget, |i| {
                let picked = balancer.pick(black_box(&candidates), &ctx(i)).unwrap();
                let in_flight = InFlight::start(&*balancer, picked.stats());
                in_flight.finish_with_latency(Outcome::Success, Duration::from_micros(700));
            });
            let selector = Selector::builder()
                .shared_balancer(balancer.clone())
                .build();
            let full = time(budget, |i| {
                let selected = selector.select(black_box(&list), &ctx(i), &[]).unwrap();
                black_box(selected.instance());
                selected.finish(Outcome::Success);
            });
            println!(
                "| {:<17} | {:>9} | {:>10.0} | {:>14.0} |",
                balancer.name(),
                n,
                pick,
                full
            );
        }
    }
}
