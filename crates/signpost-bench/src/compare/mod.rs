//! Signpost and etcd side by side: the scenarios of the benchmark issue, run against both
//! systems back to back, written up as `report.md` and `report.svg`.
//!
//! # Layout
//! - [`target`]: one connection to either system and the operations scenarios are made of
//!   (register, discover, heartbeat, watch, count), spoken the way each system is used.
//! - [`server`]: the systems as child processes on free loopback ports, killed by PID.
//! - [`workload`]: the load of each scenario, identical for both systems, measuring latency,
//!   throughput and the generator's and the server's CPU.
//! - [`consul`]: the Consul face's listings (scenario `consul`, Signpost only).
//! - [`suite`]: the plan (full, quick and smoke presets), the run loop, the samples.
//! - [`watch_memory`]: the open-watch memory row (bytes of the agent's RSS per open SSE
//!   watch, with many open), on plain sockets from several loopback source addresses.
//! - [`markdown`], [`chart`]: the report and its SVG chart.
//! - [`error`]: [`CompareError`], why a server, a workload, a step or the report failed (an
//!   operation on a system fails with [`target::TargetError`], which it wraps).
//!
//! [`run_and_report`] ties them together; `signpost-bench compare` and `bench/run.sh` call it.

pub mod chart;
pub mod consul;
pub mod error;
pub mod markdown;
pub mod server;
pub mod suite;
pub mod target;
pub mod watch_memory;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use error::CompareError;
pub use suite::{Environment, Mode, Plan, Results, Scenario};

/// Where the report goes and what else runs with the suite.
#[derive(Debug, Clone)]
pub struct Output {
    /// The Markdown report (the chart is written beside it, same stem, `.svg`).
    pub report: PathBuf,
    /// `bench/gateway.sh`, run after the suite when it exists (scenario 7).
    pub gateway_script: Option<PathBuf>,
    /// Longest the gateway benchmark may run.
    pub gateway_timeout: Duration,
}

/// Runs the suite, then the gateway benchmark, and writes the report, the chart and
/// `results.json` (every sample) beside the report.
pub async fn run_and_report(
    plan: &Plan,
    env: &Environment,
    out: &Output,
) -> Result<Results, CompareError> {
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let results = suite::run(plan, env).await?;
    let gateway = match &out.gateway_script {
        Some(script) => run_gateway(script, plan.mode, out.gateway_timeout).await,
        None => Err(GatewayError::NotAvailable),
    };
    write_report(plan, env, out, &results, started, gateway)?;
    Ok(results)
}

/// Writes `report.md`, its chart and `results.json`.
pub fn write_report(
    plan: &Plan,
    env: &Environment,
    out: &Output,
    results: &Results,
    started: String,
    gateway: Result<String, GatewayError>,
) -> Result<(), CompareError> {
    let dir = out.report.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| CompareError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let chart_path = out.report.with_extension("svg");
    let chart_file = chart_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta = markdown::Meta {
        plan: plan.clone(),
        started: started.clone(),
        machine: machine(),
        signpost_version: format!(
            "{} (source {})",
            server::version_of(&env.bins.signpost),
            revision()
        ),
        etcd_version: server::version_of(&env.bins.etcd),
        baseline_version: env
            .bins
            .baseline
            .as_deref()
            .map(|b| format!("{}, {}", server::version_of(b), b.display())),
        gateway,
        chart_file,
    };
    chart::draw(
        &chart_path,
        &format!(
            "Signpost vs etcd ({} mode, median of {} run{}; whiskers: min–max)",
            plan.mode.name(),
            plan.runs,
            if plan.runs == 1 { "" } else { "s" }
        ),
        results,
        &markdown::panels(plan),
    )?;
    std::fs::write(&out.report, markdown::render(&meta, results)).map_err(|source| {
        CompareError::Write {
            path: out.report.clone(),
            source,
        }
    })?;
    let meta_baseline = env.bins.baseline.as_deref().map(server::version_of);
    let samples: Vec<serde_json::Value> = results
        .samples
        .iter()
        .map(|s| {
            serde_json::json!({
                "key": s.key, "system": s.system.name(), "run": s.run, "value": s.value,
            })
        })
        .collect();
    let json = serde_json::json!({
        "mode": plan.mode.name(),
        "runs": plan.runs,
        "baseline": meta_baseline,
        "started": started,
        "elapsed_s": results.elapsed.as_secs_f64(),
        "loads": results.loads.iter().map(|(w, l)| serde_json::json!({"when": w, "load": l})).collect::<Vec<_>>(),
        "failures": results.failures,
        "samples": samples,
    });
    let json_path = out.report.with_file_name(format!(
        "{}.json",
        out.report
            .file_stem()
            .map_or("report".into(), |s| s.to_string_lossy())
    ));
    let text = serde_json::to_string_pretty(&json).map_err(CompareError::Json)?;
    std::fs::write(&json_path, text).map_err(|source| CompareError::Write {
        path: json_path.clone(),
        source,
    })?;
    Ok(())
}

/// Why the report has no gateway table; the report prints it in the table's place.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No gateway benchmark script was given, or it does not exist.
    #[error("gateway benchmark not available")]
    NotAvailable,
    /// The script could not be started.
    #[error("gateway benchmark not available: cannot run {}: {source}", script.display())]
    Spawn {
        /// The script.
        script: std::path::PathBuf,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },
    /// The script exited with a failure; its output is shown to explain it.
    #[error(
        "the gateway benchmark ({}) failed ({status}); its output:\n\n```\n{output}\n```",
        script.display()
    )]
    Failed {
        /// The script.
        script: std::path::PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its standard output, trailing white space removed.
        output: String,
    },
    /// Waiting for the script failed.
    #[error("the gateway benchmark could not run: {0}")]
    Wait(#[source] std::io::Error),
    /// The script overran its time and was stopped.
    #[error("the gateway benchmark did not finish within {0:?} and was stopped")]
    TimedOut(Duration),
}

/// Runs the gateway benchmark script and answers its standard output (its table), or why
/// there is none. `BENCH_QUICK=1` is passed in quick and smoke mode. The script is stopped by
/// PID (SIGTERM, then SIGKILL) when it overruns `timeout`.
pub async fn run_gateway(
    script: &Path,
    mode: Mode,
    timeout: Duration,
) -> Result<String, GatewayError> {
    if !script.exists() {
        return Err(GatewayError::NotAvailable);
    }
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if mode == Mode::Full {
        // Median of three alternating rounds, like the suite's three runs.
        cmd.env("ROUNDS", "3");
    } else {
        cmd.env("BENCH_QUICK", "1")
            .env("QUICK", "1")
            .env("DURATION", "3s")
            .env("WARMUP", "1s");
    }
    let child = cmd.spawn().map_err(|source| GatewayError::Spawn {
        script: script.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() {
                return Err(GatewayError::Failed {
                    script: script.to_path_buf(),
                    status: out.status,
                    output: text.trim_end().to_string(),
                });
            }
            if text.lines().any(|l| l.trim_start().starts_with('|')) {
                Ok(text)
            } else {
                Ok(format!("```\n{}\n```", text.trim_end()))
            }
        }
        Ok(Err(e)) => Err(GatewayError::Wait(e)),
        Err(_) => {
            if let Some(pid) = pid {
                // Give its own clean-up (trap) a chance before the kill on drop.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(GatewayError::TimedOut(timeout))
        }
    }
}

/// CPU model, core count and memory of this machine, for the report.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("?".to_string(), |kb| {
            format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} cores ({model}), {mem} RAM")
}

/// `git describe --always --dirty` of the working directory, for the report.
fn revision() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gateway_failures_are_typed_and_read_as_before() {
        let missing = Path::new("/nonexistent/gateway-bench.sh");
        let err = run_gateway(missing, Mode::Quick, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::NotAvailable), "{err:?}");
        assert_eq!(err.to_string(), "gateway benchmark not available");

        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fails.sh");
        std::fs::write(&script, "echo 'half a table'\nexit 3\n").unwrap();
        let err = run_gateway(&script, Mode::Quick, Duration::from_secs(30))
            .await
            .unwrap_err();
        match &err {
            GatewayError::Failed { output, status, .. } => {
                assert_eq!(output, "half a table");
                assert_eq!(status.code(), Some(3));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .ends_with("; its output:\n\n```\nhalf a table\n```"),
            "{err}"
        );
    }
}
