//! The figures of one run, as an aligned table or one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::stats::LatencySummary;

/// What one scenario run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// `register`, `discover` or `seed`.
    pub scenario: String,
    /// What the rate counts ("registrations", "queries"), for the table.
    pub unit: &'static str,
    /// Concurrent client tasks, each with its own connection.
    pub clients: usize,
    /// Services the load was spread over.
    pub services: u64,
    /// For `discover`: instances per queried service; `None` otherwise.
    pub instances_per_service: Option<u64>,
    /// Requests sent (answered or not).
    pub requests: u64,
    /// Requests answered as the scenario expects (201 for a registration, 200 with the full
    /// instance list for a query).
    pub ok: u64,
    /// Requests that failed: transport errors, timeouts or any unexpected answer.
    pub errors: u64,
    /// A few error messages, so a failed run says why.
    pub error_samples: Vec<String>,
    /// Wall time of the measured phase (seeding before a discovery run is not included).
    pub duration: Duration,
    /// Response body bytes received.
    pub bytes_received: u64,
    pub latency: LatencySummary,
    /// CPU time (user + system) the generator itself used during the measured phase.
    pub generator_cpu: Option<Duration>,
}

impl Report {
    /// Successful requests per second of wall time.
    pub fn rate(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Generator CPU time as a share of one core over the run (100 = one core busy).
    pub fn generator_cpu_percent(&self) -> Option<f64> {
        let secs = self.duration.as_secs_f64();
        self.generator_cpu
            .filter(|_| secs > 0.0)
            .map(|cpu| cpu.as_secs_f64() / secs * 100.0)
    }

    /// The report as `key  value` lines, values aligned.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.clone()),
            ("clients", self.clients.to_string()),
            ("services", self.services.to_string()),
        ];
        if let Some(n) = self.instances_per_service {
            rows.push(("instances/service", n.to_string()));
        }
        rows.extend([
            ("total", self.requests.to_string()),
            ("ok", self.ok.to_string()),
            ("errors", self.errors.to_string()),
            ("duration", format!("{:.2} s", self.duration.as_secs_f64())),
            (self.rate_label(), format!("{:.0}", self.rate())),
            ("latency p50", ms(self.latency.p50)),
            ("latency p90", ms(self.latency.p90)),
            ("latency p99", ms(self.latency.p99)),
            ("latency max", ms(self.latency.max)),
            (
                "received",
                format!("{:.1} MiB", self.bytes_received as f64 / (1024.0 * 1024.0)),
            ),
            (
                "generator cpu",
                match (self.generator_cpu, self.generator_cpu_percent()) {
                    (Some(cpu), Some(pct)) => {
                        format!("{:.2} s ({pct:.0}% of one core)", cpu.as_secs_f64())
                    }
                    _ => "unknown".to_string(),
                },
            ),
        ]);
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        for e in &self.error_samples {
            let _ = writeln!(out, "{:<width$}  {e}", "error sample");
        }
        out
    }

    /// One line, for runs whose details nobody reads (seeding).
    pub fn one_line(&self) -> String {
        format!(
            "{}: {} ok, {} errors in {:.2} s ({:.0} {}/s, p99 {}, generator cpu {})",
            self.scenario,
            self.ok,
            self.errors,
            self.duration.as_secs_f64(),
            self.rate(),
            self.unit,
            ms(self.latency.p99),
            self.generator_cpu
                .map_or("unknown".to_string(), |c| format!(
                    "{:.2} s",
                    c.as_secs_f64()
                )),
        )
    }

    fn rate_label(&self) -> &'static str {
        match self.unit {
            "registrations" => "registrations/s",
            "queries" => "queries/s",
            _ => "requests/s",
        }
    }

    /// The figures as one JSON object; durations in seconds, latencies in milliseconds.
    pub fn to_json(&self) -> Value {
        let l = &self.latency;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        json!({
            "scenario": self.scenario,
            "clients": self.clients,
            "services": self.services,
            "instances_per_service": self.instances_per_service,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "duration_s": self.duration.as_secs_f64(),
            "rate_per_s": self.rate(),
            "bytes_received": self.bytes_received,
            "latency_ms": {
                "samples": l.samples,
                "mean": ms(l.mean),
                "p50": ms(l.p50),
                "p90": ms(l.p90),
                "p99": ms(l.p99),
                "max": ms(l.max),
            },
            "generator_cpu_s": self.generator_cpu.map(|c| c.as_secs_f64()),
            "generator_cpu_percent": self.generator_cpu_percent(),
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            scenario: "register".into(),
            unit: "registrations",
            clients: 4,
            services: 2,
            instances_per_service: None,
            requests: 100,
            ok: 98,
            errors: 2,
            error_samples: vec!["HTTP 503".into()],
            duration: Duration::from_secs(2),
            bytes_received: 1024,
            latency: LatencySummary {
                samples: 100,
                p50: Duration::from_millis(3),
                ..Default::default()
            },
            generator_cpu: Some(Duration::from_millis(500)),
        }
    }

    #[test]
    fn table_is_aligned() {
        let t = report().table();
        assert!(t.contains("registrations/s  49\n"), "{t}");
        assert!(
            t.contains("generator cpu    0.50 s (25% of one core)"),
            "{t}"
        );
        let value_columns: Vec<usize> = t
            .lines()
            .map(|l| l.find("  ").unwrap() + l[l.find("  ").unwrap()..].find(|c| c != ' ').unwrap())
            .collect();
        assert!(value_columns.windows(2).all(|w| w[0] == w[1]), "{t}");
    }

    #[test]
    fn json_has_the_figures() {
        let j = report().to_json();
        assert_eq!(j["errors"], 2);
        assert_eq!(j["rate_per_s"], 49.0);
        assert_eq!(j["latency_ms"]["p50"], 3.0);
        assert_eq!(j["generator_cpu_percent"], 25.0);
    }
}
