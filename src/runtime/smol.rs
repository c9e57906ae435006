//! smol: readiness through `async_io::Async`.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};

use async_io::Async;

use super::{Runtime, Trigger};
use crate::error::{Error, Result};

/// The smol runtime, or anything driven by `async-io`'s reactor (feature `smol`).
///
/// ```no_run
/// use futures::StreamExt;
/// use netring::{AsyncCapture, Capture, runtime::Smol};
///
/// smol::block_on(async {
///     let mut rx = AsyncCapture::<Smol>::new(Capture::open("eth0")?)?;
///     if let Some(batch) = rx.next().await {
///         println!("{} packets", batch?.len());
///     }
///     Ok::<(), netring::Error>(())
/// })?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Registration = Async<OwnedFd>;

    /// async-io registers every descriptor with `EPOLLONESHOT` and re-arms it (`EPOLL_CTL_MOD`,
    /// which checks readiness at once) when a task waits again after an event.
    const TRIGGER: Trigger = Trigger::Level;

    fn register(fd: OwnedFd) -> Result<Self::Registration> {
        Async::new(fd).map_err(|e| Error::os("registering with the async-io reactor", e))
    }

    fn poll_readable(reg: &Self::Registration, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        reg.poll_readable(cx)
    }
}
