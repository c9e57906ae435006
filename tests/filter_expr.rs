//! `netring::filter::Filter` against libpcap itself: the same verdict on every frame of a varied
//! scapy-made capture for every expression, the same expressions refused, and on a live veth the
//! kernel program (outer VLAN tag in skb metadata) captures exactly the frames libpcap accepts.

mod common;
use common::frames::*;
use common::*;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use netring::filter::Filter;
use netring::pcap::{PcapReader, PcapRecord, PcapWriter};
use netring::xdp::AttachMode;
use netring::{Capture, Error, FrameInfo, Timestamp};

/// Builds varied Ethernet frames with scapy: IPv4 (options, fragments) and IPv6 (fragment and
/// hop-by-hop headers) carrying TCP/UDP/SCTP/ICMP/ICMPv6/IGMP/other, ARP, RARP, 802.3/LLC and
/// other ethertypes, untagged, 802.1Q, 802.1ad+802.1Q, 0x9100-tagged; addresses, ports and VLAN
/// ids drawn from small pools so every predicate hits both ways. Prints one frame per line in hex.
const SCAPY_MIX: &str = r#"
import random, sys
from scapy.all import IP, IPv6, TCP, UDP, ICMP, ARP, Raw, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, ICMPv6EchoRequest, ICMPv6EchoReply
from scapy.layers.sctp import SCTP
n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
SRC = ["02:4e:52:00:00:01", "02:4e:52:00:00:03"]
DST = ["02:4e:52:00:00:02", "02:4e:52:00:00:03", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"]
V4 = ["10.0.0.1", "10.0.0.2", "10.0.1.5", "192.168.1.1", "224.0.0.5", "255.255.255.255"]
V6 = ["2001:db8::1", "2001:db8::2", "fe80::1", "ff02::1", "2001:db8:1::5"]
PORTS = [53, 80, 443, 8080, 1024, 1023, 1025, 65535, 0, 50, 60]
VLANS = [100, 200, 300, 0, 4095]
pick = rng.choice
def mac(s): return bytes(int(x, 16) for x in s.split(":"))
def l4(v6):
    t = rng.random()
    data = Raw(bytes(rng.randrange(256) for _ in range(pick([0, 0, 10, 60, 200]))))
    if t < 0.35:
        opts = [("MSS", 1460), ("NOP", None), ("WScale", 7)] if rng.random() < 0.3 else []
        return TCP(sport=pick(PORTS), dport=pick(PORTS), flags=pick(["S", "SA", "A", "PA", "F", "R", ""]), options=opts) / data
    if t < 0.70: return UDP(sport=pick(PORTS), dport=pick(PORTS)) / data
    if t < 0.82: return (ICMPv6EchoRequest() if rng.random() < 0.5 else ICMPv6EchoReply()) if v6 else ICMP(type=pick([0, 8, 3, 11]))
    if t < 0.92: return SCTP(sport=pick(PORTS), dport=pick(PORTS))
    return None
def ipv4():
    ip = IP(src=pick(V4), dst=pick(V4), ttl=rng.randint(1, 255), id=rng.randint(0, 65535))
    r = rng.random()
    if r < 0.15: ip.options = [IPOption_NOP()] * pick([4, 8]) 
    elif r < 0.2: ip.options = [IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])]
    r = rng.random()
    if r < 0.12: ip.flags = "MF"; ip.frag = pick([0, 0, 3])
    elif r < 0.2: ip.frag = pick([1, 185])
    p = l4(False)
    if p is None:
        ip.proto = pick([2, 47, 89, 0, 6])
        return bytes(ip / Raw(bytes(rng.randrange(256) for _ in range(8))))
    return bytes(ip / p)
def ipv6():
    ip = IPv6(src=pick(V6), dst=pick(V6), hlim=rng.randint(1, 255))
    r = rng.random()
    if r < 0.15: ip = ip / IPv6ExtHdrFragment(offset=pick([0, 0, 5]), m=pick([0, 1]))
    elif r < 0.25: ip = ip / IPv6ExtHdrHopByHop()
    p = l4(True)
    if p is None:
        ip.nh = pick([44, 17, 6, 59])
        return bytes(ip / Raw(bytes(rng.randrange(256) for _ in range(8))))
    return bytes(ip / p)
def arp():
    return bytes(ARP(op=pick([1, 2]), psrc=pick(V4), pdst=pick(V4), hwsrc=pick(SRC), hwdst="00:00:00:00:00:00"))
out = []
for i in range(n):
    r = rng.random()
    if r < 0.38: et, body = 0x0800, ipv4()
    elif r < 0.66: et, body = 0x86dd, ipv6()
    elif r < 0.76: et, body = 0x0806, arp()
    elif r < 0.81: et, body = 0x8035, arp()
    elif r < 0.87: et, body = 0x88b5, bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    else:
        dsap = pick([0x06, 0xfe, 0xf0, 0x42, 0xaa, 0x00])
        body = bytes([dsap, dsap if rng.random() < 0.7 else 0x42, 3]) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        et = len(body) if rng.random() < 0.8 else pick([1500, 1501, 0x05dc])
    tags = b""
    r = rng.random()
    def tci(): return ((rng.randint(0, 7) << 13) | (rng.randint(0, 1) << 12) | pick(VLANS)).to_bytes(2, "big")
    if r < 0.25: tags = b"\x81\x00" + tci()
    elif r < 0.33: tags = b"\x88\xa8" + tci() + b"\x81\x00" + tci()
    elif r < 0.36: tags = b"\x91\x00" + tci()
    elif r < 0.39: tags = b"\x81\x00" + tci() + b"\x81\x00" + tci()
    frame = mac(pick(DST)) + mac(pick(SRC)) + tags + et.to_bytes(2, "big") + body
    if rng.random() < 0.1: frame += bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    out.append(frame.hex())
sys.stdout.write("\n".join(out) + "\n")
"#;

/// Expressions compared with libpcap: every primitive, qualifier combination, the shorthand,
/// precedence, `vlan` offset shifting, `len`, byte offsets and arithmetic.
const EXPRESSIONS: &[&str] = &[
    "",
    "ip",
    "ip6",
    "arp",
    "rarp",
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "icmp6",
    "igmp",
    "not ip",
    "not tcp",
    "!udp",
    "ether host 02:4e:52:00:00:01",
    "ether src 02:4e:52:00:00:01",
    "ether dst 02:4e:52:00:00:03",
    "ether src host 02:4e:52:00:00:03 or ether dst ff:ff:ff:ff:ff:ff",
    "ether dst host 02-4e-52-00-00-02",
    "ether host 024e.5200.0003",
    "ether src and dst 02:4e:52:00:00:03",
    "ether broadcast",
    "ether multicast",
    "broadcast",
    "multicast",
    "ip multicast",
    "ip6 multicast",
    "ether proto 0x0800",
    "ether proto \\ip6",
    "ether proto \\arp",
    "ether proto \\rarp",
    "ether proto 0x88b5",
    "ether proto 6",
    "ether proto 0xfe",
    "ether proto 0xf0",
    "ether proto 0x42",
    "ether proto 1500",
    "host 10.0.0.1",
    "src host 10.0.0.1",
    "dst host 10.0.0.2",
    "host 10.0.0.1 and host 10.0.0.2",
    "src or dst host 10.0.1.5",
    "src and dst host 10.0.0.1",
    "ip host 192.168.1.1",
    "arp host 10.0.0.1",
    "rarp src host 10.0.0.2",
    "arp dst 10.0.0.2",
    "ip src 10.0.0.1",
    "src 10.0.0.2",
    "dst 10.0.0.1 or 10.0.0.2",
    "host 10.0.0.1 or 10.0.0.2",
    "host 10.0.0.1 or 192.168.1.1 or 10.0.1.5",
    "host 10.0.0.1 and not 10.0.0.2",
    "not host 10.0.0.1 and 10.0.0.2",
    "host (10.0.0.1 or 192.168.1.1)",
    "host 10.0",
    "net 10.0.0.0/8",
    "src net 10.0.0.0/24",
    "dst net 192.168.0.0/16",
    "net 10.0.1.0 mask 255.255.255.0",
    "net 10",
    "net 192.168",
    "net 0.0.0.0/0",
    "ip net 10.0.0.0/23",
    "arp net 10.0.0.0/24",
    "host 2001:db8::1",
    "src host 2001:db8::2",
    "dst host ff02::1",
    "ip6 host fe80::1 or 2001:db8::1",
    "net 2001:db8::/32",
    "src net 2001:db8:1::/48",
    "net fe80::/10",
    "net ::/0",
    "ip6 src net 2001:db8::/64",
    "port 53",
    "port 80 or 443",
    "src port 1024",
    "dst port 8080",
    "tcp port 80",
    "udp port 53",
    "sctp port 443",
    "tcp src port 443 or udp dst port 53",
    "port 0",
    "port 65535",
    "src and dst port 53",
    "src or dst port 80",
    "tcp dst port 80 or 443 or 8080",
    "not port 53",
    "port (80 or 443)",
    "tcp port 80 and not src port 1024",
    "portrange 1-1024",
    "portrange 1023-1025",
    "tcp portrange 80-443",
    "udp src portrange 50-60",
    "dst portrange 8000-9000",
    "portrange 443-80",
    "portrange 80",
    "ip proto 6",
    "ip proto 17",
    "ip proto \\tcp",
    "ip6 proto 17",
    "ip6 proto \\udp",
    "proto 58",
    "proto \\ipv6-icmp",
    "ip proto 2",
    "ip6 proto 44",
    "ip proto 47",
    "vlan",
    "vlan 100",
    "not vlan",
    "vlan and ip",
    "vlan 100 and tcp",
    "vlan 200 and udp port 53",
    "vlan and vlan",
    "vlan 100 or vlan 200",
    "vlan and vlan 300",
    "vlan and host 10.0.0.1",
    "vlan 0",
    "ip or vlan",
    "vlan or ip",
    "vlan and not vlan",
    "vlan 4095 and ip6",
    "vlan and arp",
    "len <= 60",
    "len >= 100",
    "len > 64 and len < 128",
    "greater 100",
    "less 64",
    "len = 54",
    "len != 60",
    "tcp and port 80",
    "tcp or udp and port 53",
    "not tcp and not udp",
    "not (tcp or udp)",
    "(tcp or udp) and port 53",
    "ip and not icmp",
    "tcp and not port 80 or udp",
    "ip6 and (tcp or udp) and dst port 443",
    "icmp or icmp6 or arp",
    "!(host 10.0.0.1) && (port 80 || port 53)",
    "tcp[13] & 2 != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn",
    "ip[2:2] > 100",
    "ip[6:2] & 0x1fff != 0",
    "ip[0] & 0xf > 5",
    "udp[2:2] = 53",
    "icmp[icmptype] = icmp-echo",
    "ip6[6] = 44",
    "ether[12:2] = 0x8100",
    "ip[9] + 1 = 7",
    "len - 14 > 100",
    "ip[ip[0] & 0xf] = 0",
    "tcp[12] >> 4 > 5",
    "arp[6:2] = 1",
    "icmp6[0] = 128",
    "ether[0] & 1 = 1",
    "vlan and ip[9] = 17",
    "ip[2:2] * 2 > len",
    "len % 2 = 1",
    "(len) > 100",
    "ether[14:4] & 0xff = 0",
    "-len + 100 > 0x80000000",
    "ip[16:4] ^ 0x0a000001 = 0",
    "udp[0:2] << 16 | udp[2:2] = 0x00350035",
    "tcp[ip[0] & 1] = 0",
    "ether[10:4] != 0 and vlan",
    "vlan and ether[14:2] & 0xfff = 100",
    "ip[8] > ip[9]",
];

/// Expressions libpcap refuses; we must refuse them too (with the column we report).
const BAD: &[(&str, usize)] = &[
    ("tcp prot 80", 5),
    ("host", 5),
    ("port 80 and", 12),
    ("port 70000", 6),
    ("net 10.0.0.1/8", 5),
    ("net 10.0.0.0/33", 14),
    ("(tcp", 5),
    ("tcp)", 4),
    ("tcp or 80", 8),
    ("(host 1.2.3.4) or 5.6.7.8", 19),
    ("ether 00:11:22:33:44:55", 7),
    ("ip 1.2.3.4", 4),
    ("net 10/8", 7),
    ("ip[0:3] = 1", 6),
    ("len / 0 > 1", 5),
    ("1 << 32 > 0", 3),
    ("vlan 4096", 6),
    ("port 1.2", 6),
    ("ether host 1.2.3.4", 12),
    ("host 1.1.1.1 or (2.2.2.2 or host 3.3.3.3)", 29),
    ("len > 0x", 7),
    ("src or 1.2.3.4", 8),
    ("tcp host 1.2.3.4", 10),
    ("ip6 host 1.2.3.4", 10),
    ("ip host ::1", 9),
    ("host 1.2.3.0/24", 6),
    ("udp proto 6", 11),
    ("port 1-2", 6),
    ("proto \\nosuchproto", 7),
    ("len-1 > 5", 1),
    ("ether proto \\ip and", 20),
    ("ip6 broadcast", 1),
];

/// One frame of the capture: the captured bytes and the length on the wire.
struct Frame {
    data: Vec<u8>,
    wire_len: usize,
}

/// The mix: scapy's frames, plus snaplen-truncated copies (wire length kept) and short garbage
/// that stops loads at every depth.
fn frames() -> Vec<Frame> {
    let out = run(scapy_script(SCAPY_MIX).args(["1200", "7"]));
    let mut frames: Vec<Frame> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let data = unhex(l);
            Frame {
                wire_len: data.len(),
                data,
            }
        })
        .collect();
    assert_eq!(frames.len(), 1200, "scapy printed {} frames", frames.len());
    let mut rng = Rng::new(11);
    for _ in 0..250 {
        let f = &frames[rng.range(0, 1199)];
        let cut = rng.range(0, f.data.len() - 1);
        frames.push(Frame {
            data: f.data[..cut].to_vec(),
            wire_len: f.wire_len,
        });
    }
    for _ in 0..100 {
        let len = rng.range(0, 70);
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if len >= 14 {
            let et: [u16; 5] = [0x0800, 0x86dd, 0x8100, 0x0806, 0x88a8];
            data[12..14].copy_from_slice(&et[rng.range(0, 4)].to_be_bytes());
            if len >= 18 && data[12] != 0x08 && data[12] != 0x86 {
                data[16..18].copy_from_slice(&et[rng.range(0, 1)].to_be_bytes());
            }
        }
        frames.push(Frame {
            wire_len: len,
            data,
        });
    }
    frames
}

fn write_pcap(path: &str, frames: &[Frame]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Timestamp {
            sec: i as u32,
            nsec: 0,
        };
        w.write_frame(ts, f.wire_len, &f.data, None).unwrap();
    }
    w.into_inner().unwrap();
}

/// libpcap's verdict on every record of `path` (indexed by the timestamp's seconds), or its
/// compile error.
fn libpcap_accepts(path: &str, expr: &str, n: usize) -> Result<Vec<bool>, String> {
    libpcap_verdicts(path, expr, n, true)
}

/// libpcap's verdicts with its optimizer on or off.
fn libpcap_verdicts(path: &str, expr: &str, n: usize, optimize: bool) -> Result<Vec<bool>, String> {
    let mut cap = pcap::Capture::from_file(path).map_err(|e| e.to_string())?;
    cap.filter(expr, optimize).map_err(|e| e.to_string())?;
    let mut v = vec![false; n];
    loop {
        match cap.next_packet() {
            Ok(p) => v[p.header.ts.tv_sec as usize] = true,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => panic!("reading {path}: {e}"),
        }
    }
    Ok(v)
}

/// The frame as AF_PACKET would hand it over when its outer tag is 802.1Q/802.1ad: tag removed,
/// reported as metadata.
fn stripped(f: &Frame) -> Option<(Vec<u8>, FrameInfo)> {
    let tag = wire_tag(&f.data)?;
    let mut data = f.data[..12].to_vec();
    data.extend_from_slice(&f.data[16..]);
    let info = FrameInfo {
        wire_len: (f.wire_len - 4) as u32,
        vlan: Some(tag),
        ..FrameInfo::default()
    };
    Some((data, info))
}

#[test]
fn same_verdicts_as_libpcap() {
    if !can_run("same_verdicts_as_libpcap", &["scapy"]) {
        return;
    }
    let frames = frames();
    let path = scratch("filter_expr_mix.pcap");
    write_pcap(&path, &frames);
    // Read back with our reader: the records carry the wire length into `Filter::matches`.
    let records: Vec<PcapRecord> = PcapReader::new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(records.len(), frames.len());

    let mut mismatches = Vec::new();
    let mut one_sided = Vec::new();
    let mut optimizer_differs = 0usize;
    let (mut checks, mut tagged_checks, mut accepted) = (0usize, 0usize, 0usize);
    for expr in EXPRESSIONS {
        // The reference is libpcap's compiler without its optimizer: the optimizer reorders
        // tests on the same value (`or_pullup`) and drops loads whose value it knows, which
        // changes the verdict on frames cut short inside a tested header (a load past the end
        // rejects the frame). On every other frame the two agree, and so must we.
        let want = libpcap_verdicts(&path, expr, frames.len(), false)
            .unwrap_or_else(|e| panic!("libpcap refuses {expr:?}: {e}"));
        let optimized = libpcap_accepts(&path, expr, frames.len()).unwrap();
        for (i, (w, o)) in want.iter().zip(&optimized).enumerate() {
            if w != o {
                optimizer_differs += 1;
                let f = &frames[i];
                assert!(
                    f.data.len() < f.wire_len || f.data.len() < 64,
                    "{expr:?} frame {i}: libpcap's optimizer changes the verdict on a complete frame"
                );
            }
        }
        let f = Filter::new(expr).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.expression(), *expr);
        let n_acc = want.iter().filter(|&&w| w).count();
        // Both ways, except where libpcap's code can never match (an LLC SAP of 1500).
        if !(expr.is_empty() || (n_acc > 0 && n_acc < frames.len()) || *expr == "ether proto 1500")
        {
            one_sided.push(format!("{expr:?} ({n_acc})"));
        }
        accepted += n_acc;
        for (i, (rec, frame)) in records.iter().zip(&frames).enumerate() {
            checks += 1;
            let got = f.matches(rec);
            if got != want[i] {
                mismatches.push(format!(
                    "{expr:?} frame {i} ({} of {} bytes): libpcap {}, ours {got}: {}",
                    rec.data.len(),
                    rec.wire_len,
                    want[i],
                    hex(&rec.data)
                ));
            }
            // The same frame with its outer tag in metadata, through the kernel program.
            if let Some((data, info)) = stripped(frame) {
                tagged_checks += 1;
                let got = f.kernel_program().matches(&data, &info);
                if got != want[i] {
                    mismatches.push(format!(
                        "{expr:?} frame {i} tag stripped (kernel program): libpcap {}, ours {got}: {}",
                        want[i],
                        hex(&frame.data)
                    ));
                }
            }
        }
    }
    eprintln!(
        "{} expressions x {} frames: {checks} frame-program verdicts ({accepted} accepts), \
         {tagged_checks} kernel-program verdicts on tag-stripped frames, {} mismatches; \
         libpcap optimized vs unoptimized differ on {optimizer_differs} (truncated) frames",
        EXPRESSIONS.len(),
        frames.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(60)].join("\n")
    );
    assert!(
        one_sided.is_empty(),
        "libpcap's verdict is the same for every frame: {one_sided:?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn refuses_what_libpcap_refuses() {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
    let mut wrong = Vec::new();
    for (expr, column) in BAD {
        assert!(
            dead.compile(expr, true).is_err(),
            "libpcap accepts {expr:?}: not a bad input"
        );
        match Filter::new(expr) {
            Err(Error::FilterSyntax {
                column: c,
                expression,
                message,
            }) => {
                assert_eq!(expression, *expr);
                if c != *column {
                    wrong.push(format!("{expr:?}: column {c}, want {column}: {message}"));
                }
            }
            other => wrong.push(format!("{expr:?}: expected a syntax error, got {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for expr in EXPRESSIONS {
        assert!(dead.compile(expr, true).is_ok(), "libpcap refuses {expr:?}");
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Expressions for the live test.
const KERNEL_EXPRESSIONS: &[&str] = &[
    "vlan",
    "vlan 100 and tcp",
    "not vlan",
    "port 53",
    "vlan and vlan",
    "vlan 200 or ip6",
    "host 10.0.0.1",
    "udp or not vlan",
    "vlan and arp",
    "len > 100",
    "ether[12:2] = 0x8100",
    "vlan 300 and tcp[13] & 2 != 0",
    "ip[2:2] > 60",
];

#[test]
fn kernel_program_on_a_live_veth() {
    if !can_run("kernel_program_on_a_live_veth", &["scapy"]) {
        return;
    }
    // Sendable frames only: complete, ours, and long enough for the kernel to untag an
    // 802.1Q/802.1ad frame (it drops tagged frames shorter than 20 bytes before any tap).
    let frames: Vec<Frame> = frames()
        .into_iter()
        .filter(|f| {
            f.data.len() == f.wire_len && f.wire_len >= 20 && f.data[6..9] == [2, 0x4e, 0x52]
        })
        .collect();
    let path = scratch("filter_expr_live.pcap");
    write_pcap(&path, &frames);
    let net = TestNet::new();
    let filters: Vec<Filter> = KERNEL_EXPRESSIONS
        .iter()
        .map(|e| Filter::new(e).unwrap())
        .collect();
    let mut caps: Vec<Capture> = net.within(|| {
        filters
            .iter()
            .map(|f| {
                Capture::builder(&net.b)
                    .block_size(1 << 20)
                    .block_count(8)
                    .block_timeout(Duration::from_millis(20))
                    .ignore_outgoing(true)
                    .filter(f.kernel_program().clone())
                    .open()
                    .unwrap()
            })
            .collect()
    });
    // A capture without filter paces the sender: each chunk must have crossed the veth before
    // the next one goes, so no frame is lost to the receive backlog before reaching the sockets.
    let mut reference = net.within(|| {
        Capture::builder(&net.b)
            .block_timeout(Duration::from_millis(10))
            .ignore_outgoing(true)
            .open()
            .unwrap()
    });
    let mut sender = ChunkSender::start(&net, &net.a, &path);
    let mut seen = 0;
    while sender.requested < frames.len() {
        sender.request(100.min(frames.len() - sender.requested));
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen < sender.requested {
            assert!(
                Instant::now() < deadline,
                "only {seen} of {} frames crossed the veth",
                sender.requested
            );
            if let Some(batch) = reference
                .next_batch(Some(Duration::from_millis(100)))
                .unwrap()
            {
                seen += batch
                    .into_iter()
                    .filter(|p| p.data().len() >= 9 && p.data()[6..9] == [2, 0x4e, 0x52])
                    .count();
            }
        }
    }
    assert_eq!(sender.finish(), frames.len());
    assert_eq!(seen, frames.len(), "frames the unfiltered capture saw");

    let mut tagged_seen = 0;
    for ((expr, f), cap) in KERNEL_EXPRESSIONS.iter().zip(&filters).zip(&mut caps) {
        let verdicts = libpcap_verdicts(&path, expr, frames.len(), false).unwrap();
        let mut want: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (fr, _) in frames.iter().zip(&verdicts).filter(|(_, v)| **v) {
            *want.entry(fr.data.clone()).or_default() += 1;
        }
        let n_want: usize = want.values().sum();
        let mut got: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        let mut n_got = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(batch) = cap.next_batch(Some(Duration::from_millis(200))).unwrap() else {
                if n_got >= n_want {
                    break;
                }
                continue;
            };
            for p in &batch {
                let owned = p.to_owned_packet();
                if owned.data().len() < 9 || owned.data()[6..9] != [2, 0x4e, 0x52] {
                    continue;
                }
                assert!(
                    f.matches(&owned),
                    "{expr:?}: Filter::matches refuses a frame the kernel program accepted (vlan {:?})",
                    owned.vlan()
                );
                tagged_seen += owned.vlan().is_some() as usize;
                *got.entry(with_tag(owned.data(), owned.vlan())).or_default() += 1;
                n_got += 1;
            }
        }
        if got != want {
            let missing: Vec<String> = want
                .keys()
                .filter(|k| !got.contains_key(*k))
                .take(5)
                .map(|k| hex(k))
                .collect();
            let extra: Vec<String> = got
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(5)
                .map(|k| hex(k))
                .collect();
            panic!(
                "{expr:?}: captured {n_got} frames, libpcap accepts {n_want}; missing {missing:?}, unexpected {extra:?}"
            );
        }
        eprintln!("{expr:?}: {n_got} frames captured = libpcap's verdict");
    }
    assert!(tagged_seen > 0, "no frame arrived with its tag in metadata");
    let _ = std::fs::remove_file(&path);
}

/// AF_XDP hands frames over with every VLAN tag inline (on a veth the XDP program runs before
/// the stack strips the outer tag), so `frame_program` is the one for them: its verdict on what
/// arrived is libpcap's verdict on what was sent.
#[test]
fn xdp_frames_keep_their_tags_inline() {
    if !can_run("xdp_frames_keep_their_tags_inline", &["scapy"]) {
        return;
    }
    let frames: Vec<Frame> = frames()
        .into_iter()
        .filter(|f| {
            f.data.len() == f.wire_len && f.wire_len >= 20 && f.data[6..9] == [2, 0x4e, 0x52]
        })
        .take(400)
        .collect();
    let tagged = frames
        .iter()
        .filter(|f| wire_tag(&f.data).is_some())
        .count();
    assert!(tagged > 50, "only {tagged} tagged frames in the mix");
    let path = scratch("filter_expr_xdp.pcap");
    write_pcap(&path, &frames);
    for mode in [AttachMode::Native, AttachMode::Generic] {
        let net = TestNet::new();
        let mut xsk = net
            .within(|| {
                netring::xdp::XdpSocket::builder(&net.b)
                    .attach_mode(mode)
                    .open()
            })
            .expect("opening the XdpSocket");
        let mut sender = ChunkSender::start(&net, &net.a, &path);
        let mut got: Vec<Vec<u8>> = Vec::new();
        while sender.requested < frames.len() {
            sender.request(50.min(frames.len() - sender.requested));
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.len() < sender.requested && Instant::now() < deadline {
                if let Some(batch) = xsk.next_batch(Some(Duration::from_millis(100))).unwrap() {
                    got.extend(
                        batch
                            .iter()
                            .filter(|p| p.data().len() >= 9 && p.data()[6..9] == [2, 0x4e, 0x52])
                            .map(|p| p.data().to_vec()),
                    );
                }
            }
        }
        sender.finish();
        assert_eq!(
            got.len(),
            frames.len(),
            "{mode:?}: frames received on AF_XDP"
        );
        let inline = got.iter().filter(|f| wire_tag(f).is_some()).count();
        for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
            assert_frame_eq(&format!("{mode:?}: AF_XDP frame vs sent"), i, g, &f.data);
        }
        assert_eq!(
            inline, tagged,
            "{mode:?}: tagged frames that arrived with the tag inline"
        );
        for expr in KERNEL_EXPRESSIONS {
            let f = Filter::new(expr).unwrap();
            let want = libpcap_verdicts(&path, expr, frames.len(), false).unwrap();
            for (i, g) in got.iter().enumerate() {
                assert_eq!(
                    f.matches(g.as_slice()),
                    want[i],
                    "{mode:?}: {expr:?} frame {i}"
                );
            }
        }
        eprintln!(
            "AF_XDP ({:?}): {} frames, {tagged} tagged, all with the tag inline",
            xsk.attach_mode(),
            got.len()
        );
    }
    let _ = std::fs::remove_file(&path);
}

/// Random token strings from the grammar's vocabulary: whatever libpcap refuses we refuse, and
/// where both compile, the verdicts agree on every frame. (Expressions only libpcap accepts use
/// what this compiler does not support; they are counted.)
#[test]
fn random_expressions_agree_with_libpcap() {
    if !can_run("random_expressions_agree_with_libpcap", &["scapy"]) {
        return;
    }
    let frames = frames();
    let path = scratch("filter_expr_random.pcap");
    write_pcap(&path, &frames);
    let records: Vec<PcapRecord> = PcapReader::new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
    let mut rng = Rng::new(2024);
    let (mut both, mut neither, mut only_libpcap) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    for _ in 0..3000 {
        let mut toks = random_expr(&mut rng, 0);
        // Every third one mutated: a token dropped, repeated or swapped for a random one.
        if rng.range(0, 2) == 0 && !toks.is_empty() {
            let at = rng.range(0, toks.len() - 1);
            match rng.range(0, 2) {
                0 => {
                    toks.remove(at);
                }
                1 => toks.insert(at, toks[at].clone()),
                _ => toks[at] = pick(&mut rng, TOKENS).to_string(),
            }
        }
        let expr = toks.join(" ");
        let theirs = dead.compile(&expr, false).is_ok();
        let ours = Filter::new(&expr);
        match (theirs, ours) {
            (false, Err(_)) => neither += 1,
            (true, Err(e)) => only_libpcap.push(format!("{expr:?}: {e}")),
            (false, Ok(_)) => failures.push(format!("{expr:?}: libpcap refuses it, we accept")),
            (true, Ok(f)) => {
                both += 1;
                let want = libpcap_verdicts(&path, &expr, frames.len(), false).unwrap();
                if let Some(i) = (0..frames.len()).find(|&i| f.matches(&records[i]) != want[i]) {
                    failures.push(format!(
                        "{expr:?} frame {i}: libpcap {}, ours {}",
                        want[i], !want[i]
                    ));
                }
                let kernel_differs = |i: &usize| {
                    stripped(&frames[*i])
                        .is_some_and(|(d, info)| f.kernel_program().matches(&d, &info) != want[*i])
                };
                if let Some(i) = (0..frames.len()).find(kernel_differs) {
                    failures.push(format!(
                        "{expr:?} frame {i}, tag stripped: kernel program differs"
                    ));
                }
            }
        }
    }
    eprintln!(
        "random expressions: {both} compiled by both (verdicts compared on {} frames), {neither} \
         refused by both, {} only by libpcap, {} failures",
        frames.len(),
        only_libpcap.len(),
        failures.len()
    );
    for e in only_libpcap.iter().take(15) {
        eprintln!("  only libpcap: {e}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(both > 800, "only {both} expressions compiled by both");
    let _ = std::fs::remove_file(&path);
}

const TOKENS: &[&str] = &[
    "tcp", "udp", "ip", "ip6", "arp", "vlan", "100", "host", "10.0.0.1", "port", "53", "and", "or",
    "not", "(", ")", "src", "dst", "net", "len", ">", "=", "ether", "proto", "[", "]", ":", "&",
    "!", "-", "/", "mask", "1-1024", "fe80::1",
];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.range(0, from.len() - 1)]
}

/// A random expression from the supported grammar, as tokens.
fn random_expr(rng: &mut Rng, depth: usize) -> Vec<String> {
    let mut out = random_term(rng, depth);
    for _ in 0..rng.range(0, 3) {
        out.push(pick(rng, &["and", "or", "&&", "||"]).to_string());
        if rng.range(0, 3) == 0 {
            // Shorthand: a bare value inheriting the last qualifiers.
            if rng.range(0, 3) == 0 {
                out.push("not".into());
            }
            out.push(
                pick(
                    rng,
                    &["10.0.0.2", "53", "80", "10.0.1.5", "2001:db8::1", "443"],
                )
                .into(),
            );
        } else {
            out.extend(random_term(rng, depth));
        }
    }
    out
}

fn random_term(rng: &mut Rng, depth: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if rng.range(0, 4) == 0 {
        out.push(pick(rng, &["not", "!"]).into());
    }
    if depth < 3 && rng.range(0, 5) == 0 {
        out.push("(".into());
        out.extend(random_expr(rng, depth + 1));
        out.push(")".into());
        return out;
    }
    let dir = || -> &[&str] { &["", "", "src", "dst", "src or dst", "src and dst"] };
    let words: String = match rng.range(0, 11) {
        0 => pick(
            rng,
            &[
                "ip", "ip6", "arp", "rarp", "tcp", "udp", "sctp", "icmp", "icmp6",
            ],
        )
        .into(),
        1 => format!(
            "{} {} host {}",
            pick(rng, &["", "", "ip", "arp", "rarp", "ip6", "tcp"]),
            pick(rng, dir()),
            pick(
                rng,
                &[
                    "10.0.0.1",
                    "10.0.0.2",
                    "192.168.1.1",
                    "2001:db8::1",
                    "fe80::1",
                    "10.0"
                ]
            )
        ),
        2 => format!(
            "{} {} net {}",
            pick(rng, &["", "", "ip", "arp", "ip6"]),
            pick(rng, dir()),
            pick(
                rng,
                &[
                    "10.0.0.0/8",
                    "10.0.0.0/24",
                    "10",
                    "192.168",
                    "2001:db8::/32",
                    "10.0.1.0 mask 255.255.255.0",
                    "0.0.0.0/0",
                    "10.0.0.1/8"
                ]
            )
        ),
        3 => format!(
            "{} {} {} {}",
            pick(rng, &["", "", "tcp", "udp", "sctp", "ip"]),
            pick(rng, dir()),
            pick(rng, &["port", "port", "portrange"]),
            pick(
                rng,
                &[
                    "53",
                    "80",
                    "443",
                    "1024",
                    "1-1024",
                    "50-60",
                    "70000",
                    "(80 or 443)"
                ]
            )
        ),
        4 => format!("vlan {}", pick(rng, &["", "", "100", "200", "300", "0"])),
        5 => format!(
            "{} {} {}",
            pick(
                rng,
                &[
                    "len",
                    "ip[2:2]",
                    "tcp[13] & 2",
                    "udp[2:2]",
                    "ip[9]",
                    "ether[12:2]",
                    "len - 14",
                    "ip[0] & 0xf",
                    "icmp[0]",
                    "arp[7]",
                    "ip6[6]",
                    "ip[6:2] & 0x1fff"
                ]
            ),
            pick(rng, &[">", "<", ">=", "<=", "=", "!=", "=="]),
            pick(
                rng,
                &["0", "2", "6", "17", "60", "100", "0x800", "53", "len"]
            )
        ),
        6 => format!(
            "{} {}",
            pick(rng, &["less", "greater"]),
            pick(rng, &["60", "100"])
        ),
        7 => format!(
            "ether {} {}",
            pick(
                rng,
                &[
                    "src",
                    "dst",
                    "host",
                    "src host",
                    "dst host",
                    "proto",
                    "broadcast",
                    "multicast"
                ]
            ),
            pick(
                rng,
                &[
                    "02:4e:52:00:00:01",
                    "ff:ff:ff:ff:ff:ff",
                    "\\ip",
                    "\\arp",
                    "0x88b5",
                    "6",
                    ""
                ]
            )
        ),
        8 => format!(
            "{} proto {}",
            pick(rng, &["ip", "ip6", ""]),
            pick(rng, &["6", "17", "58", "\\tcp", "\\udp", "44"])
        ),
        9 => format!(
            "{} {}",
            pick(rng, &["ip", "ip6", "ether", ""]),
            pick(rng, &["multicast", "broadcast"])
        ),
        _ => format!(
            "{} {}",
            pick(rng, &["src", "dst"]),
            pick(rng, &["10.0.0.1", "10.0.0.2"])
        ),
    };
    out.extend(words.split_whitespace().map(str::to_string));
    out
}
