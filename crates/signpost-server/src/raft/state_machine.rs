//! The Raft state machine: applies committed entries to the shared [`Store`] and keeps the latest
//! snapshot in redb.
//!
//! On start it restores the last snapshot; openraft then re-applies the committed log tail.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogId, StorageError};
use redb::{Database, ReadableDatabase};
use signpost_core::Response;

use super::{
    read_err, tables, write_err, Entry, LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use crate::store::{SmState, Store};

/// The state machine adapter. Clones share the store and database.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    db: Arc<Database>,
    /// Distinguishes snapshots built at the same log id.
    snapshot_seq: Arc<AtomicU64>,
    /// Length of the last snapshot built, to size the next one's buffer at once.
    last_snapshot_len: Arc<AtomicU64>,
}

impl StateMachine {
    /// Builds the state machine, restoring `store` from the last snapshot in `db` if there is one.
    pub fn open(store: Arc<Store>, db: Arc<Database>) -> Result<Self, super::StorageOpenError> {
        let sm = StateMachine {
            store,
            db,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            last_snapshot_len: Arc::new(AtomicU64::new(0)),
        };
        let snapshot = sm
            .read_snapshot()
            .map_err(|e| super::StorageOpenError::Snapshot(e.to_string()))?;
        if let Some((_, data)) = snapshot {
            let state: SmState = super::codec::decode_snapshot(&data)
                .map_err(|e| super::StorageOpenError::Snapshot(e.to_string()))?;
            sm.store.replace(state);
        }
        Ok(sm)
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(tables::SNAPSHOT).map_err(read_err)?;
        let (Some(meta), Some(data)) = (
            table.get("meta").map_err(read_err)?,
            table.get("data").map_err(read_err)?,
        ) else {
            return Ok(None);
        };
        let meta = serde_json::from_slice(meta.value()).map_err(read_err)?;
        Ok(Some((meta, data.value().to_vec())))
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError<NodeId>> {
        let meta_bytes = serde_json::to_vec(meta).map_err(write_err)?;
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = txn.open_table(tables::SNAPSHOT).map_err(write_err)?;
            table
                .insert("meta", meta_bytes.as_slice())
                .map_err(write_err)?;
            table.insert("data", data).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError<NodeId>> {
        // Encode the state in place, under its read lock, straight into one binary buffer: no
        // copy of the state and no intermediate document, so the peak is the state plus its
        // compact encoding. Writes wait for the encoding (a few hundred MB/s).
        let store = self.store.clone();
        let hint = self.last_snapshot_len.load(Ordering::Relaxed) as usize;
        let (last_log_id, last_membership, data) = tokio::task::spawn_blocking(move || {
            let state = store.read();
            let data = super::codec::encode_snapshot(&*state, hint)?;
            Ok::<_, super::codec::CodecError>((state.last_applied, state.membership.clone(), data))
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        self.last_snapshot_len
            .store(data.len() as u64, Ordering::Relaxed);
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("empty-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let this = self.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            this.save_snapshot(&meta, &data).map(|()| (meta, data))
        })
        .await
        .map_err(write_err)??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let state = self.store.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.store.write(|state| {
            let mut responses = Vec::new();
            let mut events = Vec::new();
            for entry in entries {
                let log_id = *entry.get_log_id();
                state.last_applied = Some(log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::Internal,
                    EntryPayload::Normal(req) => {
                        let (response, evs) = state.registry.apply(log_id.index, &req.request);
                        events.extend(evs);
                        response
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(log_id), m);
                        Response::Internal
                    }
                };
                responses.push(response);
            }
            (responses, events)
        }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut state: SmState = super::codec::decode_snapshot(&data).map_err(read_err)?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.save_snapshot(meta, &data)?;
        self.store.replace(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError<NodeId>> {
        Ok(self.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
