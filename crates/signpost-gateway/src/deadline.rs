//! Response deadlines without a timer per request.
//!
//! Every HTTP/1.1 exchange waits for its response head within the route's timeout. Arming a
//! tokio timer per request puts an entry in the timer wheel and takes it out again, which on a
//! fast proxy path costs as much as the routing. A [`Deadline`] instead keeps one timer per
//! client connection and re-arms it lazily: while requests follow each other, the timer stays
//! armed for an earlier request's deadline; when it fires, the current request's deadline is
//! compared and the timer re-armed for it if it has not passed. So a connection re-arms about
//! once per timeout period, not once per request. [`DeadlineSlot`] holds a connection's timer
//! between requests (requests that run side by side, on HTTP/2, each take their own).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use tokio::time::{Instant, Sleep};

/// A timer that can wait for successive, mostly later, deadlines.
#[derive(Debug)]
pub(crate) struct Deadline {
    /// The timer (boxed once: `Sleep` is not `Unpin`).
    sleep: Pin<Box<Sleep>>,
    /// What `sleep` is set for.
    armed: Instant,
}

impl Deadline {
    /// A timer armed for `deadline`.
    pub(crate) fn new(deadline: Instant) -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            armed: deadline,
        }
    }

    /// Ready once `deadline` has passed; registers `cx` to be woken then.
    pub(crate) fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if deadline < self.armed {
            self.rearm(deadline);
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            // The timer fired at `armed`: that is this deadline or a later one (expired), or an
            // earlier request's (re-arm and wait on).
            if self.armed >= deadline {
                return Poll::Ready(());
            }
            self.rearm(deadline);
        }
    }

    fn rearm(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.armed = deadline;
    }
}

/// Where a connection keeps its [`Deadline`] between requests.
#[derive(Debug, Default)]
pub(crate) struct DeadlineSlot(Mutex<Option<Deadline>>);

impl DeadlineSlot {
    /// The connection's timer, or a new one if it has none or another request holds it.
    pub(crate) fn take(&self, deadline: Instant) -> Deadline {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| Deadline::new(deadline))
    }

    /// Gives the timer back for the connection's next request.
    pub(crate) fn put(&self, timer: Deadline) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(timer);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Polls `timer` for `deadline` once, with a waker that does nothing.
    fn expired(timer: &mut Deadline, deadline: Instant) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        timer.poll_until(deadline, &mut cx).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn expires_at_its_deadline_not_before() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let mut timer = Deadline::new(deadline);
        assert!(!expired(&mut timer, deadline));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(!expired(&mut timer, deadline));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut timer, deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_waits_past_the_earlier_one() {
        let start = Instant::now();
        let first = start + Duration::from_secs(5);
        let mut timer = Deadline::new(first);
        assert!(!expired(&mut timer, first));
        // The next request, 3 s later, has its own 5 s.
        tokio::time::advance(Duration::from_secs(3)).await;
        let second = start + Duration::from_secs(8);
        assert!(!expired(&mut timer, second));
        // The timer fires at the first deadline; the second has not passed.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!expired(&mut timer, second));
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert!(!expired(&mut timer, second));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut timer, second));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_rearms_the_timer() {
        let start = Instant::now();
        let mut timer = Deadline::new(start + Duration::from_secs(30));
        let short = start + Duration::from_millis(100);
        assert!(!expired(&mut timer, short));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(expired(&mut timer, short));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_task_is_woken_at_the_deadline() {
        let start = Instant::now();
        let mut timer = Deadline::new(start + Duration::from_secs(1));
        let deadline = start + Duration::from_secs(2);
        // An earlier request's deadline passes while this one waits: it must not wake early
        // for good, and must wake at its own.
        std::future::poll_fn(|cx| timer.poll_until(deadline, cx)).await;
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn the_slot_hands_the_timer_back_and_makes_one_when_taken() {
        let slot = DeadlineSlot::default();
        let first = Instant::now() + Duration::from_secs(1);
        let second = first + Duration::from_secs(1);
        let timer = slot.take(first);
        assert_eq!(timer.armed, first, "an empty slot makes a timer");
        // Held by one request: another gets its own, armed for its deadline.
        let other = slot.take(second);
        assert_eq!(other.armed, second);
        slot.put(timer);
        // The next request gets the timer back, still armed for the first deadline.
        let again = slot.take(second);
        assert_eq!(again.armed, first, "the slot handed the kept timer back");
        assert!(slot.0.lock().unwrap().is_none());
    }
}
