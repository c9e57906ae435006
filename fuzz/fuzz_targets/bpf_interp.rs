//! `BpfProgram::run` on arbitrary programs and packets: no panic for any program `new` accepts,
//! `matches` agrees with `run`, and a second run gives the same answer (no state leaks between
//! runs).
//!
//! Input layout: byte 0 = instruction count - 1 (mod 64), byte 1 = flags (bit 0: keep jumps as
//! they are instead of folding them into range, bit 1: keep the last opcode), then 8 bytes per
//! instruction (code u16 LE, jt, jf, k u32 LE), then 12 bytes of `FrameInfo`, then the packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netring::{BpfInsn, BpfProgram, FrameInfo, VlanTag};

fuzz_target!(|input: &[u8]| {
    let [count, flags, rest @ ..] = input else {
        return;
    };
    let n = usize::from(count % 64) + 1;
    if rest.len() < n * 8 + 12 {
        return;
    }
    let (code_bytes, rest) = rest.split_at(n * 8);
    let (info_bytes, packet) = rest.split_at(12);
    let mut insns: Vec<BpfInsn> = code_bytes
        .chunks_exact(8)
        .map(|c| {
            BpfInsn::new(
                u16::from_le_bytes([c[0], c[1]]),
                c[2],
                c[3],
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    if flags & 1 == 0 {
        // Fold jump offsets into the program so most inputs get past validation.
        for (pc, i) in insns.iter_mut().enumerate() {
            let room = (n - pc - 1).max(1);
            i.jt %= u8::try_from(room.min(255)).unwrap_or(255);
            i.jf %= u8::try_from(room.min(255)).unwrap_or(255);
            if i.code & 0x07 == 0x05 && i.code & 0xf0 == 0 {
                i.k %= room as u32;
            }
        }
    }
    if flags & 2 == 0 {
        let last = &mut insns[n - 1];
        last.code = if last.code & 0x10 != 0 { 0x16 } else { 0x06 };
    }
    let Ok(prog) = BpfProgram::new(insns) else {
        return;
    };
    let b = info_bytes;
    let info = FrameInfo {
        wire_len: u32::from(u16::from_le_bytes([b[0], b[1]])),
        vlan: (b[2] & 1 == 1).then(|| VlanTag {
            tpid: u16::from_le_bytes([b[3], b[4]]),
            tci: u16::from_le_bytes([b[5], b[6]]),
        }),
        protocol: u16::from_le_bytes([b[7], b[8]]),
        pkt_type: b[9],
        ifindex: u32::from(b[10]),
        rx_hash: u32::from(b[11]),
    };
    let verdict = prog.run(packet, &info);
    assert_eq!(prog.matches(packet, &info), verdict != 0);
    assert_eq!(prog.run(packet, &info), verdict);
    // The kernel-rule check never panics either.
    let _ = prog.check_like_kernel();
    let _ = FrameInfo::of(packet);
});
