//! The health monitor: a pure, leader-local view of instance liveness.
//!
//! Heartbeats and active-check results change only this in-memory view. When an instance's status
//! should change, the monitor returns an [`Action`] for the agent to propose through Raft, so the
//! replicated log sees status *transitions*, never individual heartbeats.
//!
//! Time is a caller-supplied monotonic millisecond counter (`now`), never read here.
//!
//! Rules:
//! - **Flap damping**: an instance turns critical only after `failures_before_critical`
//!   consecutive failures, and passing again only after `success_before_passing` consecutive
//!   successes. A missed TTL period counts as one failure; a heartbeat as one success.
//! - **deregister_after**: an instance critical for that long is removed.
//! - **Mass-eviction guard**: when more than `threshold` of the TTL instances would expire within
//!   one `window` (and there are at least `min_instances` of them), nothing expires or is
//!   deregistered until heartbeats recover. An agent that loses its network thus keeps the
//!   registry instead of wiping it. The guard counts only instances it has **seen alive** (a
//!   heartbeat, a TTL status update or a passing check since it began tracking them; instances
//!   inherited at start-up or on becoming leader count if the registry holds them as not
//!   critical): an instance registered and never heard from again neither holds the guard on
//!   nor is held back by it.
//!
//! Layout: each tracked instance lives in a slot of a slab, found by key through one hash
//! table of slot numbers (the key itself is stored once, in the slot, as one string).
//! Two ordered indexes of `(due time, slot)` hold what a [`tick`](HealthMonitor::tick) may have
//! to act on — TTL deadlines of instances not yet critical, and `deregister_after` deadlines of
//! critical ones — so a tick touches only what is due, however large the fleet. Every change to
//! a tracked instance goes through [`HealthMonitor::update`], which takes its index entries out
//! and puts them back as the instance then is, so the indexes cannot drift from the slots.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, VecDeque};
use std::hash::BuildHasher;

use hashbrown::HashTable;

use serde::Serialize;

use crate::model::{CheckSpec, Instance, InstanceKey, Status};

/// Settings of the mass-eviction guard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardConfig {
    /// Share of TTL instances (0.0–1.0) whose expiry within one window engages the guard.
    pub threshold: f64,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// Below this many TTL instances the guard never engages: with two instances, one crash is
    /// half the fleet, and it must still expire.
    pub min_instances: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            threshold: 0.5,
            window_ms: 60_000,
            min_instances: 5,
        }
    }
}

/// A check's verdict on one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Passing,
    Warning,
    Critical,
}

/// Something the agent should propose to the replicated registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetStatus { key: InstanceKey, status: Status },
    Deregister { key: InstanceKey },
}

impl From<Action> for crate::Command {
    /// The command that carries out a monitor decision through the replicated registry.
    fn from(action: Action) -> Self {
        match action {
            Action::SetStatus { key, status } => crate::Command::SetStatus { key, status },
            Action::Deregister { key } => crate::Command::Deregister(key),
        }
    }
}

/// Why a heartbeat was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
pub enum HeartbeatError {
    #[error("the instance has no health check")]
    NotTracked,
    #[error("the instance's check is not a ttl check; heartbeats renew ttl checks only")]
    NotTtl,
}

/// The guard's state, for `/metrics` and `/api/v1/agent/self`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuardStatus {
    /// True while expiry and deregistration are suspended.
    pub engaged: bool,
    /// TTL instances past their deadline and not yet critical, at the last tick.
    pub overdue: usize,
    /// TTL instances expired within the current window.
    pub recently_expired: usize,
    /// TTL instances tracked that have been seen alive (the guard's base).
    pub ttl_instances: usize,
}

/// The part of a [`CheckSpec`] the monitor needs: its timings and thresholds, not its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rules {
    /// TTL in milliseconds, for TTL checks.
    ttl: Option<u64>,
    /// `deregister_after` in milliseconds.
    deregister_after: Option<u64>,
    success_before_passing: u32,
    failures_before_critical: u32,
}

impl Rules {
    fn of(check: &CheckSpec) -> Self {
        Rules {
            ttl: check.ttl.map(|d| d.as_millis()),
            deregister_after: check.deregister_after.map(|d| d.as_millis()),
            success_before_passing: check.success_before_passing,
            failures_before_critical: check.failures_before_critical,
        }
    }
}

/// A slot in the monitor's slab.
type Slot = u32;

#[derive(Debug, Clone)]
struct Tracked {
    /// The instance's service and id, one after the other in one allocation (the key table
    /// holds only the slot number): for lookups and the actions the monitor returns.
    key: Box<str>,
    /// Where the service name ends and the id begins in `key`.
    split: u32,
    rules: Rules,
    /// The status the monitor believes the registry holds (or will, once its proposal applies).
    status: Status,
    /// For TTL checks: when the next heartbeat is due.
    deadline: u64,
    ok_streak: u32,
    fail_streak: u32,
    /// When the instance turned critical, for `deregister_after`.
    critical_since: Option<u64>,
    /// A deregistration has been asked for; do not ask again.
    deregistering: bool,
    /// Seen alive (heartbeat, TTL status update, passing check) since tracked: only such
    /// instances count toward the mass-eviction guard.
    alive: bool,
}

impl Tracked {
    fn service(&self) -> &str {
        &self.key[..self.split as usize]
    }

    fn id(&self) -> &str {
        &self.key[self.split as usize..]
    }

    fn is(&self, key: &InstanceKey) -> bool {
        self.service() == key.service && self.id() == key.id
    }

    fn instance_key(&self) -> InstanceKey {
        InstanceKey::new(self.service(), self.id())
    }

    /// Whether the instance counts in the guard's base: a TTL instance seen alive.
    fn guarded(&self) -> bool {
        self.rules.ttl.is_some() && self.alive
    }

    /// The instance's entry in the TTL index: TTL instances not yet critical, by deadline.
    fn expiry(&self) -> Option<u64> {
        (self.rules.ttl.is_some() && self.status != Status::Critical).then_some(self.deadline)
    }

    /// The instance's entry in the deregistration index: critical instances with
    /// `deregister_after` not yet asked to go, by when they are due to.
    fn removal(&self) -> Option<u64> {
        let (after, since) = (self.rules.deregister_after?, self.critical_since?);
        (self.status == Status::Critical && !self.deregistering)
            .then_some(since.saturating_add(after))
    }
}

/// The monitor. See the module docs for its rules and layout.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    guard_config: GuardConfig,
    /// Tracked instances; `None` marks a free slot (listed in `free`).
    slots: Vec<Option<Tracked>>,
    /// Free slots, reused before the slab grows.
    free: Vec<Slot>,
    /// Slot of each tracked instance, by a hash of its key (compared with the key in the slot).
    by_key: HashTable<Slot>,
    /// The key hash's seed.
    hasher: RandomState,
    /// `(deadline, slot)` of every TTL instance not yet critical ([`Tracked::expiry`]).
    expiries: BTreeSet<(u64, Slot)>,
    /// `(due, slot)` of every critical instance waiting for `deregister_after`
    /// ([`Tracked::removal`]).
    removals: BTreeSet<(u64, Slot)>,
    /// Tracked TTL instances seen alive, kept as instances come and go (the guard's base).
    ttl_instances: usize,
    /// Times of TTL expiries within the guard window, oldest first.
    recent_expiries: VecDeque<u64>,
    guard: GuardStatus,
}

impl HealthMonitor {
    pub fn new(guard_config: GuardConfig) -> Self {
        HealthMonitor {
            guard_config,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashTable::new(),
            hasher: RandomState::new(),
            expiries: BTreeSet::new(),
            removals: BTreeSet::new(),
            ttl_instances: 0,
            recent_expiries: VecDeque::new(),
            guard: GuardStatus::default(),
        }
    }

    /// Starts (or restarts) tracking an instance that has a check. A registration starts the
    /// TTL deadline, but is not a sign of life: a new instance counts toward the guard only
    /// once it heartbeats or passes a check (a re-registration keeps what was seen).
    pub fn track(&mut self, instance: &Instance, now: u64) {
        self.track_as(instance, now, false);
    }

    /// Tracks an instance inherited from the replicated state (at start-up, or on becoming
    /// leader): seen alive if the registry holds it as not critical, since whoever led before
    /// judged it so.
    pub fn adopt(&mut self, instance: &Instance, now: u64) {
        self.track_as(instance, now, instance.status != Status::Critical);
    }

    fn track_as(&mut self, instance: &Instance, now: u64, alive: bool) {
        let key = instance.key();
        let Some(check) = &instance.check else {
            self.untrack(&key);
            return;
        };
        let rules = Rules::of(check);
        let fresh = |key: Box<str>, split: u32| Tracked {
            key,
            split,
            rules,
            status: instance.status,
            deadline: rules.ttl.map_or(0, |ttl| now.saturating_add(ttl)),
            ok_streak: 0,
            fail_streak: 0,
            critical_since: (instance.status == Status::Critical).then_some(now),
            deregistering: false,
            alive,
        };
        if let Ok(slot) = self.slot(&key) {
            self.update(slot, |t| {
                let seen = t.alive;
                *t = fresh(std::mem::take(&mut t.key), t.split);
                t.alive |= seen;
            });
        } else {
            let split = u32::try_from(key.service.len()).expect("service names are short");
            let joined = [key.service.as_str(), key.id.as_str()].concat();
            let tracked = fresh(joined.into_boxed_str(), split);
            self.ttl_instances += usize::from(tracked.guarded());
            let (expiry, removal) = (tracked.expiry(), tracked.removal());
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot as usize] = Some(tracked);
                    slot
                }
                None => {
                    let slot = Slot::try_from(self.slots.len())
                        .expect("fewer than 2^32 tracked instances");
                    self.slots.push(Some(tracked));
                    slot
                }
            };
            let hash = self.hash(&key.service, &key.id);
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.by_key.insert_unique(hash, slot, |&s| {
                let t = slots[s as usize]
                    .as_ref()
                    .expect("a mapped slot is occupied");
                hasher.hash_one((t.service(), t.id()))
            });
            if let Some(due) = expiry {
                self.expiries.insert((due, slot));
            }
            if let Some(due) = removal {
                self.removals.insert((due, slot));
            }
        }
    }

    pub fn guard_config(&self) -> GuardConfig {
        self.guard_config
    }

    pub fn untrack(&mut self, key: &InstanceKey) {
        let hash = self.hash(&key.service, &key.id);
        let slots = &self.slots;
        let Ok(entry) = self.by_key.find_entry(hash, |&s| {
            slots[s as usize].as_ref().is_some_and(|t| t.is(key))
        }) else {
            return;
        };
        let (slot, _) = entry.remove();
        let t = self.slots[slot as usize]
            .take()
            .expect("a mapped slot is occupied");
        if let Some(due) = t.expiry() {
            self.expiries.remove(&(due, slot));
        }
        if let Some(due) = t.removal() {
            self.removals.remove(&(due, slot));
        }
        self.ttl_instances -= usize::from(t.guarded());
        self.free.push(slot);
    }

    pub fn is_tracked(&self, key: &InstanceKey) -> bool {
        self.slot(key).is_ok()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Runs `f` on the instance in `slot`, keeping both indexes in step with what it changes.
    fn update<R>(&mut self, slot: Slot, f: impl FnOnce(&mut Tracked) -> R) -> R {
        let t = self.slots[slot as usize]
            .as_mut()
            .expect("an indexed slot is occupied");
        let (expiry, removal, guarded) = (t.expiry(), t.removal(), t.guarded());
        let out = f(t);
        self.ttl_instances = self.ttl_instances + usize::from(t.guarded()) - usize::from(guarded);
        if t.expiry() != expiry {
            if let Some(due) = expiry {
                self.expiries.remove(&(due, slot));
            }
            if let Some(due) = t.expiry() {
                self.expiries.insert((due, slot));
            }
        }
        if t.removal() != removal {
            if let Some(due) = removal {
                self.removals.remove(&(due, slot));
            }
            if let Some(due) = t.removal() {
                self.removals.insert((due, slot));
            }
        }
        out
    }

    fn hash(&self, service: &str, id: &str) -> u64 {
        self.hasher.hash_one((service, id))
    }

    fn slot(&self, key: &InstanceKey) -> Result<Slot, HeartbeatError> {
        let hash = self.hash(&key.service, &key.id);
        self.by_key
            .find(hash, |&s| {
                self.slots[s as usize].as_ref().is_some_and(|t| t.is(key))
            })
            .copied()
            .ok_or(HeartbeatError::NotTracked)
    }

    /// Notes a status the registry now holds (e.g. set by a registration), without acting on it.
    pub fn observe_status(&mut self, key: &InstanceKey, status: Status, now: u64) {
        if let Ok(slot) = self.slot(key) {
            self.update(slot, |t| {
                if t.status != status {
                    set_status(t, status, now);
                }
            });
        }
    }

    /// Renews an instance's TTL. A heartbeat is one success for flap damping.
    pub fn heartbeat(
        &mut self,
        key: &InstanceKey,
        now: u64,
    ) -> Result<Option<Action>, HeartbeatError> {
        let slot = self.slot(key)?;
        self.update(slot, |t| {
            let ttl = t.rules.ttl.ok_or(HeartbeatError::NotTtl)?;
            t.deadline = now.saturating_add(ttl);
            t.alive = true;
            Ok(succeed(t, now))
        })
    }

    /// Sets a TTL check's status at once (Consul's `check/warn` and `check/fail`), renewing its
    /// deadline. Passing goes through [`heartbeat`](Self::heartbeat) instead, so flap damping
    /// applies to recoveries.
    pub fn set_ttl_status(
        &mut self,
        key: &InstanceKey,
        status: Status,
        now: u64,
    ) -> Result<Option<Action>, HeartbeatError> {
        if status == Status::Passing {
            return self.heartbeat(key, now);
        }
        let slot = self.slot(key)?;
        self.update(slot, |t| {
            let ttl = t.rules.ttl.ok_or(HeartbeatError::NotTtl)?;
            t.deadline = now.saturating_add(ttl);
            t.alive = true;
            t.ok_streak = 0;
            t.fail_streak = 0;
            Ok((t.status != status).then(|| transition(t, status, now)))
        })
    }

    /// Records the result of an active check run.
    pub fn record(&mut self, key: &InstanceKey, result: CheckResult, now: u64) -> Option<Action> {
        let slot = self.slot(key).ok()?;
        self.update(slot, |t| match result {
            CheckResult::Passing => {
                t.alive = true;
                succeed(t, now)
            }
            CheckResult::Critical => fail(t, now),
            CheckResult::Warning => {
                t.ok_streak = 0;
                t.fail_streak = 0;
                (t.status != Status::Warning).then(|| transition(t, Status::Warning, now))
            }
        })
    }

    /// Gives every TTL instance a fresh deadline: used when this agent starts or becomes leader,
    /// so nothing expires merely because it could not reach the agent meanwhile.
    pub fn restart_deadlines(&mut self, now: u64) {
        self.expiries.clear();
        for (slot, t) in self.slots.iter_mut().enumerate() {
            let Some(t) = t else { continue };
            if let Some(ttl) = t.rules.ttl {
                t.deadline = now.saturating_add(ttl);
            }
            if let Some(due) = t.expiry() {
                self.expiries.insert((due, slot as Slot));
            }
        }
        self.recent_expiries.clear();
    }

    /// The guard's state as of the last [`tick`](Self::tick).
    pub fn guard(&self) -> GuardStatus {
        self.guard
    }

    /// Expires overdue TTL instances and deregisters long-critical ones, unless the mass-eviction
    /// guard holds them back. Call it periodically: its cost grows with what is due, not with
    /// the number of instances.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let window_start = now.saturating_sub(self.guard_config.window_ms);
        while self
            .recent_expiries
            .front()
            .is_some_and(|t| *t <= window_start)
        {
            self.recent_expiries.pop_front();
        }

        let overdue: Vec<(Slot, bool)> = self
            .expiries
            .range(..=(now, Slot::MAX))
            .map(|&(_, slot)| {
                let alive = self.slots[slot as usize].as_ref().is_some_and(|t| t.alive);
                (slot, alive)
            })
            .collect();
        let overdue_alive = overdue.iter().filter(|(_, alive)| *alive).count();
        let ttl_instances = self.ttl_instances;
        let at_risk = overdue_alive + self.recent_expiries.len();
        let engaged = ttl_instances >= self.guard_config.min_instances
            && at_risk as f64 > self.guard_config.threshold * ttl_instances as f64;
        self.guard = GuardStatus {
            engaged,
            overdue: overdue_alive,
            recently_expired: self.recent_expiries.len(),
            ttl_instances,
        };

        let mut actions = Vec::new();
        for (slot, alive) in overdue {
            // The guard holds back only instances it has seen alive.
            if engaged && alive {
                continue;
            }
            let action = self.update(slot, |t| {
                let ttl = t.rules.ttl.expect("only ttl checks are overdue");
                t.deadline = now.saturating_add(ttl);
                fail(t, now)
            });
            if let Some(action) = action {
                if alive {
                    self.recent_expiries.push_back(now);
                }
                actions.push(action);
            }
        }
        if engaged {
            return actions;
        }
        let due: Vec<Slot> = self
            .removals
            .range(..=(now, Slot::MAX))
            .map(|&(_, slot)| slot)
            .collect();
        for slot in due {
            actions.push(self.update(slot, |t| {
                t.deregistering = true;
                Action::Deregister {
                    key: t.instance_key(),
                }
            }));
        }
        actions
    }
}

fn set_status(t: &mut Tracked, status: Status, now: u64) {
    t.status = status;
    t.critical_since = (status == Status::Critical).then_some(now);
    t.deregistering = false;
}

fn transition(t: &mut Tracked, status: Status, now: u64) -> Action {
    set_status(t, status, now);
    Action::SetStatus {
        key: t.instance_key(),
        status,
    }
}

fn succeed(t: &mut Tracked, now: u64) -> Option<Action> {
    t.fail_streak = 0;
    t.ok_streak = t.ok_streak.saturating_add(1);
    (t.status != Status::Passing && t.ok_streak >= t.rules.success_before_passing)
        .then(|| transition(t, Status::Passing, now))
}

fn fail(t: &mut Tracked, now: u64) -> Option<Action> {
    t.ok_streak = 0;
    t.fail_streak = t.fail_streak.saturating_add(1);
    (t.status != Status::Critical && t.fail_streak >= t.rules.failures_before_critical)
        .then(|| transition(t, Status::Critical, now))
}

#[cfg(test)]
mod tests;
