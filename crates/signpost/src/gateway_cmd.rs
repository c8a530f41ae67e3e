//! `signpost gateway --config gateway.toml`: the API gateway of the `signpost-gateway` crate.
//!
//! It owns its runtimes (unlike the other subcommands) because the worker count is part of its
//! configuration. The control plane (discovery, the admin API) runs on a single-threaded
//! runtime on the main thread. With `workers = 1` client traffic is served there too; otherwise
//! by that many worker threads (`0`: one per core), each with its own single-threaded runtime
//! and `SO_REUSEPORT` listener ([`Gateway::serve_workers`]).

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
    /// Worker threads serving clients: 1 = everything on one thread, 0 = one per core
    /// [default: the file's `workers`].
    #[arg(long)]
    workers: Option<usize>,
    /// Log lines (the access log included) as `text` or `json` [default: the file's
    /// `[log] format`].
    #[arg(long, value_name = "text|json")]
    log_format: Option<signpost_telemetry::LogFormat>,
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
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn main(args: &GatewayArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = config
        .telemetry
        .resolve(&crate::env_var, "signpost-gateway")
        .map_err(anyhow::Error::from)
        .and_then(|tracing| {
            Ok(signpost_telemetry::init(&signpost_telemetry::Options {
                format: config.log.format,
                default_filter: "info".into(),
                tracing,
            })?)
        });
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let workers = config.worker_threads();
    let proxy = if config.workers == 1 {
        Listeners::One(
            tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?,
        )
    } else {
        Listeners::Workers(
            signpost_gateway::bind_workers(config.listen, workers)
                .with_context(|| format!("cannot listen on {}", config.listen))?,
        )
    };
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen for the admin API on {}", config.admin_listen))?;
    let listen = match &proxy {
        Listeners::One(l) => l.local_addr()?,
        Listeners::Workers(ls) => ls[0].local_addr()?,
    };
    let admin_addr = admin.local_addr()?;
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
    match proxy {
        Listeners::One(proxy) => gateway.serve(proxy, admin, crate::shutdown_signal()).await,
        Listeners::Workers(proxy) => gateway
            .serve_workers(proxy, admin, crate::shutdown_signal())
            .await
            .context("cannot start the worker threads")?,
    }
    tracing::info!("signpost gateway stopped");
    Ok(())
}

/// Where client traffic is accepted.
enum Listeners {
    /// On the main runtime (`workers = 1`).
    One(tokio::net::TcpListener),
    /// By worker threads, one listener each.
    Workers(Vec<std::net::TcpListener>),
}
