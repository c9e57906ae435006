//! The AF_PACKET socket itself: one method per socket option, each mapping failures to a typed
//! error. Shared by the RX ([`Capture`](super::Capture)) and TX ([`Injector`](super::Injector))
//! sides.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::bpf::BpfProgram;
use crate::error::{Error, Result};
use crate::sys;

/// A raw `AF_PACKET` socket.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket that receives nothing until [`bind`](Self::bind) gives it a protocol, so no
    /// frame reaches it before its ring, filter and interface are set up.
    pub(crate) fn open() -> Result<Self> {
        let fd = sys::packet_socket(0).map_err(|e| Error::os("opening an AF_PACKET socket", e))?;
        Ok(Self { fd })
    }

    fn set<T: sys::SockOpt>(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: &T,
        what: &'static str,
    ) -> Result<()> {
        sys::setsockopt(self.fd.as_fd(), level, name, value).map_err(|e| Error::os(what, e))
    }

    fn set_packet_int(&self, name: libc::c_int, value: u32, what: &'static str) -> Result<()> {
        self.set(libc::SOL_PACKET, name, &(value as libc::c_int), what)
    }

    pub(crate) fn set_version(&self, version: libc::tpacket_versions) -> Result<()> {
        self.set_packet_int(libc::PACKET_VERSION, version as u32, "PACKET_VERSION")
    }

    pub(crate) fn set_rx_ring(&self, req: &libc::tpacket_req3) -> Result<()> {
        let bytes = req.tp_block_size as usize * req.tp_block_nr as usize;
        sys::setsockopt(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, req)
            .map_err(|e| ring_error(bytes, e, "PACKET_RX_RING"))
    }

    pub(crate) fn set_tx_ring(&self, req: &libc::tpacket_req) -> Result<()> {
        let bytes = req.tp_block_size as usize * req.tp_block_nr as usize;
        sys::setsockopt(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_TX_RING, req)
            .map_err(|e| ring_error(bytes, e, "PACKET_TX_RING"))
    }

    pub(crate) fn map_ring(&self, bytes: usize) -> Result<sys::Mmap> {
        sys::Mmap::socket(self.fd.as_fd(), bytes).map_err(|e| ring_error(bytes, e, "mmap"))
    }

    pub(crate) fn set_promiscuous(&self, ifindex: u32) -> Result<()> {
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        self.set(
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
            "PACKET_ADD_MEMBERSHIP (promiscuous mode)",
        )
    }

    pub(crate) fn set_ignore_outgoing(&self) -> Result<()> {
        self.set_packet_int(libc::PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
    }

    pub(crate) fn set_timestamping(&self, flags: u32) -> Result<()> {
        self.set_packet_int(libc::PACKET_TIMESTAMP, flags, "PACKET_TIMESTAMP")
    }

    pub(crate) fn set_busy_poll(&self, budget: Duration) -> Result<()> {
        let us = budget.as_micros().min(i32::MAX as u128) as libc::c_int;
        self.set(
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            &us,
            "SO_BUSY_POLL (busy poll)",
        )
    }

    pub(crate) fn set_qdisc_bypass(&self) -> Result<()> {
        self.set_packet_int(libc::PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS")
    }

    pub(crate) fn attach_filter(&self, prog: &BpfProgram) -> Result<()> {
        sys::attach_filter(self.fd.as_fd(), &prog.to_sock_filters()).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                Error::InvalidFilter(format!(
                    "the kernel refused the program ({e}): it has an invalid opcode, jump or \
                     memory access; generate it with `tcpdump -dd EXPR`"
                ))
            } else {
                Error::os("SO_ATTACH_FILTER", e)
            }
        })
    }

    pub(crate) fn bind(&self, ifindex: u32, protocol: u16) -> Result<()> {
        sys::bind_packet(self.fd.as_fd(), ifindex, protocol)
            .map_err(|e| Error::os("binding the packet socket", e))
    }

    /// `PACKET_FANOUT` with `id | (mode | flags) << 16`; the raw error, for the caller to explain.
    pub(crate) fn join_fanout(&self, arg: u32) -> std::io::Result<()> {
        sys::setsockopt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            &(arg as libc::c_int),
        )
    }

    /// The group's classic program (`PACKET_FANOUT_DATA` in `PACKET_FANOUT_CBPF` mode). The
    /// socket must already be in the group.
    pub(crate) fn set_fanout_cbpf(&self, prog: &BpfProgram) -> std::io::Result<()> {
        let insns = prog.to_sock_filters();
        let len = u16::try_from(insns.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let fprog = libc::sock_fprog {
            len,
            filter: insns.as_ptr().cast_mut(),
        };
        // The kernel copies the program during the call; `insns` outlives it.
        sys::setsockopt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT_DATA,
            &fprog,
        )
    }

    /// The group's eBPF program (`PACKET_FANOUT_DATA` in `PACKET_FANOUT_EBPF` mode): the kernel
    /// takes its own reference, so `prog` may be closed afterwards.
    pub(crate) fn set_fanout_ebpf(&self, prog: BorrowedFd<'_>) -> std::io::Result<()> {
        let fd: libc::c_int = prog.as_raw_fd();
        sys::setsockopt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT_DATA,
            &fd,
        )
    }

    /// Removes the socket's filter (`SO_DETACH_FILTER`).
    pub(crate) fn detach_filter(&self) -> Result<()> {
        match self.set(
            libc::SOL_SOCKET,
            libc::SO_DETACH_FILTER,
            &0,
            "SO_DETACH_FILTER",
        ) {
            // No filter attached: nothing to remove.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    pub(crate) fn statistics(&self) -> Result<libc::tpacket_stats_v3> {
        sys::getsockopt(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS)
            .map_err(|e| Error::os("PACKET_STATISTICS", e))
    }

    /// False once the interface the socket was bound to has been deleted.
    pub(crate) fn interface_exists(&self, ifindex: u32) -> bool {
        sys::bound_ifindex(self.fd.as_fd()).map_or(true, |i| i == ifindex as i32)
    }

    pub(crate) fn take_error(&self) -> Result<Option<std::io::Error>> {
        sys::take_socket_error(self.fd.as_fd()).map_err(|e| Error::os("SO_ERROR", e))
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn ring_error(bytes: usize, e: std::io::Error, what: &'static str) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => Error::RingAllocation { bytes, source: e },
        _ => Error::os(what, e),
    }
}
