//! Classic BPF programs (the kind `tcpdump -dd` prints), attached to packet sockets in the kernel.

mod interp;

pub use interp::FrameInfo;

use crate::error::{Error, Result};

/// Largest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// One classic BPF instruction (`struct sock_filter`).
///
/// ```
/// use netring::{BpfInsn, BpfProgram};
/// // ldh [12]; jeq #0x800 ? accept : reject
/// let ipv4_only = BpfProgram::new(vec![
///     BpfInsn::new(0x28, 0, 0, 12),
///     BpfInsn::new(0x15, 0, 1, 0x0800),
///     BpfInsn::new(0x06, 0, 0, 0x40000),
///     BpfInsn::new(0x06, 0, 0, 0),
/// ])?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Generic field (constant, offset).
    pub k: u32,
}

impl BpfInsn {
    /// Builds an instruction.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Self {
        Self { code, jt, jf, k }
    }
}

const BPF_CLASS_MASK: u16 = 0x07;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_JA: u16 = 0x00;
const BPF_OP_MASK: u16 = 0xf0;

/// A validated classic BPF program.
///
/// ```
/// use netring::BpfProgram;
/// // Output of `tcpdump -dd 'udp port 9999'` can be pasted as it is.
/// let prog = BpfProgram::from_tcpdump_dd("{ 0x6, 0, 0, 0x00040000 },")?;
/// assert_eq!(prog.len(), 1);
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram {
    insns: Vec<BpfInsn>,
}

impl BpfProgram {
    /// Checks and wraps a program: 1 to 4096 instructions, every jump inside the program, and the
    /// last instruction a return.
    pub fn new(insns: Vec<BpfInsn>) -> Result<Self> {
        if insns.is_empty() || insns.len() > MAX_INSNS {
            return Err(Error::InvalidFilter(format!(
                "a program has 1 to {MAX_INSNS} instructions, this one has {}",
                insns.len()
            )));
        }
        let n = insns.len();
        for (pc, insn) in insns.iter().enumerate() {
            if insn.code & BPF_CLASS_MASK == BPF_JMP {
                let targets: &[usize] = if insn.code & BPF_OP_MASK == BPF_JA {
                    &[insn.k as usize]
                } else {
                    &[insn.jt as usize, insn.jf as usize]
                };
                for &off in targets {
                    if pc + 1 + off >= n {
                        return Err(Error::InvalidFilter(format!(
                            "instruction {pc} jumps past the end of the program"
                        )));
                    }
                }
            }
        }
        if insns[n - 1].code & BPF_CLASS_MASK != BPF_RET {
            return Err(Error::InvalidFilter(
                "the last instruction must be a return".into(),
            ));
        }
        Ok(Self { insns })
    }

    /// A program that accepts every packet whole.
    pub fn accept_all() -> Self {
        Self {
            insns: vec![BpfInsn::new(BPF_RET, 0, 0, u32::MAX)],
        }
    }

    /// A program that rejects every packet.
    pub fn reject_all() -> Self {
        Self {
            insns: vec![BpfInsn::new(BPF_RET, 0, 0, 0)],
        }
    }

    /// Parses the C-array form printed by `tcpdump -dd EXPR`: one `{ code, jt, jf, k },` per line.
    /// Numbers may be decimal or `0x` hexadecimal.
    pub fn from_tcpdump_dd(text: &str) -> Result<Self> {
        let mut insns = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = || {
                Error::InvalidFilter(format!(
                    "line {}: expected `{{ code, jt, jf, k }},`, found `{line}`",
                    lineno + 1
                ))
            };
            let inner = line
                .trim_end_matches(',')
                .trim()
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .ok_or_else(bad)?;
            let fields: Vec<&str> = inner.split(',').map(str::trim).collect();
            if fields.len() != 4 {
                return Err(bad());
            }
            let num = |s: &str| -> Option<u64> {
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => s.parse().ok(),
                }
            };
            let code = num(fields[0])
                .and_then(|v| u16::try_from(v).ok())
                .ok_or_else(bad)?;
            let jt = num(fields[1])
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(bad)?;
            let jf = num(fields[2])
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(bad)?;
            let k = num(fields[3])
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(bad)?;
            insns.push(BpfInsn::new(code, jt, jf, k));
        }
        Self::new(insns)
    }

    /// The instructions.
    pub fn instructions(&self) -> &[BpfInsn] {
        &self.insns
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false: a program has at least one instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The program in the kernel's `struct sock_filter` layout.
    pub(crate) fn to_sock_filters(&self) -> Vec<libc::sock_filter> {
        self.insns
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `tcpdump -dd -y EN10MB 'udp port 9999'` (tcpdump 4.99.3, libpcap 1.10.3).
    const UDP_9999: &str = "\
{ 0x28, 0, 0, 0x0000000c },
{ 0x15, 0, 6, 0x000086dd },
{ 0x30, 0, 0, 0x00000014 },
{ 0x15, 0, 15, 0x00000011 },
{ 0x28, 0, 0, 0x00000036 },
{ 0x15, 12, 0, 0x0000270f },
{ 0x28, 0, 0, 0x00000038 },
{ 0x15, 10, 11, 0x0000270f },
{ 0x15, 0, 10, 0x00000800 },
{ 0x30, 0, 0, 0x00000017 },
{ 0x15, 0, 8, 0x00000011 },
{ 0x28, 0, 0, 0x00000014 },
{ 0x45, 6, 0, 0x00001fff },
{ 0xb1, 0, 0, 0x0000000e },
{ 0x48, 0, 0, 0x0000000e },
{ 0x15, 2, 0, 0x0000270f },
{ 0x48, 0, 0, 0x00000010 },
{ 0x15, 0, 1, 0x0000270f },
{ 0x6, 0, 0, 0x00040000 },
{ 0x6, 0, 0, 0x00000000 },
";

    #[test]
    fn parses_tcpdump_dd() {
        let p = BpfProgram::from_tcpdump_dd(UDP_9999).unwrap();
        assert_eq!(p.len(), 20);
        assert_eq!(p.instructions()[0], BpfInsn::new(0x28, 0, 0, 12));
        assert_eq!(p.instructions()[18], BpfInsn::new(6, 0, 0, 0x40000));
        assert_eq!(p.instructions()[19], BpfInsn::new(6, 0, 0, 0));
    }

    #[test]
    fn rejects_garbage_and_bad_jumps() {
        assert!(matches!(
            BpfProgram::from_tcpdump_dd("{ 0x28, 0, 0 },"),
            Err(Error::InvalidFilter(_))
        ));
        assert!(matches!(
            BpfProgram::from_tcpdump_dd("hello"),
            Err(Error::InvalidFilter(_))
        ));
        assert!(matches!(
            BpfProgram::new(vec![]),
            Err(Error::InvalidFilter(_))
        ));
        // Conditional jump past the end.
        let jump = vec![BpfInsn::new(0x15, 5, 0, 1), BpfInsn::new(6, 0, 0, 0)];
        assert!(matches!(
            BpfProgram::new(jump),
            Err(Error::InvalidFilter(_))
        ));
        // Does not end in a return.
        let noret = vec![BpfInsn::new(0x28, 0, 0, 12)];
        assert!(matches!(
            BpfProgram::new(noret),
            Err(Error::InvalidFilter(_))
        ));
    }
}
