//! Property test of the state machine: arbitrary command sequences (valid, malformed, over the
//! limits, times out of range, nested batches) never panic, keep the registry's invariants
//! ([`Registry::validate_state`]), change nothing when refused, and always serialise.
//!
//! CI runs the default case count; a long run:
//! `PROPTEST_CASES=1000000 cargo test --release -p signpost-core --test apply_props`.

use proptest::prelude::*;
use signpost_core::limits::Limits;
use signpost_core::model::{Dur, Lifecycle, NewInstance, ServiceDefinition, MAX_TIMESTAMP_MS};
use signpost_core::{CheckSpec, Command, InstanceKey, Registry, Request, Response, Status};

fn service() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["users", "orders", "web", "db"]).prop_map(String::from),
        1 => prop::sample::select(vec!["", "Users", "-x", "a_b", "x.y"]).prop_map(String::from),
        1 => "[a-z0-9-]{0,70}",
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["i1", "i2", "i3", "i4", "i5"]).prop_map(String::from),
        1 => ".{0,140}",
    ]
}

fn dur() -> impl Strategy<Value = Option<Dur>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Dur(0))),
        1 => (0u64..200_000).prop_map(|ms| Some(Dur(ms))),
        1 => any::<u64>().prop_map(|ms| Some(Dur(ms))),
    ]
}

fn check() -> impl Strategy<Value = Option<CheckSpec>> {
    let target = prop_oneof![
        Just("10.0.0.1:80".to_string()),
        Just("http://h/health".to_string()),
        "[ -~]{0,40}",
        "http://h/[a-z]{2040,2060}",
    ];
    prop::option::of(
        (0u8..5, target, dur(), dur(), dur(), dur(), 0u32..4, 0u32..4).prop_map(
            |(kind, target, ttl, interval, timeout, after, s, f)| {
                let mut c = CheckSpec {
                    interval,
                    timeout,
                    deregister_after: after,
                    success_before_passing: s,
                    failures_before_critical: f,
                    ..CheckSpec::default()
                };
                match kind {
                    0 => c.ttl = ttl.or(Some(Dur(1000))),
                    1 => c.http = Some(target),
                    2 => c.tcp = Some(target),
                    3 => c.grpc = Some(target),
                    _ => {}
                }
                c
            },
        ),
    )
}

fn register() -> impl Strategy<Value = Command> {
    (
        service(),
        id(),
        prop_oneof![Just("10.0.0.1".to_string()), "[ -~]{0,20}"],
        any::<u16>(),
        prop::collection::vec("[a-z]{0,5}", 0..3),
        prop::collection::btree_map("[a-z]{0,3}", "[a-z]{0,3}", 0..3),
        prop_oneof![Just(100u32), any::<u32>()],
        check(),
        prop::option::of(prop::sample::select(vec![
            Status::Passing,
            Status::Warning,
            Status::Critical,
        ])),
    )
        .prop_map(
            |(service, id, address, port, tags, metadata, weight, check, status)| {
                Command::Register(NewInstance {
                    id,
                    service,
                    address,
                    port,
                    tags,
                    metadata: metadata.into(),
                    weight,
                    check,
                    status,
                    state: Default::default(),
                })
            },
        )
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "a/b", "a/c", "b", ""]).prop_map(String::from),
        1 => ".{0,20}",
    ]
}

fn single() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => register(),
        2 => (service(), id()).prop_map(|(s, i)| Command::Deregister(InstanceKey::new(s, i))),
        1 => (service(), id(), prop::sample::select(vec![Status::Passing, Status::Critical]))
            .prop_map(|(s, i, status)| Command::SetStatus { key: InstanceKey::new(s, i), status }),
        1 => (service(), "[ -~]{0,8}", prop::collection::vec(service(), 0..3)).prop_map(
            |(name, version, dependencies)| Command::PutDefinition(ServiceDefinition {
                name,
                version,
                description: String::new(),
                endpoints: vec![],
                dependencies,
                config: serde_json::Map::new(),
                create_index: 0,
                modify_index: 0,
            })
        ),
        1 => service().prop_map(|service| Command::DeleteDefinition { service }),
        2 => (key(), prop::collection::vec(any::<u8>(), 0..40), prop::option::of(0u64..20))
            .prop_map(|(key, value, cas)| Command::KvSet { key, value, flags: 0, cas }),
        1 => (key(), any::<bool>(), prop::option::of(0u64..20))
            .prop_map(|(key, recurse, cas)| Command::KvDelete { key, recurse, cas }),
        1 => (service(), id(), any::<bool>(), prop::option::of(".{0,20}"))
            .prop_map(|(s, i, enable, reason)| Command::SetMaintenance {
                key: InstanceKey::new(s, i),
                enable,
                reason,
            }),
        1 => (service(), id(), prop::sample::select(vec![
                Lifecycle::Starting,
                Lifecycle::Up,
                Lifecycle::Stopping,
            ]))
            .prop_map(|(s, i, state)| Command::SetLifecycle { key: InstanceKey::new(s, i), state }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => single(),
        1 => prop::collection::vec(single(), 0..6).prop_map(Command::Batch),
        1 => prop::collection::vec(single(), 0..3)
            .prop_map(|c| Command::Batch(vec![Command::Batch(c)])),
    ]
}

/// Time steps: mostly forward by up to a minute; now and then a jump past the year 9999.
fn step() -> impl Strategy<Value = (u64, bool)> {
    (0u64..60_000, prop::bool::weighted(0.03))
}

fn small_limits() -> Limits {
    Limits {
        max_services: 3,
        max_instances: 8,
        max_instances_per_service: 4,
        max_kv_keys: 4,
        max_kv_bytes: 64,
        kv_tombstone_ttl_ms: 30_000,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn apply_never_panics_and_keeps_its_invariants(
        commands in prop::collection::vec((command(), step()), 1..24)
    ) {
        let mut r = Registry::with_limits(small_limits());
        let mut now = 1_700_000_000_000u64;
        for (index, (command, (dt, far))) in commands.into_iter().enumerate() {
            now += dt;
            let at = if far { MAX_TIMESTAMP_MS + 1 + dt } else { now };
            let before = r.clone();
            let (resp, events) = r.apply(index as u64 + 2, &Request::new(at, command));
            if let Response::Refused(_) = resp {
                prop_assert!(events.is_empty());
                prop_assert_eq!(&r, &before, "a refusal changed the state");
            }
            if far {
                prop_assert!(matches!(resp, Response::Refused(_)));
            }
            if let Err(e) = r.validate_state() {
                return Err(TestCaseError::fail(e));
            }
            let bytes = serde_json::to_vec(&r).expect("stored state always serialises");
            serde_json::to_vec(&resp).expect("responses always serialise");
            for e in &events {
                serde_json::to_vec(e).expect("events always serialise");
            }
            let mut back: Registry = serde_json::from_slice(&bytes).expect("a snapshot reads back");
            back.set_limits(small_limits());
            prop_assert_eq!(&back, &r);
            if let Err(e) = back.validate_state() {
                return Err(TestCaseError::fail(e));
            }
        }
    }
}
