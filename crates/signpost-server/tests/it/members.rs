//! Member traffic over real sockets: the `/raft/*` routes live on the dedicated Raft listener
//! only, a configured cluster secret is required of every member call, and a member's Raft
//! address is a host and port.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use signpost_server::agent::{Listeners, Listening};
use signpost_server::http::raft::SECRET_HEADER;
use signpost_server::{Agent, AgentConfig};
use signpost_testkit::{bind, eventually, http_client, Served};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// An agent served on 127.0.0.1 with a dedicated Raft listener (or none).
struct Member {
    agent: Arc<Agent>,
    http: SocketAddr,
    raft: Option<SocketAddr>,
    served: Served,
}

impl Member {
    async fn start(config: AgentConfig, dedicated_raft: bool) -> Member {
        let http_listener = bind(0).await;
        let http = http_listener.local_addr().unwrap();
        let raft_listener = if dedicated_raft {
            Some(bind(0).await)
        } else {
            None
        };
        let raft = raft_listener.as_ref().map(|l| l.local_addr().unwrap());
        let agent = Agent::start_with(config, Listening { http, raft })
            .await
            .expect("the agent starts");
        let serving = agent.clone();
        let served = Served::spawn("the agent", |stopped| async move {
            let listeners = Listeners {
                http: http_listener,
                raft: raft_listener,
                dns: None,
            };
            serving.serve_all(listeners, stopped).await.unwrap();
        });
        Member {
            agent,
            http,
            raft,
            served,
        }
    }

    fn raft_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.raft.unwrap_or(self.http))
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The Raft state a forged call could change: term, last log index, membership.
    fn raft_state(&self) -> (u64, Option<u64>, Vec<u64>) {
        let m = self.agent.raft().metrics().borrow().clone();
        let nodes = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        (m.current_term, m.last_log_index, nodes)
    }
}

fn config(id: u64, secret: Option<&str>) -> AgentConfig {
    let mut config = AgentConfig {
        dev: true,
        node_id: id,
        ..AgentConfig::default()
    };
    config.cluster.secret = secret.map(str::to_string);
    config.health.tick = signpost_core::model::Dur(20);
    config
}

/// An AppendEntries from a leader that does not exist, in a later term, carrying a log entry.
fn forged_append(term: u64) -> Value {
    json!({
        "vote": {"leader_id": {"term": term, "node_id": 66}, "committed": true},
        "prev_log_id": null,
        "entries": [{"log_id": {"leader_id": {"term": term, "node_id": 66}, "index": 1},
                     "payload": "Blank"}],
        "leader_commit": null
    })
}

#[tokio::test]
async fn raft_routes_answer_on_the_raft_listener_only() {
    let m = Member::start(config(1, None), true).await;
    eventually("the agent leads", || async { m.agent.is_leader() }).await;
    let client = http_client();
    let vote = json!({"vote": {"leader_id": {"term": 0, "node_id": 5}, "committed": false},
                      "last_log_id": null});
    for path in [
        "/raft/vote",
        "/raft/append",
        "/raft/join",
        "/raft/read_index",
    ] {
        let resp = client
            .post(m.http_url(path))
            .json(&vote)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path} on the public port");
    }
    let resp = client
        .post(m.raft_url("/raft/vote"))
        .json(&vote)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the raft listener answers a vote");
    // ...and serves nothing but the member routes.
    let resp = client
        .get(m.raft_url("/api/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        client
            .get(m.http_url("/api/v1/services"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Without a dedicated listener the HTTP port carries them (the single-port setup).
    let shared = Member::start(config(1, None), false).await;
    eventually("the agent leads", || async { shared.agent.is_leader() }).await;
    let resp = client
        .post(shared.http_url("/raft/vote"))
        .json(&vote)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop((m.served, shared.served));
}

#[tokio::test]
async fn forged_member_calls_without_the_secret_are_refused_and_change_nothing() {
    let m = Member::start(config(1, Some(SECRET)), true).await;
    eventually("the agent leads", || async { m.agent.is_leader() }).await;
    let before = m.raft_state();
    let client = http_client();
    let join = json!({"node_id": 9, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"});
    let forged_term = before.0 + 50;
    for secret in [
        None,
        Some("wrong-secret-wrong-secret-wrong-secret!"),
        Some(""),
    ] {
        for (path, body) in [
            ("/raft/append", forged_append(forged_term)),
            ("/raft/join", join.clone()),
            ("/raft/propose", json!({})),
        ] {
            let mut req = client.post(m.raft_url(path)).json(&body);
            if let Some(s) = secret {
                req = req.header(SECRET_HEADER, s);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with {secret:?}");
            let body: Value = resp.json().await.unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(error.contains("cluster secret"), "{error}");
        }
    }
    assert_eq!(m.raft_state(), before, "term, log and membership unchanged");
    assert!(m.agent.is_leader());

    // With the secret the same routes are reached: a join with a bad address is a 400 there,
    // and a read index is answered.
    let resp = client
        .post(m.raft_url("/raft/join"))
        .header(SECRET_HEADER, SECRET)
        .json(&json!({"node_id": 9, "raft_addr": "http://127.0.0.1:1/x", "http_addr": "h:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("host:port"),
        "{body}"
    );
    let resp = client
        .post(m.raft_url("/raft/read_index"))
        .header(SECRET_HEADER, SECRET)
        .json(&())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(m.raft_state(), before);
    drop(m.served);
}

#[tokio::test]
async fn members_sharing_the_secret_form_a_cluster_and_replicate() {
    let first = Member::start(config(1, Some(SECRET)), true).await;
    eventually("the first member leads", || async {
        first.agent.is_leader()
    })
    .await;
    let mut joining = config(2, Some(SECRET));
    joining.join = vec![first.http.to_string()];
    let second = Member::start(joining, true).await;
    eventually("both are voters", || async {
        first.raft_state().2 == [1, 2] && second.raft_state().2 == [1, 2]
    })
    .await;
    // A write on the follower is forwarded to the leader and replicated back.
    let client = http_client();
    let resp = client
        .put(second.http_url("/api/v1/kv/greeting"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the write is on the leader", || async {
        client
            .get(first.http_url("/api/v1/kv/greeting"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    drop((first.served, second.served));
}

#[tokio::test]
async fn a_member_address_must_be_a_host_and_port() {
    let m = Member::start(config(1, None), true).await;
    eventually("the agent leads", || async { m.agent.is_leader() }).await;
    let before = m.raft_state();
    let client = http_client();
    for bad in [
        "http://127.0.0.1:9000",
        "127.0.0.1:9000/raft",
        "user@127.0.0.1:9000",
        "127.0.0.1",
        "127.0.0.1:0",
        "",
    ] {
        let resp = client
            .post(m.http_url("/api/v1/cluster/join"))
            .json(&json!({"node_id": 4, "raft_addr": bad, "http_addr": "127.0.0.1:1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], "raft_addr", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("host:port"),
            "{body}"
        );
    }
    assert_eq!(m.raft_state(), before);
    drop(m.served);
}
