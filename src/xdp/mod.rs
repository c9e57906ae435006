//! The AF_XDP backend: a UMEM with fill / completion / RX / TX rings per socket, and the XDP
//! program that redirects an interface's queues to those sockets.
//!
//! Inner shape, as for AF_PACKET: `socket` (the OS object and its options), `ring` (the shared
//! index logic, testable without a kernel), `umem` (the frame area and its pools), `batch` (owned
//! zero-copy RX handles), `xsk` (RX and TX on one socket), `stream` (the async `Stream`/`Sink`),
//! plus `program` (the built-in XDP program, assembled in Rust) and `attach` (loading it with
//! `bpf()`, the XSKMAP, and attaching through a BPF link that the kernel removes with its fd).

mod attach;
mod batch;
mod program;
mod ring;
mod socket;
mod stream;
mod umem;
mod xsk;

pub use attach::{AttachMode, XdpAttachment, XdpProgram, XskMap};
pub use batch::{XdpBatch, XdpFrame, XdpPacket, XdpPackets};
pub use program::{AluOp, Insn, JmpOp, Match, MemSize, Reg, XdpAction};
pub use socket::BindMode;
pub use stream::{AsyncXdpSocket, XdpFrameStream};
pub use xsk::{XdpSocket, XdpSocketBuilder, XdpStats};
