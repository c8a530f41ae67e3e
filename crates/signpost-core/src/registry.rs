//! The replicated registry state machine.
//!
//! [`Registry::apply`] is the only way state changes. It takes the log index the command was
//! committed at and a [`Request`] that carries the proposer's wall-clock time, so every replica
//! that applies the same log reaches the same state. It returns a [`Response`] for the caller and
//! the [`Event`]s that watchers of each touched service need.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::acl::{Acl, AclCommand, AclOutcome};
use crate::compact::Interner;
use crate::kv::Kv;
use crate::limits::{Limits, Refusal};
use crate::model::{
    Instance, InstanceKey, Lifecycle, Maintenance, NewInstance, ServiceDefinition, Status,
    Timestamp,
};

mod instances;

use instances::Instances;

/// A command together with the time its proposer saw when it proposed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Proposer's wall clock, milliseconds since the Unix epoch.
    pub now_ms: u64,
    pub command: Command,
}

impl Request {
    pub fn new(now_ms: u64, command: Command) -> Self {
        Request { now_ms, command }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.command)
    }
}

/// Every way the registry can change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Insert or replace an instance (upsert by service and id).
    Register(NewInstance),
    /// Remove an instance.
    Deregister(InstanceKey),
    /// Record a health transition decided by the health monitor.
    SetStatus { key: InstanceKey, status: Status },
    /// Insert or replace a service definition.
    PutDefinition(ServiceDefinition),
    /// Remove a service definition.
    DeleteDefinition { service: String },
    /// Set a KV key; with `cas`, only if its modify index matches (0: only if absent).
    KvSet {
        key: String,
        #[serde(with = "crate::kv::base64_bytes")]
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    /// Delete a KV key, or every key under it with `recurse`.
    KvDelete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
    /// Several commands committed as one log entry (concurrent writes grouped by the agent),
    /// applied in order at the same index.
    Batch(Vec<Command>),
    /// A change to the ACL state (policies, tokens, bootstrap, reaping expired tokens).
    Acl(AclCommand),
    /// Puts an instance into maintenance (`enable`, with an optional reason) or takes it out:
    /// it stays registered but leaves discovery meanwhile.
    SetMaintenance {
        key: InstanceKey,
        enable: bool,
        reason: Option<String>,
    },
    /// Records an instance's announced lifecycle state (`starting`, `up`, `stopping`).
    SetLifecycle { key: InstanceKey, state: Lifecycle },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
///
/// Instances are the registry's own (`Arc`), not copies.
pub enum Response {
    Registered {
        instance: Arc<Instance>,
        created: bool,
    },
    Deregistered(Arc<Instance>),
    StatusSet(Arc<Instance>),
    DefinitionPut {
        definition: ServiceDefinition,
        created: bool,
    },
    DefinitionDeleted,
    /// The instance or definition named by the command does not exist; nothing changed.
    NotFound,
    /// The command was valid but changed nothing (e.g. a status it already had).
    Unchanged,
    /// Raft's own entries (blank, membership) apply to no registry state.
    Internal,
    /// Whether a KV write or delete happened (false: its `cas` did not match).
    Kv(bool),
    /// One response per command of a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// What an ACL command did.
    Acl(AclOutcome),
    /// An instance's maintenance mark or lifecycle state changed; the instance after it.
    InstanceUpdated(Arc<Instance>),
    /// The command was refused (malformed, or it would cross a limit); nothing changed.
    Refused(Refusal),
}

/// A change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Something about one service changed.
    Service(Box<ServiceEvent>),
    /// A KV key was written or deleted at `index`.
    Kv { key: String, index: u64 },
}

impl Event {
    /// The service event, if this is one.
    pub fn as_service(&self) -> Option<&ServiceEvent> {
        match self {
            Event::Service(e) => Some(e.as_ref()),
            Event::Kv { .. } => None,
        }
    }
}

/// A change to one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub service: String,
    /// The log index of the change; the service's index after it.
    pub index: u64,
    pub kind: EventKind,
}

/// What changed. The instance is the registry's own (`Arc`), shared, not copied, by every
/// watcher and cache that keeps the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A new instance registered.
    Added(Arc<Instance>),
    /// An existing instance was registered again (possibly with a new check).
    Replaced(Arc<Instance>),
    /// An instance's health status changed.
    StatusChanged(Arc<Instance>),
    /// An instance was deregistered (by a client, or by the health monitor).
    Removed(Arc<Instance>),
    /// The service definition was created, replaced or deleted.
    DefinitionChanged,
}

/// One service's state: its instances, its definition and its last-modified index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ServiceEntry {
    /// Its instances by id, each held once (written as a map of id to instance).
    instances: Instances,
    definition: Option<ServiceDefinition>,
    /// Index of the last change to this service. Kept after the last instance leaves, so that a
    /// blocking query still sees the index move past the removal.
    index: u64,
}

/// Instance counts by status, for listings and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub passing: usize,
    pub warning: usize,
    pub critical: usize,
}

impl StatusCounts {
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Passing => self.passing += 1,
            Status::Warning => self.warning += 1,
            Status::Critical => self.critical += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.passing + self.warning + self.critical
    }
}

/// A summary row of `GET /api/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub index: u64,
    pub instances: StatusCounts,
    pub has_definition: bool,
}

/// The registry: every service, instance and definition, and the index of the last change.
///
/// Read back through [`Restored`], which shares the restored instances' metadata and checks
/// through the interner as registrations do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Restored")]
pub struct Registry {
    services: BTreeMap<String, ServiceEntry>,
    /// Index of the last applied command that changed anything.
    last_index: u64,
    /// The KV store.
    #[serde(default)]
    kv: Kv,
    /// ACL policies and tokens (absent from snapshots written before ACLs existed).
    #[serde(default)]
    acl: Acl,
    /// The bounds [`apply`](Self::apply) enforces: configuration, not state (each member sets
    /// its own with [`set_limits`](Self::set_limits); all members are configured alike).
    #[serde(skip)]
    limits: Limits,
    /// The highest index of a service entry removed because nothing referenced it: the index
    /// of an absent service, and a floor for the catalog's, so neither moves backwards.
    #[serde(default)]
    removed_index: u64,
    /// Instances across all services (counted again on restore): what `max_instances` bounds.
    #[serde(skip)]
    instance_count: Option<usize>,
    /// Metadata strings and check specs shared among instances (derived state: rebuilt on
    /// restore, not written).
    #[serde(skip)]
    interner: Interner,
}

/// What a snapshot holds: [`Registry`]'s written fields, in the same order and with the same
/// defaults (the registry derives `Serialize`; reading goes through this).
#[derive(Deserialize)]
struct Restored {
    services: BTreeMap<String, ServiceEntry>,
    last_index: u64,
    #[serde(default)]
    kv: Kv,
    #[serde(default)]
    acl: Acl,
    #[serde(default)]
    removed_index: u64,
}

impl From<Restored> for Registry {
    fn from(r: Restored) -> Self {
        let mut interner = Interner::new();
        let mut services = r.services;
        for entry in services.values_mut() {
            entry.instances.intern(&mut interner);
        }
        Registry {
            services,
            last_index: r.last_index,
            kv: r.kv,
            acl: r.acl,
            limits: Limits::default(),
            removed_index: r.removed_index,
            instance_count: None,
            interner,
        }
    }
}

impl PartialEq for Registry {
    /// The state only: not the limits (configuration) or the instance count (a cache).
    fn eq(&self, other: &Self) -> bool {
        self.services == other.services
            && self.last_index == other.last_index
            && self.kv == other.kv
            && self.acl == other.acl
            && self.removed_index == other.removed_index
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Registry {
            limits,
            ..Self::default()
        }
    }

    /// Sets the bounds [`apply`](Self::apply) enforces (after a snapshot restore, too: limits
    /// are configuration and do not travel in snapshots).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Applies `req`, committed at log `index`. Indexes must grow from call to call.
    ///
    /// Every command is validated here ([`crate::validate::command`]) and checked against the
    /// [`Limits`], whichever route it came by: a refused command answers
    /// [`Response::Refused`] and changes nothing. KV tombstones older than the tombstone TTL
    /// (by the proposal time) are reaped as the log is applied.
    pub fn apply(&mut self, index: u64, req: &Request) -> (Response, Vec<Event>) {
        if let Err(e) = crate::validate::proposal_time(req.now_ms) {
            return (Response::Refused(e.into()), vec![]);
        }
        // A refused command changes nothing, not even the tombstones it would have reaped.
        if let Err(e) = crate::validate::command(&req.command) {
            return (Response::Refused(e.into()), vec![]);
        }
        if let Some(refusal) = self.over_limit(&req.command) {
            return (Response::Refused(refusal), vec![]);
        }
        self.kv
            .reap(req.now_ms.saturating_sub(self.limits.kv_tombstone_ttl_ms));
        self.apply_command(index, Timestamp(req.now_ms), &req.command)
    }

    fn apply_command(
        &mut self,
        index: u64,
        now: Timestamp,
        command: &Command,
    ) -> (Response, Vec<Event>) {
        if let Err(e) = crate::validate::command(command) {
            return (Response::Refused(e.into()), vec![]);
        }
        if let Some(refusal) = self.over_limit(command) {
            return (Response::Refused(refusal), vec![]);
        }
        match command {
            Command::Batch(commands) => {
                let mut responses = Vec::with_capacity(commands.len());
                let mut events = Vec::new();
                for c in commands {
                    let (r, e) = self.apply_command(index, now, c);
                    responses.push(r);
                    events.extend(e);
                }
                (Response::Batch(responses), events)
            }
            Command::Register(new) => self.register(index, now, new),
            Command::Deregister(key) => self.deregister(index, key),
            Command::SetStatus { key, status } => self.set_status(index, now, key, *status),
            Command::PutDefinition(def) => self.put_definition(index, def),
            Command::DeleteDefinition { service } => self.delete_definition(index, service),
            Command::KvSet {
                key,
                value,
                flags,
                cas,
            } => {
                let ok = self.kv.set(index, key, value, *flags, *cas);
                let events = if ok {
                    self.last_index = index;
                    vec![Event::Kv {
                        key: key.clone(),
                        index,
                    }]
                } else {
                    vec![]
                };
                (Response::Kv(ok), events)
            }
            Command::KvDelete { key, recurse, cas } => {
                let (ok, keys) = self.kv.delete_at(index, now.0, key, *recurse, *cas);
                if !keys.is_empty() {
                    self.last_index = index;
                }
                let events = keys
                    .into_iter()
                    .map(|key| Event::Kv { key, index })
                    .collect();
                (Response::Kv(ok), events)
            }
            Command::SetMaintenance {
                key,
                enable,
                reason,
            } => {
                let mark = enable.then(|| Maintenance {
                    reason: reason.clone().unwrap_or_default(),
                    since: now,
                });
                self.update_instance(index, now, key, |i| {
                    let next = match (&i.maintenance, mark) {
                        // Already in maintenance: keep when it began, take the new reason.
                        (Some(old), Some(new)) => Some(Box::new(Maintenance {
                            reason: new.reason,
                            since: old.since,
                        })),
                        (_, next) => next.map(Box::new),
                    };
                    let changed = i.maintenance != next;
                    i.maintenance = next;
                    changed
                })
            }
            Command::SetLifecycle { key, state } => self.update_instance(index, now, key, |i| {
                let changed = i.state != *state;
                i.state = *state;
                changed
            }),
            Command::Acl(command) => {
                let outcome = self.acl.apply(index, now, command);
                if self.acl.index() == index {
                    self.last_index = index;
                }
                (Response::Acl(outcome), vec![])
            }
        }
    }

    /// The limit `command` would cross, if any (for a single command; a batch's commands are
    /// checked one by one as they apply).
    fn over_limit(&mut self, command: &Command) -> Option<Refusal> {
        let l = self.limits;
        match command {
            Command::Register(new) => {
                let entry = self.services.get(&new.service);
                if entry.is_some_and(|e| e.instances.contains(&new.id)) {
                    return None;
                }
                if entry.is_none() && self.services.len() >= l.max_services {
                    return Some(Refusal::limit(
                        "max_services",
                        l.max_services,
                        "too many services",
                    ));
                }
                if entry.is_some_and(|e| e.instances.len() >= l.max_instances_per_service) {
                    return Some(Refusal::limit(
                        "max_instances_per_service",
                        l.max_instances_per_service,
                        "too many instances of this service",
                    ));
                }
                if self.instance_count() >= l.max_instances {
                    return Some(Refusal::limit(
                        "max_instances",
                        l.max_instances,
                        "too many instances",
                    ));
                }
                None
            }
            Command::PutDefinition(def) => (!self.services.contains_key(&def.name)
                && self.services.len() >= l.max_services)
                .then(|| Refusal::limit("max_services", l.max_services, "too many services")),
            Command::KvSet { key, value, .. } => self
                .kv
                .over_limit(key, value, l.max_kv_keys, l.max_kv_bytes)
                .map(|(name, max)| Refusal::limit(name, max, "the KV store is full")),
            _ => None,
        }
    }

    /// Instances across all services.
    fn instance_count(&mut self) -> usize {
        if let Some(n) = self.instance_count {
            return n;
        }
        let n = self.services.values().map(|s| s.instances.len()).sum();
        self.instance_count = Some(n);
        n
    }

    /// Adjusts the instance count, if counted, by `+add - sub`.
    fn count_instances(&mut self, add: usize, sub: usize) {
        if let Some(n) = &mut self.instance_count {
            *n = (*n + add).saturating_sub(sub);
        }
    }

    /// Removes `service`'s entry once nothing references it (no instances, no definition), so
    /// names that come and go do not accumulate. Its index is forgotten with it: a blocking
    /// query on it then sees index 0 < what it waited on, and returns.
    fn forget_if_empty(&mut self, service: &str) {
        if self
            .services
            .get(service)
            .is_some_and(|s| s.instances.is_empty() && s.definition.is_none())
        {
            if let Some(gone) = self.services.remove(service) {
                self.removed_index = self.removed_index.max(gone.index);
            }
        }
    }

    /// Checks the registry's invariants: every instance sits under its own service and id,
    /// no service entry is empty, the counts agree, and indexes do not exceed the last one.
    /// For tests (property tests call it after every command).
    pub fn validate_state(&self) -> Result<(), String> {
        let mut n = 0;
        for (name, s) in &self.services {
            if s.instances.is_empty() && s.definition.is_none() {
                return Err(format!("service {name:?} is kept empty"));
            }
            if s.index > self.last_index {
                return Err(format!(
                    "service {name:?} index {} > last {}",
                    s.index, self.last_index
                ));
            }
            if let Some(d) = &s.definition {
                if &d.name != name {
                    return Err(format!("definition {:?} filed under {name:?}", d.name));
                }
            }
            for i in s.instances.values() {
                n += 1;
                let id = &i.id;
                if &i.service != name {
                    return Err(format!(
                        "instance {}/{} filed under {name}/{id}",
                        i.service, i.id
                    ));
                }
                if i.modify_index > s.index || i.create_index > i.modify_index {
                    return Err(format!("instance {name}/{id} has indexes out of order"));
                }
            }
            if s.instances.len() > self.limits.max_instances_per_service {
                return Err(format!("service {name:?} over max_instances_per_service"));
            }
        }
        if let Some(count) = self.instance_count {
            if count != n {
                return Err(format!("instance count {count} but {n} instances"));
            }
        }
        if n > self.limits.max_instances || self.services.len() > self.limits.max_services {
            return Err("over a counting limit".into());
        }
        if self.kv.len() > self.limits.max_kv_keys || self.kv.bytes() > self.limits.max_kv_bytes {
            return Err("over a KV limit".into());
        }
        self.kv.check_consistency()
    }

    fn touch(&mut self, service: &str, index: u64) -> &mut ServiceEntry {
        self.last_index = index;
        let entry = self.services.entry(service.to_string()).or_default();
        entry.index = index;
        entry
    }

    fn register(
        &mut self,
        index: u64,
        now: Timestamp,
        new: &NewInstance,
    ) -> (Response, Vec<Event>) {
        let previous = self
            .services
            .get(&new.service)
            .and_then(|e| e.instances.get(&new.id))
            .cloned();
        let previous = previous.as_deref();
        // Re-registering with the same check keeps the known status, so a routine re-registration
        // of an actively checked instance does not flicker to critical.
        let status = new.status.unwrap_or_else(|| match (previous, &new.check) {
            (Some(prev), check) if prev.check.as_deref() == check.as_ref() => prev.status,
            (_, Some(check)) => check.initial_status(),
            (_, None) => Status::Passing,
        });
        let instance = Arc::new(Instance {
            id: new.id.clone(),
            service: new.service.clone(),
            address: new.address.clone(),
            port: new.port,
            tags: new.tags.clone(),
            metadata: self.interner.metadata(&new.metadata),
            weight: new.weight,
            status,
            check: new.check.as_ref().map(|c| self.interner.check(c)),
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
            create_index: previous.map_or(index, |p| p.create_index),
            modify_index: index,
            state: new.state,
            // An operator's maintenance mark outlives the instance re-registering itself.
            maintenance: previous.and_then(|p| p.maintenance.clone()),
        });
        let created = previous.is_none();
        let entry = self.touch(&new.service, index);
        if let Some(old) = entry.instances.insert(instance.clone()) {
            self.interner.release(&old);
        }
        self.count_instances(usize::from(created), 0);
        let kind = if created {
            EventKind::Added(instance.clone())
        } else {
            EventKind::Replaced(instance.clone())
        };
        let event = ServiceEvent {
            service: new.service.clone(),
            index,
            kind,
        };
        (
            Response::Registered { instance, created },
            vec![Event::Service(Box::new(event))],
        )
    }

    fn deregister(&mut self, index: u64, key: &InstanceKey) -> (Response, Vec<Event>) {
        if self.instance(&key.service, &key.id).is_none() {
            return (Response::NotFound, vec![]);
        }
        let entry = self.touch(&key.service, index);
        let removed = entry
            .instances
            .remove(&key.id)
            .expect("presence checked above");
        self.interner.release(&removed);
        self.count_instances(0, 1);
        self.forget_if_empty(&key.service);
        let event = ServiceEvent {
            service: key.service.clone(),
            index,
            kind: EventKind::Removed(removed.clone()),
        };
        (
            Response::Deregistered(removed),
            vec![Event::Service(Box::new(event))],
        )
    }

    fn set_status(
        &mut self,
        index: u64,
        now: Timestamp,
        key: &InstanceKey,
        status: Status,
    ) -> (Response, Vec<Event>) {
        match self.instance(&key.service, &key.id) {
            None => return (Response::NotFound, vec![]),
            Some(i) if i.status == status => return (Response::Unchanged, vec![]),
            Some(_) => {}
        }
        let entry = self.touch(&key.service, index);
        let mut updated = Instance::clone(
            entry
                .instances
                .get(&key.id)
                .expect("presence checked above"),
        );
        updated.status = status;
        updated.updated_at = now;
        updated.modify_index = index;
        let instance = Arc::new(updated);
        entry.instances.insert(instance.clone());
        let event = ServiceEvent {
            service: key.service.clone(),
            index,
            kind: EventKind::StatusChanged(instance.clone()),
        };
        (
            Response::StatusSet(instance),
            vec![Event::Service(Box::new(event))],
        )
    }

    /// Applies `change` to one instance (it returns whether it changed anything); a change moves
    /// the service's index and is announced as a status change, so listings and watches
    /// re-filter the instance.
    fn update_instance(
        &mut self,
        index: u64,
        now: Timestamp,
        key: &InstanceKey,
        change: impl FnOnce(&mut Instance) -> bool,
    ) -> (Response, Vec<Event>) {
        let Some(current) = self.instance(&key.service, &key.id) else {
            return (Response::NotFound, vec![]);
        };
        let mut updated = current.clone();
        if !change(&mut updated) {
            return (Response::Unchanged, vec![]);
        }
        updated.updated_at = now;
        updated.modify_index = index;
        let updated = Arc::new(updated);
        let entry = self.touch(&key.service, index);
        entry.instances.insert(updated.clone());
        let event = ServiceEvent {
            service: key.service.clone(),
            index,
            kind: EventKind::StatusChanged(updated.clone()),
        };
        (
            Response::InstanceUpdated(updated),
            vec![Event::Service(Box::new(event))],
        )
    }

    fn put_definition(&mut self, index: u64, def: &ServiceDefinition) -> (Response, Vec<Event>) {
        let entry = self.touch(&def.name, index);
        let previous = entry.definition.as_ref();
        let created = previous.is_none();
        let definition = ServiceDefinition {
            create_index: previous.map_or(index, |p| p.create_index),
            modify_index: index,
            ..def.clone()
        };
        entry.definition = Some(definition.clone());
        let event = ServiceEvent {
            service: def.name.clone(),
            index,
            kind: EventKind::DefinitionChanged,
        };
        (
            Response::DefinitionPut {
                definition,
                created,
            },
            vec![Event::Service(Box::new(event))],
        )
    }

    fn delete_definition(&mut self, index: u64, service: &str) -> (Response, Vec<Event>) {
        if self.definition(service).is_none() {
            return (Response::NotFound, vec![]);
        }
        self.touch(service, index).definition = None;
        self.forget_if_empty(service);
        let event = ServiceEvent {
            service: service.to_string(),
            index,
            kind: EventKind::DefinitionChanged,
        };
        (
            Response::DefinitionDeleted,
            vec![Event::Service(Box::new(event))],
        )
    }

    /// Index of the last change to `service`, or 0 if it never existed.
    pub fn service_index(&self, service: &str) -> u64 {
        self.services
            .get(service)
            .map_or(self.removed_index, |s| s.index)
    }

    /// The KV store.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// The ACL state.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// Index of the last change to any service (the catalog): what catalog-wide blocking
    /// queries compare against. KV writes do not move it.
    pub fn catalog_index(&self) -> u64 {
        self.services
            .values()
            .map(|s| s.index)
            .max()
            .unwrap_or(0)
            .max(self.removed_index)
    }

    /// Index of the last change to anything.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    pub fn instance(&self, service: &str, id: &str) -> Option<&Instance> {
        self.services.get(service)?.instances.get(id).map(|i| &**i)
    }

    /// The registry's own handle on an instance, for callers that keep it (caches): shared,
    /// not copied.
    pub fn instance_arc(&self, service: &str, id: &str) -> Option<&Arc<Instance>> {
        self.services.get(service)?.instances.get(id)
    }

    /// Metadata strings and check specs the registry's interner holds (for tests and the
    /// memory profile).
    pub fn interned(&self) -> usize {
        self.interner.len()
    }

    /// All instances of `service`, ordered by id.
    pub fn instances(&self, service: &str) -> impl Iterator<Item = &Instance> {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|s| s.instances.values())
    }

    /// Every instance of every service.
    pub fn all_instances(&self) -> impl Iterator<Item = &Instance> {
        self.services.values().flat_map(|s| s.instances.values())
    }

    pub fn definition(&self, service: &str) -> Option<&ServiceDefinition> {
        self.services.get(service)?.definition.as_ref()
    }

    /// Services that currently have instances or a definition.
    pub fn services(&self) -> Vec<ServiceSummary> {
        self.services
            .iter()
            .filter(|(_, s)| !s.instances.is_empty() || s.definition.is_some())
            .map(|(name, s)| {
                let mut counts = StatusCounts::default();
                for i in s.instances.values() {
                    counts.add(i.status);
                }
                ServiceSummary {
                    name: name.clone(),
                    index: s.index,
                    instances: counts,
                    has_definition: s.definition.is_some(),
                }
            })
            .collect()
    }

    /// Instance counts by status across all services.
    pub fn status_counts(&self) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for i in self.all_instances() {
            counts.add(i.status);
        }
        counts
    }
}

#[cfg(test)]
mod tests;
