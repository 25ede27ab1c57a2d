//! The whole-request timeout, kept by timers that are reused from request to request.
//!
//! `tokio::time::timeout` makes a timer per call: it is put into the runtime's timer wheel under
//! the driver's lock when the request first waits, and taken out under the lock again when the
//! request ends, nearly always long before it would fire. On a proxied request that was a
//! tenth of the gateway's own cost. A timer that is already in the wheel and has not fired can
//! be moved to a later deadline with one atomic exchange (tokio re-files it only when the wheel
//! reaches its old slot), and every request's deadline is later than the one before it, so
//! each worker keeps the timers of finished requests and hands them to the next ones.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use thread_local::ThreadLocal;
use tokio::time::{Instant, Sleep};

/// Timers kept per worker thread: about the requests a worker has in flight at once.
const MAX_IDLE_TIMERS: usize = 1024;

/// Idle timers, per worker thread: a timer belongs to the runtime that made it.
#[derive(Default)]
pub(crate) struct RequestTimers {
    idle: ThreadLocal<RefCell<Vec<Pin<Box<Sleep>>>>>,
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl RequestTimers {
    /// Runs `future` for at most `timeout`, as `tokio::time::timeout` does.
    pub(crate) fn within<F: Future>(&self, timeout: Duration, future: F) -> Within<'_, F> {
        Within {
            future,
            deadline: Instant::now() + timeout,
            timer: None,
            timers: self,
        }
    }

    fn take(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        let reused = self.idle.get().and_then(|idle| idle.borrow_mut().pop());
        match reused {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    fn give_back(&self, timer: Pin<Box<Sleep>>) {
        let mut idle = self.idle.get_or_default().borrow_mut();
        if idle.len() < MAX_IDLE_TIMERS {
            idle.push(timer);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future under a deadline. A named type, not an `async fn`: the future it wraps is
    /// kept once, in place, where an `async fn` held a second copy of it, and the whole
    /// request's future, which hyper moves, grew by that much. The timer is taken when the future
    /// first has to wait: one that finishes at once needs none.
    pub(crate) struct Within<'t, F> {
        #[pin]
        future: F,
        deadline: Instant,
        timer: Option<Pin<Box<Sleep>>>,
        timers: &'t RequestTimers,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            // A timer that fired is re-filed by its next reset, like a new one: it may go back.
            if let Some(timer) = this.timer.take() {
                this.timers.give_back(timer);
            }
            return Poll::Ready(Ok(output));
        }
        let timer = this
            .timer
            .get_or_insert_with(|| this.timers.take(*this.deadline));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if let Some(timer) = this.timer.take() {
                    this.timers.give_back(timer);
                }
                Poll::Ready(Err(Elapsed))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_future_that_outlives_its_deadline_is_cut_off_and_one_within_it_is_not() {
        let timers = RequestTimers::default();
        let slow = tokio::time::sleep(Duration::from_secs(31));
        assert_eq!(
            timers.within(Duration::from_secs(30), slow).await,
            Err(Elapsed)
        );
        // The timer that fired serves again, with a deadline of its own.
        let quick = async {
            tokio::time::sleep(Duration::from_secs(29)).await;
            7
        };
        assert_eq!(timers.within(Duration::from_secs(30), quick).await, Ok(7));
        // A reused timer keeps the new deadline, not the old one: 29 s passed above, so the
        // first timer's deadline is long gone, and this request has its whole 30 s again.
        let again = tokio::time::sleep(Duration::from_secs(29));
        assert_eq!(timers.within(Duration::from_secs(30), again).await, Ok(()));
        let late = tokio::time::sleep(Duration::from_secs(30) + Duration::from_millis(1));
        assert_eq!(
            timers.within(Duration::from_secs(30), late).await,
            Err(Elapsed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finished_requests_leave_their_timer_for_the_next() {
        let timers = RequestTimers::default();
        let idle = |timers: &RequestTimers| timers.idle.get().map(|idle| idle.borrow().len());
        // Ready at once: no timer was needed.
        assert_eq!(
            timers.within(Duration::from_secs(5), async {}).await,
            Ok(())
        );
        assert_eq!(idle(&timers), None);
        for _ in 0..3 {
            let waits = tokio::task::yield_now();
            assert_eq!(timers.within(Duration::from_secs(5), waits).await, Ok(()));
        }
        assert_eq!(idle(&timers), Some(1));
    }
}
