//! # netring
//!
//! Zero-copy packet I/O on Linux.
//!
//! - [`Capture`]: a TPACKET_V3 mmap receive ring. Each retired block comes out as an owned
//!   [`Batch`] that lends its packets without copying and hands the block back to the kernel when
//!   dropped, in any order, from any thread.
//! - [`Injector`]: a mmap TX ring. Reserve a slot, write the frame in place, commit, flush.
//! - [`pcap`]: files in and out; [`BpfProgram`]: kernel filters; [`Interface`]: interface facts;
//!   [`netns`]: opening sockets inside a network namespace.
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
