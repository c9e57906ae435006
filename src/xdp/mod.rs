//! The AF_XDP backend: a UMEM with fill / completion / RX / TX rings per socket, and the XDP
//! program that redirects an interface's queues to those sockets.
//!
//! Inner shape, as for AF_PACKET: `socket` (the OS object and its options), `ring` (the shared
//! index logic, testable without a kernel), `umem` (the frame area and its pools), `batch` (owned
//! zero-copy RX handles), `xsk` (RX and TX on one socket).

mod batch;
mod ring;
mod socket;
mod umem;
mod xsk;

pub use batch::{XdpBatch, XdpFrame, XdpPacket, XdpPackets};
pub use socket::BindMode;
pub use xsk::{XdpSocket, XdpSocketBuilder, XdpStats};
