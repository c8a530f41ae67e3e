//! A cluster of real `signpost agent` processes on loopback, each behind its fault-injecting
//! Raft proxy ([`crate::proxy`]), that a test can kill, restart, pause and partition.
//!
//! Node `i` (index `i`, Raft node id `i + 1`) listens on its own IP, `127.0.0.(11 + i)`, for
//! HTTP and Raft (ports picked free on that IP, kept across restarts), and advertises its proxy
//! (on the same IP) as its Raft address. Every process is killed when the cluster is dropped
//! (resumed first if paused), and a panicking test prints the tail of every node's log.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::proxy::Network;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// How long a node may take to start, join, or catch up (debug build, busy 2-core machine).
pub const SLOW: Duration = Duration::from_secs(30);

/// The nodes' log filter: the agent's own info logs, openraft's warnings, and the line saying a
/// follower installs a snapshot (`install_full_snapshot`), which the snapshot test looks for.
const RUST_LOG: &str = "info,openraft=warn,openraft::engine::handler::following_handler=info";

/// What a test may change about the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// 3 or 5.
    pub nodes: usize,
    /// `[raft] snapshot_every`.
    pub snapshot_every: u64,
}

/// What a node process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Running,
    /// Stopped with SIGSTOP.
    Paused,
    /// Killed with SIGKILL (and reaped).
    Dead,
}

/// Which nodes clients may send requests to, shared with the workload: a client of a real
/// deployment would stop using an agent it cannot reach.
pub struct Targets {
    /// Every node's HTTP address.
    pub http: Vec<SocketAddr>,
    /// Whether each node is running (not killed, not paused).
    up: Vec<AtomicBool>,
}

impl Targets {
    /// Indices of the nodes that are up now.
    pub fn up(&self) -> Vec<usize> {
        (0..self.http.len())
            .filter(|&i| self.up[i].load(Ordering::Relaxed))
            .collect()
    }
}

/// How one node sees the Raft group (from `/api/v1/agent/self`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub role: String,
    pub term: u64,
    /// Raft node id of the leader this node knows.
    pub leader: Option<u64>,
    pub applied: u64,
    pub last_log: u64,
    pub snapshot: Option<u64>,
    pub voters: usize,
}

impl Status {
    fn parse(body: &Value) -> Option<Status> {
        let raft = &body["raft"];
        Some(Status {
            role: raft["role"].as_str()?.to_string(),
            term: raft["term"].as_u64()?,
            leader: raft["leader"].as_u64(),
            applied: raft["applied_index"].as_u64().unwrap_or(0),
            last_log: raft["last_log_index"].as_u64().unwrap_or(0),
            snapshot: raft["snapshot_index"].as_u64(),
            voters: raft["members"]
                .as_array()?
                .iter()
                .filter(|m| m["voter"] == true)
                .count(),
        })
    }
}

/// One `signpost agent` process and how to start it again.
pub struct Node {
    /// Raft node id (index + 1).
    pub id: u64,
    pub http: SocketAddr,
    /// The real Raft listener (the proxy forwards here).
    pub raft: SocketAddr,
    /// `agent` arguments, the same on every start.
    args: Vec<OsString>,
    child: Mutex<Option<Child>>,
    pub run: Run,
    /// The current process's output (stdout and stderr together).
    log: PathBuf,
    log_dir: PathBuf,
    /// How many processes this node has had.
    starts: usize,
}

impl Node {
    fn spawn(&mut self) {
        self.starts += 1;
        self.log = self
            .log_dir
            .join(format!("node-{}.{}.log", self.id, self.starts));
        let out = File::create(&self.log).expect("create node log");
        let err = out.try_clone().expect("clone node log handle");
        let child = Command::new(BIN)
            .arg("agent")
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("SIGNPOST_FAULT_RUST_LOG").unwrap_or_else(|_| RUST_LOG.into()),
            )
            .env_remove("SIGNPOST_ADDR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the signpost binary");
        *self.child.lock().expect("child lock") = Some(child);
        self.run = Run::Running;
    }

    fn pid(&self) -> u32 {
        self.child
            .lock()
            .expect("child lock")
            .as_ref()
            .expect("a process")
            .id()
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed: {status}");
    }

    /// Panics (with the log) if a process that should be running has exited.
    pub fn assert_alive(&self) {
        if self.run == Run::Dead {
            return;
        }
        let mut child = self.child.lock().expect("child lock");
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            panic!(
                "node {} exited unexpectedly with {status}\n{}",
                self.id,
                self.log_tail(80)
            );
        }
    }

    /// Everything the current process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "----- node {} ({}), last {lines} lines -----\n{tail}",
            self.id,
            self.log.display()
        )
    }
}

/// The running cluster.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub net: Network,
    pub targets: Arc<Targets>,
    client: reqwest::Client,
    /// Data dirs, config and logs; removed on drop.
    dir: tempfile::TempDir,
}

/// An HTTP client that never goes through a proxy and never hangs.
pub fn client(timeout: Duration) -> reqwest::Client {
    signpost_tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

/// A port free a moment ago on `ip`.
/// A port free on `ip`, for a node to bind a moment later. It is taken from below the kernel's
/// ephemeral range: a port from that range (what binding port 0 gives) can be handed to one of
/// the nodes' own outgoing connections from `ip` (peer clients bind their source IP) between
/// this probe and the node's bind, and the node then fails to start.
fn free_port(ip: IpAddr) -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let span = high - low;
    // Start somewhere different in every test process, then walk.
    let seed = (std::process::id() as u16).wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = low + (seed + step) % span;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} below the ephemeral range");
}

impl Cluster {
    /// Starts `options.nodes` nodes: node 1 initialises the cluster, the others join it through
    /// its HTTP address. Returns once every node is a voter and all agree on the leader.
    pub async fn start(options: Options) -> Cluster {
        let n = options.nodes;
        let dir = tempfile::tempdir().expect("temp dir");
        let ips: Vec<IpAddr> = (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + i as u8)))
            .collect();
        let mut net = Network::bind(ips.clone()).await;
        let config = dir.path().join("signpost.toml");
        std::fs::write(
            &config,
            format!("[raft]\nsnapshot_every = {}\n", options.snapshot_every),
        )
        .expect("write config");
        let mut nodes: Vec<Node> = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let id = i as u64 + 1;
            let http = SocketAddr::new(*ip, free_port(*ip));
            let raft = SocketAddr::new(*ip, free_port(*ip));
            let data = dir.path().join(format!("data-{id}"));
            let mut args: Vec<OsString> = vec![
                "--config".into(),
                config.clone().into(),
                "--node-id".into(),
                id.to_string().into(),
                "--data-dir".into(),
                data.into(),
                "--http-addr".into(),
                http.to_string().into(),
                "--raft-addr".into(),
                raft.to_string().into(),
                "--raft-advertise-addr".into(),
                net.proxy_addr(i).to_string().into(),
                "--no-dns".into(),
            ];
            if let Some(first) = nodes.first() {
                args.push("--join".into());
                args.push(first.http.to_string().into());
            }
            nodes.push(Node {
                id,
                http,
                raft,
                args,
                child: Mutex::new(None),
                run: Run::Dead,
                log: PathBuf::new(),
                log_dir: dir.path().to_path_buf(),
                starts: 0,
            });
        }
        net.start(nodes.iter().map(|n| n.raft).collect());
        let targets = Arc::new(Targets {
            http: nodes.iter().map(|n| n.http).collect(),
            up: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut cluster = Cluster {
            nodes,
            net,
            targets,
            client: client(Duration::from_secs(1)),
            dir,
        };
        let started = Instant::now();
        cluster.spawn(0);
        cluster
            .poll(SLOW, "node 1 to lead its new cluster", |s| {
                s[0].as_ref().filter(|s| s.role == "leader").map(|_| ())
            })
            .await;
        for i in 1..n {
            cluster.spawn(i);
        }
        cluster
            .poll(SLOW, "every node to join as a voter", |s| {
                let all = s.iter().flatten().collect::<Vec<_>>();
                let joined = all.len() == n
                    && all.iter().all(|st| st.voters == n && st.leader.is_some())
                    && all.iter().all(|st| st.leader == all[0].leader);
                joined.then_some(())
            })
            .await;
        eprintln!(
            "cluster of {n} nodes up in {:?} ({})",
            started.elapsed(),
            cluster.dir.path().display()
        );
        cluster
    }

    fn spawn(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.targets.up[i].store(true, Ordering::Relaxed);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert_ne!(node.run, Run::Dead, "node {} is already dead", node.id);
        self.targets.up[i].store(false, Ordering::Relaxed);
        let mut child = node.child.lock().expect("child lock");
        let child = child.as_mut().expect("a process");
        let _ = child.kill();
        let _ = child.wait();
        node.run = Run::Dead;
        self.net.set_up(i, false);
    }

    /// Starts a killed node again: same arguments, data dir and ports.
    pub fn restart(&mut self, i: usize) {
        assert_eq!(self.nodes[i].run, Run::Dead, "restart needs a dead node");
        self.net.set_up(i, true);
        self.spawn(i);
    }

    /// SIGSTOP.
    pub fn pause(&mut self, i: usize) {
        assert_eq!(self.nodes[i].run, Run::Running);
        self.targets.up[i].store(false, Ordering::Relaxed);
        self.nodes[i].signal("-STOP");
        self.nodes[i].run = Run::Paused;
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        assert_eq!(self.nodes[i].run, Run::Paused);
        self.nodes[i].signal("-CONT");
        self.nodes[i].run = Run::Running;
        self.targets.up[i].store(true, Ordering::Relaxed);
    }

    /// Indices of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].run == Run::Running)
            .collect()
    }

    /// The index of the node with Raft id `id`.
    pub fn index_of(&self, id: u64) -> usize {
        usize::try_from(id - 1).expect("small ids")
    }

    /// `/api/v1/agent/self` of node `i`, if it answers.
    pub async fn status(&self, i: usize) -> Option<Status> {
        let url = format!("http://{}/api/v1/agent/self", self.nodes[i].http);
        let resp = self.client.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        Status::parse(&resp.json::<Value>().await.ok()?)
    }

    /// Every node's status (`None` for nodes not running or not answering).
    pub async fn statuses(&self) -> Vec<Option<Status>> {
        for node in &self.nodes {
            node.assert_alive();
        }
        let asks = (0..self.nodes.len()).map(|i| async move {
            if self.nodes[i].run == Run::Running {
                self.status(i).await
            } else {
                None
            }
        });
        futures::future::join_all(asks).await
    }

    /// Polls every node's status until `check` returns `Some`; panics after `timeout` with the
    /// last statuses.
    pub async fn poll<T>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl FnMut(&[Option<Status>]) -> Option<T>,
    ) -> T {
        self.poll_every(POLL, timeout, what, check).await
    }

    /// [`Cluster::poll`], asking every `interval`.
    pub async fn poll_every<T>(
        &self,
        interval: Duration,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[Option<Status>]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses().await;
            if let Some(v) = check(&statuses) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; statuses: {statuses:#?}"
            );
            tokio::time::sleep(interval).await;
        }
    }

    /// Waits until every running node names the same leader in the same term, and that node
    /// says it leads. Returns the leader's index and status.
    pub async fn stable_leader(&self) -> (usize, Status) {
        let running = self.running();
        self.poll(SLOW, "the running nodes to agree on a leader", |s| {
            let first = s[running[0]].as_ref()?;
            let leader = first.leader?;
            let agreed = running.iter().all(|&i| {
                s[i].as_ref()
                    .is_some_and(|st| st.leader == Some(leader) && st.term == first.term)
            });
            let li = self.index_of(leader);
            let leads = s[li].as_ref().is_some_and(|st| st.role == "leader");
            (agreed && leads).then(|| (li, s[li].clone().expect("leader status")))
        })
        .await
    }

    /// Waits until one of `among` reports that it leads in a term above `term`; returns its
    /// index, status, and how long that took from `since`.
    pub async fn new_leader(
        &self,
        among: &[usize],
        term: u64,
        since: Instant,
        timeout: Duration,
    ) -> (usize, Status, Duration) {
        let what = format!("one of {among:?} to lead in a term above {term}");
        self.poll(timeout, &what, |s| {
            among.iter().find_map(|&i| {
                s[i].as_ref()
                    .filter(|st| st.role == "leader" && st.term > term)
                    .map(|st| (i, st.clone(), since.elapsed()))
            })
        })
        .await
    }

    /// Waits until every running node has applied at least what the leader had in its log
    /// when this was called. Returns the leader's index.
    pub async fn caught_up(&self) -> usize {
        let (leader, status) = self.stable_leader().await;
        let target = status.last_log;
        let running = self.running();
        self.poll(SLOW, &format!("every node to apply up to {target}"), |s| {
            running
                .iter()
                .all(|&i| s[i].as_ref().is_some_and(|st| st.applied >= target))
                .then_some(())
        })
        .await;
        leader
    }

    /// The ids of `service` as node `i` holds them now (a local read).
    pub async fn local_set(&self, i: usize, service: &str) -> BTreeSet<u64> {
        let url = format!(
            "http://{}/api/v1/services/{service}/instances?status=any",
            self.nodes[i].http
        );
        let body: Value = client(Duration::from_secs(10))
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        crate::workload::ids_of(&body).unwrap_or_else(|| panic!("GET {url}: odd body {body}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking =
            std::thread::panicking() || std::env::var_os("SIGNPOST_FAULT_LOGS").is_some();
        for node in &mut self.nodes {
            if let Some(child) = node.child.get_mut().ok().and_then(Option::as_mut) {
                if node.run == Run::Paused {
                    let _ = Command::new("kill")
                        .args(["-CONT", &child.id().to_string()])
                        .status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            if panicking {
                eprintln!("{}", node.log_tail(60));
            }
        }
        if std::env::var_os("SIGNPOST_FAULT_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept {}", self.dir.path().display());
        }
    }
}
