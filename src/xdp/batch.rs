//! Owned zero-copy RX batches of an AF_XDP socket, and frames taken out of them.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::umem::Umem;
use crate::sys::Epoll;

/// Descriptor vectors handed out to batches and given back on drop, so steady-state reception
/// allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct DescPool {
    free: Mutex<Vec<Vec<libc::xdp_desc>>>,
}

impl DescPool {
    pub(crate) fn take(&self, capacity: usize) -> Vec<libc::xdp_desc> {
        let mut v = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        v
    }

    fn give(&self, v: Vec<libc::xdp_desc>) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

/// What batches share with their socket: the UMEM, the descriptor pool, and the socket's epoll
/// set, through which a frame released on another thread wakes a waiting reader.
#[derive(Debug)]
pub(crate) struct Shared {
    pub umem: Umem,
    pub pool: DescPool,
    /// The socket's epoll set (the one the async runtimes watch too).
    pub epoll: Epoll,
    /// Set while the socket's owner waits for RX events: released RX frames then reach the fill
    /// ring only once it wakes, and with an empty fill ring no frame would arrive to wake it.
    pub waiting: AtomicBool,
}

impl Shared {
    /// Hands RX frames back and, if the owner is waiting, wakes it (the epoll set's timer) so it
    /// puts them on the fill ring.
    pub(crate) fn recycle(&self, addrs: impl Iterator<Item = u64>) {
        self.umem.recycle(addrs);
        // Pairs with the owner's `waiting = true` then `take_recycled` (under the same lock as
        // `recycle`): either it took these frames, or this sees the flag.
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            let _ = self.epoll.arm_timer(Duration::ZERO);
        }
    }
}

/// Marks a descriptor whose frame was taken out of its batch.
const TAKEN: u64 = u64::MAX;

/// Frames the kernel delivered together on an AF_XDP socket's RX ring.
///
/// Like the AF_PACKET [`Batch`](crate::Batch): owned, `Send + Sync`, holdable while later batches
/// are read, and dropped in any order from any thread; its frames go back to the fill ring when it
/// drops. Packet data is borrowed from the batch.
///
/// ```no_run
/// # fn f(xsk: &mut netring::xdp::XdpSocket) -> netring::Result<()> {
/// if let Some(batch) = xsk.next_batch(None)? {
///     for pkt in &batch {
///         println!("{} bytes", pkt.len());
///     }
/// }
/// # Ok(()) }
/// ```
pub struct XdpBatch {
    shared: Arc<Shared>,
    descs: Vec<libc::xdp_desc>,
}

impl XdpBatch {
    pub(crate) fn new(shared: Arc<Shared>, descs: Vec<libc::xdp_desc>) -> Self {
        Self { shared, descs }
    }

    /// Number of packets (including any taken out with [`take`](Self::take)).
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    /// True if the batch holds no packets.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// Iterates over the packets still in the batch.
    pub fn iter(&self) -> XdpPackets<'_> {
        XdpPackets {
            batch: self,
            next: 0,
        }
    }

    /// The `i`th packet, unless it was taken.
    pub fn get(&self, i: usize) -> Option<XdpPacket<'_>> {
        let d = self.descs.get(i)?;
        if d.addr == TAKEN {
            return None;
        }
        // SAFETY: the batch owns this frame (it came off the RX ring and has not been recycled or
        // taken); the kernel validated addr/len against the UMEM and `slice` re-checks bounds.
        let data = unsafe { self.shared.umem.slice(d.addr, d.len) };
        Some(XdpPacket { data })
    }

    /// Takes the `i`th frame out of the batch, e.g. to transmit it without a copy
    /// ([`XdpSocket::send_frame`](super::XdpSocket::send_frame)). The batch no longer recycles it.
    pub fn take(&mut self, i: usize) -> Option<XdpFrame> {
        let d = self.descs.get_mut(i)?;
        if d.addr == TAKEN {
            return None;
        }
        let frame = XdpFrame {
            shared: self.shared.clone(),
            addr: d.addr,
            len: d.len,
        };
        d.addr = TAKEN;
        Some(frame)
    }
}

impl Drop for XdpBatch {
    fn drop(&mut self) {
        let layout = self.shared.umem.layout;
        self.shared.recycle(
            self.descs
                .iter()
                .filter(|d| d.addr != TAKEN)
                .map(|d| layout.frame_addr(layout.frame_of(d.addr))),
        );
        let descs = std::mem::take(&mut self.descs);
        self.shared.pool.give(descs);
    }
}

impl fmt::Debug for XdpBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpBatch")
            .field("packets", &self.descs.len())
            .finish()
    }
}

impl<'a> IntoIterator for &'a XdpBatch {
    type Item = XdpPacket<'a>;
    type IntoIter = XdpPackets<'a>;
    fn into_iter(self) -> XdpPackets<'a> {
        self.iter()
    }
}

/// Iterator over the packets of an [`XdpBatch`].
pub struct XdpPackets<'a> {
    batch: &'a XdpBatch,
    next: usize,
}

impl<'a> Iterator for XdpPackets<'a> {
    type Item = XdpPacket<'a>;
    fn next(&mut self) -> Option<XdpPacket<'a>> {
        while self.next < self.batch.descs.len() {
            let i = self.next;
            self.next += 1;
            if let Some(p) = self.batch.get(i) {
                return Some(p);
            }
        }
        None
    }
}

/// A zero-copy view of one received frame.
#[derive(Clone, Copy)]
pub struct XdpPacket<'a> {
    data: &'a [u8],
}

impl<'a> XdpPacket<'a> {
    /// The frame, from the Ethernet header.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a zero-length frame (never delivered in practice).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl fmt::Debug for XdpPacket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpPacket")
            .field("len", &self.data.len())
            .finish()
    }
}

/// A received frame taken out of its batch: owned UMEM memory, transmittable without a copy.
/// Dropped unsent, it goes back to the fill ring.
pub struct XdpFrame {
    shared: Arc<Shared>,
    addr: u64,
    len: u32,
}

impl XdpFrame {
    /// The frame bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: this handle owns the frame (taken out of its batch).
        unsafe { self.shared.umem.slice(self.addr, self.len) }
    }

    /// The frame bytes, writable in place (e.g. to swap MAC addresses before forwarding).
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: this handle owns the frame exclusively and `&mut self` makes this the only
        // reference into it.
        unsafe { self.shared.umem.slice_mut(self.addr, self.len) }
    }

    /// Consumes the handle without recycling the frame; the caller now owns its address.
    pub(crate) fn into_raw(self) -> (Arc<Shared>, u64, u32) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so moving the Arc out of it happens exactly once.
        let shared = unsafe { std::ptr::read(&this.shared) };
        (shared, this.addr, this.len)
    }
}

/// Lets a received frame go into any TX `Sink` that copies (`B: AsRef<[u8]>`); to send it without a
/// copy on its own UMEM, use [`XdpSocket::send_frame`](super::XdpSocket::send_frame).
impl AsRef<[u8]> for XdpFrame {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for XdpFrame {
    fn drop(&mut self) {
        let layout = self.shared.umem.layout;
        self.shared.recycle(std::iter::once(
            layout.frame_addr(layout.frame_of(self.addr)),
        ));
    }
}

impl fmt::Debug for XdpFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpFrame")
            .field("addr", &self.addr)
            .field("len", &self.len)
            .finish()
    }
}
