//! The configuration client against a real in-process agent: reads, watches through the native
//! and the Consul KV API, agent restarts, whole prefix snapshots, values that do not decode.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Storage, TestAgent};
use serde::Deserialize;
use signpost_client::backoff::{Backoff, Jitter};
use signpost_client::config::{Api, Config, ConfigOptions, ConfigWatch, Format, ReadError};
use signpost_client::registry::signpost::{KvWrite, SignpostRegistry};
use signpost_client::registry::RegistryError;

#[derive(Debug, Deserialize, PartialEq)]
struct Settings {
    greeting: String,
    page_size: u32,
}

/// Options for tests: short waits, fast retries.
fn options() -> ConfigOptions {
    ConfigOptions {
        blocking_wait: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            jitter: Jitter::None,
        },
        ..ConfigOptions::default()
    }
}

async fn put(agent: &TestAgent, key: &str, value: &str) {
    SignpostRegistry::new([agent.base.clone()])
        .unwrap()
        .kv_put(key, value.as_bytes().to_vec(), KvWrite::default())
        .await
        .unwrap();
}

fn settings(greeting: &str, page_size: u32) -> String {
    format!(r#"{{"greeting":"{greeting}","page_size":{page_size}}}"#)
}

/// The next value of `watch`, within a deadline.
async fn next<T>(watch: &mut ConfigWatch<T>) -> std::sync::Arc<T> {
    tokio::time::timeout(Duration::from_secs(10), watch.next_value())
        .await
        .expect("a new value within 10 s")
        .expect("the watch runs")
        .value
}

#[tokio::test]
async fn get_decodes_json_toml_and_raw_on_both_apis() {
    let agent = TestAgent::start().await;
    put(&agent, "app/svc/config", &settings("hi", 10)).await;
    put(&agent, "app/svc/toml", "greeting = \"hey\"\npage_size = 5").await;
    put(&agent, "app/svc/color", "blue").await;
    for api in [Api::Native, Api::Consul] {
        let config = Config::new(api, [agent.base.clone()], options()).unwrap();
        let s: Settings = config.get("app/svc/config", Format::Json).await.unwrap();
        assert_eq!(
            s,
            Settings {
                greeting: "hi".into(),
                page_size: 10
            },
            "{api:?}"
        );
        let s: Settings = config.get("app/svc/toml", Format::Toml).await.unwrap();
        assert_eq!(s.page_size, 5, "{api:?}");
        let c: String = config.get("app/svc/color", Format::Raw).await.unwrap();
        assert_eq!(c, "blue");
        let missing = config.get::<String>("app/svc/none", Format::Raw).await;
        assert!(
            matches!(missing, Err(ReadError::Missing { .. })),
            "{api:?} {missing:?}"
        );
        let bad = config.get::<Settings>("app/svc/color", Format::Json).await;
        assert!(
            matches!(
                bad,
                Err(ReadError::Decode {
                    format: Format::Json,
                    ..
                })
            ),
            "{bad:?}"
        );
        let prefix = config.get_prefix("app/svc/").await.unwrap();
        assert_eq!(
            prefix.entries.keys().collect::<Vec<_>>(),
            ["app/svc/color", "app/svc/config", "app/svc/toml"],
            "{api:?}"
        );
        assert!(prefix.index > 0);
    }
}

#[tokio::test]
async fn a_watch_sees_three_successive_values_on_both_apis() {
    let agent = TestAgent::start().await;
    for api in [Api::Native, Api::Consul] {
        let key = format!("app/{api:?}/config");
        put(&agent, &key, &settings("one", 1)).await;
        let config = Config::new(api, [agent.base.clone()], options()).unwrap();
        let mut watch = config.watch::<Settings>(&key, Format::Json);
        assert_eq!(next(&mut watch).await.greeting, "one");
        put(&agent, &key, &settings("two", 2)).await;
        assert_eq!(next(&mut watch).await.greeting, "two");
        put(&agent, &key, &settings("three", 3)).await;
        let third = next(&mut watch).await;
        assert_eq!(
            (third.greeting.as_str(), third.page_size),
            ("three", 3),
            "{api:?}"
        );
        assert_eq!(watch.current().unwrap().page_size, 3);
    }
}

#[tokio::test]
async fn a_watch_keeps_the_last_value_through_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start_on(Storage::Durable(dir.path().into()), 0).await;
    let port = agent.port();
    put(&agent, "app/r/config", &settings("before", 1)).await;
    let config = Config::native([agent.base.clone()], options()).unwrap();
    let mut watch = config.watch::<Settings>("app/r/config", Format::Json);
    assert_eq!(next(&mut watch).await.greeting, "before");

    agent.shutdown().await;
    eventually("the watch reports the agent unreachable", || async {
        matches!(
            watch.state().problem.as_deref(),
            Some(ReadError::Registry(RegistryError::Unavailable { .. }))
        )
    })
    .await;
    assert_eq!(
        watch.current().unwrap().greeting,
        "before",
        "the last good value is kept"
    );

    let agent = TestAgent::start_on(Storage::Durable(dir.path().into()), port).await;
    put(&agent, "app/r/config", &settings("after", 2)).await;
    let after = next(&mut watch).await;
    assert_eq!((after.greeting.as_str(), after.page_size), ("after", 2));
    assert!(watch.state().problem.is_none());
}

#[tokio::test]
async fn a_prefix_watch_delivers_whole_snapshots() {
    let agent = TestAgent::start().await;
    put(&agent, "app/p/a", "1").await;
    put(&agent, "app/p/b", "2").await;
    put(&agent, "app/other", "x").await;
    let config = Config::native([agent.base.clone()], options()).unwrap();
    let mut watch = config.watch_prefix::<u32>("app/p/", Format::Json);
    let map = |pairs: &[(&str, u32)]| -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(*next(&mut watch).await, map(&[("a", 1), ("b", 2)]));
    // A change to one key hands over the whole prefix, not the one key.
    put(&agent, "app/p/b", "20").await;
    assert_eq!(*next(&mut watch).await, map(&[("a", 1), ("b", 20)]));
    put(&agent, "app/p/c", "3").await;
    assert_eq!(
        *next(&mut watch).await,
        map(&[("a", 1), ("b", 20), ("c", 3)])
    );
    SignpostRegistry::new([agent.base.clone()])
        .unwrap()
        .kv_delete("app/p/a", false, None)
        .await
        .unwrap();
    assert_eq!(*next(&mut watch).await, map(&[("b", 20), ("c", 3)]));
    // One entry that does not decode refuses the whole snapshot.
    put(&agent, "app/p/d", "not a number").await;
    eventually("the bad entry is reported", || async {
        matches!(watch.state().problem.as_deref(), Some(ReadError::Decode { key, .. }) if key == "app/p/d")
    })
    .await;
    assert_eq!(*watch.current().unwrap(), map(&[("b", 20), ("c", 3)]));
}

#[tokio::test]
async fn a_value_that_does_not_decode_keeps_the_last_good_one() {
    let agent = TestAgent::start().await;
    put(&agent, "app/d/config", &settings("good", 1)).await;
    let config = Config::consul([agent.base.clone()], options()).unwrap();
    let mut watch = config.watch::<Settings>("app/d/config", Format::Json);
    assert_eq!(next(&mut watch).await.greeting, "good");

    put(&agent, "app/d/config", "{\"greeting\": ").await;
    let state = tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            state.problem.as_deref(),
            Some(ReadError::Decode {
                format: Format::Json,
                ..
            })
        ),
        "{:?}",
        state.problem
    );
    assert_eq!(state.value.unwrap().value.greeting, "good");
    assert_eq!(watch.current().unwrap().greeting, "good");

    put(&agent, "app/d/config", &settings("fixed", 2)).await;
    assert_eq!(next(&mut watch).await.greeting, "fixed");
    assert!(watch.state().problem.is_none());
}
