//! `BpfProgram::from_tcpdump_dd` over arbitrary UTF-8: no panic, and every program it accepts is
//! one the validator accepts, and prints back to text that parses to the same program.

#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use netring::BpfProgram;

fuzz_target!(|text: &str| {
    let Ok(prog) = BpfProgram::from_tcpdump_dd(text) else {
        return;
    };
    let insns = prog.instructions();
    assert!(!insns.is_empty() && insns.len() <= 4096);
    assert_eq!(prog.len(), insns.len());
    assert!(!prog.is_empty());
    // Last instruction is a return (class BPF_RET).
    assert_eq!(insns[insns.len() - 1].code & 0x07, 0x06);
    // Every jump lands inside the program.
    for (pc, i) in insns.iter().enumerate() {
        if i.code & 0x07 == 0x05 {
            let targets = if i.code & 0xf0 == 0 {
                vec![i.k as usize]
            } else {
                vec![i.jt as usize, i.jf as usize]
            };
            for t in targets {
                assert!(pc + 1 + t < insns.len(), "insn {pc} jumps out: {i:?}");
            }
        }
    }
    assert_eq!(BpfProgram::new(insns.to_vec()).ok().as_ref(), Some(&prog));

    // Printed as `tcpdump -dd` prints, it parses back to the same program.
    let mut dd = String::new();
    for i in insns {
        writeln!(
            dd,
            "{{ {:#x}, {}, {}, {:#010x} }},",
            i.code, i.jt, i.jf, i.k
        )
        .unwrap();
    }
    assert_eq!(BpfProgram::from_tcpdump_dd(&dd).ok().as_ref(), Some(&prog));
});
