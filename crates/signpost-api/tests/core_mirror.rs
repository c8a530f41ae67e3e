//! The wire types read exactly what the agent's own (`signpost-core`) types write, and write
//! it back unchanged: a field added to or renamed in the core without the wire crate fails
//! here.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use signpost_core::model::{Dur, Timestamp};
use signpost_core::{CheckSpec, InstanceKey, Status};

/// `core` encoded, decoded as `W`, and encoded again gives the same JSON.
fn mirrors<W: DeserializeOwned + Serialize>(core: &impl Serialize) -> W {
    let original = serde_json::to_value(core).unwrap();
    let wire: W = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(serde_json::to_value(&wire).unwrap(), original);
    wire
}

fn core_instance(check: Option<CheckSpec>) -> signpost_core::Instance {
    signpost_core::Instance {
        id: "d1".into(),
        service: "db".into(),
        address: "10.3.0.1".into(),
        port: 5432,
        tags: vec!["primary".into()],
        metadata: BTreeMap::from([("zone".to_string(), "eu".to_string())]).into(),
        weight: 7,
        status: Status::Warning,
        check: check.map(std::sync::Arc::new),
        created_at: Timestamp(1_700_000_000_000),
        updated_at: Timestamp(1_700_000_001_234),
        create_index: 14,
        modify_index: 15,
        state: Default::default(),
        maintenance: None,
    }
}

#[test]
fn lifecycle_and_maintenance_mirror_the_core() {
    let mut core = core_instance(None);
    core.state = signpost_core::Lifecycle::Stopping;
    core.maintenance = Some(Box::new(signpost_core::Maintenance {
        reason: "disk".into(),
        since: Timestamp(1_700_000_002_000),
    }));
    let wire: signpost_api::Instance = mirrors(&core);
    assert_eq!(wire.state, signpost_api::Lifecycle::Stopping);
    assert_eq!(wire.maintenance.as_ref().unwrap().reason, "disk");
    assert!(!wire.serving());
    let plain: signpost_api::Instance = mirrors(&core_instance(None));
    assert!(plain.serving());
}

#[test]
fn instances_mirror_the_core() {
    let plain: signpost_api::Instance = mirrors(&core_instance(None));
    assert_eq!(plain.status, signpost_api::Status::Warning);
    let full = CheckSpec {
        id: Some("c".into()),
        name: Some("n".into()),
        ttl: Some(Dur::from_secs(30)),
        deregister_after: Some(Dur::from_secs(60)),
        success_before_passing: 2,
        failures_before_critical: 3,
        ..CheckSpec::default()
    };
    let checked: signpost_api::Instance = mirrors(&core_instance(Some(full)));
    let check = checked.check.unwrap();
    assert_eq!(check.ttl.as_deref(), Some("30s"));
    assert_eq!(check.failures_before_critical, Some(3));
    let active = CheckSpec {
        http: Some("http://h/health".into()),
        interval: Some(Dur::from_millis(1500)),
        timeout: Some(Dur::from_secs(1)),
        ..CheckSpec::default()
    };
    let _: signpost_api::Instance = mirrors(&core_instance(Some(active)));
    for status in Status::ALL {
        let wire: signpost_api::Status = mirrors(&status);
        assert_eq!(wire.as_str(), status.as_str());
    }
}

#[test]
fn listings_summaries_keys_and_kv_mirror_the_core() {
    let i = core_instance(None);
    let list = signpost_api::InstanceList {
        index: 15,
        instances: vec![&i],
    };
    let _: signpost_api::InstanceList = mirrors(&list);

    let summary = signpost_core::registry::ServiceSummary {
        name: "db".into(),
        index: 15,
        instances: signpost_core::registry::StatusCounts {
            passing: 1,
            warning: 2,
            critical: 3,
        },
        has_definition: true,
    };
    let wire: signpost_api::ServiceSummary = mirrors(&summary);
    assert_eq!(wire.instances.critical, 3);

    let key = InstanceKey::new("db", "d1");
    let _: signpost_api::InstanceKey = mirrors(&key);
    let batch = signpost_api::BatchRenewed {
        renewed: 1,
        not_found: vec![key.clone()],
        rejected: vec![signpost_api::Rejected {
            key,
            error: "no ttl".into(),
        }],
        unavailable: Vec::new(),
    };
    let _: signpost_api::BatchRenewed = mirrors(&batch);
    let renewed = signpost_api::Renewed {
        id: "d1",
        status: Status::Passing,
        index: 9,
    };
    let _: signpost_api::Renewed = mirrors(&renewed);

    let entry = signpost_core::kv::KvEntry {
        key: "app/color".into(),
        value: b"blue".to_vec(),
        flags: 3,
        create_index: 5,
        modify_index: 6,
        lock_index: 0,
    };
    let wire: signpost_api::KvEntry = mirrors(&entry);
    assert_eq!(wire.value, "Ymx1ZQ==");
}

#[test]
fn definitions_mirror_the_core() {
    let def = signpost_core::ServiceDefinition {
        name: "users".into(),
        version: "1.2.0".into(),
        description: "who is who".into(),
        endpoints: vec![signpost_core::model::Endpoint {
            path: "/users/{id}".into(),
            method: "GET".into(),
            description: "one user".into(),
            parameters: vec![signpost_core::model::Parameter {
                name: "id".into(),
                kind: "string".into(),
                required: true,
                description: String::new(),
            }],
        }],
        dependencies: vec!["db".into()],
        config: serde_json::json!({"pool": 4}).as_object().unwrap().clone(),
        create_index: 3,
        modify_index: 4,
    };
    let wire: signpost_api::ServiceDefinition = mirrors(&def);
    assert_eq!(wire.endpoints[0].parameters[0].kind, "string");
    // What a client sends is what the agent's input type reads.
    let spec = signpost_api::DefinitionSpec {
        version: "2".into(),
        endpoints: wire.endpoints.clone(),
        ..Default::default()
    };
    let input: signpost_core::validate::DefinitionInput =
        serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    let stored = signpost_core::validate::definition("users", input).unwrap();
    assert_eq!(stored.version, "2");
    assert_eq!(stored.endpoints, def.endpoints);
}
