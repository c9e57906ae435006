//! # netring
//!
//! Zero-copy packet I/O on Linux.
//!
//! - [`Capture`]: a TPACKET_V3 mmap receive ring. Each retired block comes out as an owned
//!   [`Batch`] that lends its packets without copying and hands the block back to the kernel when
//!   dropped, in any order, from any thread.
//! - [`Injector`]: a mmap TX ring. Reserve a slot, write the frame in place, commit, flush.
//! - [`xdp`]: AF_XDP sockets with their own XDP program, assembled in Rust and loaded with `bpf()`.
//! - Async: [`AsyncCapture`], [`AsyncInjector`] and [`xdp::AsyncXdpSocket`] are `Stream`s and
//!   `Sink`s on any [`runtime::Runtime`] (tokio or smol, behind features).
//! - Pipelines: [`filter::Filter`] (tcpdump expressions to classic BPF), [`combinators`]
//!   ([`PacketStreamExt`]: filter, flow fanout, buffering policies), [`FanoutGroup`] (kernel
//!   fanout), `codec` (tokio-util, feature `codec`), `service` (tower, feature `tower`).
//! - [`pcap`]: files in and out, as iterators or as `Stream`/`Sink`; [`BpfProgram`]: kernel filters
//!   and their interpreter; [`Interface`]: interface facts; [`netns`]: opening sockets inside a
//!   network namespace. [`AsPacket`] is what every packet source has in common.
//!
//! ```no_run
//! use std::time::Duration;
//! use netring::Capture;
//!
//! let mut cap = Capture::builder("eth0").promiscuous(true).open()?;
//! let mut held = Vec::new();
//! while let Some(batch) = cap.next_batch(Some(Duration::from_secs(1)))? {
//!     for pkt in &batch {
//!         println!("{} bytes, vlan {:?}", pkt.wire_len(), pkt.vlan());
//!     }
//!     held.push(batch); // keep it: the ring moves on to the next block
//!     if held.len() == 4 {
//!         held.clear(); // blocks go back to the kernel
//!     }
//! }
//! println!("{:?}", cap.cumulative_stats()?);
//! # Ok::<(), netring::Error>(())
//! ```
//!
//! Everything needs `CAP_NET_RAW` (run as root, or `setcap cap_net_raw,cap_net_admin=eip`);
//! failures are typed [`Error`]s that say what to do.

#![warn(missing_docs)]

pub mod afpacket;
mod bpf;
#[cfg(feature = "codec")]
pub mod codec;
pub mod combinators;
mod error;
pub mod filter;
mod frame;
mod iface;
pub mod netns;
mod packet;
pub mod pcap;
pub mod runtime;
#[cfg(feature = "tower")]
pub mod service;
mod sys;
pub mod xdp;

pub use afpacket::{
    AsyncCapture, AsyncInjector, Batch, Capture, CaptureBuilder, Fanout, FanoutFlags, FanoutGroup,
    FanoutMode, Injector, InjectorBuilder, OwnedPacket, Packet, PacketStream, PacketType, Packets,
    Protocol, SocketProgram, Stats, Timestamp, TimestampSource, Timestamping, TxSlot, VlanTag,
};
pub use bpf::{BpfInsn, BpfProgram, FrameInfo};
pub use combinators::{BatchStreamExt, PacketStreamExt};
pub use error::{Error, GeometryError, Result};
pub use iface::Interface;
pub use packet::AsPacket;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(all(
    doctest,
    feature = "tokio",
    feature = "smol",
    feature = "codec",
    feature = "tower"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
