use super::*;
use crate::model::{Dur, Timestamp};
use crate::Command;

mod reference;

fn instance(id: &str, check: CheckSpec, status: Status) -> Instance {
    Instance {
        id: id.to_string(),
        service: "svc".to_string(),
        address: "10.0.0.1".to_string(),
        port: 80,
        tags: vec![],
        metadata: Default::default(),
        weight: 100,
        status,
        check: Some(std::sync::Arc::new(check)),
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        create_index: 1,
        modify_index: 1,
        state: Default::default(),
        maintenance: None,
    }
}

fn ttl(ms: u64) -> CheckSpec {
    CheckSpec {
        ttl: Some(Dur(ms)),
        ..CheckSpec::default()
    }
}

fn tcp() -> CheckSpec {
    CheckSpec {
        tcp: Some("10.0.0.1:80".into()),
        ..CheckSpec::default()
    }
}

fn key(id: &str) -> InstanceKey {
    InstanceKey::new("svc", id)
}

fn set(id: &str, status: Status) -> Action {
    Action::SetStatus {
        key: key(id),
        status,
    }
}

fn no_guard() -> GuardConfig {
    GuardConfig {
        min_instances: usize::MAX,
        ..GuardConfig::default()
    }
}

#[test]
fn ttl_expires_after_deadline_and_heartbeat_restores() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    assert!(m.tick(999).is_empty(), "not yet due");
    assert_eq!(m.tick(1000), vec![set("a", Status::Critical)]);
    assert!(m.tick(5000).is_empty(), "expiry is reported once");
    assert_eq!(
        m.heartbeat(&key("a"), 5001),
        Ok(Some(set("a", Status::Passing)))
    );
    assert_eq!(m.heartbeat(&key("a"), 5500), Ok(None), "already passing");
    assert!(m.tick(6400).is_empty(), "renewed deadline is 6500");
    assert_eq!(m.tick(6500), vec![set("a", Status::Critical)]);
}

#[test]
fn heartbeats_keep_a_ttl_instance_alive() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    for now in (500..20_000).step_by(500) {
        m.heartbeat(&key("a"), now).unwrap();
        assert!(m.tick(now + 1).is_empty(), "expired at {now}");
    }
}

#[test]
fn heartbeat_errors_for_untracked_and_non_ttl() {
    let mut m = HealthMonitor::new(no_guard());
    assert_eq!(m.heartbeat(&key("x"), 0), Err(HeartbeatError::NotTracked));
    m.adopt(&instance("t", tcp(), Status::Critical), 0);
    assert_eq!(m.heartbeat(&key("t"), 0), Err(HeartbeatError::NotTtl));
}

#[test]
fn flap_damping_needs_consecutive_results() {
    let mut m = HealthMonitor::new(no_guard());
    let check = CheckSpec {
        failures_before_critical: 3,
        success_before_passing: 2,
        ..tcp()
    };
    m.adopt(&instance("a", check, Status::Passing), 0);
    assert_eq!(m.record(&key("a"), CheckResult::Critical, 1), None);
    assert_eq!(m.record(&key("a"), CheckResult::Critical, 2), None);
    assert_eq!(
        m.record(&key("a"), CheckResult::Passing, 3),
        None,
        "streak broken"
    );
    assert_eq!(m.record(&key("a"), CheckResult::Critical, 4), None);
    assert_eq!(m.record(&key("a"), CheckResult::Critical, 5), None);
    assert_eq!(
        m.record(&key("a"), CheckResult::Critical, 6),
        Some(set("a", Status::Critical))
    );
    assert_eq!(
        m.record(&key("a"), CheckResult::Critical, 7),
        None,
        "already critical"
    );
    assert_eq!(m.record(&key("a"), CheckResult::Passing, 8), None);
    assert_eq!(
        m.record(&key("a"), CheckResult::Passing, 9),
        Some(set("a", Status::Passing))
    );
}

#[test]
fn ttl_flap_damping_counts_missed_periods() {
    let mut m = HealthMonitor::new(no_guard());
    let check = CheckSpec {
        failures_before_critical: 2,
        ..ttl(1000)
    };
    m.adopt(&instance("a", check, Status::Passing), 0);
    assert!(m.tick(1000).is_empty(), "first missed period is tolerated");
    assert_eq!(m.tick(2000), vec![set("a", Status::Critical)]);
}

#[test]
fn warning_applies_at_once_and_passing_recovers() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", tcp(), Status::Critical), 0);
    assert_eq!(
        m.record(&key("a"), CheckResult::Passing, 1),
        Some(set("a", Status::Passing))
    );
    assert_eq!(
        m.record(&key("a"), CheckResult::Warning, 2),
        Some(set("a", Status::Warning))
    );
    assert_eq!(m.record(&key("a"), CheckResult::Warning, 3), None);
    assert_eq!(
        m.record(&key("a"), CheckResult::Passing, 4),
        Some(set("a", Status::Passing))
    );
}

#[test]
fn deregister_after_removes_long_critical_instances_once() {
    let mut m = HealthMonitor::new(no_guard());
    let check = CheckSpec {
        deregister_after: Some(Dur(5000)),
        ..ttl(1000)
    };
    m.adopt(&instance("a", check, Status::Passing), 0);
    assert_eq!(m.tick(1000), vec![set("a", Status::Critical)]);
    assert!(m.tick(5999).is_empty());
    assert_eq!(m.tick(6000), vec![Action::Deregister { key: key("a") }]);
    assert!(m.tick(7000).is_empty(), "asked once");
}

#[test]
fn recovery_resets_the_deregister_timer() {
    let mut m = HealthMonitor::new(no_guard());
    let check = CheckSpec {
        deregister_after: Some(Dur(5000)),
        ..tcp()
    };
    m.adopt(&instance("a", check, Status::Passing), 0);
    m.record(&key("a"), CheckResult::Critical, 1000);
    m.record(&key("a"), CheckResult::Passing, 4000);
    m.record(&key("a"), CheckResult::Critical, 5000);
    assert!(m.tick(9000).is_empty(), "critical only since 5000");
    assert_eq!(m.tick(10_000), vec![Action::Deregister { key: key("a") }]);
}

#[test]
fn guard_stops_mass_expiry_and_resumes_when_heartbeats_recover() {
    let mut m = HealthMonitor::new(GuardConfig {
        threshold: 0.5,
        window_ms: 60_000,
        min_instances: 5,
    });
    for i in 0..10 {
        m.adopt(&instance(&format!("i{i}"), ttl(1000), Status::Passing), 0);
    }
    // The agent loses its network: no heartbeats arrive for anyone.
    assert!(m.tick(1500).is_empty(), "10 of 10 overdue: guard must hold");
    let g = m.guard();
    assert!(g.engaged);
    assert_eq!((g.overdue, g.ttl_instances), (10, 10));
    assert!(m.tick(30_000).is_empty());

    // The network comes back: eight instances heartbeat, two are really gone.
    for i in 0..8 {
        m.heartbeat(&key(&format!("i{i}")), 30_001).unwrap();
    }
    let actions = m.tick(30_002);
    assert!(!m.guard().engaged, "guard releases once heartbeats recover");
    assert_eq!(
        actions,
        vec![set("i8", Status::Critical), set("i9", Status::Critical)]
    );
}

#[test]
fn guard_counts_expiries_within_the_window() {
    let mut m = HealthMonitor::new(GuardConfig {
        threshold: 0.5,
        window_ms: 10_000,
        min_instances: 4,
    });
    for i in 0..4 {
        m.adopt(&instance(&format!("i{i}"), ttl(1000), Status::Passing), 0);
    }
    for i in 1..4 {
        m.heartbeat(&key(&format!("i{i}")), 900).unwrap();
    }
    assert_eq!(
        m.tick(1000),
        vec![set("i0", Status::Critical)],
        "1 of 4 may expire"
    );
    for i in 2..4 {
        m.heartbeat(&key(&format!("i{i}")), 1800).unwrap();
    }
    assert_eq!(
        m.tick(1900),
        vec![set("i1", Status::Critical)],
        "2 of 4 is not more than half"
    );
    assert!(
        m.tick(2800).is_empty(),
        "a third expiry within the window would be 3 of 4"
    );
    assert!(m.guard().engaged);
    // Once the earlier expiries leave the window, expiry resumes.
    assert_eq!(
        m.tick(11_901),
        vec![set("i2", Status::Critical), set("i3", Status::Critical)]
    );
}

#[test]
fn guard_does_not_apply_to_small_fleets() {
    let mut m = HealthMonitor::new(GuardConfig::default());
    m.adopt(&instance("only", ttl(1000), Status::Passing), 0);
    assert_eq!(m.tick(1000), vec![set("only", Status::Critical)]);
}

#[test]
fn guard_also_holds_back_deregistration() {
    let mut m = HealthMonitor::new(GuardConfig {
        threshold: 0.5,
        window_ms: 60_000,
        min_instances: 2,
    });
    let check = CheckSpec {
        deregister_after: Some(Dur(1000)),
        ..ttl(1000)
    };
    m.adopt(&instance("dead", check.clone(), Status::Critical), 0);
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    m.adopt(&instance("b", ttl(1000), Status::Passing), 0);
    assert!(
        m.tick(5000).is_empty(),
        "a and b overdue: 2 of 3, guard engaged"
    );
}

#[test]
fn restart_deadlines_gives_grace() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    m.restart_deadlines(10_000);
    assert!(m.tick(10_999).is_empty());
    assert_eq!(m.tick(11_000), vec![set("a", Status::Critical)]);
}

#[test]
fn observe_status_keeps_the_monitor_in_step_with_the_registry() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    m.observe_status(&key("a"), Status::Critical, 10);
    assert!(
        m.tick(2000).is_empty(),
        "already critical: nothing to expire"
    );
    assert_eq!(
        m.heartbeat(&key("a"), 2001),
        Ok(Some(set("a", Status::Passing)))
    );
}

#[test]
fn untracked_instances_are_forgotten() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    m.untrack(&key("a"));
    assert!(m.tick(5000).is_empty());
    assert!(m.is_empty());
}

#[test]
fn ttl_status_can_be_set_directly_and_renews_the_deadline() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    assert_eq!(
        m.set_ttl_status(&key("a"), Status::Warning, 500),
        Ok(Some(set("a", Status::Warning)))
    );
    assert!(m.tick(1400).is_empty(), "deadline renewed to 1500");
    assert_eq!(
        m.set_ttl_status(&key("a"), Status::Critical, 1450),
        Ok(Some(set("a", Status::Critical)))
    );
    assert_eq!(
        m.set_ttl_status(&key("a"), Status::Passing, 1460),
        Ok(Some(set("a", Status::Passing)))
    );
    m.adopt(&instance("t", tcp(), Status::Critical), 0);
    assert_eq!(
        m.set_ttl_status(&key("t"), Status::Warning, 0),
        Err(HeartbeatError::NotTtl)
    );
}

/// Recomputes, by walking every slot, what the indexes and counts must hold, and compares.
fn assert_consistent(m: &HealthMonitor) {
    let mut expiries = BTreeSet::new();
    let mut removals = BTreeSet::new();
    let mut ttl_instances = 0;
    for (slot, t) in m.slots.iter().enumerate() {
        let Some(t) = t else {
            assert!(
                m.free.contains(&(slot as Slot)),
                "empty slot {slot} not free"
            );
            continue;
        };
        assert_eq!(m.slot(&t.instance_key()), Ok(slot as Slot), "key map");
        if let Some(due) = t.expiry() {
            expiries.insert((due, slot as Slot));
        }
        if let Some(due) = t.removal() {
            removals.insert((due, slot as Slot));
        }
        ttl_instances += usize::from(t.guarded());
    }
    assert_eq!(m.by_key.len() + m.free.len(), m.slots.len());
    assert_eq!(m.expiries, expiries, "ttl deadline index");
    assert_eq!(m.removals, removals, "deregistration index");
    assert_eq!(m.ttl_instances, ttl_instances, "ttl instance count");
}

#[test]
fn a_heartbeat_moves_the_deadline_in_the_index() {
    let mut m = HealthMonitor::new(no_guard());
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    m.adopt(&instance("b", ttl(1000), Status::Passing), 0);
    m.heartbeat(&key("a"), 900).unwrap();
    assert_consistent(&m);
    assert_eq!(
        m.expiries.len(),
        2,
        "one entry per instance, the old one gone"
    );
    assert_eq!(m.tick(1000), vec![set("b", Status::Critical)]);
    assert_eq!(m.guard().overdue, 1);
    assert!(m.tick(1899).is_empty(), "a's old deadline is gone");
    assert_eq!(m.tick(1900), vec![set("a", Status::Critical)]);
    assert!(
        m.expiries.is_empty(),
        "critical instances wait for no deadline"
    );
    assert_consistent(&m);
}

#[test]
fn an_untracked_instance_leaves_no_deadline_behind() {
    let mut m = HealthMonitor::new(no_guard());
    let check = CheckSpec {
        deregister_after: Some(Dur(500)),
        ..ttl(1000)
    };
    m.adopt(&instance("a", check.clone(), Status::Passing), 0);
    m.adopt(&instance("c", check, Status::Critical), 0);
    m.untrack(&key("a"));
    m.untrack(&key("c"));
    assert_consistent(&m);
    assert!(m.expiries.is_empty() && m.removals.is_empty());
    // A new instance reuses the freed slot with a later deadline: the old one must not fire.
    m.adopt(&instance("b", ttl(1000), Status::Passing), 600);
    assert_consistent(&m);
    assert!(m.tick(1000).is_empty(), "nothing of a or c is left to fire");
    assert_eq!(m.tick(1600), vec![set("b", Status::Critical)]);
    // Re-registering re-tracks with a fresh deadline and one index entry.
    m.adopt(&instance("b", ttl(1000), Status::Passing), 2000);
    m.adopt(&instance("b", ttl(2000), Status::Passing), 2000);
    assert_consistent(&m);
    assert_eq!(m.len(), 1);
    assert!(
        m.tick(3000).is_empty(),
        "the second registration's ttl counts"
    );
    assert_eq!(m.tick(4000), vec![set("b", Status::Critical)]);
}

#[test]
fn a_deregistration_that_recovers_leaves_the_index() {
    let mut m = HealthMonitor::new(no_guard());
    let check = CheckSpec {
        deregister_after: Some(Dur(5000)),
        ..ttl(1000)
    };
    m.adopt(&instance("a", check, Status::Passing), 0);
    assert_eq!(m.tick(1000), vec![set("a", Status::Critical)]);
    assert_eq!(m.removals.len(), 1);
    m.heartbeat(&key("a"), 2000).unwrap();
    assert!(
        m.removals.is_empty(),
        "passing again: no deregistration due"
    );
    assert_consistent(&m);
    for now in (2500..=7000).step_by(500) {
        m.heartbeat(&key("a"), now).unwrap();
        assert!(
            m.tick(now).is_empty(),
            "the old deregistration fired at {now}"
        );
    }
    assert_consistent(&m);
}

#[test]
fn the_guard_counts_ttl_instances_as_they_come_and_go() {
    let mut m = HealthMonitor::new(GuardConfig::default());
    let count = |m: &mut HealthMonitor| {
        m.tick(0);
        assert_consistent(m);
        m.guard().ttl_instances
    };
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    m.adopt(&instance("b", ttl(1000), Status::Passing), 0);
    m.adopt(&instance("t", tcp(), Status::Passing), 0);
    assert_eq!(count(&mut m), 2, "tcp checks do not count");
    m.adopt(&instance("a", ttl(1000), Status::Passing), 0);
    assert_eq!(count(&mut m), 2, "re-registration does not count twice");
    m.adopt(&instance("a", tcp(), Status::Passing), 0);
    assert_eq!(count(&mut m), 1, "a's check is no longer a ttl");
    m.adopt(&instance("t", ttl(1000), Status::Passing), 0);
    assert_eq!(count(&mut m), 2, "t's check now is");
    m.observe_status(&key("t"), Status::Critical, 0);
    m.observe_status(&key("b"), Status::Passing, 0);
    assert_eq!(count(&mut m), 2, "status changes do not change the count");
    let mut plain = instance("b", ttl(1000), Status::Passing);
    plain.check = None;
    m.adopt(&plain, 0);
    assert_eq!(count(&mut m), 1, "b lost its check");
    m.untrack(&key("t"));
    m.untrack(&key("t"));
    assert_eq!(count(&mut m), 0, "untracking twice counts once");
    assert!(m.is_empty() || m.len() == 1);
}

/// A small deterministic generator (no dependencies in the pure core).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn sorted(actions: Vec<Action>) -> Vec<String> {
    let mut out: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
    out.sort();
    out
}

/// Random operations on the indexed monitor and on the old one that walked every instance:
/// they must decide the same things at every step.
#[test]
fn the_indexed_monitor_decides_as_the_full_scan_did() {
    for seed in 0..20 {
        let mut rng = Lcg(seed);
        let guard = GuardConfig {
            threshold: 0.5,
            window_ms: 3000,
            min_instances: 4,
        };
        let mut m = HealthMonitor::new(guard);
        let mut r = reference::Reference::new(guard);
        let mut now = 0;
        for step in 0..3000 {
            now += rng.next(150);
            let id = format!("i{}", rng.next(12));
            let k = key(&id);
            let ctx = format!("seed {seed} step {step} at {now}");
            match rng.next(100) {
                0..=9 => {
                    let check = match rng.next(4) {
                        0 => tcp(),
                        1 => CheckSpec {
                            deregister_after: Some(Dur(rng.next(3000))),
                            failures_before_critical: 1 + rng.next(2) as u32,
                            success_before_passing: 1 + rng.next(2) as u32,
                            ..ttl(200 + rng.next(1000))
                        },
                        _ => ttl(200 + rng.next(1000)),
                    };
                    let status =
                        [Status::Passing, Status::Warning, Status::Critical][rng.next(3) as usize];
                    let mut i = instance(&id, check, status);
                    if rng.next(10) == 0 {
                        i.check = None;
                    }
                    m.track(&i, now);
                    r.track(&i, now);
                }
                10..=14 => {
                    m.untrack(&k);
                    r.untrack(&k);
                }
                15..=54 => assert_eq!(m.heartbeat(&k, now), r.heartbeat(&k, now), "{ctx}"),
                55..=59 => {
                    let s =
                        [Status::Passing, Status::Warning, Status::Critical][rng.next(3) as usize];
                    assert_eq!(
                        m.set_ttl_status(&k, s, now),
                        r.set_ttl_status(&k, s, now),
                        "{ctx}"
                    );
                }
                60..=64 => {
                    let s =
                        [Status::Passing, Status::Warning, Status::Critical][rng.next(3) as usize];
                    m.observe_status(&k, s, now);
                    r.observe_status(&k, s, now);
                }
                65..=69 => {
                    let res = [
                        CheckResult::Passing,
                        CheckResult::Warning,
                        CheckResult::Critical,
                    ][rng.next(3) as usize];
                    assert_eq!(m.record(&k, res, now), r.record(&k, res, now), "{ctx}");
                }
                70 => {
                    m.restart_deadlines(now);
                    r.restart_deadlines(now);
                }
                _ => {
                    assert_eq!(sorted(m.tick(now)), sorted(r.tick(now)), "{ctx}");
                    assert_eq!(m.guard(), r.guard(), "{ctx}");
                }
            }
            assert_eq!(m.len(), r.len(), "{ctx}");
            assert_consistent(&m);
        }
    }
}

#[test]
fn an_action_becomes_the_command_that_carries_it_out() {
    let key = InstanceKey::new("web", "w1");
    assert_eq!(
        Command::from(Action::SetStatus {
            key: key.clone(),
            status: Status::Critical
        }),
        Command::SetStatus {
            key: key.clone(),
            status: Status::Critical
        }
    );
    assert_eq!(
        Command::from(Action::Deregister { key: key.clone() }),
        Command::Deregister(key)
    );
}

#[test]
fn instances_never_seen_alive_do_not_hold_the_guard_on() {
    let mut m = HealthMonitor::new(GuardConfig::default());
    // Ten live instances that heartbeat, and twenty registered and never heard from again.
    for i in 0..10 {
        m.track(
            &instance(&format!("live{i}"), ttl(1000), Status::Passing),
            0,
        );
        m.heartbeat(&InstanceKey::new("svc", format!("live{i}")), 0)
            .unwrap();
    }
    for i in 0..20 {
        m.track(
            &instance(&format!("ghost{i}"), ttl(1000), Status::Passing),
            0,
        );
    }
    assert_eq!(m.tick(500), vec![]);
    for i in 0..10 {
        m.heartbeat(&InstanceKey::new("svc", format!("live{i}")), 900)
            .unwrap();
    }
    let actions = m.tick(1500);
    let g = m.guard();
    assert!(!g.engaged, "ghosts do not engage the guard: {g:?}");
    assert_eq!(g.ttl_instances, 10, "only instances seen alive count");
    assert_eq!(actions.len(), 20, "every ghost expires: {actions:?}");
    assert_consistent(&m);
}

#[test]
fn the_guard_still_protects_live_instances_among_ghosts() {
    let mut m = HealthMonitor::new(GuardConfig::default());
    for i in 0..10 {
        m.track(
            &instance(&format!("live{i}"), ttl(1000), Status::Passing),
            0,
        );
        m.heartbeat(&InstanceKey::new("svc", format!("live{i}")), 0)
            .unwrap();
    }
    for i in 0..20 {
        m.track(
            &instance(&format!("ghost{i}"), ttl(1000), Status::Passing),
            0,
        );
    }
    // Every live instance falls silent at once (the agent lost its network).
    let actions = m.tick(1500);
    assert!(m.guard().engaged, "{:?}", m.guard());
    assert_eq!(
        actions.len(),
        20,
        "ghosts expire; live ones are held: {actions:?}"
    );
    assert!(actions
        .iter()
        .all(|a| matches!(a, Action::SetStatus { key, .. } if key.id.starts_with("ghost"))));
    assert_consistent(&m);
}
