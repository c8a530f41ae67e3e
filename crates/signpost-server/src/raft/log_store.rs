//! The Raft log on redb: entries, vote, committed index and purge point in one database.
//!
//! Writes go through one writer thread that commits *groups*: while one commit is fsyncing,
//! appends queue up, and the next commit takes them all with a single fsync. `append` returns at
//! once and reports the entries flushed (openraft's [`LogFlushed`]) only after their commit is
//! durable, so a write that Raft acknowledges survives `kill -9`, and throughput grows with the
//! number of concurrent writers instead of being one fsync per write. Entries waiting for their
//! commit are kept in memory and served to readers. The same code serves `--dev` over redb's
//! in-memory backend.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftLogId, StorageError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{read_err, tables, write_err, Entry, LogId, NodeId, TypeConfig};

/// Work for the writer thread, done in the order sent.
enum Job {
    /// Entries to write; `callback` hears when they are durable.
    Append {
        rows: Vec<(u64, Vec<u8>)>,
        ids: Vec<LogId>,
        callback: LogFlushed<TypeConfig>,
    },
    /// Any other write, run after every append sent before it is durable.
    Run {
        work: WriterWork,
        done: tokio::sync::oneshot::Sender<Result<(), redb::Error>>,
    },
}

/// Encoded rows, their log ids, and who to tell when they are durable.
type QueuedAppend = (Vec<(u64, Vec<u8>)>, Vec<LogId>, LogFlushed<TypeConfig>);
/// Work run on the writer thread.
type WriterWork = Box<dyn FnOnce(&Database) -> Result<(), redb::Error> + Send>;

/// Most entries the cache keeps once they are durable.
const CACHE_ENTRIES: usize = 256;
/// Most encoded bytes of durable entries the cache keeps.
const CACHE_BYTES: usize = 16 << 20;

/// The newest entries, in memory: those whose commit is not durable yet (readers must see
/// them), and the last few durable ones, so that openraft's core, which reads every committed
/// entry back to apply it, finds them here instead of reading and decoding them from redb.
/// Its indices are contiguous: appends add at the end, truncation cuts the end, trimming
/// drops durable entries from the front.
#[derive(Default)]
struct Cache {
    /// Entries by index, with their encoded length.
    entries: BTreeMap<u64, (Entry, usize)>,
    /// Encoded bytes of every entry held.
    bytes: usize,
    /// Every held entry up to this index is durable (and may be dropped).
    durable: u64,
}

impl Cache {
    fn insert(&mut self, entry: Entry, len: usize) {
        let index = entry.get_log_id().index;
        if let Some((_, old)) = self.entries.insert(index, (entry, len)) {
            self.bytes -= old;
        }
        self.bytes += len;
    }

    /// Drops the entries for which `drop` is true.
    fn remove_where(&mut self, mut drop: impl FnMut(u64, &Entry) -> bool) {
        let bytes = &mut self.bytes;
        self.entries.retain(|index, (entry, len)| {
            let gone = drop(*index, entry);
            if gone {
                *bytes -= *len;
            }
            !gone
        });
    }

    /// Drops the oldest durable entries beyond the bounds.
    fn trim(&mut self) {
        while self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            let Some(mut first) = self.entries.first_entry() else {
                break;
            };
            if *first.key() > self.durable {
                break;
            }
            self.bytes -= first.get_mut().1;
            first.remove();
        }
    }

    /// The entries of `start..end` when the cache holds every one of them.
    fn range(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let (&first, _) = self.entries.first_key_value()?;
        let (&last, _) = self.entries.last_key_value()?;
        let end = end?;
        // A gap (entries appended after a snapshot skipped ahead): read from the database.
        let contiguous = self.entries.len() as u64 == last - first + 1;
        if !contiguous || start < first || end > last + 1 {
            return None;
        }
        Some(
            self.entries
                .range(start..end)
                .map(|(_, (e, _))| e.clone())
                .collect(),
        )
    }
}

/// Raft log storage. Cheap to clone: clones share the database and the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: mpsc::Sender<Job>,
    /// The newest entries: every one not durable yet, and the last durable ones.
    pending: Arc<Mutex<Cache>>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        let (writer, jobs) = mpsc::channel();
        let pending = Arc::new(Mutex::new(Cache::default()));
        let (thread_db, thread_pending) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("signpost-log-writer".into())
            .spawn(move || write_loop(&thread_db, &thread_pending, &jobs))
            .expect("spawn the log writer thread");
        LogStore {
            db,
            writer,
            pending,
        }
    }

    fn pending(&self) -> MutexGuard<'_, Cache> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` on the writer thread after every earlier append is durable.
    async fn run(
        &self,
        work: impl FnOnce(&Database) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), StorageError<NodeId>> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.writer
            .send(Job::Run {
                work: Box::new(work),
                done,
            })
            .map_err(|_| write_err(std::io::Error::other("the log writer has stopped")))?;
        match result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_err(e)),
            Err(_) => Err(write_err(std::io::Error::other(
                "the log writer has stopped",
            ))),
        }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(tables::META).map_err(read_err)?;
        let Some(value) = table.get(key).map_err(read_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(read_err)
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        self.run(move |db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            {
                let mut table = txn.open_table(tables::META)?;
                table.insert(key, bytes.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError<NodeId>> {
        if let Some((_, (e, _))) = self.pending().entries.last_key_value() {
            return Ok(Some(*e.get_log_id()));
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(tables::LOG).map_err(read_err)?;
        let Some((_, value)) = table.last().map_err(read_err)? else {
            return Ok(None);
        };
        let entry = super::codec::decode_entry(value.value()).map_err(read_err)?;
        Ok(Some(*entry.get_log_id()))
    }
}

/// The writer thread: takes every job waiting, commits the appends among them in one durable
/// transaction, runs the other jobs in order, and reports back.
fn write_loop(db: &Database, pending: &Mutex<Cache>, jobs: &mpsc::Receiver<Job>) {
    let mut appends: Vec<QueuedAppend> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        for job in batch {
            match job {
                Job::Append {
                    rows,
                    ids,
                    callback,
                } => appends.push((rows, ids, callback)),
                Job::Run { work, done } => {
                    flush(db, pending, &mut appends);
                    let _ = done.send(work(db));
                }
            }
        }
        flush(db, pending, &mut appends);
    }
}

fn flush(db: &Database, pending: &Mutex<Cache>, appends: &mut Vec<QueuedAppend>) {
    if appends.is_empty() {
        return;
    }
    let result = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(tables::LOG)?;
            for (rows, _, _) in appends.iter() {
                for (index, bytes) in rows {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    })();
    {
        let mut cache = pending.lock().unwrap_or_else(|e| e.into_inner());
        if result.is_ok() {
            // Durable now: kept for the readers, dropped oldest first beyond the bounds.
            // (Entries are appended in index order, and truncation lowers the mark.)
            if let Some(last) = appends.iter().flat_map(|(_, ids, _)| ids.last()).last() {
                if cache
                    .entries
                    .get(&last.index)
                    .is_some_and(|(e, _)| e.get_log_id() == last)
                {
                    cache.durable = cache.durable.max(last.index);
                }
            }
            cache.trim();
        } else {
            let failed: BTreeMap<u64, LogId> = appends
                .iter()
                .flat_map(|(_, ids, _)| ids.iter().map(|id| (id.index, *id)))
                .collect();
            cache.remove_where(|index, e| failed.get(&index) == Some(e.get_log_id()));
        }
    }
    for (_, _, callback) in appends.drain(..) {
        let io = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i + 1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        // The usual read: openraft's core reading back the entries it is about to apply.
        if let Some(entries) = self.pending().range(start, end) {
            return Ok(entries);
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(tables::LOG).map_err(read_err)?;
        let iter = match end {
            Some(end) => table.range(start..end),
            None => table.range(start..),
        }
        .map_err(read_err)?;
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        for item in iter {
            let (index, value) = item.map_err(read_err)?;
            entries.insert(
                index.value(),
                super::codec::decode_entry(value.value()).map_err(read_err)?,
            );
        }
        // Entries still waiting for their commit are the newest word on their index.
        let pending = self.pending();
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (index, (entry, _)) in pending.entries.range((Bound::Included(start), upper)) {
            entries.insert(*index, entry.clone());
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId> = self.read_meta("last_purged")?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta("vote", vote, Durability::Immediate).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta("vote")
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not fsynced on its own: it rides along with the next durable append. After a crash the
        // committed index may lag, and Raft re-commits the tail once a leader is elected.
        self.write_meta("committed", &committed, Durability::None)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.read_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        {
            let mut pending = self.pending();
            for entry in entries {
                let id = *entry.get_log_id();
                let row = super::codec::encode_entry(&entry).map_err(write_err)?;
                pending.insert(entry, row.len());
                rows.push((id.index, row));
                ids.push(id);
            }
        }
        self.writer
            .send(Job::Append {
                rows,
                ids,
                callback,
            })
            .map_err(|_| write_err(std::io::Error::other("the log writer has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.run(move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(tables::LOG)?;
                table.retain_in(log_id.index.., |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await?;
        let mut cache = self.pending();
        cache.remove_where(|index, _| index >= log_id.index);
        cache.durable = cache.durable.min(log_id.index.saturating_sub(1));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_err)?;
        self.run(move |db| {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(tables::META)?;
                meta.insert("last_purged", bytes.as_slice())?;
                let mut table = txn.open_table(tables::LOG)?;
                table.retain_in(..=log_id.index, |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await?;
        self.pending()
            .remove_where(|index, _| index <= log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indices(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.get_log_id().index).collect()
    }

    #[test]
    fn the_cache_keeps_what_is_not_durable_and_a_bounded_tail_of_what_is() {
        let mut cache = Cache::default();
        for i in 1..=300 {
            cache.insert(blank(i), 10);
        }
        cache.trim();
        assert_eq!(cache.entries.len(), 300, "nothing durable: nothing dropped");
        assert_eq!(
            indices(&cache.range(1, Some(301)).unwrap()),
            (1..=300).collect::<Vec<_>>()
        );

        cache.durable = 300;
        cache.trim();
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        assert_eq!(cache.bytes, CACHE_ENTRIES * 10);
        assert!(
            cache.range(1, Some(100)).is_none(),
            "dropped: read from redb"
        );
        assert!(
            cache.range(290, None).is_none(),
            "an open range is read from redb"
        );
        assert_eq!(
            indices(&cache.range(100, Some(201)).unwrap()),
            (100..=200).collect::<Vec<_>>()
        );

        // Truncation from 250: nothing at or after it is served.
        cache.remove_where(|index, _| index >= 250);
        cache.durable = cache.durable.min(249);
        assert!(cache.range(240, Some(251)).is_none());
        assert_eq!(cache.range(240, Some(250)).unwrap().len(), 10);

        // A gap: not served from memory at all.
        cache.insert(blank(260), 10);
        assert!(cache.range(240, Some(250)).is_none());
    }

    #[test]
    fn the_cache_is_bounded_by_bytes_but_never_drops_an_entry_before_it_is_durable() {
        let mut cache = Cache::default();
        for i in 1..=40 {
            cache.insert(blank(i), 1 << 20);
        }
        cache.durable = 10;
        cache.trim();
        assert_eq!(cache.entries.len(), 30, "only durable entries go");
        cache.durable = 40;
        cache.trim();
        assert!(cache.bytes <= CACHE_BYTES, "{}", cache.bytes);
        assert_eq!(cache.entries.len(), CACHE_BYTES >> 20);
        assert_eq!(cache.entries.last_key_value().map(|(i, _)| *i), Some(40));
    }
}
