//! Stream combinators for packet streams, on any runtime: zero-copy filters, an in-process
//! fanout by flow, and a bounded buffer with an overflow policy.
//!
//! They work on every `Stream<Item = netring::Result<P>>` whose packets implement
//! [`AsPacket`] ([`PacketStreamExt`]) — [`PacketStream`](crate::PacketStream) (AF_PACKET
//! [`OwnedPacket`](crate::OwnedPacket)s), [`XdpFrameStream`](crate::xdp::XdpFrameStream)
//! (AF_XDP [`XdpFrame`](crate::xdp::XdpFrame)s), or anything mapped to `Bytes` — and on batch
//! streams ([`BatchStreamExt`]: [`AsyncCapture`](crate::AsyncCapture),
//! [`AsyncXdpSocket`](crate::xdp::AsyncXdpSocket)).
//!
//! Nothing here spawns a task or names a runtime: the fanout streams drive their shared source
//! themselves, and the buffer's reading half is a future you spawn (or `select!`) yourself.
//! Nothing copies a packet: zero-copy packets keep their ring memory until the consumer drops
//! them (mind that when holding many; see [`PacketStreamExt::buffer`]).
//!
//! ```no_run
//! use futures::{SinkExt, StreamExt};
//! use netring::combinators::PacketStreamExt;
//! use netring::{Capture, Injector, runtime::Runtime};
//!
//! // Forward TCP port 443 from eth0 to eth1, zero-copy until the TX ring.
//! async fn forward<R: Runtime>() -> netring::Result<()> {
//!     let rx = Capture::builder("eth0").open_async::<R>()?.packets();
//!     let mut tx = Injector::builder("eth1").open_async::<R>()?;
//!     let https = rx.filter_packets(|p| {
//!         let d = p.data();
//!         d.len() > 37 && d[12..14] == [8, 0] && d[23] == 6 && (d[36..38] == [1, 187] || d[34..36] == [1, 187])
//!     });
//!     https.forward(&mut tx).await // poll_ready backpressure all the way through
//! }
//! ```

use std::io;

use futures::Stream;

use crate::AsPacket;
use crate::error::{Error, Result};

mod buffer;
mod fanout;
mod filter;
mod flow;

pub use buffer::{BufferHandle, BufferPump, BufferReceiver, BufferStats, Policy, SourceHandle};
pub use fanout::{FanoutStats, FanoutStream};
pub use filter::{
    FilterBatches, FilterPackets, FilteredBatch, FilteredPackets, PacketBatch, XdpPositions,
};
pub use flow::flow_hash;

/// The default fanout key: [`flow_hash`] of the packet's bytes.
///
/// ```
/// use netring::combinators::flow_key;
/// let frame = vec![0u8; 60];
/// assert_eq!(flow_key(&frame), netring::combinators::flow_hash(&frame));
/// ```
pub fn flow_key<P: AsPacket>(packet: &P) -> u64 {
    flow_hash(packet.data())
}

/// Combinators for streams of packets (`Stream<Item = netring::Result<P>>`, `P: AsPacket`).
/// Implemented for every such stream; bring it into scope with
/// `use netring::combinators::PacketStreamExt`.
pub trait PacketStreamExt<P: AsPacket>: Stream<Item = Result<P>> + Sized {
    /// Keeps the packets `predicate` accepts, without copying; rejected packets are dropped on
    /// the spot (for an [`OwnedPacket`](crate::OwnedPacket) that releases its hold on the ring
    /// block). Errors pass through. A flood of rejected packets does not monopolise the
    /// executor: after 1024 in one poll the stream yields.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::combinators::PacketStreamExt;
    /// use netring::{AsPacket, Capture, runtime::Runtime};
    ///
    /// async fn arp<R: Runtime>() -> netring::Result<()> {
    ///     let mut arp = Capture::builder("eth0")
    ///         .open_async::<R>()?
    ///         .packets()
    ///         .filter_packets(|p| p.data().get(12..14) == Some(&[0x08, 0x06][..]));
    ///     while let Some(pkt) = arp.next().await {
    ///         println!("ARP, {} bytes", pkt?.data().len());
    ///     }
    ///     Ok(())
    /// }
    /// ```
    fn filter_packets<F>(self, predicate: F) -> FilterPackets<Self, F>
    where
        F: FnMut(&P) -> bool,
    {
        FilterPackets::new(self, predicate)
    }

    /// Splits the stream into `n` streams, each with a queue of up to `capacity` packets; a
    /// packet goes to stream `key(&packet) % n`. Errors go to every stream; when the source ends,
    /// every stream ends after its queue. See [`FanoutStream`] for the rules, and
    /// [`fanout_flows`](Self::fanout_flows) for the usual key.
    ///
    /// No task is spawned: each stream drives the shared source when its own queue is empty.
    /// When a packet's queue is full the source is not read further until that stream's
    /// consumer makes room (backpressure "wait"): a slow stream slows all of them, and the
    /// capture ring absorbs the difference. Fails with [`Error::InvalidConfig`] if `n` or
    /// `capacity` is 0.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::AsPacket;
    /// use netring::combinators::PacketStreamExt;
    /// use netring::{Capture, runtime::Runtime};
    ///
    /// // One task per VLAN id parity (tokio here; any executor works).
    /// async fn by_vlan<R: Runtime>() -> netring::Result<()> {
    ///     let packets = Capture::builder("eth0").open_async::<R>()?.packets();
    ///     let key = |p: &netring::OwnedPacket| p.vlan().map_or(0, |t| u64::from(t.id()));
    ///     for mut part in packets.fanout(2, 256, key)? {
    ///         tokio::spawn(async move {
    ///             while let Some(Ok(pkt)) = part.next().await {
    ///                 let _ = pkt.data();
    ///             }
    ///         });
    ///     }
    ///     Ok(())
    /// }
    /// ```
    fn fanout<K>(self, n: usize, capacity: usize, key: K) -> Result<Vec<FanoutStream<Self, K>>>
    where
        K: FnMut(&P) -> u64,
    {
        FanoutStream::split(self, n, capacity, key)
    }

    /// [`fanout`](Self::fanout) by [`flow_hash`]: both directions of a flow go to the same
    /// stream.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::combinators::PacketStreamExt;
    /// use netring::{Capture, runtime::Runtime};
    ///
    /// async fn workers<R: Runtime>() -> netring::Result<()> {
    ///     let packets = Capture::builder("eth0").open_async::<R>()?.packets();
    ///     let mut tasks = Vec::new();
    ///     for (i, mut flows) in packets.fanout_flows(4, 1024)?.into_iter().enumerate() {
    ///         tasks.push(tokio::spawn(async move {
    ///             let mut n = 0u64;
    ///             while let Some(Ok(_pkt)) = flows.next().await {
    ///                 n += 1; // every packet of a given flow lands in this same task
    ///             }
    ///             println!("worker {i}: {n} packets, {:?}", flows.stats());
    ///         }));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    #[allow(clippy::type_complexity)]
    fn fanout_flows(
        self,
        n: usize,
        capacity: usize,
    ) -> Result<Vec<FanoutStream<Self, fn(&P) -> u64>>> {
        FanoutStream::split(self, n, capacity, flow_key::<P> as fn(&P) -> u64)
    }

    /// Puts a bounded buffer of `capacity` packets between this stream and a slow consumer.
    /// Returns the pump (a future that reads this stream into the buffer; spawn it) and the
    /// receiver (a stream of the buffered packets). When the buffer is full, `policy` decides:
    /// [`Policy::Wait`] stops reading (the ring absorbs, the kernel drops and counts if it
    /// overflows), [`Policy::DropNewest`] / [`Policy::DropOldest`] discard here, counted in
    /// [`BufferStats`]. Fails with [`Error::InvalidConfig`] if `capacity` is 0.
    ///
    /// The buffer's counters come from [`BufferHandle`]s (`rx.handle()`, `pump.handle()`); the
    /// capture's own (kernel) counters from the source, which the pump hands back when it ends,
    /// or through [`BufferPump::source`] while it runs.
    ///
    /// **Zero-copy packets hold ring memory while buffered**: an
    /// [`OwnedPacket`](crate::OwnedPacket) keeps its whole block, an
    /// [`XdpFrame`](crate::xdp::XdpFrame) its UMEM frame. If the buffer can hold more than the
    /// ring, the ring runs dry and the *kernel* drops, before any drop policy acts. So with
    /// `DropNewest`/`DropOldest` either keep `capacity` well below what the ring holds (blocks ×
    /// packets per block, or RX frames), or copy before buffering (`.map_ok(|p| p.to_bytes())`),
    /// which frees the ring at once:
    ///
    /// ```no_run
    /// use futures::{StreamExt, TryStreamExt};
    /// use netring::combinators::{PacketStreamExt, Policy};
    /// use netring::{Capture, runtime::Runtime};
    ///
    /// async fn keep_latest<R: Runtime>() -> netring::Result<()> {
    ///     let cap = Capture::builder("eth0").block_count(64).open_async::<R>()?;
    ///     // Zero-copy: at most 32 packets buffered, far below what 64 blocks hold.
    ///     let (pump, mut rx) = cap.packets().buffer(32, Policy::DropOldest)?;
    ///     let stats = rx.handle();
    ///     let pump = tokio::spawn(pump);
    ///     while let Some(pkt) = rx.next().await {
    ///         let _ = pkt?; // slow work here
    ///     }
    ///     // The pump hands the capture back when it ends: kernel counters next to ours.
    ///     let mut packets = pump.await.expect("pump task");
    ///     let kernel = packets.get_mut().cumulative_stats()?;
    ///     let ours = stats.stats();
    ///     println!(
    ///         "kernel dropped {} (ring full), buffer dropped {} (policy), delivered {}",
    ///         kernel.drops, ours.dropped(), ours.delivered
    ///     );
    ///
    ///     // Copied: the ring is released as soon as the pump has read a packet, so the buffer
    ///     // may be far larger than the ring.
    ///     let cap = Capture::builder("eth0").open_async::<R>()?;
    ///     let copies = cap.packets().map_ok(|p| p.to_bytes());
    ///     let (pump, rx) = copies.buffer(1_000_000, Policy::DropNewest)?;
    ///     tokio::spawn(pump);
    ///     # drop(rx);
    ///     Ok(())
    /// }
    /// ```
    fn buffer(
        self,
        capacity: usize,
        policy: Policy,
    ) -> Result<(BufferPump<Self>, BufferReceiver<P>)>
    where
        Self: Unpin,
    {
        buffer::new(self, capacity, policy)
    }
}

impl<S, P> PacketStreamExt<P> for S
where
    S: Stream<Item = Result<P>>,
    P: AsPacket,
{
}

/// Combinators for streams of batches ([`AsyncCapture`](crate::AsyncCapture),
/// [`AsyncXdpSocket`](crate::xdp::AsyncXdpSocket)). Implemented for every
/// `Stream<Item = netring::Result<B>>` with `B:` [`PacketBatch`].
pub trait BatchStreamExt<B: PacketBatch>: Stream<Item = Result<B>> + Sized {
    /// Filters every batch with `predicate`, evaluated once per packet when the batch comes out
    /// of the stream; yields [`FilteredBatch`]es whose iteration shows only the accepted
    /// packets, as zero-copy views (nothing copied; the accepted set is a recycled bitmap, so
    /// no allocation per batch). **Batches with no accepted packet are skipped** (dropped at
    /// once, so their ring memory goes straight back; counted in
    /// [`FilterBatches::skipped_batches`]). Errors pass through.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::combinators::BatchStreamExt;
    /// use netring::{AsPacket, Capture, runtime::Runtime};
    ///
    /// async fn udp<R: Runtime>() -> netring::Result<()> {
    ///     let mut udp = Capture::builder("eth0")
    ///         .open_async::<R>()?
    ///         .filter_batches(|p| p.data().get(23) == Some(&17));
    ///     while let Some(batch) = udp.next().await {
    ///         let batch = batch?;
    ///         for pkt in &batch {
    ///             let _ = pkt.data(); // only the UDP packets, no copy
    ///         }
    ///     }
    ///     Ok(())
    /// }
    /// ```
    fn filter_batches<F>(self, predicate: F) -> FilterBatches<Self, F>
    where
        F: for<'a> FnMut(&B::Packet<'a>) -> bool,
    {
        FilterBatches::new(self, predicate)
    }
}

impl<S, B> BatchStreamExt<B> for S
where
    S: Stream<Item = Result<B>>,
    B: PacketBatch,
{
}

/// A copy of `e` for another fanout stream (`Error` is not `Clone`: I/O errors are rebuilt from
/// their OS code, or their kind and message). Exhaustive on purpose: a new variant must be
/// added here.
fn copy_error(e: &Error) -> Error {
    fn io(e: &io::Error) -> io::Error {
        match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        }
    }
    match e {
        Error::NoSuchInterface { name } => Error::NoSuchInterface { name: name.clone() },
        Error::PermissionDenied {
            operation,
            capability,
        } => Error::PermissionDenied {
            operation,
            capability,
        },
        Error::Geometry(g) => Error::Geometry(g.clone()),
        Error::RingAllocation { bytes, source } => Error::RingAllocation {
            bytes: *bytes,
            source: io(source),
        },
        Error::FrameTooLarge { len, max } => Error::FrameTooLarge {
            len: *len,
            max: *max,
        },
        Error::FrameExceedsMtu { len, mtu, max } => Error::FrameExceedsMtu {
            len: *len,
            mtu: *mtu,
            max: *max,
        },
        Error::FrameTooShort { len } => Error::FrameTooShort { len: *len },
        Error::InterfaceDown { name } => Error::InterfaceDown { name: name.clone() },
        Error::InterfaceGone { name, index } => Error::InterfaceGone {
            name: name.clone(),
            index: *index,
        },
        Error::Fanout { group_id, reason } => Error::Fanout {
            group_id: *group_id,
            reason: reason.clone(),
        },
        Error::InvalidFilter(s) => Error::InvalidFilter(s.clone()),
        Error::FilterSyntax {
            expression,
            column,
            message,
        } => Error::FilterSyntax {
            expression: expression.clone(),
            column: *column,
            message: message.clone(),
        },
        Error::Pcap(s) => Error::Pcap(s.clone()),
        Error::InvalidConfig(s) => Error::InvalidConfig(s.clone()),
        Error::XdpUnsupported { interface, reason } => Error::XdpUnsupported {
            interface: interface.clone(),
            reason: reason.clone(),
        },
        Error::BpfVerifier { log } => Error::BpfVerifier { log: log.clone() },
        Error::XdpAttach {
            interface,
            mode,
            source,
            hint,
        } => Error::XdpAttach {
            interface: interface.clone(),
            mode,
            source: io(source),
            hint: hint.clone(),
        },
        Error::Memlock { bytes } => Error::Memlock { bytes: *bytes },
        Error::NoRuntime { runtime } => Error::NoRuntime { runtime },
        Error::SinkNotReady => Error::SinkNotReady,
        Error::Io { operation, source } => Error::Io {
            operation,
            source: io(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_errors_say_the_same() {
        let errors = [
            Error::os("recv", io::Error::from_raw_os_error(libc::ENETDOWN)),
            Error::Io {
                operation: "x",
                source: io::Error::other("custom"),
            },
            Error::InterfaceGone {
                name: "veth0".into(),
                index: 7,
            },
            Error::SinkNotReady,
        ];
        for e in &errors {
            let c = copy_error(e);
            assert_eq!(c.to_string(), e.to_string());
            assert_eq!(c.raw_os_error(), e.raw_os_error());
        }
    }
}
