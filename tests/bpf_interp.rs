//! The classic BPF interpreter (`BpfProgram::run`) against the two references it imitates:
//! libpcap's verdicts on a scapy-made pcap for tcpdump expressions, and the kernel's verdicts on
//! live traffic for hand-written programs using ancillary loads. Plus one unit test per opcode
//! class and edge case.

mod common;
use common::alloc::{Counting, allocations};
use common::frames::{SRC_MAC, is_ours};
use common::*;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use netring::pcap::{PcapReader, PcapRecord};
use netring::{BpfInsn, BpfProgram, Capture, FrameInfo, PacketType, VlanTag};

// --- Differential: libpcap ---------------------------------------------------------------------

/// Writes N frames to a pcap (microsecond, Ethernet; record i has timestamp 1000 + i s): IPv4
/// (options, fragments, TTLs, ICMP, GRE/ESP/OSPF), IPv6 (ICMPv6, ND, hop-by-hop and fragment
/// headers), TCP/UDP on common and random ports, ARP/RARP, 802.1Q and 802.1ad+802.1Q tags, 802.3
/// LLC/raw, odd ethertypes, random garbage, broadcast/multicast MACs; one in ten is truncated
/// (caplen < wire length, down to 0 bytes).
const SCAPY_MIX: &str = r#"
import random, struct, sys
from scapy.all import (Ether, Dot1Q, Dot1AD, Dot3, LLC, IP, IPv6, UDP, TCP, ICMP, ARP, Raw, IPOption,
    ICMPv6EchoRequest, ICMPv6ND_NS, IPv6ExtHdrHopByHop, IPv6ExtHdrFragment)
out, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
macs = ["02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:05", "33:33:00:00:00:01"]
v4 = ["10.0.0.1", "10.0.0.2", "192.168.1.2", "224.0.0.5", "8.8.8.8", "10.1.2.3", "255.255.255.255"]
v6 = ["fd00::1", "fd00::2", "ff02::1", "2001:db8::5"]
ports = [22, 53, 80, 443, 1000, 1500, 2000, 9999, 40000]
def port(): return rng.choice(ports) if rng.random() < 0.7 else rng.randint(0, 65535)
def pay(): return Raw(rng.randbytes(rng.choice([0, 1, 7, 20, 64, 200, 600, 1200])))
def l4():
    c = rng.random()
    if c < 0.45: return UDP(sport=port(), dport=port())
    return TCP(sport=port(), dport=port(), flags=rng.choice(["S", "SA", "A", "PA", "F", "R", "FA", "SU"]),
               options=rng.choice([[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)]]))
def ip4():
    kw = dict(src=rng.choice(v4), dst=rng.choice(v4), ttl=rng.choice([0, 1, 63, 64, 128, 255]),
              tos=rng.randint(0, 255), id=rng.randint(0, 65535))
    if rng.random() < 0.15: kw["options"] = [IPOption(b"\x01\x01\x01\x00")]
    if rng.random() < 0.2: kw["frag"] = rng.choice([0, 1, 100, 0x1fff]); kw["flags"] = rng.choice([0, 1, 2])
    c = rng.random()
    if c < 0.15: return IP(**kw) / ICMP(type=rng.choice([0, 3, 8, 11])) / pay()
    if c < 0.22: return IP(proto=rng.choice([47, 50, 89]), **kw) / pay()
    return IP(**kw) / l4() / pay()
def ip6():
    p = IPv6(src=rng.choice(v6), dst=rng.choice(v6), hlim=rng.choice([1, 64, 255]))
    c = rng.random()
    if c < 0.15: return p / ICMPv6EchoRequest() / pay()
    if c < 0.25: return p / ICMPv6ND_NS(tgt="fd00::2")
    if c < 0.35: return p / IPv6ExtHdrHopByHop() / UDP(sport=port(), dport=port()) / pay()
    if c < 0.4: return p / IPv6ExtHdrFragment(offset=rng.choice([0, 5]), m=1) / UDP(sport=port(), dport=port()) / pay()
    return p / l4() / pay()
frames = []
for i in range(n):
    src = rng.choice(macs[:2]) if rng.random() < 0.9 else rng.choice(macs)
    e = Ether(src=src, dst=rng.choice(macs))
    c = rng.random()
    if c < 0.4: l3 = ip4()
    elif c < 0.65: l3 = ip6()
    elif c < 0.75: l3 = ARP(op=rng.choice([1, 2]), psrc=rng.choice(v4), pdst=rng.choice(v4))
    else: l3 = None
    if l3 is None:
        k = rng.random()
        if k < 0.25: f = Dot3(src=src, dst=rng.choice(macs)) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / pay()
        elif k < 0.35: f = Dot3(src=src, dst=rng.choice(macs)) / Raw(b"\xff\xff" + rng.randbytes(40))
        elif k < 0.55: f = Ether(src=src, dst=rng.choice(macs), type=0x8035) / ARP(op=3)
        elif k < 0.8: f = Ether(src=src, dst=rng.choice(macs), type=rng.choice([0x88b5, 0x88cc, 0x0800, 0x86dd, 0x8100])) / pay()
        else: f = Raw(rng.randbytes(rng.randint(1, 80)))
    elif c < 0.2 or rng.random() < 0.15:
        f = e / Dot1Q(vlan=rng.choice([1, 100, 200, 4094]), prio=rng.randint(0, 7)) / l3
    elif rng.random() < 0.08:
        f = e / Dot1AD(vlan=rng.choice([100, 300])) / Dot1Q(vlan=rng.choice([100, 200])) / l3
    else:
        f = e / l3
    raw = bytes(f)
    wire = len(raw)
    if rng.random() < 0.1: raw = raw[:rng.randint(0, len(raw))]
    frames.append((raw, wire))
with open(out, "wb") as fh:
    fh.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i, (raw, wire) in enumerate(frames):
        fh.write(struct.pack("<IIII", 1000 + i, 0, len(raw), wire))
        fh.write(raw)
"#;

/// tcpdump expressions covering every opcode libpcap emits: absolute/indirect/MSH loads, `len`,
/// arithmetic with constants and registers (including division and modulo by a register that
/// can be 0), shifts, negation, scratch memory, and every jump.
const EXPRESSIONS: &[&str] = &[
    "ip",
    "ip6",
    "arp",
    "rarp",
    "vlan",
    "vlan 100",
    "vlan and ip",
    "vlan and vlan 200",
    "vlan and udp port 53",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "tcp port 80",
    "udp port 53",
    "port 9999",
    "portrange 1000-2000",
    "tcp dst portrange 1-1023",
    "host 10.0.0.1",
    "src net 10.0.0.0/8",
    "dst host 192.168.1.2",
    "ip6 host fd00::1",
    "ip6 dst net ff02::/16",
    "ether src 02:00:00:00:00:01",
    "ether broadcast",
    "ether multicast",
    "ip multicast",
    "ip6 multicast",
    "less 100",
    "greater 500",
    "len > 200 and len < 700",
    "ip[8] < 64",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "ip[6:2] & 0x1fff != 0",
    "ip[6] & 0x20 != 0",
    "icmp[icmptype] == icmp-echo",
    "ip proto 47 or ip proto 89",
    "ip6 and tcp port 22",
    "ip6[6] = 17",
    "icmp6 and ip6[40] = 135",
    "ether proto 0x88cc or ether[12:2] = 0x88b5",
    "not ip and not ip6",
    "ip and not tcp",
    "ip[0] & 0xf > 5",
    "tcp[13] = 18",
    "udp[0:2] * 3 > 1000",
    "(tcp[0:2] + tcp[2:2]) % 7 = 3",
    "ip[1] ^ 0xff = 0xff",
    "udp[4:2] - 8 > 20",
    "(ip[2:2] >> 2) & 1 = 1",
    "ip[9] << 1 = 34",
    "tcp[0:2] & tcp[2:2] != 0",
    "(ip[0] << (ip[1] & 7)) > 100",
    "(ip[2:2] >> (ip[1] & 15)) > 3",
    "ip and (ip[2:2] / (ip[8] & 3)) > 5",
    "ip and (ip[2:2] % (ip[1] & 3)) = 0",
    "ip and -ip[8] > 0xffffff00",
    "tcp and (ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) != 0",
    "udp port 9999 or tcp port 80 or arp",
    "not (udp or tcp)",
    "llc",
    "ether[0] & 1 = 0 and ip[16] = 224",
];

fn tcpdump_dd_for_file(file: &str, expr: &str) -> BpfProgram {
    let out = run(Command::new("tcpdump").args(["-r", file, "-dd", expr]));
    let text = String::from_utf8(out.stdout).unwrap();
    BpfProgram::from_tcpdump_dd(&text).unwrap_or_else(|e| panic!("`{expr}`: {e}\n{text}"))
}

/// Indices of the records libpcap's own filter passes (record i has timestamp 1000 + i).
fn libpcap_verdicts(file: &str, expr: &str, n: usize) -> Vec<bool> {
    let mut cap = pcap::Capture::from_file(file).unwrap();
    cap.filter(expr, true).unwrap();
    let mut v = vec![false; n];
    loop {
        match cap.next_packet() {
            Ok(p) => v[p.header.ts.tv_sec as usize - 1000] = true,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => panic!("libpcap reading {file}: {e}"),
        }
    }
    v
}

#[test]
fn same_verdicts_as_libpcap_on_scapy_frames() {
    if !can_run(
        "same_verdicts_as_libpcap_on_scapy_frames",
        &["tcpdump", "scapy"],
    ) {
        return;
    }
    const N: usize = 1500;
    let file = scratch("bpf-interp-mix.pcap");
    run(scapy_script(SCAPY_MIX)
        .arg(&file)
        .args([N.to_string(), "7".into()]));
    let mut reader = PcapReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let mut records: Vec<PcapRecord> = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        records.push(r);
    }
    assert_eq!(records.len(), N);
    let truncated = records
        .iter()
        .filter(|r| (r.wire_len as usize) > r.data.len())
        .count();
    assert!(truncated > 50, "only {truncated} truncated frames");

    let mut mismatches = Vec::new();
    for expr in EXPRESSIONS {
        let prog = tcpdump_dd_for_file(&file, expr);
        let want = libpcap_verdicts(&file, expr, N);
        let accepts: Vec<u32> = prog
            .instructions()
            .iter()
            .filter(|i| i.code == 0x06 && i.k != 0)
            .map(|i| i.k)
            .collect();
        let mut passed = 0;
        for (i, r) in records.iter().enumerate() {
            let got = prog.run(&r.data, &FrameInfo::of(r));
            if got != 0 {
                passed += 1;
                // tcpdump's programs accept with the snap length, a `ret #k`.
                assert!(accepts.contains(&got), "`{expr}` record {i} returned {got}");
            }
            if (got != 0) != want[i] {
                mismatches.push(format!(
                    "`{expr}` record {i} ({} of {} bytes): interpreter {got}, libpcap {}",
                    r.data.len(),
                    r.wire_len,
                    want[i]
                ));
            }
        }
        eprintln!("{passed:5} of {N} pass `{expr}`");
        assert!(passed > 0, "`{expr}` passes nothing: a useless expression");
        assert!(
            passed < N,
            "`{expr}` passes everything: a useless expression"
        );
        // Every tcpdump program passes the kernel's checks.
        prog.check_like_kernel()
            .unwrap_or_else(|e| panic!("`{expr}`: {e}"));
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
    std::fs::remove_file(&file).unwrap();
}

// --- Differential: the kernel ------------------------------------------------------------------

const AD: u32 = 0xffff_f000; // SKF_AD_OFF
const NET: u32 = 0xfff0_0000; // SKF_NET_OFF
const LL: u32 = 0xffe0_0000; // SKF_LL_OFF

fn prog(insns: &[(u16, u8, u8, u32)]) -> BpfProgram {
    BpfProgram::new(
        insns
            .iter()
            .map(|&(c, jt, jf, k)| BpfInsn::new(c, jt, jf, k))
            .collect(),
    )
    .unwrap()
}

/// `ld <load>; jeq #value, accept, drop`.
fn ld_eq(load: u16, k: u32, value: u32) -> BpfProgram {
    prog(&[
        (load, 0, 0, k),
        (0x15, 0, 1, value),
        (0x06, 0, 0, 0xffff),
        (0x06, 0, 0, 0),
    ])
}

/// Hand-written programs reading what only the kernel knows, each with a name.
fn kernel_programs(ifindex: u32) -> Vec<(&'static str, BpfProgram)> {
    vec![
        ("vlan tag present", ld_eq(0x20, AD + 48, 1)),
        ("vlan tag absent", ld_eq(0x30, AD + 48, 0)),
        (
            "vlan id 100",
            prog(&[
                (0x28, 0, 0, AD + 44),
                (0x54, 0, 0, 0xfff),
                (0x15, 0, 1, 100),
                (0x06, 0, 0, 0xffff),
                (0x06, 0, 0, 0),
            ]),
        ),
        (
            "priority >= 4",
            prog(&[
                (0x20, 0, 0, AD + 44),
                (0x74, 0, 0, 13),
                (0x35, 0, 1, 4),
                (0x06, 0, 0, 0xffff),
                (0x06, 0, 0, 0),
            ]),
        ),
        ("tpid 802.1ad", ld_eq(0x20, AD + 60, 0x88a8)),
        ("tpid 802.1Q", ld_eq(0x28, AD + 60, 0x8100)),
        ("protocol IPv4", ld_eq(0x20, AD, 0x0800)),
        ("protocol 802.1Q (inner tag)", ld_eq(0x20, AD, 0x8100)),
        ("protocol 802.2", ld_eq(0x20, AD, 0x0004)),
        ("pkttype broadcast", ld_eq(0x30, AD + 4, 1)),
        ("pkttype otherhost", ld_eq(0x30, AD + 4, 3)),
        ("ifindex", ld_eq(0x20, AD + 8, ifindex)),
        (
            // A = tci; X = 0x2064; A ^= X (SKF_AD_ALU_XOR_X); accept when 0: tci == 0x2064.
            "tci xor",
            prog(&[
                (0x20, 0, 0, AD + 44),
                (0x01, 0, 0, 0x2064),
                (0x20, 0, 0, AD + 40),
                (0x15, 0, 1, 0),
                (0x06, 0, 0, 0xffff),
                (0x06, 0, 0, 0),
            ]),
        ),
        (
            // Accept vid + 60 bytes: the return value is the snap length.
            "snap = vid + 60",
            prog(&[
                (0x28, 0, 0, AD + 44),
                (0x54, 0, 0, 0xfff),
                (0x04, 0, 0, 60),
                (0x16, 0, 0, 0),
            ]),
        ),
        ("net header: udp", ld_eq(0x30, NET + 9, 17)),
        (
            "link header: ethertype inline tag",
            ld_eq(0x28, LL + 12, 0x8100),
        ),
        (
            "ldx msh at net offset",
            prog(&[
                (0xb1, 0, 0, NET),
                (0x87, 0, 0, 0),
                (0x15, 0, 1, 20),
                (0x06, 0, 0, 0xffff),
                (0x06, 0, 0, 0),
            ]),
        ),
        // Past the frame: the kernel drops.
        ("load far past the end", ld_eq(0x20, 5000, 0)),
    ]
}

/// Frames for the kernel test, each unique in its first 60 bytes as the socket sees them (IP id,
/// IPv6 source, ARP target carry the index): untagged, 802.1Q with several ids and priorities,
/// 802.1ad single and 802.1ad+802.1Q, broadcast, IPv4 with options, ARP, IPv6, 802.3 LLC.
const SCAPY_KERNEL_MIX: &str = r#"
import random, sys
from scapy.all import Ether, Dot1Q, Dot1AD, Dot3, LLC, IP, IPv6, UDP, TCP, ARP, Raw, IPOption, sendp
dev, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(11)
S = "02:4e:52:00:00:01"
frames = []
for i in range(n):
    dst = "ff:ff:ff:ff:ff:ff" if i % 7 == 3 else "02:4e:52:00:00:02"
    e = Ether(src=S, dst=dst)
    opts = [IPOption(b"\x01\x01\x01\x00")] if i % 9 == 4 else []
    k = i % 6
    if k == 0: l3 = IP(src="10.9.0.1", dst="10.9.0.2", id=i, options=opts) / UDP(sport=1, dport=9) / Raw(b"NRT%04d" % i)
    elif k == 1: l3 = IP(src="10.9.0.1", dst="10.9.0.2", id=i) / TCP(sport=1, dport=80) / Raw(b"NRT%04d" % i)
    elif k == 2: l3 = ARP(op=1, psrc="10.9.0.1", pdst="10.%d.%d.1" % (i // 256, i % 256))
    elif k == 3: l3 = IPv6(src="fd00::%x" % i, dst="fd00::2") / UDP(sport=1, dport=9)
    else: l3 = IP(src="10.9.0.1", dst="10.9.0.2", id=i, options=opts) / UDP(sport=2, dport=9) / Raw(b"NRT%04d" % i)
    t = i % 5
    vid = rng.choice([1, 100, 100, 200, 4094])
    prio = rng.randint(0, 7)
    if t == 0: f = e / l3
    elif t == 1: f = e / Dot1Q(vlan=vid, prio=prio) / l3
    elif t == 2: f = e / Dot1AD(vlan=vid, prio=prio) / Dot1Q(vlan=rng.choice([100, 7])) / l3
    elif t == 3: f = e / Dot1AD(vlan=vid, prio=prio) / l3
    else: f = e / Dot1Q(vlan=100, prio=1) / l3
    if i % 23 == 11: f = Dot3(src=S, dst=dst) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"NRT%04d" % i + bytes(40))
    frames.append(bytes(f))
sendp([Raw(f) for f in frames], iface=dev, verbose=0)
print(len(frames))
"#;

fn raw_pkt_type(t: PacketType) -> u8 {
    match t {
        PacketType::Host => 0,
        PacketType::Broadcast => 1,
        PacketType::Multicast => 2,
        PacketType::OtherHost => 3,
        PacketType::Outgoing => 4,
        PacketType::Other(v) => v,
    }
}

/// What a capture saw of our frames: by first-60-bytes key, (capture length, info, wire length).
type Seen = HashMap<Vec<u8>, (usize, FrameInfo, Vec<u8>)>;

fn key(data: &[u8]) -> Vec<u8> {
    data[..data.len().min(60)].to_vec()
}

fn drain(cap: &mut Capture, into: &mut Seen) {
    while let Some(b) = cap.next_batch(Some(Duration::from_millis(20))).unwrap() {
        for p in &b {
            if !is_ours(p.data()) {
                continue;
            }
            let info = FrameInfo {
                pkt_type: raw_pkt_type(p.packet_type()),
                ifindex: p.ifindex(),
                ..FrameInfo::of(&p)
            };
            // The kernel's skb->protocol is what FrameInfo::of derives from the bytes.
            assert_eq!(
                FrameInfo::of(&p).protocol,
                p.protocol(),
                "protocol of {:02x?}",
                &p.data()[..p.data().len().min(20)]
            );
            into.insert(key(p.data()), (p.capture_len(), info, p.data().to_vec()));
        }
    }
}

#[test]
fn same_verdicts_as_the_kernel_with_ancillary_loads() {
    if !can_run(
        "same_verdicts_as_the_kernel_with_ancillary_loads",
        &["scapy"],
    ) {
        return;
    }
    const N: usize = 240;
    let net = TestNet::new();
    let ifindex = net
        .within(|| netring::Interface::by_name(&net.b))
        .unwrap()
        .index();
    let programs = kernel_programs(ifindex);
    let open = |p: Option<BpfProgram>| {
        net.within(|| {
            let b = Capture::builder(&net.b)
                .block_size(1 << 16)
                .block_count(16)
                // Blocks fill by size, not by time: a slow sender on a busy machine would
                // otherwise spread the frames over more blocks than the ring has.
                .block_timeout(Duration::from_millis(200));
            match p {
                Some(p) => b.filter(p).open(),
                None => b.open(),
            }
        })
        .unwrap()
    };
    let mut reference = open(None);
    let mut filtered: Vec<Capture> = programs
        .iter()
        .map(|(_, p)| open(Some(p.clone())))
        .collect();

    // Every ring is read while scapy sends, so none fills up however slowly it sends.
    let mut all = Seen::new();
    let mut seen: Vec<Seen> = filtered.iter().map(|_| Seen::new()).collect();
    let mut sender = net
        .cmd(SCAPY_PYTHON)
        .args(["-c", SCAPY_KERNEL_MIX, &net.a, &N.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("scapy starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while sender.try_wait().expect("scapy runs").is_none() && Instant::now() < deadline {
        drain(&mut reference, &mut all);
        for (cap, got) in filtered.iter_mut().zip(&mut seen) {
            drain(cap, got);
        }
    }
    let out = sender.wait_with_output().expect("scapy ends");
    assert!(out.status.success(), "scapy failed: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), N.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while all.len() < N && Instant::now() < deadline {
        drain(&mut reference, &mut all);
    }
    assert_eq!(
        all.len(),
        N,
        "the unfiltered capture saw {} of {N} (its ring: {:?}; {} rx_dropped on {})",
        all.len(),
        reference.cumulative_stats(),
        common::asyncrt::link_stat(&net, &net.b, "rx_dropped"),
        net.b
    );
    let tagged = all.values().filter(|(_, i, _)| i.vlan.is_some()).count();
    assert!(
        tagged > N / 2,
        "only {tagged} frames came with a stripped tag"
    );

    let mut failures = Vec::new();
    for (((name, prog), cap), mut got) in programs.iter().zip(&mut filtered).zip(seen) {
        let want: HashMap<&Vec<u8>, u32> = all
            .iter()
            .map(|(k, (_, info, data))| (k, prog.run(data, info)))
            .filter(|(_, v)| *v != 0)
            .collect();
        // Read until as many as expected came (a busy machine retires blocks late), then a
        // little longer for any extra.
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < want.len() && Instant::now() < deadline {
            drain(cap, &mut got);
        }
        std::thread::sleep(Duration::from_millis(50));
        drain(cap, &mut got);
        let got_keys: HashSet<&Vec<u8>> = got.keys().collect();
        let want_keys: HashSet<&Vec<u8>> = want.keys().copied().collect();
        eprintln!("{:4} of {N} pass `{name}`", got.len());
        if got_keys != want_keys {
            failures.push(format!(
                "`{name}`: kernel passed {} frames, interpreter {}; {} only in kernel, {} only in \
                 interpreter (e.g. {:?})",
                got_keys.len(),
                want_keys.len(),
                got_keys.difference(&want_keys).count(),
                want_keys.difference(&got_keys).count(),
                got_keys
                    .symmetric_difference(&want_keys)
                    .next()
                    .map(|k| &all[*k].1)
            ));
            continue;
        }
        // Accepted frames are cut to the returned length, as the interpreter returned it.
        for (k, (caplen, info, _)) in &got {
            let want_len = (want[k] as usize).min(info.wire_len as usize);
            if *caplen != want_len {
                failures.push(format!(
                    "`{name}`: captured {caplen} bytes, run says {want_len}"
                ));
            }
        }
        let useful = if *name == "load far past the end" {
            got.is_empty()
        } else if matches!(*name, "ifindex" | "snap = vid + 60") {
            got.len() == N
        } else {
            !got.is_empty() && got.len() < N
        };
        if !useful {
            failures.push(format!(
                "`{name}` passed {} of {N}: not discriminating",
                got.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// --- Unit tests ---------------------------------------------------------------------------------

fn run1(insns: &[(u16, u8, u8, u32)], data: &[u8]) -> u32 {
    prog(insns).run(data, &FrameInfo::of(data))
}

/// Runs `body` then `ret a`.
fn a_after(body: &[(u16, u8, u8, u32)], data: &[u8]) -> u32 {
    let mut v = body.to_vec();
    v.push((0x16, 0, 0, 0));
    run1(&v, data)
}

const DATA: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];

#[test]
fn loads_absolute_indirect_msh() {
    assert_eq!(a_after(&[(0x20, 0, 0, 0)], &DATA), 0x1234_5678);
    assert_eq!(a_after(&[(0x20, 0, 0, 4)], &DATA), 0x9abc_def0);
    assert_eq!(a_after(&[(0x28, 0, 0, 6)], &DATA), 0xdef0);
    assert_eq!(a_after(&[(0x30, 0, 0, 7)], &DATA), 0xf0);
    // One byte short: the program stops and returns 0.
    assert_eq!(a_after(&[(0x20, 0, 0, 5)], &DATA), 0);
    assert_eq!(a_after(&[(0x28, 0, 0, 7)], &DATA), 0);
    assert_eq!(a_after(&[(0x30, 0, 0, 8)], &DATA), 0);
    assert_eq!(a_after(&[(0x30, 0, 0, u32::MAX)], &DATA), 0);
    // Indirect: X + k, 32-bit wrapping.
    assert_eq!(a_after(&[(0x01, 0, 0, 2), (0x48, 0, 0, 1)], &DATA), 0x789a);
    assert_eq!(
        a_after(&[(0x01, 0, 0, 3), (0x50, 0, 0, u32::MAX)], &DATA),
        0x56
    );
    assert_eq!(a_after(&[(0x01, 0, 0, 4), (0x40, 0, 0, 1)], &DATA), 0);
    // MSH: X = 4 * (P[k] & 0xf).
    assert_eq!(a_after(&[(0xb1, 0, 0, 0), (0x87, 0, 0, 0)], &DATA), 4 * 2);
    assert_eq!(a_after(&[(0xb1, 0, 0, 8), (0x87, 0, 0, 0)], &DATA), 0);
    // Immediate.
    assert_eq!(a_after(&[(0x00, 0, 0, 77)], &DATA), 77);
    assert_eq!(a_after(&[(0x01, 0, 0, 78), (0x87, 0, 0, 0)], &DATA), 78);
}

#[test]
fn negative_offsets_link_and_network_header() {
    let mut frame = vec![0u8; 14];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17]);
    assert_eq!(a_after(&[(0x28, 0, 0, LL + 12)], &frame), 0x0800);
    assert_eq!(a_after(&[(0x30, 0, 0, NET + 9)], &frame), 17);
    assert_eq!(a_after(&[(0xb1, 0, 0, NET), (0x87, 0, 0, 0)], &frame), 20);
    assert_eq!(a_after(&[(0x30, 0, 0, NET + 10)], &frame), 0);
    // Below SKF_LL_OFF, or between SKF_AD_OFF.. and not ancillary via IND: nothing there.
    assert_eq!(a_after(&[(0x30, 0, 0, LL - 1)], &frame), 0);
    assert_eq!(a_after(&[(0x01, 0, 0, 0), (0x50, 0, 0, AD + 4)], &frame), 0);
}

#[test]
fn len_uses_wire_length_never_less_than_data() {
    let p = prog(&[(0x80, 0, 0, 0), (0x16, 0, 0, 0)]);
    let px = prog(&[(0x81, 0, 0, 0), (0x87, 0, 0, 0), (0x16, 0, 0, 0)]);
    let info = FrameInfo {
        wire_len: 1500,
        ..FrameInfo::default()
    };
    assert_eq!(p.run(&DATA, &info), 1500);
    assert_eq!(px.run(&DATA, &info), 1500);
    assert_eq!(p.run(&DATA, &FrameInfo::default()), 8);
    let rec = PcapRecord {
        timestamp: netring::Timestamp { sec: 0, nsec: 0 },
        wire_len: 900,
        data: DATA.to_vec(),
    };
    assert_eq!(p.run(&rec.data, &FrameInfo::of(&rec)), 900);
}

#[test]
fn scratch_memory() {
    // M[15] = A; X = M[15]; A = X.
    assert_eq!(
        a_after(
            &[
                (0x00, 0, 0, 9),
                (0x02, 0, 0, 15),
                (0x00, 0, 0, 0),
                (0x61, 0, 0, 15),
                (0x87, 0, 0, 0)
            ],
            &DATA
        ),
        9
    );
    // STX / LD MEM.
    assert_eq!(
        a_after(&[(0x01, 0, 0, 5), (0x03, 0, 0, 0), (0x60, 0, 0, 0)], &DATA),
        5
    );
    // Starts zeroed (the kernel refuses reading unwritten slots; check_like_kernel says so).
    assert_eq!(a_after(&[(0x00, 0, 0, 1), (0x60, 0, 0, 3)], &DATA), 0);
    // Slot 16 does not exist: the program stops with 0.
    assert_eq!(
        a_after(&[(0x00, 0, 0, 1), (0x02, 0, 0, 16), (0x00, 0, 0, 7)], &DATA),
        0
    );
    assert_eq!(a_after(&[(0x61, 0, 0, 16)], &DATA), 0);
}

#[test]
fn alu_with_constants_and_x() {
    let k = |op: u16, a: u32, k: u32| a_after(&[(0x00, 0, 0, a), (op, 0, 0, k)], &DATA);
    let x = |op: u16, a: u32, x: u32| {
        a_after(&[(0x01, 0, 0, x), (0x00, 0, 0, a), (op, 0, 0, 0)], &DATA)
    };
    for (opk, opx, a, b, want) in [
        (0x04, 0x0c, u32::MAX, 2, 1),
        (0x14, 0x1c, 1, 2, u32::MAX),
        (0x24, 0x2c, 0x8000_0001, 2, 2),
        (0x34, 0x3c, 100, 7, 14),
        (0x94, 0x9c, 100, 7, 2),
        (0x44, 0x4c, 0xf0, 0x0f, 0xff),
        (0x54, 0x5c, 0xf0, 0x3c, 0x30),
        (0xa4, 0xac, 0xff, 0x0f, 0xf0),
        (0x64, 0x6c, 1, 31, 0x8000_0000),
        (0x74, 0x7c, 0x8000_0000, 31, 1),
    ] {
        assert_eq!(k(opk, a, b), want, "op {opk:#x}");
        assert_eq!(x(opx, a, b), want, "op {opx:#x}");
    }
    assert_eq!(k(0x84, 1, 0), u32::MAX);
    assert_eq!(k(0x84, 0, 0), 0);
    // Division and modulo by 0: the program stops with 0 (X at run time; K is refused by the
    // kernel at attach time, and run treats it the same).
    assert_eq!(x(0x3c, 100, 0), 0);
    assert_eq!(x(0x9c, 100, 0), 0);
    assert_eq!(k(0x34, 100, 0), 0);
    assert_eq!(k(0x94, 100, 0), 0);
    // Shift by X uses X & 31 (the kernel's interpreter and x86 JIT); by K >= 32 is refused.
    assert_eq!(x(0x6c, 1, 33), 2);
    assert_eq!(x(0x7c, 4, 32), 4);
    assert_eq!(k(0x64, 1, 32), 0);
    assert_eq!(k(0x74, 1, 40), 0);
}

#[test]
fn jumps_both_ways() {
    // jxx ? ret 1 : ret 2
    let j = |op: u16, a: u32, v: u32, x_form: bool| {
        let mut insns = vec![(0x00, 0, 0, a)];
        if x_form {
            insns.insert(0, (0x01, 0, 0, v));
            insns.push((op, 0, 1, 0));
        } else {
            insns.push((op, 0, 1, v));
        }
        insns.extend([(0x06, 0, 0, 1), (0x06, 0, 0, 2)]);
        run1(&insns, &DATA)
    };
    for (opk, opx, a, v, taken) in [
        (0x15, 0x1d, 5, 5, true),
        (0x15, 0x1d, 5, 6, false),
        (0x25, 0x2d, 6, 5, true),
        (0x25, 0x2d, 5, 5, false),
        (0x35, 0x3d, 5, 5, true),
        (0x35, 0x3d, 4, 5, false),
        (0x45, 0x4d, 6, 2, true),
        (0x45, 0x4d, 5, 2, false),
        // Unsigned comparisons.
        (0x25, 0x2d, u32::MAX, 1, true),
    ] {
        let want = if taken { 1 } else { 2 };
        assert_eq!(j(opk, a, v, false), want, "{opk:#x} {a} {v}");
        assert_eq!(j(opx, a, v, true), want, "{opx:#x} {a} {v}");
    }
    // ja over two instructions.
    assert_eq!(
        run1(
            &[
                (0x05, 0, 0, 2),
                (0x06, 0, 0, 1),
                (0x06, 0, 0, 2),
                (0x06, 0, 0, 3)
            ],
            &DATA
        ),
        3
    );
    // jt > 0 and jf > 0.
    assert_eq!(
        run1(
            &[
                (0x15, 2, 1, 0),
                (0x06, 0, 0, 1),
                (0x06, 0, 0, 2),
                (0x06, 0, 0, 3)
            ],
            &DATA
        ),
        3
    );
}

#[test]
fn returns_and_misc() {
    assert_eq!(run1(&[(0x06, 0, 0, 0xdead_beef)], &DATA), 0xdead_beef);
    assert_eq!(run1(&[(0x00, 0, 0, 42), (0x16, 0, 0, 0)], &DATA), 42);
    assert_eq!(
        a_after(
            &[
                (0x00, 0, 0, 42),
                (0x07, 0, 0, 0),
                (0x00, 0, 0, 1),
                (0x87, 0, 0, 0)
            ],
            &DATA
        ),
        42
    );
    // RET X is no kernel opcode.
    assert_eq!(run1(&[(0x01, 0, 0, 5), (0x0e, 0, 0, 0)], &DATA), 0);
    // Unknown opcodes stop the program with 0.
    for code in [0x08u16, 0x21, 0x38, 0x88, 0xb0, 0xfe, 0xbc, 0x55] {
        assert_eq!(
            run1(&[(code, 0, 0, 0), (0x06, 0, 0, 1)], &DATA),
            0,
            "{code:#x}"
        );
    }
    let accept = prog(&[(0x06, 0, 0, 1)]);
    assert!(accept.matches(&[], &FrameInfo::default()));
    assert!(!BpfProgram::reject_all().matches(&DATA, &FrameInfo::default()));
}

#[test]
fn ancillary_loads() {
    let tag = VlanTag {
        tpid: 0x88a8,
        tci: 0xe064,
    };
    let info = FrameInfo {
        wire_len: 8,
        vlan: Some(tag),
        protocol: 0x86dd,
        pkt_type: 3,
        ifindex: 17,
        rx_hash: 0xabcd_1234,
    };
    let ld = |op: u16, n: u32, info: &FrameInfo| {
        prog(&[(op, 0, 0, AD + n), (0x16, 0, 0, 0)]).run(&DATA, info)
    };
    for op in [0x20, 0x28, 0x30] {
        assert_eq!(ld(op, 0, &info), 0x86dd);
        assert_eq!(ld(op, 4, &info), 3);
        assert_eq!(ld(op, 8, &info), 17);
        assert_eq!(ld(op, 32, &info), 0xabcd_1234);
        // The full TCI, priority and DEI included, as 5.0+ kernels give it.
        assert_eq!(ld(op, 44, &info), 0xe064);
        assert_eq!(ld(op, 48, &info), 1);
        assert_eq!(ld(op, 60, &info), 0x88a8);
    }
    let none = FrameInfo::default();
    assert_eq!(ld(0x20, 44, &none), 0);
    assert_eq!(ld(0x20, 48, &none), 0);
    assert_eq!(ld(0x20, 60, &none), 0);
    // A priority-tagged frame (tci 0) still has a tag.
    let zero = FrameInfo {
        vlan: Some(VlanTag {
            tpid: 0x8100,
            tci: 0,
        }),
        ..none
    };
    assert_eq!(ld(0x20, 48, &zero), 1);
    // A ^= X.
    assert_eq!(
        a_after(
            &[
                (0x01, 0, 0, 0xff),
                (0x00, 0, 0, 0x0f),
                (0x20, 0, 0, AD + 40)
            ],
            &DATA
        ),
        0xf0
    );
    // Known to the kernel only (mark, queue, hatype, cpu, random, ...) or unknown: 0.
    for n in [12, 16, 20, 24, 28, 36, 52, 56, 2, 64, 100, 0xffc] {
        let p = prog(&[(0x20, 0, 0, AD + n), (0x06, 0, 0, 1)]);
        assert_eq!(p.run(&DATA, &info), 0, "ancillary {n}");
        assert!(p.check_like_kernel().is_err(), "ancillary {n}");
    }
}

#[test]
fn frame_info_of_follows_eth_type_trans() {
    let eth = |t: [u8; 2], rest: &[u8]| {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&t);
        f.extend_from_slice(rest);
        f
    };
    assert_eq!(FrameInfo::of(&eth([0x08, 0x00], &[])).protocol, 0x0800);
    assert_eq!(FrameInfo::of(&eth([0x81, 0x00], &[0; 4])).protocol, 0x8100);
    assert_eq!(
        FrameInfo::of(&eth([0x00, 0x40], &[0xff, 0xff])).protocol,
        0x0001
    );
    assert_eq!(
        FrameInfo::of(&eth([0x00, 0x40], &[0x42, 0x42])).protocol,
        0x0004
    );
    assert_eq!(FrameInfo::of(&eth([0x00, 0x40], &[])).protocol, 0x0004);
    assert_eq!(FrameInfo::of(&[0u8; 13][..]).protocol, 0);
    let f = eth([0x86, 0xdd], &[0; 50]);
    let info = FrameInfo::of(&f);
    assert_eq!(
        info,
        FrameInfo {
            wire_len: 64,
            protocol: 0x86dd,
            ..FrameInfo::default()
        }
    );
    let _ = SRC_MAC;
}

#[test]
fn check_like_kernel_mirrors_bpf_check_classic() {
    let ok = |i: &[(u16, u8, u8, u32)]| prog(i).check_like_kernel().is_ok();
    assert!(ok(&[(0x06, 0, 0, 1)]));
    assert!(ok(&[(0x02, 0, 0, 3), (0x60, 0, 0, 3), (0x16, 0, 0, 0)]));
    assert!(ok(&[(0x74, 0, 0, 31), (0x34, 0, 0, 1), (0x16, 0, 0, 0)]));
    assert!(ok(&[
        (0x20, 0, 0, NET + 9),
        (0x20, 0, 0, AD + 48),
        (0x16, 0, 0, 0)
    ]));
    assert!(!ok(&[(0x34, 0, 0, 0), (0x16, 0, 0, 0)]));
    assert!(!ok(&[(0x94, 0, 0, 0), (0x16, 0, 0, 0)]));
    assert!(!ok(&[(0x64, 0, 0, 32), (0x16, 0, 0, 0)]));
    assert!(!ok(&[(0x02, 0, 0, 16), (0x16, 0, 0, 0)]));
    assert!(!ok(&[(0xfe, 0, 0, 0), (0x16, 0, 0, 0)]));
    assert!(!ok(&[(0x0e, 0, 0, 0)]));
    // M[0] written on one path only.
    assert!(!ok(&[
        (0x15, 1, 0, 0),
        (0x02, 0, 0, 0),
        (0x60, 0, 0, 0),
        (0x16, 0, 0, 0)
    ]));
    // ...and on both.
    assert!(ok(&[
        (0x02, 0, 0, 0),
        (0x15, 1, 0, 0),
        (0x02, 0, 0, 0),
        (0x60, 0, 0, 0),
        (0x16, 0, 0, 0)
    ]));
}

/// The kernel refuses at attach exactly what `check_like_kernel` refuses (sampled).
#[test]
fn check_like_kernel_agrees_with_so_attach_filter() {
    if !can_run("check_like_kernel_agrees_with_so_attach_filter", &[]) {
        return;
    }
    let net = TestNet::new();
    let r = (0x16, 0, 0, 0);
    let cases: Vec<Vec<(u16, u8, u8, u32)>> = vec![
        vec![(0x64, 0, 0, 32), r],
        vec![(0x64, 0, 0, 31), r],
        vec![(0x20, 0, 0, AD + 28), r],
        vec![(0x20, 0, 0, AD + 100), r],
        vec![(0x20, 0, 0, AD + 60), r],
        vec![(0x60, 0, 0, 0), r],
        vec![(0x03, 0, 0, 0), (0x60, 0, 0, 0), r],
        vec![(0x15, 1, 0, 0), (0x02, 0, 0, 0), (0x60, 0, 0, 0), r],
        vec![(0x34, 0, 0, 0), r],
        vec![(0x3c, 0, 0, 0), r],
        vec![(0x08, 0, 0, 0), r],
        vec![(0x0e, 0, 0, 0)],
        vec![(0x50, 0, 0, AD + 100), r],
    ];
    for insns in cases {
        let p = prog(&insns);
        let kernel_ok = net
            .within(|| Capture::builder(&net.b).filter(p.clone()).open())
            .is_ok();
        let ours = p.check_like_kernel();
        // HATYPE is a kernel-only load: the kernel takes it, we refuse to imitate it.
        if insns[0] == (0x20, 0, 0, AD + 28) {
            assert!(kernel_ok && ours.is_err());
            continue;
        }
        assert_eq!(kernel_ok, ours.is_ok(), "{insns:x?}: {ours:?}");
    }
}

// --- Allocation counting ------------------------------------------------------------------------

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `run` never allocates: a tcpdump-sized program over frames of every kind.
#[test]
fn run_does_not_allocate() {
    let mut frames: Vec<Vec<u8>> = (0..200usize)
        .map(|i| (0..(i * 7) % 1500).map(|b| (b * 31 + i) as u8).collect())
        .collect();
    for f in frames.iter_mut().step_by(3) {
        if f.len() > 14 {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
        }
    }
    // `tcpdump -dd -y EN10MB 'udp port 9999'`, with scratch memory and ancillary loads added.
    let p = prog(&[
        (0x20, 0, 0, AD + 48),
        (0x02, 0, 0, 5),
        (0x28, 0, 0, 12),
        (0x15, 0, 6, 0x86dd),
        (0x30, 0, 0, 20),
        (0x15, 0, 15, 17),
        (0x28, 0, 0, 54),
        (0x15, 12, 0, 9999),
        (0x28, 0, 0, 56),
        (0x15, 10, 11, 9999),
        (0x15, 0, 10, 0x800),
        (0x30, 0, 0, 23),
        (0x15, 0, 8, 17),
        (0x28, 0, 0, 20),
        (0x45, 6, 0, 0x1fff),
        (0xb1, 0, 0, 14),
        (0x48, 0, 0, 14),
        (0x15, 2, 0, 9999),
        (0x48, 0, 0, 16),
        (0x15, 0, 1, 9999),
        (0x06, 0, 0, 0x40000),
        (0x60, 0, 0, 5),
        (0x04, 0, 0, 1),
        (0x16, 0, 0, 0),
    ]);
    let infos: Vec<FrameInfo> = frames.iter().map(FrameInfo::of).collect();
    let (accepted, allocs) = allocations(|| {
        let mut n = 0u32;
        for _ in 0..10 {
            for (f, info) in frames.iter().zip(&infos) {
                n += u32::from(p.matches(f, info));
                n += u32::from(p.run(f, &FrameInfo::of(f)) != 0);
            }
        }
        n
    });
    assert_eq!(allocs, 0, "run allocated");
    assert!(accepted > 0);
}
