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
//! number of the service that has an instance of that id (16 bytes in one hash table, no
//! allocation of its own; an id held by several services, or two ids whose hashes collide,
//! go to a side table of such numbers), and only checks given an explicit id are held by it
//! (a check without one is `service:<instance id>`, found through the instance id).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::model::{Instance, InstanceKey};
use crate::registry::{EventKind, Registry, ServiceEvent};

/// The check id a check without an explicit one has: this prefix and the instance's id.
const DEFAULT_CHECK_PREFIX: &str = "service:";

/// Instances by instance id and by explicit check id, across services.
#[derive(Debug, Clone, Default)]
pub struct InstanceLookup {
    /// Hash of an instance id → the number (in `names`) of the one service with an instance
    /// of that id: the common case, kept to one small entry without an allocation.
    by_id: HashMap<u64, u32>,
    /// Hash of an instance id → the numbers of the services with an instance of that id, when
    /// there are two or more (a hash collision only adds a service the registry then says has
    /// no such instance). A hash is in `by_id` or here, never in both.
    shared_ids: HashMap<u64, Vec<u32>>,
    /// The service names `by_id` and `shared_ids` hold by number.
    names: ServiceNames,
    /// Explicit check id → the instances whose check carries it.
    by_check: HashMap<String, Vec<InstanceKey>>,
    /// Instance → its check's explicit id: what to take out of `by_check` when it is
    /// registered again with another check, or removed.
    explicit: HashMap<InstanceKey, String>,
}

/// Service names by number, each held once and counted, so the id index stores a `u32` per
/// instance instead of a copy of its service's name. A number is released (and reused) when
/// the last entry using it goes.
#[derive(Debug, Clone, Default)]
struct ServiceNames {
    /// Name → its number.
    numbers: HashMap<Arc<str>, u32>,
    /// Number → the name and how many id entries use it; `None` for a free number.
    slots: Vec<Option<(Arc<str>, usize)>>,
    /// Numbers free for reuse.
    free: Vec<u32>,
}

impl ServiceNames {
    /// The number of `name`, if an entry uses it.
    fn number(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }

    /// The number of `name`, counted once more.
    fn acquire(&mut self, name: &str) -> u32 {
        if let Some(n) = self.number(name) {
            if let Some((_, uses)) = &mut self.slots[n as usize] {
                *uses += 1;
            }
            return n;
        }
        let name: Arc<str> = Arc::from(name);
        let n = match self.free.pop() {
            Some(n) => {
                self.slots[n as usize] = Some((name.clone(), 1));
                n
            }
            None => {
                self.slots.push(Some((name.clone(), 1)));
                (self.slots.len() - 1) as u32
            }
        };
        self.numbers.insert(name, n);
        n
    }

    /// Counts one use of number `n` less, freeing it after its last.
    fn release(&mut self, n: u32) {
        let Some(slot) = self.slots.get_mut(n as usize) else {
            return;
        };
        if let Some((name, uses)) = slot {
            *uses -= 1;
            if *uses == 0 {
                self.numbers.remove(&**name);
                *slot = None;
                self.free.push(n);
            }
        }
    }

    /// The name number `n` stands for.
    fn name(&self, n: u32) -> Option<&str> {
        self.slots
            .get(n as usize)
            .and_then(Option::as_ref)
            .map(|(name, _)| &**name)
    }
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
        self.index_id(id_hash(&i.id), &i.service);
        if let Some(check_id) = i.check.as_ref().and_then(|c| c.id.clone()) {
            let key = i.key();
            self.by_check
                .entry(check_id.clone())
                .or_default()
                .push(key.clone());
            self.explicit.insert(key, check_id);
        }
    }

    /// Notes that `service` has an instance whose id hashes to `hash` (once).
    fn index_id(&mut self, hash: u64, service: &str) {
        let number = self.names.number(service);
        if let Some(n) = number {
            if self.by_id.get(&hash) == Some(&n)
                || self.shared_ids.get(&hash).is_some_and(|v| v.contains(&n))
            {
                return;
            }
        }
        let n = self.names.acquire(service);
        if let Some(numbers) = self.shared_ids.get_mut(&hash) {
            numbers.push(n);
        } else if let Some(other) = self.by_id.insert(hash, n) {
            self.by_id.remove(&hash);
            self.shared_ids.insert(hash, vec![other, n]);
        }
    }

    fn remove(&mut self, i: &Instance) {
        let hash = id_hash(&i.id);
        if let Some(n) = self.names.number(&i.service) {
            if self.by_id.get(&hash) == Some(&n) {
                self.by_id.remove(&hash);
                self.names.release(n);
            } else if let Some(numbers) = self.shared_ids.get_mut(&hash) {
                if let Some(at) = numbers.iter().position(|&m| m == n) {
                    numbers.swap_remove(at);
                    self.names.release(n);
                }
                if numbers.len() <= 1 {
                    let last = numbers.first().copied();
                    self.shared_ids.remove(&hash);
                    if let Some(last) = last {
                        self.by_id.insert(hash, last);
                    }
                }
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
        let hash = id_hash(id);
        let mut found: Vec<&Instance> = self
            .by_id
            .get(&hash)
            .into_iter()
            .chain(self.shared_ids.get(&hash).into_iter().flatten())
            .filter_map(|&n| self.names.name(n))
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
    use std::collections::{BTreeMap, BTreeSet};

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

    impl InstanceLookup {
        /// The id index by hash, with service names instead of numbers (numbers depend on
        /// the order names were first seen).
        fn id_entries(&self) -> BTreeMap<u64, BTreeSet<String>> {
            let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
            let one = self.by_id.iter().map(|(h, n)| (h, std::slice::from_ref(n)));
            let many = self.shared_ids.iter().map(|(h, v)| (h, v.as_slice()));
            for (hash, numbers) in one.chain(many) {
                assert!(
                    !(self.by_id.contains_key(hash) && self.shared_ids.contains_key(hash)),
                    "hash {hash} is in both tables"
                );
                for &n in numbers {
                    let name = self.names.name(n).expect("a held number has a name");
                    out.entry(*hash).or_default().insert(name.to_string());
                }
            }
            out
        }

        /// Whether the lookup holds nothing at all (every table and name released).
        fn is_empty(&self) -> bool {
            self.by_id.is_empty()
                && self.shared_ids.is_empty()
                && self.names.numbers.is_empty()
                && self.by_check.is_empty()
                && self.explicit.is_empty()
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
        assert_eq!(rebuilt.id_entries(), l.id_entries());
        assert_eq!(rebuilt.by_check, l.by_check);
        assert_eq!(rebuilt.explicit, l.explicit);
    }

    #[test]
    fn an_id_shared_by_services_moves_between_tables_and_names_are_released() {
        let mut r = Registry::new();
        let mut l = InstanceLookup::default();
        for (n, service) in ["alpha", "beta", "gamma"].into_iter().enumerate() {
            apply(
                &mut r,
                &mut l,
                n as u64 + 1,
                Command::Register(new(service, "x", None)),
            );
        }
        apply(
            &mut r,
            &mut l,
            4,
            Command::Register(new("alpha", "y", None)),
        );
        // Registered again: still one entry for (alpha, x).
        apply(
            &mut r,
            &mut l,
            5,
            Command::Register(new("alpha", "x", None)),
        );
        let pair = |s: &str, i: &str| (s.to_string(), i.to_string());
        assert_eq!(
            keys(l.by_instance_id(&r, "x")),
            [pair("alpha", "x"), pair("beta", "x"), pair("gamma", "x")]
        );
        assert_eq!(l.shared_ids.len(), 1, "x is held by three services");
        assert_eq!(l.names.numbers.len(), 3);

        let deregister = |r: &mut Registry, l: &mut InstanceLookup, index, s: &str, i: &str| {
            apply(r, l, index, Command::Deregister(InstanceKey::new(s, i)));
        };
        deregister(&mut r, &mut l, 6, "beta", "x");
        assert_eq!(
            keys(l.by_instance_id(&r, "x")),
            [pair("alpha", "x"), pair("gamma", "x")]
        );
        assert_eq!(l.names.numbers.len(), 2, "beta's name is released");
        deregister(&mut r, &mut l, 7, "alpha", "x");
        assert_eq!(keys(l.by_instance_id(&r, "x")), [pair("gamma", "x")]);
        assert!(l.shared_ids.is_empty(), "one service left: back in by_id");
        assert_eq!(l.id_entries(), InstanceLookup::of(&r).id_entries());

        // A number freed is reused for the next new name.
        apply(
            &mut r,
            &mut l,
            8,
            Command::Register(new("delta", "z", None)),
        );
        assert_eq!(keys(l.by_instance_id(&r, "z")), [pair("delta", "z")]);
        assert_eq!(l.names.slots.len(), 3);

        deregister(&mut r, &mut l, 9, "gamma", "x");
        deregister(&mut r, &mut l, 10, "alpha", "y");
        deregister(&mut r, &mut l, 11, "delta", "z");
        assert!(l.is_empty(), "{l:?}");
    }

    #[test]
    fn colliding_hashes_keep_both_services() {
        // Two ids whose hashes collide take the shared table's path; simulated by giving two
        // services the same hash directly.
        let mut l = InstanceLookup::default();
        l.index_id(42, "alpha");
        l.index_id(42, "beta");
        l.index_id(42, "alpha");
        let names: BTreeSet<String> = ["alpha", "beta"].map(String::from).into();
        assert_eq!(l.id_entries(), BTreeMap::from([(42, names)]));
        assert_eq!(l.shared_ids[&42].len(), 2, "alpha is held once");
    }
}
