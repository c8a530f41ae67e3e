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

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. \"10s\", \"500ms\", \"2m\")"))
}

fn parse_ttl(s: &str) -> Result<Ttl, String> {
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
    let result = match cli.command {
        Command::Register(a) => signpost_bench::register(&RegisterOptions {
            addr: cli.addr.clone(),
            clients: a.clients,
            count: a.count,
            services: a.services,
            ttl: a.ttl.0,
            prefix: a.prefix,
            progress,
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
        })
        .await
        .map(|r| (r, true)),
        Command::Discover(a) => signpost_bench::discover(&DiscoverOptions {
            addr: cli.addr.clone(),
            clients: a.clients,
            duration: a.duration,
            instances: a.instances,
            services: a.services,
            progress,
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
            eprintln!("error: {e:#}");
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
