//! The systems under test as child processes: a durable Signpost agent (`signpost agent
//! --data-dir`) or an etcd 3.4 server, each on free loopback ports with its data under a
//! directory the suite owns.
//!
//! A [`Server`] kills its process by PID (SIGKILL) when dropped, and every PID it spawns is
//! appended to the suite's PID file, so `bench/run.sh` can kill whatever survives a crash of the
//! harness itself.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::error::CompareError;
use super::target::{etcd_connect, http_client, System, Target};

/// How long a fresh server gets to answer (and, for Signpost, to lead).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The programs to run.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `signpost` binary (release build).
    pub signpost: PathBuf,
    /// The `etcd` binary (Debian `etcd-server`: etcd 3.4).
    pub etcd: PathBuf,
    /// An older `signpost` binary to measure the new one against ([`System::Baseline`]), or
    /// `None` for no baseline.
    pub baseline: Option<PathBuf>,
    /// A file every spawned PID is appended to, one per line (for `bench/run.sh`'s cleanup).
    pub pid_file: Option<PathBuf>,
}

/// One running (or killed) server process.
pub struct Server {
    system: System,
    program: PathBuf,
    /// Arguments, reused unchanged on [`Server::respawn`] (same ports, same data).
    args: Vec<OsString>,
    child: Option<Child>,
    /// Where the process talks to its clients.
    target: Target,
    /// stdout + stderr of every incarnation.
    log: PathBuf,
    pid_file: Option<PathBuf>,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16, CompareError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(CompareError::FreePort)
}

impl Server {
    /// Starts `system` with its data in `dir/data` (created fresh), its log in `dir/server.log`,
    /// and waits until it serves.
    pub async fn start(
        system: System,
        bins: &Binaries,
        dir: &Path,
    ) -> Result<Server, CompareError> {
        std::fs::create_dir_all(dir).map_err(|source| CompareError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let data = dir.join("data");
        let (program, args, target) = match system {
            System::Signpost | System::Baseline => {
                let program = match system {
                    System::Baseline => bins
                        .baseline
                        .clone()
                        .ok_or(CompareError::Setting("no baseline binary was given"))?,
                    _ => bins.signpost.clone(),
                };
                let port = free_port()?;
                // Every client of the benchmark is one address (127.0.0.1) holding up to
                // 10,000 watches: the per-client limits, meant to stop one client from crowding
                // out the others, are turned off, and so is the listener's connection cap (4,096
                // by default: more watches would wait in the backlog). The state limits are
                // raised past the memory scenario's 1,000,000 instances (250,000 by default).
                let config = dir.join("signpost.toml");
                std::fs::write(
                    &config,
                    "[limits]\nhttp_max_conns_per_client = 0\nmax_blocking_per_client = 0\nhttp_max_conns = 0\n\
                     max_instances = 2000000\nmax_instances_per_service = 2000000\n",
                )
                .map_err(|source| CompareError::Write {
                    path: config.clone(),
                    source,
                })?;
                let args: Vec<OsString> = vec![
                    "agent".into(),
                    "--config".into(),
                    config.into_os_string(),
                    "--data-dir".into(),
                    data.into_os_string(),
                    "--http-addr".into(),
                    format!("127.0.0.1:{port}").into(),
                    "--no-dns".into(),
                ];
                let base = format!("http://127.0.0.1:{port}");
                (program, args, Target::Signpost { base: base.into() })
            }
            System::Etcd => {
                let (client, peer) = (free_port()?, free_port()?);
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let args: Vec<OsString> = vec![
                    "--name=bench".into(),
                    format!("--data-dir={}", data.display()).into(),
                    format!("--listen-client-urls={client_url}").into(),
                    format!("--advertise-client-urls={client_url}").into(),
                    format!("--listen-peer-urls={peer_url}").into(),
                    format!("--initial-advertise-peer-urls={peer_url}").into(),
                    format!("--initial-cluster=bench={peer_url}").into(),
                    "--initial-cluster-state=new".into(),
                    // 1,000,000 instances of ~300 bytes with their leases and history exceed
                    // the default 2 GiB backend quota; 8 GiB keeps etcd writable.
                    "--quota-backend-bytes=8589934592".into(),
                    "--log-level=warn".into(),
                ];
                (
                    bins.etcd.clone(),
                    args,
                    Target::Etcd {
                        endpoint: client_url.into(),
                    },
                )
            }
        };
        let mut server = Server {
            system,
            program,
            args,
            child: None,
            target,
            log: dir.join("server.log"),
            pid_file: bins.pid_file.clone(),
        };
        server.respawn()?;
        server.wait_ready(READY_TIMEOUT).await?;
        Ok(server)
    }

    pub fn system(&self) -> System {
        self.system
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the process (again) with the same arguments; it does not wait for it to serve.
    pub fn respawn(&mut self) -> Result<(), CompareError> {
        if self.child.is_some() {
            return Err(CompareError::StillRunning {
                system: self.system.name(),
            });
        }
        let open_log = |source| CompareError::OpenLog {
            path: self.log.clone(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(open_log)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(open_log)?)
            .stderr(log);
        if self.system.is_signpost() {
            cmd.env("RUST_LOG", "warn");
        }
        let child = cmd.spawn().map_err(|source| CompareError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if let Some(path) = &self.pid_file {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{}", child.id());
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process by PID (SIGKILL, like a crash) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls until the server serves: Signpost answers `/api/v1/agent/self` as Raft leader,
    /// etcd answers a (linearizable, so leader-backed) read.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), CompareError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready().await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                let exited = child.try_wait().map_err(|source| CompareError::Poll {
                    system: self.system.name(),
                    source,
                })?;
                if let Some(status) = exited {
                    self.child = None;
                    return Err(CompareError::ExitedAtStart {
                        system: self.system.name(),
                        status,
                        log: self.log_tail(),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(CompareError::NotReady {
                    system: self.system.name(),
                    timeout,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&self) -> bool {
        match &self.target {
            Target::Signpost { base } => {
                let Ok(http) = http_client(Some(Duration::from_secs(1))) else {
                    return false;
                };
                let Ok(resp) = http.get(format!("{base}/api/v1/agent/self")).send().await else {
                    return false;
                };
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    return false;
                };
                body["raft"]["role"] == "leader"
            }
            Target::Etcd { endpoint } => {
                let probe = async {
                    let mut client = etcd_connect(endpoint).await.ok()?;
                    client.get("/bench-ready-probe", None).await.ok()
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), probe).await,
                    Ok(Some(_))
                )
            }
        }
    }

    /// The last lines of the server's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Size of the server's data directory in bytes.
    pub fn data_size(&self) -> u64 {
        let data = self.log.with_file_name("data");
        dir_size(&data)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// First line of `program --version`, for the report.
pub fn version_of(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Creates (truncating) the PID file.
pub fn reset_pid_file(path: &Path) -> Result<(), CompareError> {
    File::create(path).map_err(|source| CompareError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_cannot_start_says_which_program_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let bins = Binaries {
            signpost: dir.path().join("no-such-signpost"),
            etcd: "etcd".into(),
            baseline: None,
            pid_file: None,
        };
        let err = match Server::start(System::Signpost, &bins, &dir.path().join("s")).await {
            Ok(_) => panic!("a missing program started"),
            Err(e) => e,
        };
        let CompareError::Spawn { program, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(program, &bins.signpost);
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("cannot start {}", bins.signpost.display())
        );
    }

    #[tokio::test]
    async fn a_server_that_exits_at_start_shows_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let bins = Binaries {
            signpost: "false".into(),
            etcd: "etcd".into(),
            baseline: None,
            pid_file: None,
        };
        let err = match Server::start(System::Signpost, &bins, dir.path()).await {
            Ok(_) => panic!("`false` served"),
            Err(e) => e,
        };
        assert!(
            matches!(&err, CompareError::ExitedAtStart { system: "Signpost", status, .. } if !status.success()),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("Signpost exited at start ("),
            "{err}"
        );
    }
}
