//! Bounds on the replicated state: how many services, instances and keys it may hold, and how
//! long a deleted key's tombstone is kept.
//!
//! The limits are checked inside [`Registry::apply`](crate::Registry::apply), so a command that
//! would cross one is refused the same way on every replica, whichever route it came by. Every
//! member is configured with the same `[limits]` (a replica with other limits would apply the log
//! differently); the agent hands them to the registry with
//! [`Registry::set_limits`](crate::Registry::set_limits).

use serde::{Deserialize, Serialize};

/// The state's bounds. Each counting limit names itself in a refusal as `limits.<field>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most services (with instances or a definition) the registry holds.
    pub max_services: usize,
    /// Most instances across all services.
    pub max_instances: usize,
    /// Most instances of one service.
    pub max_instances_per_service: usize,
    /// Most live KV keys.
    pub max_kv_keys: usize,
    /// Most bytes of live KV keys and values together.
    pub max_kv_bytes: usize,
    /// How long a deleted key's tombstone is kept (milliseconds of proposal time), so that
    /// blocking queries on it still see the delete; then it is reaped.
    pub kv_tombstone_ttl_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: 10_000,
            max_instances: 250_000,
            max_instances_per_service: 50_000,
            max_kv_keys: 100_000,
            max_kv_bytes: 256 * 1024 * 1024,
            kv_tombstone_ttl_ms: 15 * 60 * 1000,
        }
    }
}

/// Why the state machine refused a command; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The command is malformed ([`crate::validate::command`]): a client mistake, a 400.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Applying it would cross one of the [`Limits`]: a 429 naming the limit.
    #[error("{limit}: {message}")]
    Limit {
        /// The limit's name as configured, e.g. `limits.max_instances`.
        limit: String,
        /// What was refused, with the limit's value.
        message: String,
    },
}

impl Refusal {
    /// A refusal for crossing `limit` (its `[limits]` key), which is `max`.
    pub fn limit(limit: &str, max: usize, what: &str) -> Self {
        Refusal::Limit {
            limit: format!("limits.{limit}"),
            message: format!("{what}: the limit is {max}"),
        }
    }
}

impl From<crate::validate::ValidationError> for Refusal {
    fn from(e: crate::validate::ValidationError) -> Self {
        Refusal::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}
