//! The shared harness: an in-process agent on 127.0.0.1:0 and a small HTTP client.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use signpost_server::{Agent, AgentConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running in-memory agent. Dropping it shuts the agent down.
pub struct TestAgent {
    pub agent: Arc<Agent>,
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestAgent {
    pub async fn start() -> TestAgent {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
        let mut config = AgentConfig {
            dev: true,
            ..AgentConfig::default()
        };
        config.health.tick = signpost_core::model::Dur(20);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let agent = Agent::start(config, addr).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = agent.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let t = TestAgent {
            agent,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            task: Some(task),
        };
        eventually("agent becomes leader", || async { t.agent.is_leader() }).await;
        t
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register(&self, service: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/services/{service}/instances")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Ids of `service`'s instances with `status` (`any` for all).
    pub async fn ids(&self, service: &str, status: &str) -> Vec<String> {
        let (code, body) = self
            .get(&format!(
                "/api/v1/services/{service}/instances?status={status}"
            ))
            .await;
        assert_eq!(code, 200, "{body}");
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The status of one instance, or None if it is not registered.
    pub async fn status_of(&self, service: &str, id: &str) -> Option<String> {
        let (code, body) = self
            .get(&format!("/api/v1/services/{service}/instances/{id}"))
            .await;
        (code == 200).then(|| body["status"].as_str().unwrap().to_string())
    }

    /// Shuts the agent down and waits until it has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("agent stops within its drain grace")
                .unwrap();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.agent.health.stop();
    }
}

/// Polls `check` every 10 ms until it holds, failing after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn instance(port: u16) -> Value {
    serde_json::json!({ "address": "10.0.0.1", "port": port })
}

/// A minimal Server-Sent Events reader for tests.
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    pub async fn open(t: &TestAgent, path: &str) -> SseReader {
        let resp = t.client.get(t.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event's name and JSON data, skipping keep-alive comments; fails after 10 s.
    pub async fn next(&mut self) -> (String, Value) {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("an SSE event within 10 s")
                .expect("stream still open")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
