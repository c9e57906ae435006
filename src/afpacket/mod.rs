//! The AF_PACKET backend: a TPACKET_V3 receive ring ([`Capture`]) and a mmap TX ring
//! ([`Injector`]).
//!
//! Inner shape, shared with the other backends: `socket` (the OS object and its options), `ring`
//! (shared-memory bookkeeping, testable without a kernel), `batch` (the owned zero-copy handles
//! lent to users), `tx` (transmission), plus `capture` (the RX builder and reader) and the async
//! adapters `stream` (RX `Stream`s) and `sink` (TX `Sink`), generic over a
//! [`Runtime`](crate::runtime::Runtime).

mod batch;
mod capture;
mod fanout;
pub(crate) mod ring;
mod sink;
mod socket;
mod stream;
mod tx;

pub use batch::{
    Batch, OwnedPacket, Packet, PacketType, Packets, Timestamp, TimestampSource, VlanTag,
};
pub use capture::{Capture, CaptureBuilder, Protocol, Stats, Timestamping};
pub use fanout::{Fanout, FanoutFlags, FanoutGroup, FanoutMode, MAX_FANOUT_MEMBERS, SocketProgram};
pub use sink::AsyncInjector;
pub use stream::{AsyncCapture, PacketStream};
pub use tx::{Injector, InjectorBuilder, TxSlot};
