//! pcap files: write what a capture saw (nanosecond timestamps, VLAN tags put back into the frame
//! as libpcap does), and read files for replay.
//!
//! Async: [`PcapReader::into_stream`] turns a file into a [`PcapStream`] that can keep the
//! recorded pace ([`Pace`]), [`replay`] sends one into any TX sink, and a [`PcapWriter`] is a
//! `Sink` of received frames.
//!
//! ```
//! use netring::pcap::{PcapReader, PcapWriter};
//! use netring::Timestamp;
//!
//! let mut file = Vec::new();
//! let mut w = PcapWriter::new(&mut file)?;
//! w.write_frame(Timestamp { sec: 1, nsec: 5 }, 60, &[0u8; 60], None)?;
//! w.into_inner()?;
//! let records: Vec<_> = PcapReader::new(&file[..])?.collect::<Result<_, _>>()?;
//! assert_eq!(records[0].timestamp.nsec, 5);
//! # Ok::<(), netring::Error>(())
//! ```

mod stream;

use std::io::{self, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

pub use self::stream::{Pace, PcapStream, Replayed, replay};
use crate::afpacket::{OwnedPacket, Packet, Timestamp, VlanTag};
use crate::error::{Error, Result};
use crate::packet::AsPacket;

const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const MAGIC_NSEC: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Snapshot length written in the file header.
pub const SNAPLEN: u32 = 262_144;
/// Records larger than this are taken as corruption, not allocated.
const MAX_RECORD: u32 = 16 << 20;
/// Record bytes allocated up front; larger records grow as their bytes arrive.
const READ_CHUNK: u32 = 64 << 10;

fn io_err(e: io::Error) -> Error {
    Error::Io {
        operation: "pcap I/O",
        source: e,
    }
}

/// Writes an Ethernet pcap file with nanosecond timestamps.
///
/// Anything that is [`AsPacket`] can be written ([`write`](Self::write)), and a `PcapWriter` is
/// a `futures::Sink` of them too (blocking writes; see [`PcapStream`] for the other direction).
///
/// ```no_run
/// # fn f(cap: &mut netring::Capture) -> netring::Result<()> {
/// let file = std::io::BufWriter::new(std::fs::File::create("out.pcap").unwrap());
/// let mut w = netring::pcap::PcapWriter::new(file)?;
/// if let Some(batch) = cap.next_batch(None)? {
///     for pkt in &batch {
///         w.write(&pkt)?;
///     }
/// }
/// w.flush()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&MAGIC_NSEC.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone = 0, sigfigs = 0.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h).map_err(io_err)?;
        Ok(Self { out, records: 0 })
    }

    /// Writes one frame. With a `vlan` tag, the 4-byte 802.1Q header is put back after the MAC
    /// addresses (what libpcap does for tags the kernel stripped), so the record matches the wire.
    pub fn write_frame(
        &mut self,
        ts: Timestamp,
        wire_len: usize,
        data: &[u8],
        vlan: Option<VlanTag>,
    ) -> Result<()> {
        let tag = vlan.filter(|_| data.len() >= 12);
        let extra = if tag.is_some() { 4 } else { 0 };
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ts.sec.to_le_bytes());
        h[4..8].copy_from_slice(&ts.nsec.to_le_bytes());
        h[8..12].copy_from_slice(&((data.len() + extra) as u32).to_le_bytes());
        h[12..16].copy_from_slice(&((wire_len.max(data.len()) + extra) as u32).to_le_bytes());
        self.out.write_all(&h).map_err(io_err)?;
        match tag {
            Some(t) => {
                let mut vh = [0u8; 4];
                vh[0..2].copy_from_slice(&t.tpid.to_be_bytes());
                vh[2..4].copy_from_slice(&t.tci.to_be_bytes());
                self.out.write_all(&data[..12]).map_err(io_err)?;
                self.out.write_all(&vh).map_err(io_err)?;
                self.out.write_all(&data[12..]).map_err(io_err)?;
            }
            None => self.out.write_all(data).map_err(io_err)?,
        }
        self.records += 1;
        Ok(())
    }

    /// Writes any received frame: its bytes and wire length, the VLAN tag the kernel stripped
    /// put back (see [`write_frame`](Self::write_frame)), and its timestamp, or the current time
    /// for frames that carry none (AF_XDP frames, plain buffers).
    ///
    /// ```
    /// use netring::pcap::{PcapReader, PcapWriter};
    ///
    /// let mut file = Vec::new();
    /// let mut w = PcapWriter::new(&mut file)?;
    /// w.write(&vec![0xffu8; 60])?; // a Vec<u8>, stamped with the current time
    /// w.into_inner()?;
    /// let rec = PcapReader::new(&file[..])?.next().unwrap()?;
    /// assert_eq!(rec.data, vec![0xff; 60]);
    /// assert!(rec.timestamp.sec > 0);
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn write<P: AsPacket + ?Sized>(&mut self, p: &P) -> Result<()> {
        let ts = p.timestamp().unwrap_or_else(now);
        self.write_frame(ts, p.wire_len(), p.data(), p.vlan())
    }

    /// Writes a captured packet: [`write`](Self::write) for a [`Packet`].
    pub fn write_packet(&mut self, p: &Packet<'_>) -> Result<()> {
        self.write(p)
    }

    /// Writes an owned captured packet: [`write`](Self::write) for an [`OwnedPacket`].
    pub fn write_owned(&mut self, p: &OwnedPacket) -> Result<()> {
        self.write(p)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(io_err)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

/// One record read from a pcap file.
///
/// ```no_run
/// let file = std::fs::File::open("in.pcap").unwrap();
/// for rec in netring::pcap::PcapReader::new(std::io::BufReader::new(file))? {
///     let rec: netring::pcap::PcapRecord = rec?;
///     println!("{:?} {} bytes", rec.timestamp, rec.data.len());
/// }
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    /// Capture time (nanoseconds even for microsecond files).
    pub timestamp: Timestamp,
    /// Length on the wire.
    pub wire_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

impl AsRef<[u8]> for PcapRecord {
    /// The captured bytes: a record can go straight into a TX `Sink<B: AsRef<[u8]>>`.
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// The current wall-clock time as a pcap timestamp.
fn now() -> Timestamp {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        sec: u32::try_from(t.as_secs()).unwrap_or(u32::MAX),
        nsec: t.subsec_nanos(),
    }
}

/// Reads a pcap file (micro- or nanosecond, either byte order).
///
/// ```no_run
/// let mut tx = netring::Injector::open("eth0")?;
/// let file = std::io::BufReader::new(std::fs::File::open("in.pcap").unwrap());
/// for rec in netring::pcap::PcapReader::new(file)? {
///     tx.send(&rec?.data)?;
/// }
/// tx.wait_sent(None)?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct PcapReader<R: Read> {
    input: R,
    big_endian: bool,
    nanos: bool,
    link_type: u32,
    snaplen: u32,
    index: u64,
    failed: bool,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut input: R) -> Result<Self> {
        let mut h = [0u8; 24];
        input.read_exact(&mut h).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::Pcap("file is shorter than the 24-byte pcap header".into())
            } else {
                io_err(e)
            }
        })?;
        let magic_le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let magic_be = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match (magic_le, magic_be) {
            (MAGIC_USEC, _) => (false, false),
            (MAGIC_NSEC, _) => (false, true),
            (_, MAGIC_USEC) => (true, false),
            (_, MAGIC_NSEC) => (true, true),
            _ => {
                return Err(Error::Pcap(format!(
                    "not a pcap file (magic {magic_le:#010x}); pcapng is not supported: convert with `editcap -F pcap`"
                )));
            }
        };
        let rd = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        Ok(Self {
            snaplen: rd(&h[16..20]),
            link_type: rd(&h[20..24]),
            input,
            big_endian,
            nanos,
            index: 0,
            failed: false,
        })
    }

    /// The file's link type (1 = Ethernet).
    pub fn link_type(&self) -> u32 {
        self.link_type
    }

    /// The file's snapshot length.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// True if timestamps in the file have nanosecond resolution.
    pub fn is_nanosecond(&self) -> bool {
        self.nanos
    }

    fn u32_at(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// The next record, `Ok(None)` at a clean end of file, or an error for a truncated or corrupt
    /// record (records before it were already returned).
    pub fn next_record(&mut self) -> Result<Option<PcapRecord>> {
        let mut h = [0u8; 16];
        let mut got = 0;
        while got < h.len() {
            match self.input.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(Error::Pcap(format!(
                        "record {} header truncated ({got} of 16 bytes)",
                        self.index
                    )));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        let sec = self.u32_at(&h[0..4]);
        let frac = self.u32_at(&h[4..8]);
        let incl = self.u32_at(&h[8..12]);
        let wire_len = self.u32_at(&h[12..16]);
        if incl > MAX_RECORD {
            return Err(Error::Pcap(format!(
                "record {} claims {incl} bytes: the file is corrupt",
                self.index
            )));
        }
        let mut nsec = if self.nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        let mut sec = sec;
        // Writers that round the fraction (scapy's `round(frac * 1e6)`) store exactly one second
        // when the time is a hair below the next second; libpcap reads such records as they are.
        // Carry it into the seconds.
        if nsec == 1_000_000_000 {
            if let Some(next) = sec.checked_add(1) {
                sec = next;
                nsec = 0;
            }
        }
        if nsec >= 1_000_000_000 {
            return Err(Error::Pcap(format!(
                "record {} has an invalid sub-second timestamp ({frac})",
                self.index
            )));
        }
        // Grow with the bytes actually there: a corrupt length in a short file costs memory in
        // proportion to what the file holds, not to what the record claims.
        let mut data = Vec::with_capacity(incl.min(READ_CHUNK) as usize);
        let got = (&mut self.input)
            .take(u64::from(incl))
            .read_to_end(&mut data)
            .map_err(io_err)?;
        if got != incl as usize {
            return Err(Error::Pcap(format!("record {} data truncated", self.index)));
        }
        self.index += 1;
        Ok(Some(PcapRecord {
            timestamp: Timestamp { sec, nsec },
            wire_len,
            data,
        }))
    }
}

impl<R: Read> Iterator for PcapReader<R> {
    type Item = Result<PcapRecord>;

    /// Yields records until the end of the file; after an error, yields nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_vlan_reinsertion() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf).unwrap();
        let frame: Vec<u8> = (0..60u8).collect();
        let tag = VlanTag {
            tpid: 0x8100,
            tci: 0x2064,
        };
        w.write_frame(
            Timestamp {
                sec: 7,
                nsec: 999_999_999,
            },
            60,
            &frame,
            Some(tag),
        )
        .unwrap();
        w.write_frame(Timestamp { sec: 8, nsec: 1 }, 100, &frame, None)
            .unwrap();
        assert_eq!(w.records(), 2);
        w.into_inner().unwrap();
        let mut r = PcapReader::new(&buf[..]).unwrap();
        assert!(r.is_nanosecond());
        assert_eq!(r.link_type(), LINKTYPE_ETHERNET);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(a.data.len(), 64);
        assert_eq!(&a.data[..12], &frame[..12]);
        assert_eq!(&a.data[12..16], &[0x81, 0x00, 0x20, 0x64]);
        assert_eq!(&a.data[16..], &frame[12..]);
        assert_eq!(a.wire_len, 64);
        assert_eq!(
            a.timestamp,
            Timestamp {
                sec: 7,
                nsec: 999_999_999
            }
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!(b.data, frame);
        assert_eq!(b.wire_len, 100);
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn truncation_is_an_error_after_good_records() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf).unwrap();
        w.write_frame(Timestamp { sec: 1, nsec: 0 }, 20, &[1u8; 20], None)
            .unwrap();
        w.write_frame(Timestamp { sec: 2, nsec: 0 }, 20, &[2u8; 20], None)
            .unwrap();
        w.into_inner().unwrap();
        buf.truncate(buf.len() - 5);
        let got: Vec<_> = PcapReader::new(&buf[..]).unwrap().collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(Error::Pcap(_))));
        assert!(matches!(PcapReader::new(&b"nope"[..]), Err(Error::Pcap(_))));
        assert!(matches!(
            PcapReader::new(&[0u8; 24][..]),
            Err(Error::Pcap(_))
        ));
    }

    #[test]
    fn a_fraction_of_exactly_one_second_carries_into_the_seconds() {
        // What scapy writes for a time of N.9999996 s: usec = round(0.9999996 * 1e6) = 1000000.
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_USEC.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        for (usec, byte) in [(1_000_000u32, 1u8), (1_000_001, 2)] {
            for v in [41u32, usec, 1, 1] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.push(byte);
        }
        let mut r = PcapReader::new(&f[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(a.timestamp, Timestamp { sec: 42, nsec: 0 });
        assert_eq!(a.data, vec![1]);
        // More than a second is still corruption.
        assert!(matches!(r.next_record(), Err(Error::Pcap(_))));
    }

    #[test]
    fn reads_big_endian_microsecond_files() {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_USEC.to_be_bytes());
        f.extend_from_slice(&2u16.to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        for v in [5u32, 250, 3, 3] {
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[9, 9, 9]);
        let r: Vec<_> = PcapReader::new(&f[..])
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            r[0].timestamp,
            Timestamp {
                sec: 5,
                nsec: 250_000
            }
        );
        assert_eq!(r[0].data, vec![9, 9, 9]);
    }

    #[test]
    fn a_huge_claimed_length_in_a_short_file_is_not_allocated() {
        /// Fails if the reader ever asks for more than `.1` bytes in one read.
        struct Small<'a>(&'a [u8], usize);
        impl Read for Small<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                assert!(buf.len() <= self.1, "read into a {}-byte buffer", buf.len());
                self.0.read(buf)
            }
        }
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_NSEC.to_le_bytes());
        f.extend_from_slice(&[2, 0, 4, 0]);
        f.extend_from_slice(&[0; 16]);
        for v in [1u32, 0, MAX_RECORD, MAX_RECORD] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&[7; 10]);
        let mut r = PcapReader::new(Small(&f, 1 << 20)).unwrap();
        assert!(matches!(r.next_record(), Err(Error::Pcap(m)) if m.contains("truncated")));
    }
}
