//! The service layer: the typed operations every face of the agent calls (native HTTP, Consul
//! HTTP, the cluster routes), between them and the Raft/store machinery.
//!
//! One function per operation: `register`, `deregister`, `renew`, `define`, the reads and their
//! blocking waits, `subscribe` (watches), `kv_*` ([`kv`]), `members`/`join`/`remove`, the
//! DNS face's read of the whole registry (`with_registry`), and the health checker's
//! `subscribe_all`, `checked_instances` and `decide`. Each
//! returns [`ServiceError`], which each face maps to its statuses in one place (`ApiError`'s
//! `From<ServiceError>`). Authorization, audit and limits belong here: one place decides for
//! every face.
//!
//! Reads that render many instances take a closure over the borrowed state, so the hot listing
//! path serialises in place instead of copying instances out.

pub mod acl;
pub mod kv;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signpost_core::health::{Action, HeartbeatError};
use signpost_core::model::NewInstance;
use signpost_core::registry::{ServiceSummary, StatusCounts};
use signpost_core::validate::ValidationError;
use signpost_core::{
    Command, Instance, InstanceKey, Lifecycle, Response, ServiceDefinition, Status,
};
use tokio::sync::broadcast;

pub use self::acl::{authorize, Caller};
use crate::agent::{Agent, ProposeError};
use crate::cluster::{ClusterError, JoinRequest, Members, RemoveRequest};
pub use crate::store::{Change, Notice};
use signpost_core::acl::{Access, AclRefusal, Resource};

/// Why an operation was refused or failed. Serialisable: a leader's answer to a forwarded
/// renewal carries it across `/raft/ttl` intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ServiceError {
    /// The input is invalid; the error names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The instance does not exist.
    #[error("instance {0} is not registered")]
    NotRegistered(InstanceKey),
    /// The instance has no health check, so nothing to renew.
    #[error("instance {0} has no ttl check to renew")]
    NotTracked(InstanceKey),
    /// The instance is checked actively, not by TTL.
    #[error("instance {0} is checked actively by the agent; only ttl checks take heartbeats")]
    NotTtl(InstanceKey),
    /// The service has no definition.
    #[error("service {0} has no definition")]
    NoDefinition(String),
    /// The KV key does not exist.
    #[error("key {0:?} not found")]
    NoKey(String),
    /// A KV value is larger than the store accepts.
    #[error("value is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A health check would reach an address `[health]` refuses.
    #[error(transparent)]
    CheckTarget(#[from] crate::health::targets::TargetRefused),
    /// The cluster could not do it (no leader, leader unreachable, not a member, ...).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The write was not applied.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The caller's token lacks the right the operation needs; nothing changed.
    #[error("permission denied: token lacks {right}{}", .name.as_ref().map(|n| format!(" on {n:?}")).unwrap_or_default())]
    PermissionDenied {
        /// The right, as `resource:access` (`service:write`).
        right: String,
        /// What it was needed on (none for `operator` and `acl`).
        name: Option<String>,
    },
    /// The request's token is unknown or has expired.
    #[error("ACL not found")]
    AclNotFound,
    /// An ACL endpoint was called while ACLs are off.
    #[error("ACL support disabled")]
    AclDisabled,
    /// An ACL write was refused (bootstrap done, unknown policy, invalid rules, ...).
    #[error(transparent)]
    Acl(#[from] AclRefusal),
    /// The registry answered a command with a response of another command: a bug.
    #[error("the registry answered {command} with {response}")]
    Unexpected {
        /// The command's kind.
        command: String,
        /// What came back.
        response: String,
    },
    /// The state machine refused the write: it would cross one of the `[limits]` (a 429 that
    /// names the limit); nothing changed.
    #[error("{message}")]
    Limit {
        /// The limit's name, `limits.<key>`.
        limit: String,
        /// What was refused, with the limit's value.
        message: String,
    },
    /// One write is larger than `limits.max_entry_bytes` (a 413); nothing was proposed.
    #[error("the write is {size} bytes, more than limits.max_entry_bytes ({limit})")]
    EntryTooLarge {
        /// The write's encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl From<signpost_core::limits::Refusal> for ServiceError {
    fn from(r: signpost_core::limits::Refusal) -> Self {
        match r {
            signpost_core::limits::Refusal::Invalid { field, message } => {
                ServiceError::Invalid(ValidationError::new(field, message))
            }
            signpost_core::limits::Refusal::Limit { limit, message } => {
                ServiceError::Limit { limit, message }
            }
        }
    }
}

/// What a service operation returns.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// An instance after a registration, and whether it is new.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The instance as stored (the registry's own, shared).
    pub instance: Arc<Instance>,
    /// True if it did not exist before.
    pub created: bool,
}

/// A service definition after a write, and whether it is new.
#[derive(Debug, Clone)]
pub struct Defined {
    /// The definition as stored.
    pub definition: ServiceDefinition,
    /// True if the service had none before.
    pub created: bool,
}

/// An instance's TTL state after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// Its status after the renewal.
    pub status: Status,
    /// Its modify index after the renewal.
    pub index: u64,
}

impl Renewal {
    fn of(instance: &Instance) -> Self {
        Renewal {
            status: instance.status,
            index: instance.modify_index,
        }
    }
}

/// A TTL update handed to the leader (`/raft/ttl`): a heartbeat (`passing`) or Consul's
/// warn/fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TtlRequest {
    /// The instance.
    pub key: InstanceKey,
    /// The status to set.
    pub status: Status,
}

/// Proposes `command` and hands its response to `expect`, which returns what the command's
/// caller wants or gives the response back if it is not one `command` can answer.
async fn apply<T>(
    agent: &Agent,
    command: Command,
    expect: impl FnOnce(Response) -> std::result::Result<T, Box<Response>>,
) -> Result<T> {
    let kind = command_kind(&command);
    let limit = agent.config().limits.max_entry_bytes;
    // Encoded once, here in the request's task; the log stores these very bytes.
    let command = crate::raft::EncodedCommand::new(command)
        .map_err(|e| ServiceError::Propose(ProposeError::Fatal(e.to_string())))?;
    let size = command.len();
    if size > limit {
        return Err(ServiceError::EntryTooLarge { size, limit });
    }
    let response = agent.propose_encoded(command).await?;
    if let Response::Refused(refusal) = response {
        return Err(refusal.into());
    }
    expect(response).map_err(|response| ServiceError::Unexpected {
        command: kind.to_string(),
        response: format!("{response:?}"),
    })
}

fn command_kind(command: &Command) -> &'static str {
    match command {
        Command::Register(_) => "register",
        Command::Deregister(_) => "deregister",
        Command::SetStatus { .. } => "set status",
        Command::PutDefinition(_) => "put definition",
        Command::DeleteDefinition { .. } => "delete definition",
        Command::KvSet { .. } => "kv set",
        Command::KvDelete { .. } => "kv delete",
        Command::Batch(_) => "batch",
        Command::Acl(_) => "acl",
        Command::SetMaintenance { .. } => "set maintenance",
        Command::SetLifecycle { .. } => "set lifecycle",
    }
}

// ---- writes -------------------------------------------------------------------------------

/// Registers (or replaces) an instance: `service:write` on its service.
pub async fn register(agent: &Agent, caller: &Caller, new: NewInstance) -> Result<Registered> {
    authorize(caller, Resource::Service, &new.service, Access::Write)?;
    crate::health::targets::admit(agent, new.check.as_ref()).await?;
    apply(agent, Command::Register(new), |r| match r {
        Response::Registered { instance, created } => Ok(Registered { instance, created }),
        other => Err(Box::new(other)),
    })
    .await
}

/// Deregisters an instance (`service:write`); returns its service's index afterwards.
pub async fn deregister(agent: &Agent, caller: &Caller, key: &InstanceKey) -> Result<u64> {
    authorize(caller, Resource::Service, &key.service, Access::Write)?;
    if read(agent, |r| r.instance(&key.service, &key.id).is_none()) {
        return Err(ServiceError::NotRegistered(key.clone()));
    }
    apply(agent, Command::Deregister(key.clone()), |r| match r {
        Response::Deregistered(_) => Ok(true),
        Response::NotFound => Ok(false),
        other => Err(Box::new(other)),
    })
    .await?
    .then(|| service_index(agent, &key.service))
    .ok_or_else(|| ServiceError::NotRegistered(key.clone()))
}

/// Renews `key`'s TTL with `status` (`passing` for a heartbeat, or Consul's warn/fail); returns
/// its status and modify index after. The one renewal path: on a follower it is forwarded to
/// the leader (`/raft/ttl`), whose health checker holds the deadlines; on the leader
/// [`renew_here`] runs it. Needs `service:write`, checked here (a forwarded renewal was
/// checked by the member that received it).
pub async fn renew(
    agent: &Agent,
    caller: &Caller,
    key: &InstanceKey,
    status: Status,
) -> Result<Renewal> {
    authorize(caller, Resource::Service, &key.service, Access::Write)?;
    if !agent.is_leader() {
        let req = TtlRequest {
            key: key.clone(),
            status,
        };
        return agent
            .cluster()
            .to_leader::<_, Result<Renewal>>("/raft/ttl", &req)
            .await?;
    }
    renew_here(agent, key, status).await
}

/// Renewals of one batch in flight at once on the leader.
const RENEW_CONCURRENCY: usize = 64;

/// Renews many instances at once (a heartbeat batch): one result per key, in order. On a
/// follower the batch travels to the leader as one call (`/raft/ttl_batch`), not one per key;
/// if that call fails (no leader, leader unreachable) every key carries the failure, since
/// none was renewed.
pub async fn renew_many(
    agent: &Agent,
    caller: &Caller,
    keys: Vec<InstanceKey>,
    status: Status,
) -> Vec<Result<Renewal>> {
    let mut results: Vec<Option<Result<Renewal>>> = Vec::with_capacity(keys.len());
    let mut allowed = Vec::with_capacity(keys.len());
    for key in keys {
        match authorize(caller, Resource::Service, &key.service, Access::Write) {
            Ok(()) => {
                results.push(None);
                allowed.push(key);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let renewed: Vec<Result<Renewal>> = if allowed.is_empty() {
        Vec::new()
    } else if !agent.is_leader() {
        let req = TtlBatchRequest {
            keys: allowed,
            status,
        };
        let n = req.keys.len();
        match agent
            .cluster()
            .to_leader::<_, Vec<Result<Renewal>>>("/raft/ttl_batch", &req)
            .await
        {
            Ok(answers) if answers.len() == n => answers,
            Ok(answers) => {
                let e = ServiceError::Unexpected {
                    command: "renew batch".to_string(),
                    response: format!("{} renewals for {n} keys", answers.len()),
                };
                vec![Err(e); n]
            }
            Err(e) => vec![Err(ServiceError::Cluster(e)); n],
        }
    } else {
        use futures::StreamExt;
        futures::stream::iter(allowed)
            .map(|key| async move { renew_here(agent, &key, status).await })
            .buffered(RENEW_CONCURRENCY)
            .collect()
            .await
    };
    let mut renewed = renewed.into_iter();
    results
        .into_iter()
        .map(|r| {
            r.or_else(|| renewed.next())
                .expect("one renewal per allowed key")
        })
        .collect()
}

/// A heartbeat batch forwarded by a follower to the leader (`/raft/ttl_batch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TtlBatchRequest {
    /// The instances to renew.
    pub keys: Vec<InstanceKey>,
    /// The status each renewal reports.
    pub status: Status,
}

/// The leader's side of [`renew`]: the instance is read in place, never copied (the hot path of
/// every heartbeat). A renewal that makes the monitor decide something (a recovery, or any
/// other action) goes through Raft before the answer.
pub async fn renew_here(agent: &Agent, key: &InstanceKey, status: Status) -> Result<Renewal> {
    let action = {
        let state = agent.store().read();
        let instance = state
            .registry
            .instance(&key.service, &key.id)
            .ok_or_else(|| ServiceError::NotRegistered(key.clone()))?;
        match agent.health().set_ttl_status_of(key, instance, status) {
            Ok(Some(action)) => action,
            Ok(None) => return Ok(Renewal::of(instance)),
            Err(HeartbeatError::NotTracked) => return Err(ServiceError::NotTracked(key.clone())),
            Err(HeartbeatError::NotTtl) => return Err(ServiceError::NotTtl(key.clone())),
        }
    };
    let response = agent.propose(Command::from(action)).await?;
    renewal_outcome(key, response, || {
        read(agent, |r| {
            r.instance(&key.service, &key.id).map(Renewal::of)
        })
    })
}

/// What a renewal answers once the action it caused has been applied: the updated instance,
/// or "not registered" when the action removed it (or it was gone already); `now` reads the
/// instance when the action changed nothing.
fn renewal_outcome(
    key: &InstanceKey,
    response: Response,
    now: impl FnOnce() -> Option<Renewal>,
) -> Result<Renewal> {
    match response {
        Response::StatusSet(updated) => Ok(Renewal::of(&updated)),
        Response::Deregistered(_) | Response::NotFound => {
            Err(ServiceError::NotRegistered(key.clone()))
        }
        _ => now().ok_or_else(|| ServiceError::NotRegistered(key.clone())),
    }
}

/// Puts `key` into maintenance (`enable`, with an optional reason) or takes it out
/// (`service:write`): it stays registered but leaves discovery meanwhile. Returns the instance
/// after the change (as it was, if it changed nothing).
pub async fn set_maintenance(
    agent: &Agent,
    caller: &Caller,
    key: &InstanceKey,
    enable: bool,
    reason: Option<String>,
) -> Result<Instance> {
    let command = Command::SetMaintenance {
        key: key.clone(),
        enable,
        reason,
    };
    update_instance(agent, caller, key, command).await
}

/// Records the lifecycle state `key` announces (`service:write`): only `up` instances are
/// discovered. Returns the instance after the change.
pub async fn set_lifecycle(
    agent: &Agent,
    caller: &Caller,
    key: &InstanceKey,
    state: Lifecycle,
) -> Result<Instance> {
    let command = Command::SetLifecycle {
        key: key.clone(),
        state,
    };
    update_instance(agent, caller, key, command).await
}

/// Proposes a command that changes one instance in place; `NotRegistered` if it is unknown.
async fn update_instance(
    agent: &Agent,
    caller: &Caller,
    key: &InstanceKey,
    command: Command,
) -> Result<Instance> {
    authorize(caller, Resource::Service, &key.service, Access::Write)?;
    if read(agent, |r| r.instance(&key.service, &key.id).is_none()) {
        return Err(ServiceError::NotRegistered(key.clone()));
    }
    let updated = apply(agent, command, |r| match r {
        Response::InstanceUpdated(i) => Ok(Some(i)),
        Response::Unchanged | Response::NotFound => Ok(None),
        other => Err(Box::new(other)),
    })
    .await?;
    match updated {
        Some(i) => Ok(Arc::unwrap_or_clone(i)),
        None => read(agent, |r| r.instance(&key.service, &key.id).cloned())
            .ok_or_else(|| ServiceError::NotRegistered(key.clone())),
    }
}

/// Puts a service definition (`service:write`).
pub async fn define(
    agent: &Agent,
    caller: &Caller,
    definition: ServiceDefinition,
) -> Result<Defined> {
    authorize(caller, Resource::Service, &definition.name, Access::Write)?;
    apply(agent, Command::PutDefinition(definition), |r| match r {
        Response::DefinitionPut {
            definition,
            created,
        } => Ok(Defined {
            definition,
            created,
        }),
        other => Err(Box::new(other)),
    })
    .await
}

/// Deletes a service definition (`service:write`); returns the service's index afterwards.
pub async fn undefine(agent: &Agent, caller: &Caller, service: &str) -> Result<u64> {
    authorize(caller, Resource::Service, service, Access::Write)?;
    let command = Command::DeleteDefinition {
        service: service.to_string(),
    };
    apply(agent, command, |r| match r {
        Response::DefinitionDeleted => Ok(true),
        Response::NotFound => Ok(false),
        other => Err(Box::new(other)),
    })
    .await?
    .then(|| service_index(agent, service))
    .ok_or_else(|| ServiceError::NoDefinition(service.to_string()))
}

// ---- reads --------------------------------------------------------------------------------

/// Per-service watch channels the agent holds: only for services someone waits on or watches
/// (tests check that blocking queries on invented names leave none behind).
pub fn watch_channels(agent: &Agent) -> usize {
    agent.store().channel_count()
}

/// Runs `f` over the registry as this node has applied it.
fn read<T>(agent: &Agent, f: impl FnOnce(&signpost_core::Registry) -> T) -> T {
    f(&agent.store().read().registry)
}

/// Runs `f` over the whole registry, borrowed in place, with the test of which services
/// `caller` may see: for the DNS face, whose pure resolver answers any name from it.
pub fn with_registry<T>(
    agent: &Agent,
    caller: &Caller,
    f: impl FnOnce(&signpost_core::Registry, &dyn Fn(&str) -> bool) -> T,
) -> T {
    read(agent, |r| {
        f(r, &|service: &str| caller.sees_service(service))
    })
}

/// Every service the caller may see (`service:read`) with its index and status counts, and the
/// catalog index (that of the last change to any service, which [`wait_for_catalog`] waits on).
pub fn services(agent: &Agent, caller: &Caller) -> (u64, Vec<ServiceSummary>) {
    let (index, mut list) = read(agent, |r| (r.catalog_index(), r.services()));
    if !caller.unrestricted_caller() {
        list.retain(|s| caller.sees_service(&s.name));
    }
    (index, list)
}

/// One instance (`service:read`).
pub fn instance(agent: &Agent, caller: &Caller, key: &InstanceKey) -> Result<Instance> {
    authorize(caller, Resource::Service, &key.service, Access::Read)?;
    read(agent, |r| r.instance(&key.service, &key.id).cloned())
        .ok_or_else(|| ServiceError::NotRegistered(key.clone()))
}

/// Whether a listing shows `service` to `caller` (`service:read`); a listing it may not see is
/// answered empty (and marked filtered), not refused.
pub fn visible(caller: &Caller, service: &str) -> bool {
    caller.allows(Resource::Service, service, Access::Read)
}

/// Runs `f` with `service`'s index and its instances (in id order), borrowed in place; none if
/// the caller may not see the service (a filtered listing, not a refusal).
pub fn with_instances<T>(
    agent: &Agent,
    caller: &Caller,
    service: &str,
    f: impl FnOnce(u64, &mut dyn Iterator<Item = &Instance>) -> T,
) -> T {
    let visible = caller.sees_service(service);
    read(agent, |r| {
        let index = r.service_index(service);
        if visible {
            f(index, &mut r.instances(service))
        } else {
            f(index, &mut std::iter::empty())
        }
    })
}

/// Runs `f` with the catalog index and every instance of every service the caller may see,
/// borrowed in place.
pub fn with_catalog<T>(
    agent: &Agent,
    caller: &Caller,
    f: impl FnOnce(u64, &mut dyn Iterator<Item = &Instance>) -> T,
) -> T {
    read(agent, |r| {
        if caller.unrestricted_caller() {
            f(r.catalog_index(), &mut r.all_instances())
        } else {
            f(
                r.catalog_index(),
                &mut r
                    .all_instances()
                    .filter(|i| caller.sees_service(&i.service)),
            )
        }
    })
}

/// The catalog index and a copy of every instance the caller may see that `keep` keeps, in
/// (service, id) order: for catalog-wide reads, which copy under the state's lock and render
/// outside it (rendering there would hold back the apply path).
pub fn catalog_copy(
    agent: &Agent,
    caller: &Caller,
    keep: impl Fn(&Instance) -> bool,
) -> (u64, Vec<Instance>) {
    with_catalog(agent, caller, |index, instances| {
        (index, instances.filter(|i| keep(i)).cloned().collect())
    })
}

/// The instance with id `id` (Consul's service id), of the first service in name order that
/// has one: a lookup, not a scan. Found as the agent itself: the operation that follows
/// decides whether the caller may touch it.
pub fn instance_by_id(agent: &Agent, id: &str) -> Option<Instance> {
    agent.store().with_lookup(|state, lookup| {
        lookup
            .by_instance_id(&state.registry, id)
            .first()
            .map(|i| (*i).clone())
    })
}

/// The instance whose check has id `check_id`, of the first service in name order that has
/// one: a lookup, not a scan (as [`instance_by_id`]).
pub fn instance_by_check(agent: &Agent, check_id: &str) -> Option<Instance> {
    key_by_check(agent, check_id, |i| i.clone())
}

/// What `f` takes from the instance whose check has id `check_id` (as [`instance_by_check`]);
/// Consul's TTL updates take only its key.
pub fn key_by_check<T>(agent: &Agent, check_id: &str, f: impl FnOnce(&Instance) -> T) -> Option<T> {
    agent.store().with_lookup(|state, lookup| {
        lookup
            .by_check_id(&state.registry, check_id)
            .first()
            .map(|i| f(i))
    })
}

/// A service's definition (`service:read`).
pub fn definition(agent: &Agent, caller: &Caller, service: &str) -> Result<ServiceDefinition> {
    authorize(caller, Resource::Service, service, Access::Read)?;
    read(agent, |r| r.definition(service).cloned())
        .ok_or_else(|| ServiceError::NoDefinition(service.to_string()))
}

/// Whether `caller` may read this agent's own information (`agent:read` on its node name):
/// `/v1/agent/self`, `/api/v1/agent/self`, `/metrics`.
pub fn authorize_agent_read(agent: &Agent, caller: &Caller) -> Result<()> {
    authorize(
        caller,
        Resource::Agent,
        &agent.config().node_name(),
        Access::Read,
    )
}

/// A service's index (that of its last change).
pub fn service_index(agent: &Agent, service: &str) -> u64 {
    read(agent, |r| r.service_index(service))
}

/// The index of the last change to any service.
pub fn catalog_index(agent: &Agent) -> u64 {
    read(agent, |r| r.catalog_index())
}

/// The index of the last change to anything.
pub fn last_index(agent: &Agent) -> u64 {
    read(agent, |r| r.last_index())
}

/// Instances by status.
pub fn status_counts(agent: &Agent) -> StatusCounts {
    read(agent, |r| r.status_counts())
}

/// Makes the next read linearizable (the leader's read index).
pub async fn linearize(agent: &Agent) -> Result<()> {
    Ok(agent.cluster().linearize().await?)
}

/// Waits until `service`'s index exceeds `index`, `wait` passes or the agent shuts down.
pub async fn wait_for_service(agent: &Agent, service: &str, index: u64, wait: Duration) {
    tokio::select! {
        _ = agent.store().wait_for_service(service, index, wait) => {}
        _ = agent.closed() => {}
    }
}

/// Waits until the catalog index exceeds `index`, `wait` passes or the agent shuts down.
pub async fn wait_for_catalog(agent: &Agent, index: u64, wait: Duration) {
    tokio::select! {
        _ = agent.store().wait_for_catalog(index, wait) => {}
        _ = agent.closed() => {}
    }
}

/// Subscribes to `service`'s changes (a watch; `service:read`). Subscribe first, then read:
/// changes at or below the index read are already in it.
pub fn subscribe(
    agent: &Agent,
    caller: &Caller,
    service: &str,
) -> Result<broadcast::Receiver<Notice>> {
    authorize(caller, Resource::Service, service, Access::Read)?;
    Ok(agent.store().subscribe(service))
}

/// Subscribes to every change of every service: for the health checker, which follows them
/// all. Subscribe first, then read, as with [`subscribe`].
pub fn subscribe_all(agent: &Agent) -> broadcast::Receiver<Notice> {
    agent.store().subscribe_all()
}

/// Every instance that has a health check (TTL or active), copied out: what the health
/// checker tracks when it takes the lead or starts over.
pub fn checked_instances(agent: &Agent) -> Vec<Instance> {
    read(agent, |r| {
        r.all_instances()
            .filter(|i| i.check.is_some())
            .cloned()
            .collect()
    })
}

/// Applies a health checker's decision (a status transition or a deregistration) through
/// Raft.
pub async fn decide(agent: &Agent, action: Action) -> Result<()> {
    agent.propose(Command::from(action)).await?;
    Ok(())
}

// ---- members ------------------------------------------------------------------------------

/// Every member, with who leads (`operator:read`).
pub fn members(agent: &Agent, caller: &Caller) -> Result<Members> {
    authorize(caller, Resource::Operator, "", Access::Read)?;
    Ok(agent.cluster().members())
}

/// Adds a member (`operator:write`).
pub async fn join(agent: &Agent, caller: &Caller, req: JoinRequest) -> Result<()> {
    authorize(caller, Resource::Operator, "", Access::Write)?;
    if req.node_id == 0 {
        return Err(ValidationError::new("node_id", "node ids start at 1").into());
    }
    crate::cluster::validate_member_addr(&req.raft_addr)?;
    Ok(agent.cluster().join(req).await?)
}

/// Removes a member (`operator:write`).
pub async fn remove(agent: &Agent, caller: &Caller, req: RemoveRequest) -> Result<()> {
    authorize(caller, Resource::Operator, "", Access::Write)?;
    Ok(agent.cluster().remove(req).await?)
}
