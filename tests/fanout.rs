//! Fanout groups: sockets of one `PACKET_FANOUT` group share an interface's traffic, each packet
//! delivered to exactly one member, and with `FanoutMode::Hash` every packet of a flow to the same
//! member. The traffic comes from scapy, independent of the crate's TX path.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use netring::{Capture, Fanout, FanoutFlags, FanoutMode};

const MAGIC: &[u8; 4] = b"NRFO";

/// A fanout group id unique to this process and call (group ids are per network namespace, and
/// each test has its own namespace, but keep them distinct anyway).
fn group_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ((std::process::id() as u16) & 0x7ff0) | (n & 0xf) | 0x8000
}

/// Starts scapy sending `flows` distinct UDP 5-tuples x `per_flow` packets from `dev`,
/// interleaved (packet k of every flow before packet k+1 of any). The payload carries the flow
/// and sequence numbers after `MAGIC`. The members must be read while it runs: every block
/// retired by timeout takes a ring slot, however few packets it holds.
fn scapy_send_flows(
    net: &TestNet,
    dev: &str,
    dst_mac: [u8; 6],
    flows: u16,
    per_flow: u16,
) -> Sender {
    let mac = dst_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let script = format!(
        r#"
import struct
from scapy.all import Ether, IP, UDP, Raw, sendp
pkts = []
for seq in range({per_flow}):
    for f in range({flows}):
        payload = b"NRFO" + struct.pack("!HH", f, seq) + b"x" * 16
        pkts.append(Ether(src="02:00:00:00:00:01", dst="{mac}")
                    / IP(src="10.1.%d.%d" % (f // 8, 1 + f % 8), dst="10.2.0.%d" % (1 + f % 5))
                    / UDP(sport=10000 + 7 * f, dport=20000 + (f * 13) % 97)
                    / Raw(payload))
sendp(pkts, iface="{dev}", verbose=0)
print(len(pkts))
"#
    );
    let child = net
        .cmd(SCAPY_PYTHON)
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning scapy");
    Sender(Some(child))
}

/// A running sender, killed on drop if not waited for.
struct Sender(Option<Child>);

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (60 s at most) for the scapy sender and checks it sent `n` packets.
fn finish_sender(mut sender: Sender, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.0.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "scapy did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = sender.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "scapy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(sent, n);
}

/// (flow, seq) of one of our frames, or None for anything else.
fn flow_of(frame: &[u8]) -> Option<(u16, u16)> {
    // Ethernet (14) + IPv4 without options (20) + UDP (8) = 42.
    if frame.len() < 50 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 || frame[23] != 17 {
        return None;
    }
    let p = &frame[42..];
    if &p[..4] != MAGIC {
        return None;
    }
    Some((
        u16::from_be_bytes([p[4], p[5]]),
        u16::from_be_bytes([p[6], p[7]]),
    ))
}

struct Received {
    /// (flow, seq) -> the member indices that got it (once each).
    seen: BTreeMap<(u16, u16), Vec<usize>>,
    /// Frames that were not ours, per member.
    foreign: Vec<usize>,
    /// Frames per member.
    per_member: Vec<usize>,
}

/// Reads every member until `expected` of our frames arrived (or 60 s passed: scapy is slow on a
/// loaded machine), then keeps reading a little longer so duplicates or strays would show up too.
fn drain(caps: &mut [Capture], expected: usize) -> Received {
    let mut r = Received {
        seen: BTreeMap::new(),
        foreign: vec![0; caps.len()],
        per_member: vec![0; caps.len()],
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ours = 0;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if ours >= expected && settle_until.is_none() {
            settle_until = Some(now + Duration::from_millis(300));
        }
        if settle_until.is_some_and(|s| now >= s) || now >= deadline {
            break;
        }
        for (i, cap) in caps.iter_mut().enumerate() {
            let Some(batch) = cap.next_batch(Some(Duration::from_millis(10))).unwrap() else {
                continue;
            };
            for pkt in &batch {
                r.per_member[i] += 1;
                match flow_of(pkt.data()) {
                    Some(key) => {
                        r.seen.entry(key).or_default().push(i);
                        ours += 1;
                    }
                    None => r.foreign[i] += 1,
                }
            }
        }
    }
    r
}

/// What the kernel says about the path, for failure messages: the members' counters, the veth
/// counters, and the per-CPU backlog drops (`/proc/net/softnet_stat`, second column).
fn diagnostics(net: &TestNet, caps: &mut [Capture]) -> String {
    let stats: Vec<_> = caps.iter_mut().map(|c| c.cumulative_stats()).collect();
    let counter = |dev: &str, name: &str| {
        let out = run(net
            .cmd("cat")
            .arg(format!("/sys/class/net/{dev}/statistics/{name}")));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    let backlog_drops: Vec<String> = softnet
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    format!(
        "member stats {stats:?}; {} tx_packets {} tx_dropped {}; {} rx_packets {} rx_dropped {}; \
         softnet backlog drops per CPU {backlog_drops:?}",
        net.a,
        counter(&net.a, "tx_packets"),
        counter(&net.a, "tx_dropped"),
        net.b,
        counter(&net.b, "rx_packets"),
        counter(&net.b, "rx_dropped"),
    )
}

/// Asserts that every sent (flow, seq) arrived exactly once and every flow stayed on one member.
/// Returns the member each flow went to.
fn check_flows(r: &Received, flows: u16, per_flow: u16, diag: &str) -> BTreeMap<u16, usize> {
    let total: usize = r.per_member.iter().sum();
    let sent = flows as usize * per_flow as usize;
    assert_eq!(
        r.foreign.iter().sum::<usize>(),
        0,
        "frames that were not sent by the test arrived: {:?}",
        r.foreign
    );
    assert_eq!(
        total, sent,
        "received {total} frames in all (per member {:?}), sent {sent}; {diag}",
        r.per_member
    );
    let mut member_of: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for f in 0..flows {
        for s in 0..per_flow {
            let got = r.seen.get(&(f, s)).map(Vec::as_slice).unwrap_or(&[]);
            assert_eq!(
                got.len(),
                1,
                "flow {f} packet {s} delivered to members {got:?} (expected exactly one)"
            );
            member_of.entry(f).or_default().insert(got[0]);
        }
    }
    member_of
        .into_iter()
        .map(|(f, members)| {
            assert_eq!(
                members.len(),
                1,
                "flow {f} was split across members {members:?}"
            );
            (f, *members.iter().next().unwrap())
        })
        .collect()
}

#[test]
fn hash_fanout_keeps_each_flow_on_one_socket() {
    if !can_run("hash_fanout_keeps_each_flow_on_one_socket", &["scapy"]) {
        return;
    }
    const MEMBERS: usize = 4;
    const FLOWS: u16 = 64;
    const PER_FLOW: u16 = 20;
    let net = TestNet::new();
    let id = group_id();
    let mut caps: Vec<Capture> = (0..MEMBERS)
        .map(|_| {
            net.within(|| {
                Capture::builder(&net.b)
                    .fanout(Fanout::new(FanoutMode::Hash, id))
                    .open()
            })
            .unwrap()
        })
        .collect();
    for cap in &caps {
        assert_eq!(cap.fanout_group_id(), Some(id));
    }

    let sender = scapy_send_flows(&net, &net.a, net.mac(&net.b), FLOWS, PER_FLOW);
    let r = drain(&mut caps, FLOWS as usize * PER_FLOW as usize);
    finish_sender(sender, FLOWS as usize * PER_FLOW as usize);
    let diag = diagnostics(&net, &mut caps);
    let member_of = check_flows(&r, FLOWS, PER_FLOW, &diag);
    let used: BTreeSet<usize> = member_of.values().copied().collect();
    assert!(
        used.len() >= 2,
        "all {FLOWS} flows went to one member ({used:?}): the traffic was not spread"
    );

    let mut kernel_total = 0;
    for (i, cap) in caps.iter_mut().enumerate() {
        let s = cap.cumulative_stats().unwrap();
        assert_eq!(s.drops, 0, "member {i} dropped packets: {s:?}");
        assert_eq!(
            s.packets as usize, r.per_member[i],
            "member {i}: kernel counted {s:?}, we read {}",
            r.per_member[i]
        );
        kernel_total += s.packets;
        assert_eq!(cap.sequence_gaps(), 0);
    }
    assert_eq!(kernel_total, FLOWS as u64 * PER_FLOW as u64);
    eprintln!(
        "fanout: per member {:?}, {} flows over {} members",
        r.per_member,
        FLOWS,
        used.len()
    );
}

#[test]
fn unique_id_and_group_zero_report_their_group() {
    if !can_run("unique_id_and_group_zero_report_their_group", &["scapy"]) {
        return;
    }
    let net = TestNet::new();

    // Not in a group.
    let plain = net.within(|| Capture::open(&net.b)).unwrap();
    assert_eq!(plain.fanout_group_id(), None);
    drop(plain);

    // Group id 0 is a valid id: a member of group 0 must say so.
    let zero = net
        .within(|| {
            Capture::builder(&net.b)
                .fanout(Fanout::new(FanoutMode::Hash, 0))
                .open()
        })
        .unwrap();
    assert_eq!(zero.fanout_group_id(), Some(0));
    drop(zero);

    // The kernel picks the id; a second socket joins the group by that id.
    let first = net
        .within(|| {
            Capture::builder(&net.b)
                .fanout(Fanout::new(FanoutMode::Hash, 0).flags(FanoutFlags::UNIQUE_ID))
                .open()
        })
        .unwrap();
    let id = first
        .fanout_group_id()
        .expect("a UNIQUE_ID member must report the id the kernel chose");
    let second = net
        .within(|| {
            Capture::builder(&net.b)
                .fanout(Fanout::new(FanoutMode::Hash, id))
                .open()
        })
        .unwrap();
    assert_eq!(second.fanout_group_id(), Some(id));

    // They really share one group: 16 flows x 10 packets, each delivered once, flows kept whole.
    let mut caps = vec![first, second];
    let sender = scapy_send_flows(&net, &net.a, net.mac(&net.b), 16, 10);
    let r = drain(&mut caps, 160);
    finish_sender(sender, 160);
    let diag = diagnostics(&net, &mut caps);
    check_flows(&r, 16, 10, &diag);
    for cap in &mut caps {
        assert_eq!(cap.cumulative_stats().unwrap().drops, 0);
    }
}
