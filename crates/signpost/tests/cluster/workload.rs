//! The client side: writers registering instances with distinct ids and readers doing
//! linearizable (`?consistent`) reads, against random running nodes, every operation recorded
//! with its invoke and complete times for [`crate::checker`].
//!
//! Instance `i-N` belongs to service `fault-(N mod SERVICES)`: a few services keep each read
//! small, and each service is one object of the checker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::checker::{Add, History, Micros, Outcome, Read};
use crate::harness::Targets;

/// How many services the instances are spread over.
pub const SERVICES: usize = 16;

/// How long a client waits for a write or a read before calling its outcome unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The service instance `id` belongs to.
pub fn service_of(id: u64) -> usize {
    usize::try_from(id % SERVICES as u64).expect("small")
}

/// The name of service number `s`.
pub fn service_name(s: usize) -> String {
    format!("fault-{s}")
}

/// The instance ids in a listing body.
pub fn ids_of(body: &Value) -> Option<BTreeSet<u64>> {
    body["instances"]
        .as_array()?
        .iter()
        .map(|i| i["id"].as_str()?.strip_prefix("i-")?.parse().ok())
        .collect()
}

/// Every operation so far, per service.
pub struct Recorder {
    /// Time zero of the history.
    base: Instant,
    next_id: AtomicU64,
    /// Each add with the node it was sent to.
    adds: Mutex<Vec<(SocketAddr, Add)>>,
    reads: Mutex<Vec<(usize, Read)>>,
    /// Reads that returned no set (errors, timeouts): they change nothing, so are not checked.
    pub reads_failed: AtomicU64,
    client: reqwest::Client,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            base: Instant::now(),
            next_id: AtomicU64::new(0),
            adds: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            reads_failed: AtomicU64::new(0),
            client: crate::harness::client(REQUEST_TIMEOUT),
        })
    }

    /// Now, on the history's clock.
    pub fn now(&self) -> Micros {
        Micros::try_from(self.base.elapsed().as_micros()).expect("a test is short")
    }

    /// `instant` on the history's clock.
    pub fn at(&self, instant: Instant) -> Micros {
        Micros::try_from(instant.saturating_duration_since(self.base).as_micros())
            .expect("a test is short")
    }

    /// Registers a new instance through the node at `http`; records and returns the add.
    pub async fn add(&self, http: SocketAddr) -> Add {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let service = service_name(service_of(id));
        let body = json!({
            "id": format!("i-{id}"),
            "address": format!("10.{}.{}.{}", (id >> 16) & 255, (id >> 8) & 255, id & 255),
            "port": 8080,
        });
        let url = format!("http://{http}/api/v1/services/{service}/instances");
        let invoke = self.now();
        let sent = self.client.post(&url).json(&body).send().await;
        let outcome = match &sent {
            Ok(resp) if resp.status().is_success() => Outcome::Ok,
            // The request was refused as invalid: nothing was proposed.
            Ok(resp) if resp.status().is_client_error() => Outcome::Failed,
            // Never reached a server (connection refused): certainly not applied.
            Err(e) if e.is_connect() => Outcome::Failed,
            // 5xx (a proposal may have been forwarded before it failed), timeouts, resets.
            _ => Outcome::Unknown,
        };
        let add = Add {
            id,
            invoke,
            complete: self.now(),
            outcome,
        };
        if std::env::var_os("SIGNPOST_FAULT_TRACE").is_some() {
            let t = format!("{}..{}", invoke / 1000, add.complete / 1000);
            match &sent {
                Ok(r) => eprintln!("trace {t} ms: add i-{id} via {http}: {}", r.status()),
                Err(e) => eprintln!("trace {t} ms: add i-{id} via {http}: {e}"),
            }
        }
        if let Ok(resp) = sent {
            if outcome == Outcome::Failed {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                panic!("registering i-{id} was refused with {status}: {text}");
            }
        }
        self.adds.lock().expect("adds").push((http, add.clone()));
        add
    }

    /// A linearizable read of service `s` through the node at `http`; recorded if it returned
    /// a set.
    pub async fn read(&self, http: SocketAddr, s: usize) -> Option<Read> {
        let url = format!(
            "http://{http}/api/v1/services/{}/instances?status=any&consistent",
            service_name(s)
        );
        let invoke = self.now();
        let body = async {
            let resp = self.client.get(&url).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<Value>().await.ok()
        }
        .await;
        let complete = self.now();
        let Some(body) = body else {
            self.reads_failed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let set = ids_of(&body).unwrap_or_else(|| panic!("GET {url}: odd body {body}"));
        let read = Read {
            invoke,
            complete,
            set,
        };
        self.reads.lock().expect("reads").push((s, read.clone()));
        Some(read)
    }

    /// Records a read made outside the workload (the final local reads after convergence).
    pub fn record_read(&self, s: usize, read: Read) {
        self.reads.lock().expect("reads").push((s, read));
    }

    /// The acknowledged adds so far.
    pub fn acknowledged(&self) -> Vec<u64> {
        self.adds
            .lock()
            .expect("adds")
            .iter()
            .filter(|(_, a)| a.outcome == Outcome::Ok)
            .map(|(_, a)| a.id)
            .collect()
    }

    /// The earliest completion of an acknowledged add invoked at or after `since` (and sent to
    /// `via`, if given).
    pub fn first_ack_since(&self, since: Micros, via: Option<SocketAddr>) -> Option<Micros> {
        self.adds
            .lock()
            .expect("adds")
            .iter()
            .filter(|(to, a)| {
                a.outcome == Outcome::Ok && a.invoke >= since && via.is_none_or(|v| v == *to)
            })
            .map(|(_, a)| a.complete)
            .min()
    }

    /// How many adds invoked at or after `since` were acknowledged.
    pub fn acks_since(&self, since: Micros) -> usize {
        self.adds
            .lock()
            .expect("adds")
            .iter()
            .filter(|(_, a)| a.outcome == Outcome::Ok && a.invoke >= since)
            .count()
    }

    /// The history, one per service.
    pub fn histories(&self) -> Vec<History> {
        let mut histories = vec![History::default(); SERVICES];
        for (_, add) in self.adds.lock().expect("adds").iter() {
            histories[service_of(add.id)].adds.push(add.clone());
        }
        for (s, read) in self.reads.lock().expect("reads").iter() {
            histories[*s].reads.push(read.clone());
        }
        histories
    }
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from((x >> 32) % n as u64).expect("small")
    }
}

/// Writers and readers running until stopped.
pub struct Workload {
    pub recorder: Arc<Recorder>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Pause between one client's operations: a steady load that leaves the (debug-built, busy)
/// nodes CPU to run elections on time.
const WRITER_PACE: Duration = Duration::from_millis(5);
const READER_PACE: Duration = Duration::from_millis(20);
/// Pause after a failed operation, as a client backs off before retrying elsewhere.
const BACKOFF: Duration = Duration::from_millis(50);

impl Workload {
    /// Starts `writers` writers and `readers` readers on the nodes `targets` says are up.
    pub fn start(targets: Arc<Targets>, writers: usize, readers: usize, seed: u64) -> Workload {
        let recorder = Recorder::new();
        let stop = watch::channel(false).0;
        let mut tasks = JoinSet::new();
        for w in 0..writers + readers {
            let recorder = recorder.clone();
            let targets = targets.clone();
            let mut stopped = stop.subscribe();
            let mut rng = Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let writer = w < writers;
            tasks.spawn(async move {
                while !*stopped.borrow() {
                    let up = targets.up();
                    let mut ok = false;
                    if !up.is_empty() {
                        let http = targets.http[up[rng.below(up.len())]];
                        ok = if writer {
                            recorder.add(http).await.outcome == Outcome::Ok
                        } else {
                            recorder.read(http, rng.below(SERVICES)).await.is_some()
                        };
                    }
                    let pace = match (ok, writer) {
                        (false, _) => BACKOFF,
                        (true, true) => WRITER_PACE,
                        (true, false) => READER_PACE,
                    };
                    let _ = tokio::time::timeout(pace, stopped.changed()).await;
                }
            });
        }
        Workload {
            recorder,
            stop,
            tasks,
        }
    }

    /// Waits until an add invoked at or after `since` (and sent to `via`, if given) is
    /// acknowledged; returns when it completed, on the history's clock.
    pub async fn acked_since(
        &self,
        since: Micros,
        via: Option<SocketAddr>,
        timeout: Duration,
    ) -> Micros {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.recorder.first_ack_since(since, via) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no write invoked after t={since}µs (via {via:?}) was acknowledged within {timeout:?}"
            );
            tokio::time::sleep(crate::harness::POLL).await;
        }
    }

    /// Waits until `n` adds invoked from now on are acknowledged: faults should strike a
    /// cluster under load.
    pub async fn under_load(&self, n: usize) {
        let since = self.recorder.now();
        let deadline = Instant::now() + crate::harness::SLOW;
        while self.recorder.acks_since(since) < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} writes were acknowledged in {:?}",
                crate::harness::SLOW
            );
            tokio::time::sleep(crate::harness::POLL).await;
        }
    }

    /// Stops every client and waits for the operations in flight (each bounded by
    /// [`REQUEST_TIMEOUT`]).
    pub async fn stop(mut self) -> Arc<Recorder> {
        self.stop.send_replace(true);
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.recorder
    }
}
