//! Each type decodes the JSON the agent emits (fixtures copied from the agent's answers), and
//! what the agent's side encodes reads back.

use signpost_api::sse::{self, Parser};
use signpost_api::watch::{self, WatchEvent};
use signpost_api::*;

/// An instance exactly as the agent renders one (`GET .../instances/{id}`).
const INSTANCE: &str = r#"{"id":"d1","service":"db","address":"10.3.0.1","port":5432,
    "tags":["primary"],"metadata":{"zone":"eu"},"weight":100,"status":"passing",
    "check":{"ttl":"30s","deregister_after":"1m","failures_before_critical":3},
    "created_at":"2024-01-01T00:00:00.000Z","updated_at":"2024-01-01T00:00:01.000Z",
    "create_index":14,"modify_index":15,"state":"up"}"#;

fn instance() -> Instance {
    serde_json::from_str(INSTANCE).unwrap()
}

#[test]
fn an_instance_decodes_and_encodes_to_the_same_json() {
    let i = instance();
    assert_eq!(i.id, "d1");
    assert_eq!(i.status, Status::Passing);
    assert_eq!(i.state, Lifecycle::Up);
    assert!(i.serving());
    assert_eq!(i.authority(), "10.3.0.1:5432");
    let check = i.check.as_ref().unwrap();
    assert_eq!(check.ttl.as_deref(), Some("30s"));
    assert_eq!(check.failures_before_critical, Some(3));
    assert_eq!(check.success_before_passing, None);
    let original: serde_json::Value = serde_json::from_str(INSTANCE).unwrap();
    assert_eq!(serde_json::to_value(&i).unwrap(), original);
    // A sparse instance still decodes.
    let sparse: Instance =
        serde_json::from_str(r#"{"id":"b","address":"::1","port":80,"status":"critical"}"#)
            .unwrap();
    assert_eq!(
        (sparse.weight, sparse.authority().as_str()),
        (100, "[::1]:80")
    );
}

#[test]
fn listings_and_summaries_decode() {
    let list: InstanceList =
        serde_json::from_str(&format!(r#"{{"index":15,"instances":[{INSTANCE}]}}"#)).unwrap();
    assert_eq!(list.index, 15);
    assert_eq!(list.instances, vec![instance()]);
    // The agent encodes borrowed instances with the same type.
    let i = instance();
    let borrowed = InstanceList {
        index: 15,
        instances: vec![&i],
    };
    assert_eq!(
        serde_json::from_slice::<InstanceList>(&serde_json::to_vec(&borrowed).unwrap()).unwrap(),
        list
    );

    let services: Vec<ServiceSummary> = serde_json::from_str(
        r#"[{"name":"users","index":12,"instances":{"passing":2,"warning":0,"critical":1},"has_definition":true}]"#,
    )
    .unwrap();
    assert_eq!(
        services[0],
        ServiceSummary {
            name: "users".into(),
            index: 12,
            instances: StatusCounts {
                passing: 2,
                warning: 0,
                critical: 1
            },
            has_definition: true,
        }
    );
}

#[test]
fn heartbeat_answers_decode() {
    let one: Renewed = serde_json::from_str(r#"{"id":"d1","status":"warning","index":9}"#).unwrap();
    assert_eq!(
        (one.id.as_str(), one.status, one.index),
        ("d1", Status::Warning, 9)
    );
    let batch: BatchRenewed = serde_json::from_str(
        r#"{"renewed":2,"not_found":[{"service":"db","id":"gone"}],
            "rejected":[{"service":"db","id":"d2","error":"instance db/d2 has no ttl check to renew"}]}"#,
    )
    .unwrap();
    assert_eq!(batch.renewed, 2);
    assert_eq!(batch.not_found[0].id, "gone");
    assert_eq!(batch.rejected[0].key.id, "d2");
    assert!(batch.rejected[0].error.contains("no ttl check"));
    // The flattened key encodes back beside `error`.
    let v = serde_json::to_value(&batch.rejected[0]).unwrap();
    assert_eq!(v["service"], "db");
    assert_eq!(v["error"], "instance db/d2 has no ttl check to renew");
}

#[test]
fn a_registration_sends_only_what_is_given() {
    let bare = Registration {
        address: "h".into(),
        port: 1,
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&bare).unwrap(),
        serde_json::json!({"address": "h", "port": 1})
    );
    let full = Registration {
        id: Some("u-1".into()),
        tags: vec!["v2".into()],
        weight: Some(3),
        check: Some(Check {
            ttl: Some("10s".into()),
            ..Default::default()
        }),
        ..bare
    };
    assert_eq!(
        serde_json::to_value(&full).unwrap(),
        serde_json::json!({"id": "u-1", "address": "h", "port": 1, "tags": ["v2"], "weight": 3,
                           "check": {"ttl": "10s"}})
    );
}

#[test]
fn errors_kv_and_cluster_bodies_decode() {
    let e: ErrorBody =
        serde_json::from_str(r#"{"error":"port must be between 1 and 65535","field":"port"}"#)
            .unwrap();
    assert_eq!(
        e.to_string(),
        "port must be between 1 and 65535 (field: port)"
    );
    let e: ErrorBody = serde_json::from_str(r#"{"error":"no such endpoint"}"#).unwrap();
    assert_eq!(
        (e.to_string().as_str(), e.field.as_deref()),
        ("no such endpoint", None)
    );
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"error":"no such endpoint"}"#
    );

    let kv: KvEntry = serde_json::from_str(
        r#"{"key":"app/color","value":"Ymx1ZQ==","flags":3,"create_index":5,"modify_index":6,"lock_index":0}"#,
    )
    .unwrap();
    assert_eq!(
        (kv.value.as_str(), kv.flags, kv.modify_index),
        ("Ymx1ZQ==", 3, 6)
    );

    let members: Members = serde_json::from_str(
        r#"{"leader":1,"term":2,"members":[
            {"id":1,"raft_addr":"127.0.0.1:9001","http_addr":"127.0.0.1:8501","role":"leader","voter":true,"matched_index":40,"lag":0},
            {"id":2,"raft_addr":"127.0.0.1:9002","http_addr":"127.0.0.1:8502","role":"learner","voter":false,"matched_index":null,"lag":null}]}"#,
    )
    .unwrap();
    assert_eq!(members.leader, Some(1));
    assert_eq!(members.members[1].matched_index, None);
    let left: Left = serde_json::from_str(r#"{"left":3}"#).unwrap();
    assert_eq!(left.left, 3);
    assert_eq!(
        serde_json::to_value(JoinRequest {
            node_id: 2,
            raft_addr: "r".into(),
            http_addr: "h".into()
        })
        .unwrap(),
        serde_json::json!({"node_id": 2, "raft_addr": "r", "http_addr": "h"})
    );
}

#[test]
fn watch_events_round_trip_through_sse() {
    let i = instance();
    let events = vec![
        WatchEvent::Reset(InstanceList {
            index: 14,
            instances: vec![i.clone()],
        }),
        WatchEvent::Add(InstanceChange {
            index: 15,
            instance: i.clone(),
        }),
        WatchEvent::Update(InstanceChange {
            index: 16,
            instance: i.clone(),
        }),
        WatchEvent::Remove(InstanceChange {
            index: 17,
            instance: i,
        }),
    ];
    let mut stream = Vec::new();
    for e in &events {
        stream.extend_from_slice(&e.to_frame().unwrap());
        stream.extend_from_slice(sse::KEEP_ALIVE);
    }
    let parsed = Parser::new().push(&stream).unwrap();
    assert_eq!(parsed.len(), 4);
    for (p, e) in parsed.iter().zip(&events) {
        assert_eq!(p.id.as_deref(), Some(e.index().to_string().as_str()));
        assert_eq!(
            WatchEvent::<Instance>::from_sse(p).unwrap().as_ref(),
            Some(e)
        );
    }
}

#[test]
fn watch_events_as_the_agent_frames_them_decode() {
    // Bytes as the agent's watch stream sends them.
    let text = format!(
        "event: reset\nid: 12\ndata: {{\"index\":12,\"instances\":[{i}]}}\n\n:\n\n\
         event: remove\nid: 13\ndata: {{\"index\":13,\"instance\":{i}}}\n\n",
        i = INSTANCE.replace('\n', "")
    );
    let parsed = Parser::new().push(text.as_bytes()).unwrap();
    match WatchEvent::<Instance>::from_sse(&parsed[0]).unwrap() {
        Some(WatchEvent::Reset(list)) => assert_eq!(list.instances[0].id, "d1"),
        other => panic!("{other:?}"),
    }
    match WatchEvent::<Instance>::from_sse(&parsed[1]).unwrap() {
        Some(WatchEvent::Remove(c)) => assert_eq!((c.index, c.instance.id.as_str()), (13, "d1")),
        other => panic!("{other:?}"),
    }
    let ping = sse::Event {
        event: "ping".into(),
        data: "{}".into(),
        id: None,
    };
    assert!(WatchEvent::<Instance>::from_sse(&ping).unwrap().is_none());
    let bad = sse::Event {
        event: watch::ADD.into(),
        data: r#"{"index":1}"#.into(),
        id: None,
    };
    let err = WatchEvent::<Instance>::from_sse(&bad).unwrap_err();
    assert!(
        err.to_string().starts_with("malformed `add` watch event"),
        "{err}"
    );
}
