//! Smoke tests, with tiny numbers, so the crate cannot rot unnoticed:
//! - every single-agent scenario against an in-process dev agent;
//! - the whole Signpost-vs-etcd suite (`compare`) against the real `signpost` binary (built by
//!   `cargo build -p signpost`) and a real etcd 3.4 (Debian `etcd-server`, which
//!   `scripts/test.sh` installs; without it this test fails on purpose), both on free loopback
//!   ports and killed by PID, writing the report and chart into a temporary directory.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signpost_bench::{payload, DiscoverOptions, RegisterOptions};

/// An in-memory agent on a loopback port, stopped on drop of `shutdown`.
struct TestAgent {
    addr: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestAgent {
    async fn start() -> anyhow::Result<TestAgent> {
        let config = signpost_server::AgentConfig {
            dev: true,
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let agent: Arc<signpost_server::Agent> =
            signpost_server::Agent::start(config, addr).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let a = agent.clone();
        let served = tokio::spawn(async move {
            a.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .map_err(anyhow::Error::from)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.is_leader() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the agent did not become leader in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(TestAgent {
            addr: format!("http://{addr}"),
            shutdown: Some(tx),
            served,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.served).await???;
        Ok(())
    }
}

/// Ids of every instance (any status) of `service`.
async fn listed_ids(addr: &str, service: &str) -> anyhow::Result<BTreeSet<String>> {
    let url = format!("{addr}/api/v1/services/{service}/instances?status=any");
    signpost_tls::install_default_provider();
    let body: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["instances"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no instances array in {body}"))?
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_run_against_an_agent() -> anyhow::Result<()> {
    let agent = TestAgent::start().await?;

    // register: exact count, no errors, and every instance really is in the registry.
    let opts = RegisterOptions {
        clients: 4,
        count: 200,
        services: 5,
        ..RegisterOptions::new(agent.addr.clone())
    };
    let report = signpost_bench::register(&opts).await?;
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.requests, 200);
    assert_eq!(report.ok, 200);
    assert_eq!(report.latency.samples, 200);
    assert!(report.rate() > 0.0);
    let mut registered = BTreeSet::new();
    for s in 0..opts.services {
        let ids = listed_ids(&agent.addr, &payload::service_name("reg", s)).await?;
        assert_eq!(ids.len(), 40, "service reg-{s}");
        registered.extend(ids);
    }
    let expected: BTreeSet<String> = (0..200).map(|i| payload::instance_id("reg", i)).collect();
    assert_eq!(registered, expected);

    // Registering the same instances again is not a creation: register counts it as an error,
    // seed accepts it.
    let again = signpost_bench::register(&RegisterOptions {
        count: 10,
        ..opts.clone()
    })
    .await?;
    assert_eq!(again.errors, 10);
    assert!(!again.error_samples.is_empty());
    let reseed = signpost_bench::seed(&RegisterOptions {
        count: 10,
        ..opts.clone()
    })
    .await?;
    assert_eq!(reseed.errors, 0, "{:?}", reseed.error_samples);

    // discover: seeds disc-10 and queries it.
    let report = signpost_bench::discover(&DiscoverOptions {
        clients: 4,
        duration: Duration::from_secs(1),
        instances: 10,
        services: 1,
        ..DiscoverOptions::new(agent.addr.clone())
    })
    .await?;
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert!(report.ok > 0);
    assert_eq!(report.ok, report.requests);
    assert!(report.duration >= Duration::from_secs(1));
    assert_eq!(listed_ids(&agent.addr, "disc-10").await?.len(), 10);

    agent.stop().await
}

/// The soak run in miniature: heartbeated instances survive several TTLs under churn, every
/// answer is an expected one, and the agent's RSS is sampled (the in-process agent is this
/// process). A heartbeat loop that stopped would show as missing instances at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_runs_against_an_agent() -> anyhow::Result<()> {
    let agent = TestAgent::start().await?;
    let mut opts = signpost_bench::soak::SoakOptions::new(agent.addr.clone());
    opts.instances = 300;
    opts.services = 3;
    opts.batch = 100;
    opts.ttl = Duration::from_millis(900);
    opts.churners = 8;
    opts.think = Duration::from_millis(10);
    opts.duration = Duration::from_secs(4);
    opts.sample_every = Duration::from_millis(500);
    opts.warmup = Duration::from_secs(1);
    opts.agent_pid = Some(std::process::id());
    let report = signpost_bench::soak::soak(&opts).await?;
    assert_eq!(report.errors, 0, "{}", report.table());
    assert_eq!(report.false_expiries, 0, "{}", report.table());
    assert_eq!(report.missing_at_end, 0, "{}", report.table());
    // Four seconds at a third of 900 ms: each of the 3 batches went out about 13 times.
    assert!(report.renewed >= 300 * 8, "{}", report.table());
    assert!(
        report.churn_ops.values().sum::<u64>() > 50,
        "{}",
        report.table()
    );
    assert!(report.rss.len() >= 4, "{}", report.table());
    assert!(report.rss_after_warmup.is_some());
    // All 300 are still registered (and passing) after several TTLs.
    let mut total = 0;
    for s in 0..3 {
        total += listed_ids(&agent.addr, &payload::service_name("soak", s))
            .await?
            .len();
    }
    assert_eq!(total, 300);
    agent.stop().await
}

/// The Consul face's read phases against an in-process agent: every answer lists the seeded
/// instances, and the server's CPU per request is measured (the agent is this process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_reads_run_against_an_agent() -> anyhow::Result<()> {
    use signpost_bench::compare::consul::ConsulRead;
    use signpost_bench::compare::target::Target;
    use signpost_bench::compare::workload::{self, ReadKind, Reads};

    let agent = TestAgent::start().await?;
    let target = Target::Signpost {
        base: agent.addr.as_str().into(),
    };
    let pid = Some(std::process::id());
    let service = workload::seed_service(&target, pid, 4, 10).await?;
    assert_eq!(service, "disc-10-0");
    let pb = indicatif::ProgressBar::hidden();
    for read in ConsulRead::ALL {
        let reads = Reads {
            clients: 4,
            duration: Duration::from_millis(500),
            instances: 10,
            service: service.clone(),
            kind: ReadKind::Consul(read),
        };
        let phase = workload::read(&target, pid, &reads, &pb).await?;
        assert_eq!(phase.errors, 0, "{read:?}: {:?}", phase.error_samples);
        assert!(phase.ok > 0, "{read:?}");
        assert_eq!(phase.latency.samples, phase.ok);
        assert!(phase.server_cpu_per_op_us().is_some(), "{read:?}");

        // Answers that list another number of instances than expected are errors.
        let wrong = workload::read(
            &target,
            pid,
            &Reads {
                instances: 11,
                duration: Duration::from_millis(200),
                ..reads
            },
            &pb,
        )
        .await?;
        assert_eq!(wrong.ok, 0, "{read:?}");
        assert!(wrong.errors > 0, "{read:?}");
        assert!(
            wrong.error_samples[0].contains("expected 11 instances, got 10"),
            "{:?}",
            wrong.error_samples
        );
    }
    agent.stop().await
}

/// Builds the `signpost` binary (a no-op when it is up to date) and answers its path.
fn signpost_binary() -> std::path::PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "signpost",
            "--bin",
            "signpost",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cannot run cargo");
    assert!(out.status.success(), "cargo build -p signpost failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "signpost")
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo reported no signpost executable")
}

/// `etcd` on the PATH (Debian `etcd-server`).
fn etcd_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .expect("etcd is not installed (Debian etcd-server; scripts/test.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_suite_runs_against_signpost_and_etcd() -> anyhow::Result<()> {
    use signpost_bench::compare::{
        self, server::Binaries, target::System, Environment, Output, Plan,
    };

    let dir = tempfile::tempdir()?;
    let plan = Plan::smoke();
    let env = Environment {
        bins: Binaries {
            signpost: signpost_binary(),
            etcd: etcd_binary(),
            baseline: None,
            pid_file: Some(dir.path().join("pids")),
        },
        work_dir: dir.path().join("work"),
        keep: false,
        progress: false,
    };
    let out = Output {
        report: dir.path().join("out/report.md"),
        gateway_script: Some(dir.path().join("no-gateway.sh")),
        gateway_timeout: Duration::from_secs(5),
    };
    let started = Instant::now();
    let results = compare::run_and_report(&plan, &env, &out).await?;
    assert!(results.failures.is_empty(), "{:#?}", results.failures);

    // Every headline figure, for both systems.
    for key in [
        "register.rate",
        "discover.10.rate",
        "heartbeat.server_cpu",
        "heartbeat.false_expiries",
        "watch.20.p99_ms",
        "memory.300.bytes_per_instance",
        "restart.300.seconds",
    ] {
        for system in System::ALL {
            assert!(
                results.stat(key, system).is_some(),
                "{key} missing for {}",
                system.name()
            );
        }
    }
    for system in System::ALL {
        assert_eq!(
            results
                .stat("heartbeat.false_expiries", system)
                .unwrap()
                .max,
            0.0
        );
        assert_eq!(results.stat("watch.20.missing", system).unwrap().max, 0.0);
    }

    let report = std::fs::read_to_string(&out.report)?;
    assert!(report.contains("| register: 200 instances"), "{report}");
    assert!(
        report.contains("## Targets") && report.contains("met"),
        "{report}"
    );
    assert!(
        report.contains("gateway benchmark not available"),
        "{report}"
    );
    let svg = std::fs::read_to_string(dir.path().join("out/report.svg"))?;
    assert!(svg.starts_with("<svg") && svg.contains("Signpost"));
    assert!(dir.path().join("out/report.json").exists());

    // The Consul face's rows, Signpost only.
    assert!(results
        .stat("consul.health.10.rate", System::Signpost)
        .is_some());
    assert!(results
        .stat("consul.catalog.10.cpu_vs_native", System::Signpost)
        .is_some());
    assert!(results
        .stat("consul.health.10.rate", System::Etcd)
        .is_none());
    assert!(
        report.contains("| Consul face `/v1/catalog/service/NAME`: 10 instances"),
        "{report}"
    );

    // Every server it started is gone.
    let pids = std::fs::read_to_string(dir.path().join("pids"))?;
    assert!(pids.lines().count() >= 13, "{pids}");
    for pid in pids.lines() {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "server {pid} still runs");
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the smoke run took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// With a baseline binary and without etcd: the old and the new Signpost run every scenario in
/// the same run, and the report prints the baseline's figures and new/old beside Signpost's
/// (the same binary twice here, so only the shape is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_suite_runs_a_baseline_beside_signpost() -> anyhow::Result<()> {
    use signpost_bench::compare::{
        self, server::Binaries, target::System, Environment, Output, Plan, Scenario,
    };

    let dir = tempfile::tempdir()?;
    let signpost = signpost_binary();
    let plan = Plan {
        scenarios: vec![Scenario::Register, Scenario::Discover, Scenario::Consul],
        etcd: false,
        ..Plan::smoke()
    };
    let env = Environment {
        bins: Binaries {
            signpost: signpost.clone(),
            etcd: "/nonexistent/etcd".into(),
            baseline: Some(signpost),
            pid_file: Some(dir.path().join("pids")),
        },
        work_dir: dir.path().join("work"),
        keep: false,
        progress: false,
    };
    let out = Output {
        report: dir.path().join("out/report.md"),
        gateway_script: None,
        gateway_timeout: Duration::from_secs(5),
    };
    let results = compare::run_and_report(&plan, &env, &out).await?;
    assert!(results.failures.is_empty(), "{:#?}", results.failures);
    for key in [
        "register.rate",
        "register.cpu_us",
        "discover.10.cpu_us",
        "consul.health.10.cpu_us",
        "consul.catalog.10.rate",
    ] {
        for system in [System::Signpost, System::Baseline] {
            assert!(
                results.stat(key, system).is_some(),
                "{key} missing for {}",
                system.name()
            );
        }
        assert!(results.stat(key, System::Etcd).is_none(), "{key} on etcd");
    }
    let report = std::fs::read_to_string(&out.report)?;
    assert!(
        report.contains(
            "| scenario | measure | Signpost | baseline | new/old | etcd | Signpost/etcd |"
        ),
        "{report}"
    );
    assert!(report.contains("Baseline: `signpost "), "{report}");
    assert!(report.contains("etcd: `not run (--no-etcd)`"), "{report}");
    let rate = report
        .lines()
        .find(|l| l.contains("| writes/s |"))
        .expect("no writes/s row");
    assert!(rate.contains('×'), "{rate}");
    // Six servers: three scenarios, old and new.
    let pids = std::fs::read_to_string(dir.path().join("pids"))?;
    assert_eq!(pids.lines().count(), 6, "{pids}");
    Ok(())
}
