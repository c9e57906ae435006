//! The mmap TX ring: reserve a frame, write it in place, commit; flush to kick the kernel.
//!
//! The TX ring uses `TPACKET_V2` frames: a fixed-size slot per frame with a status word
//! (`TP_STATUS_AVAILABLE` -> ours to fill, `TP_STATUS_SEND_REQUEST` -> queued for the kernel,
//! `TP_STATUS_SENDING` -> in flight). TPACKET_V3's block layout brings nothing to transmission.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::socket::PacketSocket;
use crate::error::{Error, GeometryError, Result};
use crate::frame::{ETH_HLEN, check_tx_frame};
use crate::iface::Interface;
use crate::sys;

/// Offset of the frame data inside a V2 TX slot: `TPACKET2_HDRLEN - sizeof(sockaddr_ll)`, where
/// the kernel reads it from when `PACKET_TX_HAS_OFF` is not set.
pub(crate) const TX_DATA_OFFSET: usize =
    libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
const TX_STATUS: usize = 0;
const TX_LEN: usize = 4;

/// What a TX slot's status word says. The kernel may OR timestamp bits (`TP_STATUS_TS_*`) into
/// the status when it completes a frame, so only the low state bits are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Ours to fill.
    Free,
    /// Queued (`SEND_REQUEST`) or in flight (`SENDING`).
    Busy,
    /// The kernel refused the frame (`WRONG_FORMAT`).
    Rejected,
}

impl SlotState {
    pub(crate) fn of(status: u32) -> Self {
        if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
            SlotState::Busy
        } else if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
            SlotState::Rejected
        } else {
            SlotState::Free
        }
    }
}

/// Slot bookkeeping of a TX ring, independent of the kernel: where each frame lives and which
/// one is next. Kept apart from the socket so it can be checked without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxGeometry {
    pub block_size: usize,
    pub block_count: usize,
    pub frame_size: usize,
    pub frames_per_block: usize,
}

impl TxGeometry {
    /// Lays out `frame_count` frames of `frame_size` bytes in page-multiple blocks.
    pub(crate) fn new(
        frame_size: usize,
        frame_count: usize,
        page: usize,
    ) -> Result<Self, GeometryError> {
        if frame_count == 0 {
            return Err(GeometryError::Empty { what: "frame" });
        }
        if frame_size % libc::TPACKET_ALIGNMENT != 0 {
            return Err(GeometryError::FrameSizeUnaligned { frame_size });
        }
        let min = TX_DATA_OFFSET + ETH_HLEN;
        if frame_size < min {
            return Err(GeometryError::FrameSizeTooSmall { frame_size, min });
        }
        // Smallest page multiple holding at least one frame; frames never straddle blocks.
        let block_size = frame_size.div_ceil(page) * page;
        let frames_per_block = block_size / frame_size;
        let block_count = frame_count.div_ceil(frames_per_block);
        let bytes = block_size as u128 * block_count as u128;
        let limit = u32::MAX as u128;
        if bytes > limit {
            return Err(GeometryError::TooLarge { bytes, limit });
        }
        Ok(Self {
            block_size,
            block_count,
            frame_size,
            frames_per_block,
        })
    }

    pub(crate) fn frame_count(&self) -> usize {
        self.frames_per_block * self.block_count
    }

    pub(crate) fn bytes(&self) -> usize {
        self.block_size * self.block_count
    }

    /// Byte offset of frame `i` in the mapping.
    pub(crate) fn frame_offset(&self, i: usize) -> usize {
        (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size
    }

    /// Largest frame payload a slot holds.
    pub(crate) fn max_frame_len(&self) -> usize {
        self.frame_size - TX_DATA_OFFSET
    }
}

/// Configures and opens an [`Injector`].
///
/// ```no_run
/// let mut tx = netring::Injector::builder("eth0")
///     .frame_size(2048)
///     .frame_count(512)
///     .qdisc_bypass(true)
///     .open()?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct InjectorBuilder {
    interface: String,
    frame_size: usize,
    frame_count: usize,
    qdisc_bypass: bool,
}

impl InjectorBuilder {
    /// Default frame slot size: 2048 bytes (room for a 1514-byte frame; use 16384 for jumbo).
    pub const DEFAULT_FRAME_SIZE: usize = 2048;
    /// Default number of frame slots: 256.
    pub const DEFAULT_FRAME_COUNT: usize = 256;

    /// Slot size in bytes, a multiple of 16. A slot holds a frame of up to `frame_size - 32` bytes.
    pub fn frame_size(mut self, bytes: usize) -> Self {
        self.frame_size = bytes;
        self
    }
    /// Number of slots (rounded up to fill whole blocks).
    pub fn frame_count(mut self, n: usize) -> Self {
        self.frame_count = n;
        self
    }
    /// Hands frames straight to the driver, skipping the qdisc layer (`PACKET_QDISC_BYPASS`;
    /// default off). Faster; traffic control and `tc` shaping no longer apply.
    pub fn qdisc_bypass(mut self, on: bool) -> Self {
        self.qdisc_bypass = on;
        self
    }

    /// Opens the TX ring.
    pub fn open(self) -> Result<Injector> {
        let geometry = TxGeometry::new(self.frame_size, self.frame_count, sys::page_size())?;
        let iface = Interface::by_name(&self.interface)?;
        let sock = PacketSocket::open()?;
        sock.set_version(libc::tpacket_versions::TPACKET_V2)?;
        if self.qdisc_bypass {
            sock.set_qdisc_bypass()?;
        }
        let req = libc::tpacket_req {
            tp_block_size: geometry.block_size as u32,
            tp_block_nr: geometry.block_count as u32,
            tp_frame_size: geometry.frame_size as u32,
            tp_frame_nr: geometry.frame_count() as u32,
        };
        sock.set_tx_ring(&req)?;
        let mem = sock.map_ring(geometry.bytes())?;
        // Protocol 0: this socket sends only, so it takes no received traffic.
        sock.bind(iface.index(), 0)?;
        let epoll = sys::Epoll::watch(sock.as_fd(), (libc::EPOLLOUT | libc::EPOLLERR) as u32)
            .map_err(|e| Error::os("epoll", e))?;
        Ok(Injector {
            epoll,
            sock,
            mem,
            geometry,
            iface,
            next: 0,
            queued: 0,
        })
    }
}

/// A TX ring on one interface.
///
/// ```no_run
/// let mut tx = netring::Injector::open("eth0")?;
/// let frame = [0u8; 60];
/// tx.send(&frame)?;                 // copy into a free slot (waits if the ring is full)
/// if let Some(mut slot) = tx.try_reserve(60)? {
///     slot.data_mut().copy_from_slice(&frame); // or write in place
///     slot.commit();
/// }
/// tx.flush()?;                      // kick the kernel
/// tx.wait_sent(None)?;              // until every committed frame has left
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct Injector {
    /// Edge-triggered: signals TX completions (the socket becoming writable) and errors.
    epoll: sys::Epoll,
    sock: PacketSocket,
    mem: sys::Mmap,
    geometry: TxGeometry,
    iface: Interface,
    /// Next slot to fill.
    next: usize,
    /// Frames committed since the last flush.
    queued: usize,
}

impl Injector {
    /// A builder for a TX ring on `interface`.
    pub fn builder(interface: &str) -> InjectorBuilder {
        InjectorBuilder {
            interface: interface.to_owned(),
            frame_size: InjectorBuilder::DEFAULT_FRAME_SIZE,
            frame_count: InjectorBuilder::DEFAULT_FRAME_COUNT,
            qdisc_bypass: false,
        }
    }

    /// Opens a TX ring on `interface` with the default settings.
    pub fn open(interface: &str) -> Result<Self> {
        Self::builder(interface).open()
    }

    /// The interface, as it was when the ring was opened.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// Number of frame slots.
    pub fn frame_count(&self) -> usize {
        self.geometry.frame_count()
    }

    /// Largest frame one slot holds.
    pub fn max_frame_len(&self) -> usize {
        self.geometry.max_frame_len()
    }

    fn status(&self, i: usize) -> &AtomicU32 {
        let off = self.geometry.frame_offset(i) + TX_STATUS;
        assert!(off + 4 <= self.mem.len());
        // SAFETY: in bounds (checked above), 4-byte aligned (slots are 16-byte aligned), and only
        // accessed atomically on our side; the kernel uses its own barriers on this word.
        unsafe { &*(self.mem.as_ptr().add(off) as *const AtomicU32) }
    }

    fn check_len(&self, frame_start: &[u8], len: usize) -> Result<()> {
        check_tx_frame(
            frame_start,
            len,
            self.geometry.max_frame_len(),
            self.iface.mtu(),
        )
    }

    /// Reserves the next slot for a frame of `len` bytes, if one is free. Nothing is sent until
    /// the returned [`TxSlot`] is committed and the ring flushed.
    ///
    /// A `len` beyond the slot size or the link MTU is an error here; `len` is checked against the
    /// MTU without a VLAN tag (use [`send`](Self::send) for tagged frames up to MTU + 18).
    pub fn try_reserve(&mut self, len: usize) -> Result<Option<TxSlot<'_>>> {
        self.check_len(&[], len)?;
        self.reserve_checked(len)
    }

    fn reserve_checked(&mut self, len: usize) -> Result<Option<TxSlot<'_>>> {
        let i = self.next;
        match SlotState::of(self.status(i).load(Ordering::Acquire)) {
            SlotState::Free => {}
            SlotState::Rejected => {
                // The kernel refused this frame earlier; reclaim the slot and say so.
                self.status(i)
                    .store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
                return Err(Error::Io {
                    operation: "TX ring",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the kernel rejected a queued frame (TP_STATUS_WRONG_FORMAT)",
                    ),
                });
            }
            SlotState::Busy => return Ok(None),
        }
        Ok(Some(TxSlot {
            tx: self,
            index: i,
            len,
        }))
    }

    /// Reserves the next slot, waiting up to `timeout` (`None`: forever) for one to free up.
    /// Flushes queued frames before waiting, so the wait can end. `Ok(None)` on timeout.
    pub fn reserve(&mut self, len: usize, timeout: Option<Duration>) -> Result<Option<TxSlot<'_>>> {
        self.check_len(&[], len)?;
        if !self.wait_slot(timeout)? {
            return Ok(None);
        }
        self.reserve_checked(len)
    }

    /// Copies `frame` into a free slot and commits it (one copy). Returns `false` if the ring is
    /// full; the frame is then not queued.
    pub fn try_send(&mut self, frame: &[u8]) -> Result<bool> {
        self.check_len(frame, frame.len())?;
        match self.reserve_checked(frame.len())? {
            Some(mut slot) => {
                slot.data_mut().copy_from_slice(frame);
                slot.commit();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Copies `frame` into a slot, waiting for one if the ring is full, and commits it.
    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.check_len(frame, frame.len())?;
        loop {
            if self.try_send(frame)? {
                return Ok(());
            }
            self.wait_slot(None)?;
        }
    }

    /// Waits until the next slot is free. Returns false on timeout.
    fn wait_slot(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.next_slot_free() {
                return Ok(true);
            }
            // Frames only complete once the kernel has them.
            self.flush()?;
            if !self.wait_completion(deadline)? {
                return Ok(false);
            }
        }
    }

    /// True if the slot the next frame goes into is free.
    pub(crate) fn next_slot_free(&self) -> bool {
        SlotState::of(self.status(self.next).load(Ordering::Acquire)) != SlotState::Busy
    }

    /// Waits for a completion event, up to `deadline`; false once the deadline has passed.
    ///
    /// The kernel signals completions only while the socket's send buffer is less than half
    /// full, so the wait is capped at a few milliseconds and the caller re-checks (and re-kicks).
    fn wait_completion(&mut self, deadline: Option<Instant>) -> Result<bool> {
        const CAP: Duration = Duration::from_millis(5);
        let step = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(false);
                }
                (d - now).min(CAP)
            }
            None => CAP,
        };
        let events = self
            .epoll
            .wait(Some(step))
            .map_err(|e| Error::os("epoll_wait", e))?;
        if events.socket & libc::EPOLLERR as u32 != 0 {
            if let Some(e) = self.sock.take_error()? {
                return Err(self.map_send_error(e));
            }
        }
        Ok(true)
    }

    /// The descriptor that is readable while the ring has a pending event (a completion or an
    /// error); async runtimes watch it, then call [`consume_events`](Self::consume_events).
    pub(crate) fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Collects pending events without blocking; a socket error becomes an `Err`.
    pub(crate) fn consume_events(&mut self) -> Result<()> {
        let events = self
            .epoll
            .wait(Some(Duration::ZERO))
            .map_err(|e| Error::os("epoll_wait", e))?;
        if events.socket & libc::EPOLLERR as u32 != 0 {
            if let Some(e) = self.sock.take_error()? {
                return Err(self.map_send_error(e));
            }
        }
        Ok(())
    }

    fn map_send_error(&self, e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ENETDOWN) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                if self.sock.interface_exists(self.iface.index()) {
                    Error::InterfaceDown {
                        name: self.iface.name().to_owned(),
                    }
                } else {
                    Error::InterfaceGone {
                        name: self.iface.name().to_owned(),
                        index: self.iface.index(),
                    }
                }
            }
            _ => Error::os("TX ring send", e),
        }
    }

    /// Frames committed but not yet handed to the kernel by a flush.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Asks the kernel to send every committed frame (`send(2)` with `MSG_DONTWAIT`).
    pub fn flush(&mut self) -> Result<()> {
        self.queued = 0;
        match sys::send_kick(self.sock.as_fd(), libc::MSG_DONTWAIT) {
            Ok(_) => Ok(()),
            // Send buffer or device queue full: frames stay queued and the next flush (after a
            // completion) hands them over.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) => {
                Ok(())
            }
            Err(e) => Err(self.map_send_error(e)),
        }
    }

    /// Frames committed and not yet sent (queued or in flight).
    pub fn in_flight(&self) -> usize {
        (0..self.frame_count())
            .filter(|&i| SlotState::of(self.status(i).load(Ordering::Acquire)) == SlotState::Busy)
            .count()
    }

    /// Flushes, then waits up to `timeout` (`None`: forever) until the kernel has finished with
    /// every committed frame. Returns true when all are sent.
    pub fn wait_sent(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.flush()?;
            if self.in_flight() == 0 {
                return Ok(true);
            }
            if !self.wait_completion(deadline)? {
                return Ok(false);
            }
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        // Committed frames are handed over even if nobody flushed: the kernel copies them out of
        // the ring during this call.
        if self.queued > 0 {
            let _ = sys::send_kick(self.sock.as_fd(), libc::MSG_DONTWAIT);
        }
    }
}

impl AsFd for Injector {
    /// The packet socket (writable when the kernel's current slot is free).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// A reserved TX slot. Write the frame with [`data_mut`](Self::data_mut), then
/// [`commit`](Self::commit); dropping it uncommitted leaves the slot free and sends nothing.
///
/// ```no_run
/// # fn f(tx: &mut netring::Injector) -> netring::Result<()> {
/// if let Some(mut slot) = tx.try_reserve(64)? {
///     let buf = slot.data_mut();
///     buf[..6].copy_from_slice(&[0xff; 6]); // broadcast destination
///     buf[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
///     slot.commit();
/// }
/// tx.flush()?;
/// # Ok(()) }
/// ```
pub struct TxSlot<'a> {
    tx: &'a mut Injector,
    index: usize,
    len: usize,
}

impl TxSlot<'_> {
    /// The frame's bytes, in place in the ring (initially whatever the slot last held).
    pub fn data_mut(&mut self) -> &mut [u8] {
        let off = self.tx.geometry.frame_offset(self.index) + TX_DATA_OFFSET;
        assert!(off + self.len <= self.tx.mem.len());
        // SAFETY: in bounds (checked above); the slot's status is AVAILABLE, so the kernel does
        // not read or write it until we publish SEND_REQUEST, and `&mut self` makes this the only
        // reference into the slot on our side.
        unsafe { std::slice::from_raw_parts_mut(self.tx.mem.as_ptr().add(off), self.len) }
    }

    /// Shortens the frame to `len` bytes (it cannot grow past the reserved length).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Queues the frame. It leaves on the next [`Injector::flush`].
    pub fn commit(self) {
        let off = self.tx.geometry.frame_offset(self.index);
        let len = self.len as u32;
        // SAFETY: the slot header (tpacket2_hdr) is in bounds and ours while AVAILABLE; tp_len is
        // a plain u32 at offset 4, 4-byte aligned.
        unsafe {
            std::ptr::write_volatile(self.tx.mem.as_ptr().add(off + TX_LEN) as *mut u32, len);
        }
        // Release: the frame bytes and tp_len are visible to the kernel before the status flips.
        self.tx
            .status(self.index)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx.next = (self.index + 1) % self.tx.frame_count();
        self.tx.queued += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_lays_frames_in_blocks() {
        let g = TxGeometry::new(2048, 256, 4096).unwrap();
        assert_eq!(g.block_size, 4096);
        assert_eq!(g.frames_per_block, 2);
        assert_eq!(g.frame_count(), 256);
        assert_eq!(g.frame_offset(0), 0);
        assert_eq!(g.frame_offset(1), 2048);
        assert_eq!(g.frame_offset(2), 4096);
        assert_eq!(g.max_frame_len(), 2048 - 32);
        // A frame size that does not divide the block leaves a tail unused.
        let g = TxGeometry::new(1536, 5, 4096).unwrap();
        assert_eq!(g.frames_per_block, 2);
        assert_eq!(g.frame_count(), 6);
        assert_eq!(g.frame_offset(2), 4096);
        // Jumbo frames span several pages.
        let g = TxGeometry::new(10240, 4, 4096).unwrap();
        assert_eq!(g.block_size, 12288);
        assert_eq!(g.frame_offset(3), 3 * 12288);
    }

    #[test]
    fn geometry_errors() {
        assert!(matches!(
            TxGeometry::new(2047, 4, 4096),
            Err(GeometryError::FrameSizeUnaligned { .. })
        ));
        assert!(matches!(
            TxGeometry::new(32, 4, 4096),
            Err(GeometryError::FrameSizeTooSmall { .. })
        ));
        assert!(matches!(
            TxGeometry::new(2048, 0, 4096),
            Err(GeometryError::Empty { .. })
        ));
    }

    #[test]
    fn slot_state_ignores_timestamp_bits() {
        assert_eq!(SlotState::of(0), SlotState::Free);
        assert_eq!(SlotState::of(libc::TP_STATUS_TS_SOFTWARE), SlotState::Free);
        assert_eq!(SlotState::of(libc::TP_STATUS_SEND_REQUEST), SlotState::Busy);
        assert_eq!(SlotState::of(libc::TP_STATUS_SENDING), SlotState::Busy);
        assert_eq!(
            SlotState::of(libc::TP_STATUS_WRONG_FORMAT),
            SlotState::Rejected
        );
    }
}
