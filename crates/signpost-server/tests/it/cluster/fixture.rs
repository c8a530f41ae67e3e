//! An in-process cluster: agents in memory (`--dev` storage), wired by a [`MemNetwork`] instead
//! of sockets, with short Raft timeouts so an election takes a fraction of a second.
//!
//! Member `n` answers HTTP at `192.0.2.n:8500` and Raft at `192.0.2.n:8501` (a documentation
//! range: nothing there could ever answer a real socket). Member 1 starts the cluster; every
//! other member joins it through its join loop, as an agent started with `join` does. Tests talk
//! to a member through its HTTP router in process (a client is never cut off by the network's
//! faults, which are between members).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use signpost_core::model::Dur;
use signpost_server::agent::{Listening, StartOptions};
use signpost_server::raft::transport::mem::MemNetwork;
use signpost_server::raft::NodeId;
use signpost_server::{Agent, AgentConfig};
use tower::ServiceExt;

pub use signpost_testkit::eventually;

/// How long a write waits for its commit in these clusters: long enough for any healthy commit
/// in memory, short enough that a leader cut off from its quorum gives up quickly.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Member `id`'s HTTP address.
pub fn http_addr(id: NodeId) -> SocketAddr {
    let last = u8::try_from(id).expect("test clusters have fewer than 256 members");
    SocketAddr::from(([192, 0, 2, last], 8500))
}

/// Member `id`'s Raft address.
pub fn raft_addr(id: NodeId) -> SocketAddr {
    SocketAddr::new(http_addr(id).ip(), 8501)
}

/// One running member.
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// The agent itself.
    pub agent: Arc<Agent>,
    /// Its whole HTTP API, called in process.
    http: Router,
}

impl Member {
    /// Sends `method path` with an optional JSON body; the status and the JSON answer (`null`
    /// when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(path);
        let request = match body {
            Some(body) => request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("a well-formed request");
        let response = self
            .http
            .clone()
            .oneshot(request)
            .await
            .expect("routers do not fail");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a readable body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Registers instance `id` of `service` through this member: the status.
    pub async fn register(&self, service: &str, id: &str) -> StatusCode {
        let body = json!({ "id": id, "address": "10.0.0.1", "port": 8080 });
        let path = format!("/api/v1/services/{service}/instances");
        self.post(&path, body).await.0
    }

    /// The ids of `service`'s instances in this member's state (`consistent`: through the
    /// leader's read index), sorted; `None` if the read failed.
    pub async fn read_ids(&self, service: &str, consistent: bool) -> Option<Vec<String>> {
        let mut path = format!("/api/v1/services/{service}/instances?status=any");
        if consistent {
            path.push_str("&consistent");
        }
        let (status, body) = self.get(&path).await;
        if status != StatusCode::OK {
            return None;
        }
        let mut ids: Vec<String> = body["instances"]
            .as_array()
            .expect("a listing has instances")
            .iter()
            .map(|i| i["id"].as_str().expect("an instance has an id").to_string())
            .collect();
        ids.sort();
        Some(ids)
    }

    /// The ids of `service`'s instances this member has applied, sorted.
    pub async fn ids(&self, service: &str) -> Vec<String> {
        self.read_ids(service, false)
            .await
            .expect("a plain read always answers")
    }

    /// The voters and the leader in this member's view of the membership.
    pub async fn membership(&self) -> (Vec<NodeId>, Option<NodeId>) {
        let (status, body) = self.get("/api/v1/cluster/members").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut voters: Vec<NodeId> = body["members"]
            .as_array()
            .expect("members are a list")
            .iter()
            .filter(|m| m["voter"] == true)
            .map(|m| m["id"].as_u64().expect("a member has an id"))
            .collect();
        voters.sort_unstable();
        (voters, body["leader"].as_u64())
    }

    /// The leader this member follows (or is), if it knows one.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.agent.cluster().leader().map(|(id, _)| id)
    }
}

/// A running cluster and the network between its members.
pub struct Cluster {
    /// The network: partition, heal, delay and drop through it.
    pub net: MemNetwork,
    /// The members, in the order they were started.
    members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members and waits until each sees all `n` as voters and follows one leader.
    pub async fn start(n: u64) -> Cluster {
        let mut cluster = Cluster {
            net: MemNetwork::new(n),
            members: Vec::new(),
        };
        for _ in 0..n {
            cluster.add().await;
        }
        let all: Vec<NodeId> = (1..=n).collect();
        cluster.wait_for_voters(&all, &all).await;
        cluster.leader().await;
        cluster
    }

    /// Starts one more member; the first starts the cluster, each later one joins it through
    /// the first member's HTTP address. Returns its id without waiting for it to join.
    pub async fn add(&mut self) -> NodeId {
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let mut config = AgentConfig {
            dev: true,
            node_id: id,
            http_addr: http_addr(id),
            ..AgentConfig::default()
        };
        if id > 1 {
            config.join = vec![http_addr(1).to_string()];
        }
        config.health.tick = Dur(20);
        config.raft.heartbeat_interval = Dur(50);
        config.raft.election_timeout_min = Dur(200);
        config.raft.election_timeout_max = Dur(450);
        let listening = Listening {
            http: http_addr(id),
            raft: Some(raft_addr(id)),
        };
        let options = StartOptions {
            transport: Some(self.net.transport(id)),
            write_timeout: WRITE_TIMEOUT,
            ..StartOptions::from(listening)
        };
        let agent = Agent::start_with(config, options)
            .await
            .expect("an in-memory agent starts");
        // Attached before this task yields, so the join loop (spawned, not yet run on this
        // single-threaded runtime) finds the member reachable.
        let http = signpost_server::http::router(agent.clone());
        let raft = signpost_server::http::raft::router(agent.clone());
        self.net.attach(id, http_addr(id).to_string(), http.clone());
        self.net.attach(id, raft_addr(id).to_string(), raft);
        self.members.push(Member { id, agent, http });
        id
    }

    /// Member `id`.
    pub fn member(&self, id: NodeId) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// Every member's id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The members other than `id`.
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.ids().into_iter().filter(|&m| m != id).collect()
    }

    /// Waits until every member follows one leader, and returns it.
    pub async fn leader(&self) -> NodeId {
        self.leader_among(&self.ids()).await
    }

    /// Waits until the members `ids` all follow one of them, which leads, and returns it.
    pub async fn leader_among(&self, ids: &[NodeId]) -> NodeId {
        let agreed = || {
            let leaders: Vec<Option<NodeId>> =
                ids.iter().map(|&id| self.member(id).leader_id()).collect();
            match leaders.first() {
                Some(&Some(l))
                    if ids.contains(&l)
                        && self.member(l).agent.is_leader()
                        && leaders.iter().all(|&x| x == Some(l)) =>
                {
                    Some(l)
                }
                _ => None,
            }
        };
        eventually(
            &format!("members {ids:?} agree on a leader among them"),
            || async { agreed().is_some() },
        )
        .await;
        agreed().expect("just agreed")
    }

    /// Waits until every member in `at` sees exactly `voters` as the voters, the change done:
    /// no longer in its joint phase, where a quorum of the old voters is needed too (so a
    /// partition then could leave no side able to elect).
    pub async fn wait_for_voters(&self, at: &[NodeId], voters: &[NodeId]) {
        let what = format!("members {at:?} see voters {voters:?}, the change done");
        eventually(&what, || async {
            for &id in at {
                let member = self.member(id);
                let joint = member
                    .agent
                    .raft()
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_joint_config()
                    .len()
                    > 1;
                if joint || member.membership().await.0 != voters {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Waits until every member in `at` has applied exactly `ids` as `service`'s instances.
    pub async fn wait_for_ids(&self, at: &[NodeId], service: &str, ids: &[&str]) {
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        let what = format!("members {at:?} hold {service} = {want:?}");
        eventually(&what, || async {
            for &id in at {
                if self.member(id).ids(service).await != want {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Stops every member: Raft shut down, health checkers stopped, the network emptied.
    pub async fn stop(self) {
        self.net.detach_all();
        for m in &self.members {
            m.agent.shutdown().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The routers the network holds keep their agents alive: let them go, and stop what
        // would otherwise keep running until the runtime ends.
        self.net.detach_all();
        for m in &self.members {
            m.agent.begin_shutdown();
        }
    }
}
