//! Classic BPF filters from `tcpdump -dd`: attached to a capture, exactly the frames the
//! expression matches arrive, byte for byte.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use netring::{BpfProgram, Capture};

fn tcpdump_dd(expr: &str) -> String {
    let out = run(Command::new("tcpdump").args(["-dd", "-y", "EN10MB", expr]));
    String::from_utf8(out.stdout).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One frame scapy sent: whether `udp port 9999` should match it (decided from how it was built,
/// not by any filter), a label, and its bytes.
struct Sent {
    matches: bool,
    label: String,
    bytes: Vec<u8>,
}

/// Builds the mix with scapy, sends it from `dev`, and returns what was sent, in order.
fn scapy_send_mix(net: &TestNet, dev: &str, dst_mac: [u8; 6]) -> Vec<Sent> {
    let mac = dst_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let script = format!(
        r#"
from scapy.all import Ether, IP, IPv6, UDP, TCP, ICMP, ARP, Raw, IPOption, sendp
E = lambda: Ether(src="02:00:00:00:00:01", dst="{mac}")
B = "ff:ff:ff:ff:ff:ff"
v4 = lambda: IP(src="10.3.0.1", dst="10.3.0.2")
v6 = lambda: IPv6(src="fd00::1", dst="fd00::2")
mix = []
for i in range(3):
    tag = lambda s: Raw(("%s-%d" % (s, i)).encode() * 3)
    mix += [
        (1, "udp dport 9999",   E() / v4() / UDP(sport=1234, dport=9999) / tag("a")),
        (1, "udp sport 9999",   E() / v4() / UDP(sport=9999, dport=1234) / tag("b")),
        (0, "udp other ports",  E() / v4() / UDP(sport=1234, dport=5678) / tag("c")),
        (0, "udp 9998->10000",  E() / v4() / UDP(sport=9998, dport=10000) / tag("d")),
        (0, "tcp dport 9999",   E() / v4() / TCP(sport=1234, dport=9999, flags="S") / tag("e")),
        (0, "tcp sport 9999",   E() / v4() / TCP(sport=9999, dport=80, flags="SA") / tag("f")),
        (0, "icmp",             E() / v4() / ICMP() / tag("g")),
        (0, "arp request",      Ether(src="02:00:00:00:00:01", dst=B) / ARP(op=1, psrc="10.3.0.1", pdst="10.3.0.%d" % (10 + i))),
        (1, "udp dport 9999, ip options", E() / IP(src="10.3.0.1", dst="10.3.0.2", options=[IPOption(b"\x01\x01\x01\x00")]) / UDP(sport=1, dport=9999) / tag("h")),
        (0, "udp 9999 non-first fragment", E() / IP(src="10.3.0.1", dst="10.3.0.2", proto=17, frag=100) / Raw(b"\x27\x0f\x27\x0f" + b"\x00" * 20) / tag("i")),
        (1, "ipv6 udp dport 9999", E() / v6() / UDP(sport=4321, dport=9999) / tag("j")),
        (0, "ipv6 tcp dport 9999", E() / v6() / TCP(sport=4321, dport=9999) / tag("k")),
        (0, "ipv6 udp other",   E() / v6() / UDP(sport=4321, dport=53) / tag("l")),
    ]
raws = [bytes(p) for (_, _, p) in mix]
for (m, label, _), raw in zip(mix, raws):
    print("%d|%s|%s" % (m, label, raw.hex()))
sendp([Raw(r) for r in raws], iface="{dev}", verbose=0)
"#
    );
    let out = run(net.cmd(SCAPY_PYTHON).args(["-c", &script]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '|');
            let matches = f.next().unwrap() == "1";
            let label = f.next().unwrap().to_owned();
            let bytes = unhex(f.next().unwrap());
            Sent {
                matches,
                label,
                bytes,
            }
        })
        .collect()
}

/// Reads until `want` frames arrived (or 10 s passed), then a little longer to catch strays.
fn collect(cap: &mut Capture, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < deadline {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(100))).unwrap() {
            got.extend(b.iter().map(|p| p.data().to_vec()));
        }
    }
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(50))).unwrap() {
            got.extend(b.iter().map(|p| p.data().to_vec()));
        }
    }
    got
}

#[test]
fn tcpdump_program_passes_exactly_the_matching_frames() {
    if !can_run(
        "tcpdump_program_passes_exactly_the_matching_frames",
        &["tcpdump", "scapy"],
    ) {
        return;
    }
    let text = tcpdump_dd("udp port 9999");
    let prog = BpfProgram::from_tcpdump_dd(&text).unwrap();
    assert_eq!(prog.len(), text.lines().filter(|l| !l.is_empty()).count());

    let net = TestNet::new();
    let mut filtered = net
        .within(|| Capture::builder(&net.b).filter(prog.clone()).open())
        .unwrap();
    // Everything that reaches the interface, to show the rejected frames did arrive.
    let mut witness = net.within(|| Capture::open(&net.b)).unwrap();

    let sent = scapy_send_mix(&net, &net.a, net.mac(&net.b));
    assert_eq!(sent.len(), 39);
    let expected: Vec<&Sent> = sent.iter().filter(|s| s.matches).collect();
    assert_eq!(expected.len(), 12);

    let all = collect(&mut witness, sent.len());
    let sent_bytes: Vec<&[u8]> = sent.iter().map(|s| s.bytes.as_slice()).collect();
    let all_bytes: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
    assert_eq!(
        all_bytes, sent_bytes,
        "the unfiltered capture must see every frame sent"
    );

    let got = collect(&mut filtered, expected.len());
    for g in &got {
        let what = sent
            .iter()
            .find(|s| &s.bytes == g)
            .map_or("<not sent by the test>", |s| s.label.as_str());
        assert!(
            expected.iter().any(|e| &e.bytes == g),
            "the filter let through a frame it should reject: {what}"
        );
    }
    for e in &expected {
        assert!(
            got.contains(&e.bytes),
            "the filter rejected a frame it should pass: {}",
            e.label
        );
    }
    let expected_bytes: Vec<&[u8]> = expected.iter().map(|s| s.bytes.as_slice()).collect();
    let got_bytes: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
    assert_eq!(
        got_bytes, expected_bytes,
        "exactly the matching frames, in order"
    );

    let s = filtered.cumulative_stats().unwrap();
    assert_eq!(s.packets, expected.len() as u64, "{s:?}");
    assert_eq!(s.drops, 0);
}

#[test]
fn accept_and_reject_all_programs() {
    if !can_run("accept_and_reject_all_programs", &["tcpdump", "scapy"]) {
        return;
    }
    let net = TestNet::new();
    let mut none = net
        .within(|| {
            Capture::builder(&net.b)
                .filter(BpfProgram::reject_all())
                .open()
        })
        .unwrap();
    let mut every = net
        .within(|| {
            Capture::builder(&net.b)
                .filter(BpfProgram::accept_all())
                .open()
        })
        .unwrap();
    // tcpdump's own form of "accept everything", `tcpdump -dd ''`.
    let mut tcpdump_all = net
        .within(|| {
            Capture::builder(&net.b)
                .filter(BpfProgram::from_tcpdump_dd(&tcpdump_dd("")).unwrap())
                .open()
        })
        .unwrap();
    let sent = scapy_send_mix(&net, &net.a, net.mac(&net.b));
    let sent_bytes: Vec<Vec<u8>> = sent.into_iter().map(|s| s.bytes).collect();
    assert_eq!(collect(&mut every, sent_bytes.len()), sent_bytes);
    assert_eq!(collect(&mut tcpdump_all, sent_bytes.len()), sent_bytes);
    assert!(collect(&mut none, 0).is_empty());
    assert_eq!(none.cumulative_stats().unwrap().packets, 0);
}
