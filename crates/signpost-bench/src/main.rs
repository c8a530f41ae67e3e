//! `signpost-bench`: command-line front of the scenarios in the `signpost_bench` library.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use signpost_bench::{DiscoverOptions, RegisterOptions, Report};

#[derive(Parser, Debug)]
#[command(
    name = "signpost-bench",
    version,
    about = "Load generator for a running Signpost agent"
)]
struct Cli {
    /// Base URL of the running agent.
    #[arg(
        long,
        global = true,
        env = "SIGNPOST_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    addr: String,
    /// Print the figures as one JSON object on stdout (the table then goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Draw no progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    /// ACL token sent as `X-Consul-Token` on every request.
    #[arg(long, global = true, env = "SIGNPOST_TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Register COUNT distinct instances from CLIENTS connections; every answer must be 201.
    Register(RegisterArgs),
    /// Seed one service with INSTANCES passing instances, then query it for DURATION.
    Discover(DiscoverArgs),
    /// Like register, printing one line (and accepting 200 for existing instances): fills an
    /// agent before a restart test.
    Seed(SeedArgs),
    /// Signpost against etcd: starts both (on free loopback ports), runs every scenario back
    /// to back and writes a Markdown report with an SVG chart. `bench/run.sh` runs this.
    Compare(CompareArgs),
    /// Holds INSTANCES heartbeating instances for DURATION while CHURNERS clients churn
    /// blocking queries, watches and registrations of random names; checks for false
    /// expiries, errors other than the limits' own, and flat agent RSS (`bench/soak.sh`).
    Soak(SoakArgs),
}

#[derive(Args, Debug)]
struct SoakArgs {
    /// Heartbeating instances held for the whole run.
    #[arg(long, default_value_t = 100_000)]
    instances: u64,
    /// Services those instances are spread over.
    #[arg(long, default_value_t = 100)]
    services: u64,
    /// TTL of each instance's check; heartbeats go out every third of it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ttl: Duration,
    /// Client tasks churning random names.
    #[arg(long, default_value_t = 1_000)]
    churners: usize,
    /// Idle time of a churner between two operations.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    think: Duration,
    /// Length of the soak, after seeding.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up: RSS samples before it are not held to the ±5% band.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    warmup: Duration,
    /// How often the agent's RSS is sampled.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    sample_every: Duration,
    /// The agent's PID, for its RSS.
    #[arg(long)]
    agent_pid: Option<u32>,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// Smaller numbers and one run, a couple of minutes (also: QUICK=1).
    #[arg(long, env = "QUICK")]
    quick: bool,
    /// Tiny numbers, seconds: what the smoke test runs.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Runs of every scenario (default: 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these scenarios (comma-separated: register, discover, consul, heartbeat, watch,
    /// memory, restart, watch-memory).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Signpost heartbeats: renewals due within this long go out together in one
    /// `PUT /api/v1/heartbeats`; `0s` sends one `PUT …/heartbeat` per renewal [default: 200ms].
    #[arg(long, value_parser = parse_duration)]
    heartbeat_batch: Option<std::time::Duration>,
    /// The signpost binary [default: `signpost` beside this binary].
    #[arg(long)]
    signpost_bin: Option<std::path::PathBuf>,
    /// The etcd 3.4 binary.
    #[arg(long, default_value = "etcd")]
    etcd_bin: std::path::PathBuf,
    /// An older signpost binary: every Signpost scenario runs on it too, alternating with the
    /// new one, and the report prints new/old ratios (also: BASELINE_BIN).
    #[arg(long, env = "BASELINE_BIN")]
    baseline_bin: Option<std::path::PathBuf>,
    /// Skip etcd (when only the new/old ratios against --baseline-bin are wanted).
    #[arg(long)]
    no_etcd: bool,
    /// Where to write the report (the chart goes beside it as .svg, every sample as .json).
    #[arg(long, default_value = "bench/report.md")]
    report: std::path::PathBuf,
    /// Directory for data dirs and server logs [default: a new temporary directory].
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Keep data dirs and server logs.
    #[arg(long)]
    keep: bool,
    /// Append the PID of every server started to this file (for the caller's clean-up).
    #[arg(long)]
    pid_file: Option<std::path::PathBuf>,
    /// The gateway benchmark script, run after the suite when it exists.
    #[arg(long, default_value = "bench/gateway.sh")]
    gateway_script: std::path::PathBuf,
    /// Longest the gateway benchmark may run.
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    gateway_timeout: Duration,
}

#[derive(Args, Debug)]
struct RegisterArgs {
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Distinct instances to register.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Services to spread the instances over.
    #[arg(long, default_value_t = 1_000)]
    services: u64,
    /// TTL of each instance's check ("30s", "5m"), or "none" for no check.
    #[arg(long, default_value = "30s", value_parser = parse_ttl)]
    ttl: Ttl,
    /// Prefix of service names and instance ids (change it to register again into one agent).
    #[arg(long, default_value = "reg")]
    prefix: String,
}

#[derive(Args, Debug)]
struct SeedArgs {
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Distinct instances to register.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Services to spread the instances over.
    #[arg(long, default_value_t = 1_000)]
    services: u64,
    /// TTL of each instance's check ("30s", "5m"), or "none" for no check.
    #[arg(long, default_value = "30s", value_parser = parse_ttl)]
    ttl: Ttl,
    /// Prefix of service names and instance ids.
    #[arg(long, default_value = "seed")]
    prefix: String,
}

#[derive(Args, Debug)]
struct DiscoverArgs {
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to query ("10s", "1m").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Passing instances in each queried service.
    #[arg(long, default_value_t = 10)]
    instances: u64,
    /// Services to query round robin (disc-INSTANCES, or disc-INSTANCES-K when several).
    #[arg(long, default_value_t = 1)]
    services: u64,
}

/// A check TTL, or none.
#[derive(Debug, Clone, Copy)]
struct Ttl(Option<Duration>);

/// A duration argument (`10s`, `500ms`), or why it is not one.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("{e} (use e.g. \"10s\", \"500ms\", \"2m\")"))
}

/// A `--ttl` argument: a duration, or `none`.
fn parse_ttl(s: &str) -> anyhow::Result<Ttl> {
    if s.eq_ignore_ascii_case("none") {
        Ok(Ttl(None))
    } else {
        parse_duration(s).map(|d| Ttl(Some(d)))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = !cli.quiet;
    let command = match cli.command {
        Command::Compare(a) => return compare(a, progress).await,
        Command::Soak(a) => return soak(a, &cli.addr, cli.token.clone(), cli.json).await,
        other => other,
    };
    let result = match command {
        Command::Register(a) => signpost_bench::register(&RegisterOptions {
            addr: cli.addr.clone(),
            clients: a.clients,
            count: a.count,
            services: a.services,
            ttl: a.ttl.0,
            prefix: a.prefix,
            progress,
            token: cli.token.clone(),
        })
        .await
        .map(|r| (r, false)),
        Command::Seed(a) => signpost_bench::seed(&RegisterOptions {
            addr: cli.addr.clone(),
            clients: a.clients,
            count: a.count,
            services: a.services,
            ttl: a.ttl.0,
            prefix: a.prefix,
            progress,
            token: cli.token.clone(),
        })
        .await
        .map(|r| (r, true)),
        Command::Compare(_) | Command::Soak(_) => unreachable!("handled above"),
        Command::Discover(a) => signpost_bench::discover(&DiscoverOptions {
            addr: cli.addr.clone(),
            clients: a.clients,
            duration: a.duration,
            instances: a.instances,
            services: a.services,
            progress,
            token: cli.token.clone(),
        })
        .await
        .map(|r| (r, false)),
    };
    match result {
        Ok((report, one_line)) => {
            print(&report, one_line, cli.json);
            if report.errors > 0 {
                eprintln!("error: {} requests failed", report.errors);
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            // Through anyhow, so `{:#}` prints every cause of the typed error.
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// `signpost-bench soak`: prints the figures (and JSON with `--json`); fails unless the run
/// met the bar.
async fn soak(a: SoakArgs, addr: &str, token: Option<String>, json: bool) -> ExitCode {
    let mut opts = signpost_bench::soak::SoakOptions::new(addr);
    opts.token = token;
    opts.agent_pid = a.agent_pid;
    opts.instances = a.instances;
    opts.services = a.services;
    opts.ttl = a.ttl;
    opts.churners = a.churners;
    opts.think = a.think;
    opts.duration = a.duration;
    opts.warmup = a.warmup;
    opts.sample_every = a.sample_every;
    match signpost_bench::soak::soak(&opts).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                eprint!("{}", report.table());
            } else {
                print!("{}", report.table());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// The human-readable figures go to stdout, or to stderr when stdout carries the JSON.
fn print(report: &Report, one_line: bool, json: bool) {
    let text = if one_line {
        format!("{}\n", report.one_line())
    } else {
        report.table()
    };
    if json {
        eprint!("{text}");
        println!("{}", report.to_json());
    } else {
        print!("{text}");
    }
}

/// `signpost-bench compare`: the suite, stopped cleanly (servers killed by PID) on SIGINT or
/// SIGTERM.
async fn compare(a: CompareArgs, progress: bool) -> ExitCode {
    use signpost_bench::compare::{self, server::Binaries, Environment, Output, Plan, Scenario};

    let mut plan = if a.smoke {
        Plan::smoke()
    } else if a.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(runs) = a.runs {
        plan.runs = runs.max(1);
    }
    if let Some(batch) = a.heartbeat_batch {
        plan.heartbeat.batch = batch;
    }
    plan.etcd = !a.no_etcd;
    let baseline = a.baseline_bin.filter(|p| !p.as_os_str().is_empty());
    if let Some(b) = &baseline {
        if !b.is_file() {
            eprintln!("error: the baseline binary {} does not exist", b.display());
            return ExitCode::FAILURE;
        }
    }
    if !a.scenarios.is_empty() {
        let mut chosen = Vec::new();
        for name in &a.scenarios {
            match Scenario::parse(name.trim()) {
                Some(s) => chosen.push(s),
                None => {
                    eprintln!(
                        "error: unknown scenario {name:?} (register, discover, consul, heartbeat, watch, memory, restart, watch-memory)"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        plan.scenarios = Scenario::ALL
            .into_iter()
            .filter(|s| chosen.contains(s))
            .collect();
    }
    let signpost = a.signpost_bin.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("signpost")))
            .unwrap_or_else(|| "signpost".into())
    });
    let temp = match a.work_dir {
        Some(_) => None,
        None => match tempfile::Builder::new()
            .prefix("signpost-compare.")
            .tempdir()
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: cannot create a temporary directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let work_dir = a
        .work_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_else(|| "signpost-compare".into());
    if let Some(pid_file) = &a.pid_file {
        if let Err(e) = compare::server::reset_pid_file(pid_file) {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::FAILURE;
        }
    }
    let env = Environment {
        bins: Binaries {
            signpost,
            etcd: a.etcd_bin,
            baseline,
            pid_file: a.pid_file,
        },
        work_dir,
        keep: a.keep,
        progress,
    };
    let out = Output {
        report: a.report,
        gateway_script: Some(a.gateway_script),
        gateway_timeout: a.gateway_timeout,
    };
    eprintln!(
        "signpost-bench compare: {} mode, {} run(s); data in {}",
        plan.mode.name(),
        plan.runs,
        env.work_dir.display()
    );
    let run = compare::run_and_report(&plan, &env, &out);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio::select! {
        r = run => r.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    // Dropping the suite's future above killed every server it had started.
    if a.keep {
        if let Some(t) = temp {
            eprintln!("kept {}", t.keep().display());
        }
    }
    match result {
        Ok(results) => {
            eprintln!(
                "wrote {} in {:.1} min",
                out.report.display(),
                results.elapsed.as_secs_f64() / 60.0
            );
            for f in &results.failures {
                eprintln!("failed: {f}");
            }
            // etcd failing a scenario is reported (see "Failures" in the report); only a
            // Signpost failure fails the run.
            if results.signpost_failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
