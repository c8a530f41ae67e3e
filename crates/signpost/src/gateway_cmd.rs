//! `signpost gateway --config gateway.toml`: the API gateway of the `signpost-gateway` crate.
//!
//! It owns its runtime (unlike the other subcommands) because the worker count is part of its
//! configuration: `workers = 1` runs a single-threaded runtime, `0` one worker per core.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use signpost_gateway::{Gateway, GatewayConfig};

/// Flags of `signpost gateway`; each overrides the same setting in `--config`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// TOML config file (see README: Gateway).
    #[arg(long)]
    config: PathBuf,
    /// Client listener [default: the file's `listen`].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listener (`GET /`, `GET /metrics`) [default: the file's `admin_listen`].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Runtime worker threads: 1 = single-threaded, 0 = one per core [default: the file's
    /// `workers`].
    #[arg(long)]
    workers: Option<usize>,
}

impl GatewayArgs {
    fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut config = GatewayConfig::from_file(&self.config)?;
        if let Some(addr) = self.listen {
            config.listen = addr;
        }
        if let Some(addr) = self.admin_listen {
            config.admin_listen = addr;
        }
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn main(args: &GatewayArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match config.workers {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let proxy = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen for the admin API on {}", config.admin_listen))?;
    let (listen, admin_addr) = (proxy.local_addr()?, admin.local_addr()?);
    let workers = config.workers;
    let gateway = Gateway::start(config)?;
    if !gateway.ready(Duration::from_secs(5)).await {
        tracing::warn!(
            "not every configured route's service has an instance list yet; those routes answer 503 until one arrives"
        );
    }
    tracing::info!(
        %listen,
        admin = %admin_addr,
        routes = gateway.routes().len(),
        workers,
        "signpost gateway ready"
    );
    gateway.serve(proxy, admin, crate::shutdown_signal()).await;
    tracing::info!("signpost gateway stopped");
    Ok(())
}
