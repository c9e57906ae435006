//! Readiness from an async runtime, behind one small trait.
//!
//! The rings never talk to a runtime directly. Each ring exposes one descriptor (an edge-triggered
//! epoll instance watching its socket and a timer) that is readable while the ring has an event
//! pending; a [`Runtime`] only has to say when that descriptor becomes readable. Adding a runtime
//! means one new file implementing this trait.
//!
//! A runtime that states how its reactor triggers ([`Runtime::TRIGGER`]) saves the capture a
//! system call per retired block: an edge-triggered reactor watches the packet socket itself (and
//! a second descriptor for errors and the timer), so nothing is left to collect after a wakeup; a
//! level-triggered or one-shot reactor re-reports whatever is still pending when it re-arms, so the
//! capture collects only when a wakeup brought no new block.
//!
//! | feature | type | reactor |
//! |---|---|---|
//! | `tokio` | `Tokio` | `tokio::io::unix::AsyncFd` |
//! | `smol` | `Smol` | `async_io::Async` |

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};

use crate::error::{Error, Result};

#[cfg(feature = "smol")]
mod smol;
mod timer;
#[cfg(feature = "tokio")]
mod tokio;

#[cfg(feature = "smol")]
pub use self::smol::Smol;
pub use self::timer::{Timer, sleep, sleep_until};
#[cfg(feature = "tokio")]
pub use self::tokio::Tokio;

/// An async runtime's reactor, as far as the rings need one.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::task::{Context, Poll};
///
/// /// A runtime that polls nothing: every readiness check says "pending".
/// struct Never;
///
/// impl netring::runtime::Runtime for Never {
///     type Registration = OwnedFd;
///     fn register(fd: OwnedFd) -> netring::Result<OwnedFd> {
///         Ok(fd)
///     }
///     fn poll_readable(_: &OwnedFd, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
///         Poll::Pending
///     }
/// }
/// ```
pub trait Runtime: Send + Sync + 'static {
    /// A descriptor registered with the reactor; dropping it deregisters.
    type Registration: Send + Sync + Unpin + 'static;

    /// How the reactor reports readiness. The default, [`Trigger::Unspecified`], is correct for
    /// any reactor; stating the real behaviour lets the capture skip work it would otherwise do
    /// on every retired block. A wrong statement loses wakeups ([`Trigger::Level`] on an
    /// edge-triggered reactor) or spins ([`Trigger::Edge`] on a level-triggered one).
    const TRIGGER: Trigger = Trigger::Unspecified;

    /// Registers `fd` (a ring's readiness descriptor, owned by the registration) for readability.
    fn register(fd: OwnedFd) -> Result<Self::Registration>;

    /// `Ready` once the descriptor has become readable since the previous `Ready` (the caller then
    /// collects the events and re-checks the ring); `Pending` otherwise, with `cx`'s waker
    /// registered for the next readiness.
    fn poll_readable(reg: &Self::Registration, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// How a reactor reports that a registered descriptor is readable (see [`Runtime::TRIGGER`]).
///
/// ```
/// use netring::runtime::{Runtime, Trigger};
///
/// fn describe<R: Runtime>() -> &'static str {
///     match R::TRIGGER {
///         Trigger::Edge => "edge-triggered: the capture watches its socket directly",
///         Trigger::Level => "level-triggered or re-armed one-shot",
///         _ => "not stated: the capture collects its events after every wakeup",
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trigger {
    /// Not stated: the capture assumes nothing and collects the ring's pending events after
    /// every wakeup (one system call each time).
    #[default]
    Unspecified,
    /// Once per new event, however long the descriptor stays readable (epoll with `EPOLLET`, as
    /// tokio's reactor). The capture registers its packet socket itself, which signals once per
    /// retired block and needs nothing collected, plus a descriptor that is readable only for
    /// socket errors and the capture's timer.
    Edge,
    /// Whenever the task waits while the descriptor is readable: level-triggered, or one-shot
    /// and re-armed each time the task waits again, with the kernel checking readiness as it
    /// re-arms (epoll `EPOLLONESHOT` plus `EPOLL_CTL_MOD`, as async-io's reactor). After a
    /// wakeup that the capture has already answered with a block, it skips collecting: anything
    /// else still pending is reported again when the reactor re-arms, and collected then.
    Level,
}

/// Drives a ring until `ready` says yes: checks, and while it says no, waits for the runtime to
/// report the ring's readiness descriptor, lets `collect` take the pending events, and checks
/// again. One more check after registering the waker closes the race with an event that landed in
/// between. Shared by every async TX path.
pub(crate) fn poll_until<R: Runtime, T>(
    reg: &R::Registration,
    cx: &mut Context<'_>,
    ring: &mut T,
    ready: impl Fn(&mut T) -> Result<bool>,
    collect: impl Fn(&mut T) -> Result<()>,
) -> Poll<Result<()>> {
    loop {
        if ready(ring)? {
            return Poll::Ready(Ok(()));
        }
        match R::poll_readable(reg, cx) {
            Poll::Ready(Ok(())) => collect(ring)?,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::os("runtime readiness", e))),
            Poll::Pending => {
                return if ready(ring)? {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
        }
    }
}
