//! [`CompareError`]: why a step of the Signpost-vs-etcd suite failed. The suite records it (as
//! one line, every cause included: see [`error_chain`](super::target::error_chain)) under
//! "Failures" in the report and goes on; the binary prints it when the suite itself cannot run.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::target::TargetError;

/// Why a server, a workload, a step of the suite or the report failed. Each variant names what
/// was being done (which server, which phase, which file) and carries the error that stopped it.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// An operation on the system under test failed (see [`TargetError`] for which).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// An operation on the system under test failed during a named part of a phase.
    #[error("{doing}")]
    During {
        /// What the phase was doing, e.g. `counting instances`.
        doing: &'static str,
        /// The failed operation.
        #[source]
        source: TargetError,
    },
    /// A directory could not be created.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be opened or written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every sample could not be encoded as JSON.
    #[error("cannot encode the samples as JSON")]
    Json(#[source] serde_json::Error),
    /// The SVG chart could not be drawn.
    #[error("drawing the chart")]
    Chart(#[source] plotters::drawing::DrawingAreaErrorKind<std::io::Error>),
    /// No free loopback port could be found.
    #[error("bind 127.0.0.1:0")]
    FreePort(#[source] std::io::Error),
    /// A server's log file could not be opened.
    #[error("cannot open {}", path.display())]
    OpenLog {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server's program could not be started.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server was respawned while its process still ran.
    #[error("{system} is still running")]
    StillRunning {
        /// `Signpost` or `etcd`.
        system: &'static str,
    },
    /// A server's process could not be checked on.
    #[error("cannot check whether {system} is running")]
    Poll {
        /// `Signpost` or `etcd`.
        system: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server exited while starting.
    #[error("{system} exited at start ({status}); log:\n{log}")]
    ExitedAtStart {
        /// `Signpost` or `etcd`.
        system: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its log.
        log: String,
    },
    /// A server did not serve in time.
    #[error("{system} did not serve within {timeout:?}; log:\n{log}")]
    NotReady {
        /// `Signpost` or `etcd`.
        system: &'static str,
        /// How long it was given.
        timeout: Duration,
        /// The last lines of its log.
        log: String,
    },
    /// A restarted server did not serve all its instances in time.
    #[error("not serving {count} instances {timeout:?} after restart; log:\n{log}")]
    NotRestored {
        /// Instances it should serve.
        count: u64,
        /// How long it was given.
        timeout: Duration,
        /// The last lines of its log.
        log: String,
    },
    /// Watches of the open-watch memory row could not all be opened.
    #[error("opened {opened} of {watchers} watches")]
    WatchOpen {
        /// Watches open when one failed.
        opened: usize,
        /// Watches wanted.
        watchers: usize,
        /// Why the first one failed.
        #[source]
        source: std::io::Error,
    },
    /// The server has no process id (it is not running).
    #[error("no server pid")]
    NoPid,
    /// The server's resident memory could not be read from `/proc`.
    #[error("cannot read the server's RSS")]
    Rss,
    /// A workload setting would make the phase empty.
    #[error("{0}")]
    Setting(&'static str),
    /// Operations of a phase that must be clean failed.
    #[error("{phase}: {failed} of {total} operations failed: {}", samples.join("; "))]
    PhaseFailed {
        /// The phase, e.g. `seeding`, `register`, `filling`.
        phase: String,
        /// Operations that failed.
        failed: u64,
        /// Operations attempted.
        total: u64,
        /// The first few error messages.
        samples: Vec<String>,
    },
    /// A client or worker task panicked (or was cancelled).
    #[error("{task} panicked")]
    Panicked {
        /// Which task: `a client task`, `a heartbeat worker`, `keep-alive reader`.
        task: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Every heartbeat worker ended before the registrations were done.
    #[error("heartbeat workers stopped before registering")]
    WorkersStopped,
    /// A heartbeat worker could not register one of its instances.
    #[error("registering {i}")]
    Registering {
        /// The instance's sequence number.
        i: u64,
        /// The failed registration.
        #[source]
        source: TargetError,
    },
    /// An etcd lease keep-alive stream failed.
    #[error("{doing}")]
    KeepAlive {
        /// `opening a lease keep-alive stream` or `sending a lease keep-alive`.
        doing: &'static str,
        /// What `etcd-client` reported.
        #[source]
        source: etcd_client::Error,
    },
    /// The answers to the last keep-alives did not arrive.
    #[error("keep-alive answers did not arrive within {0:?}")]
    KeepAliveStalled(Duration),
    /// Not every watch opened in time.
    #[error("only {ready} of {watchers} watches opened in {timeout:?}: {}", samples.join("; "))]
    WatchesSlow {
        /// Watches open.
        ready: usize,
        /// Watches asked for.
        watchers: usize,
        /// How long they were given.
        timeout: Duration,
        /// The first few error messages.
        samples: Vec<String>,
    },
    /// Some watches failed to open.
    #[error("{failed} of {watchers} watches failed to open: {}", samples.join("; "))]
    WatchesFailed {
        /// Watches that failed.
        failed: usize,
        /// Watches asked for.
        watchers: usize,
        /// The first few error messages.
        samples: Vec<String>,
    },
}
