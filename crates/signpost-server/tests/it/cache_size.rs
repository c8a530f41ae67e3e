//! `[storage] cache_size`: the bound on redb's page cache is read, checked, and an agent whose
//! cache is far smaller than its data still writes, restarts and serves all of it.

use serde_json::json;
use signpost_server::config::{DEFAULT_CACHE_SIZE, MIN_CACHE_SIZE};
use signpost_server::AgentConfig;
use signpost_testkit::{Storage, TestAgent};

#[test]
fn cache_size_defaults_to_64_mib_reads_bytes_and_refuses_tiny_caches() {
    assert_eq!(DEFAULT_CACHE_SIZE, 64 * 1024 * 1024);
    assert_eq!(
        AgentConfig::default().storage.cache_size,
        DEFAULT_CACHE_SIZE
    );
    let c = AgentConfig::from_toml("dev = true\n[storage]\ncache_size = 16777216").unwrap();
    assert_eq!(c.storage.cache_size, 16 * 1024 * 1024);
    c.validate().unwrap();
    let c = AgentConfig::from_toml("dev = true\n[storage]\ncache_size = 4096").unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("storage.cache_size"), "{err}");
    assert!(
        AgentConfig::from_toml("[storage]\ncache_size = \"big\"").is_err(),
        "a size is a number of bytes"
    );
}

#[tokio::test]
async fn an_agent_with_the_smallest_cache_keeps_and_restores_more_than_it_caches() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = TestAgent::config(Storage::Durable(dir.path().to_path_buf()));
        c.storage.cache_size = MIN_CACHE_SIZE;
        // Snapshots too, so both the log and a snapshot outgrow the cache.
        c.raft.snapshot_every = 50;
        c
    };
    let t = TestAgent::launch(config(), 0, |_| async {}).await;
    // ~3 MiB of metadata (20 values of 500 bytes per instance): three times the cache.
    let filler = "x".repeat(500);
    let metadata: serde_json::Map<String, serde_json::Value> =
        (0..20).map(|k| (format!("k{k}"), json!(filler))).collect();
    for n in 0..300 {
        let body = json!({"id": format!("i{n}"), "address": "10.0.0.1", "port": 80,
            "metadata": metadata});
        let (code, _) = t.register("big", body).await;
        assert_eq!(code, 201, "instance {n}");
    }
    let port = t.port();
    t.shutdown().await;

    let t = TestAgent::launch(config(), port, |_| async {}).await;
    let ids = t.ids("big", "any").await;
    assert_eq!(ids.len(), 300, "every instance is back after the restart");
    let (code, i) = t.get("/api/v1/services/big/instances/i299").await;
    assert_eq!(code, 200);
    assert_eq!(i["metadata"]["k19"], filler.as_str());
    t.shutdown().await;
}
