//! The command-line client: subcommands that talk to a running agent through the SDK's
//! [`SignpostRegistry`](signpost_client::registry::signpost::SignpostRegistry).
//!
//! Every subcommand prints a human-readable table by default and the agent's JSON with
//! `--json`. Errors carry enough context to be printed as-is (`error: {err:#}`).
//!
//! # Layout
//! - this module: the flags and subcommands, argument checks, and the dispatch.
//! - [`agent`]: connecting to `--addr`, and the agent's failures as the messages users see.
//! - [`render`]: stdout (a closed pipe ends quietly), JSON, tables.
//! - [`services`]: `services`, `instances`, `deregister`.
//! - [`register`]: `register` and the registration body it sends.
//! - [`watch`]: `watch`, following a service's event stream with reconnection.
//! - [`kv`]: `kv get|put|delete|list|watch`.
//! - [`cluster`]: `members`, `join`, `leave`, `remove`.

mod agent;
mod cluster;
mod kv;
mod register;
mod render;
mod services;
mod watch;

#[cfg(test)]
mod tests;

use anyhow::Context as _;
use clap::ArgGroup;

use agent::Agent;
use render::StdoutClosed;

/// Options shared by every client subcommand.
#[derive(clap::Args, Debug)]
pub struct ClientOpts {
    /// Agent to talk to.
    #[arg(
        long,
        global = true,
        env = "SIGNPOST_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    pub addr: String,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client subcommands.
// Parsed once per process; boxing `Register`'s fields would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// List every service with its instance counts by status.
    Services,
    /// List a service's instances (passing only unless --all).
    Instances {
        /// Service name.
        #[arg(value_parser = non_empty)]
        service: String,
        /// Include warning and critical instances too.
        #[arg(long)]
        all: bool,
    },
    /// Register an instance.
    #[command(group(ArgGroup::new("check").args(["ttl", "http", "tcp"]).multiple(false)))]
    #[command(group(ArgGroup::new("active_check").args(["http", "tcp"]).multiple(false)))]
    Register {
        /// Service name.
        #[arg(value_parser = non_empty)]
        service: String,
        /// Address other services use to reach the instance (IP or host name).
        #[arg(long)]
        address: String,
        /// Port the instance listens on.
        #[arg(long)]
        port: u16,
        /// Instance id (the agent picks one if omitted).
        #[arg(long, value_parser = non_empty)]
        id: Option<String>,
        /// A tag; repeat for several.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// A metadata entry; repeat for several.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta_pair)]
        meta: Vec<(String, String)>,
        /// Relative weight for load balancing.
        #[arg(long)]
        weight: Option<u32>,
        /// TTL check: the instance must heartbeat at least this often.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        ttl: Option<String>,
        /// HTTP check: the agent GETs this URL.
        #[arg(long, value_name = "URL")]
        http: Option<String>,
        /// TCP check: the agent connects to this address.
        #[arg(long, value_name = "HOST:PORT")]
        tcp: Option<String>,
        /// Time between active (--http/--tcp) checks.
        #[arg(long, value_name = "DURATION", requires = "active_check", value_parser = parse_duration_arg)]
        interval: Option<String>,
        /// How long an active (--http/--tcp) check may take.
        #[arg(long, value_name = "DURATION", requires = "active_check", value_parser = parse_duration_arg)]
        timeout: Option<String>,
        /// Remove the instance once it has been critical this long.
        #[arg(long, value_name = "DURATION", requires = "check", value_parser = parse_duration_arg)]
        deregister_after: Option<String>,
    },
    /// Deregister an instance.
    Deregister {
        /// Service name.
        #[arg(value_parser = non_empty)]
        service: String,
        /// Instance id.
        #[arg(value_parser = non_empty)]
        id: String,
    },
    /// Print each change to a service as it happens (until Ctrl-C).
    Watch {
        /// Service name.
        #[arg(value_parser = non_empty)]
        service: String,
        /// Include warning and critical instances too.
        #[arg(long)]
        all: bool,
    },
    /// Read and write the KV store.
    #[command(subcommand)]
    Kv(KvCommand),
    /// List the cluster's members: id, addresses, role, replication.
    Members,
    /// Add a node to the cluster (any member accepts; the leader makes the change).
    Join {
        /// The new node's id.
        #[arg(long)]
        node_id: u64,
        /// The new node's Raft address.
        #[arg(long)]
        raft_addr: String,
        /// The new node's HTTP address.
        #[arg(long)]
        http_addr: String,
    },
    /// Take the agent at --addr out of its cluster.
    Leave,
    /// Remove a node from the cluster.
    Remove {
        /// The node's id.
        node_id: u64,
    },
}

/// `signpost kv ...`
#[derive(clap::Subcommand, Debug)]
pub enum KvCommand {
    /// Print a key's value.
    Get {
        #[arg(value_parser = non_empty)]
        key: String,
    },
    /// Set a key to VALUE (or to standard input with `-`).
    Put {
        #[arg(value_parser = non_empty)]
        key: String,
        value: String,
        /// Only write if the key's modify index is this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
        /// Opaque flags stored with the value.
        #[arg(long)]
        flags: Option<u64>,
    },
    /// Delete a key, or everything under a prefix with --recurse.
    Delete {
        #[arg(value_parser = non_empty)]
        key: String,
        #[arg(long)]
        recurse: bool,
        /// Only delete if the key's modify index is this.
        #[arg(long, conflicts_with = "recurse")]
        cas: Option<u64>,
    },
    /// List keys and values under a prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print a key's value each time it changes (until Ctrl-C).
    Watch {
        #[arg(value_parser = non_empty)]
        key: String,
    },
}

/// Runs one client subcommand against the agent at `opts.addr`.
///
/// Output goes to stdout (tables, or JSON with `opts.json`); `watch` also reports
/// reconnections on stderr and returns `Ok(())` on Ctrl-C. A closed stdout (e.g. `| head`)
/// ends the command quietly with `Ok(())`.
pub async fn run(opts: &ClientOpts, cmd: ClientCommand) -> anyhow::Result<()> {
    match run_inner(opts, cmd).await {
        Err(err) if err.is::<StdoutClosed>() => Ok(()),
        other => other,
    }
}

async fn run_inner(opts: &ClientOpts, cmd: ClientCommand) -> anyhow::Result<()> {
    let agent = Agent::connect(&opts.addr)?;
    let json = opts.json;
    match cmd {
        ClientCommand::Services => services::services(&agent, json).await,
        ClientCommand::Instances { service, all } => {
            services::instances(&agent, &service, all, json).await
        }
        cmd @ ClientCommand::Register { .. } => register::register(&agent, cmd, json).await,
        ClientCommand::Deregister { service, id } => {
            services::deregister(&agent, &service, &id, json).await
        }
        ClientCommand::Watch { service, all } => {
            tokio::select! {
                res = watch::watch(&agent, &service, all, json) => res,
                sig = tokio::signal::ctrl_c() => sig.context("cannot listen for Ctrl-C"),
            }
        }
        ClientCommand::Kv(cmd) => kv::kv(&agent, cmd, json).await,
        ClientCommand::Members => cluster::members(&agent, json).await,
        ClientCommand::Join {
            node_id,
            raft_addr,
            http_addr,
        } => {
            let request = signpost_api::JoinRequest {
                node_id,
                raft_addr,
                http_addr,
            };
            cluster::join(&agent, &request, json).await
        }
        ClientCommand::Leave => cluster::leave(&agent, json).await,
        ClientCommand::Remove { node_id } => cluster::remove(&agent, node_id, json).await,
    }
}

// Argument checks (clap value parsers).

/// Rejects empty positional values such as `signpost instances ""`.
fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

/// Parses one `--meta KEY=VALUE`. The value may be empty and may itself contain `=`.
fn parse_meta_pair(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {s:?} (no '=')"));
    };
    if key.is_empty() {
        return Err(format!("expected KEY=VALUE, got {s:?} (empty key)"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Checks that a duration is well-formed (`10s`, `250ms`, `1m30s`) and passes it on as text.
fn parse_duration_arg(s: &str) -> Result<String, String> {
    let s = s.trim();
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (use e.g. 10s, 250ms, 5m)"))?;
    Ok(s.to_owned())
}
