//! openraft's storage conformance suite, run against our log store and state machine, both on
//! redb's in-memory backend (`--dev`) and on a file.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use signpost_server::config::DEFAULT_CACHE_SIZE;
use signpost_server::raft::{open_database, LogStore, NodeId, StateMachine, TypeConfig};
use signpost_server::store::Store;

struct InMemory;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for InMemory {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<NodeId>> {
        let db = Arc::new(open_database(None, None, DEFAULT_CACHE_SIZE).expect("in-memory db"));
        let sm = StateMachine::open(Arc::new(Store::new()), db.clone()).expect("state machine");
        Ok(((), LogStore::new(db), sm))
    }
}

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db =
            Arc::new(open_database(Some(dir.path()), None, DEFAULT_CACHE_SIZE).expect("file db"));
        let sm = StateMachine::open(Arc::new(Store::new()), db.clone()).expect("state machine");
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn in_memory_store_passes_the_openraft_suite() {
    Suite::test_all(InMemory).unwrap();
}

#[test]
fn on_disk_store_passes_the_openraft_suite() {
    Suite::test_all(OnDisk).unwrap();
}
