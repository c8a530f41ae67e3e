use super::*;
use crate::model::{CheckSpec, Dur, Lifecycle};

fn svc(e: &Event) -> &ServiceEvent {
    e.as_service().expect("a service event")
}

fn new_instance(service: &str, id: &str) -> NewInstance {
    NewInstance {
        id: id.to_string(),
        service: service.to_string(),
        address: "10.0.0.1".to_string(),
        port: 8080,
        tags: vec!["v1".to_string()],
        metadata: Default::default(),
        weight: 100,
        check: None,
        status: None,
        state: Lifecycle::Up,
    }
}

fn req(now_ms: u64, command: Command) -> Request {
    Request::new(now_ms, command)
}

#[test]
fn register_creates_then_replaces_keeping_creation_fields() {
    let mut r = Registry::new();
    let (resp, events) = r.apply(
        5,
        &req(1000, Command::Register(new_instance("users", "u1"))),
    );
    let Response::Registered { instance, created } = resp else {
        panic!("unexpected {resp:?}")
    };
    assert!(created);
    assert_eq!(instance.create_index, 5);
    assert_eq!(instance.modify_index, 5);
    assert_eq!(instance.status, Status::Passing);
    assert!(matches!(svc(&events[0]).kind, EventKind::Added(_)));

    let mut changed = new_instance("users", "u1");
    changed.port = 9090;
    let (resp, events) = r.apply(7, &req(2000, Command::Register(changed)));
    let Response::Registered { instance, created } = resp else {
        panic!("unexpected {resp:?}")
    };
    assert!(!created);
    assert_eq!(instance.port, 9090);
    assert_eq!(
        instance.create_index, 5,
        "create index survives replacement"
    );
    assert_eq!(instance.created_at, Timestamp(1000));
    assert_eq!(instance.updated_at, Timestamp(2000));
    assert_eq!(instance.modify_index, 7);
    assert!(matches!(svc(&events[0]).kind, EventKind::Replaced(_)));
    assert_eq!(r.instances("users").count(), 1);
}

#[test]
fn deregister_removes_and_unknown_is_not_found_without_index_change() {
    let mut r = Registry::new();
    r.apply(3, &req(0, Command::Register(new_instance("users", "u1"))));
    let (resp, events) = r.apply(
        4,
        &req(0, Command::Deregister(InstanceKey::new("users", "nope"))),
    );
    assert_eq!(resp, Response::NotFound);
    assert!(events.is_empty());
    assert_eq!(
        r.service_index("users"),
        3,
        "a no-op must not move the index"
    );

    let (resp, events) = r.apply(
        5,
        &req(0, Command::Deregister(InstanceKey::new("users", "u1"))),
    );
    assert!(matches!(resp, Response::Deregistered(ref i) if i.id == "u1"));
    assert!(matches!(svc(&events[0]).kind, EventKind::Removed(_)));
    assert_eq!(r.instances("users").count(), 0);
    assert_eq!(r.service_index("users"), 5, "removal moves the index");
    assert!(r.services().is_empty(), "an empty service is not listed");
}

#[test]
fn each_service_keeps_its_own_index() {
    let mut r = Registry::new();
    r.apply(2, &req(0, Command::Register(new_instance("users", "u1"))));
    r.apply(3, &req(0, Command::Register(new_instance("orders", "o1"))));
    r.apply(4, &req(0, Command::Register(new_instance("orders", "o2"))));
    assert_eq!(r.service_index("users"), 2);
    assert_eq!(r.service_index("orders"), 4);
    assert_eq!(r.service_index("unknown"), 0);
    assert_eq!(r.last_index(), 4);
}

#[test]
fn status_transitions_are_recorded_once() {
    let mut r = Registry::new();
    r.apply(2, &req(0, Command::Register(new_instance("users", "u1"))));
    let key = InstanceKey::new("users", "u1");
    let (resp, events) = r.apply(
        3,
        &req(
            50,
            Command::SetStatus {
                key: key.clone(),
                status: Status::Critical,
            },
        ),
    );
    assert!(matches!(resp, Response::StatusSet(ref i) if i.status == Status::Critical));
    assert!(matches!(svc(&events[0]).kind, EventKind::StatusChanged(_)));
    assert_eq!(r.instance("users", "u1").unwrap().modify_index, 3);

    let (resp, events) = r.apply(
        4,
        &req(
            60,
            Command::SetStatus {
                key: key.clone(),
                status: Status::Critical,
            },
        ),
    );
    assert_eq!(resp, Response::Unchanged);
    assert!(events.is_empty());
    assert_eq!(r.service_index("users"), 3);

    let (resp, _) = r.apply(
        5,
        &req(
            60,
            Command::SetStatus {
                key: InstanceKey::new("users", "x"),
                status: Status::Passing,
            },
        ),
    );
    assert_eq!(resp, Response::NotFound);
    let counts = r.status_counts();
    assert_eq!((counts.passing, counts.critical), (0, 1));
}

#[test]
fn initial_status_follows_the_check_and_survives_same_check_reregistration() {
    let mut r = Registry::new();
    let mut active = new_instance("web", "w1");
    active.check = Some(CheckSpec {
        tcp: Some("10.0.0.1:80".into()),
        ..CheckSpec::default()
    });
    r.apply(2, &req(0, Command::Register(active.clone())));
    assert_eq!(r.instance("web", "w1").unwrap().status, Status::Critical);
    r.apply(
        3,
        &req(
            0,
            Command::SetStatus {
                key: InstanceKey::new("web", "w1"),
                status: Status::Passing,
            },
        ),
    );
    r.apply(4, &req(0, Command::Register(active.clone())));
    assert_eq!(r.instance("web", "w1").unwrap().status, Status::Passing);

    let mut ttl = new_instance("web", "w2");
    ttl.check = Some(CheckSpec {
        ttl: Some(Dur::from_secs(10)),
        ..CheckSpec::default()
    });
    r.apply(5, &req(0, Command::Register(ttl)));
    assert_eq!(r.instance("web", "w2").unwrap().status, Status::Passing);

    let mut explicit = new_instance("web", "w3");
    explicit.status = Some(Status::Warning);
    r.apply(6, &req(0, Command::Register(explicit)));
    assert_eq!(r.instance("web", "w3").unwrap().status, Status::Warning);
}

#[test]
fn definitions_are_stored_beside_instances() {
    let mut r = Registry::new();
    let def = ServiceDefinition {
        name: "users".into(),
        version: "1.2.0".into(),
        description: "user accounts".into(),
        endpoints: vec![],
        dependencies: vec!["db".into()],
        config: serde_json::Map::new(),
        create_index: 0,
        modify_index: 0,
    };
    let (resp, events) = r.apply(2, &req(0, Command::PutDefinition(def.clone())));
    assert!(matches!(
        resp,
        Response::DefinitionPut { created: true, .. }
    ));
    assert_eq!(svc(&events[0]).kind, EventKind::DefinitionChanged);
    assert_eq!(r.definition("users").unwrap().version, "1.2.0");
    assert_eq!(r.services()[0].name, "users");
    assert!(r.services()[0].has_definition);

    let (resp, _) = r.apply(
        3,
        &req(
            0,
            Command::PutDefinition(ServiceDefinition {
                version: "1.3.0".into(),
                ..def
            }),
        ),
    );
    let Response::DefinitionPut {
        definition,
        created,
    } = resp
    else {
        panic!()
    };
    assert!(!created);
    assert_eq!((definition.create_index, definition.modify_index), (2, 3));

    assert_eq!(
        r.apply(
            4,
            &req(
                0,
                Command::DeleteDefinition {
                    service: "users".into()
                }
            )
        )
        .0,
        Response::DefinitionDeleted
    );
    assert_eq!(
        r.apply(
            5,
            &req(
                0,
                Command::DeleteDefinition {
                    service: "users".into()
                }
            )
        )
        .0,
        Response::NotFound
    );
    assert!(r.definition("users").is_none());
}

#[test]
fn state_round_trips_through_a_snapshot() {
    let mut r = Registry::new();
    for i in 0..10 {
        r.apply(
            i + 2,
            &req(i, Command::Register(new_instance("svc", &format!("i{i}")))),
        );
    }
    let bytes = serde_json::to_vec(&r).unwrap();
    let back: Registry = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, r);
}

#[test]
fn kv_writes_emit_events_and_failed_cas_changes_nothing() {
    let mut r = Registry::new();
    let set = |key: &str, cas| Command::KvSet {
        key: key.into(),
        value: b"v".to_vec(),
        flags: 0,
        cas,
    };
    let (resp, events) = r.apply(2, &req(0, set("cfg/a", None)));
    assert_eq!(resp, Response::Kv(true));
    assert_eq!(
        events,
        vec![Event::Kv {
            key: "cfg/a".into(),
            index: 2
        }]
    );
    let (resp, events) = r.apply(3, &req(0, set("cfg/a", Some(0))));
    assert_eq!(resp, Response::Kv(false));
    assert!(events.is_empty());
    assert_eq!(r.kv().get("cfg/a").unwrap().modify_index, 2);
    r.apply(4, &req(0, set("cfg/b", None)));
    let (resp, events) = r.apply(
        5,
        &req(
            0,
            Command::KvDelete {
                key: "cfg/".into(),
                recurse: true,
                cas: None,
            },
        ),
    );
    assert_eq!(resp, Response::Kv(true));
    assert_eq!(events.len(), 2);
    assert!(r.kv().is_empty());
    assert_eq!(r.last_index(), 5);
}

#[test]
fn a_batch_applies_in_order_at_one_index() {
    let mut r = Registry::new();
    let batch = Command::Batch(vec![
        Command::Register(new_instance("users", "u1")),
        Command::Register(new_instance("orders", "o1")),
        Command::Deregister(InstanceKey::new("users", "u1")),
        Command::Deregister(InstanceKey::new("users", "nope")),
    ]);
    let (resp, events) = r.apply(7, &req(0, batch));
    let Response::Batch(responses) = resp else {
        panic!("{resp:?}")
    };
    assert!(matches!(
        responses[0],
        Response::Registered { created: true, .. }
    ));
    assert!(matches!(responses[2], Response::Deregistered(_)));
    assert_eq!(responses[3], Response::NotFound);
    assert_eq!(events.len(), 3);
    assert_eq!(r.instances("users").count(), 0);
    assert_eq!(r.instance("orders", "o1").unwrap().create_index, 7);
    assert_eq!(
        (r.service_index("users"), r.service_index("orders")),
        (7, 7)
    );
}

fn key(service: &str, id: &str) -> InstanceKey {
    InstanceKey::new(service, id)
}

fn maintenance(id: &str, enable: bool, reason: Option<&str>) -> Command {
    Command::SetMaintenance {
        key: key("users", id),
        enable,
        reason: reason.map(str::to_string),
    }
}

fn refused_field(resp: &Response) -> String {
    match resp {
        Response::Refused(crate::limits::Refusal::Invalid { field, .. }) => field.clone(),
        Response::Refused(crate::limits::Refusal::Limit { limit, .. }) => limit.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn maintenance_marks_and_clears_an_instance_moving_the_index_and_announcing_it() {
    let mut r = Registry::new();
    r.apply(3, &req(100, Command::Register(new_instance("users", "u1"))));
    assert!(r.instance("users", "u1").unwrap().discoverable());

    let (resp, events) = r.apply(4, &req(200, maintenance("u1", true, Some("disk swap"))));
    let Response::InstanceUpdated(i) = resp else {
        panic!("unexpected {resp:?}")
    };
    let mark = i.maintenance.clone().expect("in maintenance");
    assert_eq!(mark.reason, "disk swap");
    assert_eq!(mark.since, Timestamp(200));
    assert_eq!(i.modify_index, 4);
    assert_eq!(i.status, Status::Passing, "health is untouched");
    assert!(!i.serving() && !i.discoverable());
    assert_eq!(r.service_index("users"), 4);
    assert_eq!(svc(&events[0]).index, 4);
    assert!(
        matches!(&svc(&events[0]).kind, EventKind::StatusChanged(e) if e.maintenance.is_some())
    );

    // Enabling again with a new reason keeps when it began.
    let (resp, _) = r.apply(5, &req(300, maintenance("u1", true, Some("still"))));
    let Response::InstanceUpdated(i) = resp else {
        panic!("unexpected {resp:?}")
    };
    assert_eq!(i.maintenance.as_ref().unwrap().since, Timestamp(200));
    assert_eq!(i.maintenance.as_ref().unwrap().reason, "still");
    // The same mark again changes nothing.
    let (resp, events) = r.apply(6, &req(400, maintenance("u1", true, Some("still"))));
    assert_eq!(resp, Response::Unchanged);
    assert!(events.is_empty());
    assert_eq!(r.service_index("users"), 5);

    let (resp, events) = r.apply(7, &req(500, maintenance("u1", false, None)));
    assert!(matches!(resp, Response::InstanceUpdated(ref i) if i.maintenance.is_none()));
    assert_eq!(events.len(), 1);
    assert!(r.instance("users", "u1").unwrap().discoverable());
    let (resp, _) = r.apply(8, &req(600, maintenance("u1", false, None)));
    assert_eq!(resp, Response::Unchanged);

    let (resp, events) = r.apply(9, &req(700, maintenance("nope", true, None)));
    assert_eq!(resp, Response::NotFound);
    assert!(events.is_empty());
    assert_eq!(r.service_index("users"), 7);
}

#[test]
fn maintenance_survives_re_registration_and_lifecycle_comes_from_it() {
    let mut r = Registry::new();
    let mut starting = new_instance("users", "u1");
    starting.state = Lifecycle::Starting;
    r.apply(3, &req(100, Command::Register(starting)));
    let i = r.instance("users", "u1").unwrap();
    assert_eq!(i.state, Lifecycle::Starting);
    assert!(!i.discoverable());
    r.apply(4, &req(200, maintenance("u1", true, None)));
    r.apply(5, &req(300, Command::Register(new_instance("users", "u1"))));
    let i = r.instance("users", "u1").unwrap();
    assert_eq!(i.state, Lifecycle::Up);
    assert!(
        i.maintenance.is_some(),
        "an operator's mark outlives re-registration"
    );
}

#[test]
fn lifecycle_transitions_move_the_index_and_unknown_instances_are_not_found() {
    let mut r = Registry::new();
    r.apply(3, &req(100, Command::Register(new_instance("users", "u1"))));
    let set = |state| Command::SetLifecycle {
        key: key("users", "u1"),
        state,
    };
    let (resp, events) = r.apply(4, &req(200, set(Lifecycle::Stopping)));
    let Response::InstanceUpdated(i) = resp else {
        panic!("unexpected {resp:?}")
    };
    assert_eq!(i.state, Lifecycle::Stopping);
    assert_eq!(i.updated_at, Timestamp(200));
    assert!(!i.discoverable());
    assert!(
        matches!(&svc(&events[0]).kind, EventKind::StatusChanged(e) if e.state == Lifecycle::Stopping)
    );
    assert_eq!(r.service_index("users"), 4);

    let (resp, events) = r.apply(5, &req(300, set(Lifecycle::Stopping)));
    assert_eq!(resp, Response::Unchanged);
    assert!(events.is_empty());
    r.apply(6, &req(400, set(Lifecycle::Up)));
    assert!(r.instance("users", "u1").unwrap().discoverable());

    let (resp, _) = r.apply(
        7,
        &req(
            500,
            Command::SetLifecycle {
                key: key("users", "gone"),
                state: Lifecycle::Up,
            },
        ),
    );
    assert_eq!(resp, Response::NotFound);
    assert_eq!(r.service_index("users"), 6);
}

#[test]
fn new_commands_round_trip_through_the_log_encoding() {
    for c in [
        maintenance("u1", true, Some("r")),
        Command::SetLifecycle {
            key: key("users", "u1"),
            state: Lifecycle::Starting,
        },
    ] {
        let text = serde_json::to_string(&req(1, c.clone())).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap().command, c);
    }
}

#[test]
fn apply_refuses_what_the_faces_would_refuse_and_changes_nothing() {
    let mut r = Registry::new();
    let before = r.clone();
    let mut zero_interval = new_instance("users", "u1");
    zero_interval.check = Some(CheckSpec {
        tcp: Some("10.0.0.1:80".into()),
        interval: Some(Dur(0)),
        ..CheckSpec::default()
    });
    let mut long_url = new_instance("users", "u2");
    long_url.check = Some(CheckSpec {
        http: Some(format!("http://h/{}", "a".repeat(3000))),
        ..CheckSpec::default()
    });
    let mut upper = new_instance("Users", "u3");
    upper.port = 80;
    let mut bad_address = new_instance("users", "u4");
    bad_address.address = "not an address".into();
    for (command, field) in [
        (Command::Register(zero_interval), "check.interval"),
        (Command::Register(long_url), "check.http"),
        (Command::Register(upper), "service"),
        (Command::Register(bad_address), "address"),
        (
            Command::KvSet {
                key: "/abs".into(),
                value: vec![],
                flags: 0,
                cas: None,
            },
            "key",
        ),
        (Command::Batch(vec![Command::Batch(vec![])]), "batch"),
    ] {
        let (resp, events) = r.apply(2, &req(1000, command));
        assert_eq!(refused_field(&resp), field);
        assert!(events.is_empty());
    }
    assert_eq!(r, before, "nothing changed");
}

#[test]
fn apply_refuses_times_past_the_year_9999() {
    let mut r = Registry::new();
    let (resp, _) = r.apply(
        2,
        &req(
            crate::model::MAX_TIMESTAMP_MS + 1,
            Command::Register(new_instance("users", "u1")),
        ),
    );
    assert_eq!(refused_field(&resp), "now_ms");
    assert_eq!(r.instances("users").count(), 0);
    // A stored timestamp at the bound still serialises.
    r.apply(
        3,
        &req(
            crate::model::MAX_TIMESTAMP_MS,
            Command::Register(new_instance("users", "u1")),
        ),
    );
    serde_json::to_vec(&r).expect("stored state always serialises");
}

#[test]
fn counting_limits_refuse_with_the_limit_named() {
    let limits = crate::limits::Limits {
        max_services: 2,
        max_instances: 3,
        max_instances_per_service: 2,
        max_kv_keys: 2,
        max_kv_bytes: 10,
        kv_tombstone_ttl_ms: 1000,
    };
    let mut r = Registry::with_limits(limits);
    let reg = |r: &mut Registry, i: u64, s: &str, id: &str| {
        r.apply(i, &req(1000, Command::Register(new_instance(s, id))))
            .0
    };
    assert!(matches!(
        reg(&mut r, 2, "a", "1"),
        Response::Registered { .. }
    ));
    assert!(matches!(
        reg(&mut r, 3, "a", "2"),
        Response::Registered { .. }
    ));
    assert_eq!(
        refused_field(&reg(&mut r, 4, "a", "3")),
        "limits.max_instances_per_service"
    );
    assert!(
        matches!(reg(&mut r, 4, "a", "2"), Response::Registered { .. }),
        "re-registering is not growth"
    );
    assert!(matches!(
        reg(&mut r, 5, "b", "1"),
        Response::Registered { .. }
    ));
    assert_eq!(
        refused_field(&reg(&mut r, 6, "c", "1")),
        "limits.max_services"
    );
    assert_eq!(
        refused_field(&reg(&mut r, 6, "b", "2")),
        "limits.max_instances"
    );
    r.validate_state().unwrap();
    let kv = |key: &str, value: &[u8]| Command::KvSet {
        key: key.into(),
        value: value.to_vec(),
        flags: 0,
        cas: None,
    };
    assert_eq!(r.apply(7, &req(1000, kv("k1", b"v"))).0, Response::Kv(true));
    assert_eq!(
        refused_field(&r.apply(8, &req(1000, kv("k2", b"123456789"))).0),
        "limits.max_kv_bytes"
    );
    assert_eq!(r.apply(8, &req(1000, kv("k2", b"v"))).0, Response::Kv(true));
    assert_eq!(
        refused_field(&r.apply(9, &req(1000, kv("k3", b""))).0),
        "limits.max_kv_keys"
    );
    r.validate_state().unwrap();
}

#[test]
fn a_service_with_nothing_left_is_forgotten_without_its_index_going_back() {
    let mut r = Registry::new();
    r.apply(2, &req(1000, Command::Register(new_instance("gone", "g1"))));
    r.apply(3, &req(1000, Command::Register(new_instance("kept", "k1"))));
    r.apply(
        4,
        &req(1000, Command::Deregister(InstanceKey::new("gone", "g1"))),
    );
    assert!(!r.services.contains_key("gone"), "the entry is removed");
    assert_eq!(r.service_index("gone"), 4, "its index does not go back");
    assert_eq!(r.catalog_index(), 4);
    r.validate_state().unwrap();
}

#[test]
fn kv_tombstones_are_reaped_after_their_ttl_by_applied_time() {
    let mut r = Registry::with_limits(crate::limits::Limits {
        kv_tombstone_ttl_ms: 60_000,
        ..Default::default()
    });
    let set = Command::KvSet {
        key: "a/k".into(),
        value: b"v".to_vec(),
        flags: 0,
        cas: None,
    };
    r.apply(2, &req(1_000, set));
    let del = Command::KvDelete {
        key: "a/k".into(),
        recurse: false,
        cas: None,
    };
    r.apply(3, &req(2_000, del));
    assert_eq!(r.kv().tombstones(), 1);
    let noop = || Command::DeleteDefinition {
        service: "x".into(),
    };
    r.apply(4, &req(61_000, noop()));
    assert_eq!(
        r.kv().tombstones(),
        1,
        "kept within the TTL: blocking queries see the delete"
    );
    r.apply(5, &req(62_000, noop()));
    assert_eq!(r.kv().tombstones(), 0, "reaped after it");
    assert_eq!(
        r.kv().index("a/", true),
        3,
        "the prefix index does not go back"
    );
    r.validate_state().unwrap();
}

#[test]
fn instances_share_metadata_and_checks_and_the_interner_lets_go_when_they_leave() {
    let mut r = Registry::new();
    let ttl = CheckSpec {
        ttl: Some(Dur(10_000)),
        ..CheckSpec::default()
    };
    let with = |service: &str, id: &str, zone: &str, commit: &str| NewInstance {
        metadata: [("zone", zone), ("commit", commit)].into_iter().collect(),
        check: Some(ttl.clone()),
        ..new_instance(service, id)
    };
    r.apply(1, &req(1, Command::Register(with("keep", "k", "a", "c0"))));
    let baseline = r.interned();
    // zone, a, commit, c0 and the check.
    assert_eq!(baseline, 5);
    let mut index = 2;
    for n in 0..200 {
        let new = with("temp", &format!("t{n}"), "a", &format!("c{}", n + 1));
        r.apply(index, &req(index, Command::Register(new)));
        index += 1;
    }
    // Shared: one check and one "zone"/"a"/"commit" for all; a commit each.
    assert_eq!(r.interned(), baseline + 200);
    let a = r.instance("keep", "k").unwrap();
    let b = r.instance("temp", "t7").unwrap();
    assert!(std::sync::Arc::ptr_eq(
        a.check.as_ref().unwrap(),
        b.check.as_ref().unwrap()
    ));
    // Re-registering with new metadata lets go of the old values.
    for n in 0..200 {
        let new = with("temp", &format!("t{n}"), "b", "same");
        r.apply(index, &req(index, Command::Register(new)));
        index += 1;
    }
    assert_eq!(r.interned(), baseline + 2, "\"b\" and \"same\" are new");
    // The service goes away, and its names with it.
    for n in 0..200 {
        let key = InstanceKey::new("temp", format!("t{n}"));
        r.apply(index, &req(index, Command::Deregister(key)));
        index += 1;
    }
    assert_eq!(r.instances("temp").count(), 0);
    assert_eq!(r.interned(), baseline);
    r.validate_state().unwrap();
}
