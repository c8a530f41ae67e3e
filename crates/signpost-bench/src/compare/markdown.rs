//! `bench/report.md`: the main table (medians with min–max and Signpost/etcd ratios), the
//! targets with met / not met, the generator's own CPU, every other figure, the load of the
//! machine during the run, and the gateway benchmark's table.

use std::fmt::Write as _;

use super::chart::Panel;
use super::consul::ConsulRead;
use super::suite::{Mode, Plan, Results, Stat};
use super::target::System;

/// What the report says about the run besides the figures.
#[derive(Debug)]
pub struct Meta {
    pub plan: Plan,
    /// When the run started (RFC 3339).
    pub started: String,
    pub machine: String,
    pub signpost_version: String,
    pub etcd_version: String,
    /// `--version` of the baseline binary, when the run had one: the report then gains the
    /// baseline's figures and the new/old ratios.
    pub baseline_version: Option<String>,
    /// The gateway benchmark's output (Markdown), or why there is none.
    pub gateway: Result<String, super::GatewayError>,
    /// File name of the chart, linked from the report.
    pub chart_file: String,
}

/// A row of the main table: a metric of a scenario.
struct Row {
    scenario: String,
    measure: &'static str,
    key: String,
}

fn rows(plan: &Plan) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |scenario: String, measure: &'static str, key: String| {
        rows.push(Row {
            scenario,
            measure,
            key,
        })
    };
    let reg = format!(
        "register: {} instances, {} services, {} connections",
        n(plan.register_count),
        n(plan.services),
        plan.register_clients
    );
    push(reg.clone(), "writes/s", "register.rate".into());
    push(reg.clone(), "p50 ms", "register.p50_ms".into());
    push(reg.clone(), "p99 ms", "register.p99_ms".into());
    push(reg, "server CPU µs/request", "register.cpu_us".into());
    for &size in &plan.discover_sizes {
        let s = format!(
            "discover: {size} instances, {} connections, {} s",
            plan.discover_clients,
            plan.discover_duration.as_secs_f64()
        );
        push(s.clone(), "reads/s", format!("discover.{size}.rate"));
        push(s.clone(), "p50 ms", format!("discover.{size}.p50_ms"));
        push(s.clone(), "p99 ms", format!("discover.{size}.p99_ms"));
        push(
            s,
            "server CPU µs/request",
            format!("discover.{size}.cpu_us"),
        );
    }
    for &size in &plan.discover_sizes {
        for read in ConsulRead::ALL {
            let s = format!(
                "Consul face {}: {size} instances, {} connections, {} s",
                read.label(),
                plan.discover_clients,
                plan.discover_duration.as_secs_f64()
            );
            let key = format!("consul.{}.{size}", read.key());
            push(s.clone(), "reads/s", format!("{key}.rate"));
            push(s.clone(), "p50 ms", format!("{key}.p50_ms"));
            push(s.clone(), "p99 ms", format!("{key}.p99_ms"));
            push(s.clone(), "server CPU µs/request", format!("{key}.cpu_us"));
            push(
                s,
                "CPU/request ÷ native list's",
                format!("{key}.cpu_vs_native"),
            );
        }
    }
    let hb = &plan.heartbeat;
    let h = format!(
        "heartbeat: {} instances every {} s, TTL {} s, {} connections",
        n(hb.instances),
        hb.interval.as_secs_f64(),
        hb.ttl.as_secs_f64(),
        hb.clients
    );
    push(
        h.clone(),
        "server CPU, % of one core",
        "heartbeat.server_cpu".into(),
    );
    push(
        h.clone(),
        "false expiries",
        "heartbeat.false_expiries".into(),
    );
    push(
        h.clone(),
        "instances registered and renewed",
        "heartbeat.registered".into(),
    );
    push(
        h.clone(),
        "latest renewal, ms behind schedule",
        "heartbeat.max_lateness_ms".into(),
    );
    push(h.clone(), "renewals/s", "heartbeat.rate".into());
    push(h, "renewal p99 ms", "heartbeat.p99_ms".into());
    for &w in &plan.watchers {
        let s = format!("watch fan-out: {} watchers, one registration", n(w as u64));
        push(s.clone(), "p50 ms", format!("watch.{w}.p50_ms"));
        push(s.clone(), "p99 ms", format!("watch.{w}.p99_ms"));
        push(s, "max ms", format!("watch.{w}.max_ms"));
    }
    for &c in &plan.memory_counts {
        let s = format!("memory: {} instances", n(c));
        push(s.clone(), "RSS MiB", format!("memory.{c}.rss_mib"));
        push(
            s.clone(),
            "bytes/instance",
            format!("memory.{c}.bytes_per_instance"),
        );
        push(
            s,
            "overhead beyond payload, bytes",
            format!("memory.{c}.overhead"),
        );
    }
    push(
        format!(
            "open watches: {} held at once (fewer under a lower `ulimit -n`)",
            n(plan.open_watches as u64)
        ),
        "agent RSS bytes per open watch",
        "watch_memory.bytes_per_watcher".into(),
    );
    push(
        format!("open watches: {} held at once", n(plan.open_watches as u64)),
        "watches held",
        "watch_memory.watchers".into(),
    );
    for &c in &plan.restart_counts {
        push(
            format!("restart after kill -9: {} instances", n(c)),
            "seconds until all served",
            format!("restart.{c}.seconds"),
        );
    }
    rows
}

/// The panels of the chart.
pub fn panels(plan: &Plan) -> Vec<Panel> {
    let mut throughput = vec![("register".to_string(), "register.rate".to_string())];
    for &s in &plan.discover_sizes {
        throughput.push((format!("discover {s}"), format!("discover.{s}.rate")));
    }
    vec![
        Panel {
            title: "Throughput, operations/s (higher is better)".into(),
            groups: throughput,
            target: None,
        },
        Panel {
            title: "Watch fan-out p99, ms (lower is better)".into(),
            groups: plan
                .watchers
                .iter()
                .map(|w| {
                    (
                        format!("{} watchers", n(*w as u64)),
                        format!("watch.{w}.p99_ms"),
                    )
                })
                .collect(),
            target: Some((50.0, "target 50 ms".into())),
        },
        Panel {
            title: format!(
                "Heartbeats of {} instances: server CPU, % of one core",
                n(plan.heartbeat.instances)
            ),
            groups: vec![("server CPU".into(), "heartbeat.server_cpu".into())],
            target: Some((30.0, "target 30%".into())),
        },
        Panel {
            title: "Memory: RSS bytes per instance".into(),
            groups: plan
                .memory_counts
                .iter()
                .map(|c| {
                    (
                        format!("{} instances", n(*c)),
                        format!("memory.{c}.bytes_per_instance"),
                    )
                })
                .collect(),
            target: None,
        },
        Panel {
            title: "Restart after kill -9, seconds".into(),
            groups: plan
                .restart_counts
                .iter()
                .map(|c| {
                    (
                        format!("{} instances", n(*c)),
                        format!("restart.{c}.seconds"),
                    )
                })
                .collect(),
            target: None,
        },
        Panel {
            title: "Discovery p99 latency, ms".into(),
            groups: plan
                .discover_sizes
                .iter()
                .map(|s| (format!("{s} instances"), format!("discover.{s}.p99_ms")))
                .collect(),
            target: None,
        },
    ]
}

/// A target of the issue and how it fared.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    /// `None` when it could not be measured.
    pub met: Option<bool>,
}

/// Most a Consul-face listing may cost the server per request, as a multiple of the native
/// list's for the same instances (issue 15, target 1).
pub const CONSUL_CPU_TARGET: f64 = 1.5;

/// The new binary's figure over the baseline's for `key`: the median over the runs of each
/// run's ratio (the old and the new ran back to back in a run, so a run's pair shares the
/// machine's mood). `None` without a pair of samples or when the baseline's figure is zero.
pub fn new_over_old(results: &Results, key: &str) -> Option<f64> {
    let ratios: Vec<f64> = results
        .samples
        .iter()
        .filter(|s| s.key == key && s.system == System::Signpost)
        .filter_map(|new| {
            let old = results.value(key, System::Baseline, new.run)?;
            (old != 0.0).then(|| new.value / old)
        })
        .collect();
    Stat::of(&ratios).map(|s| s.median)
}

/// A ratio for a table cell (`1.23×`), or `–`.
fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("–".to_string(), |r| format!("{r:.2}×"))
}

fn median(results: &Results, key: &str, system: System) -> Option<f64> {
    results.stat(key, system).map(|s| s.median)
}

/// Every target of the issue, judged on medians.
pub fn verdicts(plan: &Plan, results: &Results) -> Vec<Verdict> {
    let mut out = Vec::new();
    let ratio_target = |name: String, key: &str, want: f64| {
        let s = median(results, key, System::Signpost);
        let e = median(results, key, System::Etcd);
        match (s, e) {
            (Some(s), Some(e)) if e > 0.0 => Verdict {
                target: name,
                measured: format!("{:.2}× (Signpost {} vs etcd {})", s / e, num(s), num(e)),
                met: Some(s / e >= want),
            },
            _ => Verdict {
                target: name,
                measured: "not measured".into(),
                met: None,
            },
        }
    };
    out.push(ratio_target(
        "registrations/s ≥ 3× etcd".into(),
        "register.rate",
        3.0,
    ));
    for &size in &plan.discover_sizes {
        out.push(ratio_target(
            format!("discovery reads/s ≥ 2× etcd ({size} instances)"),
            &format!("discover.{size}.rate"),
            2.0,
        ));
    }
    if let Some(&w) = plan.watchers.iter().max() {
        let p99 = median(results, &format!("watch.{w}.p99_ms"), System::Signpost);
        let missing = median(results, &format!("watch.{w}.missing"), System::Signpost);
        out.push(Verdict {
            target: format!("watch fan-out p99 < 50 ms at {} watchers", n(w as u64)),
            measured: p99.map_or("not measured".into(), |p| {
                format!(
                    "p99 {p:.1} ms{}",
                    match missing {
                        Some(m) if m > 0.0 => format!(", {m:.0} watchers missed it"),
                        _ => String::new(),
                    }
                )
            }),
            met: p99.map(|p| p < 50.0 && missing.unwrap_or(0.0) == 0.0),
        });
    }
    if let Some(&c) = plan.memory_counts.iter().max() {
        let over = median(results, &format!("memory.{c}.overhead"), System::Signpost);
        let payload = median(results, "memory.payload", System::Signpost);
        out.push(Verdict {
            target: format!(
                "≤ 300 bytes of memory per instance beyond its payload ({} instances)",
                n(c)
            ),
            measured: over.map_or("not measured".into(), |o| {
                format!(
                    "{o:.0} bytes beyond a {:.0}-byte payload",
                    payload.unwrap_or(0.0)
                )
            }),
            met: over.map(|o| o <= 300.0),
        });
    }
    for &size in &plan.discover_sizes {
        for read in ConsulRead::ALL {
            let ratio = median(
                results,
                &format!("consul.{}.{size}.cpu_vs_native", read.key()),
                System::Signpost,
            );
            out.push(Verdict {
                target: format!(
                    "Consul face {} CPU per request ≤ 1.5× the native list's ({size} instances)",
                    read.label()
                ),
                measured: ratio.map_or("not measured".into(), |r| format!("{r:.2}×")),
                met: ratio.map(|r| r <= CONSUL_CPU_TARGET),
            });
        }
    }
    let per_watch = median(results, "watch_memory.bytes_per_watcher", System::Signpost);
    let held = median(results, "watch_memory.watchers", System::Signpost);
    out.push(Verdict {
        target: format!(
            "< 4 KiB of agent memory per open watch ({} open)",
            n(plan.open_watches as u64)
        ),
        measured: per_watch.map_or("not measured".into(), |b| {
            format!(
                "{b:.0} bytes per watch with {} open",
                n(held.unwrap_or(0.0) as u64)
            )
        }),
        met: per_watch.map(|b| b < 4096.0),
    });
    let cpu = median(results, "heartbeat.server_cpu", System::Signpost);
    out.push(Verdict {
        target: format!(
            "heartbeats of {} instances use < 30% of one core",
            n(plan.heartbeat.instances)
        ),
        measured: cpu.map_or("not measured".into(), |c| format!("{c:.1}% of one core")),
        met: cpu.map(|c| c < 30.0),
    });
    let expiries = results.stat("heartbeat.false_expiries", System::Signpost);
    let writes = results.stat("heartbeat.writes", System::Signpost);
    out.push(Verdict {
        target: "… with no false expiry".into(),
        measured: match (expiries, writes) {
            (Some(e), Some(w)) => format!(
                "{:.0} false expiries (worst run), {:.0} writes during the window",
                e.max, w.max
            ),
            _ => "not measured".into(),
        },
        met: expiries
            .zip(writes)
            .map(|(e, w)| e.max == 0.0 && w.max == 0.0),
    });
    out
}

/// The whole report.
pub fn render(meta: &Meta, results: &Results) -> String {
    let plan = &meta.plan;
    let mut md = String::new();
    let _ = writeln!(md, "# Signpost vs etcd: benchmark report\n");
    let _ = writeln!(
        md,
        "Generated by `bench/run.sh` ({} mode, {} run{} of every scenario) on {}; the whole \
         suite took {:.1} min. Machine: {}. Signpost: `{}`; etcd: `{}`.\n",
        meta.plan.mode.name(),
        plan.runs,
        if plan.runs == 1 { "" } else { "s" },
        meta.started,
        results.elapsed.as_secs_f64() / 60.0,
        meta.machine,
        meta.signpost_version,
        if plan.etcd {
            meta.etcd_version.as_str()
        } else {
            "not run (--no-etcd)"
        },
    );
    if let Some(old) = &meta.baseline_version {
        let _ = writeln!(
            md,
            "Baseline: `{old}`, run beside the new binary in every run (old first in odd runs, \
             new first in even ones); **new/old** is the median over the runs of each run's \
             ratio of the new binary's figure to the baseline's.\n"
        );
    }
    if plan.mode != Mode::Full {
        let _ = writeln!(
            md,
            "> **{} mode**: smaller numbers than the issue's, for iteration only; the targets \
             are judged on these smaller numbers.\n",
            plan.mode.name()
        );
    }
    let _ = writeln!(
        md,
        "Load generator, Signpost and etcd share one machine and its cores (and here, other \
         engineers' compilers): every figure is noisy. The machine's load average (`uptime`) \
         during the run:\n"
    );
    let _ = writeln!(
        md,
        "| when | 1 min | 5 min | 15 min |\n| --- | ---: | ---: | ---: |"
    );
    for (when, l) in &results.loads {
        let _ = writeln!(md, "| {when} | {:.2} | {:.2} | {:.2} |", l[0], l[1], l[2]);
    }
    let _ = writeln!(md, "\n![chart]({})\n", meta.chart_file);

    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "Median of {} run{} (min–max). Each scenario ran on a fresh server with a fresh data \
         directory, {}, back to back.\n",
        plan.runs,
        if plan.runs == 1 { "" } else { "s" },
        match (meta.baseline_version.is_some(), plan.etcd) {
            (false, true) => "Signpost then etcd",
            (false, false) => "Signpost alone",
            (true, true) => "the baseline and Signpost (alternating), then etcd",
            (true, false) => "the baseline and Signpost, alternating",
        }
    );
    md.push_str(&main_table(plan, results, meta.baseline_version.is_some()));

    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(md, "| target | measured (medians) | |\n| --- | --- | --- |");
    for v in verdicts(plan, results) {
        let met = match v.met {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {met} |", v.target, v.measured);
    }

    let _ = writeln!(md, "\n## The load generator's own CPU\n");
    let _ = writeln!(
        md,
        "CPU time of the generator process (and of the server) over each measured phase, as a \
         share of one core; the machine has {} cores in all. Where the generator and the server \
         together approach all cores, the figure is a property of this machine, not of the \
         server alone.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let baseline = meta.baseline_version.is_some();
    let _ = writeln!(
        md,
        "| phase | generator, Signpost run | server: Signpost |{} generator, etcd run | server: etcd |\n| --- | ---: | ---: |{} ---: | ---: |",
        if baseline { " server: baseline |" } else { "" },
        if baseline { " ---: |" } else { "" },
    );
    for key in results.keys() {
        let Some(prefix) = key.strip_suffix(".generator_cpu") else {
            continue;
        };
        let server = format!("{prefix}.server_cpu");
        let cell = |k: &str, s| {
            results
                .stat(k, s)
                .map_or("–".to_string(), |x| format!("{:.0}%", x.median))
        };
        let old = if baseline {
            format!(" {} |", cell(&server, System::Baseline))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {prefix} | {} | {} |{old} {} | {} |",
            cell(key, System::Signpost),
            cell(&server, System::Signpost),
            cell(key, System::Etcd),
            cell(&server, System::Etcd),
        );
    }
    let _ = writeln!(
        md,
        "\n(`watch.N`: from the registration until the last watcher saw it, at least one \
         second; opening the watches is excluded, see `watch.N.generator_setup_cpu` below. \
         `memory.N`: while filling.)"
    );

    let _ = writeln!(md, "\n## Gateway (scenario 7)\n");
    match &meta.gateway {
        Ok(text) => {
            let _ = writeln!(md, "{}", text.trim_end());
        }
        Err(why) => {
            let _ = writeln!(md, "{why}");
        }
    }

    if !results.failures.is_empty() {
        let _ = writeln!(md, "\n## Failures\n");
        for f in &results.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
    }

    let _ = writeln!(md, "\n## Every figure\n");
    if baseline {
        let _ = writeln!(
            md,
            "| key | Signpost | baseline | new/old | etcd |\n| --- | ---: | ---: | ---: | ---: |"
        );
    } else {
        let _ = writeln!(md, "| key | Signpost | etcd |\n| --- | ---: | ---: |");
    }
    for key in results.keys() {
        let old = if baseline {
            format!(
                " {} | {} |",
                cell(results.stat(key, System::Baseline)),
                ratio_cell(new_over_old(results, key))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| `{key}` | {} |{old} {} |",
            cell(results.stat(key, System::Signpost)),
            cell(results.stat(key, System::Etcd)),
        );
    }
    md.push_str(&method(plan));
    md
}

/// The main table; with `baseline`, the baseline's figure and new/old beside Signpost's.
fn main_table(plan: &Plan, results: &Results, baseline: bool) -> String {
    let mut md = String::new();
    if baseline {
        let _ = writeln!(
            md,
            "| scenario | measure | Signpost | baseline | new/old | etcd | Signpost/etcd |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
        );
    } else {
        let _ = writeln!(
            md,
            "| scenario | measure | Signpost | etcd | Signpost/etcd |\n| --- | --- | ---: | ---: | ---: |"
        );
    }
    let mut last = String::new();
    for row in rows(plan) {
        let s = results.stat(&row.key, System::Signpost);
        let e = results.stat(&row.key, System::Etcd);
        let b = results.stat(&row.key, System::Baseline);
        if s.is_none() && e.is_none() && b.is_none() {
            continue;
        }
        let ratio = match (s, e) {
            (Some(s), Some(e)) if e.median != 0.0 => format!("{:.2}×", s.median / e.median),
            _ => "–".to_string(),
        };
        let scenario = if row.scenario == last {
            String::new()
        } else {
            last = row.scenario.clone();
            row.scenario.clone()
        };
        let old = if baseline {
            format!(
                " {} | {} |",
                cell(b),
                ratio_cell(new_over_old(results, &row.key))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {scenario} | {} | {} |{old} {} | {ratio} |",
            row.measure,
            cell(s),
            cell(e)
        );
    }
    md
}

fn method(plan: &Plan) -> String {
    let hb = &plan.heartbeat;
    format!(
        "\n## Method\n\n\
         - Both systems run on loopback, durable: Signpost as `signpost agent --data-dir` (Raft \
         log fsynced in redb before a write is acknowledged), etcd 3.4 from Debian with its \
         defaults (fsync on every commit) and an 8 GiB backend quota. Ports are free loopback \
         ports; data dirs live in a temporary directory.\n\
         - Same workload on both: ~300-byte JSON instance records (the Signpost registration \
         body, stored as the etcd value under `/services/{{service}}/{{id}}`). Signpost: native \
         HTTP API, one request in flight per HTTP/1.1 keep-alive connection. etcd: \
         `etcd-client` (gRPC), one connection per client.\n\
         - register: a TTL check per instance (etcd: a lease grant and a put with that lease). \
         discover: the healthy instances of one service (etcd: a prefix range). Server CPU \
         per request: the server's `utime + stime` (`/proc/<pid>/stat`) over the measured \
         phase divided by the requests answered.\n\
         - Consul face (Signpost only): the discover load against \
         `/v1/health/service/NAME?passing`, then `/v1/catalog/service/NAME`, on one fresh \
         agent per run; \"CPU/request ÷ native list's\" divides its CPU per request by \
         discover's of the same run.\n\
         - heartbeat: {} instances, each renewed every {} s from {} connections, spread evenly; \
         TTL {} s. Signpost: {}; etcd: lease keep-alive, one keep-alive stream \
         per connection carrying all of its leases (as etcd's Go client does). Measured over \
         {} s after one interval of steady state. A false expiry is an instance that expired \
         although renewed: a 404 or TTL-0 answer, an instance missing or critical at the end; \
         renewals write nothing in either system, so the Raft index / etcd revision must not \
         move during the window either.\n\
         - watch: N watchers on one service, each its own connection (Signpost: SSE; etcd: a \
         watch on the service prefix); once all are established, one registration; latency is \
         from the start of the registration until each watcher received it.\n\
         - memory: RSS (`VmRSS`) of the server after registering the instances with a TTL \
         check / lease each, minus its RSS at start; overhead = that minus the payload size.\n\
         - restart: `kill -9` of a server holding the instances, then the time from spawning it \
         again until it serves all of them.\n\
         - Medians of {} run(s), min–max in parentheses.\n",
        n(hb.instances),
        hb.interval.as_secs_f64(),
        hb.clients,
        hb.ttl.as_secs_f64(),
        if hb.batch.is_zero() {
            "`PUT …/heartbeat`, one renewal per request".to_string()
        } else {
            format!(
                "`PUT /api/v1/heartbeats`, the renewals of a connection due within {} ms \
                 in one request",
                hb.batch.as_millis()
            )
        },
        hb.window.as_secs_f64(),
        plan.runs,
    )
}

/// `median (min–max)`, or the median alone for one run.
fn cell(stat: Option<Stat>) -> String {
    match stat {
        None => "–".to_string(),
        Some(s) if s.n == 1 || s.min == s.max => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
    }
}

/// A figure with sensible precision and thousands separators.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        n(v.round() as u64)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An integer with thousands separators.
pub fn n(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(n(1_000_000), "1,000,000");
        assert_eq!(n(999), "999");
        assert_eq!(num(14_321.4), "14,321");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.5), "0.50");
    }

    /// Samples of three runs: Signpost, its baseline and etcd.
    fn fixture() -> Results {
        let mut r = Results::default();
        for (run, new, old) in [(1, 120.0, 100.0), (2, 200.0, 250.0), (3, 90.0, 100.0)] {
            r.add("register.rate", System::Signpost, run, new);
            r.add("register.rate", System::Baseline, run, old);
            r.add("register.rate", System::Etcd, run, 50.0);
            r.add("discover.10.cpu_us", System::Signpost, run, 10.0);
            r.add("discover.10.cpu_us", System::Baseline, run, 20.0);
            r.add("consul.health.10.cpu_us", System::Signpost, run, 12.0);
            r.add("consul.health.10.cpu_vs_native", System::Signpost, run, 1.2);
            r.add("consul.health.10.cpu_us", System::Baseline, run, 160.0);
            r.add("consul.health.10.cpu_vs_native", System::Baseline, run, 8.0);
        }
        r
    }

    fn meta(baseline: Option<&str>) -> Meta {
        Meta {
            plan: Plan::smoke(),
            started: "2026-12-06T03:00:00Z".into(),
            machine: "2 cores".into(),
            signpost_version: "signpost 0.2 (new)".into(),
            etcd_version: "etcd Version: 3.4".into(),
            baseline_version: baseline.map(str::to_string),
            gateway: Err(crate::compare::GatewayError::NotAvailable),
            chart_file: "report.svg".into(),
        }
    }

    /// The lines of the table that starts with `header`, up to the first blank line.
    fn table<'a>(md: &'a str, header: &str) -> Vec<&'a str> {
        let start = md
            .find(header)
            .unwrap_or_else(|| panic!("no {header} in\n{md}"));
        md[start..]
            .lines()
            .take_while(|l| l.starts_with('|'))
            .collect()
    }

    #[test]
    fn new_over_old_is_the_median_of_each_runs_ratio() {
        let mut r = fixture();
        // Per run 1.2, 0.8, 0.9: the median is 0.9 (the ratio of the medians would be 1.2).
        assert!((new_over_old(&r, "register.rate").unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(new_over_old(&r, "discover.10.cpu_us"), Some(0.5));
        // A run without the baseline's figure has no pair and does not count; nor does an
        // old figure of zero.
        r.add("register.rate", System::Signpost, 4, 1_000.0);
        r.add("register.rate", System::Signpost, 5, 1_000.0);
        r.add("register.rate", System::Baseline, 5, 0.0);
        assert!((new_over_old(&r, "register.rate").unwrap() - 0.9).abs() < 1e-9);
        // etcd is never the baseline; a key without a baseline has no ratio.
        r.add("etcd.only", System::Signpost, 1, 3.0);
        r.add("etcd.only", System::Etcd, 1, 1.0);
        assert_eq!(new_over_old(&r, "etcd.only"), None);
        assert_eq!(ratio_cell(None), "–");
        assert_eq!(ratio_cell(Some(0.904)), "0.90×");
    }

    #[test]
    fn a_baseline_adds_its_column_and_new_over_old() {
        let r = fixture();
        let md = render(&meta(Some("signpost 0.1 (old)")), &r);
        assert!(md.contains("Baseline: `signpost 0.1 (old)`"), "{md}");
        let header =
            "| scenario | measure | Signpost | baseline | new/old | etcd | Signpost/etcd |";
        let main = table(&md, header);
        assert!(main.len() > 3, "{md}");
        for line in &main {
            assert_eq!(line.matches('|').count(), 8, "{line}");
        }
        let rate = main.iter().find(|l| l.contains("writes/s")).unwrap();
        assert!(
            rate.ends_with("| 120 (90.0–200) | 100 (100–250) | 0.90× | 50.0 | 2.40× |"),
            "{rate}"
        );
        // The Consul rows: etcd has no Consul face, so its cells are empty.
        let vs = main
            .iter()
            .find(|l| l.contains("CPU/request ÷ native list's"))
            .unwrap();
        assert!(vs.ends_with("| 1.20 | 8.00 | 0.15× | – | – |"), "{vs}");
        assert!(
            md.contains("| scenario | measure | Signpost | baseline | new/old | etcd |")
                && md.contains("Consul face `/v1/health/service/NAME?passing`: 10 instances"),
            "{md}"
        );
        let every = table(&md, "| key | Signpost | baseline | new/old | etcd |");
        let reg = every
            .iter()
            .find(|l| l.contains("`register.rate`"))
            .unwrap();
        assert!(reg.contains("| 0.90× |"), "{reg}");
        let consul = verdicts(&Plan::smoke(), &r)
            .into_iter()
            .find(|v| v.target.contains("/v1/health/service"))
            .unwrap();
        assert_eq!(
            (consul.met, consul.measured.as_str()),
            (Some(true), "1.20×")
        );
    }

    #[test]
    fn without_a_baseline_the_report_keeps_its_shape() {
        let r = fixture();
        let md = render(&meta(None), &r);
        assert!(!md.contains("new/old") && !md.contains("Baseline:"), "{md}");
        let main = table(
            &md,
            "| scenario | measure | Signpost | etcd | Signpost/etcd |",
        );
        for line in &main {
            assert_eq!(line.matches('|').count(), 6, "{line}");
        }
        assert!(md.contains("| key | Signpost | etcd |"), "{md}");
        assert!(md.contains("Signpost then etcd, back to back"), "{md}");
    }

    #[test]
    fn targets_are_judged_on_medians() {
        let plan = Plan::smoke();
        let mut r = Results::default();
        for run in 1..=3 {
            r.add("register.rate", System::Signpost, run, 3000.0 + run as f64);
            r.add("register.rate", System::Etcd, run, 1000.0);
            r.add("heartbeat.server_cpu", System::Signpost, run, 45.0);
        }
        let v = verdicts(&plan, &r);
        assert_eq!(v[0].met, Some(true), "{v:?}");
        let cpu = v.iter().find(|v| v.target.contains("core")).unwrap();
        assert_eq!(cpu.met, Some(false));
        let watch = v.iter().find(|v| v.target.contains("watch")).unwrap();
        assert_eq!(watch.met, None);
    }
}
