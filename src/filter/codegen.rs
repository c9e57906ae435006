//! The filter's intermediate form (a tree of tests on loads) and its translation to classic BPF.
//!
//! Offsets in the tree are positions in the *virtual frame*: the frame with every VLAN tag inline,
//! as a pcap file holds it. [`Variant::Frame`] reads them as they are; [`Variant::Tagged`] is for a
//! frame whose outermost tag the kernel moved into skb metadata, so virtual bytes 12..16 come from
//! the ancillary loads and everything after them sits 4 bytes earlier in the buffer.

use crate::bpf::{BpfInsn, BpfProgram, MAX_INSNS};

// Opcodes (classic BPF, `linux/filter.h`).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_W_IND: u16 = 0x40;
const LD_H_IND: u16 = 0x48;
const LD_B_IND: u16 = 0x50;
const LD_W_LEN: u16 = 0x80;
const LD_IMM: u16 = 0x00;
const LD_MEM: u16 = 0x60;
const LDX_MSH: u16 = 0xb1;
const LDX_MEM: u16 = 0x61;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const TXA: u16 = 0x87;
const TAX: u16 = 0x07;
const ALU_K: u16 = 0x04;
const ALU_X: u16 = 0x0c;
const ALU_NEG: u16 = 0x84;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const JX: u16 = 0x08;
const RET_K: u16 = 0x06;

/// `SKF_AD_OFF`: base of the kernel's ancillary loads.
const SKF_AD_OFF: u32 = 0xffff_f000;
const SKF_AD_VLAN_TAG: u32 = 44;
const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;
const SKF_AD_VLAN_TPID: u32 = 60;

/// Number of scratch memory cells (`BPF_MEMWORDS`).
const MEMWORDS: usize = 16;

/// Return value for an accepted frame: keep all of it.
const ACCEPT: u32 = u32::MAX;

/// An ALU operation (the `BPF_OP` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AluOp {
    Add = 0x00,
    Sub = 0x10,
    Mul = 0x20,
    Div = 0x30,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mod = 0x90,
    Xor = 0xa0,
}

impl AluOp {
    /// Constant folding, as the BPF machine computes (wrapping, 32 bits); `None` on a zero divisor
    /// or a shift of 32 or more.
    pub(crate) fn fold(self, a: u32, b: u32) -> Option<u32> {
        Some(match self {
            AluOp::Add => a.wrapping_add(b),
            AluOp::Sub => a.wrapping_sub(b),
            AluOp::Mul => a.wrapping_mul(b),
            AluOp::Div => a.checked_div(b)?,
            AluOp::Mod => a.checked_rem(b)?,
            AluOp::Or => a | b,
            AluOp::And => a & b,
            AluOp::Xor => a ^ b,
            AluOp::Lsh => a.checked_shl(b)?,
            AluOp::Rsh => a.checked_shr(b)?,
        })
    }
}

/// Where a load reads, in virtual-frame offsets.
#[derive(Clone, Debug)]
pub(crate) enum At {
    /// A fixed offset.
    Abs(u64),
    /// `4 * (frame[hdr] & 0xf) + k`: behind an IPv4 header whose first byte is at `hdr`.
    Ihl { hdr: u32, k: u32 },
    /// `index + k`, with the IPv4 header length at `ihl` added to the index when given.
    Dyn {
        index: Box<Arith>,
        ihl: Option<u32>,
        k: u32,
    },
}

/// A 32-bit value computed into the accumulator.
#[derive(Clone, Debug)]
pub(crate) enum Arith {
    Const(u32),
    /// The frame's length on the wire.
    Len,
    /// `ld len` as it is: the length without the tag the kernel took out (tagged layout only,
    /// made by [`fold_tagged`] where the 4 bytes can go into the constant instead).
    BufferLen,
    Load {
        at: At,
        size: u8,
    },
    Bin(AluOp, Box<Arith>, Box<Arith>),
    Neg(Box<Arith>),
}

/// A comparison jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Jop {
    Eq,
    Gt,
    Ge,
    Set,
}

/// A condition: short-circuit evaluation left to right, as libpcap's code does. The order matters
/// for truncated frames, since a load past the end rejects the frame outright.
#[derive(Clone, Debug)]
pub(crate) enum Cond {
    Const(bool),
    Test { lhs: Arith, op: Jop, rhs: Arith },
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    pub(crate) fn and(a: Cond, b: Cond) -> Cond {
        Cond::And(Box::new(a), Box::new(b))
    }
    pub(crate) fn or(a: Cond, b: Cond) -> Cond {
        Cond::Or(Box::new(a), Box::new(b))
    }
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn not(a: Cond) -> Cond {
        Cond::Not(Box::new(a))
    }
    /// `frame[off:size] (& mask) op k`.
    pub(crate) fn cmp(off: u32, size: u8, mask: Option<u32>, op: Jop, k: u32) -> Cond {
        let load = Arith::Load {
            at: At::Abs(off as u64),
            size,
        };
        let lhs = match mask {
            Some(m) => Arith::Bin(AluOp::And, Box::new(load), Box::new(Arith::Const(m))),
            None => load,
        };
        Cond::Test {
            lhs,
            op,
            rhs: Arith::Const(k),
        }
    }
}

/// Which buffer layout a program is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Every tag inline.
    Frame,
    /// The outermost tag in skb metadata (`SKF_AD_VLAN_*`), the rest of the frame 4 bytes shorter.
    Tagged,
}

/// Why code generation failed.
#[derive(Debug)]
pub(crate) enum GenError {
    /// More than `MAX_INSNS` instructions.
    TooLong(usize),
    /// An arithmetic expression needs more than 16 scratch cells.
    TooDeep,
}

/// A straight-line statement.
type Stmts = Vec<BpfInsn>;

fn insn(code: u16, k: u32) -> BpfInsn {
    BpfInsn::new(code, 0, 0, k)
}

/// A label: the number of instructions from the target to the end of the program (code is built
/// backwards, so every jump target exists before the jump).
type Label = usize;

struct Gen {
    /// Instructions in reverse order.
    rev: Vec<BpfInsn>,
    /// The latest `ja` emitted towards each far target, for reuse.
    trampolines: std::collections::HashMap<Label, Label>,
    variant: Variant,
    too_deep: bool,
}

impl Gen {
    fn here(&self) -> Label {
        self.rev.len()
    }

    fn push(&mut self, i: BpfInsn) -> Label {
        self.rev.push(i);
        self.rev.len()
    }

    /// Distance a jump emitted next would have to `target`.
    fn dist(&self, target: Label) -> usize {
        self.rev.len() - target
    }

    fn ja(&mut self, target: Label) -> Label {
        let d = self.dist(target) as u32;
        self.push(insn(JA, d))
    }

    /// A nearby `ja` to `target`: the last one made for it if still in reach, else a new one.
    fn trampoline(&mut self, target: Label) -> Label {
        if let Some(&tr) = self.trampolines.get(&target)
            && self.dist(tr) <= 255
        {
            return tr;
        }
        let tr = self.ja(target);
        self.trampolines.insert(target, tr);
        tr
    }

    /// A conditional jump, with `ja` trampolines for targets more than 255 away.
    fn jump(&mut self, code: u16, k: u32, mut t: Label, mut f: Label) -> Label {
        if self.dist(t) > 255 {
            t = self.trampoline(t);
        }
        if self.dist(f) > 255 {
            f = self.trampoline(f);
        }
        if self.dist(t) > 255 {
            t = self.trampoline(t);
        }
        let (jt, jf) = (self.dist(t) as u8, self.dist(f) as u8);
        self.push(BpfInsn::new(code, jt, jf, k))
    }

    /// Pushes straight-line statements (given in program order).
    fn stmts(&mut self, s: Stmts) -> Label {
        for i in s.into_iter().rev() {
            self.push(i);
        }
        self.here()
    }

    fn cond(&mut self, c: &Cond, t: Label, f: Label) -> Label {
        match c {
            Cond::Const(true) => t,
            Cond::Const(false) => f,
            Cond::And(a, b) => {
                let lb = self.cond(b, t, f);
                self.cond(a, lb, f)
            }
            Cond::Or(a, b) => {
                let lb = self.cond(b, t, f);
                self.cond(a, t, lb)
            }
            Cond::Not(a) => self.cond(a, f, t),
            Cond::Test { lhs, op, rhs } => {
                let mut s = Stmts::new();
                let code = match op {
                    Jop::Eq => JEQ_K,
                    Jop::Gt => JGT_K,
                    Jop::Ge => JGE_K,
                    Jop::Set => JSET_K,
                };
                let (code, k) = match rhs {
                    Arith::Const(k) => {
                        self.arith(lhs, 0, &mut s);
                        (code, *k)
                    }
                    _ => {
                        self.arith(lhs, 0, &mut s);
                        let cell = self.cell(0);
                        s.push(insn(ST, cell));
                        self.arith(rhs, 1, &mut s);
                        s.push(insn(TAX, 0));
                        s.push(insn(LD_MEM, cell));
                        (code | JX, 0)
                    }
                };
                self.jump(code, k, t, f);
                self.stmts(s)
            }
        }
    }

    fn cell(&mut self, depth: usize) -> u32 {
        if depth >= MEMWORDS {
            self.too_deep = true;
            0
        } else {
            depth as u32
        }
    }

    /// Appends code leaving `a` in the accumulator; scratch cells from `depth` up are free.
    fn arith(&mut self, a: &Arith, depth: usize, s: &mut Stmts) {
        match a {
            Arith::Const(k) => s.push(insn(LD_IMM, *k)),
            Arith::Len => {
                s.push(insn(LD_W_LEN, 0));
                if self.variant == Variant::Tagged {
                    s.push(insn(ALU_K | AluOp::Add as u16, 4));
                }
            }
            Arith::BufferLen => s.push(insn(LD_W_LEN, 0)),
            Arith::Neg(x) => {
                self.arith(x, depth, s);
                s.push(insn(ALU_NEG, 0));
            }
            Arith::Bin(op, x, y) => {
                self.arith(x, depth, s);
                if let Arith::Const(k) = **y {
                    s.push(insn(ALU_K | *op as u16, k));
                } else {
                    let cell = self.cell(depth);
                    s.push(insn(ST, cell));
                    self.arith(y, depth + 1, s);
                    s.push(insn(TAX, 0));
                    s.push(insn(LD_MEM, cell));
                    s.push(insn(ALU_X | *op as u16, 0));
                }
            }
            Arith::Load { at, size } => self.load(at, *size, depth, s),
        }
    }

    fn load(&mut self, at: &At, size: u8, depth: usize, s: &mut Stmts) {
        let (abs, ind) = match size {
            1 => (LD_B_ABS, LD_B_IND),
            2 => (LD_H_ABS, LD_H_IND),
            _ => (LD_W_ABS, LD_W_IND),
        };
        let tagged = self.variant == Variant::Tagged;
        match at {
            At::Abs(off) => {
                let (off, end) = (*off, *off + size as u64);
                if !tagged || end <= 12 {
                    abs_or_abort(abs, off, s);
                } else if off >= 16 {
                    abs_or_abort(abs, off - 4, s);
                } else if (off, size) == (12, 2) {
                    s.push(insn(LD_W_ABS, SKF_AD_OFF + SKF_AD_VLAN_TPID));
                } else if (off, size) == (14, 2) {
                    s.push(insn(LD_W_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG));
                } else {
                    // Straddles the tag: assemble byte by byte.
                    let cell = self.cell(depth);
                    for (n, b) in (off..end).enumerate() {
                        if n > 0 {
                            s.push(insn(ALU_K | AluOp::Lsh as u16, 8));
                            s.push(insn(ST, cell));
                        }
                        tagged_byte(b, s);
                        if n > 0 {
                            s.push(insn(TAX, 0));
                            s.push(insn(LD_MEM, cell));
                            s.push(insn(ALU_X | AluOp::Or as u16, 0));
                        }
                    }
                }
            }
            At::Ihl { hdr, k } => {
                self.ldx_ihl(*hdr, s);
                self.ind(ind, *k, depth, s);
            }
            At::Dyn { index, ihl, k } => {
                self.arith(index, depth, s);
                if let Some(hdr) = ihl {
                    if tagged && (12..16).contains(hdr) {
                        // Computing the header length clobbers A here; keep the index.
                        let cell = self.cell(depth);
                        s.push(insn(ST, cell));
                        self.ldx_ihl(*hdr, s);
                        s.push(insn(LD_MEM, cell));
                    } else {
                        self.ldx_ihl(*hdr, s);
                    }
                    s.push(insn(ALU_X | AluOp::Add as u16, 0));
                }
                // Keep index + k inside 0..2^31: the kernel reads negative offsets as ancillary
                // data where libpcap sees an out-of-bounds load.
                let k_eff = if tagged && *k >= 16 { *k - 4 } else { *k };
                if k_eff > 0x7fff_ffff {
                    s.push(insn(RET_K, 0));
                    return;
                }
                s.push(BpfInsn::new(JGT_K, 0, 1, 0x7fff_ffff - k_eff));
                s.push(insn(RET_K, 0));
                s.push(insn(TAX, 0));
                self.ind(ind, *k, depth, s);
            }
        }
    }

    /// `X = 4 * (virtual[hdr] & 0xf)`.
    fn ldx_ihl(&mut self, hdr: u32, s: &mut Stmts) {
        if self.variant == Variant::Tagged && hdr >= 12 {
            if hdr >= 16 {
                s.push(insn(LDX_MSH, hdr - 4));
            } else {
                tagged_byte(hdr as u64, s);
                s.push(insn(ALU_K | AluOp::And as u16, 0xf));
                s.push(insn(ALU_K | AluOp::Lsh as u16, 2));
                s.push(insn(TAX, 0));
            }
        } else {
            s.push(insn(LDX_MSH, hdr));
        }
    }

    /// `A = virtual[X + k]` (X is a header length or a guarded index: `X + k` does not wrap).
    fn ind(&mut self, code: u16, k: u32, depth: usize, s: &mut Stmts) {
        if self.variant == Variant::Tagged && k < 16 {
            // `X + k` may land on the tag (bytes 12..16) or after it: decide at run time, one
            // byte at a time. Rare: libpcap guards these loads with an ethertype test that
            // reads the TPID here, except where it drops a right operand's guard (`1 + tcp[0]`).
            let size = match code {
                LD_B_IND => 1,
                LD_H_IND => 2,
                _ => 4,
            };
            let (cx, cacc) = (self.cell(depth), self.cell(depth + 1));
            s.push(insn(STX, cx));
            for i in 0..size {
                s.push(insn(LDX_MEM, cx));
                tagged_ind_byte(k.wrapping_add(i), s);
                if i == 0 {
                    s.push(insn(ST, cacc));
                } else {
                    s.push(insn(TAX, 0));
                    s.push(insn(LD_MEM, cacc));
                    s.push(insn(ALU_K | AluOp::Lsh as u16, 8));
                    s.push(insn(ALU_X | AluOp::Or as u16, 0));
                    s.push(insn(ST, cacc));
                }
            }
            s.push(insn(LD_MEM, cacc));
        } else if self.variant == Variant::Tagged {
            s.push(insn(code, k - 4));
        } else {
            s.push(insn(code, k));
        }
    }
}

/// `A = virtual[X + c]`, one byte, in the tagged layout, with X the (non-wrapping) index.
fn tagged_ind_byte(c: u32, s: &mut Stmts) {
    let j = |code: u16, k: u32, jt: u8, jf: u8| BpfInsn::new(code, jt, jf, k);
    let tpid = SKF_AD_OFF + SKF_AD_VLAN_TPID;
    let tci = SKF_AD_OFF + SKF_AD_VLAN_TAG;
    s.extend_from_slice(&[
        insn(TXA, 0),
        insn(ALU_K | AluOp::Add as u16, c),
        j(JGE_K, 16, 19, 0), // → after the tag
        j(JGE_K, 12, 0, 16), // → before the tag
        insn(ALU_K | AluOp::Sub as u16, 12),
        j(JEQ_K, 0, 11, 0),  // → TPID high byte
        j(JEQ_K, 1, 7, 0),   // → TPID low byte
        j(JEQ_K, 2, 3, 0),   // → TCI high byte
        insn(LD_W_ABS, tci), // TCI low byte
        insn(ALU_K | AluOp::And as u16, 0xff),
        insn(JA, 12),
        insn(LD_W_ABS, tci),
        insn(ALU_K | AluOp::Rsh as u16, 8),
        insn(JA, 9),
        insn(LD_W_ABS, tpid),
        insn(ALU_K | AluOp::And as u16, 0xff),
        insn(JA, 6),
        insn(LD_W_ABS, tpid),
        insn(ALU_K | AluOp::Rsh as u16, 8),
        insn(JA, 3),
        insn(LD_B_IND, c), // before the tag
        insn(JA, 1),
        insn(LD_B_IND, c.wrapping_sub(4)), // after the tag
    ]);
}

/// `A = virtual[b]` for one byte of the tagged layout.
fn tagged_byte(b: u64, s: &mut Stmts) {
    match b {
        0..=11 => s.push(insn(LD_B_ABS, b as u32)),
        12..=15 => {
            let anc = if b < 14 {
                SKF_AD_VLAN_TPID
            } else {
                SKF_AD_VLAN_TAG
            };
            s.push(insn(LD_W_ABS, SKF_AD_OFF + anc));
            if b % 2 == 0 {
                s.push(insn(ALU_K | AluOp::Rsh as u16, 8));
            }
            s.push(insn(ALU_K | AluOp::And as u16, 0xff));
        }
        _ => abs_or_abort(LD_B_ABS, b - 4, s),
    }
}

/// An absolute load, or a reject where the offset would read the kernel's negative (ancillary)
/// area: libpcap treats those offsets as past the end.
fn abs_or_abort(code: u16, off: u64, s: &mut Stmts) {
    if off > 0x7fff_ffff {
        s.push(insn(RET_K, 0));
    } else {
        s.push(insn(code, off as u32));
    }
}

/// Generates one variant: `ret` instructions at the end, the condition before them.
fn generate(c: &Cond, variant: Variant) -> Result<Vec<BpfInsn>, GenError> {
    let mut g = Gen {
        rev: Vec::new(),
        trampolines: std::collections::HashMap::new(),
        variant,
        too_deep: false,
    };
    let reject = g.push(insn(RET_K, 0));
    let accept = g.push(insn(RET_K, ACCEPT));
    let entry = g.cond(c, accept, reject);
    if entry != g.here() {
        g.ja(entry);
    }
    if g.too_deep {
        return Err(GenError::TooDeep);
    }
    let mut code = g.rev;
    code.reverse();
    Ok(super::peephole::thread_jumps(code))
}

/// TPIDs the kernel moves into metadata (`skb_vlan_untag`): 802.1Q and 802.1ad.
pub(crate) const STRIPPED_TPIDS: [u32; 2] = [0x8100, 0x88a8];

/// For the tagged layout: tests of the ethertype field (virtual bytes 12..14, the TPID there)
/// against a constant decide the same way for both possible TPIDs, so they become constants and
/// the code behind them (IPv4/IPv6/ARP before any `vlan`) disappears as unreachable. And
/// `len op k` compares the kernel's length (4 bytes short) with `k - 4` instead of adding 4.
fn fold_tagged(c: &Cond) -> Cond {
    match c {
        Cond::And(a, b) => Cond::and(fold_tagged(a), fold_tagged(b)),
        Cond::Or(a, b) => Cond::or(fold_tagged(a), fold_tagged(b)),
        Cond::Not(a) => Cond::not(fold_tagged(a)),
        Cond::Test {
            lhs:
                Arith::Load {
                    at: At::Abs(12),
                    size: 2,
                },
            op,
            rhs: Arith::Const(k),
        } => {
            let eval = |v: u32| match op {
                Jop::Eq => v == *k,
                Jop::Gt => v > *k,
                Jop::Ge => v >= *k,
                Jop::Set => v & *k != 0,
            };
            let [a, b] = STRIPPED_TPIDS.map(eval);
            if a == b { Cond::Const(a) } else { c.clone() }
        }
        Cond::Test {
            lhs: Arith::Len,
            op: op @ (Jop::Eq | Jop::Gt | Jop::Ge),
            rhs: Arith::Const(k),
        } => match k.checked_sub(4) {
            Some(k) => Cond::Test {
                lhs: Arith::BufferLen,
                op: *op,
                rhs: Arith::Const(k),
            },
            // len + 4 is at least 4: never equal to k, always above it.
            None => Cond::Const(*op != Jop::Eq),
        },
        other => other.clone(),
    }
}

/// The two programs for a condition: (frame, kernel).
pub(crate) fn programs(c: &Cond) -> Result<(BpfProgram, BpfProgram), GenError> {
    match c {
        Cond::Const(true) => return Ok((BpfProgram::accept_all(), BpfProgram::accept_all())),
        Cond::Const(false) => return Ok((BpfProgram::reject_all(), BpfProgram::reject_all())),
        _ => {}
    }
    let frame = generate(c, Variant::Frame)?;
    if frame.len() > MAX_INSNS {
        return Err(GenError::TooLong(frame.len()));
    }
    let tagged = generate(&fold_tagged(c), Variant::Tagged)?;
    let kernel = if tagged == frame {
        frame.clone()
    } else {
        // ld vlan_present; jeq #1 → tagged; else → frame.
        let mut k = vec![
            insn(LD_W_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT),
            BpfInsn::new(JEQ_K, 1, 0, 1),
            insn(JA, tagged.len() as u32),
        ];
        k.extend_from_slice(&tagged);
        k.extend_from_slice(&frame);
        k
    };
    if kernel.len() > MAX_INSNS {
        return Err(GenError::TooLong(kernel.len()));
    }
    let frame = BpfProgram::new(frame).map_err(|_| GenError::TooLong(0))?;
    let kernel = BpfProgram::new(kernel).map_err(|_| GenError::TooLong(0))?;
    Ok((frame, kernel))
}
