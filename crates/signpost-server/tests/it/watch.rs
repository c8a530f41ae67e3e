//! Blocking queries and the SSE watch stream.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{eventually, instance, SseReader, TestAgent};

async fn index_of(t: &TestAgent, service: &str) -> u64 {
    t.get(&format!("/api/v1/services/{service}/instances?status=any"))
        .await
        .1["index"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn blocking_query_returns_promptly_on_a_change_to_its_service() {
    let t = TestAgent::start().await;
    t.register("users", instance(80)).await;
    let index = index_of(&t, "users").await;
    let url = t.url(&format!(
        "/api/v1/services/users/instances?index={index}&wait=30s"
    ));
    let client = t.client.clone();
    let waiter = tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        let header: u64 = resp.headers()["x-signpost-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        (Instant::now(), header, body)
    });
    // Let the query park: the watcher count shows it is waiting.
    eventually("the blocking query is parked", || async {
        t.agent.watchers() > 0
    })
    .await;
    let changed_at = Instant::now();
    t.register("users", instance(81)).await;
    let (returned_at, header, body) = waiter.await.unwrap();
    let latency = returned_at.saturating_duration_since(changed_at);
    eprintln!("blocking query woke {latency:?} after the write began");
    assert!(
        latency < Duration::from_millis(100),
        "woke after {latency:?}"
    );
    assert!(header > index);
    assert_eq!(body["index"].as_u64().unwrap(), header);
    assert_eq!(body["instances"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn blocking_query_ignores_other_services_and_times_out_with_the_same_index() {
    let t = TestAgent::start().await;
    t.register("users", instance(80)).await;
    let index = index_of(&t, "users").await;
    let url = t.url(&format!(
        "/api/v1/services/users/instances?index={index}&wait=400ms"
    ));
    let client = t.client.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let body: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
        body
    });
    eventually("the blocking query is parked", || async {
        t.agent.watchers() > 0
    })
    .await;
    for port in 1..=5 {
        t.register("orders", instance(port)).await;
    }
    let body = waiter.await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "returned early: {:?}",
        started.elapsed()
    );
    assert_eq!(
        body["index"].as_u64().unwrap(),
        index,
        "orders' writes must not move users' index"
    );
}

#[tokio::test]
async fn blocking_query_with_an_old_index_returns_at_once() {
    let t = TestAgent::start().await;
    t.register("users", instance(80)).await;
    let started = Instant::now();
    let (code, body) = t
        .get("/api/v1/services/users/instances?index=1&wait=30s")
        .await;
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(body["instances"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sse_sends_reset_then_add_update_remove() {
    let t = TestAgent::start().await;
    t.register(
        "users",
        json!({"id": "a", "address": "10.0.0.1", "port": 80}),
    )
    .await;
    let mut watch = SseReader::open(&t, "/api/v1/services/users/watch").await;
    let (name, data) = watch.next().await;
    assert_eq!(name, "reset");
    assert_eq!(data["instances"][0]["id"], "a");
    let reset_index = data["index"].as_u64().unwrap();

    t.register(
        "users",
        json!({"id": "b", "address": "10.0.0.2", "port": 80}),
    )
    .await;
    let (name, data) = watch.next().await;
    assert_eq!(name, "add");
    assert_eq!(data["instance"]["id"], "b");
    assert!(data["index"].as_u64().unwrap() > reset_index);

    t.register(
        "users",
        json!({"id": "b", "address": "10.0.0.2", "port": 81}),
    )
    .await;
    let (name, data) = watch.next().await;
    assert_eq!(name, "update");
    assert_eq!(data["instance"]["port"], 81);

    t.register("orders", instance(1)).await; // another service: nothing arrives for it
    let resp = t
        .client
        .delete(t.url("/api/v1/services/users/instances/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (name, data) = watch.next().await;
    assert_eq!(name, "remove", "{data}");
    assert_eq!(data["instance"]["id"], "a");
}

#[tokio::test]
async fn sse_status_filter_turns_health_changes_into_add_and_remove() {
    let t = TestAgent::start().await;
    t.register(
        "users",
        json!({"id": "a", "address": "10.0.0.1", "port": 80, "check": {"ttl": "300ms"}}),
    )
    .await;
    let mut passing = SseReader::open(&t, "/api/v1/services/users/watch").await;
    let mut all = SseReader::open(&t, "/api/v1/services/users/watch?status=any").await;
    assert_eq!(
        passing.next().await.1["instances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(all.next().await.1["instances"].as_array().unwrap().len(), 1);
    // No heartbeat: the TTL expires and the instance turns critical.
    let (name, data) = passing.next().await;
    assert_eq!(
        (name.as_str(), &data["instance"]["id"]),
        ("remove", &json!("a"))
    );
    let (name, data) = all.next().await;
    assert_eq!(name, "update");
    assert_eq!(data["instance"]["status"], "critical");
    // A heartbeat brings it back.
    let resp = t
        .client
        .put(t.url("/api/v1/services/users/instances/a/heartbeat"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (name, data) = passing.next().await;
    assert_eq!(name, "add");
    assert_eq!(data["instance"]["status"], "passing");
}

#[tokio::test]
async fn a_stalled_watcher_does_not_hold_up_writes_or_other_watchers() {
    let t = TestAgent::start().await;
    // Opened and never read again.
    let _stalled = t
        .client
        .get(t.url("/api/v1/services/busy/watch?status=any"))
        .send()
        .await
        .unwrap();
    let mut live = SseReader::open(&t, "/api/v1/services/busy/watch?status=any").await;
    assert_eq!(live.next().await.0, "reset");
    let writes = 2_000u16;
    for chunk in (0..writes).collect::<Vec<_>>().chunks(100) {
        let futs = chunk.iter().map(|i| t.register("busy", instance(1000 + i)));
        for (code, _) in futures::future::join_all(futs).await {
            assert_eq!(code, 201);
        }
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < writes as usize {
        let (name, data) = live.next().await;
        match name.as_str() {
            "add" => {
                seen.insert(data["instance"]["id"].as_str().unwrap().to_string());
            }
            // A reader can be lapped too; a reset then carries the whole list.
            "reset" => {
                for i in data["instances"].as_array().unwrap() {
                    seen.insert(i["id"].as_str().unwrap().to_string());
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(t.ids("busy", "any").await.len(), writes as usize);
}

#[tokio::test]
async fn shutdown_ends_open_watches_and_blocking_queries() {
    let t = TestAgent::start().await;
    t.register("users", instance(80)).await;
    let index = index_of(&t, "users").await;
    let mut watch = SseReader::open(&t, "/api/v1/services/users/watch").await;
    assert_eq!(watch.next().await.0, "reset");
    let client = t.client.clone();
    let url = t.url(&format!(
        "/api/v1/services/users/instances?index={index}&wait=10m"
    ));
    let blocked =
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    eventually("the blocking query is parked", || async {
        t.agent.watchers() >= 2
    })
    .await;
    let started = Instant::now();
    t.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(
        blocked.await.unwrap().unwrap(),
        200,
        "the blocking query is answered, not dropped"
    );
}

/// The catalog index `GET /api/v1/services` answers, from its `X-Signpost-Index` header.
async fn catalog_index(t: &TestAgent) -> u64 {
    let resp = t
        .client
        .get(t.url("/api/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-signpost-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Starts a blocking `GET /api/v1/services?{query}` (which must answer 200); yields when it
/// returned, its index header and its body.
fn blocking_services(
    t: &TestAgent,
    query: String,
) -> tokio::task::JoinHandle<(Instant, u64, serde_json::Value)> {
    let url = t.url(&format!("/api/v1/services?{query}"));
    let client = t.client.clone();
    tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let header: u64 = resp.headers()["x-signpost-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        (Instant::now(), header, body)
    })
}

#[tokio::test]
async fn blocking_services_query_returns_early_on_a_new_service() {
    let t = TestAgent::start().await;
    t.register("users", instance(80)).await;
    let index = catalog_index(&t).await;
    let started = Instant::now();
    let waiter = blocking_services(&t, format!("index={index}&wait=30s"));
    eventually("the blocking query is parked", || async {
        t.agent.watchers() > 0
    })
    .await;
    t.register("orders", instance(81)).await;
    let (returned_at, header, body) = waiter.await.unwrap();
    assert!(
        returned_at.duration_since(started) < Duration::from_secs(10),
        "returned after {:?}, not at the change",
        returned_at.duration_since(started)
    );
    assert!(header > index, "{header} > {index}");
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "users"]);
}

#[tokio::test]
async fn blocking_services_query_times_out_with_the_same_index_when_nothing_changes() {
    let t = TestAgent::start().await;
    t.register("users", instance(80)).await;
    let index = catalog_index(&t).await;
    let started = Instant::now();
    let waiter = blocking_services(&t, format!("index={index}&wait=400ms"));
    eventually("the blocking query is parked", || async {
        t.agent.watchers() > 0
    })
    .await;
    // A KV write moves the agent's last index, but not the catalog's.
    let resp = t
        .client
        .put(t.url("/api/v1/kv/app/color"))
        .body("blue")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let (returned_at, header, body) = waiter.await.unwrap();
    assert!(
        returned_at.duration_since(started) >= Duration::from_millis(400),
        "returned early: {:?}",
        returned_at.duration_since(started)
    );
    assert_eq!(header, index, "nothing in the catalog changed");
    assert_eq!(body[0]["name"], "users");
}

#[tokio::test]
async fn blocking_services_query_rejects_a_bad_index_or_wait() {
    let t = TestAgent::start().await;
    for (query, field) in [
        ("index=-1", "index"),
        ("index=abc&wait=1s", "index"),
        ("index=1&wait=forever", "wait"),
    ] {
        let (code, err) = t.get(&format!("/api/v1/services?{query}")).await;
        assert_eq!(code, 400, "{query}");
        assert_eq!(err["field"], field, "{err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{err}"
        );
    }
}

/// `signpost_watch_frames_rendered_total` from `/metrics`.
pub async fn frames_rendered(t: &TestAgent) -> u64 {
    let text = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("signpost_watch_frames_rendered_total "))
        .unwrap_or_else(|| panic!("no frames counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn watchers_of_one_service_share_each_change_rendered_once() {
    let t = TestAgent::start().await;
    t.register(
        "users",
        json!({"id": "a", "address": "10.0.0.1", "port": 80}),
    )
    .await;
    // Different filters, both showing passing instances: the same frames.
    let mut first = SseReader::open(&t, "/api/v1/services/users/watch").await;
    let mut second = SseReader::open(&t, "/api/v1/services/users/watch?status=any").await;
    assert_eq!(first.next().await.0, "reset");
    assert_eq!(second.next().await.0, "reset");
    let before = frames_rendered(&t).await;

    t.register(
        "users",
        json!({"id": "b", "address": "10.0.0.2", "port": 80}),
    )
    .await;
    let (one, two) = (first.next_raw().await, second.next_raw().await);
    assert!(one.starts_with("event: add\n"), "{one}");
    assert_eq!(one, two, "byte-identical frames");
    assert_eq!(
        frames_rendered(&t).await,
        before + 1,
        "rendered once for both"
    );

    t.register(
        "users",
        json!({"id": "b", "address": "10.0.0.2", "port": 81}),
    )
    .await;
    let (one, two) = (first.next_raw().await, second.next_raw().await);
    assert!(one.starts_with("event: update\n"), "{one}");
    assert_eq!(one, two, "byte-identical frames");
    assert_eq!(frames_rendered(&t).await, before + 2, "once per change");
}
