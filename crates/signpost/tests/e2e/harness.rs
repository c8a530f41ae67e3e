//! Shared harness of the end-to-end tests: runs the real `signpost` binary as a child process
//! on a free loopback port, with its output captured to files, and talks to it over HTTP.
//!
//! Every [`Agent`] kills its process when dropped, so no test leaves one behind, and prints the
//! agent's log when dropped during a panic, so a failing test shows what the agent said.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// How long an agent may take from spawn to leading (debug build, busy 2-core machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers the log files of every agent process this test binary starts.
static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// An HTTP client that never goes through a proxy and never hangs forever.
pub fn client() -> reqwest::Client {
    signpost_tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A client without a whole-request timeout, for long-lived requests (watch streams,
/// blocking queries).
pub fn streaming_client() -> reqwest::Client {
    signpost_tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

/// A running (or stopped) `signpost agent` process.
pub struct Agent {
    child: Child,
    port: u16,
    /// `agent` arguments other than `--http-addr`, reused on restart.
    args: Vec<OsString>,
    log_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// When the current process was spawned.
    pub spawned_at: Instant,
    exit: Option<ExitStatus>,
    client: reqwest::Client,
}

impl Agent {
    /// Spawns `signpost agent ARGS --http-addr 127.0.0.1:PORT` with its output in `log_dir`,
    /// without waiting for it.
    pub fn spawn<I, S>(log_dir: &Path, args: I) -> Agent
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let (child, port, stdout_path, stderr_path) = launch(log_dir, &args);
        Agent {
            child,
            port,
            args,
            log_dir: log_dir.to_path_buf(),
            stdout_path,
            stderr_path,
            spawned_at: Instant::now(),
            exit: None,
            client: client(),
        }
    }

    /// Spawns an agent and waits until it leads its Raft group. Panics (with the agent's log)
    /// if it does not get there.
    pub async fn start<I, S>(log_dir: &Path, args: I) -> Agent
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut agent = Agent::spawn(log_dir, args);
        agent.ready_or_retry().await;
        agent
    }

    /// Starts a new process with the same arguments (and a new port) once the current one has
    /// stopped; waits until it is ready and returns how long that took from spawn.
    pub async fn restart(&mut self) -> Duration {
        assert!(
            self.exit.is_some() || self.child.try_wait().ok().flatten().is_some(),
            "restart() needs the previous agent process to have exited"
        );
        self.respawn();
        self.ready_or_retry().await
    }

    fn respawn(&mut self) {
        let (child, port, stdout_path, stderr_path) = launch(&self.log_dir, &self.args);
        self.child = child;
        self.port = port;
        self.stdout_path = stdout_path;
        self.stderr_path = stderr_path;
        self.spawned_at = Instant::now();
        self.exit = None;
    }

    /// Waits for readiness; if the process lost the race for one of its ports (another process
    /// took a port between our probe and the agent's bind), starts it again on other ports, up
    /// to a few times.
    async fn ready_or_retry(&mut self) -> Duration {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            match self.wait_ready(READY_TIMEOUT).await {
                Ok(took) => return took,
                Err(e)
                    if attempt < ATTEMPTS
                        && self.exit.is_some()
                        && self.stderr().contains("cannot listen") =>
                {
                    eprintln!("agent could not listen ({e}); retrying on other ports");
                    self.respawn();
                }
                Err(e) => panic!("{e}\n{}", self.logs()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Polls `GET /api/v1/agent/self` until it answers 200 with `raft.role == "leader"`.
    /// Returns the time from spawn to ready; fails early if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        let url = self.url("/api/v1/agent/self");
        let mut last;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "the agent exited with {status} before it was ready"
                ));
            }
            let attempt = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            match attempt {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
                    match resp.json::<Value>().await {
                        Ok(body) if body["raft"]["role"] == "leader" => {
                            return Ok(self.spawned_at.elapsed())
                        }
                        Ok(body) => last = format!("not leader yet: raft = {}", body["raft"]),
                        Err(e) => last = format!("unreadable body: {e}"),
                    }
                }
                Ok(resp) => last = format!("answered {}", resp.status()),
                Err(e) => last = format!("request failed: {e}"),
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the agent was not ready within {timeout:?}; last: {last}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The agent's base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `base_url()` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exit = Some(status);
        }
    }

    /// Sends SIGTERM (without waiting for the process to exit).
    pub fn sigterm(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Polls until the process exits or `timeout` passes.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the current process wrote to stdout so far (its log lines).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What the current process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Both output streams of the current process, for failure messages.
    pub fn logs(&self) -> String {
        let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        format!(
            "----- agent stdout ({}) -----\n{stdout}\n----- agent stderr ({}) -----\n{}\n-----",
            self.stdout_path.display(),
            self.stderr_path.display(),
            self.stderr()
        )
    }

    /// `GET path` answered with 200; returns the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON {e}: {body}"))
    }

    /// `GET /api/v1/agent/self`.
    pub async fn agent_self(&self) -> Value {
        self.get_json("/api/v1/agent/self").await
    }

    /// Every instance of `service`, whatever its status.
    pub async fn instances(&self, service: &str) -> Vec<Value> {
        let body = self
            .get_json(&format!("/api/v1/services/{service}/instances?status=any"))
            .await;
        body["instances"]
            .as_array()
            .unwrap_or_else(|| panic!("no instances array in {body}"))
            .clone()
    }

    /// `POST /api/v1/services/{service}/instances`; returns the status and the JSON body.
    pub async fn register(&self, service: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/services/{service}/instances")))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("register {service} {body}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// `DELETE /api/v1/services/{service}/instances/{id}`; returns the status.
    pub async fn deregister(&self, service: &str, id: &str) -> u16 {
        self.client
            .delete(self.url(&format!("/api/v1/services/{service}/instances/{id}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("deregister {service}/{id}: {e}"))
            .status()
            .as_u16()
    }

    /// `PUT .../heartbeat`; returns the status and the JSON body.
    pub async fn heartbeat(&self, service: &str, id: &str) -> (u16, Value) {
        let resp = self
            .client
            .put(self.url(&format!(
                "/api/v1/services/{service}/instances/{id}/heartbeat"
            )))
            .send()
            .await
            .unwrap_or_else(|e| panic!("heartbeat {service}/{id}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Spawns one agent process on a fresh port; returns it with its port and log paths.
fn launch(log_dir: &Path, args: &[OsString]) -> (Child, u16, PathBuf, PathBuf) {
    let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
    let stdout_path = log_dir.join(format!("agent-{n}.stdout"));
    let stderr_path = log_dir.join(format!("agent-{n}.stderr"));
    let port = free_port();
    let mut command = Command::new(BIN);
    command
        .arg("agent")
        .args(args)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"));
    // DNS on a port of its own choosing, unless the test says otherwise: never the shared 8600.
    if !args.iter().any(|a| a == "--dns-addr" || a == "--no-dns") {
        command.args(["--dns-addr", "127.0.0.1:0"]);
    }
    let child = command
        .env("RUST_LOG", "info,openraft=warn")
        .env_remove("SIGNPOST_ADDR")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create stdout log"))
        .stderr(File::create(&stderr_path).expect("create stderr log"))
        .spawn()
        .expect("spawn the signpost binary");
    (child, port, stdout_path, stderr_path)
}

/// Output of a short-lived `signpost` invocation.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `signpost ARGS` to completion (killing it after `timeout`), in `cwd`.
pub async fn run_signpost(cwd: &Path, args: &[&str], timeout: Duration) -> Run {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("SIGNPOST_ADDR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the signpost binary");
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`signpost {}` did not finish within {timeout:?}",
                args.join(" ")
            )
        })
        .expect("wait for signpost");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `check` every [`POLL`] until it returns `Some`, or panics with `what` after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
