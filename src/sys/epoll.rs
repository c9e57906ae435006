//! An edge-triggered epoll instance watching one socket, plus a one-shot timer.
//!
//! Edge triggering matters for TPACKET_V3: the kernel reports a packet socket readable while the
//! block *before* its current one is not yet returned, so a level-triggered wait spins for as long
//! as the user holds the newest batch. With `EPOLLET` a wait ends only when the kernel signals a
//! new event (a block retired, an error, a TX completion), which is exactly when there can be
//! something new.
//!
//! The epoll descriptor is also the readiness source the async runtimes watch: it is readable
//! while an event is pending, for the socket or for the timer (used to bound how long a pending
//! error waits for the last partly filled block). A runtime whose reactor is itself
//! edge-triggered can watch the socket directly instead (one system call less per event: no
//! nested instance to collect); it then watches a second instance, [`Epoll::faults`], that
//! reports only the socket's errors and the timer.

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
    /// The same socket for errors only, and the same timer (made by [`Epoll::faults`]).
    faults: Option<OwnedFd>,
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
        Ok(Self {
            epfd,
            timer,
            faults: None,
        })
    }

    /// A second epoll instance, made on the first call, watching `fd` (the socket given to
    /// [`watch`](Self::watch)) for errors only (`EPOLLERR`/`EPOLLHUP`: the kernel never filters
    /// those out, and an interest of nothing else filters out every data event) and the same
    /// timer. For a runtime that watches the socket itself: this one then becomes readable only
    /// for the rare events that need [`wait_faults`](Self::wait_faults), not for every block.
    pub(crate) fn faults(&mut self, fd: BorrowedFd<'_>) -> io::Result<BorrowedFd<'_>> {
        let epfd = match self.faults.take() {
            Some(epfd) => epfd,
            None => {
                // SAFETY: plain syscall creating a new descriptor.
                let epfd = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
                add(&epfd, fd, 0, SOCKET_TOKEN)?;
                add(&epfd, self.timer.as_fd(), libc::EPOLLIN as u32, TIMER_TOKEN)?;
                epfd
            }
        };
        let epfd: &OwnedFd = self.faults.insert(epfd);
        Ok(epfd.as_fd())
    }

    /// Waits for events, up to `timeout` (`None`: forever; zero: just collect). `EINTR` returns
    /// no events so callers re-check their state.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<Events> {
        self.collect(self.epfd.as_fd(), timeout)
    }

    /// Collects the pending events of the [`faults`](Self::faults) instance without blocking
    /// (none if it was never made).
    pub(crate) fn wait_faults(&self) -> io::Result<Events> {
        match &self.faults {
            Some(f) => self.collect(f.as_fd(), Some(Duration::ZERO)),
            None => Ok(Events::default()),
        }
    }

    fn collect(&self, epfd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<Events> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: `evs` holds 2 writable epoll_events and maxevents is 2.
        let n = unsafe {
            libc::epoll_wait(
                epfd.as_raw_fd(),
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

#[cfg(test)]
mod tests {
    //! What the async runtimes rely on when they watch these instances, checked against the
    //! running kernel with pipes (no privileges needed).

    use super::*;

    const OUTER_TOKEN: u64 = 7;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
        (owned(fds[0]).unwrap(), owned(fds[1]).unwrap())
    }

    fn put(w: &OwnedFd) {
        // SAFETY: writes one byte from a live buffer.
        assert_eq!(
            unsafe { libc::write(w.as_raw_fd(), [1u8].as_ptr().cast(), 1) },
            1
        );
    }

    fn drain(r: &OwnedFd) {
        let mut buf = [0u8; 64];
        // SAFETY: reads at most 64 bytes into a 64-byte buffer.
        while unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 64) } > 0 {}
    }

    /// A reactor's epoll instance watching `inner` (an `Epoll`) with `flags`.
    fn reactor(inner: BorrowedFd<'_>, flags: u32) -> OwnedFd {
        // SAFETY: plain syscall creating a new descriptor.
        let epfd = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).unwrap();
        ctl(&epfd, libc::EPOLL_CTL_ADD, inner, flags);
        epfd
    }

    fn ctl(epfd: &OwnedFd, op: libc::c_int, fd: BorrowedFd<'_>, flags: u32) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32 | flags,
            u64: OUTER_TOKEN,
        };
        // SAFETY: both descriptors are valid and `ev` is a valid epoll_event.
        let rc = unsafe { libc::epoll_ctl(epfd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl: {}", io::Error::last_os_error());
    }

    /// True if the reactor's instance reports the inner one now.
    fn reported(epfd: &OwnedFd) -> bool {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        // SAFETY: one writable epoll_event, maxevents 1.
        let n = unsafe { libc::epoll_wait(epfd.as_raw_fd(), ev.as_mut_ptr(), 1, 0) };
        assert!(n >= 0, "epoll_wait: {}", io::Error::last_os_error());
        n == 1 && ev[0].u64 == OUTER_TOKEN
    }

    /// An edge-triggered reactor watching a ring's instance gets an edge for every event, even
    /// when nobody collected the instance's earlier ones: collecting is needed only to learn
    /// what the event was, never to keep the wakeups coming.
    #[test]
    fn nested_edge_signals_every_event_without_collecting() {
        let (r, w) = pipe();
        let ring = Epoll::watch(r.as_fd(), libc::EPOLLIN as u32).unwrap();
        let tokio_like = reactor(ring.as_fd(), libc::EPOLLET as u32);
        assert!(!reported(&tokio_like));
        put(&w);
        assert!(reported(&tokio_like));
        assert!(!reported(&tokio_like), "one report per edge");
        put(&w);
        assert!(
            reported(&tokio_like),
            "a new event without collecting the first"
        );
        assert_ne!(ring.wait(Some(Duration::ZERO)).unwrap().socket, 0);
        assert!(!reported(&tokio_like));
    }

    /// A one-shot reactor re-arming the ring's instance (async-io) has it re-checked at once: it
    /// is reported again while an uncollected event's source is still ready, not once the source
    /// went quiet, and not after the event was collected ([`Trigger::Level`] relies on this).
    ///
    /// [`Trigger::Level`]: crate::runtime::Trigger::Level
    #[test]
    fn oneshot_rearm_reports_only_uncollected_ready_events() {
        let (r, w) = pipe();
        let ring = Epoll::watch(r.as_fd(), libc::EPOLLIN as u32).unwrap();
        let oneshot = libc::EPOLLONESHOT as u32;
        let async_io_like = reactor(ring.as_fd(), oneshot);
        put(&w);
        assert!(reported(&async_io_like));
        assert!(!reported(&async_io_like), "disarmed after a report");
        // Not collected, source still ready (an error, a block the user holds): reported again.
        ctl(&async_io_like, libc::EPOLL_CTL_MOD, ring.as_fd(), oneshot);
        assert!(reported(&async_io_like));
        // Not collected, but the source went quiet (the block was taken and released): silent.
        drain(&r);
        ctl(&async_io_like, libc::EPOLL_CTL_MOD, ring.as_fd(), oneshot);
        assert!(!reported(&async_io_like));
        // A new event while armed is reported.
        put(&w);
        assert!(reported(&async_io_like));
        // Collected: silent on re-arm although the pipe is still readable (edge-triggered).
        assert_ne!(ring.wait(Some(Duration::ZERO)).unwrap().socket, 0);
        ctl(&async_io_like, libc::EPOLL_CTL_MOD, ring.as_fd(), oneshot);
        assert!(!reported(&async_io_like));
    }

    /// The faults instance reports the socket's errors and the timer, never its data events.
    #[test]
    fn faults_instance_reports_errors_and_timer_only() {
        // The write end of a pipe stands in for the socket: writable (a data event) when
        // watched and whenever the reader makes room, EPOLLERR once the reader is gone.
        let (r, w) = pipe();
        let mut ep = Epoll::watch(w.as_fd(), libc::EPOLLOUT as u32).unwrap();
        let faults = ep.faults(w.as_fd()).unwrap().try_clone_to_owned().unwrap();
        let tokio_like = reactor(faults.as_fd(), libc::EPOLLET as u32);
        put(&w);
        drain(&r);
        assert!(
            !reported(&tokio_like),
            "data events do not reach the faults instance"
        );
        assert_eq!(ep.wait_faults().unwrap(), Events::default());
        assert_ne!(
            ep.wait(Some(Duration::ZERO)).unwrap().socket,
            0,
            "the main one has them"
        );

        ep.arm_timer(Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(reported(&tokio_like));
        assert!(ep.wait_faults().unwrap().timer);

        drop(r);
        assert!(reported(&tokio_like));
        let events = ep.wait_faults().unwrap();
        assert_ne!(events.socket & libc::EPOLLERR as u32, 0, "{events:?}");
        assert!(!events.timer);
    }
}
