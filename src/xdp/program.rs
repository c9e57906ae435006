//! A tiny eBPF assembler and the XDP programs the crate loads.
//!
//! The built-in programs redirect frames to AF_XDP sockets through an XSKMAP indexed by the
//! receive queue (`bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`): a queue without a
//! socket falls back to the kernel stack. With a [`Match`], only matching frames are redirected;
//! everything else is passed to the kernel stack untouched.

use crate::error::{Error, Result};

/// `BPF_PSEUDO_MAP_FD`: in the `src` field of a 64-bit immediate load, the immediate is a map fd.
pub(crate) const BPF_PSEUDO_MAP_FD: u8 = 1;
/// Helper `bpf_redirect_map(map, key, flags)` (the low two bits of `flags` are the action
/// returned when the map has no entry at `key`).
pub(crate) const BPF_FUNC_REDIRECT_MAP: i32 = 51;

// Instruction classes, sizes, modes, sources.
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_JA: u8 = 0x00;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;

// struct xdp_md field offsets.
const XDP_MD_DATA: i16 = 0;
const XDP_MD_DATA_END: i16 = 4;
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// An eBPF register. `R0` holds return values, `R1`..`R5` arguments (clobbered by calls),
/// `R6`..`R9` survive calls, `R10` is the read-only frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Width of a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemSize {
    /// 1 byte (`BPF_B`).
    B,
    /// 2 bytes (`BPF_H`).
    H,
    /// 4 bytes (`BPF_W`).
    W,
    /// 8 bytes (`BPF_DW`).
    DW,
}

impl MemSize {
    const fn bits(self) -> u8 {
        match self {
            MemSize::W => 0x00,
            MemSize::H => 0x08,
            MemSize::B => 0x10,
            MemSize::DW => 0x18,
        }
    }
}

/// A 64-bit ALU operation (`BPF_ALU64 | op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    Arsh,
}

impl AluOp {
    const fn bits(self) -> u8 {
        match self {
            AluOp::Add => 0x00,
            AluOp::Sub => 0x10,
            AluOp::Mul => 0x20,
            AluOp::Div => 0x30,
            AluOp::Or => 0x40,
            AluOp::And => 0x50,
            AluOp::Lsh => 0x60,
            AluOp::Rsh => 0x70,
            AluOp::Mod => 0x90,
            AluOp::Xor => 0xa0,
            AluOp::Mov => 0xb0,
            AluOp::Arsh => 0xc0,
        }
    }
}

/// A conditional jump (`BPF_JMP | op`): jump when `dst OP src` (64-bit compare; `S*` signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum JmpOp {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JmpOp {
    const fn bits(self) -> u8 {
        match self {
            JmpOp::Eq => 0x10,
            JmpOp::Gt => 0x20,
            JmpOp::Ge => 0x30,
            JmpOp::Set => 0x40,
            JmpOp::Ne => 0x50,
            JmpOp::Sgt => 0x60,
            JmpOp::Sge => 0x70,
            JmpOp::Lt => 0xa0,
            JmpOp::Le => 0xb0,
            JmpOp::Slt => 0xc0,
            JmpOp::Sle => 0xd0,
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`). Jump offsets count instructions from the next one;
/// a 64-bit immediate load takes two instructions.
///
/// ```
/// use netring::xdp::{Insn, Reg};
/// // return XDP_PASS
/// let prog = [Insn::mov64_imm(Reg::R0, 2), Insn::exit()];
/// assert_eq!(prog[0].to_bytes(), [0xb7, 0, 0, 0, 2, 0, 0, 0]);
/// assert_eq!(prog[1].to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    /// Opcode (class | size/op | mode/source).
    pub code: u8,
    /// Destination register number (0..=10).
    pub dst: u8,
    /// Source register number, or a pseudo value (e.g. `BPF_PSEUDO_MAP_FD` = 1).
    pub src: u8,
    /// Signed offset (memory accesses, jumps).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// Builds an instruction from its raw fields.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// `dst = imm` (sign-extended to 64 bits).
    pub const fn mov64_imm(dst: Reg, imm: i32) -> Self {
        Self::alu64_imm(AluOp::Mov, dst, imm)
    }

    /// `dst = src`.
    pub const fn mov64_reg(dst: Reg, src: Reg) -> Self {
        Self::alu64_reg(AluOp::Mov, dst, src)
    }

    /// `dst OP= imm` (64-bit).
    pub const fn alu64_imm(op: AluOp, dst: Reg, imm: i32) -> Self {
        Self::new(BPF_ALU64 | op.bits() | BPF_K, dst as u8, 0, 0, imm)
    }

    /// `dst OP= src` (64-bit).
    pub const fn alu64_reg(op: AluOp, dst: Reg, src: Reg) -> Self {
        Self::new(BPF_ALU64 | op.bits() | BPF_X, dst as u8, src as u8, 0, 0)
    }

    /// `dst = imm` for a full 64-bit immediate (two instructions).
    pub const fn ld_imm64(dst: Reg, imm: u64) -> [Self; 2] {
        [
            Self::new(
                BPF_LD | BPF_DW | BPF_IMM,
                dst as u8,
                0,
                0,
                imm as u32 as i32,
            ),
            Self::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }

    /// `dst = &map` for the map whose descriptor is `fd` (two instructions; the kernel replaces
    /// the descriptor with the map's address at load time).
    pub const fn ld_map_fd(dst: Reg, fd: i32) -> [Self; 2] {
        [
            Self::new(
                BPF_LD | BPF_DW | BPF_IMM,
                dst as u8,
                BPF_PSEUDO_MAP_FD,
                0,
                fd,
            ),
            Self::new(0, 0, 0, 0, 0),
        ]
    }

    /// `dst = *(size *)(src + off)`.
    pub const fn ldx_mem(size: MemSize, dst: Reg, src: Reg, off: i16) -> Self {
        Self::new(
            BPF_LDX | size.bits() | BPF_MEM,
            dst as u8,
            src as u8,
            off,
            0,
        )
    }

    /// `*(size *)(dst + off) = src`.
    pub const fn stx_mem(size: MemSize, dst: Reg, src: Reg, off: i16) -> Self {
        Self::new(
            BPF_STX | size.bits() | BPF_MEM,
            dst as u8,
            src as u8,
            off,
            0,
        )
    }

    /// `*(size *)(dst + off) = imm`.
    pub const fn st_mem(size: MemSize, dst: Reg, off: i16, imm: i32) -> Self {
        Self::new(BPF_ST | size.bits() | BPF_MEM, dst as u8, 0, off, imm)
    }

    /// `if dst OP imm goto pc + 1 + off`.
    pub const fn jmp_imm(op: JmpOp, dst: Reg, imm: i32, off: i16) -> Self {
        Self::new(BPF_JMP | op.bits() | BPF_K, dst as u8, 0, off, imm)
    }

    /// `if dst OP src goto pc + 1 + off`.
    pub const fn jmp_reg(op: JmpOp, dst: Reg, src: Reg, off: i16) -> Self {
        Self::new(BPF_JMP | op.bits() | BPF_X, dst as u8, src as u8, off, 0)
    }

    /// `goto pc + 1 + off`.
    pub const fn ja(off: i16) -> Self {
        Self::new(BPF_JMP | BPF_JA, 0, 0, off, 0)
    }

    /// Calls helper number `helper` (`R1`..`R5` arguments, result in `R0`).
    pub const fn call(helper: i32) -> Self {
        Self::new(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
    }

    /// Returns `R0`.
    pub const fn exit() -> Self {
        Self::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }

    /// The 8 bytes the kernel reads (`struct bpf_insn` in host byte order: the register nibbles
    /// are a C bitfield, `dst_reg` first).
    pub const fn to_bytes(self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            (self.dst & 0x0f) | (self.src << 4)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }
}

/// What an XDP program decided for a frame (its return value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpAction {
    /// `XDP_ABORTED` (0): dropped, with a trace event.
    Aborted,
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2): on to the kernel stack.
    Pass,
    /// `XDP_TX` (3): bounced back out of the same interface.
    Tx,
    /// `XDP_REDIRECT` (4): to another interface, CPU or AF_XDP socket.
    Redirect,
    /// Any other value (the kernel treats it as `XDP_ABORTED`).
    Other(u32),
}

impl XdpAction {
    /// The action a raw return value stands for.
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            n => XdpAction::Other(n),
        }
    }

    /// The raw return value.
    pub const fn as_raw(self) -> u32 {
        match self {
            XdpAction::Aborted => 0,
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
            XdpAction::Tx => 3,
            XdpAction::Redirect => 4,
            XdpAction::Other(n) => n,
        }
    }
}

/// Which frames the built-in program redirects to AF_XDP sockets; all others go to the kernel
/// stack (`XDP_PASS`).
///
/// A match is one EtherType (the one at offset 12: a VLAN tag still in the frame is EtherType
/// `0x8100`), optionally one IP protocol (IPv4 `protocol` or IPv6 `next header`, extension
/// headers are not walked), optionally one destination port (TCP, UDP, SCTP, UDP-Lite; IPv4
/// fragments other than the first never match a port).
///
/// ```
/// use netring::xdp::Match;
/// let vxlan = Match::ipv4().udp_dst_port(4789);
/// let all_ipv6_tcp = Match::ipv6().ip_protocol(6);
/// let ptp = Match::ethertype(0x88f7);
/// assert!(vxlan.validate().is_ok() && all_ipv6_tcp.validate().is_ok() && ptp.validate().is_ok());
/// assert!(Match::ethertype(0x0806).ip_protocol(17).validate().is_err()); // ARP has no IP protocol
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    ethertype: u16,
    ip_protocol: Option<u8>,
    dst_port: Option<u16>,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;
const ETH_HLEN: usize = 14;

impl Match {
    /// Frames with this EtherType (host order, e.g. `0x88f7` for PTP).
    pub const fn ethertype(ethertype: u16) -> Self {
        Self {
            ethertype,
            ip_protocol: None,
            dst_port: None,
        }
    }

    /// IPv4 frames (EtherType `0x0800`).
    pub const fn ipv4() -> Self {
        Self::ethertype(ETHERTYPE_IPV4)
    }

    /// IPv6 frames (EtherType `0x86DD`).
    pub const fn ipv6() -> Self {
        Self::ethertype(ETHERTYPE_IPV6)
    }

    /// Only this IP protocol (e.g. 17 for UDP). Needs an IPv4 or IPv6 EtherType.
    pub const fn ip_protocol(mut self, protocol: u8) -> Self {
        self.ip_protocol = Some(protocol);
        self
    }

    /// Only UDP datagrams to this destination port: `ip_protocol(17).dst_port(port)`.
    pub const fn udp_dst_port(self, port: u16) -> Self {
        self.ip_protocol(IPPROTO_UDP).dst_port(port)
    }

    /// Only this destination port. Needs `ip_protocol` TCP (6), UDP (17), SCTP (132) or
    /// UDP-Lite (136): all keep it at offset 2 of their header.
    pub const fn dst_port(mut self, port: u16) -> Self {
        self.dst_port = Some(port);
        self
    }

    /// The EtherType matched.
    pub const fn ethertype_value(&self) -> u16 {
        self.ethertype
    }

    /// The IP protocol matched, if any.
    pub const fn ip_protocol_value(&self) -> Option<u8> {
        self.ip_protocol
    }

    /// The destination port matched, if any.
    pub const fn dst_port_value(&self) -> Option<u16> {
        self.dst_port
    }

    /// Checks that the match makes sense (an IP protocol only on IPv4/IPv6, a port only on a
    /// protocol that has one). [`XdpProgram::load_redirect`](super::XdpProgram::load_redirect)
    /// calls it.
    pub fn validate(&self) -> Result<()> {
        if self.ip_protocol.is_some()
            && self.ethertype != ETHERTYPE_IPV4
            && self.ethertype != ETHERTYPE_IPV6
        {
            return Err(Error::InvalidConfig(format!(
                "an XDP match on an IP protocol needs EtherType IPv4 (0x0800) or IPv6 (0x86dd), not {:#06x}",
                self.ethertype
            )));
        }
        if self.dst_port.is_some()
            && !matches!(
                self.ip_protocol,
                Some(IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE)
            )
        {
            return Err(Error::InvalidConfig(format!(
                "an XDP match on a destination port needs IP protocol TCP (6), UDP (17), SCTP (132) or UDP-Lite (136), not {:?}",
                self.ip_protocol
            )));
        }
        Ok(())
    }

    /// Whether the built-in program redirects `frame` (a whole Ethernet frame): the same
    /// decision the XDP program makes in the kernel, for checking a match offline.
    ///
    /// ```
    /// use netring::xdp::Match;
    /// let mut arp = vec![0u8; 42];
    /// arp[12..14].copy_from_slice(&[0x08, 0x06]);
    /// assert!(Match::ethertype(0x0806).matches(&arp));
    /// assert!(!Match::ipv4().matches(&arp));
    /// ```
    pub fn matches(&self, frame: &[u8]) -> bool {
        let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        if frame.len() < ETH_HLEN || be16(12) != self.ethertype {
            return false;
        }
        let Some(protocol) = self.ip_protocol else {
            return true;
        };
        let l4 = if self.ethertype == ETHERTYPE_IPV4 {
            if frame.len() < ETH_HLEN + 20 || frame[ETH_HLEN] >> 4 != 4 {
                return false;
            }
            let ihl = usize::from(frame[ETH_HLEN] & 0x0f);
            if ihl < 5 || frame[ETH_HLEN + 9] != protocol {
                return false;
            }
            if self.dst_port.is_some() && be16(ETH_HLEN + 6) & 0x1fff != 0 {
                return false; // a later fragment: no transport header
            }
            ETH_HLEN + ihl * 4
        } else {
            let need = ETH_HLEN + 40 + if self.dst_port.is_some() { 4 } else { 0 };
            if frame.len() < need || frame[ETH_HLEN] >> 4 != 6 || frame[ETH_HLEN + 6] != protocol {
                return false;
            }
            ETH_HLEN + 40
        };
        match self.dst_port {
            None => true,
            Some(port) => frame.len() >= l4 + 4 && be16(l4 + 2) == port,
        }
    }
}

/// A jump target in an [`Asm`] program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// Collects instructions and resolves jumps to labels.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A new, not yet placed, label.
    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `label` at the next instruction.
    pub(crate) fn bind(&mut self, label: Label) {
        debug_assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.insns.len());
    }

    pub(crate) fn push(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }

    pub(crate) fn extend(&mut self, insns: impl IntoIterator<Item = Insn>) -> &mut Self {
        self.insns.extend(insns);
        self
    }

    /// `if dst OP imm goto target`.
    pub(crate) fn jmp_imm(&mut self, op: JmpOp, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn::jmp_imm(op, dst, imm, 0))
    }

    /// `if dst OP src goto target`.
    pub(crate) fn jmp_reg(&mut self, op: JmpOp, dst: Reg, src: Reg, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn::jmp_reg(op, dst, src, 0))
    }

    /// Resolves the jumps. Panics on an unplaced label or an out-of-range jump (bugs in the
    /// program generator, not inputs).
    pub(crate) fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label.0].expect("jump to a label that was never placed");
            let off = target as isize - (at as isize + 1);
            self.insns[at].off = i16::try_from(off).expect("jump out of range");
        }
        self.insns
    }
}

/// The built-in XDP program: every frame (or, with `filter`, every matching frame) is redirected
/// to the XSKMAP `map_fd` at the frame's receive queue; the kernel returns `fallback` when that
/// queue has no socket. Non-matching frames get `XDP_PASS`.
pub(crate) fn redirect_program(
    map_fd: i32,
    filter: Option<&Match>,
    fallback: XdpAction,
) -> Vec<Insn> {
    use JmpOp::*;
    use MemSize::*;
    use Reg::*;
    let mut a = Asm::new();
    let pass = a.label();

    // R7 = ctx->rx_queue_index (R7 survives until the helper call).
    a.push(Insn::ldx_mem(W, R7, R1, XDP_MD_RX_QUEUE_INDEX));
    if let Some(m) = filter {
        // R2 = data, R3 = data_end. Every packet read below is preceded by a check that
        // `data + end of the read <= data_end` on a register derived from the same pointer,
        // which is what the verifier requires.
        a.push(Insn::ldx_mem(W, R2, R1, XDP_MD_DATA));
        a.push(Insn::ldx_mem(W, R3, R1, XDP_MD_DATA_END));
        let ne16 = |v: u16| i32::from(u16::from_ne_bytes(v.to_be_bytes()));

        // Ethernet header present and the EtherType matches.
        a.push(Insn::mov64_reg(R4, R2));
        a.push(Insn::alu64_imm(AluOp::Add, R4, ETH_HLEN as i32));
        a.jmp_reg(Gt, R4, R3, pass);
        a.push(Insn::ldx_mem(H, R5, R2, 12));
        a.jmp_imm(Ne, R5, ne16(m.ethertype), pass);

        if let Some(protocol) = m.ip_protocol {
            let l3 = ETH_HLEN as i16;
            if m.ethertype == ETHERTYPE_IPV4 {
                // A full minimal IPv4 header.
                a.push(Insn::mov64_reg(R4, R2));
                a.push(Insn::alu64_imm(AluOp::Add, R4, i32::from(l3) + 20));
                a.jmp_reg(Gt, R4, R3, pass);
                // Version 4, IHL >= 5.
                a.push(Insn::ldx_mem(B, R5, R2, l3));
                a.push(Insn::mov64_reg(R4, R5));
                a.push(Insn::alu64_imm(AluOp::Rsh, R4, 4));
                a.jmp_imm(Ne, R4, 4, pass);
                a.push(Insn::alu64_imm(AluOp::And, R5, 0x0f));
                a.jmp_imm(Lt, R5, 5, pass);
                // Protocol.
                a.push(Insn::ldx_mem(B, R4, R2, l3 + 9));
                a.jmp_imm(Ne, R4, i32::from(protocol), pass);
                if let Some(port) = m.dst_port {
                    // First fragment only (fragment offset 0): later ones have no L4 header.
                    a.push(Insn::ldx_mem(H, R4, R2, l3 + 6));
                    a.push(Insn::alu64_imm(AluOp::And, R4, ne16(0x1fff)));
                    a.jmp_imm(Ne, R4, 0, pass);
                    // R2 = data + IHL * 4 (a packet pointer plus a scalar in 20..=60), then the
                    // transport header's first 4 bytes must be in the frame.
                    a.push(Insn::alu64_imm(AluOp::Lsh, R5, 2));
                    a.push(Insn::alu64_reg(AluOp::Add, R2, R5));
                    a.push(Insn::mov64_reg(R4, R2));
                    a.push(Insn::alu64_imm(AluOp::Add, R4, i32::from(l3) + 4));
                    a.jmp_reg(Gt, R4, R3, pass);
                    a.push(Insn::ldx_mem(H, R5, R2, l3 + 2));
                    a.jmp_imm(Ne, R5, ne16(port), pass);
                }
            } else {
                // Fixed IPv6 header (40 bytes), plus the transport's first 4 bytes for a port.
                let need = i32::from(l3) + 40 + if m.dst_port.is_some() { 4 } else { 0 };
                a.push(Insn::mov64_reg(R4, R2));
                a.push(Insn::alu64_imm(AluOp::Add, R4, need));
                a.jmp_reg(Gt, R4, R3, pass);
                a.push(Insn::ldx_mem(B, R5, R2, l3));
                a.push(Insn::alu64_imm(AluOp::Rsh, R5, 4));
                a.jmp_imm(Ne, R5, 6, pass);
                a.push(Insn::ldx_mem(B, R5, R2, l3 + 6));
                a.jmp_imm(Ne, R5, i32::from(protocol), pass);
                if let Some(port) = m.dst_port {
                    a.push(Insn::ldx_mem(H, R5, R2, l3 + 40 + 2));
                    a.jmp_imm(Ne, R5, ne16(port), pass);
                }
            }
        }
        // Matched: fall through to the redirect.
    }
    // return bpf_redirect_map(&xsks, rx_queue_index, fallback)
    a.push(Insn::mov64_reg(R2, R7));
    a.extend(Insn::ld_map_fd(R1, map_fd));
    a.push(Insn::mov64_imm(R3, fallback.as_raw() as i32));
    a.push(Insn::call(BPF_FUNC_REDIRECT_MAP));
    a.push(Insn::exit());
    if filter.is_some() {
        // Not matched: return XDP_PASS. (Only emitted when something jumps here: the verifier
        // refuses unreachable instructions.)
        a.bind(pass);
        a.push(Insn::mov64_imm(R0, XdpAction::Pass.as_raw() as i32));
        a.push(Insn::exit());
    }
    a.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Encodings as the kernel's own headers define them (little-endian: `dst_reg` is the low
    // nibble of byte 1), e.g. `b7 00 00 00 02 00 00 00` is `r0 = 2`.
    #[test]
    #[cfg(target_endian = "little")]
    fn single_instructions_encode_like_the_kernel_expects() {
        use MemSize::*;
        use Reg::*;
        let cases: &[(Insn, [u8; 8])] = &[
            (Insn::mov64_imm(R0, 2), [0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
            (
                Insn::mov64_imm(R3, -1),
                [0xb7, 0x03, 0, 0, 0xff, 0xff, 0xff, 0xff],
            ),
            (Insn::mov64_reg(R2, R7), [0xbf, 0x72, 0, 0, 0, 0, 0, 0]),
            (Insn::exit(), [0x95, 0, 0, 0, 0, 0, 0, 0]),
            (Insn::call(51), [0x85, 0, 0, 0, 51, 0, 0, 0]),
            // r7 = *(u32 *)(r1 + 16)
            (
                Insn::ldx_mem(W, R7, R1, 16),
                [0x61, 0x17, 16, 0, 0, 0, 0, 0],
            ),
            // r5 = *(u16 *)(r2 + 12)
            (
                Insn::ldx_mem(H, R5, R2, 12),
                [0x69, 0x25, 12, 0, 0, 0, 0, 0],
            ),
            // r5 = *(u8 *)(r2 + 23)
            (
                Insn::ldx_mem(B, R5, R2, 23),
                [0x71, 0x25, 23, 0, 0, 0, 0, 0],
            ),
            (
                Insn::ldx_mem(DW, R0, R10, -8),
                [0x79, 0xa0, 0xf8, 0xff, 0, 0, 0, 0],
            ),
            (
                Insn::stx_mem(DW, R10, R1, -8),
                [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0],
            ),
            (
                Insn::st_mem(W, R10, -4, 7),
                [0x62, 0x0a, 0xfc, 0xff, 7, 0, 0, 0],
            ),
            // if r5 != 0x0008 goto +3
            (
                Insn::jmp_imm(JmpOp::Ne, R5, 8, 3),
                [0x55, 0x05, 3, 0, 8, 0, 0, 0],
            ),
            // if r4 > r3 goto +20
            (
                Insn::jmp_reg(JmpOp::Gt, R4, R3, 20),
                [0x2d, 0x34, 20, 0, 0, 0, 0, 0],
            ),
            (
                Insn::jmp_imm(JmpOp::Lt, R5, 5, -2),
                [0xa5, 0x05, 0xfe, 0xff, 5, 0, 0, 0],
            ),
            (Insn::ja(-1), [0x05, 0, 0xff, 0xff, 0, 0, 0, 0]),
            (
                Insn::alu64_imm(AluOp::Add, R4, 14),
                [0x07, 0x04, 0, 0, 14, 0, 0, 0],
            ),
            (
                Insn::alu64_imm(AluOp::And, R5, 0x0f),
                [0x57, 0x05, 0, 0, 0x0f, 0, 0, 0],
            ),
            (
                Insn::alu64_imm(AluOp::Rsh, R4, 4),
                [0x77, 0x04, 0, 0, 4, 0, 0, 0],
            ),
            (
                Insn::alu64_imm(AluOp::Lsh, R5, 2),
                [0x67, 0x05, 0, 0, 2, 0, 0, 0],
            ),
            (
                Insn::alu64_reg(AluOp::Add, R2, R5),
                [0x0f, 0x52, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (insn, want) in cases {
            assert_eq!(insn.to_bytes(), *want, "{insn:?}");
        }
        // lddw r1, map fd 7: src_reg = BPF_PSEUDO_MAP_FD, second half all zero.
        let [lo, hi] = Insn::ld_map_fd(R1, 7);
        assert_eq!(lo.to_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(hi.to_bytes(), [0; 8]);
        let [lo, hi] = Insn::ld_imm64(R0, 0x1122_3344_5566_7788);
        assert_eq!(lo.to_bytes(), [0x18, 0x00, 0, 0, 0x88, 0x77, 0x66, 0x55]);
        assert_eq!(hi.to_bytes(), [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn redirect_all_program_is_exact() {
        let bytes: Vec<[u8; 8]> = redirect_program(9, None, XdpAction::Pass)
            .iter()
            .map(|i| i.to_bytes())
            .collect();
        let want: &[[u8; 8]] = &[
            [0x61, 0x17, 16, 0, 0, 0, 0, 0], // r7 = ctx->rx_queue_index
            [0xbf, 0x72, 0, 0, 0, 0, 0, 0],  // r2 = r7
            [0x18, 0x11, 0, 0, 9, 0, 0, 0],  // r1 = map (fd 9)
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0xb7, 0x03, 0, 0, 2, 0, 0, 0], // r3 = XDP_PASS
            [0x85, 0, 0, 0, 51, 0, 0, 0],   // call bpf_redirect_map
            [0x95, 0, 0, 0, 0, 0, 0, 0],    // exit
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn labels_resolve_forward_and_backward() {
        let mut a = Asm::new();
        let end = a.label();
        let top = a.label();
        a.bind(top);
        a.push(Insn::mov64_imm(Reg::R0, 0)); // 0
        a.jmp_imm(JmpOp::Eq, Reg::R0, 0, end); // 1 -> 4: off 2
        a.push(Insn::mov64_imm(Reg::R0, 1)); // 2
        a.jmp_reg(JmpOp::Ne, Reg::R0, Reg::R1, top); // 3 -> 0: off -4
        a.bind(end);
        a.push(Insn::exit()); // 4
        let p = a.finish();
        assert_eq!(p[1].off, 2);
        assert_eq!(p[3].off, -4);
    }

    /// Every jump of a generated program lands inside it, on an instruction, and the last one is
    /// an exit.
    fn check_structure(p: &[Insn]) {
        assert_eq!(p.last().unwrap().code, 0x95);
        let mut second_half = vec![false; p.len()];
        for (pc, i) in p.iter().enumerate() {
            if i.code == 0x18 {
                second_half[pc + 1] = true;
            }
        }
        for (pc, i) in p.iter().enumerate() {
            let class = i.code & 0x07;
            let op = i.code & 0xf0;
            if class == BPF_JMP && op != BPF_CALL && op != BPF_EXIT {
                let target = pc as isize + 1 + i.off as isize;
                assert!((0..p.len() as isize).contains(&target), "pc {pc}: {i:?}");
                assert!(!second_half[target as usize], "pc {pc} jumps into a lddw");
            }
        }
    }

    pub(crate) fn sample_matches() -> Vec<Option<Match>> {
        vec![
            None,
            Some(Match::ethertype(0x0806)),
            Some(Match::ethertype(0x8100)),
            Some(Match::ipv4()),
            Some(Match::ipv6()),
            Some(Match::ipv4().ip_protocol(17)),
            Some(Match::ipv6().ip_protocol(17)),
            Some(Match::ipv4().udp_dst_port(4789)),
            Some(Match::ipv6().udp_dst_port(4789)),
            Some(Match::ipv4().ip_protocol(6).dst_port(4789)),
            Some(Match::ipv6().ip_protocol(6).dst_port(80)),
            Some(Match::ipv6().ip_protocol(58)),
        ]
    }

    #[test]
    fn generated_programs_are_well_formed() {
        for m in sample_matches() {
            check_structure(&redirect_program(3, m.as_ref(), XdpAction::Pass));
        }
    }

    #[test]
    fn validate_refuses_nonsense() {
        assert!(Match::ethertype(0x0806).ip_protocol(17).validate().is_err());
        assert!(Match::ipv4().dst_port(53).validate().is_err());
        assert!(
            Match::ipv4()
                .ip_protocol(1)
                .dst_port(53)
                .validate()
                .is_err()
        );
        for m in sample_matches().into_iter().flatten() {
            m.validate().unwrap();
        }
        let m = Match::ipv6().udp_dst_port(53);
        assert_eq!(
            (
                m.ethertype_value(),
                m.ip_protocol_value(),
                m.dst_port_value()
            ),
            (0x86dd, Some(17), Some(53))
        );
    }

    // --- Frames for the model and the kernel cross-check ---------------------------------------

    pub(crate) fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// IPv4 header (`ihl` words, the rest options) + L4 bytes.
    pub(crate) fn ipv4(version: u8, ihl: u8, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let hlen = usize::from(ihl.max(5)) * 4;
        let mut h = vec![0u8; hlen];
        h[0] = (version << 4) | ihl;
        let total = (hlen + l4.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&[10, 0, 0, 1]);
        h[16..20].copy_from_slice(&[10, 0, 0, 2]);
        for b in &mut h[20..] {
            *b = 1; // NOP options
        }
        h.extend_from_slice(l4);
        eth(ETHERTYPE_IPV4, &h)
    }

    pub(crate) fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        h[6] = next;
        h[7] = 64;
        h[8] = 0xfd;
        h[23] = 1;
        h[24] = 0xfd;
        h[39] = 2;
        h.extend_from_slice(l4);
        eth(ETHERTYPE_IPV6, &h)
    }

    pub(crate) fn ports(sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&[0, 16, 0, 0]);
        l4.extend_from_slice(b"payload!");
        l4
    }

    /// Labelled frames covering each decision of the program, plus every truncation of each
    /// (down to the 14-byte Ethernet header).
    pub(crate) fn sample_frames() -> Vec<(String, Vec<u8>)> {
        let mf = 0x2000; // more fragments, offset 0
        let base: Vec<(&str, Vec<u8>)> = vec![
            ("v4 udp 4789", ipv4(4, 5, 17, 0, &ports(1234, 4789))),
            ("v4 udp 4789 ihl 6", ipv4(4, 6, 17, 0, &ports(1234, 4789))),
            ("v4 udp 4789 ihl 15", ipv4(4, 15, 17, 0, &ports(1234, 4789))),
            (
                "v4 udp 4789 first fragment",
                ipv4(4, 5, 17, mf, &ports(1, 4789)),
            ),
            (
                "v4 udp 4789 later fragment",
                ipv4(4, 5, 17, 100, &ports(1, 4789)),
            ),
            ("v4 udp sport 4789", ipv4(4, 5, 17, 0, &ports(4789, 1234))),
            ("v4 udp 53", ipv4(4, 5, 17, 0, &ports(1234, 53))),
            ("v4 tcp 4789", ipv4(4, 5, 6, 0, &ports(1234, 4789))),
            ("v4 icmp", ipv4(4, 5, 1, 0, &[8, 0, 0, 0, 0, 1, 0, 1])),
            ("v4 version 5", ipv4(5, 5, 17, 0, &ports(1234, 4789))),
            ("v4 ihl 4", ipv4(4, 4, 17, 0, &ports(1234, 4789))),
            ("v6 udp 4789", ipv6(17, &ports(1234, 4789))),
            ("v6 udp 53", ipv6(17, &ports(1234, 53))),
            ("v6 tcp 4789", ipv6(6, &ports(1234, 4789))),
            ("v6 tcp 80", ipv6(6, &ports(1234, 80))),
            ("v6 icmpv6", ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 1])),
            (
                "v6 hop-by-hop then udp",
                ipv6(0, &[17, 0, 1, 4, 0, 0, 0, 0]),
            ),
            ("arp", eth(0x0806, &[0u8; 28])),
            ("vlan v4 udp", eth(0x8100, &[0, 5, 0x08, 0x00, 0x45])),
            ("ptp", eth(0x88f7, &[0u8; 44])),
        ];
        let mut out = Vec::new();
        for (label, frame) in base {
            for len in ETH_HLEN..frame.len() {
                out.push((format!("{label} cut at {len}"), frame[..len].to_vec()));
            }
            out.push((label.to_owned(), frame));
        }
        out
    }

    #[test]
    fn model_decides_as_documented() {
        let by_label: std::collections::HashMap<String, Vec<u8>> =
            sample_frames().into_iter().collect();
        let f = |l: &str| by_label[l].as_slice();
        let vxlan4 = Match::ipv4().udp_dst_port(4789);
        assert!(vxlan4.matches(f("v4 udp 4789")));
        assert!(vxlan4.matches(f("v4 udp 4789 ihl 6")));
        assert!(vxlan4.matches(f("v4 udp 4789 ihl 15")));
        assert!(vxlan4.matches(f("v4 udp 4789 first fragment")));
        assert!(!vxlan4.matches(f("v4 udp 4789 later fragment")));
        assert!(!vxlan4.matches(f("v4 udp sport 4789")));
        assert!(!vxlan4.matches(f("v4 tcp 4789")));
        assert!(!vxlan4.matches(f("v4 version 5")));
        assert!(!vxlan4.matches(f("v4 ihl 4")));
        assert!(!vxlan4.matches(f("v6 udp 4789")));
        // One byte short of the destination port.
        assert!(!vxlan4.matches(&f("v4 udp 4789")[..14 + 20 + 3]));
        assert!(vxlan4.matches(&f("v4 udp 4789")[..14 + 20 + 4]));
        let vxlan6 = Match::ipv6().udp_dst_port(4789);
        assert!(vxlan6.matches(f("v6 udp 4789")));
        assert!(!vxlan6.matches(f("v6 udp 53")));
        assert!(!vxlan6.matches(f("v6 tcp 4789")));
        assert!(!vxlan6.matches(f("v6 hop-by-hop then udp")));
        assert!(Match::ipv6().ip_protocol(58).matches(f("v6 icmpv6")));
        assert!(Match::ipv4().ip_protocol(1).matches(f("v4 icmp")));
        assert!(Match::ethertype(0x0806).matches(f("arp")));
        assert!(Match::ethertype(0x8100).matches(f("vlan v4 udp")));
        assert!(!Match::ipv4().matches(f("vlan v4 udp")));
        assert!(Match::ipv4().matches(f("v4 version 5"))); // EtherType only
        assert!(!Match::ipv4().ip_protocol(17).matches(f("v4 version 5")));
        assert!(!Match::ipv4().matches(&[0u8; 13]));
    }
}
