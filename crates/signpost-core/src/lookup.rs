//! Finding instances by the names Consul clients use for them: an instance id alone (Consul's
//! service ids are unique per agent, Signpost's only per service) or a check id
//! (`/v1/agent/check/pass/:id` is a Consul client's heartbeat). Without it each such request
//! would scan every instance of every service.
//!
//! [`InstanceLookup`] is kept beside a [`Registry`]: built from it with [`InstanceLookup::of`]
//! (on start and when a snapshot replaces the state) and moved along with every
//! [`ServiceEvent`] the registry emits ([`InstanceLookup::apply`]). It only narrows the search:
//! every answer is read from the registry and checked there, so an entry left stale could
//! never name the wrong instance.
//!
//! Its cost is kept per instance small: an instance id is held as a 64-bit hash with the
//! services that have an instance of that id, and only checks given an explicit id are held
//! by it (a check without one is `service:<instance id>`, found through the instance id).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::model::{Instance, InstanceKey};
use crate::registry::{EventKind, Registry, ServiceEvent};

/// The check id a check without an explicit one has: this prefix and the instance's id.
const DEFAULT_CHECK_PREFIX: &str = "service:";

/// Instances by instance id and by explicit check id, across services.
#[derive(Debug, Clone, Default)]
pub struct InstanceLookup {
    /// Hash of an instance id → the services with an instance of that id (a hash collision
    /// only adds a service the registry then says has no such instance).
    by_id: HashMap<u64, Vec<String>>,
    /// Explicit check id → the instances whose check carries it.
    by_check: HashMap<String, Vec<InstanceKey>>,
    /// Instance → its check's explicit id: what to take out of `by_check` when it is
    /// registered again with another check, or removed.
    explicit: HashMap<InstanceKey, String>,
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl InstanceLookup {
    /// The lookup of every instance in `registry`.
    pub fn of(registry: &Registry) -> Self {
        let mut lookup = InstanceLookup::default();
        for i in registry.all_instances() {
            lookup.insert(i);
        }
        lookup
    }

    /// Follows one change of the registry it is kept beside.
    pub fn apply(&mut self, event: &ServiceEvent) {
        match &event.kind {
            EventKind::Added(i) | EventKind::Replaced(i) => {
                self.unindex_check(&i.key());
                self.insert(i);
            }
            EventKind::Removed(i) => self.remove(i),
            EventKind::StatusChanged(_) | EventKind::DefinitionChanged => {}
        }
    }

    fn insert(&mut self, i: &Instance) {
        let services = self.by_id.entry(id_hash(&i.id)).or_default();
        if !services.contains(&i.service) {
            services.push(i.service.clone());
        }
        if let Some(check_id) = i.check.as_ref().and_then(|c| c.id.clone()) {
            let key = i.key();
            self.by_check
                .entry(check_id.clone())
                .or_default()
                .push(key.clone());
            self.explicit.insert(key, check_id);
        }
    }

    fn remove(&mut self, i: &Instance) {
        let hash = id_hash(&i.id);
        if let Some(services) = self.by_id.get_mut(&hash) {
            services.retain(|s| *s != i.service);
            if services.is_empty() {
                self.by_id.remove(&hash);
            }
        }
        self.unindex_check(&i.key());
    }

    fn unindex_check(&mut self, key: &InstanceKey) {
        let Some(check_id) = self.explicit.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_check.get_mut(&check_id) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_check.remove(&check_id);
            }
        }
    }

    /// Every instance with id `id`, of any service, in service order.
    pub fn by_instance_id<'r>(&self, registry: &'r Registry, id: &str) -> Vec<&'r Instance> {
        let mut found: Vec<&Instance> = self
            .by_id
            .get(&id_hash(id))
            .into_iter()
            .flatten()
            .filter_map(|service| registry.instance(service, id))
            .collect();
        found.sort_by(|a, b| a.service.cmp(&b.service));
        found
    }

    /// Every instance whose check has id `check_id` (explicit, or `service:<instance id>`
    /// for a check given none), in (service, id) order.
    pub fn by_check_id<'r>(&self, registry: &'r Registry, check_id: &str) -> Vec<&'r Instance> {
        let explicit = self
            .by_check
            .get(check_id)
            .into_iter()
            .flatten()
            .filter_map(|k| registry.instance(&k.service, &k.id));
        let implicit = check_id
            .strip_prefix(DEFAULT_CHECK_PREFIX)
            .map(|id| self.by_instance_id(registry, id))
            .unwrap_or_default();
        let mut found: Vec<&Instance> = explicit
            .chain(implicit)
            .filter(|i| {
                i.check
                    .as_ref()
                    .is_some_and(|c| c.id_for(&i.id) == check_id)
            })
            .collect();
        found.sort_by(|a, b| (&a.service, &a.id).cmp(&(&b.service, &b.id)));
        found.dedup_by(|a, b| a.service == b.service && a.id == b.id);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckSpec, Dur, Lifecycle, NewInstance};
    use crate::registry::{Command, Event, Request};

    fn new(service: &str, id: &str, check_id: Option<&str>) -> NewInstance {
        NewInstance {
            id: id.into(),
            service: service.into(),
            address: "10.0.0.1".into(),
            port: 80,
            tags: vec![],
            metadata: Default::default(),
            weight: 1,
            check: Some(CheckSpec {
                id: check_id.map(str::to_string),
                ttl: Some("30s".parse::<Dur>().unwrap()),
                ..CheckSpec::default()
            }),
            status: None,
            state: Lifecycle::Up,
        }
    }

    /// Applies `command` to `registry` and moves `lookup` along.
    fn apply(registry: &mut Registry, lookup: &mut InstanceLookup, index: u64, command: Command) {
        let req = Request {
            now_ms: 1_700_000_000_000,
            command,
        };
        let (_, events) = registry.apply(index, &req);
        for e in events.iter().filter_map(Event::as_service) {
            lookup.apply(e);
        }
    }

    fn keys(found: Vec<&Instance>) -> Vec<(String, String)> {
        found
            .into_iter()
            .map(|i| (i.service.clone(), i.id.clone()))
            .collect()
    }

    #[test]
    fn finds_by_id_and_check_id_and_follows_changes() {
        let mut r = Registry::new();
        let mut l = InstanceLookup::default();
        apply(
            &mut r,
            &mut l,
            1,
            Command::Register(new("beta", "x", Some("bx"))),
        );
        apply(
            &mut r,
            &mut l,
            2,
            Command::Register(new("alpha", "x", None)),
        );
        apply(
            &mut r,
            &mut l,
            3,
            Command::Register(new("alpha", "y", Some("shared"))),
        );
        apply(
            &mut r,
            &mut l,
            4,
            Command::Register(new("beta", "y", Some("shared"))),
        );
        let pair = |s: &str, i: &str| (s.to_string(), i.to_string());

        assert_eq!(
            keys(l.by_instance_id(&r, "x")),
            [pair("alpha", "x"), pair("beta", "x")]
        );
        assert_eq!(keys(l.by_check_id(&r, "bx")), [pair("beta", "x")]);
        assert_eq!(keys(l.by_check_id(&r, "service:x")), [pair("alpha", "x")]);
        assert!(
            l.by_check_id(&r, "service:y").is_empty(),
            "y's checks have ids"
        );
        assert_eq!(
            keys(l.by_check_id(&r, "shared")),
            [pair("alpha", "y"), pair("beta", "y")]
        );

        // Registered again with another check id: the old one no longer finds it.
        apply(&mut r, &mut l, 5, Command::Register(new("beta", "x", None)));
        assert!(l.by_check_id(&r, "bx").is_empty());
        assert_eq!(
            keys(l.by_check_id(&r, "service:x")),
            [pair("alpha", "x"), pair("beta", "x")]
        );

        apply(
            &mut r,
            &mut l,
            6,
            Command::Deregister(InstanceKey::new("alpha", "x")),
        );
        apply(
            &mut r,
            &mut l,
            7,
            Command::Deregister(InstanceKey::new("beta", "y")),
        );
        assert_eq!(keys(l.by_instance_id(&r, "x")), [pair("beta", "x")]);
        assert_eq!(keys(l.by_check_id(&r, "shared")), [pair("alpha", "y")]);
        assert!(l.by_instance_id(&r, "nobody").is_empty());

        // Built from the registry, it answers the same.
        let rebuilt = InstanceLookup::of(&r);
        assert_eq!(rebuilt.by_id, l.by_id);
        assert_eq!(rebuilt.by_check, l.by_check);
        assert_eq!(rebuilt.explicit, l.explicit);
    }
}
