//! An edge-triggered epoll instance watching one descriptor.
//!
//! Edge triggering matters for TPACKET_V3: the kernel reports a packet socket readable while the
//! block *before* its current one is not yet returned, so a level-triggered wait spins for as long
//! as the user holds the newest batch. With `EPOLLET` a wait ends only when the kernel signals a
//! new event (a block retired, an error), which is exactly when there can be something new.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Epoll {
    epfd: OwnedFd,
}

impl Epoll {
    /// Creates an epoll instance watching `fd` for `events` (edge-triggered).
    pub(crate) fn watch(fd: BorrowedFd<'_>, events: u32) -> io::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is new.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epfd` was just returned by epoll_create1 and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let mut ev = libc::epoll_event {
            events: events | libc::EPOLLET as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are valid and `ev` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { epfd })
    }

    /// Waits for an event; returns its mask, or 0 on timeout. `EINTR` counts as a timeout-free
    /// early return (0) so callers re-check their state.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<u32> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is one writable epoll_event and maxevents is 1.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                &mut ev,
                1,
                super::timeout_ms(timeout),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        Ok(if n == 0 { 0 } else { ev.events })
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epfd.as_fd()
    }
}
