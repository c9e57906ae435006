//! The UMEM: one memory area, cut into equal frames, that the kernel DMAs (or copies) packets into
//! and transmits from. Frames are named by their byte offset ("address") in the area.
//!
//! Frames are split into two pools: the RX pool circulates fill ring -> RX ring -> user batch ->
//! fill ring; the TX pool circulates free list -> TX ring -> completion ring -> free list. A frame's
//! address says which pool it belongs to, so an RX frame forwarded to TX without a copy goes back
//! to the RX pool when its transmission completes.

use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::sys::Mmap;

/// UMEM geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UmemLayout {
    pub frame_size: u32,
    pub frame_count: u32,
    /// Frames `[0, rx_frames)` are the RX pool, the rest the TX pool.
    pub rx_frames: u32,
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
            rx_frames,
        })
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

    pub(crate) fn is_rx_frame(&self, addr: u64) -> bool {
        self.frame_of(addr) < self.rx_frames
    }

    /// Checks that `[addr, addr + len)` lies inside one frame of the area.
    pub(crate) fn check(&self, addr: u64, len: u32) -> bool {
        let start = addr % u64::from(self.frame_size);
        self.frame_of(addr) < self.frame_count
            && start + u64::from(len) <= u64::from(self.frame_size)
    }
}

/// The UMEM mapping and the RX frames users have handed back (from any thread).
#[derive(Debug)]
pub(crate) struct Umem {
    mem: Mmap,
    pub(crate) layout: UmemLayout,
    /// RX frames released by dropped batches, waiting to go back on the fill ring. Capacity is
    /// reserved for every RX frame up front, so pushing never allocates.
    recycled: Mutex<Vec<u64>>,
}

impl Umem {
    pub(crate) fn new(layout: UmemLayout, huge_pages: bool) -> Result<Self> {
        let mem = Mmap::anonymous_for_umem(layout.bytes(), huge_pages).map_err(|e| {
            Error::RingAllocation {
                bytes: layout.bytes(),
                source: e,
            }
        })?;
        Ok(Self {
            mem,
            layout,
            recycled: Mutex::new(Vec::with_capacity(layout.frame_count as usize)),
        })
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
