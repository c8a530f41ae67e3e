//! Retries: which failures are retried, how long to wait, and a budget that bounds them.
//!
//! [`RetryPolicy::decide`] is pure apart from the budget it draws on: given the method, the
//! failure and the attempt number, it answers [`Decision::Retry`] with a backoff, or says why not.
//! By default it retries connect errors (the request never left, so any method is safe), and
//! 502/503/504 and other transport errors for idempotent methods only (GET, HEAD, PUT, DELETE,
//! OPTIONS, TRACE), up to 3 attempts in all, with exponential backoff and jitter. The caller
//! sends each retry to a different instance.
//!
//! [`RetryBudget`] keeps retries to a fraction of the traffic so retries cannot multiply an
//! outage: each request deposits `ratio` tokens (0.2: at most 20 % extra requests), each retry
//! withdraws one, deposits expire after `ttl`, and a small reserve refilling at `min_per_sec`
//! lets a quiet client retry at all.
//!
//! ```
//! use std::time::Duration;
//! use http::Method;
//! use signpost_client::retry::{Decision, FailureKind, RetryPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let policy = RetryPolicy::default();
//! policy.budget().unwrap().deposit();
//! match policy.decide(RetryPolicy::is_idempotent(&Method::GET), &FailureKind::Status(503), 1) {
//!     Decision::Retry { after } => assert!(after <= Duration::from_secs(1)),
//!     other => panic!("{other:?}"),
//! }
//! // POST is not idempotent: a 503 is returned to the caller.
//! assert!(!policy.decide(RetryPolicy::is_idempotent(&Method::POST), &FailureKind::Status(503), 1).is_retry());
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

/// The backoff between attempts lives in [`crate::backoff`], shared with reconnection.
pub use crate::backoff::{Backoff, Jitter};

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made: the request was never sent.
    Connect,
    /// The connection broke (reset, closed) after the request may have been sent.
    Transport,
    /// The attempt timed out.
    Timeout,
    /// The instance answered with this status.
    Status(u16),
}

/// Why a failed attempt is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    /// The policy does not retry this failure (e.g. a 500 or a 4xx).
    NotRetryable,
    /// The failure is retryable only for idempotent methods and this one is not.
    NotIdempotent,
    /// The policy's `max_attempts` is used up.
    AttemptsExhausted,
    /// The retry budget has no token left.
    BudgetExhausted,
}

/// [`RetryPolicy::decide`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry (on another instance) after waiting this long. A budget token has been withdrawn.
    Retry {
        /// The backoff to wait first.
        after: Duration,
    },
    /// Give up and return the failure.
    Stop(NoRetry),
}

impl Decision {
    /// Whether this is [`Decision::Retry`].
    pub fn is_retry(&self) -> bool {
        matches!(self, Decision::Retry { .. })
    }
}

/// Which failures are retried, how often, and with what backoff and budget.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use signpost_client::retry::{RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::default()
///     .max_attempts(2)
///     .retry_statuses([503])
///     .budget_with(Arc::new(RetryBudget::new(0.1, 5, Duration::from_secs(10))));
/// assert_eq!(policy.attempts(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    max_attempts: u32,
    /// The wait between attempts.
    backoff: Backoff,
    /// Statuses retried (idempotent methods only, unless `idempotent_only` is off).
    retry_statuses: Vec<u16>,
    /// Whether status, transport and timeout retries require an idempotent method.
    idempotent_only: bool,
    /// Whether connect errors are retried (for any method: nothing was sent).
    retry_connect: bool,
    /// Whether timeouts are retried (idempotent only).
    retry_timeouts: bool,
    /// Whether broken connections are retried (idempotent only).
    retry_transport: bool,
    /// Bounds retries to a share of the traffic; shared by every call of a client.
    budget: Option<Arc<RetryBudget>>,
}

impl Default for RetryPolicy {
    /// 3 attempts; connect errors, transport errors and 502/503/504; idempotent methods only
    /// (connect errors: any method); timeouts not retried; default backoff and budget.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::default(),
            retry_statuses: vec![502, 503, 504],
            idempotent_only: true,
            retry_connect: true,
            retry_timeouts: false,
            retry_transport: true,
            budget: Some(Arc::new(RetryBudget::default())),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    ///
    /// ```
    /// assert_eq!(signpost_client::retry::RetryPolicy::none().attempts(), 1);
    /// ```
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            budget: None,
            ..Self::default()
        }
    }

    /// Attempts in all, the first included (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The statuses that are retried.
    pub fn retry_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.retry_statuses = statuses.into_iter().collect();
        self
    }

    /// Whether retries of statuses, timeouts and broken connections need an idempotent method
    /// (default true).
    pub fn idempotent_only(mut self, yes: bool) -> Self {
        self.idempotent_only = yes;
        self
    }

    /// Whether connect errors are retried (default true).
    pub fn retry_connect(mut self, yes: bool) -> Self {
        self.retry_connect = yes;
        self
    }

    /// Whether timeouts are retried (default false: a slow instance is often a slow request).
    pub fn retry_timeouts(mut self, yes: bool) -> Self {
        self.retry_timeouts = yes;
        self
    }

    /// Whether broken connections are retried (default true).
    pub fn retry_transport(mut self, yes: bool) -> Self {
        self.retry_transport = yes;
        self
    }

    /// Uses `budget` (share one across clients to bound them together).
    pub fn budget_with(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No budget: only `max_attempts` bounds retries.
    pub fn without_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether `method` is idempotent by HTTP's definition (GET, HEAD, PUT, DELETE, OPTIONS,
    /// TRACE).
    pub fn is_idempotent(method: &Method) -> bool {
        matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        )
    }

    /// Whether the policy retries `failure` for a request that is (or is not) `idempotent`,
    /// attempts and budget aside.
    pub fn is_retryable(&self, idempotent: bool, failure: &FailureKind) -> Result<(), NoRetry> {
        let (retryable, needs_idempotent) = match failure {
            FailureKind::Connect => (self.retry_connect, false),
            FailureKind::Transport => (self.retry_transport, true),
            FailureKind::Timeout => (self.retry_timeouts, true),
            FailureKind::Status(code) => (self.retry_statuses.contains(code), true),
        };
        if !retryable {
            Err(NoRetry::NotRetryable)
        } else if needs_idempotent && self.idempotent_only && !idempotent {
            Err(NoRetry::NotIdempotent)
        } else {
            Ok(())
        }
    }

    /// Decides whether attempt number `attempt` (1 for the first), which failed with `failure`,
    /// is followed by another. `idempotent` is usually [`RetryPolicy::is_idempotent`] of the
    /// method, but a caller may vouch for a POST. On `Retry`, one budget token is withdrawn.
    pub fn decide(&self, idempotent: bool, failure: &FailureKind, attempt: u32) -> Decision {
        self.decide_at(idempotent, failure, attempt, Instant::now())
    }

    /// [`RetryPolicy::decide`] at `now`.
    pub fn decide_at(
        &self,
        idempotent: bool,
        failure: &FailureKind,
        attempt: u32,
        now: Instant,
    ) -> Decision {
        if let Err(why) = self.is_retryable(idempotent, failure) {
            return Decision::Stop(why);
        }
        if attempt >= self.max_attempts {
            return Decision::Stop(NoRetry::AttemptsExhausted);
        }
        if let Some(budget) = &self.budget {
            if !budget.try_withdraw_at(now) {
                return Decision::Stop(NoRetry::BudgetExhausted);
            }
        }
        Decision::Retry {
            after: self.backoff.delay(attempt),
        }
    }
}

/// A retry budget: retries may add at most `ratio` extra requests over the last `ttl`, plus a
/// reserve of `min_per_sec` retries per second.
///
/// Every request [`deposit`](RetryBudget::deposit)s `ratio` tokens, which expire after `ttl`;
/// every retry [`try_withdraw`](RetryBudget::try_withdraw)s one token from the deposits, or when
/// they are spent, from a reserve that refills at `min_per_sec` per second and holds at most one
/// second's worth. So `n` requests failing at once get at most `ratio × n + min_per_sec`
/// retries.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::retry::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 10 requests × 0.2 = 2 retries
/// # }
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens each request deposits.
    ratio: f64,
    /// Reserve refill rate, retries per second.
    min_per_sec: u32,
    /// Length of one slot of the deposit window (a tenth of the ttl).
    slot: Duration,
    /// Deposits, withdrawals and reserve.
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    /// Time zero for slot numbering.
    epoch: Instant,
    /// `(slot number, requests, retries)`; entry `n % SLOTS` holds slot `n` if its number says
    /// so.
    slots: [(u64, u32, u32); BUDGET_SLOTS],
    /// Reserve tokens.
    reserve: f64,
    /// When the reserve was last refilled.
    refilled: Instant,
}

const BUDGET_SLOTS: usize = 10;

impl Default for RetryBudget {
    /// 20 % extra requests over 10 s, plus 10 retries per second.
    fn default() -> Self {
        RetryBudget::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per request over `ttl`, plus `min_per_sec` retries per
    /// second. The reserve starts full.
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        let now = Instant::now();
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_sec,
            slot: (ttl / BUDGET_SLOTS as u32).max(Duration::from_millis(1)),
            state: Mutex::new(BudgetState {
                epoch: now,
                slots: [(u64::MAX, 0, 0); BUDGET_SLOTS],
                reserve: f64::from(min_per_sec),
                refilled: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot_number(&self, state: &BudgetState, now: Instant) -> u64 {
        (now.saturating_duration_since(state.epoch).as_nanos() / self.slot.as_nanos()) as u64
    }

    fn current<'s>(&self, state: &'s mut BudgetState, now: Instant) -> &'s mut (u64, u32, u32) {
        let n = self.slot_number(state, now);
        let slot = &mut state.slots[(n % BUDGET_SLOTS as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        slot
    }

    /// Records one request (not a retry).
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// [`RetryBudget::deposit`] at `now`.
    pub fn deposit_at(&self, now: Instant) {
        let mut state = self.lock();
        let slot = self.current(&mut state, now);
        slot.1 = slot.1.saturating_add(1);
    }

    /// Takes one token for a retry; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    /// [`RetryBudget::try_withdraw`] at `now`.
    pub fn try_withdraw_at(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if self.deposited(&state, now) >= 1.0 {
            let slot = self.current(&mut state, now);
            slot.2 = slot.2.saturating_add(1);
            return true;
        }
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        let cap = f64::from(self.min_per_sec);
        state.reserve = (state.reserve + elapsed * cap).min(cap);
        state.refilled = now;
        if state.reserve >= 1.0 {
            state.reserve -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens left from deposits (may be fractional; the reserve not included).
    fn deposited(&self, state: &BudgetState, now: Instant) -> f64 {
        let n = self.slot_number(state, now);
        let (requests, retries) = state
            .slots
            .iter()
            .filter(|(s, _, _)| *s != u64::MAX && *s <= n && *s + BUDGET_SLOTS as u64 > n)
            .fold((0u64, 0u64), |(r, w), (_, req, ret)| {
                (r + u64::from(*req), w + u64::from(*ret))
            });
        requests as f64 * self.ratio - retries as f64
    }

    /// Retries allowed right now: deposit tokens plus the reserve, rounded down.
    pub fn available(&self) -> u64 {
        let now = Instant::now();
        let state = self.lock();
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        let cap = f64::from(self.min_per_sec);
        let reserve = (state.reserve + elapsed * cap).min(cap);
        let deposited = self.deposited(&state, now).max(0.0);
        // Deposits are spent whole-token-at-a-time; their fractional rest only counts as one
        // token once it reaches one.
        (deposited.floor() + reserve.floor()) as u64
    }
}
