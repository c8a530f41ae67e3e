//! The JSON of instances, commands (log entries), responses, events and the registry snapshot is
//! byte for byte what the build before the compact instance representation wrote: the strings
//! below were captured from that build (faa737f) with this same fixture. Inputs are built from
//! JSON only, so the fixture reads the same on both representations.

use signpost_core::model::NewInstance;
use signpost_core::{Command, Registry, Request};

/// A registration with everything set: metadata given out of order, tags, a check.
const REGISTER: &str = r#"{"id":"u1","service":"users","address":"10.0.0.1","port":8080,
    "tags":["b","a"],"metadata":{"zone":"eu-west-1a","version":"1.2.3","commit":"abc"},
    "weight":100,"check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},
    "status":null,"state":"starting"}"#;

/// A second instance with no check and no metadata, on a hostname.
const REGISTER_PLAIN: &str = r#"{"id":"u2","service":"users","address":"users-2.internal",
    "port":80,"tags":[],"metadata":{},"weight":1,"check":null,"status":"warning"}"#;

fn fixture() -> (Vec<String>, Registry) {
    let mut out = Vec::new();
    let mut registry = Registry::new();
    let new: NewInstance = serde_json::from_str(REGISTER).unwrap();
    let plain: NewInstance = serde_json::from_str(REGISTER_PLAIN).unwrap();
    let key = signpost_core::InstanceKey::new("users", "u1");
    let commands = [
        Command::Register(new.clone()),
        Command::Register(plain),
        Command::SetMaintenance {
            key: key.clone(),
            enable: true,
            reason: Some("disk".into()),
        },
        Command::SetStatus {
            key: key.clone(),
            status: signpost_core::Status::Critical,
        },
        Command::Batch(vec![Command::Register(new), Command::Deregister(key)]),
        Command::Register(serde_json::from_str(&REGISTER.replace("u1", "u3")).unwrap()),
    ];
    for (n, command) in commands.into_iter().enumerate() {
        let index = 10 + n as u64;
        let request = Request::new(1_700_000_000_000 + 1000 * n as u64, command);
        out.push(serde_json::to_string(&request).unwrap());
        let (response, events) = registry.apply(index, &request);
        out.push(serde_json::to_string(&response).unwrap());
        out.push(serde_json::to_string(&events).unwrap());
        if n == 3 {
            let instance = registry.instance("users", "u1").unwrap();
            out.push(serde_json::to_string(instance).unwrap());
        }
    }
    out.push(serde_json::to_string(&registry).unwrap());
    (out, registry)
}

/// What faa737f wrote for [`fixture`], line by line (captured, not hand-written).
const GOLDEN: [&str; 20] = [
    r##"{"now_ms":1700000000000,"command":{"Register":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"status":null,"state":"starting"}}}"##,
    r##"{"Registered":{"instance":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:20.000Z","create_index":10,"modify_index":10,"state":"starting"},"created":true}}"##,
    r##"[{"Service":{"service":"users","index":10,"kind":{"Added":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:20.000Z","create_index":10,"modify_index":10,"state":"starting"}}}}]"##,
    r##"{"now_ms":1700000001000,"command":{"Register":{"id":"u2","service":"users","address":"users-2.internal","port":80,"tags":[],"metadata":{},"weight":1,"check":null,"status":"warning"}}}"##,
    r##"{"Registered":{"instance":{"id":"u2","service":"users","address":"users-2.internal","port":80,"tags":[],"metadata":{},"weight":1,"status":"warning","created_at":"2023-11-14T22:13:21.000Z","updated_at":"2023-11-14T22:13:21.000Z","create_index":11,"modify_index":11,"state":"up"},"created":true}}"##,
    r##"[{"Service":{"service":"users","index":11,"kind":{"Added":{"id":"u2","service":"users","address":"users-2.internal","port":80,"tags":[],"metadata":{},"weight":1,"status":"warning","created_at":"2023-11-14T22:13:21.000Z","updated_at":"2023-11-14T22:13:21.000Z","create_index":11,"modify_index":11,"state":"up"}}}}]"##,
    r##"{"now_ms":1700000002000,"command":{"SetMaintenance":{"key":{"service":"users","id":"u1"},"enable":true,"reason":"disk"}}}"##,
    r##"{"InstanceUpdated":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:22.000Z","create_index":10,"modify_index":12,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}"##,
    r##"[{"Service":{"service":"users","index":12,"kind":{"StatusChanged":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:22.000Z","create_index":10,"modify_index":12,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}}}]"##,
    r##"{"now_ms":1700000003000,"command":{"SetStatus":{"key":{"service":"users","id":"u1"},"status":"critical"}}}"##,
    r##"{"StatusSet":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:23.000Z","create_index":10,"modify_index":13,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}"##,
    r##"[{"Service":{"service":"users","index":13,"kind":{"StatusChanged":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:23.000Z","create_index":10,"modify_index":13,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}}}]"##,
    r##"{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:23.000Z","create_index":10,"modify_index":13,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}"##,
    r##"{"now_ms":1700000004000,"command":{"Batch":[{"Register":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"status":null,"state":"starting"}},{"Deregister":{"service":"users","id":"u1"}}]}}"##,
    r##"{"Batch":[{"Registered":{"instance":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:24.000Z","create_index":10,"modify_index":14,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}},"created":false}},{"Deregistered":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:24.000Z","create_index":10,"modify_index":14,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}]}"##,
    r##"[{"Service":{"service":"users","index":14,"kind":{"Replaced":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:24.000Z","create_index":10,"modify_index":14,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}}},{"Service":{"service":"users","index":14,"kind":{"Removed":{"id":"u1","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"critical","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:13:24.000Z","create_index":10,"modify_index":14,"state":"starting","maintenance":{"reason":"disk","since":"2023-11-14T22:13:22.000Z"}}}}}]"##,
    r##"{"now_ms":1700000005000,"command":{"Register":{"id":"u3","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"status":null,"state":"starting"}}}"##,
    r##"{"Registered":{"instance":{"id":"u3","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:25.000Z","updated_at":"2023-11-14T22:13:25.000Z","create_index":15,"modify_index":15,"state":"starting"},"created":true}}"##,
    r##"[{"Service":{"service":"users","index":15,"kind":{"Added":{"id":"u3","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:25.000Z","updated_at":"2023-11-14T22:13:25.000Z","create_index":15,"modify_index":15,"state":"starting"}}}}]"##,
    r##"{"services":{"users":{"instances":{"u2":{"id":"u2","service":"users","address":"users-2.internal","port":80,"tags":[],"metadata":{},"weight":1,"status":"warning","created_at":"2023-11-14T22:13:21.000Z","updated_at":"2023-11-14T22:13:21.000Z","create_index":11,"modify_index":11,"state":"up"},"u3":{"id":"u3","service":"users","address":"10.0.0.1","port":8080,"tags":["b","a"],"metadata":{"commit":"abc","version":"1.2.3","zone":"eu-west-1a"},"weight":100,"status":"passing","check":{"ttl":"10s","deregister_after":"1m","failures_before_critical":3},"created_at":"2023-11-14T22:13:25.000Z","updated_at":"2023-11-14T22:13:25.000Z","create_index":15,"modify_index":15,"state":"starting"}},"definition":null,"index":15}},"last_index":15,"kv":{"entries":{},"tombstones":{},"tombstone_times":{},"reap_order":[],"reaped_index":0},"acl":{"policies":{},"tokens":{},"by_secret":{},"bootstrapped":false,"index":0},"removed_index":0}"##,
];

#[test]
fn instances_log_entries_responses_events_and_snapshots_encode_as_before() {
    let (lines, _) = fixture();
    assert_eq!(lines.len(), GOLDEN.len());
    for (n, (now, then)) in lines.iter().zip(GOLDEN).enumerate() {
        assert_eq!(now, then, "line {n} differs from faa737f's encoding");
    }
}

#[test]
fn what_the_previous_build_wrote_reads_back_and_writes_the_same() {
    let (_, registry) = fixture();
    let snapshot = GOLDEN[GOLDEN.len() - 1];
    let restored: Registry = serde_json::from_str(snapshot).unwrap();
    assert_eq!(restored, registry);
    assert_eq!(serde_json::to_string(&restored).unwrap(), snapshot);
    // A restored registry shares metadata and checks as a live one does.
    assert_eq!(restored.interned(), registry.interned());
    for line in &GOLDEN[..GOLDEN.len() - 1] {
        if let Ok(request) = serde_json::from_str::<Request>(line) {
            assert_eq!(serde_json::to_string(&request).unwrap(), *line);
        }
        if let Ok(response) = serde_json::from_str::<signpost_core::Response>(line) {
            assert_eq!(serde_json::to_string(&response).unwrap(), *line);
        }
    }
}
