//! Loading the XDP program and its XSKMAP, and attaching it to an interface through a BPF link.
//!
//! A BPF link ties the attachment to a file descriptor: when the last descriptor of the link is
//! closed (the [`XdpAttachment`] is dropped, the process exits, panics, aborts or is killed) the
//! kernel detaches the program. Nothing is left behind on the interface.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::program::{self, Insn, Match, XdpAction};
use crate::error::{Error, Result};
use crate::iface::Interface;
use crate::sys::bpf;

/// License string of the programs this crate generates (they call no GPL-only helper).
const LICENSE: &str = "MIT OR Apache-2.0";

/// `CAP_NET_ADMIN`.
const CAP_NET_ADMIN: u32 = 12;

/// The capabilities loading BPF objects takes (Linux 5.8+; `CAP_SYS_ADMIN` before).
const BPF_CAPS: &str = "CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN before Linux 5.8)";

/// Explains an `EPERM`/`EACCES` from creating a BPF map or loading a program of `bytes` bytes.
///
/// Without the capabilities it is [`Error::PermissionDenied`]. With them, on kernels before 5.11
/// (which charge BPF objects to `RLIMIT_MEMLOCK` rather than to the memory cgroup), a finite
/// memlock limit is the usual cause: [`Error::Memlock`].
fn bpf_denied(operation: &'static str, bytes: usize, source: io::Error) -> Error {
    let caps = bpf::effective_caps().unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let privileged = (has(bpf::CAP_BPF) || has(bpf::CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN);
    if !privileged {
        return Error::PermissionDenied {
            operation,
            capability: BPF_CAPS,
        };
    }
    let memlock_charged = bpf::kernel_version().is_some_and(|v| v < (5, 11));
    if memlock_charged && bpf::memlock_limit().is_some() {
        return Error::Memlock { bytes };
    }
    // Privileged and not memlock: an LSM, lockdown, or a sysctl said no. Keep the errno.
    Error::Io { operation, source }
}

fn is_denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// An `XSKMAP`: AF_XDP sockets by receive queue, the table the XDP program redirects through.
///
/// A socket leaves the map by itself when it is closed.
///
/// ```no_run
/// use netring::xdp::XskMap;
/// let map = XskMap::new(4)?;
/// assert_eq!(map.max_entries(), 4);
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct XskMap {
    fd: OwnedFd,
    max_entries: u32,
}

impl XskMap {
    /// Creates an XSKMAP with room for queues `0..max_entries`.
    pub fn new(max_entries: u32) -> Result<Self> {
        if max_entries == 0 {
            return Err(Error::InvalidConfig(
                "an XSKMAP needs at least one entry (one per receive queue)".into(),
            ));
        }
        let fd = bpf::map_create(bpf::BPF_MAP_TYPE_XSKMAP, 4, 4, max_entries, "netring_xsks")
            .map_err(|e| match e.raw_os_error() {
                _ if is_denied(&e) => bpf_denied(
                    "creating an XSKMAP (BPF_MAP_CREATE)",
                    max_entries as usize * 8 + 4096,
                    e,
                ),
                Some(libc::EINVAL) => Error::XdpUnsupported {
                    interface: String::new(),
                    reason: "the kernel refused to create an XSKMAP: it needs AF_XDP \
                             (CONFIG_XDP_SOCKETS, Linux 4.18+)"
                        .into(),
                },
                _ => Error::Io {
                    operation: "creating an XSKMAP (BPF_MAP_CREATE)",
                    source: e,
                },
            })?;
        Ok(Self { fd, max_entries })
    }

    /// Wraps an XSKMAP created elsewhere (e.g. by aya), after checking that it is one.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        if bpf::obj_kind(fd.as_fd()) != bpf::ObjKind::Map {
            return Err(Error::InvalidConfig(
                "the XSKMAP descriptor does not refer to a BPF map".into(),
            ));
        }
        let info = bpf::map_info(fd.as_fd()).map_err(|e| Error::Io {
            operation: "querying the XSKMAP (BPF_OBJ_GET_INFO_BY_FD)",
            source: e,
        })?;
        if info.map_type != bpf::BPF_MAP_TYPE_XSKMAP || info.key_size != 4 || info.value_size != 4 {
            return Err(Error::InvalidConfig(format!(
                "BPF map id {} is of type {} with {}-byte keys and {}-byte values; an XSKMAP \
                 (BPF_MAP_TYPE_XSKMAP = 17, 4-byte keys and values) is needed",
                info.id, info.map_type, info.key_size, info.value_size
            )));
        }
        Ok(Self {
            fd,
            max_entries: info.max_entries,
        })
    }

    /// Number of entries: queues `0..max_entries()` can have a socket.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// The map's kernel id (as `bpftool map` shows it).
    pub fn id(&self) -> Result<u32> {
        bpf::map_info(self.fd.as_fd())
            .map(|i| i.id)
            .map_err(|e| Error::Io {
                operation: "querying the XSKMAP (BPF_OBJ_GET_INFO_BY_FD)",
                source: e,
            })
    }

    /// Directs queue `queue`'s frames to the AF_XDP socket `xsk` (replacing any socket there).
    /// The socket must be bound to that queue of the interface the program is attached to,
    /// with an RX ring.
    pub fn insert(&self, queue: u32, xsk: impl AsFd) -> Result<()> {
        self.check_queue(queue)?;
        let value = xsk.as_fd().as_raw_fd() as u32;
        bpf::map_update_u32(self.fd.as_fd(), queue, value, bpf::BPF_ANY).map_err(|e| {
            match e.raw_os_error() {
                _ if is_denied(&e) => Error::PermissionDenied {
                    operation: "updating the XSKMAP",
                    capability: "CAP_NET_ADMIN",
                },
                Some(libc::EOPNOTSUPP) | Some(libc::ENOTSOCK) | Some(libc::EBADF) => {
                    Error::InvalidConfig(format!(
                        "queue {queue}: the descriptor is not an AF_XDP socket bound with an RX \
                         ring ({e}); bind the socket before adding it to the XSKMAP"
                    ))
                }
                _ => Error::Io {
                    operation: "updating the XSKMAP (BPF_MAP_UPDATE_ELEM)",
                    source: e,
                },
            }
        })
    }

    /// Removes the socket of queue `queue` (if any): its frames go to the kernel stack again.
    pub fn remove(&self, queue: u32) -> Result<()> {
        self.check_queue(queue)?;
        match bpf::map_delete_u32(self.fd.as_fd(), queue) {
            Ok(()) => Ok(()),
            // Older kernels say ENOENT for an empty slot: already removed.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) if is_denied(&e) => Err(Error::PermissionDenied {
                operation: "updating the XSKMAP",
                capability: "CAP_NET_ADMIN",
            }),
            Err(e) => Err(Error::Io {
                operation: "removing from the XSKMAP (BPF_MAP_DELETE_ELEM)",
                source: e,
            }),
        }
    }

    fn check_queue(&self, queue: u32) -> Result<()> {
        if queue >= self.max_entries {
            return Err(Error::InvalidConfig(format!(
                "queue {queue} is outside the XSKMAP (queues 0..{}): load the program with more \
                 queues",
                self.max_entries
            )));
        }
        Ok(())
    }
}

impl AsFd for XskMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// How to attach an XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttachMode {
    /// Native if the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Native (driver) mode, `XDP_FLAGS_DRV_MODE`: the program runs in the driver's receive
    /// path, before a socket buffer exists. Needed for zero-copy AF_XDP.
    Native,
    /// Generic (SKB) mode, `XDP_FLAGS_SKB_MODE`: works on every interface, later and slower;
    /// AF_XDP sockets on it copy.
    Generic,
}

impl AttachMode {
    /// `"auto"`, `"native"` or `"generic"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A loaded XDP program and the XSKMAP it redirects to.
///
/// Dropping it unloads the program unless it is still attached (an [`XdpAttachment`] keeps it).
///
/// ```no_run
/// use netring::xdp::{AttachMode, Match, XdpProgram};
/// // Only UDP to port 4789 goes to the AF_XDP sockets; everything else to the kernel stack.
/// let prog = XdpProgram::load_redirect(4, Some(Match::ipv4().udp_dst_port(4789)))?;
/// let attached = prog.attach("eth0", AttachMode::Auto)?;
/// println!("attached in {} mode", attached.mode());
/// // prog.xsk_map().insert(queue, &socket)?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct XdpProgram {
    prog: OwnedFd,
    map: XskMap,
}

impl XdpProgram {
    /// Loads the built-in program with a new XSKMAP for queues `0..max_queues`.
    ///
    /// Without `filter`, every frame is redirected to the socket of its receive queue
    /// (`bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`); with one, only matching frames
    /// are, and the rest get `XDP_PASS`. Either way, frames of a queue that has no socket in the
    /// map go on to the kernel stack.
    pub fn load_redirect(max_queues: u32, filter: Option<Match>) -> Result<Self> {
        Self::load_redirect_with(max_queues, filter, XdpAction::Pass)
    }

    /// [`load_redirect`](Self::load_redirect) with another action for frames whose queue has no
    /// socket (tests use `Drop` to tell matched frames from passed ones).
    pub(crate) fn load_redirect_with(
        max_queues: u32,
        filter: Option<Match>,
        no_socket: XdpAction,
    ) -> Result<Self> {
        if let Some(m) = &filter {
            m.validate()?;
        }
        let map = XskMap::new(max_queues)?;
        let insns = program::redirect_program(map.fd.as_raw_fd(), filter.as_ref(), no_socket);
        Self::load_with_name(&insns, LICENSE, map, "netring_xsk")
    }

    /// Loads a program of your own, assembled with [`Insn`], that redirects through `map`
    /// (reference it with [`Insn::ld_map_fd`] and `map`'s descriptor). `license` matters only
    /// for GPL-only helpers ("GPL" or "Dual MIT/GPL" to use them).
    ///
    /// A program the verifier refuses gives [`Error::BpfVerifier`] with its log.
    ///
    /// ```no_run
    /// use std::os::fd::{AsFd, AsRawFd};
    /// use netring::xdp::{Insn, Reg, XdpProgram, XskMap};
    /// let map = XskMap::new(1)?;
    /// let mut insns = vec![Insn::mov64_imm(Reg::R2, 0)]; // always queue 0's socket
    /// insns.extend(Insn::ld_map_fd(Reg::R1, map.as_fd().as_raw_fd()));
    /// insns.extend([Insn::mov64_imm(Reg::R3, 2), Insn::call(51), Insn::exit()]);
    /// let prog = XdpProgram::load_insns(&insns, "MIT", map)?;
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn load_insns(insns: &[Insn], license: &str, map: XskMap) -> Result<Self> {
        Self::load_with_name(insns, license, map, "netring_user")
    }

    fn load_with_name(insns: &[Insn], license: &str, map: XskMap, name: &str) -> Result<Self> {
        let raw: Vec<[u8; 8]> = insns.iter().map(|i| i.to_bytes()).collect();
        let prog = bpf::prog_load(bpf::BPF_PROG_TYPE_XDP, &raw, license, name).map_err(|e| {
            if let Some(refused) = e.verifier_error() {
                return refused;
            }
            match e.error.raw_os_error() {
                _ if is_denied(&e.error) => bpf_denied(
                    "loading an XDP program (BPF_PROG_LOAD)",
                    raw.len() * 8 + 4096,
                    e.error,
                ),
                Some(libc::E2BIG) => Error::InvalidConfig(format!(
                    "the XDP program has {} instructions, more than the kernel accepts",
                    raw.len()
                )),
                _ => Error::Io {
                    operation: "loading an XDP program (BPF_PROG_LOAD)",
                    source: e.error,
                },
            }
        })?;
        Ok(Self { prog, map })
    }

    /// Adopts a program and XSKMAP loaded elsewhere (e.g. with aya: pass duplicates of their
    /// descriptors). Checks that `prog` is an XDP program and `xsk_map` an XSKMAP.
    pub fn from_user(prog: OwnedFd, xsk_map: OwnedFd) -> Result<Self> {
        bpf::expect_prog(
            prog.as_fd(),
            bpf::BPF_PROG_TYPE_XDP,
            "XDP (BPF_PROG_TYPE_XDP = 6)",
        )?;
        let map = XskMap::from_fd(xsk_map)?;
        Ok(Self { prog, map })
    }

    /// The XSKMAP: put each AF_XDP socket in at its queue.
    pub fn xsk_map(&self) -> &XskMap {
        &self.map
    }

    /// The program's kernel id (as `ip link` and `bpftool prog` show it).
    pub fn id(&self) -> Result<u32> {
        bpf::prog_info(self.prog.as_fd())
            .map(|i| i.id)
            .map_err(|e| Error::Io {
                operation: "querying the XDP program (BPF_OBJ_GET_INFO_BY_FD)",
                source: e,
            })
    }

    /// Attaches the program to `interface` (looked up in the calling thread's network
    /// namespace) through a BPF link. [`AttachMode::Auto`] tries native mode and falls back to
    /// generic; [`XdpAttachment::mode`] says which it got.
    ///
    /// The program stays attached while the returned [`XdpAttachment`] lives, and not a moment
    /// longer: the kernel detaches it when the link's descriptor closes, however the process
    /// ends. A link never replaces another program: with one already attached this fails
    /// ([`Error::XdpAttach`], `EBUSY`).
    ///
    /// Attach a program to one interface only: its XSKMAP is indexed by queue alone, and the
    /// kernel drops frames redirected to a socket bound to another interface.
    pub fn attach(&self, interface: &str, mode: AttachMode) -> Result<XdpAttachment> {
        let iface = Interface::by_name(interface)?;
        let ifindex = iface.index();
        let link = |flags| bpf::link_create(self.prog.as_fd(), ifindex, bpf::BPF_XDP, flags);
        let (link, mode) = match mode {
            AttachMode::Native => link(bpf::XDP_FLAGS_DRV_MODE)
                .map(|l| (l, AttachMode::Native))
                .map_err(|e| attach_error(interface, AttachMode::Native, e, None))?,
            AttachMode::Generic => link(bpf::XDP_FLAGS_SKB_MODE)
                .map(|l| (l, AttachMode::Generic))
                .map_err(|e| attach_error(interface, AttachMode::Generic, e, None))?,
            AttachMode::Auto => match link(bpf::XDP_FLAGS_DRV_MODE) {
                Ok(l) => (l, AttachMode::Native),
                Err(native) if !generic_would_fail_too(&native) => {
                    match link(bpf::XDP_FLAGS_SKB_MODE) {
                        Ok(l) => (l, AttachMode::Generic),
                        Err(e) => {
                            return Err(attach_error(
                                interface,
                                AttachMode::Generic,
                                e,
                                Some(native),
                            ));
                        }
                    }
                }
                Err(native) => {
                    return Err(attach_error(interface, AttachMode::Native, native, None));
                }
            },
        };
        Ok(XdpAttachment {
            link,
            mode,
            interface: interface.to_owned(),
            ifindex,
        })
    }

    /// Runs the program once in the kernel on a copy of `frame` (`BPF_PROG_TEST_RUN`, as if it
    /// arrived on queue 0 of the loopback device) and returns its verdict. Nothing is sent
    /// anywhere: a redirect is only reported.
    ///
    /// ```no_run
    /// use netring::xdp::{XdpAction, XdpProgram};
    /// let prog = XdpProgram::load_redirect(1, None)?;
    /// // No socket in the map: the frame would go to the kernel stack.
    /// assert_eq!(prog.test_run(&[0u8; 60])?, XdpAction::Pass);
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn test_run(&self, frame: &[u8]) -> Result<XdpAction> {
        bpf::prog_test_run(self.prog.as_fd(), frame)
            .map(XdpAction::from_raw)
            .map_err(|e| match e.raw_os_error() {
                _ if is_denied(&e) => Error::PermissionDenied {
                    operation: "test-running an XDP program (BPF_PROG_TEST_RUN)",
                    capability: BPF_CAPS,
                },
                Some(libc::EINVAL) if frame.len() < 14 => Error::FrameTooShort { len: frame.len() },
                _ => Error::Io {
                    operation: "test-running an XDP program (BPF_PROG_TEST_RUN)",
                    source: e,
                },
            })
    }
}

impl AsFd for XdpProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }
}

/// Errors of a native attach after which a generic one cannot succeed either.
fn generic_would_fail_too(e: &io::Error) -> bool {
    is_denied(e)
        || matches!(
            e.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::EBUSY) | Some(libc::EEXIST)
        )
}

/// `ENOTSUPP`: the kernel-internal "not supported" some drivers leak to user space.
const ENOTSUPP: i32 = 524;

fn attach_error(
    interface: &str,
    mode: AttachMode,
    e: io::Error,
    native_failed: Option<io::Error>,
) -> Error {
    let code = e.raw_os_error();
    if is_denied(&e) {
        return Error::PermissionDenied {
            operation: "attaching an XDP program",
            capability: "CAP_NET_ADMIN",
        };
    }
    if code == Some(libc::ENODEV) {
        return Error::NoSuchInterface {
            name: interface.to_owned(),
        };
    }
    if mode == AttachMode::Native && matches!(code, Some(libc::EOPNOTSUPP) | Some(ENOTSUPP)) {
        return Error::XdpUnsupported {
            interface: interface.to_owned(),
            reason: "its driver has no native (driver-mode) XDP: use AttachMode::Generic, or \
                     AttachMode::Auto, which falls back to it"
                .into(),
        };
    }
    let old_kernel = bpf::kernel_version().filter(|v| *v < (5, 9));
    if let (Some(libc::EINVAL), Some(version)) = (code, old_kernel) {
        return Error::XdpUnsupported {
            interface: interface.to_owned(),
            reason: format!(
                "attaching XDP through a BPF link needs Linux 5.9 or newer (this is {}.{})",
                version.0, version.1
            ),
        };
    }
    let hint = match code {
        Some(libc::EBUSY) => format!(
            "another XDP program is already attached to `{interface}`: detach it first \
             (`ip link set dev {interface} xdp off`; if it is held by a BPF link, find the owner \
             with `bpftool net show dev {interface}` / `bpftool link`)"
        ),
        Some(libc::EEXIST) => format!(
            "an XDP program is attached to `{interface}` in the other mode, or to a device \
             stacked on it (native and generic cannot be active at once): detach it first \
             (`ip link set dev {interface} xdpgeneric off` or `xdpdrv off`)"
        ),
        Some(libc::ERANGE) | Some(libc::EINVAL) | Some(libc::E2BIG) | Some(libc::ENOSPC)
            if mode == AttachMode::Native =>
        {
            format!(
                "the driver refused native XDP in its current configuration (often an MTU too \
                 large for XDP, LRO turned on, or too few queues): lower the MTU of \
                 `{interface}`, turn LRO off (`ethtool -K {interface} lro off`), or use \
                 AttachMode::Generic"
            )
        }
        _ => "see `dmesg` for the driver's reason".to_owned(),
    };
    let hint = match native_failed {
        Some(native) => format!("native mode failed first ({native}); {hint}"),
        None => hint,
    };
    Error::XdpAttach {
        interface: interface.to_owned(),
        mode: mode.as_str(),
        source: e,
        hint,
    }
}

/// An XDP program attached to an interface through a BPF link. Dropping it closes the link,
/// which detaches the program; so does the end of the process, however it ends (a duplicate of
/// the link's descriptor, e.g. inherited across `fork`, keeps it attached until it is closed too;
/// [`detach`](Self::detach) detaches regardless).
///
/// ```no_run
/// use netring::xdp::{AttachMode, XdpProgram};
/// let prog = XdpProgram::load_redirect(1, None)?;
/// let attached = prog.attach("eth0", AttachMode::Generic)?;
/// assert_eq!(attached.mode(), AttachMode::Generic);
/// attached.detach()?; // or just drop it
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct XdpAttachment {
    link: OwnedFd,
    mode: AttachMode,
    interface: String,
    ifindex: u32,
}

impl XdpAttachment {
    /// The mode the program runs in: [`AttachMode::Native`] or [`AttachMode::Generic`], never
    /// `Auto`.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The interface name it was attached by.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The interface index it was attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The BPF link's kernel id (as `bpftool link` shows it).
    pub fn link_id(&self) -> Result<u32> {
        self.info().map(|i| i.id)
    }

    /// The attached program's kernel id.
    pub fn program_id(&self) -> Result<u32> {
        self.info().map(|i| i.prog_id)
    }

    /// Whether the program is still attached: false once the interface has been deleted (the
    /// kernel then detaches the link by itself) or after [`detach`](Self::detach).
    pub fn is_attached(&self) -> Result<bool> {
        self.info().map(|i| i.ifindex != 0)
    }

    fn info(&self) -> Result<bpf::LinkInfo> {
        bpf::link_info(self.link.as_fd()).map_err(|e| Error::Io {
            operation: "querying the XDP link (BPF_OBJ_GET_INFO_BY_FD)",
            source: e,
        })
    }

    /// Detaches now, even if the link's descriptor was duplicated (e.g. inherited by a child
    /// process), and reports errors; dropping only closes this descriptor.
    pub fn detach(self) -> Result<()> {
        bpf::link_detach(self.link.as_fd()).map_err(|e| Error::Io {
            operation: "detaching the XDP link (BPF_LINK_DETACH)",
            source: e,
        })
    }
}

impl AsFd for XdpAttachment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::program::tests::{sample_frames, sample_matches};

    /// Loading BPF programs needs root here; without it the test says so (and fails under
    /// `NETRING_REQUIRE_PRIV=1`).
    fn privileged(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        let msg = format!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN)");
        if std::env::var("NETRING_REQUIRE_PRIV").is_ok_and(|v| v == "1") {
            panic!("{msg}; NETRING_REQUIRE_PRIV=1 forbids skipping");
        }
        eprintln!("SKIPPED {msg}");
        false
    }

    /// The kernel runs each generated program on every sample frame and decides exactly as the
    /// Rust model (`Match::matches`) does. "No socket" is made `XDP_DROP` here, so a matched
    /// frame shows as Drop and an unmatched one as Pass.
    #[test]
    fn kernel_decisions_equal_the_model() {
        if !privileged("kernel_decisions_equal_the_model") {
            return;
        }
        let frames = sample_frames();
        let mut checked = 0;
        for m in sample_matches() {
            let prog = XdpProgram::load_redirect_with(2, m, XdpAction::Drop)
                .unwrap_or_else(|e| panic!("{m:?}: {e}"));
            let mut redirected = 0;
            for (label, frame) in &frames {
                let want = match &m {
                    None => XdpAction::Drop,
                    Some(m) if m.matches(frame) => XdpAction::Drop,
                    Some(_) => XdpAction::Pass,
                };
                let got = prog.test_run(frame).unwrap();
                assert_eq!(got, want, "{m:?} on `{label}`");
                redirected += usize::from(got == XdpAction::Drop);
                checked += 1;
            }
            // Each match selects something and leaves something out (None takes all).
            assert!(redirected > 0, "{m:?} matched nothing");
            assert!(
                m.is_none() || redirected < frames.len(),
                "{m:?} matched everything"
            );
        }
        assert!(checked > 1000, "{checked}");
    }

    /// With the production fallback (`XDP_PASS`) and no socket in the map, every frame goes to
    /// the kernel stack, matched or not.
    #[test]
    fn without_sockets_everything_passes() {
        if !privileged("without_sockets_everything_passes") {
            return;
        }
        for m in sample_matches() {
            let prog = XdpProgram::load_redirect(2, m).unwrap();
            for (label, frame) in sample_frames().iter().step_by(7) {
                assert_eq!(
                    prog.test_run(frame).unwrap(),
                    XdpAction::Pass,
                    "{m:?} `{label}`"
                );
            }
        }
    }

    #[test]
    fn object_kinds_and_infos() {
        if !privileged("object_kinds_and_infos") {
            return;
        }
        let prog = XdpProgram::load_redirect(3, None).unwrap();
        assert_eq!(bpf::obj_kind(prog.as_fd()), bpf::ObjKind::Prog);
        assert_eq!(bpf::obj_kind(prog.xsk_map().as_fd()), bpf::ObjKind::Map);
        let info = bpf::prog_info(prog.as_fd()).unwrap();
        assert_eq!(info.prog_type, bpf::BPF_PROG_TYPE_XDP);
        assert_eq!(info.name, "netring_xsk");
        assert!(info.id > 0);
        let map = bpf::map_info(prog.xsk_map().as_fd()).unwrap();
        assert_eq!(
            (map.map_type, map.key_size, map.value_size, map.max_entries),
            (bpf::BPF_MAP_TYPE_XSKMAP, 4, 4, 3)
        );
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(bpf::obj_kind(file.as_fd()), bpf::ObjKind::Other);
        assert!(matches!(
            prog.test_run(&[0u8; 10]),
            Err(Error::FrameTooShort { len: 10 })
        ));
    }
}
