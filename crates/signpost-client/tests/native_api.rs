//! The Signpost registry's native calls beyond the `Registry` trait (what the `signpost` CLI is
//! built on) against an in-process agent: the services summary, filtered listings, raw watch
//! events, registration answers, KV with `cas`, and the members; each failure as its typed
//! `RegistryError`.

mod common;

use std::time::Duration;

use futures::StreamExt;
use signpost_api::watch::WatchEvent;
use signpost_api::{Check, DefinitionSpec, Registration, Status};
use signpost_client::registry::signpost::{KvWrite, SignpostRegistry, StatusFilter};
use signpost_client::registry::RegistryError;

use common::TestAgent;

fn registration(id: &str, port: u16) -> Registration {
    Registration {
        id: Some(id.into()),
        address: "10.0.0.9".into(),
        port,
        ..Registration::default()
    }
}

#[tokio::test]
async fn services_listings_and_registration_answers() {
    let t = TestAgent::start().await;
    let reg = SignpostRegistry::new([t.base.clone()]).unwrap();
    assert!(reg.services().await.unwrap().is_empty());

    let first = reg
        .register_instance("users", &registration("u1", 1))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.instance.id, "u1");
    assert_eq!(first.instance.status, Status::Passing);
    let again = reg
        .register_instance("users", &registration("u1", 1))
        .await
        .unwrap();
    assert!(!again.created, "a second registration replaces");
    let critical = Registration {
        status: Some(Status::Critical),
        ..registration("u2", 2)
    };
    reg.register_instance("users", &critical).await.unwrap();

    let services = reg.services().await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].name, "users");
    assert_eq!(
        (
            services[0].instances.passing,
            services[0].instances.critical
        ),
        (1, 1)
    );

    let ids = |list: &signpost_api::InstanceList| {
        let mut ids: Vec<String> = list.instances.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    };
    let passing = reg.instances("users", StatusFilter::Passing).await.unwrap();
    assert_eq!(ids(&passing), ["u1"]);
    let any = reg.instances("users", StatusFilter::Any).await.unwrap();
    assert_eq!(ids(&any), ["u1", "u2"]);
    let only = reg
        .instances("users", StatusFilter::Only(Status::Critical))
        .await
        .unwrap();
    assert_eq!(ids(&only), ["u2"]);
    assert_eq!(reg.instance("users", "u2").await.unwrap().port, 2);

    // A refused registration names the field; a missing instance is NotFound.
    let bad = Registration {
        check: Some(Check {
            ttl: Some("soon".into()),
            ..Check::default()
        }),
        ..registration("u3", 3)
    };
    match reg.register_instance("users", &bad).await {
        Err(RegistryError::Rejected {
            status: Some(status),
            body,
            ..
        }) => {
            assert_eq!(status, 400);
            assert_eq!(body.field.as_deref(), Some("check.ttl"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    reg.remove_instance("users", "u2").await.unwrap();
    match reg.remove_instance("users", "u2").await {
        Err(RegistryError::NotFound { what, .. }) => assert_eq!(what, "users/u2"),
        other => panic!("{other:?}"),
    }
    t.shutdown().await;
}

type Events = futures::stream::BoxStream<'static, Result<WatchEvent, RegistryError>>;

/// The next item of a watch, within 10 s.
async fn next(events: &mut Events) -> Result<WatchEvent, RegistryError> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a watch event in time")
        .expect("the stream goes on")
}

#[tokio::test]
async fn raw_watch_events_carry_statuses_and_follow_the_filter() {
    let t = TestAgent::start().await;
    let reg = SignpostRegistry::new([t.base.clone()]).unwrap();
    let mut all = reg.watch_events("users", StatusFilter::Any);
    match next(&mut all).await {
        Ok(WatchEvent::Reset(list)) => assert!(list.instances.is_empty()),
        other => panic!("{other:?}"),
    }
    let critical = Registration {
        status: Some(Status::Critical),
        ..registration("u1", 1)
    };
    reg.register_instance("users", &critical).await.unwrap();
    match next(&mut all).await {
        Ok(WatchEvent::Add(change)) => {
            assert_eq!(change.instance.id, "u1");
            assert_eq!(change.instance.status, Status::Critical);
        }
        other => panic!("{other:?}"),
    }
    // The passing-only watch never saw it.
    let mut passing = reg.watch_events("users", StatusFilter::Passing);
    match next(&mut passing).await {
        Ok(WatchEvent::Reset(list)) => assert!(list.instances.is_empty()),
        other => panic!("{other:?}"),
    }
    t.shutdown().await;
}

#[tokio::test]
async fn kv_round_trip_with_cas_and_blocking_reads() {
    let t = TestAgent::start().await;
    let reg = SignpostRegistry::new([t.base.clone()]).unwrap();
    assert!(reg.kv_list("app/").await.unwrap().is_empty());
    assert!(matches!(
        reg.kv_get("app/color").await,
        Err(RegistryError::NotFound { .. })
    ));

    let put = reg
        .kv_put(
            "app/color",
            b"blue".to_vec(),
            KvWrite {
                cas: Some(0),
                flags: Some(3),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (put.key.as_str(), put.value.as_str(), put.flags),
        ("app/color", "Ymx1ZQ==", 3)
    );
    // A stale cas is refused as a conflict on the `cas` field.
    match reg
        .kv_put(
            "app/color",
            b"red".to_vec(),
            KvWrite {
                cas: Some(put.modify_index + 100),
                flags: None,
            },
        )
        .await
    {
        Err(RegistryError::Rejected {
            status: Some(status),
            body,
            ..
        }) => {
            assert_eq!(status, 409);
            assert_eq!(body.field.as_deref(), Some("cas"));
        }
        other => panic!("{other:?}"),
    }
    reg.kv_put("app/size", b"xl".to_vec(), KvWrite::default())
        .await
        .unwrap();
    let keys: Vec<String> = reg
        .kv_list("app/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["app/color", "app/size"]);

    // A blocking read returns at once for an older index, and waits for a change otherwise.
    let (index, entry) = reg
        .kv_wait("app/color", 0, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(entry.unwrap().value, "Ymx1ZQ==");
    let waiter = {
        let reg = reg.clone();
        tokio::spawn(async move {
            reg.kv_wait("app/color", index, Duration::from_secs(30))
                .await
        })
    };
    reg.kv_delete("app/color", false, None).await.unwrap();
    let (after, entry) = waiter.await.unwrap().unwrap();
    assert!(after > index, "{after} > {index}");
    assert!(entry.is_none(), "deleted");

    reg.kv_delete("app/", true, None).await.unwrap();
    assert!(reg.kv_list("app/").await.unwrap().is_empty());
    t.shutdown().await;
}

#[tokio::test]
async fn members_of_a_single_node_cluster() {
    let t = TestAgent::start().await;
    let reg = SignpostRegistry::new([t.base.clone()]).unwrap();
    let members = reg.members().await.unwrap();
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].role, "leader");
    assert_eq!(members.leader, Some(members.members[0].id));
    // Removing a node that is not a member is refused, not retried elsewhere.
    match reg.remove_member(99).await {
        Err(RegistryError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    t.shutdown().await;
}

#[tokio::test]
async fn definitions_are_stored_read_and_deleted() {
    let t = TestAgent::start().await;
    let reg = SignpostRegistry::new([t.base.clone()]).unwrap();
    assert!(matches!(
        reg.definition("users").await,
        Err(RegistryError::NotFound { .. })
    ));
    let spec = DefinitionSpec {
        version: "1.2.0".into(),
        dependencies: vec!["db".into()],
        ..DefinitionSpec::default()
    };
    let stored = reg.put_definition("users", &spec).await.unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.version.as_str()),
        ("users", "1.2.0")
    );
    assert!(stored.modify_index > 0);
    assert_eq!(reg.definition("users").await.unwrap(), stored);
    reg.delete_definition("users").await.unwrap();
    assert!(matches!(
        reg.delete_definition("users").await,
        Err(RegistryError::NotFound { .. })
    ));
    t.shutdown().await;
}
