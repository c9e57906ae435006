//! A timer for any [`Runtime`]: a one-shot `timerfd` whose readiness the runtime's reactor
//! reports, so pacing code (pcap replay, rate limits) needs no runtime-specific timer type.

use std::fmt;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Runtime, poll_until};
use crate::error::{Error, Result};
use crate::sys::epoll::{arm_timerfd, read_timerfd, timerfd};

/// A deadline on the monotonic clock that completes as a future once it has passed, woken by the
/// runtime `R`'s reactor (a `CLOCK_MONOTONIC` timerfd registered through [`Runtime::register`]).
///
/// One `Timer` can be re-armed with [`reset`](Self::reset) as often as needed, which costs one
/// system call; a new `Timer` costs a descriptor and a registration, so loops that wait many times
/// should keep one. Awaiting `&mut timer` (or [`poll_expired`](Self::poll_expired)) is cancel-safe:
/// dropping the wait loses nothing, and dropping the `Timer` closes its descriptor and deregisters
/// it, so no wakeup arrives afterwards. Once expired, it stays ready until it is reset.
///
/// Create it from inside the runtime (`R::register` needs the reactor); [`sleep`] does that on
/// its first poll.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use netring::runtime::{Runtime, Timer};
///
/// /// Ticks every 10 ms, scheduled against the start so that lateness does not add up.
/// async fn ticks<R: Runtime>() -> netring::Result<()> {
///     let start = Instant::now();
///     let mut timer = Timer::<R>::at(start)?;
///     for i in 1..=5u32 {
///         timer.reset(start + Duration::from_millis(10) * i)?;
///         (&mut timer).await?;
///     }
///     Ok(())
/// }
/// ```
pub struct Timer<R: Runtime> {
    // Declared first so it deregisters before the timerfd it duplicates closes.
    reg: R::Registration,
    clock: Clock,
}

/// The timerfd and the deadline it is armed for.
struct Clock {
    fd: OwnedFd,
    deadline: Instant,
}

impl<R: Runtime> Timer<R> {
    /// A timer expiring at `deadline` (at once if it has passed).
    pub fn at(deadline: Instant) -> Result<Self> {
        let fd = timerfd().map_err(|e| Error::os("creating a timerfd", e))?;
        let dup = fd
            .try_clone()
            .map_err(|e| Error::os("duplicating a timerfd", e))?;
        let mut timer = Self {
            reg: R::register(dup)?,
            clock: Clock { fd, deadline },
        };
        timer.reset(deadline)?;
        Ok(timer)
    }

    /// A timer expiring `after` from now.
    pub fn after(after: Duration) -> Result<Self> {
        Self::at(deadline_after(after))
    }

    /// Re-arms the timer for `deadline`, replacing the previous one (expired or not).
    pub fn reset(&mut self, deadline: Instant) -> Result<()> {
        self.clock.deadline = deadline;
        // Relative to a `now` read before arming: the timerfd (same monotonic clock as `Instant`)
        // cannot expire before `deadline`. An expiry still pending from an earlier deadline is
        // discarded by the kernel when the timer is re-armed.
        let left = deadline.saturating_duration_since(Instant::now());
        arm_timerfd(self.clock.fd.as_fd(), left).map_err(|e| Error::os("arming a timerfd", e))
    }

    /// The deadline the timer is armed for.
    pub fn deadline(&self) -> Instant {
        self.clock.deadline
    }

    /// True once the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.clock.deadline
    }

    /// `Ready` once the deadline has passed; `Pending` otherwise, with `cx`'s waker registered for
    /// the timer's expiry.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_until::<R, _>(
            &self.reg,
            cx,
            &mut self.clock,
            |c| Ok(Instant::now() >= c.deadline),
            |c| {
                read_timerfd(c.fd.as_fd())
                    .map(drop)
                    .map_err(|e| Error::os("reading a timerfd", e))
            },
        )
    }
}

impl<R: Runtime> Future for Timer<R> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_expired(cx)
    }
}

impl<R: Runtime> fmt::Debug for Timer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("deadline", &self.clock.deadline)
            .finish_non_exhaustive()
    }
}

/// `now + after`, or a deadline decades away if that overflows the clock.
fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Waits for `duration` on the runtime `R`, measured from this call. The timer is created on the
/// first poll, so the future may be made outside the runtime but must be awaited inside it.
///
/// ```no_run
/// use std::time::Duration;
/// use netring::runtime::{Runtime, sleep};
///
/// async fn later<R: Runtime>() -> netring::Result<()> {
///     sleep::<R>(Duration::from_millis(50)).await?;
///     println!("50 ms later");
///     Ok(())
/// }
/// ```
pub fn sleep<R: Runtime>(duration: Duration) -> impl Future<Output = Result<()>> + Send + 'static {
    sleep_until::<R>(deadline_after(duration))
}

/// Waits until `deadline` on the runtime `R` (at once if it has passed); see [`sleep`].
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use netring::runtime::{Runtime, sleep_until};
///
/// async fn at_the_mark<R: Runtime>(start: Instant) -> netring::Result<()> {
///     sleep_until::<R>(start + Duration::from_secs(1)).await
/// }
/// ```
pub async fn sleep_until<R: Runtime>(deadline: Instant) -> Result<()> {
    Timer::<R>::at(deadline)?.await
}

#[cfg(all(test, feature = "tokio", feature = "smol"))]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;
    use crate::runtime::{Smol, Tokio};

    /// Counts wakeups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const MS: Duration = Duration::from_millis(1);

    async fn scenario<R: Runtime>() {
        // Fires once, not before its deadline.
        let t0 = Instant::now();
        let mut timer = Timer::<R>::after(30 * MS).unwrap();
        assert!(!timer.is_expired());
        (&mut timer).await.unwrap();
        assert!(t0.elapsed() >= 30 * MS, "expired after {:?}", t0.elapsed());
        // Stays expired until reset.
        (&mut timer).await.unwrap();
        assert!(t0.elapsed() < 5000 * MS);

        // Re-armed, it waits again: for the new deadline, not an old expiry.
        let t1 = Instant::now();
        timer.reset(t1 + 40 * MS).unwrap();
        assert!(!timer.is_expired());
        (&mut timer).await.unwrap();
        assert!(t1.elapsed() >= 40 * MS);

        // Re-armed further out while a wait is pending: the wait follows the new deadline.
        let t2 = Instant::now();
        timer.reset(t2 + 10 * MS).unwrap();
        {
            let waker = Arc::new(Count(AtomicUsize::new(0))).into();
            let mut cx = Context::from_waker(&waker);
            assert!(timer.poll_expired(&mut cx).is_pending());
        }
        timer.reset(t2 + 60 * MS).unwrap();
        (&mut timer).await.unwrap();
        assert!(t2.elapsed() >= 60 * MS);

        // A deadline in the past is ready at once.
        let mut past = Timer::<R>::at(Instant::now() - 10 * MS).unwrap();
        let waker = Arc::new(Count(AtomicUsize::new(0))).into();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(past.poll_expired(&mut cx), Poll::Ready(Ok(()))));

        // Cancel safety: a pending wait dropped, then the timer dropped before its deadline; the
        // waker it registered is never called, and new timers keep working.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        {
            let waker = count.clone().into();
            let mut cx = Context::from_waker(&waker);
            let mut dropped = Timer::<R>::after(20 * MS).unwrap();
            {
                let mut wait = pin!(&mut dropped);
                assert!(wait.as_mut().poll(&mut cx).is_pending());
            }
            assert!(dropped.poll_expired(&mut cx).is_pending());
        }
        sleep::<R>(80 * MS).await.unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "a dropped timer woke its task"
        );

        // `sleep` and `sleep_until`.
        let t3 = Instant::now();
        sleep::<R>(25 * MS).await.unwrap();
        assert!(t3.elapsed() >= 25 * MS);
        sleep_until::<R>(t3 + 50 * MS).await.unwrap();
        assert!(t3.elapsed() >= 50 * MS);
    }

    #[test]
    fn timer_on_tokio_current_thread() {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
            .block_on(scenario::<Tokio>());
    }

    #[test]
    fn timer_on_tokio_multi_thread() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .unwrap()
            .block_on(scenario::<Tokio>());
    }

    #[test]
    fn timer_on_smol() {
        smol::block_on(scenario::<Smol>());
    }

    #[test]
    fn outside_a_tokio_runtime_is_an_error() {
        assert!(matches!(
            Timer::<Tokio>::after(MS),
            Err(Error::NoRuntime { runtime: "tokio" })
        ));
    }
}
