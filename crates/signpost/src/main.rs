//! `signpost`: the registry agent and its command-line client in one binary.
#![forbid(unsafe_code)]

mod cli;
mod gateway_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signpost_server::agent::{Listeners, Listening};
use signpost_server::{Agent, AgentConfig};

/// mimalloc instead of the system allocator: the gateway allocates and frees a few buffers per
/// request, and glibc malloc was ~3 % of its profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "signpost",
    version,
    about = "Service discovery: registry agent and client"
)]
struct Cli {
    #[command(flatten)]
    client: cli::ClientOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry agent.
    Agent(AgentArgs),
    /// Run the API gateway (see README: Gateway).
    Gateway(gateway_cmd::GatewayArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// Flags of `signpost agent`; each overrides the same setting in `--config`.
#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// TOML config file (see README: Configuration).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Keep everything in memory (no data dir): for development and trials.
    #[arg(long)]
    dev: bool,
    /// Directory of the durable state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8500].
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// This agent's Raft node id [default: 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// UDP and TCP address of the DNS interface [default: 127.0.0.1:8600].
    #[arg(long)]
    dns_addr: Option<std::net::SocketAddr>,
    /// The DNS zone served [default: consul.].
    #[arg(long)]
    dns_domain: Option<String>,
    /// Do not serve DNS.
    #[arg(long, conflicts_with_all = ["dns_addr", "dns_domain"])]
    no_dns: bool,
    /// A dedicated listener for Raft traffic between members [default: the HTTP port].
    #[arg(long)]
    raft_addr: Option<std::net::SocketAddr>,
    /// The Raft address other members use to reach this one [default: the listening address].
    #[arg(long)]
    raft_advertise_addr: Option<String>,
    /// HTTP address of a cluster member to join when starting fresh (repeatable).
    #[arg(long, value_name = "HTTP_ADDR")]
    join: Vec<String>,
    /// Log lines as `text` or `json` (one object a line) [default: the file's `[log] format`].
    #[arg(long, value_name = "text|json")]
    log_format: Option<signpost_telemetry::LogFormat>,
}

impl AgentArgs {
    fn config(&self) -> anyhow::Result<AgentConfig> {
        let mut config = match &self.config {
            Some(path) => AgentConfig::from_file(path)?,
            None => AgentConfig::default(),
        };
        if self.dev {
            config.dev = true;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        if let Some(addr) = self.http_addr {
            config.http_addr = addr;
        }
        if let Some(id) = self.node_id {
            config.node_id = id;
        }
        if let Some(addr) = self.dns_addr {
            config.dns.addr = addr;
        }
        if let Some(domain) = &self.dns_domain {
            config.dns.domain = domain.clone();
        }
        if self.no_dns {
            config.dns.enabled = false;
        }
        if let Some(addr) = self.raft_addr {
            config.raft.addr = Some(addr);
        }
        if let Some(addr) = &self.raft_advertise_addr {
            config.raft.advertise_addr = Some(addr.clone());
        }
        if !self.join.is_empty() {
            config.join = self.join.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    // Before any HTTP client is built (the CLI's, the SDK's in the gateway, the agent's).
    signpost_tls::install_default_provider();
    let cli = Cli::parse();
    if let Command::Gateway(args) = &cli.command {
        return gateway_cmd::main(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => run_agent(args).await,
            Command::Gateway(_) => unreachable!("handled above"),
            Command::Client(cmd) => cli::run(&cli.client, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the DNS sockets: UDP, then TCP on the port UDP got, so `--dns-addr 127.0.0.1:0` serves
/// both on one port. With port 0 the TCP port may already be taken (say, by an outgoing
/// connection that happened to get it): then other ports are tried, a few times.
async fn bind_dns(
    addr: std::net::SocketAddr,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 1;
    loop {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen for DNS on udp {addr}"))?;
        let tcp_addr = udp.local_addr()?;
        match tokio::net::TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && attempt < ATTEMPTS
                    && e.kind() == std::io::ErrorKind::AddrInUse =>
            {
                attempt += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen for DNS on tcp {tcp_addr}"))
            }
        }
    }
}

async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let telemetry = signpost_telemetry::init(&signpost_telemetry::Options {
        format: config.log.format,
        default_filter: "info,openraft=warn".into(),
        tracing: config.telemetry.resolve(&env_var, "signpost-agent")?,
    })?;
    let result = serve_agent(config).await;
    telemetry.shutdown();
    result
}

/// Reads an environment variable (the OpenTelemetry ones fill in `[telemetry]`).
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn serve_agent(config: AgentConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    let dns = if config.dns.enabled {
        Some(bind_dns(config.dns.addr).await?)
    } else {
        None
    };
    let raft_listener = match config.raft.addr {
        Some(raft_addr) => Some(
            tokio::net::TcpListener::bind(raft_addr)
                .await
                .with_context(|| format!("cannot listen for raft on {raft_addr}"))?,
        ),
        None => None,
    };
    let listening = Listening {
        http: addr,
        raft: raft_listener.as_ref().map(|l| l.local_addr()).transpose()?,
    };
    let started = std::time::Instant::now();
    let agent = Agent::start_with(config, listening).await?;
    let m = agent.raft().metrics().borrow().clone();
    tracing::info!(
        %addr,
        node_id = agent.node_id(),
        instances = signpost_server::service::with_catalog(
            &agent,
            &signpost_server::service::Caller::internal(),
            |_, all| all.count()
        ),
        applied_index = m.last_applied.map(|l| l.index),
        "signpost agent ready in {:?}",
        started.elapsed()
    );
    let listeners = Listeners {
        http: listener,
        raft: raft_listener,
        dns,
    };
    if !agent.config().tls.enabled() {
        // With TLS the certificate reloader handles SIGHUP; without it, a SIGHUP (sent by a
        // rotation script, say) must not kill the agent.
        ignore_hangups();
    }
    agent.serve_all(listeners, shutdown_signal()).await?;
    tracing::info!("signpost agent stopped");
    Ok(())
}

/// Logs and otherwise ignores SIGHUP from now on: without `[tls]` there is nothing to reload.
fn ignore_hangups() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP received: nothing to reload (no [tls] configured)");
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
        _ = term => tracing::info!("SIGTERM received: shutting down"),
    }
}
