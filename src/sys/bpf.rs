//! The raw `bpf(2)` syscall: typed wrappers for the handful of commands the XDP side needs
//! (maps, program load with the verifier log, BPF links, object info, test runs).
//!
//! Each command has its own `#[repr(C)]` attribute struct laid out like the matching member of
//! the kernel's `union bpf_attr` (`linux/bpf.h`), truncated after the last field used: the kernel
//! zero-fills whatever a shorter struct leaves out. Offsets are checked at compile time below.

use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::Error;

// --- Commands (enum bpf_cmd) -------------------------------------------------------------------
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_LINK_DETACH: libc::c_int = 34;

// --- Object types and attach points ------------------------------------------------------------
/// `BPF_MAP_TYPE_XSKMAP`: an array of AF_XDP sockets, the target of `bpf_redirect_map`.
pub(crate) const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_SOCKET_FILTER`: runs on a socket's packets (`struct __sk_buff` context); the
/// type `PACKET_FANOUT_EBPF` takes.
pub(crate) const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_XDP`.
pub(crate) const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` (enum bpf_attach_type): attach point of an XDP program on a network device.
pub(crate) const BPF_XDP: u32 = 37;
/// `BPF_ANY`: create or update a map element.
pub(crate) const BPF_ANY: u64 = 0;

// --- XDP attach flags (linux/if_link.h) --------------------------------------------------------
/// Fail if a program is already attached. Netlink attachment only: the kernel refuses it on a BPF
/// link (which never replaces an attached program anyway: it fails with `EBUSY`).
#[allow(dead_code)]
pub(crate) const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
/// Generic XDP: the program runs on socket buffers, after the driver; works on every device.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// Native XDP: the program runs in the driver, before any allocation.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `BPF_OBJ_NAME_LEN`: object names are at most 15 bytes plus a NUL.
const BPF_OBJ_NAME_LEN: usize = 16;

/// Largest verifier log buffer asked for (the kernel's limit is `u32::MAX >> 2`).
const MAX_LOG_SIZE: usize = 16 << 20;

// --- Attribute structs ---------------------------------------------------------------------------

/// `union bpf_attr` for `BPF_MAP_CREATE`, up to `map_ifindex`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; BPF_OBJ_NAME_LEN],
    map_ifindex: u32,
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE`, up to `flags` (the per-type union after it is unused
/// for XDP).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for `BPF_LINK_DETACH`.
#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct bpf_prog_info`, up to `name` (the kernel fills only the first `info_len` bytes).
#[repr(C)]
#[derive(Default)]
struct RawProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; BPF_OBJ_NAME_LEN],
}

/// `struct bpf_map_info`, up to `name`.
#[repr(C)]
#[derive(Default)]
struct RawMapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; BPF_OBJ_NAME_LEN],
}

/// `struct bpf_link_info` with the `xdp` member of its union.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    xdp_ifindex: u32,
    _pad2: u32,
}

// Layouts checked against linux/bpf.h (offsetof of the union members, x86_64 and every other
// Linux ABI: the kernel uses fixed-size, explicitly aligned fields).
const _: () = {
    assert!(offset_of!(MapCreateAttr, max_entries) == 12);
    assert!(offset_of!(MapCreateAttr, map_name) == 28);
    assert!(offset_of!(MapCreateAttr, map_ifindex) == 44);
    assert!(offset_of!(MapElemAttr, key) == 8);
    assert!(offset_of!(MapElemAttr, value) == 16);
    assert!(offset_of!(MapElemAttr, flags) == 24);
    assert!(offset_of!(ProgLoadAttr, insns) == 8);
    assert!(offset_of!(ProgLoadAttr, license) == 16);
    assert!(offset_of!(ProgLoadAttr, log_level) == 24);
    assert!(offset_of!(ProgLoadAttr, log_buf) == 32);
    assert!(offset_of!(ProgLoadAttr, prog_flags) == 44);
    assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(offset_of!(ProgLoadAttr, expected_attach_type) == 68);
    assert!(offset_of!(LinkCreateAttr, attach_type) == 8);
    assert!(offset_of!(LinkCreateAttr, flags) == 12);
    assert!(offset_of!(InfoAttr, info) == 8);
    assert!(offset_of!(TestRunAttr, data_in) == 16);
    assert!(offset_of!(TestRunAttr, repeat) == 32);
    assert!(offset_of!(TestRunAttr, ctx_in) == 48);
    assert!(offset_of!(TestRunAttr, flags) == 64);
    assert!(offset_of!(TestRunAttr, batch_size) == 72);
    assert!(offset_of!(RawProgInfo, name) == 64);
    assert!(offset_of!(RawMapInfo, max_entries) == 16);
    assert!(offset_of!(RawMapInfo, name) == 24);
    assert!(offset_of!(RawLinkInfo, prog_id) == 8);
    assert!(offset_of!(RawLinkInfo, xdp_ifindex) == 16);
};

/// A `bpf_attr` member struct.
///
/// # Safety
/// Implementors are `repr(C)` structs of integers and byte arrays, laid out like the kernel's
/// matching `union bpf_attr` member (a prefix of it), with every pointer carried as a `u64`.
unsafe trait BpfAttr {}
// SAFETY: repr(C) mirrors of bpf_attr members (offsets asserted above).
unsafe impl BpfAttr for MapCreateAttr {}
// SAFETY: as above.
unsafe impl BpfAttr for MapElemAttr {}
// SAFETY: as above.
unsafe impl BpfAttr for ProgLoadAttr {}
// SAFETY: as above.
unsafe impl BpfAttr for LinkCreateAttr {}
// SAFETY: as above.
unsafe impl BpfAttr for LinkDetachAttr {}
// SAFETY: as above.
unsafe impl BpfAttr for InfoAttr {}
// SAFETY: as above.
unsafe impl BpfAttr for TestRunAttr {}

/// `bpf(cmd, attr, sizeof(attr))`.
///
/// # Safety
/// Every pointer carried in `attr` must point at memory that is valid, for the duration of the
/// call, for what the kernel does with it under `cmd` (reads of the stated length, or writes of
/// it for output buffers).
unsafe fn sys_bpf<T: BpfAttr>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable `T` of `size_of::<T>()` bytes (the kernel copies it in,
    // and for some commands back out); pointers inside it are the caller's responsibility.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a descriptor a `bpf()` command just returned.
fn owned_fd(ret: libc::c_long) -> OwnedFd {
    // SAFETY: `ret` is a new descriptor (the kernel opens BPF objects O_CLOEXEC) that nothing
    // else owns.
    unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) }
}

/// An object name: up to 15 bytes, `[A-Za-z0-9_.]` (others become `_`), NUL-padded.
fn obj_name(name: &str) -> [u8; BPF_OBJ_NAME_LEN] {
    let mut out = [0u8; BPF_OBJ_NAME_LEN];
    for (dst, src) in out.iter_mut().zip(name.bytes().take(BPF_OBJ_NAME_LEN - 1)) {
        *dst = if src.is_ascii_alphanumeric() || src == b'_' || src == b'.' {
            src
        } else {
            b'_'
        };
    }
    out
}

fn name_from(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// `BPF_MAP_CREATE`.
pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: obj_name(name),
        ..Default::default()
    };
    // SAFETY: the attribute carries no pointers.
    let ret = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }?;
    Ok(owned_fd(ret))
}

/// `BPF_MAP_UPDATE_ELEM` for a map with `u32` keys and values.
pub(crate) fn map_update_u32(
    map: BorrowedFd<'_>,
    key: u32,
    value: u32,
    flags: u64,
) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags,
        ..Default::default()
    };
    // SAFETY: `key` and `value` are live `u32`s for the call and the kernel only reads them, as
    // many bytes as the map's key and value sizes: callers pass maps whose sizes are 4 (an
    // XSKMAP this crate created, or one whose sizes were checked with `map_info`).
    unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// `BPF_MAP_DELETE_ELEM` for a map with `u32` keys.
pub(crate) fn map_delete_u32(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        ..Default::default()
    };
    // SAFETY: `key` is a live `u32` for the call, the size of the map's keys.
    unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
}

/// Why `BPF_PROG_LOAD` failed: the error, and the verifier's log when one was asked for.
#[derive(Debug)]
pub(crate) struct ProgLoadError {
    pub(crate) error: io::Error,
    pub(crate) log: Option<String>,
}

impl ProgLoadError {
    /// The verifier's refusal, when there is one (a log was taken): [`Error::BpfVerifier`]
    /// with the log, or the kernel's error when the verifier wrote nothing.
    pub(crate) fn verifier_error(&self) -> Option<Error> {
        let log = match self.log.as_deref()? {
            "" => format!(
                "(the verifier wrote no log; the kernel said: {})",
                self.error
            ),
            log => log.to_owned(),
        };
        Some(Error::BpfVerifier { log })
    }
}

/// `BPF_PROG_LOAD`. `insns` are encoded `struct bpf_insn`s (8 bytes each, host order).
///
/// The first attempt runs without a log (cheaper). If the kernel refuses the program (`EACCES`
/// or `EINVAL`), it is loaded again with a verifier log buffer, grown on `ENOSPC`, so the error
/// carries the verifier's explanation.
pub(crate) fn prog_load(
    prog_type: u32,
    insns: &[[u8; 8]],
    license: &str,
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    let plain = |error| ProgLoadError { error, log: None };
    let insn_cnt =
        u32::try_from(insns.len()).map_err(|_| plain(io::Error::from_raw_os_error(libc::E2BIG)))?;
    let license =
        CString::new(license).map_err(|_| plain(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: obj_name(name),
            ..Default::default()
        };
        if let Some(buf) = log {
            buf.fill(0);
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        // SAFETY: `insns` holds `insn_cnt` 8-byte instructions, `license` is NUL-terminated, and
        // the log buffer (if any) is writable for `log_size` bytes; all outlive the call.
        unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }.map(owned_fd)
    };
    let first = match attempt(None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    if !matches!(
        first.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EINVAL)
    ) {
        return Err(plain(first));
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match attempt(Some(&mut buf)) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && buf.len() < MAX_LOG_SIZE => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => {
                // After ENOSPC at the largest size the log holds what fitted; report the
                // original refusal, not the truncation.
                let error = if e.raw_os_error() == Some(libc::ENOSPC) {
                    first
                } else {
                    e
                };
                let log = name_from(&buf).trim_end().to_owned();
                return Err(ProgLoadError {
                    error,
                    log: Some(log),
                });
            }
        }
    }
}

/// `BPF_LINK_CREATE`: attaches `prog` to `target` (an ifindex for XDP) and returns the link.
pub(crate) fn link_create(
    prog: BorrowedFd<'_>,
    target: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: target,
        attach_type,
        flags,
    };
    // SAFETY: the attribute carries no pointers.
    unsafe { sys_bpf(BPF_LINK_CREATE, &mut attr) }.map(owned_fd)
}

/// `BPF_LINK_DETACH`: detaches a link now, whoever else holds it; the descriptor stays valid.
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    // SAFETY: the attribute carries no pointers.
    unsafe { sys_bpf(BPF_LINK_DETACH, &mut attr) }.map(drop)
}

/// `BPF_OBJ_GET_INFO_BY_FD` into a `T` the kernel fills (its first `size_of::<T>()` bytes).
///
/// # Safety
/// `T` must be a `repr(C)` prefix of the info struct of `fd`'s object type, all integers and byte
/// arrays, with any pointer fields left zero (so the kernel writes nothing through them).
unsafe fn obj_info<T: Default>(fd: BorrowedFd<'_>) -> io::Result<T> {
    let mut info = T::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: (&mut info as *mut T) as u64,
    };
    // SAFETY: `info` is writable for `info_len` bytes for the call; per this function's contract
    // its pointer fields are zero.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

/// What the kernel says about a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProgInfo {
    pub(crate) prog_type: u32,
    pub(crate) id: u32,
    pub(crate) name: String,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a program.
pub(crate) fn prog_info(fd: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    // SAFETY: RawProgInfo is a prefix of struct bpf_prog_info; its pointer fields default to 0.
    let raw: RawProgInfo = unsafe { obj_info(fd) }?;
    Ok(ProgInfo {
        prog_type: raw.prog_type,
        id: raw.id,
        name: name_from(&raw.name),
    })
}

/// What the kernel says about a program loaded elsewhere, once it is sure to be a BPF program of
/// type `prog_type`; `expected` names that type in the error (`"XDP (BPF_PROG_TYPE_XDP = 6)"`).
pub(crate) fn expect_prog(
    fd: BorrowedFd<'_>,
    prog_type: u32,
    expected: &str,
) -> Result<ProgInfo, Error> {
    if obj_kind(fd) != ObjKind::Prog {
        return Err(Error::InvalidConfig(
            "the program descriptor does not refer to a BPF program".into(),
        ));
    }
    let info = prog_info(fd).map_err(|e| Error::Io {
        operation: "querying the BPF program (BPF_OBJ_GET_INFO_BY_FD)",
        source: e,
    })?;
    if info.prog_type != prog_type {
        return Err(Error::InvalidConfig(format!(
            "BPF program `{}` (id {}) is of type {}, not {expected}",
            info.name, info.id, info.prog_type
        )));
    }
    Ok(info)
}

/// What the kernel says about a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapInfo {
    pub(crate) map_type: u32,
    pub(crate) id: u32,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a map.
pub(crate) fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    // SAFETY: RawMapInfo is a prefix of struct bpf_map_info and has no pointer fields.
    let raw: RawMapInfo = unsafe { obj_info(fd) }?;
    Ok(MapInfo {
        map_type: raw.map_type,
        id: raw.id,
        key_size: raw.key_size,
        value_size: raw.value_size,
        max_entries: raw.max_entries,
    })
}

/// What the kernel says about a BPF link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) link_type: u32,
    pub(crate) id: u32,
    pub(crate) prog_id: u32,
    /// For an XDP link: the device it is attached to, 0 once detached.
    pub(crate) ifindex: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
pub(crate) fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // SAFETY: RawLinkInfo is struct bpf_link_info's header plus the 8-byte-aligned `xdp` member
    // of its union, which holds no pointer.
    let raw: RawLinkInfo = unsafe { obj_info(fd) }?;
    Ok(LinkInfo {
        link_type: raw.link_type,
        id: raw.id,
        prog_id: raw.prog_id,
        ifindex: raw.xdp_ifindex,
    })
}

/// `BPF_PROG_TEST_RUN`: runs `prog` once on a copy of `data` and returns its return value.
pub(crate) fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8]) -> io::Result<u32> {
    let data_size_in =
        u32::try_from(data.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: `data` is readable for `data_size_in` bytes for the call; no output buffers are
    // given (data_out and ctx_out are null with zero sizes, so the kernel writes none).
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(attr.retval)
}

/// What kind of BPF object a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind {
    Prog,
    Map,
    Link,
    /// Not a BPF object (or unknown).
    Other,
}

/// The kind of BPF object behind `fd`, from its anonymous inode's name (`/proc/self/fd/N` reads
/// `anon_inode:bpf-prog`, `anon_inode:bpf-map` or `anon_inode:bpf_link`). `BPF_OBJ_GET_INFO_BY_FD`
/// alone cannot tell: it answers for any kind, in that kind's own layout.
pub(crate) fn obj_kind(fd: BorrowedFd<'_>) -> ObjKind {
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(target) => match target.to_str() {
            Some("anon_inode:bpf-prog") => ObjKind::Prog,
            Some("anon_inode:bpf-map") => ObjKind::Map,
            Some("anon_inode:bpf_link") => ObjKind::Link,
            _ => ObjKind::Other,
        },
        Err(_) => ObjKind::Other,
    }
}

// --- Facts used to explain EPERM -----------------------------------------------------------------

/// `CAP_SYS_ADMIN`.
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_BPF` (Linux 5.8+).
pub(crate) const CAP_BPF: u32 = 39;

/// The calling thread's effective capability set (`CapEff` in `/proc/thread-self/status`).
pub(crate) fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited (or unknown).
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some targets
    let limit = lim.rlim_cur as u64;
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(limit)
}

/// The running kernel's `(major, minor)` version, from `uname`.
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain data; all-zero is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is writable for the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let release = String::from_utf8_lossy(&release);
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_sanitised_and_truncated() {
        assert_eq!(&obj_name("netring_xsks")[..13], b"netring_xsks\0");
        let long = obj_name("a-very-long-name-indeed");
        assert_eq!(&long[..15], b"a_very_long_nam");
        assert_eq!(long[15], 0);
        assert_eq!(name_from(&long), "a_very_long_nam");
    }

    #[test]
    fn kernel_version_parses() {
        let (major, _) = kernel_version().expect("uname");
        assert!(major >= 3, "{major}");
    }

    #[test]
    fn attr_sizes() {
        assert_eq!(size_of::<MapCreateAttr>(), 48);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(size_of::<RawProgInfo>(), 80);
        assert_eq!(size_of::<RawMapInfo>(), 40);
    }
}
