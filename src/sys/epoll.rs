//! An edge-triggered epoll instance watching one socket, plus a one-shot timer.
//!
//! Edge triggering matters for TPACKET_V3: the kernel reports a packet socket readable while the
//! block *before* its current one is not yet returned, so a level-triggered wait spins for as long
//! as the user holds the newest batch. With `EPOLLET` a wait ends only when the kernel signals a
//! new event (a block retired, an error, a TX completion), which is exactly when there can be
//! something new.
//!
//! The epoll descriptor is also the one readiness source the async runtimes watch: it is readable
//! while an event is pending, for the socket or for the timer (used to bound how long a pending
//! error waits for the last partly filled block).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

const SOCKET_TOKEN: u64 = 0;
const TIMER_TOKEN: u64 = 1;

/// What one wait saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Events {
    /// `EPOLL*` bits reported for the socket (0 if none).
    pub socket: u32,
    /// The timer expired.
    pub timer: bool,
}

#[derive(Debug)]
pub(crate) struct Epoll {
    epfd: OwnedFd,
    timer: OwnedFd,
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn add(epfd: &OwnedFd, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: events | libc::EPOLLET as u32,
        u64: token,
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
    Ok(())
}

impl Epoll {
    /// Creates an epoll instance watching `fd` for `events` (edge-triggered), with a disarmed timer.
    pub(crate) fn watch(fd: BorrowedFd<'_>, events: u32) -> io::Result<Self> {
        // SAFETY: plain syscalls creating new descriptors.
        let epfd = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let timer = timerfd()?;
        add(&epfd, fd, events, SOCKET_TOKEN)?;
        add(&epfd, timer.as_fd(), libc::EPOLLIN as u32, TIMER_TOKEN)?;
        Ok(Self { epfd, timer })
    }

    /// Waits for events, up to `timeout` (`None`: forever; zero: just collect). `EINTR` returns
    /// no events so callers re-check their state.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Events> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: `evs` holds 2 writable epoll_events and maxevents is 2.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                evs.as_mut_ptr(),
                2,
                super::timeout_ms(timeout),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(Events::default());
            }
            return Err(err);
        }
        let mut out = Events::default();
        for ev in &evs[..n as usize] {
            match ev.u64 {
                SOCKET_TOKEN => out.socket |= ev.events,
                _ => {
                    out.timer = true;
                    // Only resets the expiry count; the event already says it expired.
                    let _ = read_timerfd(self.timer.as_fd());
                }
            }
        }
        Ok(out)
    }

    /// Puts `fd` (the socket given to [`watch`](Self::watch)) back on the set after
    /// [`unwatch_socket`](Self::unwatch_socket). Whatever is already pending is reported at once.
    pub(crate) fn watch_socket(&self, fd: BorrowedFd<'_>, events: u32) -> io::Result<()> {
        add(&self.epfd, fd, events, SOCKET_TOKEN)
    }

    /// Takes the socket off the set. While on it, the socket's wait queue holds an entry, and the
    /// kernel runs a wakeup for each of its events (an AF_XDP socket in copy mode: every frame
    /// it transmits); off it, nothing.
    pub(crate) fn unwatch_socket(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are valid; EPOLL_CTL_DEL ignores the event argument.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Arms the one-shot timer to expire after `after` (replacing any earlier setting).
    pub(crate) fn arm_timer(&self, after: Duration) -> io::Result<()> {
        arm_timerfd(self.timer.as_fd(), after)
    }
}

impl AsFd for Epoll {
    /// The epoll descriptor: readable while an event is pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epfd.as_fd()
    }
}

/// A non-blocking, close-on-exec `CLOCK_MONOTONIC` timerfd, disarmed.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall creating a new descriptor.
    owned(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    })
}

/// Arms a timerfd to expire once, `after` from now (at least 1 ns: zero would disarm it),
/// replacing any earlier setting and resetting its expiry count.
pub(crate) fn arm_timerfd(timer: BorrowedFd<'_>, after: Duration) -> io::Result<()> {
    let after = after.max(Duration::from_nanos(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not requested (null).
    let rc = unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes a non-blocking timerfd's expiry count: how often it expired since the last read or
/// arming (0 if not yet).
pub(crate) fn read_timerfd(timer: BorrowedFd<'_>) -> io::Result<u64> {
    let mut ticks = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `ticks`, which has room for 8.
    let n = unsafe { libc::read(timer.as_raw_fd(), ticks.as_mut_ptr().cast(), 8) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(err),
        };
    }
    Ok(if n == 8 { u64::from_ne_bytes(ticks) } else { 0 })
}
