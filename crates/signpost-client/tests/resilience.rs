//! Circuit breakers, outlier ejection and retry budgets, with paused time.

use std::time::Duration;

use http::Method;
use signpost_client::balance::Outcome;
use signpost_client::breaker::{
    BreakerConfig, BreakerState, Breakers, CircuitBreaker, OutlierConfig, OutlierDetector,
    OutlierHost,
};
use signpost_client::retry::{
    Backoff, Decision, FailureKind, Jitter, NoRetry, RetryBudget, RetryPolicy,
};
use tokio::time::advance;

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_ratio: 0.5,
        window: Duration::from_secs(10),
        min_requests: 10,
        cool_down: Duration::from_secs(5),
        half_open_probes: 2,
        half_open_successes: 1,
    }
}

fn fail(b: &CircuitBreaker) -> Option<BreakerState> {
    let permit = b.try_acquire().expect("admitted");
    b.record(permit, Outcome::Failure)
}

fn succeed(b: &CircuitBreaker) -> Option<BreakerState> {
    let permit = b.try_acquire().expect("admitted");
    b.record(permit, Outcome::Success)
}

#[tokio::test(start_paused = true)]
async fn closed_opens_after_n_consecutive_failures() {
    let b = CircuitBreaker::new(config());
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(fail(&b), None);
    assert_eq!(fail(&b), None);
    // A success resets the streak.
    assert_eq!(succeed(&b), None);
    assert_eq!(fail(&b), None);
    assert_eq!(fail(&b), None);
    assert_eq!(fail(&b), Some(BreakerState::Open));
    assert_eq!(b.state(), BreakerState::Open);
    let open = b.try_acquire().unwrap_err();
    assert_eq!(open.retry_after, Duration::from_secs(5));
    assert!(!b.is_available());
}

#[tokio::test(start_paused = true)]
async fn closed_opens_on_the_failure_ratio_once_the_window_has_enough_requests() {
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    // Alternate: 50 % failures, but below min_requests nothing happens.
    for _ in 0..4 {
        assert_eq!(succeed(&b), None);
        assert_eq!(fail(&b), None);
    }
    assert_eq!(succeed(&b), None); // 9 results, 4 failures
    assert_eq!(fail(&b), Some(BreakerState::Open)); // 10 results, 5 failures
}

#[tokio::test(start_paused = true)]
async fn old_results_leave_the_rolling_window() {
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        ..config()
    });
    // Nine failures: below min_requests, so still closed.
    for _ in 0..9 {
        assert_eq!(fail(&b), None);
    }
    // The window moves on: those results expire. Had they not, the next ten results would make
    // 10 failures out of 19 and open the breaker.
    advance(Duration::from_secs(11)).await;
    for _ in 0..9 {
        assert_eq!(succeed(&b), None);
    }
    assert_eq!(fail(&b), None); // 10 results, 1 failure
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_turns_half_open_after_the_cool_down_and_a_successful_probe_closes() {
    let b = CircuitBreaker::new(config());
    for _ in 0..3 {
        fail(&b);
    }
    advance(Duration::from_millis(4_999)).await;
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.is_available());

    // Two probes at most.
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(p1.is_probe() && p2.is_probe());
    assert_eq!(b.try_acquire().unwrap_err().retry_after, Duration::ZERO);
    assert!(!b.is_available());
    // A cancelled probe gives its slot back.
    assert_eq!(b.record(p2, Outcome::Cancelled), None);
    let p3 = b.try_acquire().unwrap();
    assert_eq!(b.record(p1, Outcome::Success), Some(BreakerState::Closed));
    assert_eq!(b.state(), BreakerState::Closed);
    // The other probe's result belongs to the old state and is ignored.
    assert_eq!(b.record(p3, Outcome::Failure), None);
    assert_eq!(b.state(), BreakerState::Closed);
    // Closed again with a fresh streak.
    assert_eq!(fail(&b), None);
    assert_eq!(fail(&b), None);
    assert_eq!(fail(&b), Some(BreakerState::Open));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_another_cool_down() {
    let b = CircuitBreaker::new(config());
    for _ in 0..3 {
        fail(&b);
    }
    advance(Duration::from_secs(5)).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.record(probe, Outcome::Failure), Some(BreakerState::Open));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(5)
    );
    advance(Duration::from_secs(5)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn several_successes_may_be_required_to_close() {
    let b = CircuitBreaker::new(BreakerConfig {
        half_open_successes: 2,
        half_open_probes: 1,
        ..config()
    });
    for _ in 0..3 {
        fail(&b);
    }
    advance(Duration::from_secs(5)).await;
    assert_eq!(succeed(&b), None);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(succeed(&b), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn results_admitted_before_a_transition_do_not_count_after_it() {
    let b = CircuitBreaker::new(config());
    let late = b.try_acquire().unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    advance(Duration::from_secs(5)).await;
    // A success from before the breaker opened must not close it.
    assert_eq!(b.record(late, Outcome::Success), None);
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn breakers_are_per_instance_and_track_whether_all_are_closed() {
    let breakers = Breakers::new(config());
    let (a, b) = (breakers.breaker(), breakers.breaker());
    assert!(breakers.all_closed());
    for _ in 0..3 {
        fail(&a);
    }
    assert_eq!(a.state(), BreakerState::Open);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(!a.is_available());
    assert!(b.is_available());
    assert!(!breakers.all_closed());

    advance(Duration::from_secs(5)).await;
    assert!(!breakers.all_closed()); // half-open is not closed
    succeed(&a);
    assert!(breakers.all_closed());

    for _ in 0..3 {
        fail(&a);
    }
    // Forgetting an instance that left forgets its open breaker too.
    drop(a);
    assert!(breakers.all_closed());
    assert_eq!(breakers.len(), 1);
}

fn outlier_config() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(25),
        max_ejection_percent: 50,
    }
}

fn eject(o: &OutlierDetector, host: &OutlierHost, total: usize) -> Option<Duration> {
    let mut last = None;
    for _ in 0..3 {
        last = last.or(o.record(host, true, total));
    }
    last
}

#[tokio::test(start_paused = true)]
async fn outlier_ejection_is_temporary_and_grows_with_repeats_up_to_a_cap() {
    let o = OutlierDetector::new(outlier_config());
    let (a, b) = (o.host(), o.host());
    assert!(o.none_ejected());
    assert_eq!(o.record(&a, true, 4), None);
    assert_eq!(o.record(&a, false, 4), None); // a success resets the streak
    assert_eq!(o.record(&a, true, 4), None);
    assert_eq!(o.record(&a, true, 4), None);
    assert_eq!(o.record(&a, true, 4), Some(Duration::from_secs(10)));
    assert!(o.is_ejected(&a));
    assert!(!o.is_ejected(&b));

    advance(Duration::from_secs(10)).await;
    assert!(!o.is_ejected(&a), "ejection ends after its time");
    assert!(o.none_ejected());

    // Fails again at once: twice as long.
    assert_eq!(eject(&o, &a, 4), Some(Duration::from_secs(20)));
    advance(Duration::from_secs(20)).await;
    assert!(!o.is_ejected(&a));
    // And again: capped.
    assert_eq!(eject(&o, &a, 4), Some(Duration::from_secs(25)));
    advance(Duration::from_secs(25)).await;
    assert!(!o.is_ejected(&a));

    // Behaves for a long while: the multiplier drains back to the base.
    advance(Duration::from_secs(60)).await;
    assert_eq!(eject(&o, &a, 4), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn outlier_ejection_respects_the_max_ejection_percent() {
    let o = OutlierDetector::new(outlier_config());
    let (a, b, c) = (o.host(), o.host(), o.host());
    // 4 instances, 50 %: two may be ejected at once, not three.
    assert!(eject(&o, &a, 4).is_some());
    assert!(eject(&o, &b, 4).is_some());
    assert_eq!(eject(&o, &c, 4), None);
    assert!(!o.is_ejected(&c));
    // A lone instance is never ejected (there is nowhere else to go).
    let single = OutlierDetector::new(outlier_config());
    assert_eq!(eject(&single, &single.host(), 1), None);
    // Once a returns, c's next streak ejects it.
    advance(Duration::from_secs(10)).await;
    assert!(eject(&o, &c, 4).is_some());
    // An ejected instance that leaves (its state dropped) frees its place at once.
    drop(c);
    let d = o.host();
    assert!(eject(&o, &d, 4).is_some());
}

#[tokio::test(start_paused = true)]
async fn retry_policy_retries_only_what_it_should() {
    let policy = RetryPolicy::default().without_budget();
    let get = RetryPolicy::is_idempotent(&Method::GET);
    let post = RetryPolicy::is_idempotent(&Method::POST);
    assert!(get && !post);
    for m in [Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
        assert!(RetryPolicy::is_idempotent(&m), "{m}");
    }
    assert!(!RetryPolicy::is_idempotent(&Method::PATCH));

    for code in [502, 503, 504] {
        assert!(policy.decide(get, &FailureKind::Status(code), 1).is_retry());
        assert_eq!(
            policy.decide(post, &FailureKind::Status(code), 1),
            Decision::Stop(NoRetry::NotIdempotent)
        );
    }
    for code in [500, 400, 404, 429] {
        assert_eq!(
            policy.decide(get, &FailureKind::Status(code), 1),
            Decision::Stop(NoRetry::NotRetryable)
        );
    }
    // Connect errors: nothing was sent, so even a POST is retried.
    assert!(policy.decide(post, &FailureKind::Connect, 1).is_retry());
    assert!(policy.decide(get, &FailureKind::Transport, 1).is_retry());
    assert!(!policy.decide(post, &FailureKind::Transport, 1).is_retry());
    assert_eq!(
        policy.decide(get, &FailureKind::Timeout, 1),
        Decision::Stop(NoRetry::NotRetryable)
    );
    assert!(policy
        .clone()
        .retry_timeouts(true)
        .decide(get, &FailureKind::Timeout, 1)
        .is_retry());
    // Three attempts in all.
    assert!(policy.decide(get, &FailureKind::Connect, 2).is_retry());
    assert_eq!(
        policy.decide(get, &FailureKind::Connect, 3),
        Decision::Stop(NoRetry::AttemptsExhausted)
    );
    // Opting out of the idempotency rule.
    assert!(policy
        .clone()
        .idempotent_only(false)
        .decide(post, &FailureKind::Status(503), 1)
        .is_retry());
}

#[test]
fn backoff_grows_exponentially_with_bounded_jitter() {
    let exact = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(500),
        jitter: Jitter::None,
    };
    let delays: Vec<u64> = (1..=7).map(|r| exact.delay(r).as_millis() as u64).collect();
    assert_eq!(delays, [20, 40, 80, 160, 320, 500, 500]);
    let equal = Backoff {
        jitter: Jitter::Equal,
        ..exact
    };
    let full = Backoff {
        jitter: Jitter::Full,
        ..exact
    };
    for r in 1..=7 {
        for _ in 0..100 {
            let d = equal.delay(r);
            assert!(d >= exact.delay(r) / 2 && d <= exact.delay(r), "{d:?}");
            assert!(full.delay(r) <= exact.delay(r));
        }
    }
    assert_eq!(exact.delay(u32::MAX), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn retry_budget_bounds_retries_to_the_ratio_plus_the_reserve() {
    let budget = RetryBudget::new(0.2, 5, Duration::from_secs(10));
    let mut retries = 0;
    // 100 requests, all failing, each wanting up to 2 retries.
    for _ in 0..100 {
        budget.deposit();
        for _ in 0..2 {
            if budget.try_withdraw() {
                retries += 1;
            }
        }
    }
    assert_eq!(retries, 20 + 5);
    assert!(!budget.try_withdraw());

    // The reserve refills at min_per_sec.
    advance(Duration::from_secs(1)).await;
    assert_eq!(budget.available(), 5);
    // Deposits expire after the ttl.
    let fresh = RetryBudget::new(0.5, 0, Duration::from_secs(10));
    for _ in 0..10 {
        fresh.deposit();
    }
    assert_eq!(fresh.available(), 5);
    advance(Duration::from_secs(11)).await;
    assert_eq!(fresh.available(), 0);
    assert!(!fresh.try_withdraw());
}

#[tokio::test(start_paused = true)]
async fn retry_policy_stops_when_the_budget_is_spent() {
    let budget = std::sync::Arc::new(RetryBudget::new(0.2, 0, Duration::from_secs(10)));
    let policy = RetryPolicy::default().budget_with(budget.clone());
    for _ in 0..5 {
        budget.deposit();
    }
    assert!(policy.decide(true, &FailureKind::Connect, 1).is_retry());
    assert_eq!(
        policy.decide(true, &FailureKind::Connect, 1),
        Decision::Stop(NoRetry::BudgetExhausted)
    );
}
