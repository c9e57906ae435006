//! Kernel fanout groups (`PACKET_FANOUT`): several packet sockets on one interface sharing its
//! traffic, each packet delivered to exactly one of them.
//!
//! [`Fanout`] makes one [`CaptureBuilder`] join a group; [`FanoutGroup`] opens all the members of
//! a group at once, in a known order, and closes them all again if any one fails. The spreading
//! policy is a [`FanoutMode`]; with [`FanoutMode::Cbpf`] and [`FanoutMode::Ebpf`] a BPF program
//! picks the member, and [`SocketProgram`] loads such an eBPF program from instructions assembled
//! with [`crate::xdp::Insn`].

use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::capture::{Capture, CaptureBuilder};
use super::stream::{AsyncCapture, PacketStream};
use crate::bpf::BpfProgram;
use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::sys::bpf;
use crate::xdp::Insn;

/// Most members a group may have (the kernel's limit with the classic `PACKET_FANOUT` option).
pub const MAX_FANOUT_MEMBERS: usize = 256;

/// How a fanout group spreads packets over its members (`PACKET_FANOUT_*`).
///
/// Every member of a group must use the same mode (and, for the program modes, the group has one
/// program: setting it again from any member replaces it for all).
///
/// ```no_run
/// use netring::{Capture, Fanout, FanoutMode};
/// // Four sockets sharing the traffic of eth0, each flow on one of them.
/// let caps: Vec<Capture> = (0..4)
///     .map(|_| Capture::builder("eth0").fanout(Fanout::new(FanoutMode::Hash, 42)).open())
///     .collect::<Result<_, _>>()?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutMode {
    /// By flow hash (symmetric: both directions of a flow go to the same member).
    Hash,
    /// Round robin.
    LoadBalance,
    /// By the CPU that received the packet.
    Cpu,
    /// Fill one member, then roll over to the next.
    Rollover,
    /// Random.
    Random,
    /// By the packet's receive queue (`skb_get_queue_mapping`).
    QueueMapping,
    /// A classic BPF program returns the member index (`PACKET_FANOUT_CBPF`); the kernel takes
    /// it modulo the number of members.
    ///
    /// For a received packet the program sees it from the network header on: the kernel has
    /// already consumed the link-layer header, so on Ethernet `len` is the frame length less 14
    /// and `ld [0]` reads the first byte of the IP header. Outgoing packets (seen with
    /// [`Protocol::All`](super::Protocol::All)) are seen whole.
    Cbpf(BpfProgram),
    /// An eBPF program of type `BPF_PROG_TYPE_SOCKET_FILTER` returns the member index
    /// (`PACKET_FANOUT_EBPF`), taken modulo the number of members. Its context is the
    /// `struct __sk_buff` of the packet, seen as for [`Cbpf`](Self::Cbpf) (`len` excludes the
    /// Ethernet header of received frames).
    Ebpf(Arc<SocketProgram>),
}

impl FanoutMode {
    pub(crate) fn raw(&self) -> u32 {
        match self {
            FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
            FanoutMode::LoadBalance => libc::PACKET_FANOUT_LB,
            FanoutMode::Cpu => libc::PACKET_FANOUT_CPU,
            FanoutMode::Rollover => libc::PACKET_FANOUT_ROLLOVER,
            FanoutMode::Random => libc::PACKET_FANOUT_RND,
            FanoutMode::QueueMapping => libc::PACKET_FANOUT_QM,
            FanoutMode::Cbpf(_) => libc::PACKET_FANOUT_CBPF,
            FanoutMode::Ebpf(_) => libc::PACKET_FANOUT_EBPF,
        }
    }

    /// The mode's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            FanoutMode::Hash => "hash",
            FanoutMode::LoadBalance => "load balance",
            FanoutMode::Cpu => "cpu",
            FanoutMode::Rollover => "rollover",
            FanoutMode::Random => "random",
            FanoutMode::QueueMapping => "queue mapping",
            FanoutMode::Cbpf(_) => "cbpf",
            FanoutMode::Ebpf(_) => "ebpf",
        }
    }
}

/// Fanout flags (`PACKET_FANOUT_FLAG_*`), combined with `|`.
///
/// ```
/// use netring::{Fanout, FanoutFlags, FanoutMode};
/// let f = Fanout::new(FanoutMode::Hash, 7).flags(FanoutFlags::DEFRAG | FanoutFlags::ROLLOVER);
/// assert_eq!(f.flags.bits(), 0x9000);
/// assert!(f.flags.contains(FanoutFlags::DEFRAG));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FanoutFlags(u16);

impl FanoutFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// Reassemble IP fragments before hashing, so fragments of a datagram stay together.
    pub const DEFRAG: Self = Self(libc::PACKET_FANOUT_FLAG_DEFRAG as u16);
    /// Roll over to another member when the chosen one is full (not with
    /// [`FanoutMode::Rollover`], which does that already).
    pub const ROLLOVER: Self = Self(libc::PACKET_FANOUT_FLAG_ROLLOVER as u16);
    /// Let the kernel pick an unused group id (the group id given must then be 0); read it back
    /// with [`Capture::fanout_group_id`] and join the other members with that id and without this
    /// flag. [`FanoutGroup`] does all this by itself.
    pub const UNIQUE_ID: Self = Self(libc::PACKET_FANOUT_FLAG_UNIQUEID as u16);
    /// Do not deliver outgoing packets to the group (Linux 4.20+).
    pub const IGNORE_OUTGOING: Self = Self(libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING as u16);

    /// The raw bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// True if every flag of `other` is set in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` without the flags of `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for FanoutFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for FanoutFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Membership of a kernel fanout group: sockets on one interface with the same group id share
/// its traffic, each packet delivered to exactly one of them.
///
/// Every member must use the same mode, flags, interface and protocol; the kernel refuses a
/// member that differs ([`Error::Fanout`]). To open a whole group at once, use [`FanoutGroup`].
///
/// ```
/// use netring::{Fanout, FanoutMode};
/// let group = Fanout::new(FanoutMode::LoadBalance, 1000);
/// assert_eq!(group.group_id, 1000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// Spreading policy; all members must use the same one.
    pub mode: FanoutMode,
    /// Group id, unique per network namespace.
    pub group_id: u16,
    /// Flags; all members must use the same ones.
    pub flags: FanoutFlags,
}

impl Fanout {
    /// A group with no flags.
    pub fn new(mode: FanoutMode, group_id: u16) -> Self {
        Self {
            mode,
            group_id,
            flags: FanoutFlags::NONE,
        }
    }

    /// Sets the flags.
    pub fn flags(mut self, flags: FanoutFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The `PACKET_FANOUT` argument: `id | (mode | flags) << 16`.
    pub(crate) fn raw(&self) -> u32 {
        u32::from(self.group_id) | ((self.mode.raw() | u32::from(self.flags.0)) << 16)
    }

    /// Checks what the kernel would refuse with a bare `EINVAL`, to say why instead.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.flags.contains(FanoutFlags::UNIQUE_ID) && self.group_id != 0 {
            return Err(Error::InvalidConfig(format!(
                "FanoutFlags::UNIQUE_ID lets the kernel pick the group id, so the id given must \
                 be 0 (it is {}): pass 0, or drop the flag to use id {}",
                self.group_id, self.group_id
            )));
        }
        if self.mode == FanoutMode::Rollover && self.flags.contains(FanoutFlags::ROLLOVER) {
            return Err(Error::InvalidConfig(
                "FanoutFlags::ROLLOVER cannot be combined with FanoutMode::Rollover (which rolls \
                 over already): drop the flag"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Explains the kernel's refusal of a `PACKET_FANOUT` join.
    pub(crate) fn join_error(&self, e: std::io::Error) -> Error {
        let group_id = self.group_id;
        match e.raw_os_error() {
            Some(libc::EINVAL) => Error::Fanout {
                group_id,
                reason: format!(
                    "the kernel refused to join it in {} mode with flags {:#06x}: a group with \
                     this id already exists in this network namespace with another mode, other \
                     flags, or on another interface or protocol (every member must use the same \
                     ones), or this kernel does not know the mode or a flag (IGNORE_OUTGOING \
                     needs Linux 4.20): use another id or FanoutFlags::UNIQUE_ID",
                    self.mode.name(),
                    self.flags.0
                ),
            },
            Some(libc::ENOSPC) => Error::Fanout {
                group_id,
                reason: format!(
                    "the group is full (at most {MAX_FANOUT_MEMBERS} members): close a member \
                     or use another id"
                ),
            },
            Some(libc::ENOMEM) if self.flags.contains(FanoutFlags::UNIQUE_ID) => Error::Fanout {
                group_id,
                reason: "the kernel found no unused group id: close some groups".into(),
            },
            _ => Error::os("PACKET_FANOUT (joining a fanout group)", e),
        }
    }
}

/// An eBPF program of type `BPF_PROG_TYPE_SOCKET_FILTER`, for [`FanoutMode::Ebpf`]: it runs on
/// each packet (context: `struct __sk_buff`, in `R1`) and returns the index of the member that
/// gets it.
///
/// Load one from instructions assembled with [`Insn`], or adopt the descriptor of one loaded
/// elsewhere (e.g. with aya) with [`from_fd`](Self::from_fd).
///
/// ```no_run
/// use std::sync::Arc;
/// use netring::afpacket::{FanoutGroup, SocketProgram};
/// use netring::xdp::{AluOp, Insn, MemSize, Reg};
/// use netring::FanoutMode;
///
/// // r0 = skb->len % 3: the member is picked by the packet's length.
/// let prog = SocketProgram::load(&[
///     Insn::ldx_mem(MemSize::W, Reg::R0, Reg::R1, 0), // __sk_buff.len
///     Insn::alu64_imm(AluOp::Mod, Reg::R0, 3),
///     Insn::exit(),
/// ])?;
/// let caps = FanoutGroup::new("eth0", FanoutMode::Ebpf(Arc::new(prog))).members(3).open()?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct SocketProgram {
    fd: OwnedFd,
    id: u32,
}

/// License declared for programs loaded by [`SocketProgram::load`] (the crate's own).
const LICENSE: &str = "MIT OR Apache-2.0";

impl SocketProgram {
    /// Loads `insns` as a socket filter program, declared under the crate's license
    /// (`MIT OR Apache-2.0`; GPL-only helpers then are off limits, see
    /// [`load_with_license`](Self::load_with_license)).
    ///
    /// A program the verifier refuses gives [`Error::BpfVerifier`] with its log.
    pub fn load(insns: &[Insn]) -> Result<Self> {
        Self::load_with_license(insns, LICENSE)
    }

    /// Loads `insns` declaring `license` ("GPL" or "Dual MIT/GPL" to call GPL-only helpers).
    ///
    /// ```no_run
    /// use netring::afpacket::SocketProgram;
    /// use netring::xdp::{Insn, Reg};
    /// let to_first = SocketProgram::load_with_license(
    ///     &[Insn::mov64_imm(Reg::R0, 0), Insn::exit()],
    ///     "GPL",
    /// )?;
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn load_with_license(insns: &[Insn], license: &str) -> Result<Self> {
        if insns.is_empty() {
            return Err(Error::InvalidConfig(
                "a socket program needs at least one instruction (and must end with exit)".into(),
            ));
        }
        let raw: Vec<[u8; 8]> = insns.iter().map(|i| i.to_bytes()).collect();
        let fd = bpf::prog_load(
            bpf::BPF_PROG_TYPE_SOCKET_FILTER,
            &raw,
            license,
            "netring_fanout",
        )
        .map_err(|e| {
            if let Some(refused) = e.verifier_error() {
                return refused;
            }
            match e.error.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    let memlock_charged = bpf::kernel_version().is_some_and(|v| v < (5, 11));
                    if memlock_charged && bpf::memlock_limit().is_some() {
                        Error::Memlock {
                            bytes: raw.len() * 8 + 4096,
                        }
                    } else {
                        Error::PermissionDenied {
                            operation: "loading a socket filter eBPF program (BPF_PROG_LOAD)",
                            capability: "CAP_BPF (CAP_SYS_ADMIN before Linux 5.8)",
                        }
                    }
                }
                Some(libc::E2BIG) => Error::InvalidConfig(format!(
                    "the socket program has {} instructions, more than the kernel accepts",
                    raw.len()
                )),
                _ => Error::Io {
                    operation: "loading a socket filter eBPF program (BPF_PROG_LOAD)",
                    source: e.error,
                },
            }
        })?;
        Self::from_fd(fd)
    }

    /// Adopts a program loaded elsewhere (e.g. a duplicate of aya's program descriptor). Checks
    /// that it is a BPF program of type `BPF_PROG_TYPE_SOCKET_FILTER`.
    ///
    /// ```no_run
    /// use std::os::fd::OwnedFd;
    /// use std::sync::Arc;
    /// use netring::{FanoutGroup, FanoutMode, SocketProgram};
    ///
    /// # fn f(loaded_elsewhere: OwnedFd) -> netring::Result<()> {
    /// let prog = SocketProgram::from_fd(loaded_elsewhere)?;
    /// let members = FanoutGroup::new("eth0", FanoutMode::Ebpf(Arc::new(prog))).members(2).open()?;
    /// # Ok(()) }
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let info = bpf::expect_prog(
            fd.as_fd(),
            bpf::BPF_PROG_TYPE_SOCKET_FILTER,
            "a socket filter (BPF_PROG_TYPE_SOCKET_FILTER = 1): load it as one for fanout",
        )?;
        Ok(Self { fd, id: info.id })
    }

    /// The program's kernel id (as `bpftool prog` shows it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Runs the program once in the kernel on a copy of `frame` (a whole Ethernet frame, seen
    /// from its network header as a received one would be) and returns what it returns: the
    /// member index before the kernel takes it modulo the member count.
    ///
    /// ```no_run
    /// use netring::afpacket::SocketProgram;
    /// use netring::xdp::{Insn, MemSize, Reg};
    /// let len = SocketProgram::load(&[Insn::ldx_mem(MemSize::W, Reg::R0, Reg::R1, 0), Insn::exit()])?;
    /// assert_eq!(len.test_run(&[0u8; 100])?, 86); // 100 bytes less the Ethernet header
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn test_run(&self, frame: &[u8]) -> Result<u32> {
        if frame.len() < 14 {
            return Err(Error::FrameTooShort { len: frame.len() });
        }
        bpf::prog_test_run(self.fd.as_fd(), frame).map_err(|e| Error::Io {
            operation: "running the socket program (BPF_PROG_TEST_RUN)",
            source: e,
        })
    }
}

impl PartialEq for SocketProgram {
    /// The same kernel program.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SocketProgram {}

impl AsFd for SocketProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The id a [`FanoutGroup`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupId {
    /// The kernel picks an unused one (`PACKET_FANOUT_FLAG_UNIQUEID`).
    Unique,
    Fixed(u16),
}

/// Opens every member of a fanout group at once: `N` captures on one interface, each packet
/// delivered to exactly one of them.
///
/// Members join in order, so the `i`-th capture returned is member `i`: with
/// [`FanoutMode::Cbpf`] and [`FanoutMode::Ebpf`] it receives the packets for which the program
/// returns `i` (modulo `N`). The kernel keeps that order while all members stay open; closing
/// member `i` moves the last member into slot `i`.
///
/// Until `open` returns, the group is being built: with a program mode, the program is set once
/// every member has joined, and packets arriving before that all go to member 0. If any step
/// fails, the members opened so far are closed and the error says why.
///
/// By default the kernel picks an unused group id ([`FanoutFlags::UNIQUE_ID`]);
/// [`id`](Self::id) fixes one, e.g. to let another process join. Read it back with
/// [`Capture::fanout_group_id`].
///
/// ```no_run
/// use std::time::Duration;
/// use netring::{Capture, FanoutFlags, FanoutMode};
/// use netring::afpacket::FanoutGroup;
///
/// let mut members = FanoutGroup::new("eth0", FanoutMode::Hash)
///     .members(4)
///     .flags(FanoutFlags::DEFRAG)
///     .capture(Capture::builder("eth0").block_count(16))
///     .open()?;
/// println!("group {:?}", members[0].fanout_group_id());
/// for cap in &mut members {
///     if let Some(batch) = cap.next_batch(Some(Duration::from_millis(100)))? {
///         println!("{} packets", batch.len());
///     }
/// }
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FanoutGroup {
    interface: String,
    mode: FanoutMode,
    members: usize,
    flags: FanoutFlags,
    id: GroupId,
    template: Option<CaptureBuilder>,
}

impl FanoutGroup {
    /// A group on `interface` spreading packets by `mode`, with one member per available CPU, no
    /// flags, a kernel-picked id and default captures.
    pub fn new(interface: &str, mode: FanoutMode) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            interface: interface.to_owned(),
            mode,
            members: cpus.min(MAX_FANOUT_MEMBERS),
            flags: FanoutFlags::NONE,
            id: GroupId::Unique,
            template: None,
        }
    }

    /// Number of members (1 to [`MAX_FANOUT_MEMBERS`]).
    pub fn members(mut self, n: usize) -> Self {
        self.members = n;
        self
    }

    /// Flags shared by every member. [`FanoutFlags::UNIQUE_ID`] here means the same as not
    /// calling [`id`](Self::id).
    pub fn flags(mut self, flags: FanoutFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Uses group id `id` (unique per network namespace) instead of a kernel-picked one. If a
    /// group with this id exists, the members join it (it must have the same mode and flags),
    /// after the members already there: their indices follow those.
    pub fn id(mut self, id: u16) -> Self {
        self.id = GroupId::Fixed(id);
        self
    }

    /// Lets the kernel pick an unused group id (the default).
    pub fn unique_id(mut self) -> Self {
        self.id = GroupId::Unique;
        self
    }

    /// The settings of every member's capture (ring geometry, protocol, filter, ...). Its
    /// interface and fanout are replaced by the group's.
    pub fn capture(mut self, template: CaptureBuilder) -> Self {
        self.template = Some(template);
        self
    }

    fn check(&self) -> Result<()> {
        if self.members == 0 || self.members > MAX_FANOUT_MEMBERS {
            return Err(Error::InvalidConfig(format!(
                "a fanout group has 1 to {MAX_FANOUT_MEMBERS} members, {} were asked for",
                self.members
            )));
        }
        if self.id != GroupId::Unique && self.flags.contains(FanoutFlags::UNIQUE_ID) {
            return Err(Error::InvalidConfig(
                "FanoutFlags::UNIQUE_ID asks the kernel for a group id, but `id` fixed one: \
                 use one or the other"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Opens the members, in order: member `i` is element `i`.
    pub fn open(self) -> Result<Vec<Capture>> {
        self.check()?;
        let FanoutGroup {
            interface,
            mode,
            members: count,
            flags,
            id,
            template,
        } = self;
        let template = template
            .unwrap_or_else(|| Capture::builder(&interface))
            .with_interface(&interface);
        let flags = flags.without(FanoutFlags::UNIQUE_ID);
        let (mut group_id, first_flags) = match id {
            GroupId::Unique => (0, flags | FanoutFlags::UNIQUE_ID),
            GroupId::Fixed(id) => (id, flags),
        };
        let mut members = Vec::with_capacity(count);
        for i in 0..count {
            let fanout = Fanout {
                mode: mode.clone(),
                group_id,
                flags: if i == 0 { first_flags } else { flags },
            };
            // Dropping `members` on error closes the ones opened so far.
            let cap = template.clone().fanout(fanout).open_member(false)?;
            if i == 0 {
                group_id = cap.fanout_group_id().ok_or_else(|| Error::Fanout {
                    group_id,
                    reason: "the kernel does not report the group the first member joined".into(),
                })?;
            }
            members.push(cap);
        }
        if let Some(first) = members.first() {
            first.set_fanout_program(&mode, group_id)?;
        }
        Ok(members)
    }

    /// Opens the members as async captures on the runtime `R` (call from inside it), in order.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::{FanoutGroup, FanoutMode, runtime::Runtime};
    ///
    /// async fn count<R: Runtime>() -> netring::Result<()> {
    ///     for mut member in FanoutGroup::new("eth0", FanoutMode::Hash).members(2).open_async::<R>()? {
    ///         if let Some(batch) = member.next().await {
    ///             println!("{} packets", batch?.len());
    ///         }
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn open_async<R: Runtime>(self) -> Result<Vec<AsyncCapture<R>>> {
        self.open()?.into_iter().map(AsyncCapture::new).collect()
    }

    /// Opens the members as async packet streams on the runtime `R` (call from inside it), in
    /// order: typically one task per member.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::{FanoutGroup, FanoutMode, runtime::Tokio};
    ///
    /// # async fn f() -> netring::Result<()> {
    /// let members = FanoutGroup::new("eth0", FanoutMode::Hash).members(4).open_packets::<Tokio>()?;
    /// for (i, mut packets) in members.into_iter().enumerate() {
    ///     tokio::spawn(async move {
    ///         while let Some(Ok(pkt)) = packets.next().await {
    ///             println!("member {i}: {} bytes", pkt.data().len());
    ///         }
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn open_packets<R: Runtime>(self) -> Result<Vec<PacketStream<R>>> {
        Ok(self
            .open_async::<R>()?
            .into_iter()
            .map(AsyncCapture::packets)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_argument_packs_id_mode_and_flags() {
        let f = Fanout::new(FanoutMode::Cpu, 0x1234)
            .flags(FanoutFlags::DEFRAG | FanoutFlags::IGNORE_OUTGOING);
        assert_eq!(f.raw(), 0x1234 | (2 | 0x8000 | 0x4000) << 16);
        let cbpf = Fanout::new(FanoutMode::Cbpf(BpfProgram::accept_all()), 1);
        assert_eq!(cbpf.raw() >> 16, libc::PACKET_FANOUT_CBPF);
    }

    #[test]
    fn flags_combine_and_remove() {
        let mut f = FanoutFlags::ROLLOVER;
        f |= FanoutFlags::UNIQUE_ID;
        assert!(f.contains(FanoutFlags::ROLLOVER | FanoutFlags::UNIQUE_ID));
        assert_eq!(f.without(FanoutFlags::UNIQUE_ID), FanoutFlags::ROLLOVER);
        assert!(!FanoutFlags::NONE.contains(FanoutFlags::DEFRAG));
    }

    #[test]
    fn settings_the_kernel_would_refuse_are_explained() {
        let unique_with_id = Fanout::new(FanoutMode::Hash, 3).flags(FanoutFlags::UNIQUE_ID);
        assert!(matches!(
            unique_with_id.validate(),
            Err(Error::InvalidConfig(_))
        ));
        let double_rollover = Fanout::new(FanoutMode::Rollover, 3).flags(FanoutFlags::ROLLOVER);
        assert!(matches!(
            double_rollover.validate(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(
            Fanout::new(FanoutMode::Hash, 0)
                .flags(FanoutFlags::UNIQUE_ID)
                .validate()
                .is_ok()
        );
        let e = Fanout::new(FanoutMode::Hash, 9)
            .join_error(std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(e, Error::Fanout { group_id: 9, .. }), "{e}");
        let e = Fanout::new(FanoutMode::Hash, 9)
            .join_error(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.to_string().contains("full"), "{e}");
    }

    #[test]
    fn group_member_count_is_checked() {
        for n in [0, MAX_FANOUT_MEMBERS + 1] {
            let g = FanoutGroup::new("eth0", FanoutMode::Hash).members(n);
            assert!(matches!(g.check(), Err(Error::InvalidConfig(_))));
        }
        let g = FanoutGroup::new("eth0", FanoutMode::Hash).members(MAX_FANOUT_MEMBERS);
        assert!(g.check().is_ok());
        assert!(FanoutGroup::new("eth0", FanoutMode::Hash).members >= 1);
    }
}
