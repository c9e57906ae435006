//! Owned zero-copy batches (one retired ring block each) and the packet views they lend.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::ring::{BlockInfo, PacketMeta, PacketWalker, RxRing};

/// One retired ring block: the packets the kernel delivered together.
///
/// A `Batch` owns its block. It keeps the ring mapping alive (reference counted, so it may outlive
/// the [`Capture`](super::Capture)), can be sent to and shared between threads, and hands the block
/// back to the kernel when it (and every [`OwnedPacket`] taken from it) is dropped, in any order.
///
/// Packet data is borrowed from the batch, so it cannot outlive it:
///
/// ```compile_fail,E0597
/// # fn f(cap: &mut netring::Capture) -> netring::Result<()> {
/// let data: &[u8];
/// {
///     let batch = cap.next_batch(None)?.unwrap();
///     data = batch.iter().next().unwrap().data();
/// } // `batch` dropped here: its block goes back to the kernel...
/// println!("{}", data.len()); // ...so this borrow does not compile.
/// # Ok(()) }
/// ```
///
/// Keep a packet beyond its batch with [`Packet::to_owned_packet`] (no copy, keeps the block) or
/// [`Packet::to_bytes`] (one copy, frees the block sooner):
///
/// ```no_run
/// # fn f(cap: &mut netring::Capture) -> netring::Result<()> {
/// let mut kept = Vec::new();
/// if let Some(batch) = cap.next_batch(None)? {
///     for pkt in &batch {
///         kept.push(pkt.to_owned_packet()); // no copy: keeps the block alive
///     }
///     std::thread::spawn(move || drop(batch)); // batches are Send, dropped anywhere
/// }
/// println!("{} packets outlive their batch", kept.len());
/// # Ok(()) }
/// ```
pub struct Batch {
    ring: Arc<RxRing>,
    info: BlockInfo,
}

impl Batch {
    /// Wraps a block the cursor just took (its handle count is 1, owned by this batch).
    pub(crate) fn new(ring: Arc<RxRing>, info: BlockInfo) -> Self {
        Self { ring, info }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: this batch holds a handle on the block, so the kernel does not write it and it
        // stays mapped (the Arc keeps the mapping) for as long as `self` is borrowed.
        unsafe { self.ring.block_bytes(self.info.index as usize) }
    }

    /// Iterates over the packets, as zero-copy views.
    pub fn iter(&self) -> Packets<'_> {
        Packets {
            batch: self,
            walker: PacketWalker::new(&self.info),
        }
    }

    /// A cursor over this batch's packets that borrows nothing (for streams that keep the batch
    /// and hand out owned packets one at a time).
    pub(crate) fn walker(&self) -> PacketWalker {
        PacketWalker::new(&self.info)
    }

    /// The next packet under `walker` as an owned handle (no copy, no allocation).
    pub(crate) fn next_owned(&self, walker: &mut PacketWalker) -> Option<OwnedPacket> {
        let meta = walker.next(self.bytes())?;
        let index = self.info.index as usize;
        self.ring.retain(index);
        Some(OwnedPacket {
            ring: self.ring.clone(),
            block: index,
            meta,
        })
    }

    /// Number of packets the block holds.
    pub fn len(&self) -> usize {
        self.info.num_pkts as usize
    }

    /// True if the block holds no packets (a block retired by timeout on a quiet link can be empty).
    pub fn is_empty(&self) -> bool {
        self.info.num_pkts == 0
    }

    /// The kernel's sequence number of this block; consecutive batches differ by one.
    pub fn seq(&self) -> u64 {
        self.info.seq
    }

    /// Index of the block in the ring.
    pub fn block_index(&self) -> usize {
        self.info.index as usize
    }

    /// True if the block was retired by the block timeout rather than by filling up.
    pub fn retired_by_timeout(&self) -> bool {
        self.info.status & libc::TP_STATUS_BLK_TMO != 0
    }

    /// True if the kernel dropped packets since the previous block (`TP_STATUS_LOSING`).
    pub fn is_losing(&self) -> bool {
        self.info.status & libc::TP_STATUS_LOSING != 0
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.ring.release(self.info.index as usize);
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("seq", &self.info.seq)
            .field("block", &self.info.index)
            .field("packets", &self.info.num_pkts)
            .finish()
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = Packet<'a>;
    type IntoIter = Packets<'a>;
    fn into_iter(self) -> Packets<'a> {
        self.iter()
    }
}

/// Iterator over the packets of a [`Batch`].
///
/// Every offset the kernel wrote is checked against the block before use; a malformed entry ends
/// the iteration.
///
/// ```no_run
/// # fn f(batch: &netring::Batch) {
/// let bytes: usize = batch.iter().map(|p| p.capture_len()).sum();
/// # }
/// ```
pub struct Packets<'a> {
    batch: &'a Batch,
    walker: PacketWalker,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Packet<'a>;

    fn next(&mut self) -> Option<Packet<'a>> {
        let bytes = self.batch.bytes();
        let meta = self.walker.next(bytes)?;
        let start = meta.data_offset as usize;
        Some(Packet {
            batch: self.batch,
            data: &bytes[start..start + meta.snaplen as usize],
            meta,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.walker.remaining() as usize))
    }
}

/// Where a timestamp came from.
///
/// ```no_run
/// # fn f(p: &netring::Packet<'_>) {
/// use netring::TimestampSource;
/// if p.timestamp_source() == TimestampSource::Hardware {
///     println!("NIC clock: {:?}", p.timestamp());
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampSource {
    /// The kernel's software clock (`CLOCK_REALTIME`) on reception.
    Software,
    /// The NIC's raw hardware clock (`TP_STATUS_TS_RAW_HARDWARE`).
    Hardware,
    /// Hardware time converted to system time by the driver (`TP_STATUS_TS_SYS_HARDWARE`).
    SystemHardware,
    /// The kernel did not say.
    Unknown,
}

/// A packet timestamp with nanosecond resolution.
///
/// ```
/// let ts = netring::Timestamp { sec: 2, nsec: 5 };
/// assert_eq!(ts.as_nanos(), 2_000_000_005);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub sec: u32,
    /// Nanoseconds within the second.
    pub nsec: u32,
}

impl Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub fn as_nanos(&self) -> u64 {
        u64::from(self.sec) * 1_000_000_000 + u64::from(self.nsec)
    }

    /// As a `SystemTime`.
    pub fn to_system_time(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::new(self.sec.into(), self.nsec)
    }
}

/// Who a packet was addressed to (`sll_pkttype`).
///
/// ```no_run
/// # fn f(p: &netring::Packet<'_>) {
/// if p.packet_type().is_outgoing() {
///     return; // sent by this host
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// To this host.
    Host,
    /// Link-layer broadcast.
    Broadcast,
    /// Link-layer multicast.
    Multicast,
    /// To another host (seen in promiscuous mode).
    OtherHost,
    /// Sent by this host (captured on its way out).
    Outgoing,
    /// Another value.
    Other(u8),
}

impl PacketType {
    fn from_raw(v: u8) -> Self {
        match v {
            libc::PACKET_HOST => Self::Host,
            libc::PACKET_BROADCAST => Self::Broadcast,
            libc::PACKET_MULTICAST => Self::Multicast,
            libc::PACKET_OTHERHOST => Self::OtherHost,
            libc::PACKET_OUTGOING => Self::Outgoing,
            v => Self::Other(v),
        }
    }

    /// True for packets this host sent.
    pub fn is_outgoing(&self) -> bool {
        matches!(self, Self::Outgoing)
    }
}

/// An 802.1Q/802.1ad tag the kernel stripped from the frame (hardware or software VLAN offload).
///
/// ```
/// let tag = netring::VlanTag { tpid: 0x8100, tci: 0x2064 };
/// assert_eq!(tag.id(), 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag protocol identifier (0x8100 or 0x88a8).
    pub tpid: u16,
    /// Tag control information: priority (3 bits), DEI (1), VLAN id (12).
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN id.
    pub fn id(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// Accessors shared by borrowed and owned packets.
macro_rules! packet_accessors {
    () => {
        /// Bytes on the wire (`tp_len`); larger than `capture_len` when the frame was truncated.
        pub fn wire_len(&self) -> usize {
            self.meta.len as usize
        }

        /// Bytes captured (`tp_snaplen`), the length of `data()`.
        pub fn capture_len(&self) -> usize {
            self.meta.snaplen as usize
        }

        /// Reception time, nanosecond resolution.
        pub fn timestamp(&self) -> Timestamp {
            Timestamp {
                sec: self.meta.sec,
                nsec: self.meta.nsec,
            }
        }

        /// Which clock the timestamp came from.
        pub fn timestamp_source(&self) -> TimestampSource {
            let s = self.meta.status;
            if s & libc::TP_STATUS_TS_RAW_HARDWARE != 0 {
                TimestampSource::Hardware
            } else if s & libc::TP_STATUS_TS_SYS_HARDWARE != 0 {
                TimestampSource::SystemHardware
            } else if s & libc::TP_STATUS_TS_SOFTWARE != 0 {
                TimestampSource::Software
            } else {
                TimestampSource::Unknown
            }
        }

        /// Who the packet was addressed to, and whether it was outgoing.
        pub fn packet_type(&self) -> PacketType {
            PacketType::from_raw(self.meta.pkttype)
        }

        /// The VLAN tag the kernel stripped, when it says one is valid. The TPID defaults to 0x8100
        /// when the kernel does not report it.
        pub fn vlan(&self) -> Option<VlanTag> {
            let s = self.meta.status;
            if s & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tpid = if s & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                self.meta.vlan_tpid
            } else {
                0x8100
            };
            Some(VlanTag {
                tpid,
                tci: self.meta.vlan_tci,
            })
        }

        /// The flow hash, when the capture asked for it (`rx_hash(true)`); 0 otherwise.
        pub fn rx_hash(&self) -> u32 {
            self.meta.rxhash
        }

        /// Index of the interface the packet was seen on.
        pub fn ifindex(&self) -> u32 {
            self.meta.ifindex as u32
        }

        /// Link-layer protocol (ethertype, host order) as the kernel classified it.
        pub fn protocol(&self) -> u16 {
            self.meta.protocol
        }

        /// Raw `TP_STATUS_*` bits of the packet.
        pub fn status(&self) -> u32 {
            self.meta.status
        }

        /// True if the checksum is not yet computed (`TP_STATUS_CSUMNOTREADY`, typical for
        /// outgoing packets with checksum offload).
        pub fn checksum_not_ready(&self) -> bool {
            self.meta.status & libc::TP_STATUS_CSUMNOTREADY != 0
        }
    };
}

/// A zero-copy view of one packet, borrowed from its [`Batch`].
///
/// ```no_run
/// # fn f(batch: &netring::Batch) {
/// for pkt in batch {
///     let eth_type = u16::from_be_bytes([pkt.data()[12], pkt.data()[13]]);
///     println!("{eth_type:#06x} {} / {} bytes", pkt.capture_len(), pkt.wire_len());
/// }
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    batch: &'a Batch,
    data: &'a [u8],
    meta: PacketMeta,
}

impl<'a> Packet<'a> {
    /// The captured bytes, starting at the link-layer header. Lives as long as the batch.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    packet_accessors!();

    /// A handle that keeps this packet's block alive without copying it. The block goes back to
    /// the kernel only when the batch and every such handle are dropped.
    pub fn to_owned_packet(&self) -> OwnedPacket {
        let index = self.batch.info.index as usize;
        self.batch.ring.retain(index);
        OwnedPacket {
            ring: self.batch.ring.clone(),
            block: index,
            meta: self.meta,
        }
    }

    /// Copies the captured bytes into a `Bytes` (one copy; the block can then be released).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.data)
    }
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("len", &self.meta.len)
            .field("caplen", &self.meta.snaplen)
            .field("ts", &self.timestamp())
            .field("type", &self.packet_type())
            .finish()
    }
}

/// One packet that keeps its ring block alive on its own (no copy). `Send + Sync`, cloneable.
///
/// Holding many of these from many blocks holds those blocks; the kernel drops packets when it
/// runs out of free blocks, so copy ([`Packet::to_bytes`]) what must live long.
///
/// ```no_run
/// # fn f(batch: &netring::Batch) {
/// let first: Option<netring::OwnedPacket> = batch.iter().next().map(|p| p.to_owned_packet());
/// std::thread::spawn(move || {
///     if let Some(p) = first {
///         println!("{} bytes", p.data().len());
///     }
/// });
/// # }
/// ```
pub struct OwnedPacket {
    ring: Arc<RxRing>,
    block: usize,
    meta: PacketMeta,
}

impl OwnedPacket {
    /// The captured bytes, starting at the link-layer header.
    pub fn data(&self) -> &[u8] {
        // SAFETY: this handle holds the block (see Batch::bytes); the range was bounds-checked
        // when the packet was parsed.
        let block = unsafe { self.ring.block_bytes(self.block) };
        let start = self.meta.data_offset as usize;
        &block[start..start + self.meta.snaplen as usize]
    }

    packet_accessors!();

    /// Copies the captured bytes into a `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.data())
    }
}

impl Clone for OwnedPacket {
    fn clone(&self) -> Self {
        self.ring.retain(self.block);
        Self {
            ring: self.ring.clone(),
            block: self.block,
            meta: self.meta,
        }
    }
}

impl Drop for OwnedPacket {
    fn drop(&mut self) {
        self.ring.release(self.block);
    }
}

impl AsRef<[u8]> for OwnedPacket {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl fmt::Debug for OwnedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPacket")
            .field("len", &self.meta.len)
            .field("caplen", &self.meta.snaplen)
            .field("ts", &self.timestamp())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::afpacket::ring::Cursor;
    use crate::afpacket::ring::tests::kernel_fill;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Batch>();
        assert_send_sync::<OwnedPacket>();
        assert_send_sync::<Packet<'static>>();
    }

    #[test]
    fn owned_packets_outlive_their_batch_and_the_reader() {
        let ring = Arc::new(RxRing::anonymous(4096, 2));
        let mut cur = Cursor::default();
        kernel_fill(&ring, 0, 1, &[(b"first", 5), (b"second", 6)]);
        let batch = Batch::new(ring.clone(), cur.take(&ring).unwrap());
        assert_eq!(batch.len(), 2);
        let owned: Vec<OwnedPacket> = batch.iter().map(|p| p.to_owned_packet()).collect();
        let copy = batch.iter().nth(1).unwrap().to_bytes();
        drop(batch);
        assert_eq!(ring.holds(0), 2);
        let t = std::thread::spawn(move || {
            let datas: Vec<Vec<u8>> = owned.iter().map(|p| p.data().to_vec()).collect();
            assert_eq!(owned[1].wire_len(), 6);
            assert_eq!(owned[0].ifindex(), 7);
            datas
        });
        assert_eq!(
            t.join().unwrap(),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
        assert_eq!(&copy[..], b"second");
        assert_eq!(ring.holds(0), 0);
        assert_eq!(
            ring.status_word(0)
                .load(std::sync::atomic::Ordering::Acquire),
            libc::TP_STATUS_KERNEL
        );
    }
}
