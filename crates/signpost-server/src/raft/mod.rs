//! Raft glue: openraft's type configuration, the redb-backed log and snapshot storage, the state
//! machine adapter around [`signpost_core::Registry`], and the transport between members (HTTP, or
//! in memory for tests).
//!
//! A single agent is a one-member Raft group; clustering adds members without changing any of
//! this.

// openraft's traits fix the error type to its large `StorageError`; boxing it is not an option.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod transport;

use std::io::Cursor;

use openraft::{StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use signpost_core::Response;

pub use codec::{EncodedCommand, LogRequest};
pub use log_store::LogStore;
pub use network::{NetworkFactory, PeerNetwork};
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
pub use state_machine::StateMachine;

pub type NodeId = u64;

/// What the cluster knows about a member: where its Raft RPCs go, and where its HTTP API is
/// (for redirecting clients and forwarding their requests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Address of the member's Raft listener (its HTTP port when it has no separate one).
    pub raft_addr: String,
    /// Address of the member's HTTP API.
    pub http_addr: String,
}

impl Node {
    pub fn new(raft_addr: impl Into<String>, http_addr: impl Into<String>) -> Self {
        Node {
            raft_addr: raft_addr.into(),
            http_addr: http_addr.into(),
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft {} http {}", self.raft_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// Signpost's Raft types: registry requests (with their log encoding) in, [`Response`]s out.
    pub TypeConfig:
        D = LogRequest,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;

/// Wraps any error as a storage read error.
pub(crate) fn read_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::read(openraft::AnyError::new(&e)),
    }
}

/// Wraps any error as a storage write error.
pub(crate) fn write_err<E: std::error::Error + 'static>(e: E) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write(openraft::AnyError::new(&e)),
    }
}

/// Tables in the agent's redb database. Log and snapshot live in one file so that one fsync
/// covers what a write needs.
pub(crate) mod tables {
    use redb::TableDefinition;

    /// Raft log: index → encoded entry ([`super::codec`]: binary, or JSON from older builds).
    pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
    /// Raft metadata: `vote`, `committed`, `last_purged` → JSON.
    pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
    /// The latest state-machine snapshot: `meta` and `data`.
    pub const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
}

/// Why the agent's storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    /// The data dir cannot be created.
    #[error("cannot create data dir {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database file cannot be opened (another agent holds it, or it is damaged).
    #[error("cannot open database {}: {source}", path.display())]
    Database {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// The database cannot be read or prepared.
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    /// The state machine's snapshot cannot be decoded.
    #[error("cannot restore the state machine snapshot: {0}")]
    Snapshot(String),
}

/// Opens an agent's database on a storage backend of its own (`builder.create_with_backend`),
/// in place of its data dir or memory: tests hand one whose backend fails writes on demand
/// (a full disk).
pub type BackendFactory = std::sync::Arc<
    dyn Fn(&redb::Builder) -> Result<redb::Database, redb::DatabaseError> + Send + Sync,
>;

/// Creates the data directory (and its parents) readable by its owner only (`0700` on Unix):
/// the log and snapshots hold KV values, which are often secrets. An existing directory is
/// left as it is.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the database file readable and writable by its owner only (`0600` on Unix).
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Opens (or creates) the agent's database: on `backend` when given, else on disk under
/// `data_dir`, or in memory for `--dev`; redb's page cache holds at most `cache_size` bytes
/// (`[storage] cache_size`).
pub fn open_database(
    data_dir: Option<&std::path::Path>,
    backend: Option<&BackendFactory>,
    cache_size: u64,
) -> Result<redb::Database, StorageOpenError> {
    let mut builder = redb::Database::builder();
    builder.set_cache_size(usize::try_from(cache_size).unwrap_or(usize::MAX));
    let db = match (backend, data_dir) {
        (Some(open), _) => open(&builder).map_err(redb::Error::from)?,
        (None, Some(dir)) => {
            private_dir(dir).map_err(|source| StorageOpenError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = dir.join("signpost.redb");
            let db = builder
                .create(&path)
                .map_err(|source| StorageOpenError::Database {
                    path: path.clone(),
                    source,
                })?;
            private_file(&path).map_err(|source| StorageOpenError::DataDir {
                path: path.clone(),
                source,
            })?;
            db
        }
        (None, None) => builder
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(redb::Error::from)?,
    };
    let txn = db.begin_write().map_err(redb::Error::from)?;
    txn.open_table(tables::LOG).map_err(redb::Error::from)?;
    txn.open_table(tables::META).map_err(redb::Error::from)?;
    txn.open_table(tables::SNAPSHOT)
        .map_err(redb::Error::from)?;
    txn.commit().map_err(redb::Error::from)?;
    Ok(db)
}
