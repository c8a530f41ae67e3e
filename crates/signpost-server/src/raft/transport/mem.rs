//! An in-process network for cluster tests: each member's routers are attached under its
//! addresses, and a request is handed to the router with `tower::ServiceExt::oneshot` — no
//! sockets. The network can delay messages, lose them, and cut members off from each other.
//!
//! Links are directed and carry calls: cutting `a → b` stops the requests `a` sends to `b` (and
//! the answers to them), not the calls `b` makes to `a`. Cutting both directions is a
//! partition. Losses are drawn from a seeded generator, so a run's choices depend only on the
//! seed and the order messages arrive in. A lost message is reported to the caller at once
//! ([`TransportError::Dropped`]) rather than after its timeout, which keeps tests fast.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::ServiceExt;

use super::{PeerRequest, PeerResponse, Transport, TransportError};
use crate::raft::NodeId;

/// Why the network refused a request outright.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// No router is attached at the address.
    #[error("no member listens there")]
    NoListener,
    /// The caller's link to the member is cut.
    #[error("the link from member {from} to member {to} is cut")]
    Cut {
        /// The caller.
        from: NodeId,
        /// The member called.
        to: NodeId,
    },
}

/// A shared in-memory network. Clones share the same state.
#[derive(Clone)]
pub struct MemNetwork {
    /// Endpoints, faults and counters, behind one lock never held across an `.await`.
    state: Arc<Mutex<NetState>>,
}

/// A router attached at an address, and the member it belongs to (what faults are keyed by).
struct Endpoint {
    /// The member serving this address.
    member: NodeId,
    /// What answers requests sent here.
    router: Router,
}

/// Everything the network knows.
struct NetState {
    /// Address → what serves it.
    endpoints: HashMap<String, Endpoint>,
    /// Directed links that carry nothing: `(caller, callee)`.
    cut: HashSet<(NodeId, NodeId)>,
    /// Members cut off from every other member, in both directions.
    isolated: HashSet<NodeId>,
    /// Extra latency on the calls one member makes to another, `(caller, callee)`: added to
    /// the request and again to its answer.
    link_delays: HashMap<(NodeId, NodeId), Duration>,
    /// Latency of every message.
    delay: Duration,
    /// Probability that a message (a request, or its answer) is lost.
    drop_rate: f64,
    /// Draws the losses, seeded for repeatable runs.
    rng: StdRng,
    /// Requests delivered so far, by path, so tests can see which routes traffic took.
    delivered: HashMap<String, u64>,
    /// Messages lost so far (drawn losses and calls cut while under way).
    lost: u64,
}

impl NetState {
    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        from != to
            && (self.cut.contains(&(from, to))
                || self.isolated.contains(&from)
                || self.isolated.contains(&to))
    }

    fn delay(&self, from: NodeId, to: NodeId) -> Duration {
        self.delay
            + self
                .link_delays
                .get(&(from, to))
                .copied()
                .unwrap_or_default()
    }

    /// Whether the next message of a call from `from` to `to` is lost: cut while under way,
    /// or drawn; counted.
    fn lose(&mut self, from: NodeId, to: NodeId) -> bool {
        let lost =
            self.is_cut(from, to) || (self.drop_rate > 0.0 && self.rng.random_bool(self.drop_rate));
        self.lost += u64::from(lost);
        lost
    }
}

impl MemNetwork {
    /// An empty network with no faults; `seed` fixes the sequence of random losses.
    pub fn new(seed: u64) -> Self {
        MemNetwork {
            state: Arc::new(Mutex::new(NetState {
                endpoints: HashMap::new(),
                cut: HashSet::new(),
                isolated: HashSet::new(),
                link_delays: HashMap::new(),
                delay: Duration::ZERO,
                drop_rate: 0.0,
                rng: StdRng::seed_from_u64(seed),
                delivered: HashMap::new(),
                lost: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves requests sent to `addr` with `router`, on behalf of `member`.
    pub fn attach(&self, member: NodeId, addr: impl Into<String>, router: Router) {
        self.lock()
            .endpoints
            .insert(addr.into(), Endpoint { member, router });
    }

    /// Removes every address of `member`: requests to it find no listener, as after a crash.
    pub fn detach(&self, member: NodeId) {
        self.lock().endpoints.retain(|_, e| e.member != member);
    }

    /// Removes every address. The routers hold their agents, and the agents this network:
    /// detaching breaks that cycle so the agents can be dropped.
    pub fn detach_all(&self) {
        self.lock().endpoints.clear();
    }

    /// The transport `member` sends with.
    pub fn transport(&self, member: NodeId) -> Arc<dyn Transport> {
        self.transport_with_secret(member, None)
    }

    /// The transport `member` sends with, every request carrying the cluster secret `secret`.
    pub fn transport_with_secret(
        &self,
        member: NodeId,
        secret: Option<String>,
    ) -> Arc<dyn Transport> {
        Arc::new(MemTransport {
            net: self.clone(),
            from: member,
            secret,
        })
    }

    /// Stops the calls `from` makes to `to` (one direction).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts every link between a member of `a` and a member of `b`, both directions.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut st = self.lock();
        for &x in a {
            for &y in b {
                st.cut.insert((x, y));
                st.cut.insert((y, x));
            }
        }
    }

    /// Cuts `member` off from every other member, both directions, members attached later
    /// included.
    pub fn isolate(&self, member: NodeId) {
        self.lock().isolated.insert(member);
    }

    /// Restores every cut link and isolated member (delays and losses stay).
    pub fn heal(&self) {
        let mut st = self.lock();
        st.cut.clear();
        st.isolated.clear();
    }

    /// Loses each message (each request, each answer) with probability `rate` (clamped to
    /// `[0, 1]`; 1 loses everything).
    pub fn set_drop_rate(&self, rate: f64) {
        self.lock().drop_rate = rate.clamp(0.0, 1.0);
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Delays the calls `from` makes to `to` by `delay` more, the request and again its answer
    /// (zero removes it).
    pub fn set_link_delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        let mut st = self.lock();
        if delay.is_zero() {
            st.link_delays.remove(&(from, to));
        } else {
            st.link_delays.insert((from, to), delay);
        }
    }

    /// How many requests to `path` were delivered so far.
    pub fn delivered(&self, path: &str) -> u64 {
        self.lock().delivered.get(path).copied().unwrap_or_default()
    }

    /// How many messages were lost so far.
    pub fn lost(&self) -> u64 {
        self.lock().lost
    }

    /// Carries one call from `from` to `addr` and back.
    async fn exchange(
        &self,
        from: NodeId,
        addr: &str,
        request: PeerRequest,
        secret: Option<&str>,
    ) -> Result<PeerResponse, TransportError> {
        let unreachable = |why: Refused| TransportError::Unreachable {
            addr: addr.to_string(),
            source: Box::new(why),
        };
        let dropped = || TransportError::Dropped {
            addr: addr.to_string(),
        };
        let (to, router, there) = {
            let st = self.lock();
            let endpoint = st
                .endpoints
                .get(addr)
                .ok_or_else(|| unreachable(Refused::NoListener))?;
            let to = endpoint.member;
            if st.is_cut(from, to) {
                return Err(unreachable(Refused::Cut { from, to }));
            }
            (to, endpoint.router.clone(), st.delay(from, to))
        };
        if !there.is_zero() {
            tokio::time::sleep(there).await;
        }
        {
            let mut st = self.lock();
            if st.lose(from, to) {
                return Err(dropped());
            }
            *st.delivered.entry(request.path.clone()).or_default() += 1;
        }
        let mut http_request = http::Request::post(&request.path)
            .header(http::header::CONTENT_TYPE, request.kind.content_type());
        if let Some(secret) = secret {
            http_request = http_request.header(crate::http::raft::SECRET_HEADER, secret);
        }
        let http_request =
            http_request
                .body(Body::from(request.body))
                .map_err(|e| TransportError::Failed {
                    addr: addr.to_string(),
                    source: Box::new(e),
                })?;
        let response = match router.oneshot(http_request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body =
            axum::body::to_bytes(body, usize::MAX)
                .await
                .map_err(|e| TransportError::Failed {
                    addr: addr.to_string(),
                    source: Box::new(e),
                })?;
        let back = self.lock().delay(from, to);
        if !back.is_zero() {
            tokio::time::sleep(back).await;
        }
        let mut st = self.lock();
        if st.lose(from, to) {
            return Err(dropped());
        }
        Ok(PeerResponse {
            status: parts.status,
            body,
        })
    }
}

/// One member's handle on a [`MemNetwork`]: its requests leave from `from`.
struct MemTransport {
    /// The network carrying the requests.
    net: MemNetwork,
    /// The sending member, which cuts and link delays are keyed by.
    from: NodeId,
    /// The cluster secret its requests carry.
    secret: Option<String>,
}

#[async_trait]
impl Transport for MemTransport {
    async fn send(&self, addr: &str, request: PeerRequest) -> Result<PeerResponse, TransportError> {
        let after = request.timeout;
        let (net, from, to) = (self.net.clone(), self.from, addr.to_string());
        let secret = self.secret.clone();
        // The receiving side runs on its own task, as a server would: a caller that stops
        // waiting does not cancel what the request started.
        let exchange =
            tokio::spawn(async move { net.exchange(from, &to, request, secret.as_deref()).await });
        match tokio::time::timeout(after, exchange).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(TransportError::Failed {
                addr: addr.to_string(),
                source: Box::new(join),
            }),
            Err(_) => Err(TransportError::Timeout {
                addr: addr.to_string(),
                after,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use bytes::Bytes;

    /// Members 1, 2 and 3 at `m1`, `m2`, `m3`, each answering `/echo` with its own id and the
    /// body it got.
    fn three() -> MemNetwork {
        let net = MemNetwork::new(7);
        for id in 1..=3u64 {
            let router = Router::new().route(
                "/echo",
                post(move |body: Bytes| async move {
                    format!("{id}:{}", String::from_utf8_lossy(&body))
                }),
            );
            net.attach(id, format!("m{id}"), router);
        }
        net
    }

    fn echo(body: &'static str) -> PeerRequest {
        PeerRequest::binary("/echo", body, Duration::from_secs(1))
    }

    async fn call(net: &MemNetwork, from: NodeId, to: &str) -> Result<String, TransportError> {
        let reply = net.transport(from).send(to, echo("hi")).await?;
        assert_eq!(reply.status, http::StatusCode::OK);
        Ok(String::from_utf8(reply.body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_reach_the_router_at_the_address() {
        let net = three();
        assert_eq!(call(&net, 1, "m2").await.unwrap(), "2:hi");
        assert_eq!(call(&net, 3, "m1").await.unwrap(), "1:hi");
        assert_eq!(net.delivered("/echo"), 2);
        let err = call(&net, 1, "m9").await.unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
        let reply = net
            .transport(1)
            .send(
                "m2",
                PeerRequest::binary("/nope", "", Duration::from_secs(1)),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, http::StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn cuts_are_directed_and_heal() {
        let net = three();
        net.cut(1, 2);
        let err = call(&net, 1, "m2").await.unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
        assert_eq!(call(&net, 2, "m1").await.unwrap(), "1:hi");
        assert_eq!(call(&net, 1, "m3").await.unwrap(), "3:hi");

        net.partition(&[3], &[1, 2]);
        for (from, to) in [(3, "m1"), (3, "m2"), (1, "m3"), (2, "m3")] {
            assert!(call(&net, from, to).await.is_err(), "{from} → {to}");
        }
        net.heal();
        assert_eq!(call(&net, 1, "m2").await.unwrap(), "2:hi");
        assert_eq!(call(&net, 2, "m3").await.unwrap(), "3:hi");
    }

    #[tokio::test]
    async fn an_isolated_member_reaches_nobody_and_nobody_reaches_it() {
        let net = three();
        net.isolate(2);
        for (from, to) in [(2, "m1"), (2, "m3"), (1, "m2"), (3, "m2")] {
            assert!(call(&net, from, to).await.is_err(), "{from} → {to}");
        }
        assert_eq!(call(&net, 1, "m3").await.unwrap(), "3:hi");
        // Members attached later are cut off from it too.
        net.attach(
            4,
            "m4",
            Router::new().route("/echo", post(|| async { "4" })),
        );
        assert!(call(&net, 2, "m4").await.is_err());
        net.heal();
        assert_eq!(call(&net, 2, "m1").await.unwrap(), "1:hi");
        net.detach(1);
        assert!(call(&net, 2, "m1").await.is_err());
    }

    #[tokio::test]
    async fn losses_follow_the_rate() {
        let net = three();
        net.set_drop_rate(1.0);
        let err = call(&net, 1, "m2").await.unwrap_err();
        assert!(matches!(err, TransportError::Dropped { .. }), "{err}");
        assert_eq!(net.delivered("/echo"), 0, "a lost request is not delivered");
        assert_eq!(net.lost(), 1);

        net.set_drop_rate(0.3);
        let mut ok = 0;
        for _ in 0..400 {
            ok += u32::from(call(&net, 1, "m2").await.is_ok());
        }
        // Both the request and the answer survive: 0.7² ≈ 49 %.
        assert!((150..250).contains(&ok), "{ok} of 400 got through");
        net.set_drop_rate(0.0);
        assert!(call(&net, 1, "m2").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn delays_hold_messages_and_can_outlast_the_timeout() {
        let net = three();
        net.set_link_delay(1, 2, Duration::from_millis(400));
        let started = tokio::time::Instant::now();
        assert_eq!(call(&net, 1, "m2").await.unwrap(), "2:hi");
        assert!(started.elapsed() >= Duration::from_millis(400));
        // The other direction and other links are not slowed.
        let started = tokio::time::Instant::now();
        assert_eq!(call(&net, 2, "m1").await.unwrap(), "1:hi");
        assert!(started.elapsed() < Duration::from_millis(400));

        net.set_delay(Duration::from_millis(700));
        let err = call(&net, 1, "m2").await.unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        net.set_delay(Duration::ZERO);
        net.set_link_delay(1, 2, Duration::ZERO);
        assert!(call(&net, 1, "m2").await.is_ok());
    }

    #[tokio::test]
    async fn a_transport_with_a_secret_sends_it_with_every_request() {
        let net = MemNetwork::new(1);
        let router = Router::new().route(
            "/echo",
            post(|headers: http::HeaderMap| async move {
                headers
                    .get(crate::http::raft::SECRET_HEADER)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_else(|| "none".into())
            }),
        );
        net.attach(2, "m2", router);
        let with = net.transport_with_secret(1, Some("s3cret".into()));
        let reply = with.send("m2", echo("")).await.unwrap();
        assert_eq!(&reply.body[..], b"s3cret");
        let without = net.transport(1);
        let reply = without.send("m2", echo("")).await.unwrap();
        assert_eq!(&reply.body[..], b"none");
    }
}
