//! `Filter::new` over arbitrary text: no panic; every filter it accepts compiles to valid
//! programs of at most 4096 instructions that run without panicking, and the kernel program
//! (outer tag in metadata) agrees with the frame program (tag inline) on tagged frames.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netring::filter::Filter;
use netring::{BpfProgram, FrameInfo, VlanTag};

/// A few frames that reach deep into the headers: 802.1Q/802.1ad-tagged IPv4/TCP, IPv6/UDP,
/// double-tagged, ARP, and short ones.
fn frames() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mac = [2u8, 0x4e, 0x52, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let ipv4_tcp: Vec<u8> = [
        &[0x08, 0x00][..],
        &[
            0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ],
        &[
            0, 80, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0, 0, 0, 0, 0,
        ],
    ]
    .concat();
    let ipv6_udp: Vec<u8> = [
        &[0x86, 0xdd][..],
        &[0x60, 0, 0, 0, 0, 8, 17, 64],
        &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        &[0, 53, 0, 53, 0, 8, 0, 0],
    ]
    .concat();
    let arp: Vec<u8> = [
        &[0x08, 0x06][..],
        &[0, 1, 8, 0, 6, 4, 0, 1, 2, 0x4e, 0x52, 0, 0, 1, 10, 0, 0, 1],
        &[0, 0, 0, 0, 0, 0, 10, 0, 0, 2],
    ]
    .concat();
    for (tpid, tci) in [(0x8100u16, 100u16), (0x88a8, 0x2005), (0x8100, 0x0fff)] {
        for payload in [&ipv4_tcp, &ipv6_udp, &arp] {
            let mut f = mac.to_vec();
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
            f.extend_from_slice(payload);
            v.push(f.clone());
            // Double-tagged, and cut short.
            let mut d = f[..16].to_vec();
            d.extend_from_slice(&[0x81, 0x00, 0x00, 200]);
            d.extend_from_slice(&f[16..]);
            v.push(d);
            v.push(f[..f.len().min(17 + tci as usize % 20)].to_vec());
        }
    }
    v
}

fn stripped(frame: &[u8]) -> (Vec<u8>, FrameInfo) {
    let tag = VlanTag {
        tpid: u16::from_be_bytes([frame[12], frame[13]]),
        tci: u16::from_be_bytes([frame[14], frame[15]]),
    };
    let mut data = frame[..12].to_vec();
    data.extend_from_slice(&frame[16..]);
    let info = FrameInfo {
        wire_len: data.len() as u32,
        vlan: Some(tag),
        ..FrameInfo::default()
    };
    (data, info)
}

fuzz_target!(|text: &str| {
    let Ok(f) = Filter::new(text) else {
        return;
    };
    for prog in [f.frame_program(), f.kernel_program()] {
        assert!(prog.len() <= 4096);
        assert_eq!(
            BpfProgram::new(prog.instructions().to_vec()).ok().as_ref(),
            Some(prog)
        );
    }
    for frame in frames() {
        let whole = FrameInfo {
            wire_len: frame.len() as u32,
            ..FrameInfo::default()
        };
        let verdict = f.frame_program().run(&frame, &whole);
        assert_eq!(f.matches(&frame), verdict != 0);
        // Untagged metadata: the kernel program is the frame program.
        assert_eq!(f.kernel_program().run(&frame, &whole), verdict);
        let (data, info) = stripped(&frame);
        assert_eq!(
            f.kernel_program().run(&data, &info),
            verdict,
            "{text:?}: kernel program disagrees on {frame:02x?}"
        );
    }
});
