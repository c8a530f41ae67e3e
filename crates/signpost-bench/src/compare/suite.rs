//! The suite: every scenario against both systems, `runs` times, each (run, scenario, system)
//! on a fresh server with a fresh data directory, systems interleaved so both see the same
//! background noise. Results are kept as samples; the report takes medians.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::consul::ConsulRead;
use super::error::CompareError;
use super::server::{Binaries, Server};
use super::target::{error_chain, System, Target};
use super::watch_memory;
use super::workload::{self, Fill, HeartbeatOptions, ReadKind, Reads};
use crate::payload;

/// Default of [`HeartbeatOptions::batch`]: a host with many instances renews those due within
/// 200 ms in one request (each a little early; the TTL is three intervals).
pub const HEARTBEAT_BATCH: Duration = Duration::from_millis(200);
use crate::stats::{load_average, rss_bytes};

/// The scenarios of the issue, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    Register,
    Discover,
    /// The Consul face's listings (Signpost only; see [`super::consul`]).
    Consul,
    Heartbeat,
    Watch,
    Memory,
    Restart,
    /// Resident bytes per open watch, with [`Plan::open_watches`] open (Signpost only).
    WatchMemory,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Register,
        Scenario::Discover,
        Scenario::Consul,
        Scenario::Heartbeat,
        Scenario::Watch,
        Scenario::Memory,
        Scenario::Restart,
        Scenario::WatchMemory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Discover => "discover",
            Scenario::Consul => "consul",
            Scenario::Heartbeat => "heartbeat",
            Scenario::Watch => "watch",
            Scenario::Memory => "memory",
            Scenario::Restart => "restart",
            Scenario::WatchMemory => "watch-memory",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether the scenario can run on `system`: etcd has no Consul face, and an etcd watch is
    /// a stream in a shared connection, not an open watch of its own.
    pub fn runs_on(self, system: System) -> bool {
        match self {
            Scenario::Consul | Scenario::WatchMemory => system.is_signpost(),
            _ => true,
        }
    }
}

/// Which preset a plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The numbers of the issue, 3 runs.
    Full,
    /// Smaller numbers, 1 run: for iterating on the harness or the product.
    Quick,
    /// Tiny numbers: the test suite's smoke run.
    Smoke,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke",
        }
    }
}

/// What to run, with which numbers.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    /// Repetitions of every scenario (the report gives the median and the range).
    pub runs: usize,
    pub scenarios: Vec<Scenario>,
    /// Whether etcd runs too (`--no-etcd` turns it off when only the new/old ratios against
    /// a baseline binary are wanted; its cells are then `–`).
    pub etcd: bool,
    /// Services registrations are spread over.
    pub services: u64,
    /// register: instances registered, and by how many connections.
    pub register_count: u64,
    pub register_clients: usize,
    /// discover: connections, length of each query phase, instances per queried service.
    pub discover_clients: usize,
    pub discover_duration: Duration,
    pub discover_sizes: Vec<u64>,
    /// heartbeat: the renewal load.
    pub heartbeat: HeartbeatOptions,
    /// watch: watcher counts, and how long to wait for the last watcher.
    pub watchers: Vec<usize>,
    pub watch_wait: Duration,
    /// watch-memory: watches held open at once (fewer when `ulimit -n` is lower).
    pub open_watches: usize,
    /// memory: instance counts at which RSS is read (filled in this order, one server).
    pub memory_counts: Vec<u64>,
    /// restart: instance counts a killed server restarts with.
    pub restart_counts: Vec<u64>,
    /// Connections that fill a server for memory and restart.
    pub fill_clients: usize,
    /// Wait before reading RSS, so the server finishes what the last writes started.
    pub settle: Duration,
}

/// TTL of instances that must not expire during a measurement but still carry a check.
const LONG_TTL: Duration = Duration::from_secs(3600);

impl Plan {
    /// The issue's numbers: about 35 minutes on a 2-core machine.
    pub fn full() -> Plan {
        Plan {
            mode: Mode::Full,
            runs: 3,
            scenarios: Scenario::ALL.to_vec(),
            etcd: true,
            services: 1_000,
            register_count: 30_000,
            register_clients: 64,
            discover_clients: 64,
            discover_duration: Duration::from_secs(10),
            discover_sizes: vec![10, 100],
            heartbeat: HeartbeatOptions {
                instances: 100_000,
                clients: 200,
                services: 1_000,
                interval: Duration::from_secs(5),
                ttl: Duration::from_secs(15),
                window: Duration::from_secs(30),
                setup_limit: Duration::from_secs(150),
                batch: HEARTBEAT_BATCH,
            },
            watchers: vec![1_000, 10_000],
            watch_wait: Duration::from_secs(30),
            open_watches: 100_000,
            memory_counts: vec![100_000, 1_000_000],
            restart_counts: vec![100_000, 1_000_000],
            // Filling is not measured: many connections let etcd batch more per fsync.
            fill_clients: 256,
            settle: Duration::from_secs(3),
        }
    }

    /// Smaller numbers, one run: a couple of minutes.
    pub fn quick() -> Plan {
        Plan {
            mode: Mode::Quick,
            runs: 1,
            register_count: 5_000,
            discover_duration: Duration::from_secs(3),
            heartbeat: HeartbeatOptions {
                instances: 10_000,
                clients: 50,
                services: 100,
                interval: Duration::from_secs(5),
                ttl: Duration::from_secs(15),
                window: Duration::from_secs(5),
                setup_limit: Duration::from_secs(60),
                batch: HEARTBEAT_BATCH,
            },
            watchers: vec![100, 1_000],
            watch_wait: Duration::from_secs(10),
            open_watches: 10_000,
            memory_counts: vec![10_000, 50_000],
            restart_counts: vec![10_000, 50_000],
            settle: Duration::from_secs(1),
            ..Plan::full()
        }
    }

    /// Tiny numbers, seconds per system: the smoke test.
    pub fn smoke() -> Plan {
        Plan {
            mode: Mode::Smoke,
            runs: 1,
            services: 10,
            register_count: 200,
            register_clients: 8,
            discover_clients: 4,
            discover_duration: Duration::from_millis(500),
            discover_sizes: vec![10],
            heartbeat: HeartbeatOptions {
                instances: 50,
                clients: 5,
                services: 5,
                // etcd's shortest lease is 1.5 × its election timeout (1 s): 1.5 s.
                interval: Duration::from_millis(1000),
                ttl: Duration::from_secs(3),
                window: Duration::from_secs(2),
                setup_limit: Duration::from_secs(30),
                batch: HEARTBEAT_BATCH,
            },
            watchers: vec![20],
            watch_wait: Duration::from_secs(10),
            open_watches: 50,
            memory_counts: vec![300],
            restart_counts: vec![300],
            fill_clients: 8,
            settle: Duration::from_millis(200),
            ..Plan::full()
        }
    }

    /// The systems of run `run` (from 1), in the order they run each scenario. With a
    /// baseline binary the old and the new Signpost alternate, old first in odd runs and new
    /// first in even ones, so neither always runs on the machine the other just warmed; etcd
    /// comes last, when it runs at all.
    pub fn systems(&self, baseline: bool, run: usize) -> Vec<System> {
        let mut systems = if !baseline {
            vec![System::Signpost]
        } else if run % 2 == 1 {
            vec![System::Baseline, System::Signpost]
        } else {
            vec![System::Signpost, System::Baseline]
        };
        if self.etcd {
            systems.push(System::Etcd);
        }
        systems
    }

    /// Steps the suite takes (scenario × system × run, where the scenario runs on the
    /// system), for the progress bar.
    pub fn steps(&self, baseline: bool) -> u64 {
        let mut steps = 0;
        for run in 1..=self.runs {
            for system in self.systems(baseline, run) {
                steps += self.scenarios.iter().filter(|s| s.runs_on(system)).count();
            }
        }
        steps as u64
    }
}

/// Where the suite runs and what it runs with.
#[derive(Debug, Clone)]
pub struct Environment {
    pub bins: Binaries,
    /// Data dirs and server logs live under here (removed step by step unless `keep`).
    pub work_dir: PathBuf,
    /// Keep every data dir and log.
    pub keep: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric key, e.g. `register.rate`, `watch.10000.p99_ms`.
    pub key: String,
    pub system: System,
    pub run: usize,
    pub value: f64,
}

/// Median, minimum and maximum of a metric's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }
}

/// Everything a suite run found.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub samples: Vec<Sample>,
    /// Steps that failed, with why.
    pub failures: Vec<String>,
    /// Whether a Signpost step failed. A failed etcd step (etcd could not keep up with a
    /// scenario on this machine) is a result to report, not a failure of the run.
    pub signpost_failed: bool,
    /// Load averages (1, 5, 15 min) with when they were read.
    pub loads: Vec<(String, [f64; 3])>,
    /// Wall time of the whole suite.
    pub elapsed: Duration,
}

impl Results {
    pub fn add(&mut self, key: impl Into<String>, system: System, run: usize, value: f64) {
        self.samples.push(Sample {
            key: key.into(),
            system,
            run,
            value,
        });
    }

    /// The sample of `key` for `system` in run `run`, if it was measured.
    pub fn value(&self, key: &str, system: System, run: usize) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.key == key && s.system == system && s.run == run)
            .map(|s| s.value)
    }

    pub fn stat(&self, key: &str, system: System) -> Option<Stat> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.key == key && s.system == system)
            .map(|s| s.value)
            .collect();
        Stat::of(&values)
    }

    /// Every key, in first-recorded order.
    pub fn keys(&self) -> Vec<&str> {
        let mut seen = BTreeMap::new();
        for (n, s) in self.samples.iter().enumerate() {
            seen.entry(s.key.as_str()).or_insert(n);
        }
        let mut keys: Vec<(&str, usize)> = seen.into_iter().collect();
        keys.sort_by_key(|&(_, n)| n);
        keys.into_iter().map(|(k, _)| k).collect()
    }

    fn note_load(&mut self, when: String) {
        if let Some(l) = load_average() {
            self.loads.push((when, l));
        }
    }
}

/// Runs the plan. A failing step is recorded in [`Results::failures`] and the suite goes on.
pub async fn run(plan: &Plan, env: &Environment) -> Result<Results, CompareError> {
    std::fs::create_dir_all(&env.work_dir).map_err(|source| CompareError::CreateDir {
        path: env.work_dir.clone(),
        source,
    })?;
    let bars = MultiProgress::with_draw_target(if env.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let baseline = env.bins.baseline.is_some();
    let main = bars.add(ProgressBar::new(plan.steps(baseline)));
    main.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut results = Results::default();
    results.note_load("start".to_string());
    for run in 1..=plan.runs {
        results.note_load(format!("run {run} start"));
        for &scenario in &plan.scenarios {
            for system in plan.systems(baseline, run) {
                if !scenario.runs_on(system) {
                    continue;
                }
                main.set_message(format!(
                    "run {run}/{}: {} on {}",
                    plan.runs,
                    scenario.name(),
                    system.name()
                ));
                let phase = bars.add(ProgressBar::new(0));
                phase.set_style(
                    ProgressStyle::with_template("  {msg:<28} [{bar:30}] {pos}/{len}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                let dir = env.work_dir.join(format!(
                    "run{run}-{}-{}",
                    scenario.name(),
                    match system {
                        System::Signpost => "signpost",
                        System::Baseline => "baseline",
                        System::Etcd => "etcd",
                    }
                ));
                let step = Step {
                    plan,
                    env,
                    system,
                    run,
                    dir: &dir,
                    pb: &phase,
                };
                if let Err(e) = step.run(scenario, &mut results).await {
                    let message = format!(
                        "run {run}, {} on {}: {}",
                        scenario.name(),
                        system.name(),
                        error_chain(&e)
                    );
                    bars.suspend(|| eprintln!("warning: {message}"));
                    results.failures.push(message);
                    results.signpost_failed |= system.is_signpost();
                }
                phase.finish_and_clear();
                bars.remove(&phase);
                if !env.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                main.inc(1);
            }
        }
    }
    results.note_load("end".to_string());
    main.finish_and_clear();
    results.elapsed = started.elapsed();
    Ok(results)
}

/// One scenario on one system in one run.
struct Step<'a> {
    plan: &'a Plan,
    env: &'a Environment,
    system: System,
    run: usize,
    dir: &'a Path,
    pb: &'a ProgressBar,
}

impl Step<'_> {
    fn add(&self, results: &mut Results, key: impl Into<String>, value: f64) {
        results.add(key, self.system, self.run, value);
    }

    async fn start(&self, sub: &str) -> Result<Server, CompareError> {
        Server::start(self.system, &self.env.bins, &self.dir.join(sub)).await
    }

    fn label(&self, what: &str) {
        self.pb
            .set_message(format!("{what} ({})", self.system.name()));
    }

    async fn run(&self, scenario: Scenario, results: &mut Results) -> Result<(), CompareError> {
        match scenario {
            Scenario::Register => self.register(results).await,
            Scenario::Discover => self.discover(results).await,
            Scenario::Consul => self.consul(results).await,
            Scenario::Heartbeat => self.heartbeat(results).await,
            Scenario::Watch => self.watch(results).await,
            Scenario::Memory => self.memory(results).await,
            Scenario::Restart => self.restart(results).await,
            Scenario::WatchMemory => self.watch_memory(results).await,
        }
    }

    async fn register(&self, results: &mut Results) -> Result<(), CompareError> {
        let plan = self.plan;
        let server = self.start("server").await?;
        self.label("register");
        let fill = Fill {
            clients: plan.register_clients,
            range: 0..plan.register_count,
            services: plan.services,
            prefix: "reg".to_string(),
            // Long enough that nothing expires (and writes) during the phase.
            ttl: Some(Duration::from_secs(600)),
        };
        let phase = workload::register(server.target(), server.pid(), &fill, self.pb).await?;
        phase.ensure_clean("register")?;
        self.add(results, "register.rate", phase.rate());
        self.add(results, "register.p50_ms", ms(phase.latency.p50));
        self.add(results, "register.p99_ms", ms(phase.latency.p99));
        self.add(results, "register.generator_cpu", phase.generator_percent());
        if let Some(s) = phase.server_percent() {
            self.add(results, "register.server_cpu", s);
        }
        if let Some(us) = phase.server_cpu_per_op_us() {
            self.add(results, "register.cpu_us", us);
        }
        Ok(())
    }

    async fn discover(&self, results: &mut Results) -> Result<(), CompareError> {
        let plan = self.plan;
        let server = self.start("server").await?;
        for &n in &plan.discover_sizes {
            self.label(&format!("discover {n}"));
            let phase = workload::discover(
                server.target(),
                server.pid(),
                plan.discover_clients,
                plan.discover_duration,
                n,
                self.pb,
            )
            .await?;
            phase.ensure_clean("discover")?;
            self.add(results, format!("discover.{n}.rate"), phase.rate());
            self.add(
                results,
                format!("discover.{n}.p50_ms"),
                ms(phase.latency.p50),
            );
            self.add(
                results,
                format!("discover.{n}.p99_ms"),
                ms(phase.latency.p99),
            );
            self.add(
                results,
                format!("discover.{n}.generator_cpu"),
                phase.generator_percent(),
            );
            if let Some(s) = phase.server_percent() {
                self.add(results, format!("discover.{n}.server_cpu"), s);
            }
            if let Some(us) = phase.server_cpu_per_op_us() {
                self.add(results, format!("discover.{n}.cpu_us"), us);
            }
        }
        Ok(())
    }

    /// The Consul face's listings at each discover size, on one server (see
    /// [`super::consul`]); each phase's CPU per request is also divided by the native list's of
    /// the same run and system (`consul.{read}.{n}.cpu_vs_native`).
    async fn consul(&self, results: &mut Results) -> Result<(), CompareError> {
        let plan = self.plan;
        let server = self.start("server").await?;
        for &n in &plan.discover_sizes {
            let service =
                workload::seed_service(server.target(), server.pid(), plan.discover_clients, n)
                    .await?;
            for read in ConsulRead::ALL {
                let key = format!("consul.{}.{n}", read.key());
                self.label(&format!("consul {} {n}", read.key()));
                let reads = Reads {
                    clients: plan.discover_clients,
                    duration: plan.discover_duration,
                    instances: n,
                    service: service.clone(),
                    kind: ReadKind::Consul(read),
                };
                let phase = workload::read(server.target(), server.pid(), &reads, self.pb).await?;
                phase.ensure_clean(&key)?;
                self.add(results, format!("{key}.rate"), phase.rate());
                self.add(results, format!("{key}.p50_ms"), ms(phase.latency.p50));
                self.add(results, format!("{key}.p99_ms"), ms(phase.latency.p99));
                self.add(
                    results,
                    format!("{key}.generator_cpu"),
                    phase.generator_percent(),
                );
                if let Some(s) = phase.server_percent() {
                    self.add(results, format!("{key}.server_cpu"), s);
                }
                if let Some(us) = phase.server_cpu_per_op_us() {
                    self.add(results, format!("{key}.cpu_us"), us);
                    let native =
                        results.value(&format!("discover.{n}.cpu_us"), self.system, self.run);
                    if let Some(native) = native.filter(|v| *v > 0.0) {
                        self.add(results, format!("{key}.cpu_vs_native"), us / native);
                    }
                }
            }
        }
        Ok(())
    }

    async fn heartbeat(&self, results: &mut Results) -> Result<(), CompareError> {
        let server = self.start("server").await?;
        self.label("heartbeat");
        let hb = &self.plan.heartbeat;
        let r = workload::heartbeat(server.target(), server.pid(), hb, self.pb).await?;
        let p = &r.phase;
        if let Some(s) = p.server_percent() {
            self.add(results, "heartbeat.server_cpu", s);
        }
        self.add(results, "heartbeat.generator_cpu", p.generator_percent());
        self.add(
            results,
            "heartbeat.false_expiries",
            r.false_expiries() as f64,
        );
        self.add(results, "heartbeat.writes", r.writes as f64);
        self.add(results, "heartbeat.rate", p.rate());
        self.add(
            results,
            "heartbeat.sent_share",
            if r.expected > 0 {
                (p.ok + p.errors) as f64 / r.expected as f64 * 100.0
            } else {
                0.0
            },
        );
        self.add(results, "heartbeat.p99_ms", ms(p.latency.p99));
        self.add(results, "heartbeat.max_lateness_ms", ms(r.max_lateness));
        self.add(results, "heartbeat.errors", p.errors as f64);
        self.add(results, "heartbeat.setup_s", r.setup.as_secs_f64());
        self.add(results, "heartbeat.registered", r.registered as f64);
        if r.registered < hb.instances {
            results.failures.push(format!(
                "run {}, heartbeat on {}: only {} of {} instances registered within {:?} while \
                 renewing the registered ones; the figures are for those",
                self.run,
                self.system.name(),
                r.registered,
                hb.instances,
                hb.setup_limit
            ));
        }
        if p.errors > 0 {
            results.failures.push(format!(
                "run {}, heartbeat on {}: {} renewals failed: {}",
                self.run,
                self.system.name(),
                p.errors,
                p.error_samples.join("; ")
            ));
        }
        Ok(())
    }

    async fn watch(&self, results: &mut Results) -> Result<(), CompareError> {
        for &w in &self.plan.watchers {
            // A fresh server per size: the watches of the smaller size are gone for good.
            let server = self.start(&format!("server-{w}")).await?;
            self.label(&format!("watch {w}"));
            let r = workload::watch(
                server.target(),
                server.pid(),
                w,
                self.plan.watch_wait,
                self.pb,
            )
            .await?;
            self.add(results, format!("watch.{w}.p50_ms"), ms(r.latency.p50));
            self.add(results, format!("watch.{w}.p99_ms"), ms(r.latency.p99));
            self.add(results, format!("watch.{w}.max_ms"), ms(r.latency.max));
            self.add(results, format!("watch.{w}.missing"), r.missing as f64);
            self.add(results, format!("watch.{w}.setup_s"), r.setup.as_secs_f64());
            self.add(
                results,
                format!("watch.{w}.generator_cpu"),
                r.generator_percent,
            );
            self.add(
                results,
                format!("watch.{w}.generator_setup_cpu"),
                r.generator_setup_percent,
            );
            if let Some(s) = r.server_percent {
                self.add(results, format!("watch.{w}.server_cpu"), s);
            }
            if r.missing > 0 {
                results.failures.push(format!(
                    "run {}, watch {w} on {}: {} watchers did not see the registration in {:?}: {}",
                    self.run,
                    self.system.name(),
                    r.missing,
                    self.plan.watch_wait,
                    r.error_samples.join("; ")
                ));
            }
        }
        Ok(())
    }

    /// Resident bytes per open watch (Signpost only: an etcd watch is a stream within a gRPC
    /// connection, not a connection of its own).
    async fn watch_memory(&self, results: &mut Results) -> Result<(), CompareError> {
        if !self.system.is_signpost() {
            return Ok(());
        }
        let watchers = watch_memory::watchers_allowed(self.plan.open_watches);
        let server = self.start("server").await?;
        let pid = server.pid().ok_or(CompareError::NoPid)?;
        let addr = watch_memory::agent_addr(server.target()).ok_or(CompareError::Setting(
            "watch-memory needs an agent at http://<ip>:<port>",
        ))?;
        tokio::time::sleep(self.plan.settle).await;
        self.label(&format!("{watchers} open watches"));
        let m = watch_memory::watch_memory(addr, pid, watchers, self.plan.settle, self.pb).await?;
        self.add(results, "watch_memory.watchers", m.watchers as f64);
        self.add(
            results,
            "watch_memory.bytes_per_watcher",
            m.bytes_per_watcher(),
        );
        Ok(())
    }

    /// RSS at each of `memory_counts` on one server; when the largest count is also a restart
    /// count, the same server is then killed and restarted with it.
    async fn memory(&self, results: &mut Results) -> Result<(), CompareError> {
        let plan = self.plan;
        let mut server = self.start("server").await?;
        let pid = server.pid().ok_or(CompareError::NoPid)?;
        tokio::time::sleep(plan.settle).await;
        let base = rss_bytes(pid).ok_or(CompareError::Rss)?;
        let payload = mean_payload("mem");
        let mut done = 0;
        for &count in &plan.memory_counts {
            self.label(&format!("memory fill {count}"));
            let fill = Fill {
                clients: plan.fill_clients,
                range: done..count,
                services: plan.services,
                prefix: "mem".to_string(),
                ttl: Some(LONG_TTL),
            };
            let phase = workload::register(server.target(), Some(pid), &fill, self.pb).await?;
            phase.ensure_clean("filling")?;
            done = count;
            self.add(results, format!("memory.{count}.fill_rate"), phase.rate());
            self.add(
                results,
                format!("memory.{count}.generator_cpu"),
                phase.generator_percent(),
            );
            tokio::time::sleep(plan.settle).await;
            let rss = rss_bytes(pid).ok_or(CompareError::Rss)?;
            let per = rss.saturating_sub(base) as f64 / count as f64;
            self.add(results, format!("memory.{count}.rss_mib"), mib(rss));
            self.add(results, format!("memory.{count}.bytes_per_instance"), per);
            self.add(results, format!("memory.{count}.overhead"), per - payload);
        }
        self.add(results, "memory.payload", payload);
        self.add(results, "memory.base_rss_mib", mib(base));
        if plan.restart_counts.contains(&done) && plan.scenarios.contains(&Scenario::Restart) {
            self.restart_measure(&mut server, done, results).await?;
        }
        Ok(())
    }

    /// Restart times for the counts [`Step::memory`] does not already measure.
    async fn restart(&self, results: &mut Results) -> Result<(), CompareError> {
        let plan = self.plan;
        let covered = plan
            .scenarios
            .contains(&Scenario::Memory)
            .then(|| plan.memory_counts.last().copied())
            .flatten();
        for &count in &plan.restart_counts {
            if Some(count) == covered {
                continue;
            }
            let mut server = self.start(&format!("server-{count}")).await?;
            self.label(&format!("restart fill {count}"));
            let fill = Fill {
                clients: plan.fill_clients,
                range: 0..count,
                services: plan.services,
                prefix: "rst".to_string(),
                ttl: Some(LONG_TTL),
            };
            workload::register(server.target(), server.pid(), &fill, self.pb)
                .await?
                .ensure_clean("filling")?;
            self.restart_measure(&mut server, count, results).await?;
        }
        Ok(())
    }

    /// `kill -9`, then the time from spawning again until every one of `count` instances is
    /// served (Signpost: counted by `/api/v1/agent/self`; etcd: a count-only range, which
    /// needs an elected leader).
    async fn restart_measure(
        &self,
        server: &mut Server,
        count: u64,
        results: &mut Results,
    ) -> Result<(), CompareError> {
        self.label(&format!("restart {count}"));
        self.pb.set_length(count);
        self.pb.set_position(0);
        let data = server.data_size();
        server.kill();
        let target: Target = server.target().clone();
        let start = Instant::now();
        server.respawn()?;
        let timeout = Duration::from_secs(900);
        let mut first_answer = None;
        loop {
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), target.count()).await {
                first_answer.get_or_insert(start.elapsed());
                self.pb.set_position(n);
                if n >= count {
                    break;
                }
            }
            if start.elapsed() > timeout {
                return Err(CompareError::NotRestored {
                    count,
                    timeout,
                    log: server.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = start.elapsed();
        self.add(
            results,
            format!("restart.{count}.seconds"),
            took.as_secs_f64(),
        );
        if let Some(f) = first_answer {
            self.add(
                results,
                format!("restart.{count}.first_answer_s"),
                f.as_secs_f64(),
            );
        }
        self.add(results, format!("restart.{count}.data_mib"), mib(data));
        if let Some(rss) = server.pid().and_then(rss_bytes) {
            self.add(results, format!("restart.{count}.rss_mib"), mib(rss));
        }
        Ok(())
    }
}

/// Mean size of the registration bodies (the "payload" of an instance).
pub fn mean_payload(prefix: &str) -> f64 {
    let n = 1000;
    let total: usize = (0..n)
        .map(|i| payload::registration(prefix, i * 997, Some(LONG_TTL)).len())
        .sum();
    total as f64 / n as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stat::of(&[1.0, 4.0]).unwrap().median, 2.5);
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn results_by_key_and_system() {
        let mut r = Results::default();
        r.add("b", System::Etcd, 1, 1.0);
        r.add("a", System::Signpost, 1, 5.0);
        r.add("a", System::Signpost, 2, 7.0);
        assert_eq!(r.stat("a", System::Signpost).unwrap().median, 6.0);
        assert!(r.stat("a", System::Etcd).is_none());
        assert_eq!(r.keys(), vec!["b", "a"]);
    }

    #[test]
    fn old_and_new_alternate_and_etcd_can_be_left_out() {
        let plan = Plan::full();
        assert_eq!(plan.systems(false, 1), vec![System::Signpost, System::Etcd]);
        assert_eq!(
            plan.systems(true, 1),
            vec![System::Baseline, System::Signpost, System::Etcd]
        );
        assert_eq!(
            plan.systems(true, 2),
            vec![System::Signpost, System::Baseline, System::Etcd]
        );
        let no_etcd = Plan {
            etcd: false,
            ..Plan::full()
        };
        assert_eq!(
            no_etcd.systems(true, 3),
            vec![System::Baseline, System::Signpost]
        );
        assert!(!Scenario::Consul.runs_on(System::Etcd));
        assert!(Scenario::Consul.runs_on(System::Baseline));
        assert!(Scenario::Watch.runs_on(System::Etcd));
    }

    #[test]
    fn presets_keep_the_issue_numbers() {
        let full = Plan::full();
        assert_eq!(full.runs, 3);
        assert_eq!(full.heartbeat.instances, 100_000);
        assert_eq!(full.watchers, vec![1_000, 10_000]);
        assert_eq!(full.memory_counts, vec![100_000, 1_000_000]);
        assert_eq!(full.open_watches, 100_000);
        // 6 scenarios on two systems, the Consul and watch-memory ones on Signpost alone, 3 runs.
        assert_eq!(full.steps(false), 3 * (6 * 2 + 2));
        // With a baseline: 6 on three systems, the two Signpost-only ones on two.
        assert_eq!(full.steps(true), 3 * (6 * 3 + 2 * 2));
        let no_etcd = Plan {
            etcd: false,
            ..Plan::full()
        };
        assert_eq!(no_etcd.steps(true), 3 * 8 * 2);
        assert!(Plan::quick().register_count < full.register_count);
        assert!((250.0..=350.0).contains(&mean_payload("mem")));
    }
}
