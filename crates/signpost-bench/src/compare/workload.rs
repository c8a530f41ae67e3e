//! The load of each scenario, the same for both systems: only the [`Conn`] operations differ.
//!
//! Every function measures the generator's own CPU time and, given the server's PID, the
//! server's, over the measured phase only (seeding and set-up are not counted).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::{mpsc, Semaphore};

use super::error::CompareError;
use super::target::{error_chain, Census, Conn, Renewal, System, Target, TargetError, Watch};
use crate::payload;
use crate::stats::{cpu_time, process_cpu_time, Latencies, LatencySummary};

/// How many error messages a phase keeps.
const MAX_ERROR_SAMPLES: usize = 5;

/// What one measured phase counted.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed (transport errors, timeouts, unexpected answers).
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// Wall time of the measured phase.
    pub duration: Duration,
    pub latency: LatencySummary,
    /// CPU time of the generator (this process) over the phase.
    pub generator_cpu: Duration,
    /// CPU time of the server over the phase, when its PID was known.
    pub server_cpu: Option<Duration>,
}

impl Phase {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    /// Generator CPU as a share of one core.
    pub fn generator_percent(&self) -> f64 {
        crate::stats::cpu_percent(self.generator_cpu, self.duration)
    }

    /// Server CPU as a share of one core.
    pub fn server_percent(&self) -> Option<f64> {
        self.server_cpu
            .map(|c| crate::stats::cpu_percent(c, self.duration))
    }

    /// Server CPU time per successful operation, in microseconds (`utime + stime` from
    /// `/proc/<pid>/stat` over the phase, divided by the operations): what one request costs
    /// the server whatever the machine's other load. `None` without the server's PID or with
    /// no successful operation.
    pub fn server_cpu_per_op_us(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.ok > 0).then(|| cpu.as_secs_f64() * 1e6 / self.ok as f64)
    }

    /// Fails with the error samples when anything failed.
    pub fn ensure_clean(&self, what: &str) -> Result<(), CompareError> {
        if self.errors > 0 {
            return Err(CompareError::PhaseFailed {
                phase: what.to_string(),
                failed: self.errors,
                total: self.errors + self.ok,
                samples: self.error_samples.clone(),
            });
        }
        Ok(())
    }
}

/// CPU clocks read at the start of a phase.
struct Clocks {
    wall: Instant,
    generator: Option<Duration>,
    server: Option<Duration>,
    pid: Option<u32>,
}

impl Clocks {
    fn start(pid: Option<u32>) -> Clocks {
        Clocks {
            wall: Instant::now(),
            generator: cpu_time(),
            server: pid.and_then(process_cpu_time),
            pid,
        }
    }

    /// Wall, generator CPU and server CPU since `start`.
    fn stop(&self) -> (Duration, Duration, Option<Duration>) {
        let wall = self.wall.elapsed();
        let generator = cpu_time()
            .zip(self.generator)
            .map_or(Duration::ZERO, |(a, b)| a.saturating_sub(b));
        let server = self
            .pid
            .and_then(process_cpu_time)
            .zip(self.server)
            .map(|(a, b)| a.saturating_sub(b));
        (wall, generator, server)
    }
}

/// What one client task counted; summed at the end.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies: Latencies,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.merge(&other.latencies);
    }
}

/// The first few error messages, shared by the tasks of a phase.
#[derive(Debug, Default)]
pub struct ErrorLog(Mutex<Vec<String>>);

impl ErrorLog {
    pub fn note(&self, message: impl FnOnce() -> String) {
        let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < MAX_ERROR_SAMPLES {
            samples.push(message());
        }
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn phase_of(tally: Tally, clocks: &Clocks, errors: &ErrorLog) -> Phase {
    let (duration, generator_cpu, server_cpu) = clocks.stop();
    Phase {
        ok: tally.ok,
        errors: tally.errors,
        error_samples: errors.take(),
        duration,
        latency: tally.latencies.summary(),
        generator_cpu,
        server_cpu,
    }
}

async fn join_tallies(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Result<Tally, CompareError> {
    let mut total = Tally::default();
    for t in tasks {
        total.merge(&t.await.map_err(|source| CompareError::Panicked {
            task: "a client task",
            source,
        })?);
    }
    Ok(total)
}

/// A registration load: instances `range` of `prefix`, spread round robin over `services`
/// services named `{prefix}-{n}`.
#[derive(Debug, Clone)]
pub struct Fill {
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// Sequence numbers of the instances to register.
    pub range: Range<u64>,
    /// Services the instances are spread over.
    pub services: u64,
    /// Prefix of service names and instance ids.
    pub prefix: String,
    /// TTL of each instance's check (etcd: its lease); `None` for none.
    pub ttl: Option<Duration>,
}

impl Fill {
    fn service_of(&self, i: u64) -> String {
        payload::service_name(&self.prefix, i % self.services.max(1))
    }
}

/// Registers `fill.range`; every instance must be new.
pub async fn register(
    target: &Target,
    pid: Option<u32>,
    fill: &Fill,
    pb: &ProgressBar,
) -> Result<Phase, CompareError> {
    if fill.clients < 1 {
        return Err(CompareError::Setting("clients must be at least 1"));
    }
    let fill = Arc::new(fill.clone());
    let next = Arc::new(AtomicU64::new(fill.range.start));
    let errors = Arc::new(ErrorLog::default());
    let mut conns = Vec::with_capacity(fill.clients);
    for _ in 0..fill.clients {
        conns.push(target.connect().await?);
    }
    pb.set_length(fill.range.end - fill.range.start);
    pb.set_position(0);
    let clocks = Clocks::start(pid);
    let mut tasks = Vec::with_capacity(fill.clients);
    for mut conn in conns {
        let (fill, next, errors, pb) = (fill.clone(), next.clone(), errors.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= fill.range.end {
                    break;
                }
                let service = fill.service_of(i);
                let t0 = Instant::now();
                match conn
                    .register(&service, &fill.prefix, i, fill.ttl, false)
                    .await
                {
                    Ok(_) => {
                        tally.latencies.record(t0.elapsed());
                        tally.ok += 1;
                    }
                    Err(e) => {
                        tally.errors += 1;
                        errors.note(|| error_chain(&e));
                    }
                }
                pb.inc(1);
            }
            tally
        }));
    }
    let tally = join_tallies(tasks).await?;
    Ok(phase_of(tally, &clocks, &errors))
}

/// Seeds service `disc-{instances}` with `instances` instances without a check (passing from
/// the start; etcd: keys without a lease), then queries it from `clients` connections for
/// `duration`. The first answer each client gets must hold exactly `instances` instances.
pub async fn discover(
    target: &Target,
    pid: Option<u32>,
    clients: usize,
    duration: Duration,
    instances: u64,
    pb: &ProgressBar,
) -> Result<Phase, CompareError> {
    let service = seed_service(target, pid, clients, instances).await?;
    read(
        target,
        pid,
        &Reads {
            clients,
            duration,
            instances,
            service,
            kind: ReadKind::Native,
        },
        pb,
    )
    .await
}

/// Registers `instances` instances without a check (so passing) into one service,
/// `disc-{instances}-0`, and answers its name: what [`discover`] and the Consul reads query.
pub async fn seed_service(
    target: &Target,
    pid: Option<u32>,
    clients: usize,
    instances: u64,
) -> Result<String, CompareError> {
    let prefix = format!("disc-{instances}");
    let seed = Fill {
        clients: clients.clamp(1, 16),
        range: 0..instances,
        services: 1,
        prefix: prefix.clone(),
        ttl: None,
    };
    register(target, pid, &seed, &ProgressBar::hidden())
        .await?
        .ensure_clean("seeding")?;
    Ok(payload::service_name(&prefix, 0))
}

/// Which listing a read phase asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// The native face's passing instances (etcd: the prefix range): [`Conn::discover`].
    Native,
    /// A listing of the Consul face (Signpost only): [`Conn::consul_read`].
    Consul(super::consul::ConsulRead),
}

/// A read phase: `clients` connections asking for one service's listing for `duration`.
#[derive(Debug, Clone)]
pub struct Reads {
    /// Concurrent connections, one request in flight each.
    pub clients: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Instances each answer must list (checked once per connection, on its first answer).
    pub instances: u64,
    /// The service queried.
    pub service: String,
    /// The listing asked for.
    pub kind: ReadKind,
}

/// Reads `reads.service` as fast as `reads.clients` connections can for `reads.duration`.
pub async fn read(
    target: &Target,
    pid: Option<u32>,
    reads: &Reads,
    pb: &ProgressBar,
) -> Result<Phase, CompareError> {
    let (instances, kind) = (reads.instances, reads.kind);
    let errors = Arc::new(ErrorLog::default());
    let mut conns = Vec::with_capacity(reads.clients);
    for _ in 0..reads.clients {
        conns.push(target.connect().await?);
    }
    let millis = u64::try_from(reads.duration.as_millis()).unwrap_or(u64::MAX);
    pb.set_length(millis);
    pb.set_position(0);
    let ticker = {
        let pb = pb.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
        })
    };
    let clocks = Clocks::start(pid);
    let deadline = Instant::now() + reads.duration;
    let mut tasks = Vec::with_capacity(reads.clients);
    for mut conn in conns {
        let (errors, service) = (errors.clone(), reads.service.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut verified = false;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let answer = match kind {
                    ReadKind::Native => conn.discover(&service, !verified).await,
                    ReadKind::Consul(c) => conn.consul_read(c, &service, !verified).await,
                };
                match answer {
                    Ok((n, _)) if verified || n == instances => {
                        tally.latencies.record(t0.elapsed());
                        tally.ok += 1;
                        verified = true;
                    }
                    Ok((n, _)) => {
                        tally.errors += 1;
                        errors
                            .note(|| format!("{service}: expected {instances} instances, got {n}"));
                    }
                    Err(e) => {
                        tally.errors += 1;
                        errors.note(|| error_chain(&e));
                    }
                }
            }
            tally
        }));
    }
    let tally = join_tallies(tasks).await;
    ticker.abort();
    Ok(phase_of(tally?, &clocks, &errors))
}

/// Settings of [`heartbeat`].
#[derive(Debug, Clone)]
pub struct HeartbeatOptions {
    /// Instances that renew.
    pub instances: u64,
    /// Connections the renewals are spread over.
    pub clients: usize,
    /// Services the instances are spread over.
    pub services: u64,
    /// Each instance renews this often.
    pub interval: Duration,
    /// Check TTL (etcd: lease TTL); an instance not renewed for this long expires.
    pub ttl: Duration,
    /// Length of the measured window (after one full interval of steady renewals).
    pub window: Duration,
    /// Signpost: renewals due within this long of the first due one go out together in one
    /// `PUT /api/v1/heartbeats` (a little early, never late); zero renews one instance per
    /// request. etcd sends one keep-alive message per lease either way.
    pub batch: Duration,
    /// Longest the registrations may take: when the machine cannot renew and register at once,
    /// the instances registered by then are the ones renewed (see
    /// [`HeartbeatResult::registered`]), so the phase stays bounded.
    pub setup_limit: Duration,
}

/// What [`heartbeat`] found.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatResult {
    /// Renewals sent inside the window: ok (renewed), errors; server and generator CPU over
    /// the window.
    pub phase: Phase,
    /// Renewals the schedule asked for inside the window (`instances × window / interval`).
    pub expected: u64,
    /// Renewals answered "unknown instance" (Signpost 404, etcd TTL 0), at any time.
    pub expired_answers: u64,
    /// Instances missing at the end (Signpost: gone, or critical; etcd: key gone).
    pub lost: u64,
    /// Writes the system made during the window (Signpost: Raft entries; etcd: revisions).
    /// Renewals write nothing in either system, so any write is an expiry (or recovery).
    pub writes: u64,
    /// Latest a renewal was sent after it was due, inside the window.
    pub max_lateness: Duration,
    /// Time to register every instance (while already renewing the first ones).
    pub setup: Duration,
    /// Instances registered (and renewed): all of them unless `setup_limit` cut set-up short.
    pub registered: u64,
}

impl HeartbeatResult {
    /// Instances that expired although their owner kept renewing.
    pub fn false_expiries(&self) -> u64 {
        self.expired_answers.max(self.lost)
    }
}

/// Most renewals one batched heartbeat carries.
const MAX_HEARTBEAT_BATCH: usize = 1_000;

/// Shared state of the heartbeat workers.
struct Schedule {
    opts: HeartbeatOptions,
    /// Workers still registering their instances.
    registering: AtomicUsize,
    /// When the last worker finished registering; renewals are then spread evenly and the
    /// window starts one interval later.
    registered: tokio::sync::watch::Sender<Option<Instant>>,
    errors: ErrorLog,
    expired: AtomicU64,
    /// No registration starts after this.
    setup_deadline: Instant,
    /// Instances registered so far.
    registered_total: AtomicU64,
}

impl Schedule {
    fn window(&self) -> Option<(Instant, Instant)> {
        let done = (*self.registered.borrow())?;
        let start = done + self.opts.interval;
        Some((start, start + self.opts.window))
    }
}

/// `instances` instances with a TTL check (etcd: a lease each), renewed every `interval`
/// from `clients` connections, spread evenly over the interval. Registration and renewals run
/// together (the first instances renew while the last register); once all are registered the
/// renewals are spread evenly and, one interval later, the window is measured.
///
/// Signpost renews with `PUT .../heartbeat`, one request in flight per connection; etcd with
/// lease keep-alives, one keep-alive stream per connection carrying all of that connection's
/// leases (as etcd's Go client does).
pub async fn heartbeat(
    target: &Target,
    pid: Option<u32>,
    opts: &HeartbeatOptions,
    pb: &ProgressBar,
) -> Result<HeartbeatResult, CompareError> {
    if opts.clients < 1 || opts.instances < 1 {
        return Err(CompareError::Setting("nothing to renew"));
    }
    let clients = opts
        .clients
        .min(usize::try_from(opts.instances).unwrap_or(usize::MAX));
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let schedule = Arc::new(Schedule {
        opts: opts.clone(),
        registering: AtomicUsize::new(clients),
        registered: tx,
        errors: ErrorLog::default(),
        expired: AtomicU64::new(0),
        setup_deadline: Instant::now() + opts.setup_limit,
        registered_total: AtomicU64::new(0),
    });
    let started = Instant::now();
    pb.set_length(opts.instances);
    pb.set_position(0);
    let mut tasks = Vec::with_capacity(clients);
    for k in 0..clients {
        let conn = target.connect().await?;
        let (schedule, pb) = (schedule.clone(), pb.clone());
        let mine: Vec<u64> = (k as u64..opts.instances).step_by(clients).collect();
        tasks.push(tokio::spawn(async move {
            renew_worker(conn, k, clients, mine, schedule, pb).await
        }));
    }

    // Wait for the registrations, then for the window.
    let done = loop {
        if let Some(done) = *rx.borrow_and_update() {
            break done;
        }
        if rx.changed().await.is_err() {
            return Err(CompareError::WorkersStopped);
        }
    };
    let setup = done - started;
    let (window_start, window_end) = schedule.window().unwrap_or((done, done));
    pb.set_length(u64::try_from((window_end - started).as_millis()).unwrap_or(u64::MAX));
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(u64::try_from(started.elapsed().as_millis()).unwrap_or(0));
            }
        })
    };
    tokio::time::sleep_until(window_start.into()).await;
    let before = target.census().await.unwrap_or_default();
    let clocks = Clocks::start(pid);
    tokio::time::sleep_until(window_end.into()).await;
    let (duration, generator_cpu, server_cpu) = clocks.stop();
    let after: Census = target
        .census()
        .await
        .map_err(|source| CompareError::During {
            doing: "counting instances",
            source,
        })?;
    ticker.abort();

    let mut tally = Tally::default();
    let mut max_lateness = Duration::ZERO;
    for t in tasks {
        let (worker, lateness) = t.await.map_err(|source| CompareError::Panicked {
            task: "a heartbeat worker",
            source,
        })??;
        tally.merge(&worker);
        max_lateness = max_lateness.max(lateness);
    }
    let registered = schedule.registered_total.load(Ordering::Relaxed);
    let lost = match target.system() {
        System::Signpost | System::Baseline => {
            (registered.saturating_sub(after.total)) + after.critical
        }
        System::Etcd => registered.saturating_sub(after.total),
    };
    Ok(HeartbeatResult {
        phase: Phase {
            ok: tally.ok,
            errors: tally.errors,
            error_samples: schedule.errors.take(),
            duration,
            latency: tally.latencies.summary(),
            generator_cpu,
            server_cpu,
        },
        expected: (registered as f64 * opts.window.as_secs_f64() / opts.interval.as_secs_f64())
            .round() as u64,
        expired_answers: schedule.expired.load(Ordering::Relaxed),
        lost,
        writes: after.position.saturating_sub(before.position),
        max_lateness,
        setup,
        registered,
    })
}

/// One heartbeat connection: registers its instances, renews each every interval, and counts
/// the renewals sent inside the window. Answers its tally and its worst lateness.
async fn renew_worker(
    mut conn: Conn,
    k: usize,
    workers: usize,
    mine: Vec<u64>,
    schedule: Arc<Schedule>,
    pb: ProgressBar,
) -> Result<(Tally, Duration), CompareError> {
    const PREFIX: &str = "hb";
    let opts = &schedule.opts;
    let period = opts.interval;
    let mut tally = Tally::default();
    let mut max_lateness = Duration::ZERO;
    let mut leases: Vec<i64> = Vec::with_capacity(mine.len());
    let mut renewer: Option<EtcdRenewer> = None;
    // (due, local index), in due order.
    let mut queue: VecDeque<(Instant, usize)> = VecDeque::with_capacity(mine.len());
    let mut spread = false;
    let mut announced = false;
    let mut rx = schedule.registered.subscribe();
    loop {
        let now = Instant::now();
        let window = schedule.window();
        if let Some((_, end)) = window {
            if now >= end {
                break;
            }
        }
        let registering = queue.len() < mine.len() && now < schedule.setup_deadline;
        if !announced && !registering {
            announced = true;
            if schedule.registering.fetch_sub(1, Ordering::AcqRel) == 1 {
                schedule.registered.send_replace(Some(Instant::now()));
            }
        }
        if let (Some((start, _)), false) = (window, spread) {
            // Spread this worker's renewals evenly over one interval from the end of the
            // registrations (every instance was renewed or registered within the last
            // interval, so none waits more than two intervals: below the TTL of three).
            spread = true;
            let done = start - period;
            let n = queue.len().max(1) as f64;
            let offset = k as f64 / workers as f64;
            let mut order: Vec<usize> = queue.drain(..).map(|(_, j)| j).collect();
            order.sort_unstable();
            for (q, j) in order.into_iter().enumerate() {
                let due = done + period.mul_f64((q as f64 + offset) / n);
                queue.push_back((due, j));
            }
        }
        match queue.front().copied() {
            Some((due, j)) if due <= now => {
                queue.pop_front();
                let lateness = now - due;
                let measured = window.is_some_and(|(s, e)| now >= s && now < e);
                if measured {
                    max_lateness = max_lateness.max(lateness);
                }
                let i = mine[j];
                match &mut conn {
                    Conn::Signpost { .. } if !opts.batch.is_zero() => {
                        let mut batch = vec![(due, j)];
                        while let Some(&(d, j)) = queue.front() {
                            if d > now + opts.batch || batch.len() >= MAX_HEARTBEAT_BATCH {
                                break;
                            }
                            queue.pop_front();
                            batch.push((d, j));
                        }
                        let keys: Vec<(String, String)> = batch
                            .iter()
                            .map(|&(_, j)| {
                                let i = mine[j];
                                (
                                    payload::service_name(PREFIX, i % opts.services),
                                    payload::instance_id(PREFIX, i),
                                )
                            })
                            .collect();
                        let t0 = Instant::now();
                        let answer = conn.heartbeats(&keys).await;
                        match answer {
                            Ok((renewed, gone)) => {
                                schedule
                                    .expired
                                    .fetch_add(gone.len() as u64, Ordering::Relaxed);
                                if measured {
                                    tally.ok += renewed;
                                    for _ in 0..renewed {
                                        tally.latencies.record(t0.elapsed());
                                    }
                                    tally.errors += gone.len() as u64;
                                    if let Some(id) = gone.first() {
                                        schedule.errors.note(|| format!("{id} expired"));
                                    }
                                }
                            }
                            Err(e) if measured => {
                                tally.errors += keys.len() as u64;
                                schedule.errors.note(|| error_chain(&e));
                            }
                            Err(_) => {}
                        }
                        // The first one is pushed back below.
                        for &(d, j) in &batch[1..] {
                            queue.push_back((d + period, j));
                        }
                    }
                    Conn::Signpost { .. } => {
                        let service = payload::service_name(PREFIX, i % opts.services);
                        let id = payload::instance_id(PREFIX, i);
                        let t0 = Instant::now();
                        let answer = conn.heartbeat(&service, &id).await;
                        if measured {
                            match answer {
                                Ok(Renewal::Alive) => {
                                    tally.ok += 1;
                                    tally.latencies.record(t0.elapsed());
                                }
                                Ok(Renewal::Expired) => {
                                    tally.errors += 1;
                                    schedule.expired.fetch_add(1, Ordering::Relaxed);
                                    schedule.errors.note(|| format!("{id} expired"));
                                }
                                Err(e) => {
                                    tally.errors += 1;
                                    schedule.errors.note(|| error_chain(&e));
                                }
                            }
                        } else if let Ok(Renewal::Expired) = answer {
                            schedule.expired.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Conn::Etcd { .. } => {
                        if let Some(r) = renewer.as_mut() {
                            r.renew(leases[j], measured).await?;
                        }
                    }
                }
                queue.push_back((due + period, j));
            }
            _ if registering => {
                let j = queue.len();
                let i = mine[j];
                let service = payload::service_name(PREFIX, i % opts.services);
                match conn
                    .register(&service, PREFIX, i, Some(opts.ttl), false)
                    .await
                {
                    Ok(lease) => {
                        if let (Some(lease), Conn::Etcd { client }) = (lease, &mut conn) {
                            leases.push(lease);
                            if renewer.is_none() {
                                renewer =
                                    Some(EtcdRenewer::open(client, lease, schedule.clone()).await?);
                            }
                        }
                    }
                    Err(source) => return Err(CompareError::Registering { i, source }),
                }
                queue.push_back((Instant::now() + period, j));
                schedule.registered_total.fetch_add(1, Ordering::Relaxed);
                pb.inc(1);
            }
            front => {
                let mut wake = front.map_or(now + period, |(due, _)| due);
                if let Some((_, end)) = window {
                    wake = wake.min(end);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(wake.into()) => {}
                    _ = rx.changed(), if window.is_none() => {}
                }
            }
        }
    }
    if let Some(r) = renewer {
        let renewed = r.finish().await?;
        tally.merge(&renewed);
    }
    Ok((tally, max_lateness))
}

/// One etcd lease keep-alive stream renewing many leases: requests go out through the
/// `LeaseKeeper` (its id set per request), answers are read in order by a reader task.
struct EtcdRenewer {
    keeper: etcd_client::LeaseKeeper,
    /// (lease, sent at, inside the window) of every request not yet answered, in order.
    inflight: mpsc::UnboundedSender<(i64, Instant, bool)>,
    reader: tokio::task::JoinHandle<Tally>,
}

impl EtcdRenewer {
    async fn open(
        client: &mut etcd_client::Client,
        first: i64,
        schedule: Arc<Schedule>,
    ) -> Result<EtcdRenewer, CompareError> {
        let (keeper, mut stream) =
            client
                .lease_keep_alive(first)
                .await
                .map_err(|source| CompareError::KeepAlive {
                    doing: "opening a lease keep-alive stream",
                    source,
                })?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant, bool)>();
        let reader = tokio::spawn(async move {
            let mut tally = Tally::default();
            // Every request is recorded before it is sent, so each entry has an answer coming.
            while let Some((lease, sent, measured)) = rx.recv().await {
                match stream.message().await {
                    Ok(Some(resp)) if resp.ttl() > 0 => {
                        if measured {
                            tally.ok += 1;
                            tally.latencies.record(sent.elapsed());
                        }
                    }
                    Ok(Some(_)) => {
                        schedule.expired.fetch_add(1, Ordering::Relaxed);
                        if measured {
                            tally.errors += 1;
                        }
                        schedule
                            .errors
                            .note(|| format!("lease {lease:x} expired (TTL 0)"));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tally.errors += 1;
                        schedule.errors.note(|| format!("keep-alive: {e}"));
                        break;
                    }
                }
            }
            tally
        });
        Ok(EtcdRenewer {
            keeper,
            inflight: tx,
            reader,
        })
    }

    async fn renew(&mut self, lease: i64, measured: bool) -> Result<(), CompareError> {
        // Recorded before sending, so the reader always finds the request of an answer.
        let _ = self.inflight.send((lease, Instant::now(), measured));
        self.keeper.id = lease;
        self.keeper
            .keep_alive()
            .await
            .map_err(|source| CompareError::KeepAlive {
                doing: "sending a lease keep-alive",
                source,
            })
    }

    /// Waits (at most 30 s) for the answers still in flight, then closes the stream.
    async fn finish(self) -> Result<Tally, CompareError> {
        let EtcdRenewer {
            keeper,
            inflight,
            reader,
        } = self;
        drop(inflight);
        drop(keeper);
        let abort = reader.abort_handle();
        const PATIENCE: Duration = Duration::from_secs(30);
        match tokio::time::timeout(PATIENCE, reader).await {
            Ok(t) => t.map_err(|source| CompareError::Panicked {
                task: "keep-alive reader",
                source,
            }),
            Err(_) => {
                abort.abort();
                Err(CompareError::KeepAliveStalled(PATIENCE))
            }
        }
    }
}

/// What [`watch`] found.
#[derive(Debug, Clone, Default)]
pub struct WatchResult {
    /// Watchers that saw the registration.
    pub seen: u64,
    /// Watchers that had not seen it when the wait ended.
    pub missing: u64,
    /// Time from the start of the registration until each watcher saw it.
    pub latency: LatencySummary,
    /// Time to open every watch.
    pub setup: Duration,
    /// Generator CPU from the registration until the last watcher saw it (at least one
    /// second: CPU time comes in 10 ms ticks), as a share of one core; and while opening the
    /// watches.
    pub generator_percent: f64,
    pub generator_setup_percent: f64,
    /// Server CPU over the same stretch as `generator_percent`, as a share of one core.
    pub server_percent: Option<f64>,
    pub error_samples: Vec<String>,
}

/// Opens `watchers` watches on one service (each its own connection), then registers one
/// instance into it and measures, per watcher, the time from the start of the registration
/// until that watcher saw it.
pub async fn watch(
    target: &Target,
    pid: Option<u32>,
    watchers: usize,
    wait: Duration,
    pb: &ProgressBar,
) -> Result<WatchResult, CompareError> {
    const PREFIX: &str = "fan";
    let service = payload::service_name(PREFIX, 0);
    let id = payload::instance_id(PREFIX, 0);
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(ErrorLog::default());
    // Opening many connections at once overflows the listen backlog (a dropped SYN is retried
    // only after a second): open a bounded number at a time.
    let opening = Arc::new(Semaphore::new(128));
    let setup_clock = Clocks::start(pid);
    pb.set_length(watchers as u64);
    pb.set_position(0);
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let (target, service, id) = (target.clone(), service.clone(), id.clone());
        let (ready, failed, errors, opening, pb) = (
            ready.clone(),
            failed.clone(),
            errors.clone(),
            opening.clone(),
            pb.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let opened: Result<Watch, TargetError> = async {
                // The semaphore is never closed, so a permit always comes.
                let _permit = opening.acquire().await.ok();
                let conn = target.connect().await?;
                conn.watch(&service).await
            }
            .await;
            let mut watch = match opened {
                Ok(w) => w,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.note(|| format!("opening a watch: {}", error_chain(&e)));
                    return None;
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            pb.inc(1);
            match watch.until_added(&service, &id).await {
                Ok(at) => Some(at),
                Err(e) => {
                    errors.note(|| error_chain(&e));
                    None
                }
            }
        }));
    }
    const OPEN_TIMEOUT: Duration = Duration::from_secs(300);
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < watchers {
        if Instant::now() > deadline {
            return Err(CompareError::WatchesSlow {
                ready: ready.load(Ordering::Relaxed),
                watchers,
                timeout: OPEN_TIMEOUT,
                samples: errors.take(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if failed.load(Ordering::Relaxed) > 0 {
        for t in &tasks {
            t.abort();
        }
        return Err(CompareError::WatchesFailed {
            failed: failed.load(Ordering::Relaxed),
            watchers,
            samples: errors.take(),
        });
    }
    let (setup, setup_gen, _) = setup_clock.stop();
    // Let the server finish whatever opening the watches left to do.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut writer = target.connect().await?;
    let clocks = Clocks::start(pid);
    let t0 = clocks.wall;
    writer
        .register(&service, PREFIX, 0, Some(Duration::from_secs(600)), false)
        .await
        .map_err(|source| CompareError::During {
            doing: "registering the watched instance",
            source,
        })?;
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let mut latencies = Latencies::default();
    let (mut seen, mut missing) = (0u64, 0u64);
    let mut last = t0;
    let wait_until = tokio::time::Instant::from(t0 + wait);
    for t in tasks {
        match tokio::time::timeout_at(wait_until, t).await {
            Ok(Ok(Some(at))) => {
                seen += 1;
                latencies.record(at - t0);
                last = last.max(at);
            }
            Ok(_) => missing += 1,
            Err(_) => missing += 1,
        }
    }
    // CPU is counted in 10 ms ticks: measure over at least a second from the registration.
    let busy = last - t0;
    tokio::time::sleep_until((t0 + busy.max(Duration::from_secs(1))).into()).await;
    let (span, generator_cpu, server_cpu) = clocks.stop();
    // Closes every watch still open (those that saw nothing in time).
    for a in aborts {
        a.abort();
    }
    Ok(WatchResult {
        seen,
        missing,
        latency: latencies.summary(),
        setup,
        generator_percent: crate::stats::cpu_percent(generator_cpu, span),
        generator_setup_percent: crate::stats::cpu_percent(setup_gen, setup),
        server_percent: server_cpu.map(|c| crate::stats::cpu_percent(c, span)),
        error_samples: errors.take(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unclean_phase_fails_with_its_samples() {
        let clean = Phase {
            ok: 3,
            ..Phase::default()
        };
        assert!(clean.ensure_clean("seeding").is_ok());
        let failed = Phase {
            ok: 3,
            errors: 2,
            error_samples: vec!["a".to_string(), "b".to_string()],
            ..Phase::default()
        };
        let err = failed.ensure_clean("seeding").unwrap_err();
        assert!(
            matches!(
                &err,
                CompareError::PhaseFailed {
                    failed: 2,
                    total: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "seeding: 2 of 5 operations failed: a; b");
    }

    /// Registration failures are counted and described (request and cause), not raised.
    #[tokio::test]
    async fn failed_registrations_are_counted_with_their_causes() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let target = Target::Signpost {
            base: format!("http://127.0.0.1:{port}").into(),
        };
        let fill = Fill {
            clients: 1,
            range: 0..2,
            services: 1,
            prefix: "t".to_string(),
            ttl: None,
        };
        let phase = register(&target, None, &fill, &ProgressBar::hidden())
            .await
            .unwrap();
        assert_eq!((phase.ok, phase.errors), (0, 2));
        let url = format!("POST http://127.0.0.1:{port}/api/v1/services/t-0/instances: ");
        assert!(
            phase.error_samples[0].starts_with(&url),
            "{:?}",
            phase.error_samples
        );
        let err = register(
            &target,
            None,
            &Fill { clients: 0, ..fill },
            &ProgressBar::hidden(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "clients must be at least 1");
    }
}
