//! Readiness from an async runtime, behind one small trait.
//!
//! The rings never talk to a runtime directly. Each ring exposes one descriptor (an edge-triggered
//! epoll instance watching its socket and a timer) that is readable while the ring has an event
//! pending; a [`Runtime`] only has to say when that descriptor becomes readable. Adding a runtime
//! means one new file implementing this trait.
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

    /// Registers `fd` (a ring's readiness descriptor, owned by the registration) for readability.
    fn register(fd: OwnedFd) -> Result<Self::Registration>;

    /// `Ready` once the descriptor has become readable since the previous `Ready` (the caller then
    /// collects the events and re-checks the ring); `Pending` otherwise, with `cx`'s waker
    /// registered for the next readiness.
    fn poll_readable(reg: &Self::Registration, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
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
