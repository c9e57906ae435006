//! The TPACKET_V3 receive ring: shared block bookkeeping, and a bounds-checked block parser.
//!
//! The ring is `block_count` blocks of `block_size` bytes in one mapping. Each block starts with a
//! `tpacket_block_desc`; its `block_status` word says who owns it: `TP_STATUS_KERNEL` (the kernel
//! may fill it) or `TP_STATUS_USER` (retired, ours to read). The kernel fills blocks strictly in
//! ring order and stamps each with an increasing `seq_num`.
//!
//! Ownership on our side is a per-block count of live handles ([`Batch`](super::Batch) and
//! [`OwnedPacket`](super::OwnedPacket)). When it falls to zero the block is handed back by storing
//! `TP_STATUS_KERNEL` with release ordering. The reader yields a block only when it is
//! `TP_STATUS_USER`, has no live handles, and carries a sequence number newer than the last one
//! yielded, so a block is never yielded twice and never read while a handle to it is alive.
//!
//! Nothing in this file needs a kernel: [`RxRing::anonymous`] backs the same logic with plain
//! memory, which is how the unit tests below drive it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use crate::sys::Mmap;

// Byte offsets inside `struct tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
pub(crate) const BLK_STATUS: usize = 8;
pub(crate) const BLK_NUM_PKTS: usize = 12;
pub(crate) const BLK_FIRST_OFF: usize = 16;
pub(crate) const BLK_LEN: usize = 20;
pub(crate) const BLK_SEQ: usize = 24;
/// Size of the block header; packets start at or after this.
pub(crate) const BLK_HDR_LEN: usize = 48;

// Byte offsets inside `struct tpacket3_hdr`, followed by a `sockaddr_ll` at TPACKET_ALIGN(48).
pub(crate) const PKT_NEXT: usize = 0;
pub(crate) const PKT_SEC: usize = 4;
pub(crate) const PKT_NSEC: usize = 8;
pub(crate) const PKT_SNAPLEN: usize = 12;
pub(crate) const PKT_LEN: usize = 16;
pub(crate) const PKT_STATUS: usize = 20;
pub(crate) const PKT_MAC: usize = 24;
pub(crate) const PKT_RXHASH: usize = 28;
pub(crate) const PKT_VLAN_TCI: usize = 32;
pub(crate) const PKT_VLAN_TPID: usize = 36;
pub(crate) const SLL_PROTOCOL: usize = 48 + 2;
pub(crate) const SLL_IFINDEX: usize = 48 + 4;
pub(crate) const SLL_PKTTYPE: usize = 48 + 10;
/// `tpacket3_hdr` plus `sockaddr_ll`: the least a packet entry occupies before its data.
pub(crate) const PKT_HDR_LEN: usize = 48 + 20;

const _: () = assert!(std::mem::size_of::<libc::tpacket3_hdr>() == 48);
const _: () = assert!(std::mem::size_of::<libc::tpacket_block_desc>() == BLK_HDR_LEN);
const _: () = assert!(libc::TPACKET3_HDRLEN == PKT_HDR_LEN);

fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn rd_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(x)
}

/// What a retired block's header says, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockInfo {
    pub index: u32,
    pub num_pkts: u32,
    pub first_offset: u32,
    pub seq: u64,
    /// `TP_STATUS_*` bits of the block (e.g. `TP_STATUS_BLK_TMO`, `TP_STATUS_LOSING`).
    pub status: u32,
}

/// Per-packet metadata parsed (and bounds-checked) from a `tpacket3_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketMeta {
    /// Offset of the packet data within its block.
    pub data_offset: u32,
    pub snaplen: u32,
    pub len: u32,
    pub sec: u32,
    pub nsec: u32,
    pub status: u32,
    pub rxhash: u32,
    pub vlan_tci: u16,
    pub vlan_tpid: u16,
    /// Ethertype in host order, from `sll_protocol`.
    pub protocol: u16,
    pub ifindex: i32,
    pub pkttype: u8,
}

/// Parses the block header. `None` if it is not a plausible retired block of this geometry.
pub(crate) fn parse_block_header(block: &[u8], index: u32) -> Option<BlockInfo> {
    if block.len() < BLK_HDR_LEN {
        return None;
    }
    let num_pkts = rd_u32(block, BLK_NUM_PKTS);
    let first_offset = rd_u32(block, BLK_FIRST_OFF);
    let blk_len = rd_u32(block, BLK_LEN) as usize;
    if blk_len > block.len() {
        return None;
    }
    if num_pkts > 0
        && ((first_offset as usize) < BLK_HDR_LEN || first_offset as usize >= block.len())
    {
        return None;
    }
    Some(BlockInfo {
        index,
        num_pkts,
        first_offset,
        seq: rd_u64(block, BLK_SEQ),
        status: rd_u32(block, BLK_STATUS),
    })
}

/// Walks the packets of one retired block, checking every kernel-written offset against the block
/// before using it. Stops (and records it) at the first entry that does not fit.
#[derive(Debug, Clone)]
pub(crate) struct PacketWalker {
    offset: usize,
    remaining: u32,
    malformed: bool,
}

impl PacketWalker {
    pub(crate) fn new(info: &BlockInfo) -> Self {
        Self {
            offset: info.first_offset as usize,
            remaining: info.num_pkts,
            malformed: false,
        }
    }

    /// Number of packets not yet walked (as the block header claims).
    pub(crate) fn remaining(&self) -> u32 {
        self.remaining
    }

    /// True once an entry failed validation (the rest of the block is skipped).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_malformed(&self) -> bool {
        self.malformed
    }

    pub(crate) fn next(&mut self, block: &[u8]) -> Option<PacketMeta> {
        if self.remaining == 0 || self.malformed {
            return None;
        }
        let off = self.offset;
        match parse_packet(block, off) {
            Some((meta, next)) => {
                self.remaining -= 1;
                if self.remaining > 0 {
                    if next == 0 {
                        self.malformed = true;
                        self.remaining = 0;
                    } else {
                        self.offset = off + next as usize;
                    }
                }
                Some(meta)
            }
            None => {
                self.malformed = true;
                self.remaining = 0;
                None
            }
        }
    }
}

/// Parses the packet entry at `off`. Returns its metadata and `tp_next_offset`.
pub(crate) fn parse_packet(block: &[u8], off: usize) -> Option<(PacketMeta, u32)> {
    if off % 4 != 0 || off.checked_add(PKT_HDR_LEN)? > block.len() {
        return None;
    }
    let h = &block[off..];
    let snaplen = rd_u32(h, PKT_SNAPLEN);
    let mac = rd_u16(h, PKT_MAC) as usize;
    let data_offset = off.checked_add(mac)?;
    let data_end = data_offset.checked_add(snaplen as usize)?;
    if mac < PKT_HDR_LEN || data_end > block.len() {
        return None;
    }
    let next = rd_u32(h, PKT_NEXT);
    if next != 0 && off.checked_add(next as usize)? >= block.len() {
        return None;
    }
    let meta = PacketMeta {
        data_offset: data_offset as u32,
        snaplen,
        len: rd_u32(h, PKT_LEN),
        sec: rd_u32(h, PKT_SEC),
        nsec: rd_u32(h, PKT_NSEC),
        status: rd_u32(h, PKT_STATUS),
        rxhash: rd_u32(h, PKT_RXHASH),
        vlan_tci: rd_u32(h, PKT_VLAN_TCI) as u16,
        vlan_tpid: rd_u16(h, PKT_VLAN_TPID),
        protocol: u16::from_be(rd_u16(h, SLL_PROTOCOL)),
        ifindex: rd_u32(h, SLL_IFINDEX) as i32,
        pkttype: h[SLL_PKTTYPE],
    };
    Some((meta, next))
}

/// The ring memory and per-block handle counts, shared by the reader and every batch.
#[derive(Debug)]
pub(crate) struct RxRing {
    mem: Mmap,
    block_size: usize,
    block_count: usize,
    /// Live handles (batches and owned packets) per block; 0 = not held by the user.
    holds: Box<[AtomicU32]>,
    /// Set while the reader waits for a held block to be released.
    reader_waiting: AtomicBool,
    released: Mutex<()>,
    released_cv: Condvar,
    /// An async reader waiting for a held block to be released.
    release_waker: AtomicWaker,
}

impl RxRing {
    pub(crate) fn new(mem: Mmap, block_size: usize, block_count: usize) -> Self {
        assert!(mem.len() >= block_size * block_count);
        assert!(block_size >= BLK_HDR_LEN && block_size % 8 == 0);
        Self {
            mem,
            block_size,
            block_count,
            holds: (0..block_count).map(|_| AtomicU32::new(0)).collect(),
            reader_waiting: AtomicBool::new(false),
            released: Mutex::new(()),
            released_cv: Condvar::new(),
            release_waker: AtomicWaker::new(),
        }
    }

    /// A ring over zeroed anonymous memory, for driving the bookkeeping without a kernel.
    #[cfg(test)]
    pub(crate) fn anonymous(block_size: usize, block_count: usize) -> Self {
        Self::new(
            Mmap::anonymous(block_size * block_count).unwrap(),
            block_size,
            block_count,
        )
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    pub(crate) fn block_count(&self) -> usize {
        self.block_count
    }

    fn block_ptr(&self, index: usize) -> *mut u8 {
        assert!(index < self.block_count);
        // SAFETY: index < block_count and the mapping is at least block_size * block_count bytes.
        unsafe { self.mem.as_ptr().add(index * self.block_size) }
    }

    /// The block's status word, shared with the kernel.
    pub(crate) fn status_word(&self, index: usize) -> &AtomicU32 {
        // SAFETY: the word is inside block `index` of the live mapping, 4-byte aligned (blocks are
        // page aligned, the offset is 8), and only ever accessed atomically by us; the kernel
        // accesses it with its own barriers (smp_wmb before setting USER, smp_rmb after reading).
        unsafe { &*(self.block_ptr(index).add(BLK_STATUS) as *const AtomicU32) }
    }

    /// The bytes of a block.
    ///
    /// # Safety
    /// The caller must hold the block (its status is `TP_STATUS_USER` and its handle count is not
    /// zero, or the reader is deciding whether to take it right after reading `TP_STATUS_USER`):
    /// the kernel then does not write to it, and nobody on our side writes to it either.
    pub(crate) unsafe fn block_bytes(&self, index: usize) -> &[u8] {
        // SAFETY: in-bounds (see block_ptr); no concurrent writer per the caller's contract.
        unsafe { std::slice::from_raw_parts(self.block_ptr(index), self.block_size) }
    }

    /// True if block `index` is owned by the kernel and holds no packet yet (so the kernel's
    /// retire timer has nothing to hand over).
    pub(crate) fn kernel_block_is_empty(&self, index: usize) -> bool {
        if self.status_word(index).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0 {
            return false;
        }
        // SAFETY: in bounds and 4-byte aligned (see status_word); the kernel updates this counter
        // while filling the block, so it is only read atomically, never through a slice.
        let num_pkts = unsafe { &*(self.block_ptr(index).add(BLK_NUM_PKTS) as *const AtomicU32) };
        num_pkts.load(Ordering::Relaxed) == 0
    }

    /// Live handles on a block.
    pub(crate) fn holds(&self, index: usize) -> u32 {
        self.holds[index].load(Ordering::Acquire)
    }

    /// Adds a handle to a block that already has one.
    pub(crate) fn retain(&self, index: usize) {
        let prev = self.holds[index].fetch_add(1, Ordering::Relaxed);
        debug_assert!(prev > 0, "retain on a block nobody holds");
    }

    /// Drops a handle; the last one hands the block back to the kernel.
    pub(crate) fn release(&self, index: usize) {
        let prev = self.holds[index].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0, "release on a block nobody holds");
        if prev == 1 {
            // Release: our reads of the block happen-before the kernel's next writes to it.
            self.status_word(index)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.release_waker.wake();
            if self.reader_waiting.load(Ordering::SeqCst) {
                let _guard = self.released.lock().unwrap_or_else(|e| e.into_inner());
                self.released_cv.notify_all();
            }
        }
    }

    /// Registers `waker` to be woken when a block is handed back; returns true if block `index`
    /// is already free (checked after registering, so no release is missed).
    pub(crate) fn register_release(&self, index: usize, waker: &Waker) -> bool {
        self.release_waker.register(waker);
        self.holds(index) == 0
    }

    /// Waits (up to `timeout`) until block `index` has no live handles.
    pub(crate) fn wait_released(&self, index: usize, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.released.lock().unwrap_or_else(|e| e.into_inner());
        self.reader_waiting.store(true, Ordering::SeqCst);
        let done = loop {
            if self.holds(index) == 0 {
                break true;
            }
            match deadline {
                None => {
                    guard = self
                        .released_cv
                        .wait(guard)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break false;
                    }
                    guard = self
                        .released_cv
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        };
        self.reader_waiting.store(false, Ordering::SeqCst);
        done
    }
}

/// Why the block under the reader's cursor cannot be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// The kernel still owns it: wait for the socket to signal.
    Kernel,
    /// The user still holds it from the previous lap: wait for a release.
    HeldByUser,
}

/// The reader's cursor over the ring: which block comes next and the last sequence number seen.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    next: usize,
    last_seq: Option<u64>,
    /// Blocks missing between consecutive sequence numbers.
    pub gaps: u64,
    /// Blocks whose header was implausible and were handed straight back.
    pub malformed: u64,
}

impl Cursor {
    /// Index of the block the cursor reads next.
    pub(crate) fn next_index(&self) -> usize {
        self.next
    }

    /// Takes the block under the cursor if it is ready, setting its handle count to one and moving
    /// the cursor on. The caller owns the returned hold and must `release` it exactly once.
    pub(crate) fn take(&mut self, ring: &RxRing) -> Result<BlockInfo, NotReady> {
        loop {
            let index = self.next;
            if ring.holds(index) != 0 {
                return Err(NotReady::HeldByUser);
            }
            // Acquire: the kernel's writes to the block happen-before our reads below.
            let status = ring.status_word(index).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                return Err(NotReady::Kernel);
            }
            // SAFETY: status is USER and no handle exists: the kernel does not touch the block and
            // nobody else reads or writes it.
            let bytes = unsafe { ring.block_bytes(index) };
            let Some(info) = parse_block_header(bytes, index as u32) else {
                // Not a block the kernel could have written for this geometry: give it back so the
                // ring keeps moving, and count it.
                self.malformed += 1;
                ring.status_word(index)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                self.next = (index + 1) % ring.block_count();
                continue;
            };
            if let Some(last) = self.last_seq {
                if info.seq <= last {
                    // Still the content we yielded a lap ago (the user released it, but the status
                    // store raced with our handle check). Not new.
                    return Err(NotReady::Kernel);
                }
                self.gaps += info.seq - last - 1;
            }
            self.last_seq = Some(info.seq);
            ring.holds[index].store(1, Ordering::Release);
            self.next = (index + 1) % ring.block_count();
            return Ok(info);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a retired block as the kernel would: `pkts` are (data, wire_len) pairs.
    pub(crate) fn kernel_fill(ring: &RxRing, index: usize, seq: u64, pkts: &[(&[u8], u32)]) {
        let size = ring.block_size();
        let mut buf = vec![0u8; size];
        let mut off = BLK_HDR_LEN;
        buf[BLK_FIRST_OFF..BLK_FIRST_OFF + 4].copy_from_slice(&(off as u32).to_ne_bytes());
        buf[BLK_NUM_PKTS..BLK_NUM_PKTS + 4].copy_from_slice(&(pkts.len() as u32).to_ne_bytes());
        buf[BLK_SEQ..BLK_SEQ + 8].copy_from_slice(&seq.to_ne_bytes());
        for (i, (data, wire)) in pkts.iter().enumerate() {
            let mac = PKT_HDR_LEN.next_multiple_of(16) + 2;
            let entry = (mac + data.len()).next_multiple_of(16);
            let next = if i + 1 == pkts.len() { 0 } else { entry as u32 };
            let h = &mut buf[off..];
            h[PKT_NEXT..PKT_NEXT + 4].copy_from_slice(&next.to_ne_bytes());
            h[PKT_SEC..PKT_SEC + 4].copy_from_slice(&(seq as u32).to_ne_bytes());
            h[PKT_NSEC..PKT_NSEC + 4].copy_from_slice(&(i as u32).to_ne_bytes());
            h[PKT_SNAPLEN..PKT_SNAPLEN + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            h[PKT_LEN..PKT_LEN + 4].copy_from_slice(&wire.to_ne_bytes());
            h[PKT_MAC..PKT_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            h[SLL_IFINDEX..SLL_IFINDEX + 4].copy_from_slice(&7i32.to_ne_bytes());
            h[mac..mac + data.len()].copy_from_slice(data);
            off += entry;
        }
        buf[BLK_LEN..BLK_LEN + 4].copy_from_slice(&(off as u32).to_ne_bytes());
        assert_eq!(ring.holds(index), 0, "kernel filled a block the user holds");
        // SAFETY (test): the block is not held and the status says KERNEL, so we play the kernel.
        assert_eq!(ring.status_word(index).load(Ordering::Acquire), 0);
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), ring.block_ptr(index), size);
        }
        ring.status_word(index)
            .store(libc::TP_STATUS_USER, Ordering::Release);
    }

    fn packets(ring: &RxRing, info: &BlockInfo) -> Vec<Vec<u8>> {
        // SAFETY (test): the block is held by the test.
        let bytes = unsafe { ring.block_bytes(info.index as usize) };
        let mut w = PacketWalker::new(info);
        let mut out = Vec::new();
        while let Some(m) = w.next(bytes) {
            let s = m.data_offset as usize;
            out.push(bytes[s..s + m.snaplen as usize].to_vec());
        }
        assert!(!w.is_malformed());
        out
    }

    #[test]
    fn yields_in_order_and_never_twice() {
        let ring = RxRing::anonymous(4096, 4);
        let mut cur = Cursor::default();
        assert_eq!(cur.take(&ring), Err(NotReady::Kernel));
        kernel_fill(&ring, 0, 1, &[(b"abc", 3), (b"defgh", 60)]);
        let b0 = cur.take(&ring).unwrap();
        assert_eq!(b0.index, 0);
        assert_eq!(
            packets(&ring, &b0),
            vec![b"abc".to_vec(), b"defgh".to_vec()]
        );
        assert_eq!(cur.take(&ring), Err(NotReady::Kernel));
        kernel_fill(&ring, 1, 2, &[(b"x", 1)]);
        kernel_fill(&ring, 2, 3, &[(b"y", 1)]);
        kernel_fill(&ring, 3, 4, &[(b"z", 1)]);
        let b1 = cur.take(&ring).unwrap();
        let b2 = cur.take(&ring).unwrap();
        let b3 = cur.take(&ring).unwrap();
        assert_eq!((b1.seq, b2.seq, b3.seq), (2, 3, 4));
        // Wrapped: block 0 is still held, so it is not yielded again.
        assert_eq!(cur.take(&ring), Err(NotReady::HeldByUser));
        // Released out of order.
        ring.release(2);
        ring.release(0);
        // Block 0 is free but the kernel has not refilled it: stale content is not yielded.
        ring.status_word(0)
            .store(libc::TP_STATUS_USER, Ordering::Release);
        assert_eq!(cur.take(&ring), Err(NotReady::Kernel));
        ring.status_word(0)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        kernel_fill(&ring, 0, 5, &[(b"again", 5)]);
        let b0b = cur.take(&ring).unwrap();
        assert_eq!(packets(&ring, &b0b), vec![b"again".to_vec()]);
        // Block 1 is next and still held.
        assert_eq!(cur.take(&ring), Err(NotReady::HeldByUser));
        assert_eq!(cur.gaps, 0);
        ring.release(1);
        ring.release(3);
        ring.release(0);
        for i in 0..4 {
            assert_eq!(ring.holds(i), 0);
        }
    }

    #[test]
    fn retained_handles_keep_block_until_last_release() {
        let ring = RxRing::anonymous(4096, 2);
        let mut cur = Cursor::default();
        kernel_fill(&ring, 0, 1, &[(b"p", 1)]);
        let b = cur.take(&ring).unwrap();
        ring.retain(b.index as usize);
        ring.retain(b.index as usize);
        ring.release(0);
        ring.release(0);
        assert_eq!(
            ring.status_word(0).load(Ordering::Acquire),
            libc::TP_STATUS_USER
        );
        ring.release(0);
        assert_eq!(
            ring.status_word(0).load(Ordering::Acquire),
            libc::TP_STATUS_KERNEL
        );
    }

    #[test]
    fn sequence_gaps_are_counted() {
        let ring = RxRing::anonymous(4096, 2);
        let mut cur = Cursor::default();
        kernel_fill(&ring, 0, 10, &[(b"a", 1)]);
        kernel_fill(&ring, 1, 13, &[(b"b", 1)]);
        cur.take(&ring).unwrap();
        cur.take(&ring).unwrap();
        assert_eq!(cur.gaps, 2);
    }

    #[test]
    fn wait_released_wakes_on_release_from_another_thread() {
        let ring = std::sync::Arc::new(RxRing::anonymous(4096, 1));
        let mut cur = Cursor::default();
        kernel_fill(&ring, 0, 1, &[(b"a", 1)]);
        cur.take(&ring).unwrap();
        assert!(!ring.wait_released(0, Some(Duration::from_millis(20))));
        let r2 = ring.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            r2.release(0);
        });
        assert!(ring.wait_released(0, Some(Duration::from_secs(10))));
        t.join().unwrap();
    }

    #[test]
    fn malformed_offsets_are_rejected() {
        let mut block = vec![0u8; 4096];
        // Header claims packets past the block.
        block[BLK_NUM_PKTS..BLK_NUM_PKTS + 4].copy_from_slice(&1u32.to_ne_bytes());
        block[BLK_FIRST_OFF..BLK_FIRST_OFF + 4].copy_from_slice(&5000u32.to_ne_bytes());
        assert!(parse_block_header(&block, 0).is_none());
        block[BLK_FIRST_OFF..BLK_FIRST_OFF + 4].copy_from_slice(&48u32.to_ne_bytes());
        block[BLK_LEN..BLK_LEN + 4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_block_header(&block, 0).is_none());
        block[BLK_LEN..BLK_LEN + 4].copy_from_slice(&4096u32.to_ne_bytes());
        let info = parse_block_header(&block, 0).unwrap();
        // Packet whose snaplen runs past the block.
        let h = 48;
        block[h + PKT_MAC..h + PKT_MAC + 2].copy_from_slice(&82u16.to_ne_bytes());
        block[h + PKT_SNAPLEN..h + PKT_SNAPLEN + 4].copy_from_slice(&4000u32.to_ne_bytes());
        let mut w = PacketWalker::new(&info);
        assert!(w.next(&block).is_none());
        assert!(w.is_malformed());
        // tp_mac pointing inside the header.
        block[h + PKT_SNAPLEN..h + PKT_SNAPLEN + 4].copy_from_slice(&10u32.to_ne_bytes());
        block[h + PKT_MAC..h + PKT_MAC + 2].copy_from_slice(&4u16.to_ne_bytes());
        assert!(PacketWalker::new(&info).next(&block).is_none());
        // Valid entry whose next offset leaves the block.
        block[h + PKT_MAC..h + PKT_MAC + 2].copy_from_slice(&82u16.to_ne_bytes());
        block[h + PKT_NEXT..h + PKT_NEXT + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_packet(&block, h).is_none());
    }

    #[test]
    fn a_malformed_block_header_is_given_back_and_skipped() {
        let ring = RxRing::anonymous(4096, 2);
        let mut cur = Cursor::default();
        // Block 0: USER but nonsense header; block 1: valid.
        // SAFETY (test): nobody holds block 0.
        unsafe {
            let p = ring.block_ptr(0);
            std::ptr::write_bytes(p.add(BLK_LEN), 0xff, 4);
        }
        ring.status_word(0)
            .store(libc::TP_STATUS_USER, Ordering::Release);
        kernel_fill(&ring, 1, 2, &[(b"ok", 2)]);
        let b = cur.take(&ring).unwrap();
        assert_eq!(b.index, 1);
        assert_eq!(cur.malformed, 1);
        assert_eq!(ring.status_word(0).load(Ordering::Acquire), 0);
    }

    /// A tiny deterministic PRNG (xorshift64*) for the randomized tests below.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform-ish in `0..n` (`n > 0`).
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }
        /// A value a corrupt or hostile header might hold: boundaries, near-misses, noise.
        fn nasty_u32(&mut self, block_len: usize, orig: u32) -> u32 {
            let small = self.below(17) as i64 - 8;
            match self.below(9) {
                0 => self.next() as u32,
                1 => 0,
                2 => u32::MAX,
                3 => (block_len as i64 + small).max(0) as u32,
                4 => (orig as i64 + small).clamp(0, u32::MAX as i64) as u32,
                5 => orig ^ (1 << self.below(32)),
                6 => self.below(block_len + 1) as u32,
                7 => self.below(256) as u32,
                _ => (u16::MAX as i64 + small) as u32,
            }
        }
    }

    /// Random packets (data, wire_len) that `kernel_fill` can lay out in a block of `block_size`.
    fn random_packets(
        rng: &mut XorShift,
        block_size: usize,
        max_pkts: usize,
    ) -> Vec<(Vec<u8>, u32)> {
        let mut room = block_size - BLK_HDR_LEN;
        let mut out = Vec::new();
        let mac = PKT_HDR_LEN.next_multiple_of(16) + 2;
        while out.len() < max_pkts {
            let len = rng.below(room.saturating_sub(mac).min(300) + 1);
            let entry = (mac + len).next_multiple_of(16);
            if entry > room {
                break;
            }
            room -= entry;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let wire = len as u32 + rng.below(100) as u32;
            out.push((data, wire));
        }
        out
    }

    fn fill_random(ring: &RxRing, index: usize, seq: u64, pkts: &[(Vec<u8>, u32)]) {
        let refs: Vec<(&[u8], u32)> = pkts.iter().map(|(d, w)| (&d[..], *w)).collect();
        kernel_fill(ring, index, seq, &refs);
    }

    /// Walks `block` as the batch iterator does, checking that the walk stays inside the block
    /// and ends. Returns the packets' data.
    fn checked_walk(block: &[u8]) -> Option<(Vec<Vec<u8>>, bool)> {
        let info = parse_block_header(block, 0)?;
        if info.num_pkts > 0 {
            assert!(info.first_offset as usize >= BLK_HDR_LEN);
            assert!((info.first_offset as usize) < block.len());
        }
        let mut w = PacketWalker::new(&info);
        let mut out = Vec::new();
        // Every step moves forward by at least 4 bytes (aligned, non-zero next offset).
        let bound = block.len() / 4 + 2;
        let mut finished = false;
        let mut remaining = w.remaining();
        for _ in 0..bound {
            let Some(m) = w.next(block) else {
                finished = true;
                break;
            };
            let start = m.data_offset as usize;
            let end = start + m.snaplen as usize;
            assert!(
                start >= BLK_HDR_LEN + PKT_HDR_LEN,
                "data inside the headers"
            );
            assert!(
                end <= block.len(),
                "packet data {start}..{end} past the block"
            );
            assert!(w.remaining() < remaining, "walker did not advance");
            remaining = w.remaining();
            out.push(block[start..end].to_vec());
        }
        assert!(finished, "walker did not stop within {bound} steps");
        assert!(out.len() <= info.num_pkts as usize);
        // Once done, it stays done.
        assert!(w.next(block).is_none());
        assert_eq!(w.remaining(), 0);
        Some((out, w.is_malformed()))
    }

    /// Writes raw bytes into a block as if the kernel had retired it.
    fn kernel_write_raw(ring: &RxRing, index: usize, bytes: &[u8]) {
        assert_eq!(ring.holds(index), 0);
        assert_eq!(bytes.len(), ring.block_size());
        // SAFETY (test): the block is not held; we play the kernel.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ring.block_ptr(index), bytes.len());
        }
        ring.status_word(index)
            .store(libc::TP_STATUS_USER, Ordering::Release);
    }

    #[test]
    fn randomly_corrupted_blocks_never_escape_the_block() {
        const BLOCKS: usize = 6000;
        let sizes = [256usize, 1024, 4096];
        let rings: Vec<std::sync::Arc<RxRing>> = sizes
            .iter()
            .map(|&s| std::sync::Arc::new(RxRing::anonymous(s, 1)))
            .collect();
        let mut rng = XorShift::new(0x5eed_0001);
        let (mut parsed, mut yielded, mut malformed_walks) = (0u64, 0u64, 0u64);
        for iter in 0..BLOCKS {
            let which = rng.below(sizes.len());
            let (size, ring) = (sizes[which], &rings[which]);
            let max_pkts = 1 + rng.below(12);
            let pkts = random_packets(&mut rng, size, max_pkts);
            fill_random(ring, 0, iter as u64 + 1, &pkts);
            // SAFETY (test): status is USER and nobody holds the block.
            let mut block = unsafe { ring.block_bytes(0) }.to_vec();
            ring.status_word(0)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);

            // The untouched block reads back exactly.
            let (got, bad) = checked_walk(&block).expect("valid block rejected");
            assert!(!bad);
            let want: Vec<Vec<u8>> = pkts.iter().map(|(d, _)| d.clone()).collect();
            assert_eq!(got, want, "iteration {iter}");

            // Entry offsets, as kernel_fill lays them out.
            let mut entries = Vec::new();
            let mut off = BLK_HDR_LEN;
            for (d, _) in &pkts {
                entries.push(off);
                off += (PKT_HDR_LEN.next_multiple_of(16) + 2 + d.len()).next_multiple_of(16);
            }

            if rng.one_in(12) {
                // Pure noise.
                block.iter_mut().for_each(|b| *b = rng.next() as u8);
                if rng.one_in(2) {
                    let n = rng.below(4) as u32;
                    block[BLK_NUM_PKTS..BLK_NUM_PKTS + 4].copy_from_slice(&n.to_ne_bytes());
                    let f = (BLK_HDR_LEN + 4 * rng.below(8)) as u32;
                    block[BLK_FIRST_OFF..BLK_FIRST_OFF + 4].copy_from_slice(&f.to_ne_bytes());
                    block[BLK_LEN..BLK_LEN + 4].copy_from_slice(&0u32.to_ne_bytes());
                }
            }
            for _ in 0..1 + rng.below(6) {
                let put32 = |b: &mut [u8], at: usize, v: u32| {
                    b[at..at + 4].copy_from_slice(&v.to_ne_bytes())
                };
                let get32 = |b: &[u8], at: usize| rd_u32(b, at);
                match rng.below(10) {
                    0 => {
                        let v = rng.nasty_u32(size, get32(&block, BLK_NUM_PKTS));
                        put32(&mut block, BLK_NUM_PKTS, v);
                    }
                    1 => {
                        let v = rng.nasty_u32(size, get32(&block, BLK_FIRST_OFF));
                        put32(&mut block, BLK_FIRST_OFF, v);
                    }
                    2 => {
                        let v = rng.nasty_u32(size, get32(&block, BLK_LEN));
                        put32(&mut block, BLK_LEN, v);
                    }
                    3..=8 if !entries.is_empty() => {
                        let e = entries[rng.below(entries.len())];
                        let field = [
                            PKT_NEXT,
                            PKT_SNAPLEN,
                            PKT_MAC,
                            PKT_LEN,
                            PKT_NEXT,
                            PKT_SNAPLEN,
                        ][rng.below(6)];
                        if field == PKT_MAC {
                            let v = rng.nasty_u32(size, rd_u16(&block, e + PKT_MAC) as u32) as u16;
                            block[e + PKT_MAC..e + PKT_MAC + 2].copy_from_slice(&v.to_ne_bytes());
                        } else if rng.one_in(4) {
                            // A random byte of the entry header.
                            let at = e + rng.below(PKT_HDR_LEN);
                            block[at] ^= 1 + rng.below(255) as u8;
                        } else {
                            let v = rng.nasty_u32(size, get32(&block, e + field));
                            put32(&mut block, e + field, v);
                        }
                    }
                    _ => {
                        let at = if rng.one_in(2) {
                            rng.below(BLK_HDR_LEN)
                        } else {
                            rng.below(size)
                        };
                        block[at] ^= 1 + rng.below(255) as u8;
                    }
                }
            }

            // The parser over the (possibly truncated) bytes.
            let view = if rng.one_in(8) {
                &block[..rng.below(size + 1)]
            } else {
                &block[..]
            };
            if let Some((got, bad)) = checked_walk(view) {
                parsed += 1;
                yielded += got.len() as u64;
                malformed_walks += bad as u64;
            }

            // The same bytes through the real path: cursor, batch, packet views, owned packets.
            kernel_write_raw(ring, 0, &block);
            let mut cur = Cursor::default();
            match cur.take(ring) {
                Ok(info) => {
                    let batch = crate::afpacket::Batch::new(ring.clone(), info);
                    let mut owned = Vec::new();
                    for p in &batch {
                        let d = p.data();
                        assert_eq!(d.len(), p.capture_len());
                        let _ = (
                            p.vlan(),
                            p.timestamp_source(),
                            p.packet_type(),
                            p.wire_len(),
                        );
                        owned.push(p.to_owned_packet());
                    }
                    drop(batch);
                    for o in &owned {
                        assert_eq!(o.data().len(), o.capture_len());
                    }
                    drop(owned);
                    assert_eq!(ring.holds(0), 0);
                }
                Err(e) => {
                    assert_eq!(e, NotReady::Kernel);
                    assert_eq!(cur.malformed, 1);
                }
            }
            assert_eq!(
                ring.status_word(0).load(Ordering::Acquire),
                libc::TP_STATUS_KERNEL,
                "block not handed back"
            );
        }
        // The corpus must exercise both outcomes, or the test checks nothing.
        assert!(parsed > BLOCKS as u64 / 4, "parsed {parsed}");
        assert!(yielded > BLOCKS as u64 / 2, "yielded {yielded}");
        assert!(
            malformed_walks > BLOCKS as u64 / 20,
            "malformed {malformed_walks}"
        );
        eprintln!(
            "{BLOCKS} corrupted blocks: {parsed} parsed, {yielded} packets, {malformed_walks} walks stopped as malformed"
        );
    }

    /// What the model knows about one block.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Model {
        /// Owned by the kernel (never filled, or handed back).
        Kernel,
        /// Retired by the kernel, not yet taken: seq, and whether its header is garbage.
        Ready { seq: u64, garbage: bool },
        /// Taken; this many live handles.
        Held(u32),
    }

    #[test]
    fn random_fill_take_retain_release_keeps_the_ring_invariants() {
        let mut rng = XorShift::new(0x5eed_0002);
        let mut ops = [0u64; 6];
        for round in 0..300 {
            let count = 1 + rng.below(5);
            let size = 2048;
            let ring = std::sync::Arc::new(RxRing::anonymous(size, count));
            let mut model = vec![Model::Kernel; count];
            let mut contents: Vec<Vec<Vec<u8>>> = vec![Vec::new(); count];
            let mut cur = Cursor::default();
            let mut kernel_next = 0usize;
            let mut kernel_seq = rng.below(1000) as u64;
            let mut last_yielded: Option<u64> = None;
            let (mut want_gaps, mut want_malformed) = (0u64, 0u64);
            // Handles we hold: one entry per live handle, by block index.
            let mut handles: Vec<usize> = Vec::new();
            for step in 0..200 {
                let ctx = format!("round {round} step {step} model {model:?}");
                match rng.below(10) {
                    // The kernel retires the next block in ring order, if it is free.
                    0..=2 => {
                        ops[0] += 1;
                        let i = kernel_next;
                        if model[i] != Model::Kernel {
                            continue; // the kernel would drop packets here
                        }
                        kernel_seq += 1 + if rng.one_in(6) {
                            rng.below(3) as u64
                        } else {
                            0
                        };
                        let max_pkts = rng.below(5);
                        let pkts = random_packets(&mut rng, size, max_pkts);
                        fill_random(&ring, i, kernel_seq, &pkts);
                        let garbage = rng.one_in(10);
                        if garbage {
                            // SAFETY (test): the block is not held; we play the kernel.
                            unsafe {
                                std::ptr::write_bytes(ring.block_ptr(i).add(BLK_LEN), 0xff, 4)
                            };
                        }
                        contents[i] = pkts.into_iter().map(|(d, _)| d).collect();
                        model[i] = Model::Ready {
                            seq: kernel_seq,
                            garbage,
                        };
                        kernel_next = (i + 1) % count;
                    }
                    // The reader takes; the model predicts the outcome.
                    3..=5 => {
                        ops[1] += 1;
                        let mut at = cur.next_index();
                        let expect = loop {
                            match model[at] {
                                Model::Held(_) => break Err(NotReady::HeldByUser),
                                Model::Kernel => break Err(NotReady::Kernel),
                                Model::Ready { garbage: true, .. } => {
                                    want_malformed += 1;
                                    model[at] = Model::Kernel;
                                    at = (at + 1) % count;
                                }
                                Model::Ready { seq, .. } => {
                                    if last_yielded.is_some_and(|l| seq <= l) {
                                        break Err(NotReady::Kernel);
                                    }
                                    break Ok((at, seq));
                                }
                            }
                        };
                        let got = cur.take(&ring);
                        if let Ok((i, _)) = expect {
                            at = (i + 1) % count;
                        }
                        match (got, expect) {
                            (Ok(info), Ok((i, seq))) => {
                                assert_eq!((info.index as usize, info.seq), (i, seq), "{ctx}");
                                assert!(last_yielded.is_none_or(|l| seq > l), "{ctx}");
                                if let Some(l) = last_yielded {
                                    want_gaps += seq - l - 1;
                                }
                                last_yielded = Some(seq);
                                assert_eq!(packets(&ring, &info), contents[i], "{ctx}");
                                model[i] = Model::Held(1);
                                handles.push(i);
                            }
                            (Err(g), Err(e)) => assert_eq!(g, e, "{ctx}"),
                            (g, e) => panic!("{ctx}: took {g:?}, model says {e:?}"),
                        }
                        assert_eq!(cur.next_index(), at, "{ctx}");
                    }
                    // Another handle on a held block (an OwnedPacket).
                    6 => {
                        ops[2] += 1;
                        if handles.is_empty() {
                            continue;
                        }
                        let i = handles[rng.below(handles.len())];
                        ring.retain(i);
                        let Model::Held(n) = model[i] else {
                            panic!("{ctx}: handle on unheld block {i}")
                        };
                        model[i] = Model::Held(n + 1);
                        handles.push(i);
                    }
                    // Drop a random handle.
                    7..=8 => {
                        ops[3] += 1;
                        if handles.is_empty() {
                            continue;
                        }
                        let i = handles.swap_remove(rng.below(handles.len()));
                        ring.release(i);
                        let Model::Held(n) = model[i] else {
                            panic!("{ctx}: release of unheld block {i}")
                        };
                        model[i] = if n == 1 {
                            Model::Kernel
                        } else {
                            Model::Held(n - 1)
                        };
                    }
                    // A released block whose status word still (or again) reads USER, under the
                    // cursor: its old content must not be yielded a second time.
                    _ => {
                        let i = cur.next_index();
                        if model[i] != Model::Kernel || last_yielded.is_none() {
                            continue;
                        }
                        // SAFETY (test): not held, and the kernel (the test) is not writing it.
                        let header = parse_block_header(unsafe { ring.block_bytes(i) }, 0);
                        let Some(old) = header.filter(|h| h.seq > 0) else {
                            continue; // never filled, or a garbage block skipped unread
                        };
                        if last_yielded.is_some_and(|l| old.seq > l) {
                            continue; // a garbage block was never yielded
                        }
                        ops[4] += 1;
                        ring.status_word(i)
                            .store(libc::TP_STATUS_USER, Ordering::Release);
                        let got = cur.take(&ring);
                        ring.status_word(i)
                            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                        assert_eq!(got, Err(NotReady::Kernel), "{ctx}: stale block {i}");
                        assert_eq!(cur.next_index(), i, "{ctx}");
                    }
                }
                // Invariants after every step.
                for (i, m) in model.iter().enumerate() {
                    let status = ring.status_word(i).load(Ordering::Acquire);
                    match *m {
                        Model::Kernel => {
                            assert_eq!(ring.holds(i), 0, "{ctx}");
                            assert_eq!(status, libc::TP_STATUS_KERNEL, "{ctx}");
                        }
                        Model::Ready { .. } => {
                            assert_eq!(ring.holds(i), 0, "{ctx}");
                            assert_eq!(status, libc::TP_STATUS_USER, "{ctx}");
                        }
                        Model::Held(n) => {
                            assert_eq!(ring.holds(i), n, "{ctx}");
                            assert_eq!(status, libc::TP_STATUS_USER, "{ctx}");
                            assert_eq!(handles.iter().filter(|&&h| h == i).count(), n as usize);
                        }
                    }
                }
                assert_eq!(cur.gaps, want_gaps, "{ctx}");
                assert_eq!(cur.malformed, want_malformed, "{ctx}");
            }
            for i in handles.drain(..) {
                ring.release(i);
            }
            ops[5] += cur.malformed;
            for i in 0..count {
                assert_eq!(ring.holds(i), 0);
            }
        }
        // Every kind of step happened often enough to matter.
        assert!(ops.iter().all(|&n| n > 50), "ops {ops:?}");
        eprintln!("fill/take/retain/release/stale-take/malformed-skipped: {ops:?}");
    }
}
