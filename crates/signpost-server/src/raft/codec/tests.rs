use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, EntryPayload, Membership};
use proptest::prelude::*;
use signpost_core::acl::{AclCommand, PolicyInput, PolicyRef, TokenInput};
use signpost_core::model::{
    Dur, Endpoint, Lifecycle, NewInstance, Parameter, ServiceDefinition, Timestamp,
};
use signpost_core::{CheckSpec, Command, InstanceKey, Registry, Request, Status};

use super::*;
use crate::raft::{Entry, Node};

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(7, 3), index)
}

fn normal(index: u64, commands: Vec<Command>) -> Entry {
    let encoded = commands
        .into_iter()
        .map(|c| EncodedCommand::new(c).expect("encodes"))
        .collect();
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(LogRequest::from_encoded(1_700_000_000_123, encoded)),
    }
}

fn membership() -> Membership<u64, Node> {
    let nodes = BTreeMap::from([
        (1, Node::new("127.0.0.1:1", "127.0.0.1:2")),
        (2, Node::new("127.0.0.1:3", "127.0.0.1:4")),
    ]);
    Membership::new(vec![BTreeSet::from([1, 2])], nodes)
}

fn full_check() -> CheckSpec {
    CheckSpec {
        id: Some("c1".into()),
        name: Some("the check".into()),
        http: Some("http://10.0.0.1:8080/health".into()),
        interval: Some(Dur(5_000)),
        timeout: Some(Dur(1_500)),
        deregister_after: Some(Dur(3_600_000)),
        success_before_passing: 3,
        failures_before_critical: 2,
        tls_skip_verify: true,
        grpc_use_tls: true,
        ..CheckSpec::default()
    }
}

fn instance(id: &str, check: Option<CheckSpec>, status: Option<Status>) -> NewInstance {
    NewInstance {
        id: id.into(),
        service: "web".into(),
        address: "10.0.0.1".into(),
        port: 8080,
        tags: vec!["a".into(), "b".into()],
        metadata: BTreeMap::from([("zone".into(), "eu".into())]).into(),
        weight: 100,
        check,
        status,
        state: Lifecycle::Starting,
    }
}

/// One command of every variant, with optional fields both set and left out (the shapes that
/// `skip_serializing_if`, `default` and `untagged` give different encodings).
fn every_command() -> Vec<Command> {
    let key = InstanceKey::new("web", "i1");
    let definition = ServiceDefinition {
        name: "web".into(),
        version: "1.2.3".into(),
        description: "the web".into(),
        endpoints: vec![Endpoint {
            path: "/users".into(),
            method: "GET".into(),
            description: "list".into(),
            parameters: vec![serde_json::from_value::<Parameter>(
                serde_json::json!({"name": "limit", "type": "int"}),
            )
            .expect("a parameter")],
        }],
        dependencies: vec!["db".into()],
        config: serde_json::json!({"a": 1, "b": [true, null, 2.5, "x"], "c": {"d": -3}})
            .as_object()
            .cloned()
            .expect("an object"),
        create_index: 4,
        modify_index: 9,
    };
    vec![
        Command::Register(instance("i1", None, None)),
        Command::Register(instance(
            "i2",
            Some(CheckSpec {
                ttl: Some(Dur(30_000)),
                ..CheckSpec::default()
            }),
            Some(Status::Warning),
        )),
        Command::Register(instance("i3", Some(full_check()), Some(Status::Critical))),
        Command::Deregister(key.clone()),
        Command::SetStatus {
            key: key.clone(),
            status: Status::Passing,
        },
        Command::PutDefinition(definition),
        Command::PutDefinition(ServiceDefinition {
            name: "bare".into(),
            version: String::new(),
            description: String::new(),
            endpoints: vec![],
            dependencies: vec![],
            config: serde_json::Map::new(),
            create_index: 0,
            modify_index: 0,
        }),
        Command::DeleteDefinition {
            service: "web".into(),
        },
        Command::KvSet {
            key: "a/b".into(),
            value: vec![0, 1, 2, 255, b'{'],
            flags: u64::MAX,
            cas: Some(0),
        },
        Command::KvSet {
            key: "empty".into(),
            value: vec![],
            flags: 0,
            cas: None,
        },
        Command::KvDelete {
            key: "a/".into(),
            recurse: true,
            cas: Some(12),
        },
        Command::KvDelete {
            key: "a".into(),
            recurse: false,
            cas: None,
        },
        Command::Batch(vec![]),
        Command::Batch(vec![Command::Batch(vec![Command::Deregister(key.clone())])]),
        Command::Acl(AclCommand::Bootstrap {
            accessor_id: "acc".into(),
            secret_hash: "hash".into(),
            initial: true,
        }),
        Command::Acl(AclCommand::SetPolicy(PolicyInput {
            id: "p1".into(),
            name: "readers".into(),
            description: String::new(),
            rules: "service_prefix \"\" { policy = \"read\" }".into(),
        })),
        Command::Acl(AclCommand::DeletePolicy { id: "p1".into() }),
        Command::Acl(AclCommand::SetToken(TokenInput {
            accessor_id: "t1".into(),
            secret_hash: Some("h".into()),
            description: "ci".into(),
            policies: vec![
                PolicyRef::Id("p1".into()),
                PolicyRef::Name("readers".into()),
            ],
            expiration_time: Some(Timestamp(1_800_000_000_000)),
        })),
        Command::Acl(AclCommand::SetToken(TokenInput {
            accessor_id: "t2".into(),
            secret_hash: None,
            description: String::new(),
            policies: vec![],
            expiration_time: None,
        })),
        Command::Acl(AclCommand::DeleteToken {
            accessor_id: "t1".into(),
        }),
        Command::Acl(AclCommand::Reap),
        Command::SetMaintenance {
            key: key.clone(),
            enable: true,
            reason: Some("deploy".into()),
        },
        Command::SetMaintenance {
            key: key.clone(),
            enable: false,
            reason: None,
        },
        Command::SetLifecycle {
            key: key.clone(),
            state: Lifecycle::Stopping,
        },
        Command::SetLifecycle {
            key,
            state: Lifecycle::Up,
        },
    ]
}

#[test]
fn every_command_variant_round_trips_in_the_binary_log_format() {
    let commands = every_command();
    for (i, command) in commands.iter().enumerate() {
        let entry = normal(i as u64 + 1, vec![command.clone()]);
        let bytes = encode_entry(&entry).expect("encodes");
        assert_eq!(bytes[0], FORMAT_V1);
        let back = decode_entry(&bytes).unwrap_or_else(|e| panic!("{command:?}: {e}"));
        assert_eq!(back, entry, "{command:?}");
        assert_eq!(back.log_id, log_id(i as u64 + 1));
    }
    // All of them as one batch, joined from their separate encodings.
    let entry = normal(99, commands.clone());
    let back = decode_entry(&encode_entry(&entry).expect("encodes")).expect("decodes");
    let EntryPayload::Normal(r) = back.payload else {
        panic!("not a normal entry")
    };
    assert_eq!(r.request.command, Command::Batch(commands));
    assert_eq!(r.request.now_ms, 1_700_000_000_123);
}

#[test]
fn a_joined_batch_is_exactly_what_serde_decodes_as_the_request() {
    let commands = every_command();
    let joined = LogRequest::from_encoded(
        42,
        commands
            .iter()
            .cloned()
            .map(|c| EncodedCommand::new(c).expect("encodes"))
            .collect(),
    );
    let expected = Request::new(42, Command::Batch(commands));
    assert_eq!(*joined.request, expected);
    let decoded: Request = rmp_serde::from_slice(joined.encoded()).expect("valid MessagePack");
    assert_eq!(decoded, expected);
    // And the same bytes as encoding the request whole would give, apart from integer widths.
    let whole = LogRequest::new(expected.clone()).expect("encodes");
    let again: Request = rmp_serde::from_slice(whole.encoded()).expect("decodes");
    assert_eq!(again, expected);
}

#[test]
fn blank_and_membership_entries_round_trip() {
    for payload in [EntryPayload::Blank, EntryPayload::Membership(membership())] {
        let entry = Entry {
            log_id: log_id(5),
            payload,
        };
        let bytes = encode_entry(&entry).expect("encodes");
        assert_eq!(decode_entry(&bytes).expect("decodes"), entry);
    }
}

#[test]
fn entries_written_as_json_by_older_builds_still_decode() {
    // What builds before format 1 wrote: `serde_json::to_vec(&entry)` of the same entry type.
    let mut entries = vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Membership(membership()),
        },
    ];
    for (i, command) in every_command().into_iter().enumerate() {
        entries.push(normal(i as u64 + 3, vec![command]));
    }
    for entry in entries {
        let json = serde_json::to_vec(&entry).expect("encodes");
        assert_eq!(json[0], FORMAT_JSON);
        let back = decode_entry(&json).expect("decodes");
        assert_eq!(back, entry);
        // Written again, it is in the new format, with its request encoded on the way in.
        let bytes = encode_entry(&back).expect("encodes");
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode_entry(&bytes).expect("decodes"), entry);
    }
    let old = br#"{"log_id":{"leader_id":{"term":2,"node_id":1},"index":3},"payload":{"Normal":{"now_ms":5,"command":{"DeleteDefinition":{"service":"web"}}}}}"#;
    let entry = decode_entry(old).expect("decodes a literal JSON entry");
    assert_eq!(entry.log_id, LogId::new(CommittedLeaderId::new(2, 1), 3));
    let EntryPayload::Normal(r) = entry.payload else {
        panic!("not a normal entry")
    };
    assert_eq!(
        *r.request,
        Request::new(
            5,
            Command::DeleteDefinition {
                service: "web".into()
            }
        )
    );
}

#[test]
fn damaged_or_unknown_records_are_errors_not_panics() {
    let good = encode_entry(&normal(1, vec![Command::Acl(AclCommand::Reap)])).expect("encodes");
    for bad in [
        &[][..],
        &[0x02, 1, 2, 3][..],
        &good[..10],
        &good[..good.len() - 1],
        &[FORMAT_V1, 9][..],
        b"{not json",
    ] {
        assert!(decode_entry(bad).is_err(), "{bad:?}");
    }
    let mut kind = good.clone();
    kind[1] = 9;
    assert!(matches!(decode_entry(&kind), Err(CodecError::Format(_))));
    assert!(decode_snapshot::<crate::store::SmState>(&[0x07]).is_err());
    assert!(decode_snapshot::<crate::store::SmState>(&[]).is_err());
}

/// A registry with something in every part of it: instances of every shape, health, KV,
/// definitions, ACLs.
fn busy_registry() -> Registry {
    let mut registry = Registry::default();
    let mut now = 1_700_000_000_000;
    for (i, command) in every_command().into_iter().enumerate() {
        now += 1000;
        registry.apply(i as u64 + 1, &Request::new(now, command));
    }
    for i in 0..50u64 {
        let new = instance(&format!("n{i}"), Some(full_check()), None);
        registry.apply(100 + i, &Request::new(now + i, Command::Register(new)));
    }
    registry
}

#[test]
fn snapshots_round_trip_in_binary_and_old_json_snapshots_still_decode() {
    let state = crate::store::SmState {
        registry: busy_registry(),
        last_applied: Some(log_id(149)),
        membership: crate::raft::StoredMembership::new(Some(log_id(2)), membership()),
    };
    let want = serde_json::to_value(&state).expect("encodes");
    let binary = encode_snapshot(&state, 0).expect("encodes");
    assert_eq!(binary[0], FORMAT_V1);
    let back: crate::store::SmState = decode_snapshot(&binary).expect("decodes");
    assert_eq!(serde_json::to_value(&back).expect("encodes"), want);
    let json = serde_json::to_vec(&state).expect("encodes");
    let back: crate::store::SmState = decode_snapshot(&json).expect("decodes the old format");
    assert_eq!(serde_json::to_value(&back).expect("encodes"), want);
    assert!(
        binary.len() < json.len(),
        "binary {} bytes, JSON {}",
        binary.len(),
        json.len()
    );
}

fn dur() -> impl Strategy<Value = Option<Dur>> {
    prop_oneof![
        2 => Just(None),
        1 => (0u64..200_000).prop_map(|ms| Some(Dur(ms))),
        1 => any::<u64>().prop_map(|ms| Some(Dur(ms))),
    ]
}

fn check() -> impl Strategy<Value = Option<CheckSpec>> {
    prop::option::of(
        (
            0u8..5,
            "[ -~]{0,40}",
            (dur(), dur(), dur(), dur()),
            (any::<u32>(), any::<u32>(), any::<bool>(), any::<bool>()),
            (prop::option::of(".{0,8}"), prop::option::of(".{0,8}")),
        )
            .prop_map(
                |(kind, target, (ttl, interval, timeout, after), (s, f, skip, tls), (id, name))| {
                    let mut c = CheckSpec {
                        id,
                        name,
                        interval,
                        timeout,
                        deregister_after: after,
                        success_before_passing: s,
                        failures_before_critical: f,
                        tls_skip_verify: skip,
                        grpc_use_tls: tls,
                        ..CheckSpec::default()
                    };
                    match kind {
                        0 => c.ttl = ttl,
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

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(vec![Status::Passing, Status::Warning, Status::Critical])
}

fn single() -> impl Strategy<Value = Command> {
    let key = (".{0,12}", ".{0,12}").prop_map(|(s, i)| InstanceKey::new(s, i));
    prop_oneof![
        4 => (
            (".{0,12}", ".{0,12}", ".{0,20}", any::<u16>(), any::<u32>()),
            prop::collection::vec(".{0,5}", 0..3),
            prop::collection::btree_map(".{0,3}", ".{0,6}", 0..3),
            check(),
            prop::option::of(status()),
            prop::sample::select(vec![Lifecycle::Starting, Lifecycle::Up, Lifecycle::Stopping]),
        )
            .prop_map(|((service, id, address, port, weight), tags, metadata, check, status, state)| {
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
                    state,
                })
            }),
        1 => key.clone().prop_map(Command::Deregister),
        1 => (key.clone(), status()).prop_map(|(key, status)| Command::SetStatus { key, status }),
        2 => (".{0,20}", prop::collection::vec(any::<u8>(), 0..40), any::<u64>(), prop::option::of(any::<u64>()))
            .prop_map(|(key, value, flags, cas)| Command::KvSet { key, value, flags, cas }),
        1 => (".{0,20}", any::<bool>(), prop::option::of(any::<u64>()))
            .prop_map(|(key, recurse, cas)| Command::KvDelete { key, recurse, cas }),
        1 => (key.clone(), any::<bool>(), prop::option::of(".{0,20}"))
            .prop_map(|(key, enable, reason)| Command::SetMaintenance { key, enable, reason }),
        1 => (".{0,8}", prop::option::of(any::<u64>()))
            .prop_map(|(accessor_id, exp)| Command::Acl(AclCommand::SetToken(TokenInput {
                accessor_id,
                secret_hash: None,
                description: String::new(),
                policies: vec![],
                expiration_time: exp.map(|ms| Timestamp(ms % 253_402_300_799_999)),
            }))),
    ]
}

proptest! {
    /// Whatever commands a batch holds, the binary log gives back what the JSON log gives back
    /// (the reference: both go through the same serde impls).
    #[test]
    fn arbitrary_batches_round_trip_like_json(
        commands in prop::collection::vec(single(), 1..6),
        now_ms in any::<u64>(),
        index in 1u64..u64::MAX,
    ) {
        let encoded = commands
            .iter()
            .cloned()
            .map(|c| EncodedCommand::new(c).expect("encodes"))
            .collect();
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(index / 2, 1), index),
            payload: EntryPayload::Normal(LogRequest::from_encoded(now_ms, encoded)),
        };
        let via_json: Entry = serde_json::from_slice(&serde_json::to_vec(&entry).expect("json"))
            .expect("json decodes");
        let via_binary = decode_entry(&encode_entry(&entry).expect("encodes")).expect("decodes");
        prop_assert_eq!(via_binary, via_json);
    }
}
