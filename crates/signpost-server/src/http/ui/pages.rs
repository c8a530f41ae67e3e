//! The UI's pages as compile-time templates ([`maud`]): pure functions from what a handler read
//! through the service layer to HTML. Every value interpolated with `(…)` is escaped by maud;
//! nothing here writes unescaped text except the fixed markup itself.
//!
//! Each live part is a section a page and a fragment route render alike (the services table,
//! a service's instances), so the browser's script swaps in exactly what a reload would show.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup, DOCTYPE};
use signpost_api::instance::authority;
use signpost_api::Members;
use signpost_core::health::GuardStatus;
use signpost_core::kv::KvEntry;
use signpost_core::model::{CheckKind, Timestamp};
use signpost_core::registry::StatusCounts;
use signpost_core::{Instance, ServiceDefinition, Status};

/// Which top-level page is open (the navigation marks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/ui/` and `/ui/services/…`.
    Services,
    /// `/ui/kv/…`.
    Kv,
    /// `/ui/cluster`.
    Cluster,
}

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub struct Chrome<'a> {
    /// The page's title (after "Signpost — ").
    pub title: &'a str,
    /// Which navigation entry is current.
    pub nav: Nav,
    /// Version tag of the embedded assets, so a new binary's assets are fetched anew.
    pub assets: &'a str,
    /// Whether the request carried a token (shown in the header).
    pub token_set: bool,
}

/// One service on the services page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// Its name.
    pub name: String,
    /// Its instances by status.
    pub counts: StatusCounts,
    /// Every tag any of its instances carries.
    pub tags: BTreeSet<String>,
    /// Whether it has a definition.
    pub has_definition: bool,
}

impl ServiceRow {
    fn total(&self) -> usize {
        self.counts.passing + self.counts.warning + self.counts.critical
    }

    /// Whether `query` (lowercase) is in its name or one of its tags.
    pub fn matches(&self, query: &str) -> bool {
        query.is_empty()
            || self.name.to_lowercase().contains(query)
            || self.tags.iter().any(|t| t.to_lowercase().contains(query))
    }
}

/// How the services table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Services with critical instances first, then warning, then by name.
    #[default]
    Status,
    /// By name.
    Name,
    /// Most instances first.
    Instances,
}

impl Sort {
    const ALL: [(Sort, &'static str, &'static str); 3] = [
        (Sort::Status, "status", "Problems first"),
        (Sort::Name, "name", "Name"),
        (Sort::Instances, "instances", "Most instances"),
    ];

    /// The sort named `name` (`status`, `name`, `instances`); the default for anything else.
    pub fn parse(name: &str) -> Sort {
        Sort::ALL
            .iter()
            .find(|(_, n, _)| *n == name)
            .map_or(Sort::default(), |(s, _, _)| *s)
    }

    fn name(self) -> &'static str {
        Sort::ALL
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or("status", |(_, n, _)| n)
    }

    /// Orders `rows`.
    pub fn apply(self, rows: &mut [ServiceRow]) {
        match self {
            Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::Instances => {
                rows.sort_by(|a, b| b.total().cmp(&a.total()).then(a.name.cmp(&b.name)))
            }
            Sort::Status => rows.sort_by(|a, b| {
                b.counts
                    .critical
                    .min(1)
                    .cmp(&a.counts.critical.min(1))
                    .then(b.counts.warning.min(1).cmp(&a.counts.warning.min(1)))
                    .then(a.name.cmp(&b.name))
            }),
        }
    }
}

/// What the cluster page shows.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Members, leader and term.
    pub members: Members,
    /// This agent's node id.
    pub node_id: u64,
    /// This agent's node name.
    pub node_name: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Its version.
    pub version: &'static str,
    /// When it started.
    pub started_at: SystemTime,
    /// Its Raft role (`leader`, `follower`, …).
    pub role: String,
    /// The last log index it applied.
    pub applied_index: Option<u64>,
    /// The last index in its log.
    pub last_log_index: Option<u64>,
    /// Milliseconds since it last heard from the leader (a follower), if known.
    pub last_contact_ms: Option<u64>,
    /// The mass-eviction guard.
    pub guard: GuardStatus,
}

/// The frame every page shares: header, navigation, token form, the page's own content.
pub fn layout(chrome: &Chrome<'_>, page: &str, content: Markup) -> Markup {
    let current = |nav: Nav| {
        if chrome.nav == nav {
            Some("page")
        } else {
            None
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { "Signpost — " (chrome.title) }
                link rel="stylesheet" href={ "/ui/assets/ui.css?v=" (chrome.assets) };
                script src={ "/ui/assets/ui.js?v=" (chrome.assets) } defer {}
            }
            body data-page=(page) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "Signpost" }
                    nav aria-label="Main" {
                        a href="/ui/" aria-current=[current(Nav::Services)] { "Services" }
                        a href="/ui/kv/" aria-current=[current(Nav::Kv)] { "Key/Value" }
                        a href="/ui/cluster" aria-current=[current(Nav::Cluster)] { "Cluster" }
                    }
                    button #token-toggle type="button" aria-controls="token-form" aria-expanded="false" {
                        @if chrome.token_set { "Token: set" } @else { "Token" }
                    }
                }
                form #token-form hidden aria-label="ACL token" {
                    p #token-why role="status" {}
                    label for="token-input" { "ACL token (kept for this tab only)" }
                    input #token-input type="password" autocomplete="off" name="token";
                    button type="submit" { "Use token" }
                    button #token-clear type="button" { "Forget token" }
                }
                p #live-status role="status" aria-live="polite" {}
                main #main { (content) }
            }
        }
    }
}

/// A status as a badge (word and colour: the colour is never the only sign).
fn badge(status: Status) -> Markup {
    html! { span class={ "badge " (status.as_str()) } { (status.as_str()) } }
}

fn counts(c: &StatusCounts) -> Markup {
    html! {
        span.counts {
            span.badge.passing title="passing" { (c.passing) " passing" }
            @if c.warning > 0 { " " span.badge.warning title="warning" { (c.warning) " warning" } }
            @if c.critical > 0 { " " span.badge.critical title="critical" { (c.critical) " critical" } }
        }
    }
}

/// The services page.
pub fn services_page(
    chrome: &Chrome<'_>,
    index: u64,
    rows: &[ServiceRow],
    query: &str,
    sort: Sort,
) -> Markup {
    let content = html! {
        h1 { "Services" }
        form.filters #services-filter method="get" action="/ui/" role="search" {
            label for="q" { "Search by name or tag" }
            input #q type="search" name="q" value=(query) autocomplete="off";
            label for="sort" { "Sort" }
            select #sort name="sort" {
                @for (s, name, label) in Sort::ALL {
                    option value=(name) selected[s == sort] { (label) }
                }
            }
            button type="submit" { "Apply" }
        }
        (services_section(index, rows, query, sort))
    };
    layout(chrome, "services", content)
}

/// The services table: on the page, and the fragment the script swaps in when the catalog
/// changes.
pub fn services_section(index: u64, rows: &[ServiceRow], query: &str, sort: Sort) -> Markup {
    let query = query.to_lowercase();
    let shown: Vec<&ServiceRow> = rows.iter().filter(|r| r.matches(&query)).collect();
    html! {
        section #services data-index=(index) data-sort=(sort.name()) aria-label="Services" {
            p.summary { (shown.len()) " of " (rows.len()) " services" }
            @if shown.is_empty() {
                p.empty { @if rows.is_empty() { "No services are registered." } @else { "No service matches." } }
            } @else {
                table {
                    thead { tr { th scope="col" { "Service" } th scope="col" { "Instances" } th scope="col" { "Tags" } } }
                    tbody {
                        @for r in shown {
                            tr class=[(r.counts.critical > 0).then_some("has-critical")]
                                data-service=(r.name) data-tags=(r.tags.iter().cloned().collect::<Vec<_>>().join(" ")) {
                                th scope="row" {
                                    a href={ "/ui/services/" (path_escape(&r.name)) } { (r.name) }
                                    @if r.has_definition { " " span.tag.def title="has a definition" { "defined" } }
                                }
                                td { (counts(&r.counts)) }
                                td { @for t in &r.tags { span.tag { (t) } " " } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A service's page: its instances (live) and its definition.
pub fn service_page(
    chrome: &Chrome<'_>,
    name: &str,
    index: u64,
    instances: &[Instance],
    definition: Option<&ServiceDefinition>,
    now: SystemTime,
) -> Markup {
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ui/" { "Services" } " / " }
        h1 { (name) }
        (instances_section(name, index, instances, now))
        section #definition aria-labelledby="definition-title" {
            h2 #definition-title { "Definition" }
            @match definition {
                None => p.empty { "This service has no definition." },
                Some(d) => (definition_view(d)),
            }
        }
    };
    layout(chrome, "service", content)
}

/// A service's instances: on the page, and the fragment the script swaps in on each watch
/// event.
pub fn instances_section(
    name: &str,
    index: u64,
    instances: &[Instance],
    now: SystemTime,
) -> Markup {
    let mut c = StatusCounts::default();
    for i in instances {
        c.add(i.status);
    }
    html! {
        section #instances data-index=(index) data-service=(name) aria-labelledby="instances-title" {
            h2 #instances-title { "Instances " (counts(&c)) }
            @if instances.is_empty() {
                p.empty { "No instances are registered." }
            } @else {
                div.scroll {
                    table.cards {
                        thead { tr {
                            th scope="col" { "ID" } th scope="col" { "Address" } th scope="col" { "Status" }
                            th scope="col" { "Since" } th scope="col" { "Check" } th scope="col" { "Weight" }
                            th scope="col" { "Tags" } th scope="col" { "Metadata" }
                        } }
                        tbody {
                            @for i in instances {
                                tr class={ "instance " (i.status.as_str()) } data-id=(i.id) data-status=(i.status.as_str()) {
                                    th scope="row" { code { (i.id) } }
                                    td data-label="Address" { code { (authority(&i.address, i.port)) } }
                                    td data-label="Status" { (badge(i.status)) }
                                    td data-label="Since" { (since(i.updated_at, now)) }
                                    td data-label="Check" { (check(i)) }
                                    td data-label="Weight" { (i.weight) }
                                    td data-label="Tags" { span { @for t in &i.tags { span.tag { (t) } " " } } }
                                    td data-label="Metadata" {
                                        @if !i.metadata.is_empty() {
                                            dl.meta { @for (k, v) in &i.metadata { dt { (k) } dd { (v) } } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn check(i: &Instance) -> Markup {
    match i.check.as_ref().and_then(|c| c.kind()) {
        None => html! { span.muted { "none" } },
        Some(CheckKind::Ttl(ttl)) => html! { "ttl " (ttl.to_string()) },
        Some(CheckKind::Http(url)) => html! { "http " code { (url) } },
        Some(CheckKind::Tcp(addr)) => html! { "tcp " code { (addr) } },
        Some(CheckKind::Grpc(target)) => html! { "grpc " code { (target) } },
    }
}

/// When an instance last changed status (or was registered again), with how long ago.
fn since(t: Timestamp, now: SystemTime) -> Markup {
    let at = UNIX_EPOCH + Duration::from_millis(t.0);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    let ago = now.duration_since(at).unwrap_or_default();
    html! { time datetime=(text) title=(text) { (ago_text(ago)) " ago" } }
}

/// `3s`, `5m`, `2h`, `4d`: the largest whole unit.
fn ago_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn definition_view(d: &ServiceDefinition) -> Markup {
    html! {
        dl.facts {
            dt { "Version" } dd { @if d.version.is_empty() { span.muted { "—" } } @else { (d.version) } }
            dt { "Description" } dd { @if d.description.is_empty() { span.muted { "—" } } @else { (d.description) } }
            dt { "Dependencies" } dd {
                @if d.dependencies.is_empty() { span.muted { "none" } }
                @for dep in &d.dependencies { a.tag href={ "/ui/services/" (path_escape(dep)) } { (dep) } " " }
            }
        }
        h3 { "Endpoints" }
        @if d.endpoints.is_empty() { p.empty { "No endpoints are declared." } }
        @for e in &d.endpoints {
            article.endpoint {
                h4 { code { (e.method) " " (e.path) } }
                @if !e.description.is_empty() { p { (e.description) } }
                @if !e.parameters.is_empty() {
                    table {
                        thead { tr { th scope="col" { "Parameter" } th scope="col" { "Type" } th scope="col" { "Required" } th scope="col" { "Description" } } }
                        tbody { @for p in &e.parameters { tr {
                            th scope="row" { code { (p.name) } } td { (p.kind) }
                            td { @if p.required { "yes" } @else { "no" } } td { (p.description) }
                        } } }
                    }
                }
            }
        }
        h3 { "Config" }
        @if d.config.is_empty() { p.empty { "No config." } } @else {
            pre.json { (serde_json::to_string_pretty(&d.config).unwrap_or_default()) }
        }
    }
}

/// The KV page of a folder: its keys and sub-folders one level down, and a form to create a
/// key under it.
pub fn kv_folder(
    chrome: &Chrome<'_>,
    prefix: &str,
    children: &[String],
    can_write: bool,
) -> Markup {
    let content = html! {
        (kv_crumbs(prefix))
        h1 { @if prefix.is_empty() { "Key/Value" } @else { (prefix) } }
        @if children.is_empty() {
            p.empty { "No keys under " code { (if prefix.is_empty() { "/" } else { prefix }) } "." }
        } @else {
            ul.kv-list {
                @for child in children {
                    li class=(if child.ends_with('/') { "folder" } else { "key" }) {
                        a href={ "/ui/kv/" (path_escape(child)) } { (child.strip_prefix(prefix).unwrap_or(child)) }
                    }
                }
            }
        }
        @if can_write {
            section aria-labelledby="create-title" {
                h2 #create-title { "Create a key" }
                form #kv-create.kv-form {
                    label for="kv-new-key" { "Key" }
                    input #kv-new-key name="key" required value=(prefix) autocomplete="off";
                    label for="kv-new-value" { "Value" }
                    textarea #kv-new-value name="value" rows="6" {}
                    div.actions { button type="submit" { "Create" } }
                    p.message role="alert" {}
                }
            }
        }
    };
    layout(chrome, "kv", content)
}

fn kv_crumbs(path: &str) -> Markup {
    let mut at = 0;
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/ui/kv/" { "Key/Value" } " / "
            @for part in path.split_inclusive('/').filter(|p| p.ends_with('/')) {
                @let end = { at += part.len(); at };
                a href={ "/ui/kv/" (path_escape(&path[..end])) } { (part.trim_end_matches('/')) } " / "
            }
        }
    }
}

/// The KV page of one key: its value (text, JSON also pretty-printed; binary as base64) and,
/// if the caller may write, an editor that saves with `cas` and a delete button.
pub fn kv_key(chrome: &Chrome<'_>, entry: &KvEntry, can_write: bool) -> Markup {
    let text = std::str::from_utf8(&entry.value).ok();
    let pretty = text
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .filter(|v| v.is_object() || v.is_array())
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    let index = entry.modify_index.to_string();
    let content = html! {
        (kv_crumbs(&entry.key))
        h1 { code { (entry.key) } }
        dl.facts {
            dt { "Size" } dd { (entry.value.len()) " bytes" }
            dt { "Flags" } dd { (entry.flags) }
            dt { "Created at index" } dd { (entry.create_index) }
            dt { "Modified at index" } dd #kv-modify-index { (entry.modify_index) }
        }
        @if let Some(p) = &pretty {
            section aria-labelledby="json-title" {
                h2 #json-title { "JSON" }
                pre.json #kv-json { (p) }
            }
        }
        @match text {
            Some(t) => {
                form #kv-edit.kv-form data-key=(entry.key) data-cas=(index) {
                    label for="kv-value" { "Value" }
                    textarea #kv-value name="value" rows="12" readonly[!can_write] { (t) }
                    @if can_write {
                        div.actions {
                            button #kv-save type="submit" { "Save" }
                            button #kv-delete.danger type="button" { "Delete" }
                        }
                    }
                    p.message #kv-message role="alert" {}
                }
            }
            None => {
                p { "Binary value (base64):" }
                pre.binary { (base64_text(&entry.value)) }
                @if can_write {
                    form #kv-edit.kv-form data-key=(entry.key) data-cas=(index) {
                        div.actions { button #kv-delete.danger type="button" { "Delete" } }
                        p.message #kv-message role="alert" {}
                    }
                }
            }
        }
    };
    layout(chrome, "kv", content)
}

fn base64_text(bytes: &[u8]) -> String {
    // The value as the API sends it: the core's KV entry serialises its value as base64.
    serde_json::to_value(KvEntry {
        key: String::new(),
        value: bytes.to_vec(),
        flags: 0,
        create_index: 0,
        modify_index: 0,
        lock_index: 0,
    })
    .ok()
    .and_then(|v| v["value"].as_str().map(str::to_string))
    .unwrap_or_default()
}

/// The cluster page.
pub fn cluster_page(chrome: &Chrome<'_>, c: &ClusterView, now: SystemTime) -> Markup {
    let uptime = now.duration_since(c.started_at).unwrap_or_default();
    let leader = c.members.leader;
    let content = html! {
        h1 { "Cluster" }
        section aria-labelledby="agent-title" {
            h2 #agent-title { "This agent" }
            dl.facts {
                dt { "Node" } dd { (c.node_name) " (id " (c.node_id) ")" }
                dt { "Datacenter" } dd { (c.datacenter) }
                dt { "Version" } dd { (c.version) }
                dt { "Uptime" } dd { (ago_text(uptime)) " (since " (humantime::format_rfc3339_seconds(c.started_at)) ")" }
                dt { "Role" } dd #role { (c.role) }
                dt { "Leader" } dd { @match leader { Some(id) => { "node " (id) }, None => span.badge.critical { "no leader" } } }
                dt { "Term" } dd { (c.members.term) }
                dt { "Applied index" } dd { (opt(c.applied_index)) }
                dt { "Last log index" } dd { (opt(c.last_log_index)) }
                @if let (Some(ms), false) = (c.last_contact_ms, c.role == "leader") { dt { "Last contact with the leader" } dd { (ms) " ms ago" } }
            }
        }
        section aria-labelledby="guard-title" {
            h2 #guard-title { "Eviction guard" }
            p {
                @if c.guard.engaged {
                    span.badge.critical { "engaged" } " expiry and deregistration are suspended"
                } @else { span.badge.passing { "off" } }
            }
            dl.facts {
                dt { "TTL instances tracked" } dd { (c.guard.ttl_instances) }
                dt { "Overdue" } dd { (c.guard.overdue) }
                dt { "Expired in the current window" } dd { (c.guard.recently_expired) }
            }
        }
        section aria-labelledby="members-title" {
            h2 #members-title { "Members" }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Node" } th scope="col" { "Role" } th scope="col" { "Voter" }
                    th scope="col" { "HTTP" } th scope="col" { "Raft" } th scope="col" { "Matched index" } th scope="col" { "Lag" }
                } }
                tbody { @for m in &c.members.members { tr data-node=(m.id) {
                    th scope="row" { (m.id) @if Some(m.id) == leader { " " span.tag { "leader" } } @if m.id == c.node_id { " " span.tag { "this agent" } } }
                    td { (m.role) } td { @if m.voter { "yes" } @else { "no" } }
                    td { code { (m.http_addr) } } td { code { (m.raft_addr) } }
                    td { (opt(m.matched_index)) } td { (opt(m.lag)) }
                } } }
            } }
        }
    };
    layout(chrome, "cluster", content)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// A page that only says what went wrong, in the API's words.
pub fn error_page(chrome: &Chrome<'_>, status: u16, message: &str) -> Markup {
    let content = html! {
        h1 { (chrome.title) }
        p.error role="alert" data-status=(status) { (message) }
    };
    layout(chrome, "error", content)
}

/// `text` as a URL path: every byte but unreserved characters and `/` percent-encoded, so a
/// key or name with `?`, `#`, `%` or spaces links to itself.
pub fn path_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
