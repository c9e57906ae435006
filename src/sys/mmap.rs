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
        Self::map(Some(fd), len)
    }

    /// Maps `len` bytes of zeroed anonymous memory (page aligned).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        Self::map(None, len)
    }

    fn map(fd: Option<BorrowedFd<'_>>, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let (flags, raw) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd()),
            None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr = NULL); it aliases no Rust object.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                0,
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

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `map`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
