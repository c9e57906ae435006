//! A classic BPF interpreter with the kernel's semantics, so a program can be run in user space on
//! frames from any source (pcap files, AF_XDP, plain buffers) and give the verdict a packet socket
//! filter would give.
//!
//! Where the kernel (`net/core/filter.c`: `bpf_check_classic`, `bpf_convert_filter`,
//! `bpf_skb_load_helper_*`) and libpcap's user-space `bpf_filter` disagree, this follows the
//! kernel:
//! - a shift by `X` uses `X & 31` (libpcap gives 0 for `X >= 32`);
//! - loads at negative offsets `SKF_LL_OFF + n` (frame byte `n`) and `SKF_NET_OFF + n` (byte `n`
//!   after the 14-byte Ethernet header) work (libpcap drops the packet);
//! - `ld [SKF_AD_OFF + ...]` reads ancillary data from [`FrameInfo`].

use super::{BpfInsn, BpfProgram};
use crate::error::{Error, Result};
use crate::{AsPacket, VlanTag};

/// Scratch memory slots (`BPF_MEMWORDS`).
const MEMWORDS: usize = 16;

/// Ancillary data lives at `SKF_AD_OFF + n` (as an unsigned 32-bit offset).
const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
/// `SKF_NET_OFF + n`: byte `n` of the network header.
const SKF_NET_OFF: i32 = -0x10_0000;
/// `SKF_LL_OFF + n`: byte `n` of the link-layer (MAC) header.
const SKF_LL_OFF: i32 = -0x20_0000;

const SKF_AD_PROTOCOL: u32 = 0;
const SKF_AD_PKTTYPE: u32 = 4;
const SKF_AD_IFINDEX: u32 = 8;
const SKF_AD_NLATTR: u32 = 12;
const SKF_AD_NLATTR_NEST: u32 = 16;
const SKF_AD_MARK: u32 = 20;
const SKF_AD_QUEUE: u32 = 24;
const SKF_AD_HATYPE: u32 = 28;
const SKF_AD_RXHASH: u32 = 32;
const SKF_AD_CPU: u32 = 36;
const SKF_AD_ALU_XOR_X: u32 = 40;
const SKF_AD_VLAN_TAG: u32 = 44;
const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;
const SKF_AD_PAY_OFFSET: u32 = 52;
const SKF_AD_RANDOM: u32 = 56;
const SKF_AD_VLAN_TPID: u32 = 60;

/// Network header offset the kernel uses for `SKF_NET_OFF` loads on an Ethernet packet socket.
const ETH_HLEN: usize = 14;

/// What a classic BPF program can read besides the frame bytes (the kernel's ancillary loads,
/// `ld [SKF_AD_OFF + ...]`, and `ld len`).
///
/// [`FrameInfo::of`] fills it from any received frame; the fields it cannot know (packet type,
/// interface, hash) are 0 and can be set by hand.
///
/// ```
/// use netring::{AsPacket, FrameInfo, VlanTag};
///
/// let mut frame = vec![0u8; 12];
/// frame.extend_from_slice(&[0x08, 0x00]); // IPv4
/// frame.resize(60, 0);
/// let info = FrameInfo::of(&frame);
/// assert_eq!(info.protocol, 0x0800);
/// assert_eq!(info.wire_len, 60);
/// assert_eq!(info.vlan, None);
///
/// // A frame whose tag the kernel stripped says so, and reads as if it came from interface 3.
/// let info = FrameInfo { vlan: Some(VlanTag { tpid: 0x8100, tci: 42 }), ifindex: 3, ..info };
/// assert_eq!(info.vlan.map(|v| v.id()), Some(42));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// `ld len` (the kernel's `skb->len`): the frame's length as the socket sees it, a stripped
    /// VLAN tag not included. When it is smaller than the data handed to
    /// [`run`](BpfProgram::run), the data's length is used instead.
    pub wire_len: u32,
    /// The VLAN tag the kernel stripped (`SKF_AD_VLAN_TAG`, `SKF_AD_VLAN_TAG_PRESENT`,
    /// `SKF_AD_VLAN_TPID`).
    pub vlan: Option<VlanTag>,
    /// `SKF_AD_PROTOCOL`: `skb->protocol`, in host order.
    pub protocol: u16,
    /// `SKF_AD_PKTTYPE`: `PACKET_HOST` (0), `PACKET_BROADCAST` (1), ... (low 3 bits used).
    pub pkt_type: u8,
    /// `SKF_AD_IFINDEX`: the receiving interface.
    pub ifindex: u32,
    /// `SKF_AD_RXHASH`: `skb->hash`.
    pub rx_hash: u32,
}

impl FrameInfo {
    /// What the kernel would know about a received Ethernet frame: its length, the stripped tag,
    /// and `protocol` as `eth_type_trans` sets `skb->protocol` from the bytes after the MAC
    /// addresses (for an AF_PACKET frame whose outer tag was stripped that is the inner
    /// ethertype, as in the kernel; for a tag still inline it is the tag's TPID, as for the inner
    /// tag of a double-tagged frame in the kernel). Ethertypes below 0x600 (802.3 lengths) give
    /// `ETH_P_802_3` (1) when the payload starts with `ff ff` and `ETH_P_802_2` (4) otherwise.
    /// The other fields are 0.
    pub fn of<P: AsPacket + ?Sized>(p: &P) -> FrameInfo {
        let data = p.data();
        let protocol = match data.get(12..14) {
            None => 0,
            Some(t) => match u16::from_be_bytes([t[0], t[1]]) {
                t if t >= 0x600 => t,
                _ if data.get(14..16) == Some(&[0xff, 0xff]) => 0x0001,
                _ => 0x0004,
            },
        };
        FrameInfo {
            wire_len: u32::try_from(p.wire_len()).unwrap_or(u32::MAX),
            vlan: p.vlan(),
            protocol,
            pkt_type: 0,
            ifindex: 0,
            rx_hash: 0,
        }
    }
}

/// Reads `N` bytes big-endian at `off`, or `None` when they are not all in `data`.
#[inline(always)]
fn load<const N: usize>(data: &[u8], off: usize) -> Option<u32> {
    let bytes: [u8; N] = data.get(off..off.checked_add(N)?)?.try_into().ok()?;
    let mut word = [0u8; 4];
    word[4 - N..].copy_from_slice(&bytes);
    Some(u32::from_be_bytes(word))
}

/// A packet load at a 32-bit offset as the kernel's `bpf_skb_load_helper_*` does it: offsets
/// with the top bit set are negative, and only the `SKF_NET_OFF`/`SKF_LL_OFF` ranges mean
/// something there.
#[inline(always)]
fn load_at<const N: usize>(data: &[u8], off: u32) -> Option<u32> {
    let signed = off as i32;
    if signed >= 0 {
        load::<N>(data, signed as usize)
    } else if signed >= SKF_NET_OFF {
        load::<N>(data, ETH_HLEN + (signed - SKF_NET_OFF) as usize)
    } else if signed >= SKF_LL_OFF {
        load::<N>(data, (signed - SKF_LL_OFF) as usize)
    } else {
        None
    }
}

/// An ancillary load at `k` (at or above `SKF_AD_OFF`); `None` for one the kernel refuses or
/// only the kernel can answer.
#[inline]
fn ancillary(k: u32, a: u32, x: u32, info: &FrameInfo) -> Option<u32> {
    Some(match k - SKF_AD_OFF {
        SKF_AD_PROTOCOL => u32::from(info.protocol),
        SKF_AD_PKTTYPE => u32::from(info.pkt_type & 7),
        SKF_AD_IFINDEX => info.ifindex,
        SKF_AD_RXHASH => info.rx_hash,
        SKF_AD_ALU_XOR_X => a ^ x,
        SKF_AD_VLAN_TAG => info.vlan.map_or(0, |v| u32::from(v.tci)),
        SKF_AD_VLAN_TAG_PRESENT => u32::from(info.vlan.is_some()),
        SKF_AD_VLAN_TPID => info.vlan.map_or(0, |v| u32::from(v.tpid)),
        _ => return None,
    })
}

/// The opcodes the kernel accepts (`chk_code_allowed`), by exact value.
fn known_opcode(code: u16) -> bool {
    matches!(
        code,
        // ld: w/h/b abs, w/h/b ind, len, imm, mem
        0x20 | 0x28 | 0x30 | 0x40 | 0x48 | 0x50 | 0x80 | 0x00 | 0x60
        // ldx: imm, len, mem, msh
        | 0x01 | 0x81 | 0x61 | 0xb1
        // st, stx
        | 0x02 | 0x03
        // alu: add sub mul div or and lsh rsh (k, x), neg, mod xor (k, x)
        | 0x04 | 0x0c | 0x14 | 0x1c | 0x24 | 0x2c | 0x34 | 0x3c | 0x44 | 0x4c | 0x54 | 0x5c
        | 0x64 | 0x6c | 0x74 | 0x7c | 0x84 | 0x94 | 0x9c | 0xa4 | 0xac
        // jmp: ja, jeq jgt jge jset (k, x)
        | 0x05 | 0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d
        // ret k, ret a
        | 0x06 | 0x16
        // tax, txa
        | 0x07 | 0x87
    )
}

/// Ancillary loads [`FrameInfo`] answers (plus `ALU_XOR_X`, which needs nothing).
fn answered_ancillary(n: u32) -> bool {
    matches!(
        n,
        SKF_AD_PROTOCOL
            | SKF_AD_PKTTYPE
            | SKF_AD_IFINDEX
            | SKF_AD_RXHASH
            | SKF_AD_ALU_XOR_X
            | SKF_AD_VLAN_TAG
            | SKF_AD_VLAN_TAG_PRESENT
            | SKF_AD_VLAN_TPID
    )
}

/// Ancillary loads the kernel knows but user space cannot answer.
fn kernel_only_ancillary(n: u32) -> bool {
    matches!(
        n,
        SKF_AD_NLATTR
            | SKF_AD_NLATTR_NEST
            | SKF_AD_MARK
            | SKF_AD_QUEUE
            | SKF_AD_HATYPE
            | SKF_AD_CPU
            | SKF_AD_PAY_OFFSET
            | SKF_AD_RANDOM
    )
}

impl BpfProgram {
    /// Runs the program on `data` (the frame from its link-layer header, as a packet socket
    /// sees it: outer VLAN tag stripped and reported in `info.vlan`) the way the kernel runs a
    /// socket filter, and returns what it returns: the number of bytes to keep, 0 = drop.
    ///
    /// Never panics and never allocates. Following the kernel, the program returns 0 (drop) at
    /// a load past the end of `data`, a division or modulo by `X = 0`, and at any instruction
    /// the kernel refuses at attach time ([`check_like_kernel`](Self::check_like_kernel): unknown
    /// opcode or ancillary offset, scratch slot ≥ 16, division by constant 0, shift by a
    /// constant ≥ 32). Ancillary loads the kernel knows but user space cannot answer
    /// (`MARK`, `QUEUE`, `HATYPE`, `CPU`, `RANDOM`, `PAY_OFFSET`, `NLATTR*`) also return 0.
    /// Arithmetic wraps at 32 bits; shifts by `X` use `X & 31`; scratch memory starts zeroed.
    ///
    /// Bytes past `data` are unknown: a frame truncated by a capture can be dropped where the
    /// kernel, which sees all of it, would accept it (libpcap behaves the same on files).
    ///
    /// ```
    /// use netring::{BpfInsn, BpfProgram, FrameInfo};
    /// // ldh [12]; jeq #0x800, accept, drop
    /// let ipv4 = BpfProgram::new(vec![
    ///     BpfInsn::new(0x28, 0, 0, 12),
    ///     BpfInsn::new(0x15, 0, 1, 0x0800),
    ///     BpfInsn::new(0x06, 0, 0, 0x40000),
    ///     BpfInsn::new(0x06, 0, 0, 0),
    /// ])?;
    /// let mut frame = vec![0u8; 12];
    /// frame.extend_from_slice(&[0x08, 0x00]);
    /// assert_eq!(ipv4.run(&frame, &FrameInfo::of(&frame)), 0x40000);
    /// assert_eq!(ipv4.run(&frame[..13], &FrameInfo::default()), 0); // too short: dropped
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn run(&self, data: &[u8], info: &FrameInfo) -> u32 {
        let insns: &[BpfInsn] = &self.insns;
        let len = info
            .wire_len
            .max(u32::try_from(data.len()).unwrap_or(u32::MAX));
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; MEMWORDS];
        let mut pc = 0usize;
        // Every path ends: jumps only go forward (validated by `new`) and the last instruction
        // returns. `get` keeps even a broken invariant from panicking.
        while let Some(insn) = insns.get(pc) {
            pc += 1;
            let k = insn.k;
            macro_rules! or_drop {
                ($e:expr) => {
                    match $e {
                        Some(v) => v,
                        None => return 0,
                    }
                };
            }
            macro_rules! jump {
                ($cond:expr) => {
                    pc += usize::from(if $cond { insn.jt } else { insn.jf })
                };
            }
            match insn.code {
                // ld (an offset at SKF_AD_OFF or above is an ancillary load, whatever the size)
                0x20 | 0x28 | 0x30 if k >= SKF_AD_OFF => a = or_drop!(ancillary(k, a, x, info)),
                0x20 => a = or_drop!(load_at::<4>(data, k)),
                0x28 => a = or_drop!(load_at::<2>(data, k)),
                0x30 => a = or_drop!(load_at::<1>(data, k)),
                0x40 => a = or_drop!(load_at::<4>(data, x.wrapping_add(k))),
                0x48 => a = or_drop!(load_at::<2>(data, x.wrapping_add(k))),
                0x50 => a = or_drop!(load_at::<1>(data, x.wrapping_add(k))),
                0x80 => a = len,
                0x00 => a = k,
                0x60 => a = *or_drop!(mem.get(k as usize)),
                // ldx
                0x01 => x = k,
                0x81 => x = len,
                0x61 => x = *or_drop!(mem.get(k as usize)),
                0xb1 => x = (or_drop!(load_at::<1>(data, k)) & 0xf) << 2,
                // st, stx
                0x02 => *or_drop!(mem.get_mut(k as usize)) = a,
                0x03 => *or_drop!(mem.get_mut(k as usize)) = x,
                // alu
                0x04 => a = a.wrapping_add(k),
                0x0c => a = a.wrapping_add(x),
                0x14 => a = a.wrapping_sub(k),
                0x1c => a = a.wrapping_sub(x),
                0x24 => a = a.wrapping_mul(k),
                0x2c => a = a.wrapping_mul(x),
                0x34 => a = or_drop!(a.checked_div(k)),
                0x3c => a = or_drop!(a.checked_div(x)),
                0x94 => a = or_drop!(a.checked_rem(k)),
                0x9c => a = or_drop!(a.checked_rem(x)),
                0x44 => a |= k,
                0x4c => a |= x,
                0x54 => a &= k,
                0x5c => a &= x,
                0xa4 => a ^= k,
                0xac => a ^= x,
                0x64 => a = or_drop!(a.checked_shl(k)),
                0x6c => a <<= x & 31,
                0x74 => a = or_drop!(a.checked_shr(k)),
                0x7c => a >>= x & 31,
                0x84 => a = a.wrapping_neg(),
                // jmp
                0x05 => pc = pc.saturating_add(k as usize),
                0x15 => jump!(a == k),
                0x1d => jump!(a == x),
                0x25 => jump!(a > k),
                0x2d => jump!(a > x),
                0x35 => jump!(a >= k),
                0x3d => jump!(a >= x),
                0x45 => jump!(a & k != 0),
                0x4d => jump!(a & x != 0),
                // ret
                0x06 => return k,
                0x16 => return a,
                // misc
                0x07 => x = a,
                0x87 => a = x,
                _ => return 0,
            }
        }
        0
    }

    /// Whether the program accepts the frame: [`run`](Self::run) returns a non-zero length.
    ///
    /// ```
    /// use netring::{BpfProgram, FrameInfo};
    /// let frame = [0u8; 60];
    /// assert!(BpfProgram::accept_all().matches(&frame, &FrameInfo::of(&frame[..])));
    /// assert!(!BpfProgram::reject_all().matches(&frame, &FrameInfo::of(&frame[..])));
    /// ```
    pub fn matches(&self, data: &[u8], info: &FrameInfo) -> bool {
        self.run(data, info) != 0
    }

    /// The checks the kernel makes when the program is attached (`bpf_check_classic`), beyond
    /// the structural ones [`new`](Self::new) makes: known opcodes, known ancillary offsets,
    /// scratch slots below 16 and written before they are read on every path, no division or
    /// modulo by constant 0, no shift by a constant ≥ 32. It also refuses ancillary loads that
    /// [`run`](Self::run) cannot answer in user space (`MARK`, `QUEUE`, `HATYPE`, `CPU`,
    /// `RANDOM`, `PAY_OFFSET`, `NLATTR*`). A program that passes gives the same verdict in
    /// [`run`](Self::run) as in the kernel for the same bytes and [`FrameInfo`].
    ///
    /// ```
    /// use netring::{BpfInsn, BpfProgram, Error};
    /// // A = M[3] before anything was stored there: the kernel refuses it.
    /// let prog = BpfProgram::new(vec![BpfInsn::new(0x60, 0, 0, 3), BpfInsn::new(0x16, 0, 0, 0)])?;
    /// assert!(matches!(prog.check_like_kernel(), Err(Error::InvalidFilter(_))));
    /// assert!(BpfProgram::accept_all().check_like_kernel().is_ok());
    /// # Ok::<(), netring::Error>(())
    /// ```
    pub fn check_like_kernel(&self) -> Result<()> {
        let bad = |pc: usize, insn: &BpfInsn, why: &str| {
            Err(Error::InvalidFilter(format!(
                "instruction {pc} ({{ {:#x}, {}, {}, {:#x} }}): {why}; the kernel refuses such \
                 programs (generate filters with `tcpdump -dd` or check the instruction)",
                insn.code, insn.jt, insn.jf, insn.k
            )))
        };
        let n = self.insns.len();
        // Scratch slots written on every path to each instruction (one bit per slot), as the
        // kernel's `check_load_and_stores`; jumps only go forward so one pass suffices.
        let mut written_at = vec![u16::MAX; n];
        let mut written: u16 = 0;
        for (pc, insn) in self.insns.iter().enumerate() {
            let k = insn.k;
            if !known_opcode(insn.code) {
                return bad(pc, insn, "unknown opcode");
            }
            written &= written_at[pc];
            match insn.code {
                0x34 | 0x94 if k == 0 => return bad(pc, insn, "division by constant 0"),
                0x64 | 0x74 if k >= 32 => return bad(pc, insn, "shift by 32 or more"),
                0x60 | 0x61 | 0x02 | 0x03 if k as usize >= MEMWORDS => {
                    return bad(pc, insn, "scratch memory has 16 slots");
                }
                0x60 | 0x61 if written & (1 << k) == 0 => {
                    return bad(pc, insn, "scratch slot read before it is written");
                }
                0x02 | 0x03 => written |= 1 << k,
                0x20 | 0x28 | 0x30 if k >= SKF_AD_OFF => {
                    let ad = k - SKF_AD_OFF;
                    if kernel_only_ancillary(ad) {
                        return bad(
                            pc,
                            insn,
                            "this ancillary load is known only inside the kernel (user-space \
                             runs cannot answer it)",
                        );
                    }
                    if !answered_ancillary(ad) {
                        return bad(pc, insn, "unknown ancillary offset");
                    }
                }
                0x05 => {
                    // `new` checked the target is inside the program.
                    if let Some(m) = written_at.get_mut(pc + 1 + k as usize) {
                        *m &= written;
                    }
                    written = u16::MAX;
                }
                c if c & 0x07 == 0x05 => {
                    for off in [insn.jt, insn.jf] {
                        if let Some(m) = written_at.get_mut(pc + 1 + usize::from(off)) {
                            *m &= written;
                        }
                    }
                    written = u16::MAX;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
