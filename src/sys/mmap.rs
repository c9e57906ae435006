//! An owned shared memory mapping: a packet ring mapped from a socket, or anonymous memory (used by
//! the kernel-free ring tests).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A `MAP_SHARED` read/write mapping, unmapped on drop.
///
/// The mapping keeps the socket's ring alive on its own: the kernel holds a reference to the socket
/// file for as long as the mapping exists, so closing the descriptor first is sound.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; who may touch which bytes when is governed by the ring
// protocols built on top (block/frame ownership through status words).
unsafe impl Send for Mmap {}
// SAFETY: as above; `Mmap` itself only hands out raw pointers.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of the ring(s) of a packet socket (offset 0).
    pub(crate) fn socket(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        Self::socket_at(fd, len, 0)
    }

    /// Maps `len` bytes of a socket's ring at page offset `offset` (AF_XDP names its rings by
    /// offset: `XDP_PGOFF_RX_RING`, ...).
    pub(crate) fn socket_at(fd: BorrowedFd<'_>, len: usize, offset: i64) -> io::Result<Self> {
        Self::map(
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            len,
            offset,
        )
    }

    /// Maps `len` bytes of zeroed anonymous memory (page aligned).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        Self::map(libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, len, 0)
    }

    /// Zeroed, pre-faulted anonymous memory for an AF_XDP UMEM, optionally on huge pages (the
    /// length is then rounded up to whole huge pages, which munmap requires).
    pub(crate) fn anonymous_for_umem(len: usize, huge_pages: bool) -> io::Result<Self> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        let mut len = len;
        if huge_pages {
            flags |= libc::MAP_HUGETLB;
            len = len.next_multiple_of(huge_page_size());
        }
        Self::map(flags, -1, len, 0)
    }

    fn map(flags: libc::c_int, raw: libc::c_int, len: usize, offset: i64) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr = NULL); it aliases no Rust object.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The default huge page size (`Hugepagesize` in /proc/meminfo), 2 MiB if it cannot be read.
fn huge_page_size() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(2 << 20, |kb| kb * 1024)
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `map`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
