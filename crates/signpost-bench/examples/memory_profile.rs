//! Where an agent's bytes per instance go: builds a `Registry`, a `HealthMonitor` and an
//! `InstanceLookup` holding N instances of the benchmark's payload
//! (`signpost_bench::payload::registration`, a TTL check each, spread over 1,000 services as
//! `compare --scenarios memory` does) under a counting global allocator, and prints the heap
//! each structure holds per instance.
//!
//! ```sh
//! cargo run --release -p signpost-bench --example memory_profile -- 1000000
//! ```
//!
//! Figures are bytes requested from the allocator (`stats_alloc`); malloc adds its own header
//! and rounding to each allocation (glibc: about 16 bytes on average, shown as an estimate).

use std::alloc::System;
use std::collections::HashSet;
use std::mem::size_of;
use std::sync::Arc;
use std::time::Duration;

use signpost_bench::payload;
use signpost_core::health::{GuardConfig, HealthMonitor};
use signpost_core::limits::Limits;
use signpost_core::lookup::InstanceLookup;
use signpost_core::validate::{self, Registration};
use signpost_core::{Command, Instance, Registry, Request, Response};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Services the instances are spread over (the memory scenario's).
const SERVICES: u64 = 1_000;

/// glibc's average cost per allocation beyond the bytes asked for (header and rounding).
const MALLOC_OVERHEAD: f64 = 16.0;

/// Heap held (bytes, allocations) since `region` began.
fn held(region: &Region<'_, System>) -> (f64, f64) {
    let c = region.change();
    // A realloc's growth or shrinkage is already in `bytes_allocated` / `bytes_deallocated`.
    let bytes = c.bytes_allocated as f64 - c.bytes_deallocated as f64;
    let allocs = c.allocations as f64 - c.deallocations as f64;
    (bytes, allocs)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the instance count is a number"))
        .unwrap_or(100_000);
    let ttl = Some(Duration::from_secs(3600));
    let payload_bytes = (0..1000)
        .map(|i| payload::registration("mem", i * 997, ttl).len())
        .sum::<usize>() as f64
        / 1000.0;

    // Bounds as high as the agent allows them to be configured: the count decides.
    let mut registry = Registry::with_limits(Limits {
        max_instances: usize::MAX,
        max_instances_per_service: usize::MAX,
        ..Limits::default()
    });
    let region = Region::new(GLOBAL);
    for i in 0..n {
        let body = payload::registration("mem", i, ttl);
        let reg: Registration = serde_json::from_str(&body).expect("the payload parses");
        let service = payload::service_name("mem", i % SERVICES);
        let new = validate::registration(&service, reg).expect("the payload is valid");
        let request = Request::new(1_700_000_000_000 + i, Command::Register(new));
        // The response and events are dropped here, as the agent drops them once delivered.
        let (response, _) = registry.apply(i + 1, &request);
        assert!(
            matches!(response, Response::Registered { .. }),
            "{response:?}"
        );
    }
    let (registry_bytes, registry_allocs) = held(&region);

    let region = Region::new(GLOBAL);
    let mut monitor = HealthMonitor::new(GuardConfig::default());
    for i in registry.all_instances() {
        monitor.track(i, 0);
    }
    let (monitor_bytes, monitor_allocs) = held(&region);
    assert_eq!(monitor.len() as u64, n);

    // The Consul face's lookup by instance id and check id, kept beside the registry.
    let region = Region::new(GLOBAL);
    let lookup = InstanceLookup::of(&registry);
    let (lookup_bytes, lookup_allocs) = held(&region);
    assert_eq!(
        lookup
            .by_instance_id(&registry, &payload::instance_id("mem", 0))
            .len(),
        1
    );

    let per = |b: f64| b / n as f64;
    println!("instances: {n}; payload: {payload_bytes:.0} bytes (JSON registration body)");
    println!();
    println!("| structure | bytes/instance | allocations/instance |");
    println!("| --- | ---: | ---: |");
    breakdown(&registry, n);
    println!(
        "| **registry, total** | **{:.0}** | {:.2} |",
        per(registry_bytes),
        per(registry_allocs)
    );
    println!(
        "| **health monitor, total** (slab slot, key map, TTL index) | **{:.0}** | {:.2} |",
        per(monitor_bytes),
        per(monitor_allocs)
    );
    println!(
        "| **instance lookup, total** (id hash → service number) | **{:.0}** | {:.2} |",
        per(lookup_bytes),
        per(lookup_allocs)
    );
    let (bytes, allocs) = (
        registry_bytes + monitor_bytes + lookup_bytes,
        registry_allocs + monitor_allocs + lookup_allocs,
    );
    println!(
        "| malloc headers and rounding (estimate: {MALLOC_OVERHEAD:.0} B × allocations) | {:.0} | |",
        per(allocs) * MALLOC_OVERHEAD
    );
    println!(
        "| **heap, total** | **{:.0}** | {:.2} |",
        per(bytes) + per(allocs) * MALLOC_OVERHEAD,
        per(allocs)
    );
}

/// The registry's bytes by what holds them, from the instances themselves; what is left is
/// the B-tree nodes, the interner's hash tables and the per-service entries.
fn breakdown(registry: &Registry, n: u64) {
    let mut record = 0usize;
    let mut strings = 0usize;
    let mut tags = 0usize;
    let mut metadata = 0usize;
    let mut shared_strings: HashSet<*const u8> = HashSet::new();
    let mut shared_bytes = 0usize;
    let mut checks: HashSet<*const signpost_core::CheckSpec> = HashSet::new();
    for i in registry.all_instances() {
        record += size_of::<Instance>() + 2 * size_of::<usize>();
        strings += i.id.capacity() + i.service.capacity() + i.address.capacity();
        tags += i.tags.capacity() * size_of::<String>()
            + i.tags.iter().map(String::capacity).sum::<usize>();
        metadata += i.metadata.len() * 2 * size_of::<Arc<str>>();
        for (k, v) in i.metadata.iter() {
            for s in [k, v] {
                if shared_strings.insert(s.as_ptr()) {
                    shared_bytes += s.len() + 2 * size_of::<usize>();
                }
            }
        }
        if let Some(c) = &i.check {
            if checks.insert(Arc::as_ptr(c)) {
                shared_bytes += size_of::<signpost_core::CheckSpec>() + 2 * size_of::<usize>();
            }
        }
    }
    let per = |b: usize| b as f64 / n as f64;
    println!(
        "| instance record (`Arc<Instance>`: {} bytes + counts) | {:.0} | 1 |",
        size_of::<Instance>(),
        per(record)
    );
    println!(
        "| id, service, address `String`s | {:.0} | 3 |",
        per(strings)
    );
    println!("| tags (`Vec<String>` and each tag) | {:.0} | |", per(tags));
    println!(
        "| metadata (sorted `Box<[(Arc<str>, Arc<str>)]>`) | {:.0} | 1 |",
        per(metadata)
    );
    println!(
        "| shared metadata strings and checks ({} distinct strings, {} checks; {} in the interner) | {:.0} | |",
        shared_strings.len(),
        checks.len(),
        registry.interned(),
        per(shared_bytes)
    );
}
