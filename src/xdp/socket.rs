//! The AF_XDP socket itself: UMEM registration, ring sizes and mappings, bind, statistics.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::ring::{Consumer, Producer, RingMemory, RingOffsets};
use super::umem::Umem;
use crate::error::{Error, Result};
use crate::sys::{self, Mmap};

/// `XDP_MAX_TX_SKB_BUDGET` (`linux/if_xdp.h`, Linux 6.17; not in the libc crate yet).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// Frames one copy-mode kick transmits when the budget is not set (the kernel's `TX_BATCH_SIZE`,
/// and its smallest accepted budget).
pub(crate) const KERNEL_TX_BUDGET: u32 = 32;

/// How the socket was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Try zero-copy, fall back to copy mode if the driver refuses it (the result says which).
    Auto,
    /// Copy mode (`XDP_COPY`): works on every driver, including veth and generic XDP.
    Copy,
    /// Zero-copy (`XDP_ZEROCOPY`): the NIC writes into the UMEM directly; fails where unsupported.
    ZeroCopy,
}

/// The four rings of a socket that owns its UMEM.
#[derive(Debug)]
pub(crate) struct Rings {
    pub fill: Producer<u64>,
    pub completion: Consumer<u64>,
    pub rx: Consumer<libc::xdp_desc>,
    pub tx: Producer<libc::xdp_desc>,
}

impl Rings {
    /// Descriptors the TX ring holds.
    pub(crate) fn tx_capacity(&self) -> usize {
        self.tx.size() as usize
    }
}

/// A raw `AF_XDP` socket.
#[derive(Debug)]
pub(crate) struct XskSocket {
    fd: OwnedFd,
}

impl XskSocket {
    pub(crate) fn open() -> Result<Self> {
        let fd = sys::xdp_socket().map_err(|e| match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => Error::XdpUnsupported {
                interface: String::new(),
                reason: "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)".into(),
            },
            _ => Error::os("opening an AF_XDP socket", e),
        })?;
        Ok(Self { fd })
    }

    fn set_u32(&self, name: libc::c_int, v: u32, what: &'static str) -> Result<()> {
        sys::setsockopt(self.fd.as_fd(), libc::SOL_XDP, name, &(v as libc::c_uint))
            .map_err(|e| Error::os(what, e))
    }

    /// Registers the UMEM with the socket (`XDP_UMEM_REG`).
    pub(crate) fn register_umem(&self, umem: &Umem) -> Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: umem.as_ptr() as u64,
            len: umem.layout.bytes() as u64,
            chunk_size: umem.layout.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::setsockopt(self.fd.as_fd(), libc::SOL_XDP, libc::XDP_UMEM_REG, &reg).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOMEM) => Error::RingAllocation {
                    bytes: umem.layout.bytes(),
                    source: e,
                },
                // The UMEM is charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK;
                // over the limit the kernel says ENOBUFS.
                Some(libc::ENOBUFS) | Some(libc::EPERM) => Error::Memlock {
                    bytes: umem.layout.bytes(),
                },
                _ => Error::os("XDP_UMEM_REG", e),
            }
        })
    }

    /// Sizes and maps the fill, completion, RX and TX rings.
    pub(crate) fn setup_rings(&self, fill: u32, comp: u32, rx: u32, tx: u32) -> Result<Rings> {
        for (name, size, what) in [
            (libc::XDP_UMEM_FILL_RING, fill, "XDP_UMEM_FILL_RING"),
            (
                libc::XDP_UMEM_COMPLETION_RING,
                comp,
                "XDP_UMEM_COMPLETION_RING",
            ),
            (libc::XDP_RX_RING, rx, "XDP_RX_RING"),
            (libc::XDP_TX_RING, tx, "XDP_TX_RING"),
        ] {
            if !size.is_power_of_two() {
                return Err(Error::InvalidConfig(format!(
                    "{what} size {size} must be a power of two"
                )));
            }
            self.set_u32(name, size, what)?;
        }
        let off: libc::xdp_mmap_offsets =
            sys::getsockopt(self.fd.as_fd(), libc::SOL_XDP, libc::XDP_MMAP_OFFSETS)
                .map_err(|e| Error::os("XDP_MMAP_OFFSETS", e))?;
        Ok(Rings {
            fill: Producer::new(self.map_ring::<u64>(
                off.fr.into(),
                fill,
                libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            )?),
            completion: Consumer::new(self.map_ring::<u64>(
                off.cr.into(),
                comp,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            )?),
            rx: Consumer::new(self.map_ring::<libc::xdp_desc>(
                off.rx.into(),
                rx,
                libc::XDP_PGOFF_RX_RING,
            )?),
            tx: Producer::new(self.map_ring::<libc::xdp_desc>(
                off.tx.into(),
                tx,
                libc::XDP_PGOFF_TX_RING,
            )?),
        })
    }

    fn map_ring<T: super::ring::Desc>(
        &self,
        off: RingOffsets,
        size: u32,
        pgoff: i64,
    ) -> Result<RingMemory<T>> {
        let len = off.desc + size as usize * std::mem::size_of::<T>();
        let mem =
            Mmap::socket_at(self.fd.as_fd(), len, pgoff).map_err(|e| Error::RingAllocation {
                bytes: len,
                source: e,
            })?;
        Ok(RingMemory::new(mem, off, size))
    }

    /// Binds to `ifindex`/`queue`. `Auto` tries zero-copy first and falls back to copy mode.
    /// `EBUSY` (the queue's previous socket is still being torn down, which takes up to about a
    /// second) is retried for up to `busy_retry`. Returns the mode that was bound.
    pub(crate) fn bind(
        &self,
        iface: &str,
        ifindex: u32,
        queue: u32,
        mode: BindMode,
        need_wakeup: bool,
        busy_retry: Duration,
    ) -> Result<BindMode> {
        let wake = if need_wakeup {
            libc::XDP_USE_NEED_WAKEUP
        } else {
            0
        };
        let attempts: &[BindMode] = match mode {
            BindMode::Auto => &[BindMode::ZeroCopy, BindMode::Copy],
            BindMode::Copy => &[BindMode::Copy],
            BindMode::ZeroCopy => &[BindMode::ZeroCopy],
        };
        let deadline = Instant::now() + busy_retry;
        let mut last = None;
        for &m in attempts {
            let flags = wake
                | match m {
                    BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                    _ => libc::XDP_COPY,
                };
            loop {
                match sys::bind_xdp(self.fd.as_fd(), ifindex, queue, flags, None) {
                    Ok(()) => return Ok(m),
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            let code = last.as_ref().and_then(|e| e.raw_os_error());
            // Only "zero-copy not supported here" moves on to copy mode.
            if !(m == BindMode::ZeroCopy
                && matches!(code, Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT)))
            {
                break;
            }
        }
        let e = last.expect("at least one bind attempt");
        Err(match e.raw_os_error() {
            Some(libc::EINVAL) => Error::InvalidConfig(format!(
                "cannot bind an AF_XDP socket to queue {queue} of `{iface}`: the queue does not exist (see `ethtool -l {iface}`) or no XDP program is attached"
            )),
            Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT) => Error::XdpUnsupported {
                interface: iface.to_owned(),
                reason: format!("the driver refused {mode:?} mode: use BindMode::Copy"),
            },
            Some(libc::EBUSY) => Error::InvalidConfig(format!(
                "queue {queue} of `{iface}` is busy: another AF_XDP socket is bound to it"
            )),
            _ => Error::os("binding the AF_XDP socket", e),
        })
    }

    /// Binds to `ifindex`/`queue` on the UMEM that `owner` registered (`XDP_SHARED_UMEM`; the
    /// mode is the owner's). `EBUSY` is retried for up to `busy_retry`.
    pub(crate) fn bind_shared(
        &self,
        iface: &str,
        ifindex: u32,
        queue: u32,
        owner: BorrowedFd<'_>,
        busy_retry: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + busy_retry;
        loop {
            match sys::bind_xdp(
                self.fd.as_fd(),
                ifindex,
                queue,
                libc::XDP_SHARED_UMEM,
                Some(owner),
            ) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(match e.raw_os_error() {
                        Some(libc::EINVAL) => Error::InvalidConfig(format!(
                            "cannot bind an AF_XDP socket sharing a UMEM to queue {queue} of `{iface}`: the queue does not exist or is taken"
                        )),
                        _ => Error::os("binding the AF_XDP socket (shared UMEM)", e),
                    });
                }
            }
        }
    }

    /// Sets how many frames one copy-mode kick may transmit (`XDP_MAX_TX_SKB_BUDGET`, Linux
    /// 6.17+; the kernel accepts 32 up to the TX ring's size). `Ok(false)`: this kernel has no
    /// such option, and each kick transmits at most 32 frames.
    pub(crate) fn set_tx_budget(&self, frames: u32) -> Result<bool> {
        match sys::setsockopt(
            self.fd.as_fd(),
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            &(frames as libc::c_uint),
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(Error::InvalidConfig(format!(
                "the kernel refused a TX budget of {frames} frames: it must be between \
                 {KERNEL_TX_BUDGET} and the TX ring size"
            ))),
            Err(e) => Err(Error::os("XDP_MAX_TX_SKB_BUDGET", e)),
        }
    }

    /// `XDP_STATISTICS`.
    pub(crate) fn statistics(&self) -> Result<libc::xdp_statistics> {
        sys::getsockopt(self.fd.as_fd(), libc::SOL_XDP, libc::XDP_STATISTICS)
            .map_err(|e| Error::os("XDP_STATISTICS", e))
    }

    /// True if the kernel says the socket is in zero-copy mode (`XDP_OPTIONS`).
    pub(crate) fn is_zero_copy(&self) -> bool {
        sys::getsockopt::<libc::xdp_options>(self.fd.as_fd(), libc::SOL_XDP, libc::XDP_OPTIONS)
            .is_ok_and(|o| o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// Asks the kernel to process the TX ring.
    pub(crate) fn kick_tx(&self) -> Result<()> {
        match sys::send_kick(self.fd.as_fd(), libc::MSG_DONTWAIT) {
            Ok(_) => Ok(()),
            // Busy / no room: completions will make room; the next kick goes on.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::ENETDOWN) | Some(libc::ENXIO) => Error::InterfaceDown {
                    name: String::new(),
                },
                _ => Error::os("AF_XDP TX kick", e),
            }),
        }
    }

    /// Lets the driver refill its RX queue from the fill ring (needed when it set NEED_WAKEUP).
    pub(crate) fn kick_rx(&self) {
        let _ = sys::recv_kick(self.fd.as_fd());
    }

    pub(crate) fn take_error(&self) -> Result<Option<std::io::Error>> {
        sys::take_socket_error(self.fd.as_fd()).map_err(|e| Error::os("SO_ERROR", e))
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
