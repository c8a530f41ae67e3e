//! The service layer's pure parts.

use signpost_core::health::Action;
use signpost_core::model::Timestamp;

use super::*;

fn instance(status: Status, index: u64) -> Instance {
    Instance {
        id: "w1".into(),
        service: "web".into(),
        address: "10.0.0.1".into(),
        port: 80,
        tags: vec![],
        metadata: Default::default(),
        weight: 100,
        status,
        check: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        create_index: 1,
        modify_index: index,
        state: Default::default(),
        maintenance: None,
    }
}

/// The renewal path once disagreed with itself: the forwarded (Consul) path ignored a
/// deregistration the monitor decided and answered with the instance as it was. Now every
/// renewal proposes whatever the monitor decided and reports what that did.
#[test]
fn a_renewal_that_deregisters_reports_the_instance_gone() {
    let key = InstanceKey::new("web", "w1");
    let command = Command::from(Action::Deregister { key: key.clone() });
    assert_eq!(command, Command::Deregister(key.clone()));
    let gone = Response::Deregistered(instance(Status::Critical, 9).into());
    let outcome = renewal_outcome(&key, gone, || {
        Some(Renewal::of(&instance(Status::Critical, 5)))
    });
    assert_eq!(outcome, Err(ServiceError::NotRegistered(key)));
}

#[test]
fn a_renewal_reports_the_status_it_set_or_the_instance_as_it_stands() {
    let key = InstanceKey::new("web", "w1");
    let set = Response::StatusSet(instance(Status::Passing, 7).into());
    assert_eq!(
        renewal_outcome(&key, set, || None),
        Ok(Renewal {
            status: Status::Passing,
            index: 7
        })
    );
    let now = Renewal::of(&instance(Status::Warning, 4));
    assert_eq!(
        renewal_outcome(&key, Response::Unchanged, || Some(now)),
        Ok(now)
    );
    assert_eq!(
        renewal_outcome(&key, Response::NotFound, || Some(now)),
        Err(ServiceError::NotRegistered(key))
    );
}

#[test]
fn a_service_error_crosses_the_wire_intact() {
    for e in [
        ServiceError::NotTtl(InstanceKey::new("web", "w1")),
        ServiceError::Cluster(ClusterError::NotAMember(4)),
        ServiceError::Propose(ProposeError::Unavailable { leader: None }),
        ServiceError::Invalid(ValidationError::new("key", "bad")),
    ] {
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<ServiceError>(&json).unwrap(), e);
    }
}
