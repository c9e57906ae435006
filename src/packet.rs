//! One view of "a received frame" shared by every backend, so combinators, filters, codecs and
//! pcap writers work on any of them.

use bytes::{Bytes, BytesMut};

use crate::afpacket::{OwnedPacket, Packet, Timestamp, VlanTag};
use crate::pcap::PcapRecord;
use crate::xdp::{XdpFrame, XdpPacket};

/// A received frame and what the kernel told about it, whatever ring it came from.
///
/// `data()` is the frame as the socket delivered it, starting at the Ethernet header. On
/// AF_PACKET the kernel has taken the outermost VLAN tag out of the bytes and reports it in
/// [`vlan`](Self::vlan); frames from AF_XDP, pcap files or plain buffers keep their tags inline
/// and say `None`.
///
/// ```
/// use netring::AsPacket;
///
/// fn ethertype(p: &impl AsPacket) -> Option<u16> {
///     let d = p.data();
///     (d.len() >= 14).then(|| u16::from_be_bytes([d[12], d[13]]))
/// }
/// let frame = vec![0u8; 12].into_iter().chain([0x08, 0x00]).collect::<Vec<u8>>();
/// assert_eq!(ethertype(&frame), Some(0x0800));
/// ```
pub trait AsPacket {
    /// The captured bytes, starting at the link-layer header.
    fn data(&self) -> &[u8];

    /// Length on the wire; larger than `data().len()` when the capture truncated the frame.
    fn wire_len(&self) -> usize {
        self.data().len()
    }

    /// When the frame was received, if the source records it.
    fn timestamp(&self) -> Option<Timestamp> {
        None
    }

    /// The VLAN tag the kernel stripped from `data()`, if it did.
    fn vlan(&self) -> Option<VlanTag> {
        None
    }
}

impl AsPacket for Packet<'_> {
    fn data(&self) -> &[u8] {
        Packet::data(self)
    }
    fn wire_len(&self) -> usize {
        Packet::wire_len(self)
    }
    fn timestamp(&self) -> Option<Timestamp> {
        Some(Packet::timestamp(self))
    }
    fn vlan(&self) -> Option<VlanTag> {
        Packet::vlan(self)
    }
}

impl AsPacket for OwnedPacket {
    fn data(&self) -> &[u8] {
        OwnedPacket::data(self)
    }
    fn wire_len(&self) -> usize {
        OwnedPacket::wire_len(self)
    }
    fn timestamp(&self) -> Option<Timestamp> {
        Some(OwnedPacket::timestamp(self))
    }
    fn vlan(&self) -> Option<VlanTag> {
        OwnedPacket::vlan(self)
    }
}

impl AsPacket for XdpFrame {
    fn data(&self) -> &[u8] {
        XdpFrame::data(self)
    }
}

impl AsPacket for XdpPacket<'_> {
    fn data(&self) -> &[u8] {
        XdpPacket::data(self)
    }
}

impl AsPacket for PcapRecord {
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn wire_len(&self) -> usize {
        self.wire_len as usize
    }
    fn timestamp(&self) -> Option<Timestamp> {
        Some(self.timestamp)
    }
}

macro_rules! plain_bytes {
    ($($t:ty),*) => {$(
        impl AsPacket for $t {
            fn data(&self) -> &[u8] {
                self
            }
        }
    )*};
}
plain_bytes!([u8], Vec<u8>, Bytes, BytesMut);

impl<P: AsPacket + ?Sized> AsPacket for &P {
    fn data(&self) -> &[u8] {
        (**self).data()
    }
    fn wire_len(&self) -> usize {
        (**self).wire_len()
    }
    fn timestamp(&self) -> Option<Timestamp> {
        (**self).timestamp()
    }
    fn vlan(&self) -> Option<VlanTag> {
        (**self).vlan()
    }
}
