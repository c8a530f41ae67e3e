//! The command-line client: subcommands that talk to a running agent over its HTTP API.
//!
//! Every subcommand prints a human-readable table by default and the agent's JSON with
//! `--json`. Errors carry enough context to be printed as-is (`error: {err:#}`).

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::io::{self, Write as _};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::ArgGroup;
use futures::StreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How long to wait for a TCP connection to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request limit for the one-shot commands (not for `watch`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// First delay before `watch` reconnects; doubles up to [`WATCH_MAX_BACKOFF`].
const WATCH_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between `watch` reconnection attempts.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest single event (or unterminated line) accepted from the event stream.
const MAX_SSE_EVENT_BYTES: usize = 64 << 20;

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
    let agent = Agent::new(&opts.addr)?;
    let json = opts.json;
    match cmd {
        ClientCommand::Services => {
            let body = agent.get_json(&["services"], false).await?;
            if json {
                return print_json_pretty(&body);
            }
            let services: Vec<ServiceSummary> =
                serde_json::from_value(body).map_err(unexpected_response)?;
            write_stdout(&render_services(&services))
        }
        ClientCommand::Instances { service, all } => {
            let body = agent
                .get_json(&["services", &service, "instances"], all)
                .await?;
            if json {
                return print_json_pretty(&body);
            }
            let list: InstanceList = serde_json::from_value(body).map_err(unexpected_response)?;
            write_stdout(&render_instances(&list.instances))
        }
        cmd @ ClientCommand::Register { .. } => {
            let (service, body) = register_body(cmd)?;
            let url = agent.endpoint(&["services", &service, "instances"], false);
            let resp = agent
                .send(agent.client.post(url).json(&body).timeout(REQUEST_TIMEOUT))
                .await?;
            let status = resp.status();
            let instance = agent.read_json(resp).await?;
            if json {
                return print_json_pretty(&instance);
            }
            let id = instance
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("unexpected response from the agent: no instance id"))?;
            let how = match status {
                StatusCode::CREATED => " (created)",
                StatusCode::OK => " (replaced)",
                _ => "",
            };
            write_stdout(&format!("registered {service}/{id}{how}\n"))
        }
        ClientCommand::Deregister { service, id } => {
            let url = agent.endpoint(&["services", &service, "instances", &id], false);
            agent
                .send(agent.client.delete(url).timeout(REQUEST_TIMEOUT))
                .await?;
            if json {
                return print_json_pretty(
                    &serde_json::json!({ "deregistered": { "service": service, "id": id } }),
                );
            }
            write_stdout(&format!("deregistered {service}/{id}\n"))
        }
        ClientCommand::Watch { service, all } => {
            tokio::select! {
                res = watch(&agent, &service, all, json) => res,
                sig = tokio::signal::ctrl_c() => sig.context("cannot listen for Ctrl-C"),
            }
        }
        ClientCommand::Kv(cmd) => kv(&agent, cmd, json).await,
        ClientCommand::Members => {
            let body = agent.get_json(&["cluster", "members"], false).await?;
            print_members(&body, json)
        }
        ClientCommand::Join {
            node_id,
            raft_addr,
            http_addr,
        } => {
            let body = serde_json::json!({"node_id": node_id, "raft_addr": raft_addr, "http_addr": http_addr});
            cluster_post(&agent, "join", &body, json).await
        }
        ClientCommand::Leave => cluster_post(&agent, "leave", &serde_json::json!({}), json).await,
        ClientCommand::Remove { node_id } => {
            cluster_post(
                &agent,
                "remove",
                &serde_json::json!({"node_id": node_id}),
                json,
            )
            .await
        }
    }
}

async fn cluster_post(agent: &Agent, verb: &str, body: &Value, json: bool) -> anyhow::Result<()> {
    let url = agent.endpoint(&["cluster", verb], false);
    let resp = agent
        .send(
            agent
                .client
                .post(url)
                .json(body)
                .timeout(Duration::from_secs(120)),
        )
        .await?;
    let body = agent.read_json(resp).await?;
    if verb == "leave" {
        if json {
            return print_json_pretty(&body);
        }
        return write_stdout(&format!("node {} left the cluster\n", body["left"]));
    }
    print_members(&body, json)
}

fn print_members(body: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json_pretty(body);
    }
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = body["members"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            vec![
                show(&m["id"]),
                show(&m["role"]),
                show(&m["http_addr"]),
                show(&m["raft_addr"]),
                show(&m["matched_index"]),
                show(&m["lag"]),
            ]
        })
        .collect();
    write_stdout(&format_table(
        &["ID", "ROLE", "HTTP", "RAFT", "MATCHED", "LAG"],
        &rows,
    ))
}

// ---------------------------------------------------------------------------------------------
// KV
// ---------------------------------------------------------------------------------------------

/// A KV entry as the agent's native API returns it.
#[derive(Debug, Deserialize, Serialize)]
struct KvEntryView {
    key: String,
    /// Base64, as the agent sends it.
    value: String,
    flags: u64,
    modify_index: u64,
}

impl KvEntryView {
    fn text(&self) -> anyhow::Result<String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.value)
            .map_err(|e| anyhow!("the agent sent a value that is not base64: {e}"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn kv_url(agent: &Agent, key: &str, query: &[(&str, String)]) -> Url {
    let segments: Vec<&str> = std::iter::once("kv").chain(key.split('/')).collect();
    let mut url = agent.endpoint(&segments, false);
    for (k, v) in query {
        url.query_pairs_mut().append_pair(k, v);
    }
    url
}

async fn kv(agent: &Agent, cmd: KvCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        KvCommand::Get { key } => {
            let resp = agent
                .send(
                    agent
                        .client
                        .get(kv_url(agent, &key, &[]))
                        .timeout(REQUEST_TIMEOUT),
                )
                .await?;
            let body = agent.read_json(resp).await?;
            if json {
                return print_json_pretty(&body);
            }
            let entry: KvEntryView = serde_json::from_value(body).map_err(unexpected_response)?;
            write_stdout(&format!("{}\n", entry.text()?))
        }
        KvCommand::Put {
            key,
            value,
            cas,
            flags,
        } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("cannot read the value from standard input")?;
                buf
            } else {
                value.into_bytes()
            };
            let mut query = Vec::new();
            if let Some(c) = cas {
                query.push(("cas", c.to_string()));
            }
            if let Some(f) = flags {
                query.push(("flags", f.to_string()));
            }
            let resp = agent
                .send(
                    agent
                        .client
                        .put(kv_url(agent, &key, &query))
                        .body(value)
                        .timeout(REQUEST_TIMEOUT),
                )
                .await?;
            let body = agent.read_json(resp).await?;
            if json {
                return print_json_pretty(&body);
            }
            write_stdout(&format!("set {key} (index {})\n", body["modify_index"]))
        }
        KvCommand::Delete { key, recurse, cas } => {
            let mut query = Vec::new();
            if recurse {
                query.push(("recurse", "true".to_string()));
            }
            if let Some(c) = cas {
                query.push(("cas", c.to_string()));
            }
            agent
                .send(
                    agent
                        .client
                        .delete(kv_url(agent, &key, &query))
                        .timeout(REQUEST_TIMEOUT),
                )
                .await?;
            if json {
                return print_json_pretty(
                    &serde_json::json!({ "deleted": key, "recurse": recurse }),
                );
            }
            write_stdout(&format!(
                "deleted {key}{}\n",
                if recurse { " (recursively)" } else { "" }
            ))
        }
        KvCommand::List { prefix } => {
            let url = kv_url(agent, &prefix, &[("recurse", "true".to_string())]);
            let resp = agent
                .client
                .get(url)
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| agent.unreachable(&e))?;
            let entries: Vec<KvEntryView> = if resp.status() == StatusCode::NOT_FOUND {
                Vec::new()
            } else if resp.status().is_success() {
                serde_json::from_value(agent.read_json(resp).await?).map_err(unexpected_response)?
            } else {
                return Err(agent_error(resp).await);
            };
            if json {
                return print_json_pretty(&serde_json::to_value(&entries)?);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| Ok(vec![e.key.clone(), e.text()?, e.modify_index.to_string()]))
                .collect::<anyhow::Result<_>>()?;
            write_stdout(&format_table(&["KEY", "VALUE", "INDEX"], &rows))
        }
        KvCommand::Watch { key } => {
            tokio::select! {
                res = kv_watch(agent, &key, json) => res,
                sig = tokio::signal::ctrl_c() => sig.context("cannot listen for Ctrl-C"),
            }
        }
    }
}

/// Follows a key with blocking queries, printing its value at start and on every change.
async fn kv_watch(agent: &Agent, key: &str, json: bool) -> anyhow::Result<()> {
    let mut index = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let url = kv_url(
            agent,
            key,
            &[("index", index.to_string()), ("wait", "5m".to_string())],
        );
        let resp = match agent.client.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                warn(&format!("{}; retrying", agent.unreachable(&e)));
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let new_index: u64 = resp
            .headers()
            .get("x-signpost-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if new_index == index {
            continue;
        }
        index = new_index;
        backoff.reset();
        let line = if resp.status() == StatusCode::NOT_FOUND {
            if json {
                serde_json::json!({ "index": index, "key": key, "deleted": true }).to_string()
            } else {
                format!("[index {index}] {key} is not set")
            }
        } else {
            let body = agent.read_json(resp).await?;
            if json {
                serde_json::json!({ "index": index, "entry": body }).to_string()
            } else {
                let entry: KvEntryView =
                    serde_json::from_value(body).map_err(unexpected_response)?;
                format!("[index {index}] {key} = {}", entry.text()?)
            }
        };
        write_stdout(&format!("{line}\n"))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Argument parsing helpers
// ---------------------------------------------------------------------------------------------

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

/// Turns the `--meta` pairs into a map, rejecting a key given twice.
fn collect_metadata(pairs: &[(String, String)]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if map.insert(key.clone(), value.clone()).is_some() {
            bail!("--meta {key:?} given more than once");
        }
    }
    Ok(map)
}

/// Checks that a duration is well-formed (`10s`, `250ms`, `1m30s`) and passes it on as text.
fn parse_duration_arg(s: &str) -> Result<String, String> {
    let s = s.trim();
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (use e.g. 10s, 250ms, 5m)"))?;
    Ok(s.to_owned())
}

/// The JSON body of `POST /api/v1/services/{service}/instances`.
#[derive(Debug, Serialize, PartialEq)]
struct RegisterBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    address: String,
    port: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<CheckBody>,
}

/// The `check` object of a registration; only the fields given on the command line are sent.
#[derive(Debug, Default, Serialize, PartialEq)]
struct CheckBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_after: Option<String>,
}

/// Builds the registration request from a `register` command: `(service, body)`.
fn register_body(cmd: ClientCommand) -> anyhow::Result<(String, RegisterBody)> {
    let ClientCommand::Register {
        service,
        address,
        port,
        id,
        tags,
        meta,
        weight,
        ttl,
        http,
        tcp,
        interval,
        timeout,
        deregister_after,
    } = cmd
    else {
        bail!("internal error: not a register command");
    };
    let check = CheckBody {
        ttl,
        http,
        tcp,
        interval,
        timeout,
        deregister_after,
    };
    let body = RegisterBody {
        id,
        address,
        port,
        tags,
        metadata: collect_metadata(&meta)?,
        weight,
        check: (check != CheckBody::default()).then_some(check),
    };
    Ok((service, body))
}

// ---------------------------------------------------------------------------------------------
// Talking to the agent
// ---------------------------------------------------------------------------------------------

/// An HTTP client bound to one agent.
struct Agent {
    client: reqwest::Client,
    base: Url,
    /// The address as the user wrote it (plus `http://`), for error messages.
    display: String,
}

impl Agent {
    fn new(addr: &str) -> anyhow::Result<Self> {
        let (base, display) = parse_base_url(addr)?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("signpost-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Agent {
            client,
            base,
            display,
        })
    }

    /// `{base}/api/v1/{segments...}`, each segment percent-encoded; `?status=any` if `all`.
    fn endpoint(&self, segments: &[&str], all: bool) -> Url {
        endpoint(&self.base, segments, all)
    }

    fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the agent at {}: {}",
            self.display,
            describe_transport_error(err)
        )
    }

    /// Sends a request; transport failures and non-2xx answers become readable errors.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Response> {
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(agent_error(resp).await)
        }
    }

    async fn read_json(&self, resp: Response) -> anyhow::Result<Value> {
        let bytes = resp.bytes().await.map_err(|e| {
            anyhow!(
                "lost the connection to the agent at {}: {}",
                self.display,
                describe_transport_error(&e)
            )
        })?;
        serde_json::from_slice(&bytes).map_err(unexpected_response)
    }

    async fn get_json(&self, segments: &[&str], all: bool) -> anyhow::Result<Value> {
        let url = self.endpoint(segments, all);
        let resp = self
            .send(self.client.get(url).timeout(REQUEST_TIMEOUT))
            .await?;
        self.read_json(resp).await
    }
}

/// Parses `--addr`: `http://host:port[/prefix]`, or a bare `host:port` (http is assumed).
/// Returns the base URL and the text to show in error messages.
fn parse_base_url(addr: &str) -> anyhow::Result<(Url, String)> {
    let trimmed = addr.trim();
    if trimmed.is_empty() {
        bail!("the agent address (--addr / SIGNPOST_ADDR) is empty");
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| anyhow!("invalid agent address {addr:?}: {e} (expected http://HOST:PORT)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "invalid agent address {addr:?}: unsupported scheme {:?} (expected http://HOST:PORT)",
            url.scheme()
        );
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        bail!("invalid agent address {addr:?}: no host (expected http://HOST:PORT)");
    }
    url.set_query(None);
    url.set_fragment(None);
    let display = with_scheme.trim_end_matches('/').to_owned();
    Ok((url, display))
}

fn endpoint(base: &Url, segments: &[&str], all: bool) -> Url {
    let mut url = base.clone();
    // `path_segments_mut` only fails for cannot-be-a-base URLs, which `parse_base_url` rejects.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["api", "v1"]).extend(segments);
    }
    if all {
        url.query_pairs_mut().append_pair("status", "any");
    }
    url
}

/// A short reason for a failed request: "connection refused", "timed out", ...
fn describe_transport_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut innermost: &dyn std::error::Error = err;
    let mut next = err.source();
    while let Some(source) = next {
        if let Some(io_err) = source.downcast_ref::<io::Error>() {
            match io_err.kind() {
                io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                io::ErrorKind::ConnectionReset => return "connection reset by peer".to_owned(),
                io::ErrorKind::TimedOut => return "timed out".to_owned(),
                _ => {}
            }
        }
        innermost = source;
        next = source.source();
    }
    innermost.to_string()
}

/// The agent's error body: `{"error": "...", "field": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    field: Option<String>,
}

/// Turns a non-2xx answer into an error: the agent's message, the field it blames, the status.
async fn agent_error(resp: Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    anyhow!(format_agent_error(status, &body))
}

fn format_agent_error(status: StatusCode, body: &[u8]) -> String {
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(body) {
        return match err.field.filter(|f| !f.is_empty()) {
            Some(field) => format!(
                "the agent answered {status}: {} (field: {field})",
                err.error
            ),
            None => format!("the agent answered {status}: {}", err.error),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("the agent answered {status}")
    } else {
        let snippet: String = text.chars().take(200).collect();
        format!("the agent answered {status}: {snippet}")
    }
}

fn unexpected_response(err: serde_json::Error) -> anyhow::Error {
    anyhow!("unexpected response from the agent: {err}")
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Marker error: stdout was closed (e.g. piped into `head`); the command ends quietly.
#[derive(Debug)]
struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(StdoutClosed)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

fn print_json_pretty(value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    text.push('\n');
    write_stdout(&text)
}

/// Lays out rows under headers, padding every column but the last to its widest cell
/// (two spaces between columns, no trailing whitespace). Missing cells are blank.
fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let len = cell.chars().count();
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&mut headers.iter().copied());
    for row in rows {
        push_row(&mut (0..headers.len()).map(|i| row.get(i).map_or("", String::as_str)));
    }
    out
}

/// `host:port`, with IPv6 addresses in brackets.
fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// One entry of `GET /api/v1/services`.
#[derive(Debug, Deserialize)]
struct ServiceSummary {
    name: String,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    instances: StatusCounts,
}

#[derive(Debug, Default, Deserialize)]
struct StatusCounts {
    #[serde(default)]
    passing: u64,
    #[serde(default)]
    warning: u64,
    #[serde(default)]
    critical: u64,
}

/// `GET /api/v1/services/{service}/instances`.
#[derive(Debug, Deserialize)]
struct InstanceList {
    instances: Vec<InstanceView>,
}

/// The parts of an instance the tables show.
#[derive(Debug, Deserialize)]
struct InstanceView {
    id: String,
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    weight: u64,
    status: String,
}

fn render_services(services: &[ServiceSummary]) -> String {
    if services.is_empty() {
        return "no services\n".to_owned();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.instances.passing.to_string(),
                s.instances.warning.to_string(),
                s.instances.critical.to_string(),
                s.index.to_string(),
            ]
        })
        .collect();
    format_table(&["NAME", "PASSING", "WARNING", "CRITICAL", "INDEX"], &rows)
}

fn render_instances(instances: &[InstanceView]) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                host_port(&i.address, i.port),
                i.status.clone(),
                i.weight.to_string(),
                if i.tags.is_empty() {
                    "-".to_owned()
                } else {
                    i.tags.join(",")
                },
            ]
        })
        .collect();
    format_table(&["ID", "ADDRESS", "STATUS", "WEIGHT", "TAGS"], &rows)
}

// ---------------------------------------------------------------------------------------------
// Watch: Server-Sent Events
// ---------------------------------------------------------------------------------------------

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    /// The `event:` name (`"message"` when the event had none).
    event: String,
    /// The `data:` lines joined with `\n`.
    data: String,
}

/// Incremental `text/event-stream` parser: feed it chunks as they arrive, get whole events.
///
/// Lines end with `\n` or `\r\n`; a blank line dispatches the event; lines starting with `:`
/// are comments; `id:`, `retry:` and unknown fields are ignored; an event without `data:` is
/// dropped, as is an unterminated event at the end of the stream.
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of the current, not yet terminated line.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no `\n`.
    scanned: usize,
    /// Whether the first line (which may start with a byte-order mark) has been seen.
    seen_first_line: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn new() -> Self {
        Self::default()
    }

    /// Consumes a chunk and returns the events it completed. Fails if one event grows
    /// beyond [`MAX_SSE_EVENT_BYTES`].
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start + self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = start + self.scanned + pos;
            let raw = &self.buf[start..end];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let mut line = String::from_utf8_lossy(raw).into_owned();
            if !self.seen_first_line {
                self.seen_first_line = true;
                if line.starts_with('\u{feff}') {
                    line.remove(0);
                }
            }
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start = end + 1;
            self.scanned = 0;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        let pending = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if pending > MAX_SSE_EVENT_BYTES {
            return Err(format!(
                "an event from the agent is larger than {} MiB",
                MAX_SSE_EVENT_BYTES >> 20
            ));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            let data = self.data.take()?;
            let event = event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned());
            return Some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// Reconnection delays: `initial`, doubling up to `max`, back to `initial` after `reset`.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Formats one watch event as an output line (without the newline).
fn render_event(ev: &SseEvent, json: bool) -> Result<String, String> {
    let data: Map<String, Value> =
        serde_json::from_str(&ev.data).map_err(|e| format!("invalid JSON: {e}"))?;
    if json {
        #[derive(Serialize)]
        struct Line<'a> {
            event: &'a str,
            #[serde(flatten)]
            data: &'a Map<String, Value>,
        }
        return serde_json::to_string(&Line {
            event: &ev.event,
            data: &data,
        })
        .map_err(|e| e.to_string());
    }
    let index = match data.get("index") {
        Some(Value::Number(n)) => n.to_string(),
        _ => "?".to_owned(),
    };
    match ev.event.as_str() {
        "reset" => {
            let n = data
                .get("instances")
                .and_then(Value::as_array)
                .map(Vec::len)
                .ok_or("no \"instances\" array")?;
            let plural = if n == 1 { "" } else { "s" };
            Ok(format!("[index {index}] reset: {n} instance{plural}"))
        }
        "add" | "update" | "remove" => {
            let instance = data.get("instance").ok_or("no \"instance\"")?;
            let i =
                InstanceView::deserialize(instance).map_err(|e| format!("bad instance: {e}"))?;
            Ok(format!(
                "[index {index}] {} {} {} {}",
                ev.event,
                i.id,
                host_port(&i.address, i.port),
                i.status
            ))
        }
        other => Ok(format!("[index {index}] {other}")),
    }
}

fn warn(message: &str) {
    // Nothing sensible to do if stderr itself is gone.
    let _ = writeln!(io::stderr(), "{message}");
}

/// Follows a service's event stream, reconnecting with backoff, until an unrecoverable error.
///
/// Failing to connect the first time, and any 4xx answer, are errors; once a stream has
/// been established, dropped connections and 5xx answers are retried.
async fn watch(agent: &Agent, service: &str, all: bool, json: bool) -> anyhow::Result<()> {
    let url = agent.endpoint(&["services", service, "watch"], all);
    let mut backoff = Backoff::new(WATCH_INITIAL_BACKOFF, WATCH_MAX_BACKOFF);
    let mut connected_once = false;
    loop {
        let reason = watch_session(agent, &url, json, &mut connected_once, &mut backoff).await?;
        let delay = backoff.next_delay();
        warn(&format!(
            "watch: {reason}; reconnecting in {}",
            humantime::format_duration(delay)
        ));
        tokio::time::sleep(delay).await;
    }
}

/// One connection of `watch`. `Ok(reason)` means "retry"; `Err` means "give up".
async fn watch_session(
    agent: &Agent,
    url: &Url,
    json: bool,
    connected_once: &mut bool,
    backoff: &mut Backoff,
) -> anyhow::Result<String> {
    let resp = match agent
        .client
        .get(url.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
    {
        Ok(resp) => resp,
        Err(e) if *connected_once => return Ok(agent.unreachable(&e).to_string()),
        Err(e) => return Err(agent.unreachable(&e)),
    };
    let status = resp.status();
    if !status.is_success() {
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        let err = agent_error(resp).await;
        return if *connected_once && retryable {
            Ok(err.to_string())
        } else {
            Err(err)
        };
    }
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("text/event-stream") {
        bail!(
            "unexpected response from the agent at {}: expected an event stream, got {:?}",
            agent.display,
            content_type
        );
    }
    *connected_once = true;

    let mut parser = SseParser::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return Ok(format!(
                    "lost the connection to the agent at {}: {}",
                    agent.display,
                    describe_transport_error(&e)
                ))
            }
        };
        let events = match parser.push(&chunk) {
            Ok(events) => events,
            Err(reason) => return Ok(reason),
        };
        for ev in events {
            match render_event(&ev, json) {
                Ok(line) => {
                    backoff.reset();
                    write_stdout(&format!("{line}\n"))?;
                }
                Err(why) => warn(&format!(
                    "watch: ignoring a bad {:?} event: {why}",
                    ev.event
                )),
            }
        }
    }
    Ok(format!("the agent at {} closed the stream", agent.display))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("signpost").chain(args.iter().copied()))
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    // --- SSE parser -------------------------------------------------------------------------

    #[test]
    fn sse_parses_events_comments_and_crlf() {
        let mut p = SseParser::new();
        let input = ": keep-alive\n\nevent: reset\r\ndata: {\"index\":1}\r\n\r\n\
                     event:add\ndata:{\"a\":1}\nid: 7\nretry: 100\n\n";
        let events = p.push(input.as_bytes()).unwrap();
        assert_eq!(
            events,
            vec![ev("reset", "{\"index\":1}"), ev("add", "{\"a\":1}")]
        );
    }

    #[test]
    fn sse_joins_multiline_data_and_defaults_event_name() {
        let mut p = SseParser::new();
        let events = p
            .push(b"data: one\ndata:two\ndata\ndata:  three\n\n")
            .unwrap();
        assert_eq!(events, vec![ev("message", "one\ntwo\n\n three")]);
    }

    #[test]
    fn sse_handles_arbitrary_chunk_boundaries() {
        let input = "\u{feff}event: update\r\ndata: {\"x\":\"é\"}\r\n\r\n: ping\n\nevent: remove\ndata: 2\n\n";
        let expected = vec![ev("update", "{\"x\":\"é\"}"), ev("remove", "2")];
        for size in 1..=7 {
            let mut p = SseParser::new();
            let mut events = Vec::new();
            for chunk in input.as_bytes().chunks(size) {
                events.extend(p.push(chunk).unwrap());
            }
            assert_eq!(events, expected, "chunk size {size}");
        }
    }

    #[test]
    fn sse_drops_events_without_data_and_unterminated_events() {
        let mut p = SseParser::new();
        // The event name of a data-less event must not leak into the next one.
        let events = p
            .push(b"event: add\n\ndata: x\n\nevent: reset\ndata: y\n")
            .unwrap();
        assert_eq!(events, vec![ev("message", "x")]);
        assert_eq!(p.push(b"").unwrap(), vec![]);
        // The pending event completes once its blank line arrives.
        assert_eq!(p.push(b"\n").unwrap(), vec![ev("reset", "y")]);
    }

    #[test]
    fn sse_rejects_oversized_events() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_SSE_EVENT_BYTES + 1];
        assert!(p.push(&big).is_err());
    }

    // --- watch output -----------------------------------------------------------------------

    const INSTANCE: &str = r#"{"id":"users-10.0.0.1-8080","service":"users","address":"10.0.0.1",
        "port":8080,"tags":["a"],"metadata":{},"weight":1,"status":"passing",
        "created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z",
        "create_index":14,"modify_index":14}"#;

    #[test]
    fn watch_events_render_as_lines() {
        let reset = format!(r#"{{"index":12,"instances":[{INSTANCE},{INSTANCE},{INSTANCE}]}}"#);
        assert_eq!(
            render_event(&ev("reset", &reset), false).unwrap(),
            "[index 12] reset: 3 instances"
        );
        let add = format!(r#"{{"index":14,"instance":{INSTANCE}}}"#);
        assert_eq!(
            render_event(&ev("add", &add), false).unwrap(),
            "[index 14] add users-10.0.0.1-8080 10.0.0.1:8080 passing"
        );
        let v6 = INSTANCE.replace("10.0.0.1\"", "fd00::1\"");
        let remove = format!(r#"{{"index":15,"instance":{v6}}}"#);
        assert_eq!(
            render_event(&ev("remove", &remove), false).unwrap(),
            "[index 15] remove users-10.0.0.1-8080 [fd00::1]:8080 passing"
        );
        assert!(render_event(&ev("add", "not json"), false).is_err());
        assert!(render_event(&ev("add", r#"{"index":1}"#), false).is_err());
    }

    #[test]
    fn watch_events_render_as_json_lines() {
        let add = format!(r#"{{"index":14,"instance":{INSTANCE}}}"#);
        let line = render_event(&ev("add", &add), true).unwrap();
        assert!(line.starts_with(r#"{"event":"add","#), "{line}");
        assert!(!line.contains('\n'));
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["index"], 14);
        assert_eq!(parsed["instance"]["id"], "users-10.0.0.1-8080");

        let line = render_event(&ev("reset", r#"{"index":3,"instances":[]}"#), true).unwrap();
        assert_eq!(line, r#"{"event":"reset","index":3,"instances":[]}"#);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(WATCH_INITIAL_BACKOFF, WATCH_MAX_BACKOFF);
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    // --- tables -----------------------------------------------------------------------------

    #[test]
    fn table_pads_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["users".to_owned(), "2".to_owned(), "x".to_owned()],
            vec!["a".to_owned(), "12345".to_owned(), "".to_owned()],
            vec!["ünï".to_owned()],
        ];
        let out = format_table(&["NAME", "N", "LAST"], &rows);
        assert_eq!(
            out,
            "NAME   N      LAST\n\
             users  2      x\n\
             a      12345\n\
             ünï\n"
        );
    }

    #[test]
    fn services_table_and_empty_list() {
        assert_eq!(render_services(&[]), "no services\n");
        let services: Vec<ServiceSummary> = serde_json::from_str(
            r#"[{"name":"users","index":12,"instances":{"passing":2,"warning":0,"critical":1},"has_definition":false},
                {"name":"billing-api","index":7,"instances":{"passing":10,"warning":1,"critical":0}}]"#,
        )
        .unwrap();
        assert_eq!(
            render_services(&services),
            "NAME         PASSING  WARNING  CRITICAL  INDEX\n\
             users        2        0        1         12\n\
             billing-api  10       1        0         7\n"
        );
    }

    #[test]
    fn instances_table_and_empty_list() {
        assert_eq!(render_instances(&[]), "ID  ADDRESS  STATUS  WEIGHT  TAGS\n");
        let list: InstanceList = serde_json::from_str(&format!(
            r#"{{"index":3,"instances":[{INSTANCE},
               {{"id":"b","address":"::1","port":80,"tags":[],"weight":5,"status":"critical"}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            render_instances(&list.instances),
            "ID                   ADDRESS        STATUS    WEIGHT  TAGS\n\
             users-10.0.0.1-8080  10.0.0.1:8080  passing   1       a\n\
             b                    [::1]:80       critical  5       -\n"
        );
    }

    // --- arguments --------------------------------------------------------------------------

    #[test]
    fn meta_pairs_split_on_the_first_equals_sign() {
        assert_eq!(
            parse_meta_pair("version=1.2"),
            Ok(("version".into(), "1.2".into()))
        );
        assert_eq!(parse_meta_pair("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert_eq!(parse_meta_pair("empty="), Ok(("empty".into(), "".into())));
        let err = parse_meta_pair("novalue").unwrap_err();
        assert!(
            err.contains("KEY=VALUE") && err.contains("novalue"),
            "{err}"
        );
        assert!(parse_meta_pair("=v").unwrap_err().contains("empty key"));
    }

    #[test]
    fn meta_without_equals_is_rejected_by_the_parser() {
        let err = parse(&[
            "register",
            "users",
            "--address",
            "a",
            "--port",
            "1",
            "--meta",
            "zone",
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--meta") && text.contains("KEY=VALUE"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_meta_keys_are_rejected() {
        let pairs = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        assert!(collect_metadata(&pairs)
            .unwrap_err()
            .to_string()
            .contains("\"a\""));
    }

    #[test]
    fn register_builds_the_request_body() {
        let cli = parse(&[
            "register",
            "users",
            "--address",
            "10.0.0.1",
            "--port",
            "8080",
            "--id",
            "u1",
            "--tag",
            "a",
            "--tag",
            "b",
            "--meta",
            "zone=eu",
            "--meta",
            "v=1=2",
            "--weight",
            "3",
            "--http",
            "http://10.0.0.1:8080/health",
            "--interval",
            "5s",
            "--timeout",
            "1s",
            "--deregister-after",
            "1m",
        ])
        .unwrap();
        let (service, body) = register_body(cli.cmd).unwrap();
        assert_eq!(service, "users");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "id": "u1", "address": "10.0.0.1", "port": 8080, "tags": ["a", "b"],
                "metadata": {"zone": "eu", "v": "1=2"}, "weight": 3,
                "check": {"http": "http://10.0.0.1:8080/health", "interval": "5s",
                          "timeout": "1s", "deregister_after": "1m"}
            })
        );

        let cli = parse(&["register", "users", "--address", "h", "--port", "1"]).unwrap();
        let (_, body) = register_body(cli.cmd).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"address": "h", "port": 1})
        );

        let cli = parse(&[
            "register",
            "users",
            "--address",
            "h",
            "--port",
            "1",
            "--ttl",
            "10s",
        ])
        .unwrap();
        let (_, body) = register_body(cli.cmd).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap()["check"],
            serde_json::json!({"ttl": "10s"})
        );
    }

    #[test]
    fn register_argument_rules() {
        let base = ["register", "users", "--address", "h", "--port", "1"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(with(&["--ttl", "10s", "--http", "http://x"]).is_err());
        assert!(with(&["--tcp", "h:1", "--http", "http://x"]).is_err());
        assert!(with(&["--ttl", "ten seconds"]).is_err());
        assert!(
            with(&["--interval", "5s"]).is_err(),
            "--interval needs --http/--tcp"
        );
        assert!(with(&["--ttl", "10s", "--interval", "5s"]).is_err());
        assert!(
            with(&["--deregister-after", "1m"]).is_err(),
            "needs a check"
        );
        assert!(with(&["--ttl", "10s", "--deregister-after", "1m"]).is_ok());
        assert!(with(&["--tcp", "h:1", "--interval", "5s", "--timeout", "1s"]).is_ok());
        assert!(
            parse(&["register", "users", "--address", "h"]).is_err(),
            "--port required"
        );
        assert!(parse(&["instances", ""]).is_err());
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = parse(&[
            "instances",
            "users",
            "--all",
            "--json",
            "--addr",
            "http://x:1",
        ])
        .unwrap();
        assert!(cli.opts.json);
        assert_eq!(cli.opts.addr, "http://x:1");
        assert!(matches!(
            cli.cmd,
            ClientCommand::Instances { all: true, .. }
        ));
    }

    // --- URLs and errors --------------------------------------------------------------------

    #[test]
    fn agent_urls() {
        let (base, display) = parse_base_url("127.0.0.1:8500").unwrap();
        assert_eq!(display, "http://127.0.0.1:8500");
        assert_eq!(
            endpoint(&base, &["services", "a/b c", "instances"], true).as_str(),
            "http://127.0.0.1:8500/api/v1/services/a%2Fb%20c/instances?status=any"
        );
        let (base, display) = parse_base_url("http://agent:1/prefix/").unwrap();
        assert_eq!(display, "http://agent:1/prefix");
        assert_eq!(
            endpoint(&base, &["services"], false).as_str(),
            "http://agent:1/prefix/api/v1/services"
        );
        assert!(parse_base_url("").is_err());
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("http://").is_err());
    }

    #[test]
    fn agent_error_messages() {
        let body = br#"{"error":"port must be between 1 and 65535","field":"port"}"#;
        assert_eq!(
            format_agent_error(StatusCode::BAD_REQUEST, body),
            "the agent answered 400 Bad Request: port must be between 1 and 65535 (field: port)"
        );
        assert_eq!(
            format_agent_error(StatusCode::NOT_FOUND, br#"{"error":"no such instance"}"#),
            "the agent answered 404 Not Found: no such instance"
        );
        assert_eq!(
            format_agent_error(StatusCode::BAD_GATEWAY, b"  upstream down\n"),
            "the agent answered 502 Bad Gateway: upstream down"
        );
        assert_eq!(
            format_agent_error(StatusCode::SERVICE_UNAVAILABLE, b""),
            "the agent answered 503 Service Unavailable"
        );
    }

    /// Serves one canned HTTP response on a local port and returns the address and the
    /// request it received.
    async fn one_shot_server(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and (if any) the body announced by Content-Length.
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (addr, handle)
    }

    #[tokio::test]
    async fn unreachable_agent_is_reported_clearly() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let opts = ClientOpts {
            addr: addr.clone(),
            json: false,
        };
        let err = run(&opts, ClientCommand::Services).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("cannot reach the agent at {addr}: connection refused")
        );
    }

    #[tokio::test]
    async fn agent_errors_are_shown_with_status_and_field() {
        let (addr, server) = one_shot_server(
            "404 Not Found",
            r#"{"error":"no such instance","field":"id"}"#,
        )
        .await;
        let opts = ClientOpts { addr, json: false };
        let cmd = ClientCommand::Deregister {
            service: "users".into(),
            id: "u 1".into(),
        };
        let err = run(&opts, cmd).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the agent answered 404 Not Found: no such instance (field: id)"
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with("DELETE /api/v1/services/users/instances/u%201 HTTP/1.1"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn register_posts_json() {
        let (addr, server) = one_shot_server("201 Created", r#"{"id":"u1"}"#).await;
        let cli = parse(&[
            "register",
            "users",
            "--address",
            "h",
            "--port",
            "1",
            "--tag",
            "x",
            "--addr",
            &addr,
        ])
        .unwrap();
        run(&cli.opts, cli.cmd).await.unwrap();
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /api/v1/services/users/instances HTTP/1.1"),
            "{request}"
        );
        assert!(
            request.ends_with(r#"{"address":"h","port":1,"tags":["x"]}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn watch_fails_fast_when_the_agent_refuses_the_stream() {
        let (addr, _server) =
            one_shot_server("400 Bad Request", r#"{"error":"bad service"}"#).await;
        let opts = ClientOpts { addr, json: false };
        let cmd = ClientCommand::Watch {
            service: "users".into(),
            all: true,
        };
        let err = run(&opts, cmd).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the agent answered 400 Bad Request: bad service"
        );
    }
}
