//! The crate's error type.

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with messages that say what to do about it.
///
/// ```no_run
/// match netring::Capture::open("eth9") {
///     Err(netring::Error::NoSuchInterface { name }) => eprintln!("{name}: no such interface"),
///     Err(netring::Error::PermissionDenied { capability, .. }) => eprintln!("need {capability}"),
///     Err(e) => eprintln!("{e}"),
///     Ok(_) => {}
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named interface does not exist (in the current network namespace).
    #[error(
        "no such interface `{name}`: check the name with `ip link show` (and the network namespace)"
    )]
    NoSuchInterface {
        /// The name that was looked up.
        name: String,
    },

    /// The operation needs a capability the process does not have.
    #[error(
        "{operation} needs {capability}: run as root or grant it with `setcap {}=eip <binary>`",
        setcap_caps(capability)
    )]
    PermissionDenied {
        /// What was being attempted.
        operation: &'static str,
        /// The capability that is missing, e.g. `CAP_NET_RAW`.
        capability: &'static str,
    },

    /// The ring geometry asked for cannot work; nothing was created.
    #[error("invalid ring geometry: {0}")]
    Geometry(#[from] GeometryError),

    /// The kernel could not allocate or map a ring of this size.
    #[error(
        "the kernel could not allocate a {bytes}-byte ring ({source}): use fewer or smaller blocks/frames"
    )]
    RingAllocation {
        /// Total ring size requested.
        bytes: usize,
        /// What the kernel said.
        source: io::Error,
    },

    /// A frame does not fit in one TX ring frame.
    #[error(
        "frame of {len} bytes does not fit a TX ring frame (at most {max} bytes): raise `frame_size`"
    )]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// Largest frame the ring's frame size allows.
        max: usize,
    },

    /// A frame is longer than the link accepts (MTU plus link-layer header).
    #[error(
        "frame of {len} bytes exceeds the link's limit of {max} bytes (MTU {mtu}): raise the interface MTU or send smaller frames"
    )]
    FrameExceedsMtu {
        /// The frame's length.
        len: usize,
        /// The interface MTU.
        mtu: u32,
        /// Largest frame the link accepts (MTU + Ethernet header, + 4 for a VLAN tag).
        max: usize,
    },

    /// A frame too short to be an Ethernet frame.
    #[error("frame of {len} bytes is shorter than an Ethernet header (14 bytes)")]
    FrameTooShort {
        /// The frame's length.
        len: usize,
    },

    /// The interface went down while in use. Batches already received stay valid; reading may
    /// continue if it comes back up.
    #[error("interface `{name}` went down")]
    InterfaceDown {
        /// Interface name.
        name: String,
    },

    /// The interface was deleted while in use. Batches already received stay valid; nothing more
    /// will arrive.
    #[error("interface `{name}` (index {index}) was deleted")]
    InterfaceGone {
        /// Interface name as it was.
        name: String,
        /// Its former index.
        index: u32,
    },

    /// The kernel refused a socket into a fanout group (or its program); `reason` says why and
    /// what to do.
    #[error("fanout group {group_id}: {reason}")]
    Fanout {
        /// The group id.
        group_id: u16,
        /// What was refused and what to do instead.
        reason: String,
    },

    /// A classic BPF program is malformed.
    #[error("invalid BPF program: {0}")]
    InvalidFilter(String),

    /// A tcpdump-style filter expression could not be compiled; `column` (1-based, in characters)
    /// points at the offending token.
    #[error("filter \"{expression}\": column {column}: {message}")]
    FilterSyntax {
        /// The expression as given.
        expression: String,
        /// 1-based character column of the offending token (one past the end for "unexpected end").
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },

    /// A pcap file is malformed or truncated. Records before the fault were returned.
    #[error("pcap: {0}")]
    Pcap(String),

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The interface, driver or kernel cannot do what was asked of XDP / AF_XDP.
    #[error("XDP is not available on `{interface}`: {reason}")]
    XdpUnsupported {
        /// Interface name (empty when the kernel itself lacks support).
        interface: String,
        /// What was refused and what to do instead.
        reason: String,
    },

    /// The kernel's verifier refused a BPF program; its log says why.
    #[error("the BPF verifier refused the program: {log}")]
    BpfVerifier {
        /// The verifier log.
        log: String,
    },

    /// The kernel refused to attach an XDP program to an interface.
    #[error("attaching XDP to `{interface}` in {mode} mode failed ({source}): {hint}")]
    XdpAttach {
        /// Interface name.
        interface: String,
        /// The mode that was tried last: `native` or `generic`.
        mode: &'static str,
        /// What the kernel said.
        source: io::Error,
        /// What it means and what to do.
        hint: String,
    },

    /// Locked memory (`RLIMIT_MEMLOCK`) is too small for the UMEM or a BPF map.
    #[error(
        "{bytes} bytes of locked memory refused: raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, or LimitMEMLOCK= in a systemd unit) or use a smaller UMEM"
    )]
    Memlock {
        /// Size that was refused.
        bytes: usize,
    },

    /// An async ring was created outside the runtime it is meant for.
    #[error(
        "no {runtime} runtime is running: create the async ring from inside one (with IO enabled)"
    )]
    NoRuntime {
        /// Which runtime was expected.
        runtime: &'static str,
    },

    /// `Sink::start_send` was called without a successful `poll_ready` first.
    #[error("the TX ring is full: call poll_ready (or use SinkExt::send) before start_send")]
    SinkNotReady,

    /// Any other system call failure, with the operation that failed.
    #[error("{operation} failed: {source}")]
    Io {
        /// The operation that failed.
        operation: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// The capabilities `setcap` should grant for a [`Error::PermissionDenied`].
fn setcap_caps(capability: &str) -> &'static str {
    if capability.contains("CAP_BPF") {
        "cap_bpf,cap_net_admin"
    } else {
        "cap_net_raw,cap_net_admin"
    }
}

/// Why a ring geometry was rejected.
///
/// ```
/// use netring::{Capture, GeometryError};
/// let err = Capture::builder("eth0").block_size(5000).validate().unwrap_err();
/// assert!(matches!(err, GeometryError::BlockSizeNotPageMultiple { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// The block size is not a positive multiple of the page size.
    #[error("block size {block_size} is not a multiple of the page size ({page_size})")]
    BlockSizeNotPageMultiple {
        /// Requested block size.
        block_size: usize,
        /// System page size.
        page_size: usize,
    },
    /// The block size is not a power of two (the kernel allocates blocks in page orders).
    #[error("block size {block_size} is not a power of two")]
    BlockSizeNotPowerOfTwo {
        /// Requested block size.
        block_size: usize,
    },
    /// The frame size is not a multiple of `TPACKET_ALIGNMENT` (16).
    #[error("frame size {frame_size} is not a multiple of 16 (TPACKET_ALIGNMENT)")]
    FrameSizeUnaligned {
        /// Requested frame size.
        frame_size: usize,
    },
    /// The frame size cannot hold the frame header.
    #[error("frame size {frame_size} is smaller than the {min}-byte frame header")]
    FrameSizeTooSmall {
        /// Requested frame size.
        frame_size: usize,
        /// Minimum.
        min: usize,
    },
    /// A frame does not fit in a block.
    #[error("frame size {frame_size} is larger than the block size {block_size}")]
    FrameLargerThanBlock {
        /// Requested frame size.
        frame_size: usize,
        /// Requested block size.
        block_size: usize,
    },
    /// Zero blocks or frames.
    #[error("the ring needs at least one {what}")]
    Empty {
        /// "block" or "frame".
        what: &'static str,
    },
    /// The ring is larger than the kernel's limits allow.
    #[error("ring of {bytes} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Requested size in bytes.
        bytes: u128,
        /// The limit.
        limit: u128,
    },
    /// The block retire timeout is out of range.
    #[error("block timeout of {ms} ms is out of range (1..=60000 ms)")]
    BlockTimeout {
        /// Requested timeout in milliseconds.
        ms: u128,
    },
}

impl Error {
    /// Builds an [`Error::Io`], turning `EPERM`/`EACCES` into [`Error::PermissionDenied`].
    pub(crate) fn os(operation: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied {
                operation,
                capability: if operation.contains("promisc")
                    || operation.contains("busy")
                    || operation.contains("netns")
                {
                    "CAP_NET_ADMIN"
                } else {
                    "CAP_NET_RAW"
                },
            },
            _ => Error::Io { operation, source },
        }
    }

    /// The underlying OS error code, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. }
            | Error::RingAllocation { source, .. }
            | Error::XdpAttach { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Lets code built around `std::io::Error` (tokio-util `Decoder`s and `Encoder`s such as
/// `BytesCodec`, `?` in io functions) take netring errors. The kind follows the cause (OS errors
/// keep theirs); the netring error stays inside (`get_ref()`, `into_inner()`, downcast).
///
/// ```
/// let e = netring::Error::NoSuchInterface { name: "eth9".into() };
/// let io: std::io::Error = e.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
/// assert!(io.get_ref().unwrap().downcast_ref::<netring::Error>().is_some());
/// ```
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. }
            | Error::RingAllocation { source, .. }
            | Error::XdpAttach { source, .. } => source.kind(),
            Error::NoSuchInterface { .. } | Error::InterfaceGone { .. } => io::ErrorKind::NotFound,
            Error::PermissionDenied { .. } => io::ErrorKind::PermissionDenied,
            Error::SinkNotReady => io::ErrorKind::WouldBlock,
            Error::Geometry(_)
            | Error::FrameTooLarge { .. }
            | Error::FrameExceedsMtu { .. }
            | Error::FrameTooShort { .. }
            | Error::InvalidFilter(_)
            | Error::FilterSyntax { .. }
            | Error::InvalidConfig(_) => io::ErrorKind::InvalidInput,
            Error::Pcap(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
