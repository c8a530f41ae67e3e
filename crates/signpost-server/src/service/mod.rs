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

pub mod kv;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use signpost_core::health::{Action, HeartbeatError};
use signpost_core::model::NewInstance;
use signpost_core::registry::{ServiceSummary, StatusCounts};
use signpost_core::validate::ValidationError;
use signpost_core::{Command, Instance, InstanceKey, Response, ServiceDefinition, Status};
use tokio::sync::broadcast;

use crate::agent::{Agent, ProposeError};
use crate::cluster::{ClusterError, JoinRequest, Members, RemoveRequest};
pub use crate::store::{Change, Notice};

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
    /// The registry answered a command with a response of another command: a bug.
    #[error("the registry answered {command} with {response}")]
    Unexpected {
        /// The command's kind.
        command: String,
        /// What came back.
        response: String,
    },
}

/// What a service operation returns.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// An instance after a registration, and whether it is new.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The instance as stored.
    pub instance: Instance,
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
    let response = agent.propose(command).await?;
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
    }
}

// ---- writes -------------------------------------------------------------------------------

/// Registers (or replaces) an instance.
pub async fn register(agent: &Agent, new: NewInstance) -> Result<Registered> {
    crate::health::targets::admit(agent, new.check.as_ref()).await?;
    apply(agent, Command::Register(new), |r| match r {
        Response::Registered { instance, created } => Ok(Registered { instance, created }),
        other => Err(Box::new(other)),
    })
    .await
}

/// Deregisters an instance; returns its service's index afterwards.
pub async fn deregister(agent: &Agent, key: &InstanceKey) -> Result<u64> {
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
/// [`renew_here`] runs it.
pub async fn renew(agent: &Agent, key: &InstanceKey, status: Status) -> Result<Renewal> {
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

/// Puts a service definition.
pub async fn define(agent: &Agent, definition: ServiceDefinition) -> Result<Defined> {
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

/// Deletes a service definition; returns the service's index afterwards.
pub async fn undefine(agent: &Agent, service: &str) -> Result<u64> {
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

/// Runs `f` over the registry as this node has applied it.
fn read<T>(agent: &Agent, f: impl FnOnce(&signpost_core::Registry) -> T) -> T {
    f(&agent.store().read().registry)
}

/// Runs `f` over the whole registry, borrowed in place: for the DNS face, whose pure resolver
/// answers any name from it.
pub fn with_registry<T>(agent: &Agent, f: impl FnOnce(&signpost_core::Registry) -> T) -> T {
    read(agent, f)
}

/// Every service with its index and status counts, and the catalog index (that of the last
/// change to any service, which [`wait_for_catalog`] waits on).
pub fn services(agent: &Agent) -> (u64, Vec<ServiceSummary>) {
    read(agent, |r| (r.catalog_index(), r.services()))
}

/// One instance.
pub fn instance(agent: &Agent, key: &InstanceKey) -> Result<Instance> {
    read(agent, |r| r.instance(&key.service, &key.id).cloned())
        .ok_or_else(|| ServiceError::NotRegistered(key.clone()))
}

/// Runs `f` with `service`'s index and its instances (in id order), borrowed in place.
pub fn with_instances<T>(
    agent: &Agent,
    service: &str,
    f: impl FnOnce(u64, &mut dyn Iterator<Item = &Instance>) -> T,
) -> T {
    read(agent, |r| {
        f(r.service_index(service), &mut r.instances(service))
    })
}

/// Runs `f` with the catalog index and every instance of every service, borrowed in place.
pub fn with_catalog<T>(
    agent: &Agent,
    f: impl FnOnce(u64, &mut dyn Iterator<Item = &Instance>) -> T,
) -> T {
    read(agent, |r| f(r.catalog_index(), &mut r.all_instances()))
}

/// The first instance (of any service) matching `pred`.
pub fn find_instance(agent: &Agent, pred: impl Fn(&Instance) -> bool) -> Option<Instance> {
    read(agent, |r| r.all_instances().find(|i| pred(i)).cloned())
}

/// A service's definition.
pub fn definition(agent: &Agent, service: &str) -> Result<ServiceDefinition> {
    read(agent, |r| r.definition(service).cloned())
        .ok_or_else(|| ServiceError::NoDefinition(service.to_string()))
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

/// Subscribes to `service`'s changes (a watch). Subscribe first, then read: changes at or
/// below the index read are already in it.
pub fn subscribe(agent: &Agent, service: &str) -> broadcast::Receiver<Notice> {
    agent.store().subscribe(service)
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

/// Every member, with who leads.
pub fn members(agent: &Agent) -> Members {
    agent.cluster().members()
}

/// Adds a member.
pub async fn join(agent: &Agent, req: JoinRequest) -> Result<()> {
    if req.node_id == 0 {
        return Err(ValidationError::new("node_id", "node ids start at 1").into());
    }
    Ok(agent.cluster().join(req).await?)
}

/// Removes a member.
pub async fn remove(agent: &Agent, req: RemoveRequest) -> Result<()> {
    Ok(agent.cluster().remove(req).await?)
}
