//! tokio: readiness through `AsyncFd`.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Runtime, Trigger};
use crate::error::{Error, Result};

/// The tokio runtime (feature `tokio`). Rings must be made async inside a tokio runtime with IO
/// enabled (`enable_io` / `enable_all`); any flavour, current-thread or multi-thread.
///
/// ```no_run
/// # async fn f() -> netring::Result<()> {
/// use futures::StreamExt;
/// use netring::{AsyncCapture, Capture, runtime::Tokio};
///
/// let mut rx = AsyncCapture::<Tokio>::new(Capture::open("eth0")?)?;
/// while let Some(batch) = rx.next().await {
///     println!("{} packets", batch?.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Registration = AsyncFd<OwnedFd>;

    /// mio registers every descriptor with `EPOLLET`.
    const TRIGGER: Trigger = Trigger::Edge;

    fn register(fd: OwnedFd) -> Result<Self::Registration> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime { runtime: "tokio" });
        }
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd), so the descriptor stays open and refers to
        // the same epoll instance until the AsyncFd is dropped; `as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| Error::os("registering with the tokio reactor", e.into_parts().1))
    }

    fn poll_readable(reg: &Self::Registration, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match reg.poll_read_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                // The caller drains every pending event next; the following readiness needs a new
                // edge from the kernel.
                guard.clear_ready();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}
