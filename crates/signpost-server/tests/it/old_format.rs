//! A data directory written by a build from before the binary log format opens and serves its
//! data, takes new writes (in the new format) and opens again.
//!
//! The fixture `fixtures/json-format-data-dir.redb.gz` is the database of an agent of that
//! build (`[raft] snapshot_every = 20`): 20 `web` instances registered one by one (a JSON
//! snapshot was taken after the 20th entry), two KV keys (one of them empty: bash's `$'\x00…'`
//! ends at the NUL), 10 `api` instances with weights 10 to 19, then `web-19` deregistered; every log
//! entry is JSON. It was made with:
//!
//! ```sh
//! signpost agent --config agent.toml --data-dir data   # agent.toml: [raft] snapshot_every = 20
//! for i in $(seq 0 19); do curl -XPOST -H 'content-type: application/json' \
//!   $A/api/v1/services/web/instances \
//!   -d "{\"id\":\"web-$i\",\"address\":\"10.0.0.$i\",\"port\":$((8000+i)),\"tags\":[\"v1\"],\"metadata\":{\"zone\":\"eu\"}}"; done
//! curl -XPUT $A/v1/kv/config/db --data-binary 'postgres://db:5432'
//! curl -XPUT $A/v1/kv/config/bin --data-binary $'\x00\x01\xff'
//! for i in $(seq 0 9); do curl -XPOST -H 'content-type: application/json' \
//!   $A/api/v1/services/api/instances \
//!   -d "{\"id\":\"api-$i\",\"address\":\"10.1.0.$i\",\"port\":9000,\"weight\":$((10+i))}"; done
//! curl -XDELETE $A/api/v1/services/web/instances/web-19
//! ```

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{json, Value};
use signpost_testkit::{Storage, TestAgent};
use tokio::io::AsyncReadExt;

const FIXTURE: &[u8] = include_bytes!("fixtures/json-format-data-dir.redb.gz");

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// The first byte of every log entry and of the snapshot's data in the database at `path`.
fn first_bytes(path: &Path) -> (Vec<u8>, Option<u8>) {
    let db = redb::Database::open(path).expect("the database opens");
    let txn = db.begin_read().unwrap();
    let log = txn.open_table(LOG).unwrap();
    let entries = log
        .iter()
        .unwrap()
        .map(|row| row.unwrap().1.value()[0])
        .collect();
    let snapshot = txn.open_table(SNAPSHOT).unwrap();
    let data = snapshot.get("data").unwrap().map(|v| v.value()[0]);
    (entries, data)
}

async fn ids(t: &TestAgent, service: &str) -> Vec<String> {
    let (status, body) = t
        .get(&format!("/api/v1/services/{service}/instances"))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn raw_kv(t: &TestAgent, key: &str) -> Vec<u8> {
    let resp = t
        .client
        .get(t.url(&format!("/v1/kv/{key}?raw")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{key}");
    resp.bytes().await.unwrap().to_vec()
}

/// What the fixture holds, checked through the API.
async fn assert_fixture_data(t: &TestAgent) {
    let mut web: Vec<String> = (0..19).map(|i| format!("web-{i}")).collect();
    web.sort();
    let mut found = ids(t, "web").await;
    found.retain(|id| id != "web-new");
    assert_eq!(found, web, "web-19 was deregistered after the snapshot");
    let (_, body) = t.get("/api/v1/services/api/instances").await;
    let mut weights: Vec<u64> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["weight"].as_u64().unwrap())
        .collect();
    weights.sort();
    assert_eq!(weights, (10..20).collect::<Vec<u64>>());
    let (_, body) = t.get("/api/v1/services/web/instances").await;
    let web3 = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "web-3")
        .unwrap();
    assert_eq!(web3["address"], "10.0.0.3");
    assert_eq!(web3["port"], 8003);
    assert_eq!(web3["tags"], json!(["v1"]));
    assert_eq!(web3["metadata"], json!({"zone": "eu"}));
    assert_eq!(web3["status"], "passing");
    assert_eq!(raw_kv(t, "config/db").await, b"postgres://db:5432");
    assert_eq!(raw_kv(t, "config/bin").await, b"");
}

#[tokio::test]
async fn a_data_dir_written_in_the_json_format_opens_serves_and_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("signpost.redb");
    let mut bytes = Vec::new();
    async_compression::tokio::bufread::GzipDecoder::new(FIXTURE)
        .read_to_end(&mut bytes)
        .await
        .unwrap();
    std::fs::write(&db_path, bytes).unwrap();

    // The fixture really is in the old format: a JSON snapshot and a JSON log after it.
    let (entries, snapshot) = first_bytes(&db_path);
    assert_eq!(snapshot, Some(b'{'), "a JSON snapshot");
    assert!(entries.len() > 20, "{} log entries", entries.len());
    assert!(entries.iter().all(|&b| b == b'{'), "JSON log entries");

    let t = TestAgent::start_on(Storage::Durable(dir.path().to_path_buf()), 0).await;
    assert_fixture_data(&t).await;
    let (status, body) = t
        .register(
            "web",
            json!({"id": "web-new", "address": "10.0.0.99", "port": 9999}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    t.shutdown().await;

    // The new write is in the new format, after the old entries.
    let (entries, _) = first_bytes(&db_path);
    assert_eq!(entries.first(), Some(&b'{'));
    assert_eq!(
        entries.last(),
        Some(&signpost_server::raft::codec::FORMAT_V1),
        "{entries:?}"
    );

    // Both formats in one log, and both open again.
    let t = TestAgent::start_on(Storage::Durable(dir.path().to_path_buf()), 0).await;
    assert!(ids(&t, "web").await.contains(&"web-new".to_string()));
    assert_fixture_data(&t).await;
    let (_, body): (u16, Value) = t.get("/api/v1/services/web/instances").await;
    assert_eq!(body["instances"].as_array().unwrap().len(), 20);
    t.shutdown().await;
}
