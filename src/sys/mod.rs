//! Thin, typed wrappers over the raw Linux syscalls the crate needs.
//!
//! This module, [`mmap`] and [`epoll`] are where almost all of the crate's `unsafe` lives. Every
//! function here takes and returns safe types (`BorrowedFd`, `OwnedFd`, `io::Result`) so the ring
//! code above never calls into libc directly.

pub(crate) mod bpf;
pub(crate) mod epoll;
pub(crate) mod mmap;

use std::ffi::CString;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub(crate) use epoll::Epoll;
pub(crate) use mmap::Mmap;

/// Turns a `-1`-on-error libc return value into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n <= 0 { 4096 } else { n as usize }
}

/// Opens an `AF_PACKET`/`SOCK_RAW` socket. `protocol` is in host order; `0` makes a socket that
/// receives nothing until it is bound with a protocol.
pub(crate) fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the returned descriptor is new and owned by nobody else.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::c_int::from(protocol.to_be()),
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an `AF_XDP` socket.
pub(crate) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the returned descriptor is new and owned by nobody else.
    let fd = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds an AF_XDP socket to `ifindex`/`queue` with `XDP_*` bind flags.
pub(crate) fn bind_xdp(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    queue: u32,
    flags: u16,
    shared_umem_fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared_umem_fd.map_or(0, |f| f.as_raw_fd() as u32),
    };
    // SAFETY: `addr` is a valid sockaddr_xdp and the length passed is its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: lets an AF_XDP socket's driver refill from the fill ring.
pub(crate) fn recv_kick(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length receive into a null buffer writes no memory.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a datagram socket used only as a handle for interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    for family in [libc::AF_INET, libc::AF_UNIX, libc::AF_INET6] {
        // SAFETY: plain syscall; on success the descriptor is new and owned by nobody else.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by socket(2).
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(io::Error::last_os_error())
}

/// Plain-old-data that may be passed to and filled by `setsockopt`/`getsockopt`.
///
/// # Safety
/// Implementors must be `repr(C)` kernel structs (or integers) for which every bit pattern is valid.
pub(crate) unsafe trait SockOpt: Copy {}
// SAFETY: integers and these repr(C) kernel structs are valid for any bit pattern.
unsafe impl SockOpt for libc::c_int {}
// SAFETY: as above.
unsafe impl SockOpt for libc::c_uint {}
// SAFETY: as above.
unsafe impl SockOpt for libc::tpacket_req3 {}
// SAFETY: as above.
unsafe impl SockOpt for libc::tpacket_req {}
// SAFETY: as above.
unsafe impl SockOpt for libc::tpacket_stats_v3 {}
// SAFETY: as above.
unsafe impl SockOpt for libc::packet_mreq {}
// SAFETY: a pointer and a length; the kernel copies the program it points at during the call.
unsafe impl SockOpt for libc::sock_fprog {}
// SAFETY: repr(C) kernel structs of integers.
unsafe impl SockOpt for libc::xdp_umem_reg {}
// SAFETY: as above.
unsafe impl SockOpt for libc::xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl SockOpt for libc::xdp_statistics {}
// SAFETY: as above.
unsafe impl SockOpt for libc::xdp_options {}

pub(crate) fn setsockopt<T: SockOpt>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of exactly `size_of::<T>()` bytes for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(crate) fn getsockopt<T: SockOpt>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut value = MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the buffer is `len` bytes long and writable; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    // SAFETY: zero-initialised, then (partly) overwritten by the kernel; any bit pattern is a
    // valid `T` (the `SockOpt` contract).
    Ok(unsafe { value.assume_init() })
}

/// Attaches a classic BPF program (`SO_ATTACH_FILTER`).
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, insns: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call, so `insns` only has to live until it returns.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Binds a packet socket to an interface (`ifindex`) and protocol (host order; 0 = receive nothing).
pub(crate) fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The interface index a packet socket is bound to (`getsockname`); -1 once that interface has
/// been deleted. Unlike a lookup by index, this answers in the socket's own network namespace.
pub(crate) fn bound_ifindex(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes; the kernel writes at most that much.
    cvt(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    })?;
    Ok(addr.sll_ifindex)
}

/// `send(fd, NULL, 0, flags)`: asks the kernel to transmit the frames queued in a TX ring.
pub(crate) fn send_kick(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: a zero-length send with a null buffer reads no memory.
    let n = unsafe { libc::send(fd.as_raw_fd(), std::ptr::null(), 0, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Converts a timeout to poll/epoll milliseconds, rounding up so short timeouts do not spin.
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// Takes (and clears) the pending socket error, `SO_ERROR`.
pub(crate) fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let code: libc::c_int = getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((code != 0).then(|| io::Error::from_raw_os_error(code)))
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn ifreq_ioctl(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: `req` is a valid, NUL-terminated ifreq; these SIOCGIF* requests write only into it.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req) })?;
    Ok(req)
}

/// Index of a named interface (`SIOCGIFINDEX`).
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let req = ifreq_ioctl(name, libc::SIOCGIFINDEX)?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

/// MTU of a named interface (`SIOCGIFMTU`).
pub(crate) fn if_mtu(name: &str) -> io::Result<u32> {
    let req = ifreq_ioctl(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Flags (`IFF_*`) of a named interface (`SIOCGIFFLAGS`).
pub(crate) fn if_flags(name: &str) -> io::Result<u32> {
    let req = ifreq_ioctl(name, libc::SIOCGIFFLAGS)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags } as u16 as u32)
}

/// Hardware type and address of a named interface (`SIOCGIFHWADDR`).
pub(crate) fn if_hwaddr(name: &str) -> io::Result<(u16, [u8; 6])> {
    let req = ifreq_ioctl(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr (a sockaddr) member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok((sa.sa_family, mac))
}

/// Name of the interface with this index, or `None` when there is none (`if_indextoname`).
pub(crate) fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: `buf` is IFNAMSIZ bytes, the size if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// Opens a file read-only with `O_CLOEXEC`.
pub(crate) fn open_readonly(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated path; on success the descriptor is new and owned.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into the network namespace `ns` refers to.
pub(crate) fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor; affects only the calling thread.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}
