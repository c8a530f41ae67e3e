//! The health checker: the IO around [`signpost_core::health::HealthMonitor`].
//!
//! It runs only while this agent leads the Raft group. On taking the lead it rebuilds the monitor
//! from the registry with fresh TTL deadlines (grace), then follows registry changes, runs active
//! checks ([`probe`]), ticks the monitor, and proposes the status transitions and deregistrations
//! it decides. Heartbeats touch only memory.

pub mod probe;
pub mod targets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::ServerState;
use signpost_core::health::{Action, GuardConfig, GuardStatus, HealthMonitor, HeartbeatError};
use signpost_core::model::CheckKind;
use signpost_core::{CheckSpec, EventKind, Instance, InstanceKey};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::service::{self, Notice};

struct ActiveCheck {
    spec: CheckSpec,
    task: AbortHandle,
}

/// Shared handle to the health checker.
pub struct HealthService {
    monitor: Mutex<HealthMonitor>,
    /// Origin of the monitor's monotonic millisecond clock.
    base: Instant,
    tick: Duration,
    /// Running active checks, by instance.
    checks: Mutex<HashMap<InstanceKey, ActiveCheck>>,
    /// The probes' HTTP clients, made from the agent's `[health]` settings by the first check.
    clients: std::sync::OnceLock<probe::Clients>,
    stop: watch::Sender<bool>,
    /// The agent's background tasks: the checker's loop, its checks and its proposals are
    /// among them, so shutdown waits for them.
    tasks: TaskTracker,
}

impl HealthService {
    /// A checker whose tasks `tasks` tracks.
    pub fn new(guard: GuardConfig, tick: Duration, tasks: TaskTracker) -> Arc<Self> {
        signpost_tls::install_default_provider();
        Arc::new(HealthService {
            monitor: Mutex::new(HealthMonitor::new(guard)),
            base: Instant::now(),
            tick,
            checks: Mutex::new(HashMap::new()),
            clients: std::sync::OnceLock::new(),
            stop: watch::channel(false).0,
            tasks,
        })
    }

    /// The monitor's clock: monotonic milliseconds (follows `tokio::time::pause` in tests).
    pub fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn monitor(&self) -> MutexGuard<'_, HealthMonitor> {
        self.monitor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checks(&self) -> MutexGuard<'_, HashMap<InstanceKey, ActiveCheck>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mass-eviction guard's state as of the last tick.
    pub fn guard(&self) -> GuardStatus {
        self.monitor().guard()
    }

    /// Renews `instance`'s TTL. Returns the transition to propose, if the heartbeat ends an
    /// outage.
    pub fn heartbeat(&self, instance: &Instance) -> Result<Option<Action>, HeartbeatError> {
        let now = self.now();
        let mut monitor = self.monitor();
        let key = instance.key();
        // A heartbeat can overtake the registration's event on its way to the sync loop.
        if !monitor.is_tracked(&key) && instance.check.as_ref().is_some_and(|c| c.is_ttl()) {
            monitor.track(instance, now);
        }
        monitor.heartbeat(&key, now)
    }

    /// Sets a TTL check's status directly (Consul's `check/pass|warn|fail|update`).
    pub fn set_ttl_status(
        &self,
        instance: &Instance,
        status: signpost_core::Status,
    ) -> Result<Option<Action>, HeartbeatError> {
        self.set_ttl_status_of(&instance.key(), instance, status)
    }

    /// [`set_ttl_status`](Self::set_ttl_status) for a caller that already holds `instance`'s
    /// key: the heartbeat path, which allocates nothing it need not.
    pub fn set_ttl_status_of(
        &self,
        key: &InstanceKey,
        instance: &Instance,
        status: signpost_core::Status,
    ) -> Result<Option<Action>, HeartbeatError> {
        let now = self.now();
        let mut monitor = self.monitor();
        if !monitor.is_tracked(key) && instance.check.as_ref().is_some_and(|c| c.is_ttl()) {
            monitor.track(instance, now);
        }
        monitor.set_ttl_status(key, status, now)
    }

    /// Stops the checker and every active check.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        self.stop_all_checks();
    }

    /// Starts the checker's main loop.
    pub(crate) fn spawn(self: &Arc<Self>, agent: std::sync::Weak<Agent>) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut stop = this.stop.subscribe();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = this.run(agent) => {}
            }
            this.stop_all_checks();
        });
    }

    async fn run(self: &Arc<Self>, agent: std::sync::Weak<Agent>) {
        let Some(mut metrics) = agent.upgrade().map(|a| a.raft().metrics()) else {
            return;
        };
        loop {
            if metrics
                .wait_for(|m| m.state == ServerState::Leader)
                .await
                .is_err()
            {
                return;
            }
            let Some(agent) = agent.upgrade() else { return };
            tracing::info!("leading: health checking starts with fresh ttl deadlines");
            self.lead(&agent, &mut metrics).await;
            tracing::info!("no longer leading: health checking stops");
            {
                let mut monitor = self.monitor();
                *monitor = HealthMonitor::new(monitor.guard_config());
            }
            self.stop_all_checks();
        }
    }

    /// Runs while this node leads.
    async fn lead(
        self: &Arc<Self>,
        agent: &Arc<Agent>,
        metrics: &mut watch::Receiver<crate::raft::RaftMetrics>,
    ) {
        let mut events = service::subscribe_all(agent);
        self.rebuild(agent);
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut guard_was = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let (actions, guard) = {
                        let mut m = self.monitor();
                        let actions = m.tick(self.now());
                        (actions, m.guard())
                    };
                    if guard.engaged != guard_was {
                        if guard.engaged {
                            tracing::warn!(
                                overdue = guard.overdue,
                                recently_expired = guard.recently_expired,
                                ttl_instances = guard.ttl_instances,
                                "mass-eviction guard engaged: too many instances missed their heartbeats at once; expiry is suspended"
                            );
                        } else {
                            tracing::info!("mass-eviction guard released: heartbeats recovered, expiry resumes");
                        }
                        guard_was = guard.engaged;
                    }
                    for action in actions {
                        propose(agent, action);
                    }
                }
                notice = events.recv() => match notice {
                    Ok(Notice::Change(change)) => self.on_event(agent, &change.kind),
                    Ok(Notice::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.rebuild(agent)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = metrics.changed() => {
                    if changed.is_err() || metrics.borrow().state != ServerState::Leader {
                        return;
                    }
                }
            }
        }
    }

    /// Re-reads every instance with a check from the registry, with fresh deadlines.
    fn rebuild(self: &Arc<Self>, agent: &Arc<Agent>) {
        let instances = service::checked_instances(agent);
        let now = self.now();
        {
            let mut monitor = self.monitor();
            *monitor = HealthMonitor::new(monitor.guard_config());
            for i in &instances {
                monitor.adopt(i, now);
            }
        }
        self.stop_all_checks();
        for i in &instances {
            self.sync_check(agent, i);
        }
    }

    fn on_event(self: &Arc<Self>, agent: &Arc<Agent>, kind: &EventKind) {
        let now = self.now();
        match kind {
            EventKind::Added(i) | EventKind::Replaced(i) => {
                self.monitor().track(i, now);
                self.sync_check(agent, i);
            }
            EventKind::StatusChanged(i) => self.monitor().observe_status(&i.key(), i.status, now),
            EventKind::Removed(i) => {
                let key = i.key();
                self.monitor().untrack(&key);
                if let Some(c) = self.checks().remove(&key) {
                    c.task.abort();
                }
            }
            EventKind::DefinitionChanged => {}
        }
    }

    /// Starts, restarts or stops `instance`'s active check to match its spec.
    fn sync_check(self: &Arc<Self>, agent: &Arc<Agent>, instance: &Instance) {
        let key = instance.key();
        let active = instance
            .check
            .as_ref()
            .filter(|c| !matches!(c.kind(), Some(CheckKind::Ttl(_)) | None));
        let mut checks = self.checks();
        match active {
            None => {
                if let Some(c) = checks.remove(&key) {
                    c.task.abort();
                }
            }
            Some(spec) => {
                if checks.get(&key).is_some_and(|c| c.spec == **spec) {
                    return;
                }
                let health = &agent.config().health;
                let policy = health.check_policy();
                if self.clients.get().is_none() {
                    match probe::Clients::new(&policy, health.ca_file.as_deref()) {
                        Ok(clients) => {
                            let _ = self.clients.set(clients);
                        }
                        // Validated at start (`AgentConfig::validate`): only a file changed
                        // since ends here; the check is tried again at the next change.
                        Err(e) => {
                            tracing::error!("cannot build the health checks' clients: {e}");
                            return;
                        }
                    }
                }
                let task = self
                    .tasks
                    .spawn(run_check(
                        self.clone(),
                        Arc::downgrade(agent),
                        key.clone(),
                        probe::Prober::new(CheckSpec::clone(spec), policy),
                    ))
                    .abort_handle();
                if let Some(old) = checks.insert(
                    key,
                    ActiveCheck {
                        spec: CheckSpec::clone(spec),
                        task,
                    },
                ) {
                    old.task.abort();
                }
            }
        }
    }

    fn stop_all_checks(&self) {
        for (_, c) in self.checks().drain() {
            c.task.abort();
        }
    }

    /// Number of active checks running, for metrics.
    pub fn active_checks(&self) -> usize {
        self.checks().len()
    }
}

/// Runs one instance's active check every interval, feeding results to the monitor.
async fn run_check(
    health: Arc<HealthService>,
    agent: std::sync::Weak<Agent>,
    key: InstanceKey,
    mut prober: probe::Prober,
) {
    let mut interval = tokio::time::interval(prober.spec().interval().to_std());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Some(clients) = health.clients.get().cloned() else {
        return;
    };
    loop {
        interval.tick().await;
        let result = prober.run(&clients).await;
        let action = health.monitor().record(&key, result, health.now());
        if let (Some(action), Some(agent)) = (action, agent.upgrade()) {
            propose(&agent, action);
        }
    }
}

/// Applies a monitor decision through the service layer (Raft), in the background.
fn propose(agent: &Arc<Agent>, action: Action) {
    let agent = agent.clone();
    agent.health().tasks.clone().spawn(async move {
        if let Err(e) = service::decide(&agent, action.clone()).await {
            tracing::warn!(?action, "health transition not applied: {e}");
        }
    });
}
