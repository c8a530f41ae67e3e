#![allow(dead_code)] // the reference keeps the old API whole, used or not
//! The monitor as it was before its deadline indexes: every tick walks every tracked instance.
//! Slow, but obviously right; the randomised test runs both side by side.

use std::collections::{BTreeMap, VecDeque};

use crate::health::{Action, CheckResult, GuardConfig, GuardStatus, HeartbeatError};
use crate::model::{CheckSpec, Instance, InstanceKey, Status};

#[derive(Debug, Clone)]
struct Tracked {
    check: CheckSpec,
    /// The status the monitor believes the registry holds (or will, once its proposal applies).
    status: Status,
    /// For TTL checks: when the next heartbeat is due.
    deadline: Option<u64>,
    ok_streak: u32,
    fail_streak: u32,
    /// When the instance turned critical, for `deregister_after`.
    critical_since: Option<u64>,
    /// A deregistration has been asked for; do not ask again.
    deregistering: bool,
    /// Seen alive since tracked: only such instances count toward the guard.
    alive: bool,
}

/// The monitor. See the module docs for its rules.
#[derive(Debug, Clone)]
pub struct Reference {
    guard_config: GuardConfig,
    tracked: BTreeMap<InstanceKey, Tracked>,
    /// Times of TTL expiries within the guard window, oldest first.
    recent_expiries: VecDeque<u64>,
    guard: GuardStatus,
}

impl Reference {
    pub fn new(guard_config: GuardConfig) -> Self {
        Reference {
            guard_config,
            tracked: BTreeMap::new(),
            recent_expiries: VecDeque::new(),
            guard: GuardStatus::default(),
        }
    }

    /// Starts (or restarts) tracking an instance that has a check. A registration counts as a
    /// heartbeat: the TTL deadline starts now.
    pub fn track(&mut self, instance: &Instance, now: u64) {
        self.track_as(instance, now, false);
    }

    /// Tracks an inherited instance: alive unless critical.
    pub fn adopt(&mut self, instance: &Instance, now: u64) {
        self.track_as(instance, now, instance.status != Status::Critical);
    }

    fn track_as(&mut self, instance: &Instance, now: u64, alive: bool) {
        let seen = self.tracked.get(&instance.key()).is_some_and(|t| t.alive);
        let Some(check) = &instance.check else {
            self.untrack(&instance.key());
            return;
        };
        let tracked = Tracked {
            deadline: check.ttl.map(|ttl| now + ttl.as_millis()),
            check: crate::model::CheckSpec::clone(check),
            status: instance.status,
            ok_streak: 0,
            fail_streak: 0,
            critical_since: (instance.status == Status::Critical).then_some(now),
            deregistering: false,
            alive: alive || seen,
        };
        self.tracked.insert(instance.key(), tracked);
    }

    pub fn guard_config(&self) -> GuardConfig {
        self.guard_config
    }

    pub fn untrack(&mut self, key: &InstanceKey) {
        self.tracked.remove(key);
    }

    pub fn is_tracked(&self, key: &InstanceKey) -> bool {
        self.tracked.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// Notes a status the registry now holds (e.g. set by a registration), without acting on it.
    pub fn observe_status(&mut self, key: &InstanceKey, status: Status, now: u64) {
        if let Some(t) = self.tracked.get_mut(key) {
            if t.status != status {
                set_status(t, status, now);
            }
        }
    }

    /// Renews an instance's TTL. A heartbeat is one success for flap damping.
    pub fn heartbeat(
        &mut self,
        key: &InstanceKey,
        now: u64,
    ) -> Result<Option<Action>, HeartbeatError> {
        let t = self
            .tracked
            .get_mut(key)
            .ok_or(HeartbeatError::NotTracked)?;
        let ttl = t.check.ttl.ok_or(HeartbeatError::NotTtl)?;
        t.deadline = Some(now + ttl.as_millis());
        t.alive = true;
        Ok(succeed(key, t, now))
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
        let t = self
            .tracked
            .get_mut(key)
            .ok_or(HeartbeatError::NotTracked)?;
        let ttl = t.check.ttl.ok_or(HeartbeatError::NotTtl)?;
        t.deadline = Some(now + ttl.as_millis());
        t.alive = true;
        t.ok_streak = 0;
        t.fail_streak = 0;
        Ok((t.status != status).then(|| transition(key, t, status, now)))
    }

    /// Records the result of an active check run.
    pub fn record(&mut self, key: &InstanceKey, result: CheckResult, now: u64) -> Option<Action> {
        let t = self.tracked.get_mut(key)?;
        match result {
            CheckResult::Passing => {
                t.alive = true;
                succeed(key, t, now)
            }
            CheckResult::Critical => fail(key, t, now),
            CheckResult::Warning => {
                t.ok_streak = 0;
                t.fail_streak = 0;
                (t.status != Status::Warning).then(|| transition(key, t, Status::Warning, now))
            }
        }
    }

    /// Gives every TTL instance a fresh deadline: used when this agent starts or becomes leader,
    /// so nothing expires merely because it could not reach the agent meanwhile.
    pub fn restart_deadlines(&mut self, now: u64) {
        for t in self.tracked.values_mut() {
            if let Some(ttl) = t.check.ttl {
                t.deadline = Some(now + ttl.as_millis());
            }
        }
        self.recent_expiries.clear();
    }

    /// The guard's state as of the last [`tick`](Self::tick).
    pub fn guard(&self) -> GuardStatus {
        self.guard
    }

    /// Expires overdue TTL instances and deregisters long-critical ones, unless the mass-eviction
    /// guard holds them back. Call it periodically.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let window_start = now.saturating_sub(self.guard_config.window_ms);
        while self
            .recent_expiries
            .front()
            .is_some_and(|t| *t <= window_start)
        {
            self.recent_expiries.pop_front();
        }

        let mut ttl_instances = 0;
        let mut overdue = Vec::new();
        for (key, t) in &self.tracked {
            if t.check.ttl.is_none() {
                continue;
            }
            ttl_instances += usize::from(t.alive);
            if t.status != Status::Critical && t.deadline.is_some_and(|d| d <= now) {
                overdue.push((key.clone(), t.alive));
            }
        }
        let overdue_alive = overdue.iter().filter(|(_, a)| *a).count();
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
        for (key, alive) in overdue {
            if engaged && alive {
                continue;
            }
            let t = self.tracked.get_mut(&key).expect("collected above");
            let ttl = t.check.ttl.expect("only ttl checks are overdue");
            t.deadline = Some(now + ttl.as_millis());
            if let Some(action) = fail(&key, t, now) {
                if alive {
                    self.recent_expiries.push_back(now);
                }
                actions.push(action);
            }
        }
        if engaged {
            return actions;
        }
        for (key, t) in &mut self.tracked {
            let (Some(after), Some(since)) = (t.check.deregister_after, t.critical_since) else {
                continue;
            };
            if t.status == Status::Critical
                && !t.deregistering
                && now.saturating_sub(since) >= after.as_millis()
            {
                t.deregistering = true;
                actions.push(Action::Deregister { key: key.clone() });
            }
        }
        actions
    }
}

fn set_status(t: &mut Tracked, status: Status, now: u64) {
    t.status = status;
    t.critical_since = (status == Status::Critical).then_some(now);
    t.deregistering = false;
}

fn transition(key: &InstanceKey, t: &mut Tracked, status: Status, now: u64) -> Action {
    set_status(t, status, now);
    Action::SetStatus {
        key: key.clone(),
        status,
    }
}

fn succeed(key: &InstanceKey, t: &mut Tracked, now: u64) -> Option<Action> {
    t.fail_streak = 0;
    t.ok_streak = t.ok_streak.saturating_add(1);
    (t.status != Status::Passing && t.ok_streak >= t.check.success_before_passing)
        .then(|| transition(key, t, Status::Passing, now))
}

fn fail(key: &InstanceKey, t: &mut Tracked, now: u64) -> Option<Action> {
    t.ok_streak = 0;
    t.fail_streak = t.fail_streak.saturating_add(1);
    (t.status != Status::Critical && t.fail_streak >= t.check.failures_before_critical)
        .then(|| transition(key, t, Status::Critical, now))
}
