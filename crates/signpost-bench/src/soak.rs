//! The soak run: many heartbeating instances held for a long time while many clients churn
//! blocking queries, watches and registrations of random names.
//!
//! What it shows (issue 14's acceptance figures):
//! - **no false expiry**: every heartbeat batch answers every key as renewed (a `not_found` means
//!   the agent dropped an instance that was heartbeating), and at the end every soak instance is
//!   listed and passing;
//! - **flat memory**: the agent's RSS, sampled every `sample_every`, stays within a band after
//!   the warm-up (the churn of random names must not pin memory);
//! - **no error but the limits' own**: every churn answer is one of the statuses the operation
//!   may give (200, 201, 204, 404 for a delete of an instance that already expired) or 429/413
//!   (a limit); anything else, and any transport error, is counted as an error.
//!
//! Churn operations, chosen at random by each client task, each followed by `think` of idle
//! time: a blocking query on a random (usually absent) service name with a short wait; a watch
//! on a random name, read until its first event and dropped; a registration of a random
//! instance with a short TTL that nobody renews (so it expires and is reaped); a deregistration
//! of one the task registered earlier.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use crate::payload;
use crate::scenario::{base_url, http_client, seed, RegisterOptions, ScenarioError};
use crate::stats::rss_bytes;

/// Settings of [`soak`].
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Base URL of the agent.
    pub addr: String,
    /// ACL token sent on every request.
    pub token: Option<String>,
    /// The agent's process id, for its RSS (`/proc/<pid>/status`); `None` skips memory figures.
    pub agent_pid: Option<u32>,
    /// Heartbeating instances held for the whole run.
    pub instances: u64,
    /// Services those instances are spread over.
    pub services: u64,
    /// TTL of each soak instance's check; heartbeats are sent every third of it.
    pub ttl: Duration,
    /// Instances renewed per `PUT /api/v1/heartbeats` request.
    pub batch: usize,
    /// Client tasks churning random names.
    pub churners: usize,
    /// Idle time of a churner between two operations.
    pub think: Duration,
    /// Length of the soak (after seeding).
    pub duration: Duration,
    /// How often the agent's RSS is sampled.
    pub sample_every: Duration,
    /// RSS samples before this much time has passed are not held to the flatness band.
    pub warmup: Duration,
}

impl SoakOptions {
    /// The run: 100,000 instances for 10 minutes against 1,000 churning clients.
    pub fn new(addr: impl Into<String>) -> Self {
        SoakOptions {
            addr: addr.into(),
            token: None,
            agent_pid: None,
            instances: 100_000,
            services: 100,
            ttl: Duration::from_secs(30),
            batch: 5_000,
            churners: 1_000,
            think: Duration::from_millis(100),
            duration: Duration::from_secs(600),
            sample_every: Duration::from_secs(10),
            warmup: Duration::from_secs(60),
        }
    }
}

/// The figures of a soak run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SoakReport {
    /// Instances seeded (and heartbeated for the whole run).
    pub instances: u64,
    /// Heartbeat batches sent, and instances they renewed.
    pub heartbeat_batches: u64,
    /// Renewals the agent confirmed.
    pub renewed: u64,
    /// Keys a heartbeat batch answered as not found: instances the agent lost while they
    /// heartbeated. Must be 0.
    pub false_expiries: u64,
    /// Soak instances missing or not passing in the final listing. Must be 0.
    pub missing_at_end: u64,
    /// Churn operations done, by kind.
    pub churn_ops: BTreeMap<String, u64>,
    /// Answers by status code, over all churn operations and heartbeats.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers a limit gave (429, 413).
    pub limited: u64,
    /// Unexpected statuses and transport errors. Must be 0.
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// `(seconds since the soak started, RSS bytes)` of the agent.
    pub rss: Vec<(u64, u64)>,
    /// Lowest, median and highest RSS after the warm-up.
    pub rss_after_warmup: Option<(u64, u64, u64)>,
    /// Largest distance of a post-warm-up sample from that median, in percent.
    pub rss_spread_percent: Option<f64>,
}

impl SoakReport {
    /// Whether the run met the bar: no false expiry, no error, RSS within ±5%.
    pub fn passed(&self) -> bool {
        self.false_expiries == 0
            && self.missing_at_end == 0
            && self.errors == 0
            && self.rss_spread_percent.is_none_or(|p| p <= 5.0)
    }

    /// A human-readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
        out.push_str(&format!(
            "instances {}  heartbeat batches {}  renewed {}\n",
            self.instances, self.heartbeat_batches, self.renewed
        ));
        out.push_str(&format!(
            "false expiries {}  missing at end {}  errors {}  limited (429/413) {}\n",
            self.false_expiries, self.missing_at_end, self.errors, self.limited
        ));
        out.push_str(&format!("churn {:?}\n", self.churn_ops));
        out.push_str(&format!("statuses {:?}\n", self.statuses));
        if let (Some((lo, med, hi)), Some(spread)) =
            (self.rss_after_warmup, self.rss_spread_percent)
        {
            out.push_str(&format!(
                "RSS after warm-up: min {:.1} MiB, median {:.1} MiB, max {:.1} MiB (spread ±{spread:.1}%)\n",
                mb(lo),
                mb(med),
                mb(hi)
            ));
        }
        let series: Vec<String> = self
            .rss
            .iter()
            .map(|(t, b)| format!("{t}s:{:.0}", mb(*b)))
            .collect();
        out.push_str(&format!("RSS MiB series {}\n", series.join(" ")));
        for e in &self.error_samples {
            out.push_str(&format!("error: {e}\n"));
        }
        out.push_str(if self.passed() { "PASS\n" } else { "FAIL\n" });
        out
    }
}

/// Counters the tasks share.
#[derive(Default)]
struct Tally {
    renewed: AtomicU64,
    batches: AtomicU64,
    false_expiries: AtomicU64,
    limited: AtomicU64,
    errors: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    ops: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn status(&self, code: u16, expected: &[u16]) {
        *self.statuses.lock().unwrap().entry(code).or_default() += 1;
        if code == 429 || code == 413 {
            self.limited.fetch_add(1, Ordering::Relaxed);
        } else if !expected.contains(&code) {
            self.error(format!("unexpected status {code}"));
        }
    }

    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 10 {
            samples.push(message);
        }
    }

    fn op(&self, kind: &str) {
        *self
            .ops
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default() += 1;
    }
}

/// A small xorshift generator: each churner draws its own reproducible names.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Seeds the instances, then heartbeats them and churns for `opts.duration`, sampling the
/// agent's RSS, and finally checks every instance is still there and passing.
pub async fn soak(opts: &SoakOptions) -> Result<SoakReport, ScenarioError> {
    let base = base_url(&opts.addr)?;
    let seeded = seed(&RegisterOptions {
        addr: opts.addr.clone(),
        clients: 64,
        count: opts.instances,
        services: opts.services,
        ttl: Some(opts.ttl),
        prefix: "soak".to_string(),
        progress: false,
        token: opts.token.clone(),
    })
    .await?;
    if seeded.errors > 0 {
        return Err(ScenarioError::Seeding {
            service: "soak-*".to_string(),
            failed: seeded.errors,
            requests: seeded.requests,
            samples: seeded.error_samples.clone(),
        });
    }

    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = Vec::new();

    // Heartbeaters: one task per batch, each renewing its keys every ttl/3.
    let keys: Vec<Value> = (0..opts.instances)
        .map(|i| {
            serde_json::json!({
                "service": payload::service_name("soak", i % opts.services),
                "id": payload::instance_id("soak", i),
            })
        })
        .collect();
    let period = opts.ttl / 3;
    let batches: Vec<Vec<Value>> = keys.chunks(opts.batch.max(1)).map(<[_]>::to_vec).collect();
    let nbatches = batches.len() as u32;
    for (n, batch) in batches.into_iter().enumerate() {
        let client = http_client(opts.token.as_deref())?;
        let url = format!("{base}/api/v1/heartbeats");
        let tally = tally.clone();
        let body = serde_json::to_vec(&batch).unwrap_or_default();
        // Spread the batches over the period rather than sending them all at once.
        let offset = period * n as u32 / nbatches.max(1);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            while Instant::now() < deadline {
                tick.tick().await;
                heartbeat(&client, &url, body.clone(), &tally).await;
            }
        }));
    }

    // Churners.
    for n in 0..opts.churners {
        let client = http_client(opts.token.as_deref())?;
        let base = base.clone();
        let tally = tally.clone();
        let think = opts.think;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0x2545_f491));
            let mut mine: Vec<(String, String)> = Vec::new();
            while Instant::now() < deadline {
                churn(&client, &base, &mut rng, &mut mine, &tally).await;
                tokio::time::sleep(think).await;
            }
        }));
    }

    // Memory sampler.
    let mut rss = Vec::new();
    if let Some(pid) = opts.agent_pid {
        let mut tick = tokio::time::interval(opts.sample_every);
        while Instant::now() < deadline {
            tick.tick().await;
            if let Some(bytes) = rss_bytes(pid) {
                rss.push((start.elapsed().as_secs(), bytes));
            }
        }
    } else {
        tokio::time::sleep_until(deadline.into()).await;
    }
    for task in tasks {
        task.await.map_err(ScenarioError::Panicked)?;
    }

    let missing = final_check(opts, &base, &tally).await?;
    let mut report = SoakReport {
        instances: opts.instances,
        heartbeat_batches: tally.batches.load(Ordering::Relaxed),
        renewed: tally.renewed.load(Ordering::Relaxed),
        false_expiries: tally.false_expiries.load(Ordering::Relaxed),
        missing_at_end: missing,
        churn_ops: tally.ops.lock().unwrap().clone(),
        statuses: tally.statuses.lock().unwrap().clone(),
        limited: tally.limited.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        error_samples: tally.samples.lock().unwrap().clone(),
        rss: rss.clone(),
        ..SoakReport::default()
    };
    let warm = opts.warmup.as_secs();
    let mut after: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= warm)
        .map(|(_, b)| *b)
        .collect();
    after.sort_unstable();
    if let (Some(&lo), Some(&hi)) = (after.first(), after.last()) {
        let med = after[after.len() / 2];
        let spread = lo.abs_diff(med).max(hi.abs_diff(med)) as f64 * 100.0 / med as f64;
        report.rss_after_warmup = Some((lo, med, hi));
        report.rss_spread_percent = Some(spread);
    }
    Ok(report)
}

/// One `PUT /api/v1/heartbeats`: every key must come back renewed.
async fn heartbeat(client: &reqwest::Client, url: &str, body: Vec<u8>, tally: &Tally) {
    tally.batches.fetch_add(1, Ordering::Relaxed);
    let answer = client
        .put(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => return tally.error(format!("heartbeat: {e}")),
    };
    let code = response.status().as_u16();
    tally.status(code, &[200]);
    if code != 200 {
        return;
    }
    let value: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => return tally.error(format!("heartbeat body: {e}")),
    };
    let count = |field: &str| value[field].as_array().map_or(0, Vec::len) as u64;
    tally
        .renewed
        .fetch_add(value["renewed"].as_u64().unwrap_or(0), Ordering::Relaxed);
    tally
        .false_expiries
        .fetch_add(count("not_found"), Ordering::Relaxed);
    let rejected = count("rejected") + count("unavailable");
    if rejected > 0 {
        tally.error(format!(
            "heartbeat: {rejected} renewals rejected or unavailable"
        ));
    }
}

/// One churn operation chosen at random.
async fn churn(
    client: &reqwest::Client,
    base: &str,
    rng: &mut Rng,
    mine: &mut Vec<(String, String)>,
    tally: &Tally,
) {
    let name = format!("churn-{}", rng.next() % 1_000_000);
    match rng.next() % 4 {
        0 => {
            tally.op("blocking");
            let url = format!("{base}/api/v1/services/{name}/instances?index=1&wait=50ms");
            match client.get(url).send().await {
                Ok(r) => {
                    tally.status(r.status().as_u16(), &[200, 404]);
                    let _ = r.bytes().await;
                }
                Err(e) => tally.error(format!("blocking query: {e}")),
            }
        }
        1 => {
            tally.op("watch");
            let url = format!("{base}/api/v1/services/{name}/watch");
            match client.get(url).send().await {
                Ok(r) => {
                    tally.status(r.status().as_u16(), &[200, 404]);
                    let mut body = r.bytes_stream();
                    // Read the first event (the reset), then hang up.
                    let _ = tokio::time::timeout(Duration::from_millis(200), body.next()).await;
                }
                Err(e) => tally.error(format!("watch: {e}")),
            }
        }
        2 => {
            tally.op("register");
            let id = format!("c{}", rng.next() % 1_000_000_000);
            let service = format!("churn-{}", rng.next() % 10_000);
            let body = serde_json::json!({
                "id": id, "address": "10.9.9.9", "port": 8080,
                "check": {"ttl": "5s", "deregister_after": "10s"},
            });
            let url = format!("{base}/api/v1/services/{service}/instances");
            match client.post(url).json(&body).send().await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    tally.status(code, &[200, 201]);
                    if code == 201 && mine.len() < 16 {
                        mine.push((service, id));
                    }
                    let _ = r.bytes().await;
                }
                Err(e) => tally.error(format!("register: {e}")),
            }
        }
        _ => {
            tally.op("deregister");
            let Some((service, id)) = mine.pop() else {
                return;
            };
            let url = format!("{base}/api/v1/services/{service}/instances/{id}");
            match client.delete(url).send().await {
                // 404: it expired first, which is what an unrenewed TTL does.
                Ok(r) => tally.status(r.status().as_u16(), &[200, 204, 404]),
                Err(e) => tally.error(format!("deregister: {e}")),
            }
        }
    }
}

/// Counts soak instances missing from, or not passing in, their services' listings.
async fn final_check(opts: &SoakOptions, base: &str, tally: &Tally) -> Result<u64, ScenarioError> {
    let client = http_client(opts.token.as_deref())?;
    let mut present = 0u64;
    for k in 0..opts.services {
        let service = payload::service_name("soak", k);
        let url = format!("{base}/api/v1/services/{service}/instances");
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(v) => {
                    present += v["instances"].as_array().map_or(0, Vec::len) as u64;
                }
                Err(e) => tally.error(format!("final listing: {e}")),
            },
            Ok(r) => tally.error(format!("final listing: status {}", r.status())),
            Err(e) => tally.error(format!("final listing: {e}")),
        }
    }
    Ok(opts.instances.saturating_sub(present))
}
