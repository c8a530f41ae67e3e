//! The one exponential backoff: delays that double from a base up to a cap, with optional
//! jitter. Retries ([`crate::retry`]), watch reconnection ([`crate::discovery`]), heartbeat
//! retries ([`crate::registration`]) and the CLI's `watch` all wait with it.
//!
//! [`Backoff`] is the policy (a pure function of the attempt number and, for jitter, a random
//! draw); [`Reconnect`] counts the failures of a connection and hands out the next delay.

use std::time::Duration;

/// How jitter spreads a backoff `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`: spread out, yet never a zero wait.
    Equal,
}

/// Exponential backoff: `base × 2^(retry − 1)`, capped at `max`, then jittered.
///
/// ```
/// use std::time::Duration;
/// use signpost_client::backoff::{Backoff, Jitter};
///
/// let backoff = Backoff { base: Duration::from_millis(10), max: Duration::from_millis(50), jitter: Jitter::None };
/// assert_eq!(backoff.delay(1), Duration::from_millis(10));
/// assert_eq!(backoff.delay(3), Duration::from_millis(40));
/// assert_eq!(backoff.delay(10), Duration::from_millis(50));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How the wait is randomised.
    pub jitter: Jitter,
}

impl Default for Backoff {
    /// 25 ms doubling up to 1 s, equal jitter.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_secs(1),
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, rand::random::<f64>())
    }

    /// The wait before retry number `retry` with the random draw given: `unit` in `[0, 1]`
    /// picks the point in the jitter range (0 the shortest wait, 1 the longest). Pure, so
    /// tests can pin the jitter.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let d = self.cap(retry);
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => d.mul_f64(unit),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(unit),
        }
    }

    /// The wait before retry number `retry` before jitter: `base × 2^(retry − 1)`, at most
    /// `max`.
    pub fn cap(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// The failures of one connection so far, and so the wait before the next attempt: each
/// [`Reconnect::next_delay`] waits longer (as [`Backoff`] says), and [`Reconnect::reset`] once
/// the connection works again starts over from the base.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// The policy.
    backoff: Backoff,
    /// Failures since the last reset.
    failures: u32,
}

impl Reconnect {
    /// No failures yet.
    pub fn new(backoff: Backoff) -> Self {
        Reconnect {
            backoff,
            failures: 0,
        }
    }

    /// Counts a failure and returns how long to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// The connection works again: the next failure waits the base delay.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_to_the_cap() {
        let b = Backoff {
            base: 200 * MS,
            max: Duration::from_secs(5),
            jitter: Jitter::None,
        };
        let delays: Vec<u128> = (1..=8).map(|r| b.delay(r).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // Huge retry numbers neither overflow nor pass the cap.
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(b.delay(0), 200 * MS, "retry 0 is treated as the first");
    }

    #[test]
    fn jitter_spans_its_range() {
        let b = |jitter| Backoff {
            base: 100 * MS,
            max: Duration::from_secs(10),
            jitter,
        };
        assert_eq!(b(Jitter::Full).delay_with(3, 0.0), Duration::ZERO);
        assert_eq!(b(Jitter::Full).delay_with(3, 1.0), 400 * MS);
        assert_eq!(b(Jitter::Full).delay_with(3, 0.25), 100 * MS);
        assert_eq!(b(Jitter::Equal).delay_with(3, 0.0), 200 * MS);
        assert_eq!(b(Jitter::Equal).delay_with(3, 1.0), 400 * MS);
        assert_eq!(b(Jitter::None).delay_with(3, 0.3), 400 * MS);
        // Draws outside [0, 1] are clamped.
        assert_eq!(b(Jitter::Full).delay_with(3, 7.0), 400 * MS);
    }

    #[test]
    fn random_jitter_stays_under_the_doubling_cap_and_varies() {
        let b = Backoff {
            base: 100 * MS,
            max: Duration::from_secs(10),
            jitter: Jitter::Full,
        };
        for retry in 1..40 {
            let cap = (100 * MS * 2u32.saturating_pow((retry - 1).min(20))).min(b.max);
            assert_eq!(b.cap(retry), cap);
            for _ in 0..50 {
                assert!(b.delay(retry) <= cap);
            }
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| b.delay(10)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn reconnect_counts_failures_and_resets() {
        let mut r = Reconnect::new(Backoff {
            base: 200 * MS,
            max: Duration::from_secs(5),
            jitter: Jitter::None,
        });
        let delays: Vec<u128> = (0..8).map(|_| r.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(r.failures(), 8);
        r.reset();
        assert_eq!(r.failures(), 0);
        assert_eq!(r.next_delay(), 200 * MS);
    }
}
