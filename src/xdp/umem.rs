//! The UMEM: one memory area, cut into equal frames, that the kernel DMAs (or copies) packets into
//! and transmits from. Frames are named by their byte offset ("address") in the area.
//!
//! Frames are split into two pools: the RX pool circulates fill ring -> RX ring -> user batch ->
//! fill ring; the TX pool circulates free list -> TX ring -> completion ring -> free list. A frame's
//! address says which pool it belongs to, so an RX frame forwarded to TX without a copy goes back
//! to the RX pool when its transmission completes.
//!
//! Sockets on several queues can share one UMEM: each then owns a disjoint region of it (its own
//! RX and TX pools), and the area is registered with the kernel once.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::sys::Mmap;

/// UMEM geometry, and the region of it one socket owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UmemLayout {
    pub frame_size: u32,
    /// Frames in the whole area.
    pub frame_count: u32,
    /// This socket's region starts at this frame...
    pub first: u32,
    /// ...its RX pool is `[first, first + rx_frames)`...
    pub rx_frames: u32,
    /// ...and its TX pool the next `tx_frames` frames.
    pub tx_frames: u32,
}

impl UmemLayout {
    pub(crate) fn new(frame_size: u32, frame_count: u32, rx_frames: u32) -> Result<Self> {
        if !(2048..=4096).contains(&frame_size) || !frame_size.is_power_of_two() {
            return Err(Error::InvalidConfig(format!(
                "UMEM frame size {frame_size}: use 2048 or 4096 (a power of two the kernel accepts for aligned chunks)"
            )));
        }
        if frame_count < 2 || rx_frames == 0 || rx_frames >= frame_count {
            return Err(Error::InvalidConfig(format!(
                "UMEM of {frame_count} frames with {rx_frames} for RX: need at least one RX and one TX frame"
            )));
        }
        Ok(Self {
            frame_size,
            frame_count,
            first: 0,
            rx_frames,
            tx_frames: frame_count - rx_frames,
        })
    }

    /// `n` regions of `per_socket` frames each (`rx_frames` of them for RX) in one area.
    pub(crate) fn regions(
        frame_size: u32,
        per_socket: u32,
        rx_frames: u32,
        n: u32,
    ) -> Result<Vec<Self>> {
        let one = Self::new(frame_size, per_socket, rx_frames)?;
        let total = per_socket.checked_mul(n).ok_or_else(|| {
            Error::InvalidConfig(format!("{n} x {per_socket} UMEM frames overflow"))
        })?;
        Ok((0..n)
            .map(|k| Self {
                frame_count: total,
                first: k * per_socket,
                ..one
            })
            .collect())
    }

    /// The RX pool's frames.
    pub(crate) fn rx_pool(&self) -> std::ops::Range<u32> {
        self.first..self.first + self.rx_frames
    }

    /// The TX pool's frames.
    pub(crate) fn tx_pool(&self) -> std::ops::Range<u32> {
        let start = self.first + self.rx_frames;
        start..start + self.tx_frames
    }

    pub(crate) fn bytes(&self) -> usize {
        self.frame_size as usize * self.frame_count as usize
    }

    /// The frame an address falls in (addresses may point past a frame's start by the headroom).
    pub(crate) fn frame_of(&self, addr: u64) -> u32 {
        (addr / u64::from(self.frame_size)) as u32
    }

    pub(crate) fn frame_addr(&self, frame: u32) -> u64 {
        u64::from(frame) * u64::from(self.frame_size)
    }

    /// Which socket's region of a shared UMEM `addr` lies in (0 when the UMEM is not shared).
    pub(crate) fn region_of(&self, addr: u64) -> usize {
        (self.frame_of(addr) / (self.rx_frames + self.tx_frames)) as usize
    }

    /// The region this layout's socket owns.
    pub(crate) fn own_region(&self) -> usize {
        (self.first / (self.rx_frames + self.tx_frames)) as usize
    }

    pub(crate) fn is_rx_frame(&self, addr: u64) -> bool {
        self.rx_pool().contains(&self.frame_of(addr))
    }

    /// Checks that `[addr, addr + len)` lies inside one frame of the area.
    pub(crate) fn check(&self, addr: u64, len: u32) -> bool {
        let start = addr % u64::from(self.frame_size);
        self.frame_of(addr) < self.frame_count
            && start + u64::from(len) <= u64::from(self.frame_size)
    }
}

/// One socket's view of a UMEM mapping (shared between sockets that share the UMEM), and the RX
/// frames users have handed back to that socket (from any thread).
#[derive(Debug)]
pub(crate) struct Umem {
    mem: Arc<Mmap>,
    pub(crate) layout: UmemLayout,
    /// RX frames released by dropped batches, waiting to go back on the fill ring. Capacity is
    /// reserved for every RX frame up front, so pushing never allocates.
    recycled: Mutex<Vec<u64>>,
}

impl Umem {
    pub(crate) fn new(layout: UmemLayout, huge_pages: bool) -> Result<Self> {
        let mem = Mmap::anonymous_for_umem(layout.bytes(), huge_pages).map_err(|e| {
            if huge_pages && e.raw_os_error() == Some(libc::ENOMEM) {
                Error::InvalidConfig(format!(
                    "no free huge pages for a {}-byte UMEM: reserve them (`sysctl vm.nr_hugepages=N`) or turn huge_pages off",
                    layout.bytes()
                ))
            } else {
                Error::RingAllocation {
                    bytes: layout.bytes(),
                    source: e,
                }
            }
        })?;
        Ok(Self::with_mem(Arc::new(mem), layout))
    }

    fn with_mem(mem: Arc<Mmap>, layout: UmemLayout) -> Self {
        Self {
            mem,
            layout,
            recycled: Mutex::new(Vec::with_capacity(layout.rx_frames as usize)),
        }
    }

    /// Another socket's view of the same area, owning the region `layout` describes.
    pub(crate) fn share(&self, layout: UmemLayout) -> Self {
        debug_assert_eq!(layout.bytes(), self.layout.bytes());
        Self::with_mem(self.mem.clone(), layout)
    }

    /// True if both views are of one mapping (sockets sharing a UMEM).
    pub(crate) fn same_area(&self, other: &Umem) -> bool {
        Arc::ptr_eq(&self.mem, &other.mem)
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    /// The bytes of a frame region the caller owns (checked against the layout).
    ///
    /// # Safety
    /// The caller must own the frame: it is in none of the kernel's rings and no `&mut` to it
    /// exists.
    pub(crate) unsafe fn slice(&self, addr: u64, len: u32) -> &[u8] {
        assert!(self.layout.check(addr, len), "UMEM access out of bounds");
        // SAFETY: in bounds (checked); ownership per the caller's contract.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr().add(addr as usize), len as usize) }
    }

    /// Mutable bytes of a frame region the caller owns exclusively.
    ///
    /// # Safety
    /// As [`slice`](Self::slice), and no other reference to the region may exist.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, addr: u64, len: u32) -> &mut [u8] {
        assert!(self.layout.check(addr, len), "UMEM access out of bounds");
        // SAFETY: in bounds (checked); exclusivity per the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(self.mem.as_ptr().add(addr as usize), len as usize)
        }
    }

    /// Hands RX frames back (called when a batch drops).
    pub(crate) fn recycle(&self, addrs: impl Iterator<Item = u64>) {
        let mut q = self.recycled.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(addrs);
    }

    /// Moves recycled frames into `out` (which the caller keeps allocated).
    pub(crate) fn take_recycled(&self, out: &mut Vec<u64>) {
        let mut q = self.recycled.lock().unwrap_or_else(|e| e.into_inner());
        out.append(&mut q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_disjoint_and_cover_the_area() {
        let r = UmemLayout::regions(2048, 64, 48, 3).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|l| l.frame_count == 192));
        assert_eq!(r[1].rx_pool(), 64..112);
        assert_eq!(r[1].tx_pool(), 112..128);
        assert!(r[1].is_rx_frame(100 * 2048));
        assert_eq!(r[1].own_region(), 1);
        assert_eq!(r[0].region_of(100 * 2048 + 7), 1);
        assert_eq!(r[2].region_of(191 * 2048), 2);
        assert!(!r[0].is_rx_frame(100 * 2048));
        assert!(!r[1].is_rx_frame(120 * 2048));
        assert_eq!(r[2].tx_pool().end, 192);
    }

    #[test]
    fn layout_checks() {
        assert!(UmemLayout::new(1000, 64, 32).is_err());
        assert!(UmemLayout::new(2048, 64, 64).is_err());
        let l = UmemLayout::new(2048, 64, 48).unwrap();
        assert_eq!(l.bytes(), 131072);
        assert!(l.is_rx_frame(47 * 2048 + 100));
        assert!(!l.is_rx_frame(48 * 2048));
        assert!(l.check(2048 + 256, 1792));
        assert!(!l.check(2048 + 256, 1793));
        assert!(!l.check(64 * 2048, 1));
    }

    #[test]
    fn recycling_does_not_allocate_past_capacity() {
        let l = UmemLayout::new(2048, 16, 8).unwrap();
        let u = Umem::new(l, false).unwrap();
        let cap = u.recycled.lock().unwrap().capacity();
        u.recycle([0u64, 2048, 4096].into_iter());
        let mut out = Vec::with_capacity(16);
        u.take_recycled(&mut out);
        assert_eq!(out, vec![0, 2048, 4096]);
        assert_eq!(u.recycled.lock().unwrap().capacity(), cap);
    }
}
