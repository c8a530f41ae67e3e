//! Latency histograms and the generator's own CPU time.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Request latencies in microseconds, 3 significant digits, from 1 µs to one hour.
///
/// Each client task fills its own and they are merged at the end, so recording takes no lock.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// The histogram itself; values above one hour are clamped to the top bucket.
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.max(1));
    }

    /// Adds every sample of `other` to `self`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, so this cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn summary(&self) -> LatencySummary {
        let at = |q: f64| Duration::from_micros(self.hist.value_at_quantile(q));
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            samples: self.hist.len(),
            mean: Duration::from_secs_f64(self.hist.mean() / 1e6),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: Duration::from_micros(self.hist.max()),
        }
    }
}

/// The figures a report shows of a latency distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// How many requests were measured (every request that got an HTTP response).
    pub samples: u64,
    pub mean: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Clock ticks per second of `/proc/self/stat` (`sysconf(_SC_CLK_TCK)`), 100 on every Linux
/// that matters; assumed rather than asked so the crate needs no unsafe FFI.
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// User + system CPU time this process has used so far, or `None` where `/proc` is missing.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat_cpu(&stat)
}

/// User + system CPU time process `pid` has used so far (a server under test), or `None` when
/// it is gone or `/proc` is missing.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat_cpu(&stat)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:   1234 kB` of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The 1-, 5- and 15-minute load averages of the machine (`/proc/loadavg`), as `uptime` shows
/// them, or `None` where `/proc` is missing.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// CPU time over a stretch of wall time as a share of one core (100 = one core busy).
pub fn cpu_percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn parse_proc_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may contain spaces or ')'; the fields
    // after the last ')' start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_fields() {
        let line = "4242 (sign post) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_proc_stat_cpu(line), Some(Duration::from_millis(3250)));
        assert!(cpu_time().is_some() || !std::path::Path::new("/proc/self/stat").exists());
    }

    #[test]
    fn vm_rss_in_bytes() {
        let status = "Name:\tetcd\nVmPeak:\t  999 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(process_cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn cpu_share_of_one_core() {
        let pct = cpu_percent(Duration::from_millis(250), Duration::from_secs(1));
        assert!((pct - 25.0).abs() < 1e-9);
        assert_eq!(cpu_percent(Duration::from_secs(1), Duration::ZERO), 0.0);
    }

    #[test]
    fn summary_of_known_samples() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for ms in 1..=50 {
            a.record(Duration::from_millis(ms));
        }
        for ms in 51..=100 {
            b.record(Duration::from_millis(ms));
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.samples, 100);
        let close = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() < ms * 0.01;
        assert!(close(s.p50, 50.0), "{s:?}");
        assert!(close(s.p99, 99.0), "{s:?}");
        assert!(close(s.max, 100.0), "{s:?}");
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }
}
