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
//! - [`maintenance`]: `maintenance` (in or out of maintenance).
//! - [`register`]: `register` and the registration body it sends.
//! - [`watch`]: `watch`, following a service's event stream with reconnection.
//! - [`kv`]: `kv get|put|delete|list|watch`.
//! - [`cluster`]: `members`, `join`, `leave`, `remove`.
//! - [`acl`]: `acl bootstrap`, `acl policy create|list|delete`, `acl token
//!   create|list|delete|self`.

mod acl;
mod agent;
mod cluster;
mod kv;
mod maintenance;
mod register;
mod render;
mod services;
mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::ArgGroup;
use signpost_client::registry::ClientTls;

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
    /// ACL token sent with every request as `X-Consul-Token` (else `CONSUL_HTTP_TOKEN`).
    #[arg(long, global = true, env = "SIGNPOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) an `https://` agent is checked against (else `CONSUL_CACERT`,
    /// else the system's roots).
    #[arg(long, global = true, env = "SIGNPOST_CACERT", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for agents that require one (else `CONSUL_CLIENT_CERT`).
    #[arg(long, global = true, env = "SIGNPOST_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) (else `CONSUL_CLIENT_KEY`).
    #[arg(long, global = true, env = "SIGNPOST_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

impl ClientOpts {
    /// The token to send: `--token` / `SIGNPOST_TOKEN`, else `CONSUL_HTTP_TOKEN` as `env`
    /// reads it (the process environment; tests pass their own). An empty value is none.
    pub fn token_from(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        self.token
            .clone()
            .or_else(|| env("CONSUL_HTTP_TOKEN"))
            .filter(|t| !t.is_empty())
    }

    /// The TLS settings: each file from its flag / `SIGNPOST_*` variable, else the `CONSUL_*`
    /// one as `env` reads it.
    pub fn tls_from(&self, env: &dyn Fn(&str) -> Option<String>) -> ClientTls {
        let file = |given: &Option<PathBuf>, consul: &str| {
            given
                .clone()
                .or_else(|| env(consul).filter(|v| !v.is_empty()).map(PathBuf::from))
        };
        ClientTls {
            ca_file: file(&self.ca_file, "CONSUL_CACERT"),
            cert_file: file(&self.client_cert, "CONSUL_CLIENT_CERT"),
            key_file: file(&self.client_key, "CONSUL_CLIENT_KEY"),
            skip_verify: false,
        }
    }
}

/// The process environment, as [`ClientOpts`] reads its fallbacks.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
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
    /// Put an instance into maintenance (out of discovery, still registered) or take it out.
    Maintenance {
        /// Service name.
        #[arg(value_parser = non_empty)]
        service: String,
        /// Instance id.
        #[arg(value_parser = non_empty)]
        id: String,
        /// Put it into maintenance.
        #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
        enable: bool,
        /// Take it out of maintenance.
        #[arg(long)]
        disable: bool,
        /// Why (shown in listings and Consul's maintenance check).
        #[arg(long, requires = "enable")]
        reason: Option<String>,
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
    /// Manage ACL tokens and policies (Consul's `/v1/acl/*`).
    #[command(subcommand)]
    Acl(AclCommand),
}

/// `signpost acl ...`
#[derive(clap::Subcommand, Debug)]
pub enum AclCommand {
    /// Create the first management token (works once per cluster).
    Bootstrap,
    /// Create, list and delete policies.
    #[command(subcommand)]
    Policy(AclPolicyCommand),
    /// Create, list, delete and inspect tokens.
    #[command(subcommand)]
    Token(AclTokenCommand),
}

/// `signpost acl policy ...`
#[derive(clap::Subcommand, Debug)]
pub enum AclPolicyCommand {
    /// Create a policy from rules in Consul's rule language.
    Create {
        /// The policy's unique name.
        #[arg(long, value_parser = non_empty)]
        name: String,
        /// The rules (HCL or JSON): inline, `@FILE` to read a file, or `-` for standard input.
        #[arg(long, value_name = "RULES|@FILE|-")]
        rules: String,
        /// What the policy is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the policies.
    List,
    /// Delete a policy, by name or id.
    Delete {
        /// The policy's name or id.
        #[arg(value_parser = non_empty)]
        policy: String,
    },
}

/// `signpost acl token ...`
#[derive(clap::Subcommand, Debug)]
pub enum AclTokenCommand {
    /// Create a token carrying policies; prints its secret (shown only this once).
    Create {
        /// A policy to link, by name; repeat for several.
        #[arg(long = "policy-name", value_name = "NAME", required = true, value_parser = non_empty)]
        policy_names: Vec<String>,
        /// How long the token lives (`24h`, `30m`); for ever without.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        ttl: Option<String>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens (accessors, never secrets).
    List,
    /// Delete a token by its accessor id.
    Delete {
        /// The token's accessor id.
        #[arg(value_parser = non_empty)]
        accessor: String,
    },
    /// Show the token this command presents (`--token`).
    #[command(name = "self")]
    Itself,
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
    let agent = Agent::connect(
        &opts.addr,
        opts.token_from(&process_env),
        opts.tls_from(&process_env),
    )?;
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
        ClientCommand::Maintenance {
            service,
            id,
            enable,
            reason,
            ..
        } => maintenance::maintenance(&agent, &service, &id, enable, reason.as_deref(), json).await,
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
        ClientCommand::Acl(cmd) => acl::acl(&agent, cmd, json).await,
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
