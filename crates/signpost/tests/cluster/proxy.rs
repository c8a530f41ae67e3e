//! A fault-injecting TCP proxy in front of each node's Raft listener.
//!
//! Node `i` advertises its proxy as its Raft address, so every Raft RPC and every request
//! forwarded to it (`/raft/propose`, `/raft/read_index`, ...) passes through the proxy. The
//! proxy listens on the node's own loopback IP and knows every node's IP; a member's peer
//! client connects from its own Raft IP, so the source address of an accepted connection says
//! which node is calling.
//!
//! - A partition assigns each node a side: connections between sides are refused (accepted and
//!   closed at once) and open ones are cut. Callers the proxy does not know (the test) pass.
//! - While a node is down (killed), its proxy closes its listener, so callers get "connection
//!   refused" as they would from the dead node itself, and reopens it (same port) on restart.
//!   A paused node's proxy keeps relaying: its kernel still accepts, nobody answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The side each node is on (indexed by node index); `None` when all nodes see each other.
type Sides = Option<Vec<u8>>;

/// The network between the nodes: where every proxy is, and the faults in force.
pub struct Network {
    /// Node index → its loopback IP, to tell callers apart.
    ips: Arc<Vec<IpAddr>>,
    /// The current partition, watched by every proxy and every proxied connection.
    sides: watch::Sender<Sides>,
    /// Whether each node's process is up (its proxy listens only then).
    up: Vec<watch::Sender<bool>>,
    /// The proxies' accept loops (each owning its connections); aborted on drop.
    tasks: JoinSet<()>,
    /// Where each node's proxy listens (its advertised Raft address).
    proxies: Vec<SocketAddr>,
    /// Listeners bound by `bind`, waiting for `start` (which needs the nodes' Raft ports).
    pending: Vec<TcpListener>,
}

impl Network {
    /// Binds one proxy per node on that node's IP (port chosen by the kernel).
    pub async fn bind(ips: Vec<IpAddr>) -> Network {
        let mut listeners = Vec::new();
        for ip in &ips {
            let listener = TcpListener::bind((*ip, 0))
                .await
                .unwrap_or_else(|e| panic!("bind a proxy on {ip}: {e}"));
            listeners.push(listener);
        }
        let proxies = listeners
            .iter()
            .map(|l| l.local_addr().expect("proxy address"))
            .collect();
        Network {
            up: ips.iter().map(|_| watch::channel(true).0).collect(),
            ips: Arc::new(ips),
            sides: watch::channel(None).0,
            tasks: JoinSet::new(),
            proxies,
            pending: listeners,
        }
    }

    /// The address node `i` advertises for Raft.
    pub fn proxy_addr(&self, i: usize) -> SocketAddr {
        self.proxies[i]
    }

    /// Starts forwarding: proxy `i` relays to `backends[i]`, the node's real Raft listener.
    pub fn start(&mut self, backends: Vec<SocketAddr>) {
        let listeners = std::mem::take(&mut self.pending);
        assert_eq!(
            listeners.len(),
            backends.len(),
            "start() once, after bind()"
        );
        for (node, (listener, backend)) in listeners.into_iter().zip(backends).enumerate() {
            let proxy = Proxy {
                node,
                backend,
                ips: self.ips.clone(),
                sides: self.sides.subscribe(),
            };
            self.tasks
                .spawn(proxy.run(listener, self.up[node].subscribe()));
        }
    }

    /// Cuts the nodes in `minority` (indices) off from all the others, both ways.
    pub fn partition(&self, minority: &[usize]) {
        let sides = (0..self.ips.len())
            .map(|i| u8::from(minority.contains(&i)))
            .collect();
        self.sides.send_replace(Some(sides));
    }

    /// Lets every node reach every other again.
    pub fn heal(&self) {
        self.sides.send_replace(None);
    }

    /// Says whether node `i`'s process is up: while it is not, its proxy refuses connections.
    pub fn set_up(&self, i: usize, up: bool) {
        self.up[i].send_replace(up);
    }
}

/// Whether traffic from node `from` to node `to` is cut under `sides`.
fn blocked(sides: &Sides, from: usize, to: usize) -> bool {
    sides.as_ref().is_some_and(|s| s[from] != s[to])
}

/// One node's proxy.
struct Proxy {
    node: usize,
    /// The node's real Raft listener.
    backend: SocketAddr,
    ips: Arc<Vec<IpAddr>>,
    sides: watch::Receiver<Sides>,
}

impl Proxy {
    /// Accepts while the node is up; closes the listener while it is down, reopening it on the
    /// same address when it comes back.
    async fn run(self, listener: TcpListener, mut up: watch::Receiver<bool>) {
        let addr = listener.local_addr().expect("proxy address");
        let mut listener = Some(listener);
        let mut connections = JoinSet::new();
        loop {
            let Some(current) = &listener else {
                let _ = up.wait_for(|up| *up).await;
                listener = Some(rebind(addr).await);
                continue;
            };
            let accepted = tokio::select! {
                accepted = current.accept() => accepted,
                _ = up.wait_for(|up| !*up) => {
                    listener = None;
                    continue;
                }
            };
            while connections.try_join_next().is_some() {}
            match accepted {
                Ok((inbound, peer)) => self.relay(&mut connections, inbound, peer),
                // Out of file descriptors or similar: let it pass rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn relay(&self, connections: &mut JoinSet<()>, inbound: TcpStream, peer: SocketAddr) {
        let node = self.node;
        let caller = self.ips.iter().position(|ip| *ip == peer.ip());
        if let Some(from) = caller {
            if blocked(&self.sides.borrow(), from, node) {
                return;
            }
        }
        let mut sides = self.sides.clone();
        let backend = self.backend;
        connections.spawn(async move {
            let mut inbound = inbound;
            let Ok(Ok(mut outbound)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(backend)).await
            else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let cut = async {
                match caller {
                    Some(from) => {
                        let _ = sides.wait_for(|s| blocked(s, from, node)).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            // Either side closing closes both, as a dead node's connections do; a half-closed
            // relay would leave a request sent after the node died waiting for an answer.
            let (mut in_read, mut in_write) = inbound.split();
            let (mut out_read, mut out_write) = outbound.split();
            tokio::select! {
                _ = tokio::io::copy(&mut in_read, &mut out_write) => {}
                _ = tokio::io::copy(&mut out_read, &mut in_write) => {}
                _ = cut => {}
            }
        });
    }
}

/// Listens on `addr` again (a port this test process held a moment ago).
async fn rebind(addr: SocketAddr) -> TcpListener {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if tries < 100 => {
                tries += 1;
                eprintln!("rebinding proxy {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on proxy address {addr} again: {e}"),
        }
    }
}
