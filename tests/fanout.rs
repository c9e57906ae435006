//! Fanout groups: sockets of one `PACKET_FANOUT` group share an interface's traffic, each packet
//! delivered to exactly one member, and with `FanoutMode::Hash` every packet of a flow to the same
//! member. The traffic comes from scapy, independent of the crate's TX path.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use netring::afpacket::MAX_FANOUT_MEMBERS;
use netring::xdp::{AluOp, Insn, MemSize, Reg};
use netring::{
    BpfInsn, BpfProgram, Capture, CaptureBuilder, Error, Fanout, FanoutFlags, FanoutGroup,
    FanoutMode, Protocol, SocketProgram,
};

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
/// and sequence numbers after `MAGIC`. With `both_directions`, each packet is followed by one of
/// the reverse direction (addresses and ports swapped) whose sequence number has bit 15 set. The
/// members must be read while it runs: every block retired by timeout takes a ring slot, however
/// few packets it holds.
fn scapy_send_flows(
    net: &TestNet,
    dev: &str,
    dst_mac: [u8; 6],
    flows: u16,
    per_flow: u16,
    both_directions: bool,
) -> Sender {
    let both = if both_directions { "True" } else { "False" };
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
        a, b = "10.1.%d.%d" % (f // 8, 1 + f % 8), "10.2.0.%d" % (1 + f % 5)
        pa, pb = 10000 + 7 * f, 20000 + (f * 13) % 97
        payload = b"NRFO" + struct.pack("!HH", f, seq) + b"x" * 16
        pkts.append(Ether(src="02:00:00:00:00:01", dst="{mac}")
                    / IP(src=a, dst=b) / UDP(sport=pa, dport=pb) / Raw(payload))
        if {both}:
            payload = b"NRFO" + struct.pack("!HH", f, seq | 0x8000) + b"y" * 16
            pkts.append(Ether(src="02:00:00:00:00:01", dst="{mac}")
                        / IP(src=b, dst=a) / UDP(sport=pb, dport=pa) / Raw(payload))
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

/// (flow, seq) of one of our frames, or None for anything else: UDP over IPv4 from
/// `scapy_send_flows`, or a `TEST_ETHERTYPE` frame from `length_frames`.
fn flow_of(frame: &[u8]) -> Option<(u16, u16)> {
    let p = if frame.len() >= 22 && frame[12..14] == [0x88, 0xb5] {
        &frame[14..]
    } else if frame.len() >= 50
        && frame[12..14] == [0x08, 0x00]
        && frame[14] == 0x45
        && frame[23] == 17
    {
        // Ethernet (14) + IPv4 without options (20) + UDP (8) = 42.
        &frame[42..]
    } else {
        return None;
    };
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

    let sender = scapy_send_flows(&net, &net.a, net.mac(&net.b), FLOWS, PER_FLOW, false);
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
    let sender = scapy_send_flows(&net, &net.a, net.mac(&net.b), 16, 10, false);
    let r = drain(&mut caps, 160);
    finish_sender(sender, 160);
    let diag = diagnostics(&net, &mut caps);
    check_flows(&r, 16, 10, &diag);
    for cap in &mut caps {
        assert_eq!(cap.cumulative_stats().unwrap().drops, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Whole groups: `FanoutGroup`, program modes, flags, errors.

/// scapy writes `n` frames of `TEST_ETHERTYPE` with random lengths in `lo..=hi` to a pcap; the
/// payload is `MAGIC`, flow 0 and the frame's index (u16), then random bytes.
const SCAPY_LENGTH_FRAMES: &str = r#"
import random, struct, sys
from scapy.all import Ether, Raw, wrpcap
out, n, seed, lo, hi = sys.argv[1], *map(int, sys.argv[2:6])
rng = random.Random(seed)
frames = []
for i in range(n):
    size = lo if i == 0 else hi if i == 1 else rng.randint(lo, hi)
    payload = b"NRFO" + struct.pack("!HH", 0, i)
    payload += bytes(rng.randrange(256) for _ in range(size - 14 - len(payload)))
    frames.append(bytes(Ether(src="02:4e:52:00:00:01", dst="02:4e:52:00:00:02", type=0x88b5)
                        / Raw(payload)))
    assert len(frames[-1]) == size
wrpcap(out, frames, linktype=1)
sys.stdout.write("\n".join(f.hex() for f in frames) + "\n")
"#;

/// Frames scapy wrote (see [`SCAPY_LENGTH_FRAMES`]); the pcap is removed on drop unless the test
/// failed.
struct LengthFrames {
    file: String,
    frames: Vec<Vec<u8>>,
}

impl Drop for LengthFrames {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

fn length_frames(name: &str, n: usize, seed: u64, lo: usize, hi: usize) -> LengthFrames {
    let file = scratch(&format!("{name}.pcap"));
    let out = run(scapy_script(SCAPY_LENGTH_FRAMES)
        .arg(&file)
        .args([n, seed as usize, lo, hi].map(|v| v.to_string())));
    let frames: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .expect("scapy output is text")
        .lines()
        .map(common::frames::unhex)
        .collect();
    assert_eq!(frames.len(), n, "scapy printed {} frames", frames.len());
    LengthFrames { file, frames }
}

/// The index a length frame carries.
fn index_of(frame: &[u8]) -> u16 {
    flow_of(frame).expect("one of our frames").1
}

/// Member captures for the length frames: only `TEST_ETHERTYPE`, small rings.
fn length_template(net: &TestNet) -> CaptureBuilder {
    Capture::builder(&net.b)
        .protocol(Protocol::EtherType(0x88b5))
        .block_size(1 << 16)
        .block_count(64)
}

/// Replays `frames` into `net.b` with tcpreplay while reading `caps`.
fn replay_and_drain(net: &TestNet, caps: &mut [Capture], frames: &LengthFrames) -> Received {
    std::thread::scope(|s| {
        let sender =
            s.spawn(|| common::frames::tcpreplay(net, &net.a, &frames.file, 3000) as usize);
        let r = drain(caps, frames.frames.len());
        assert_eq!(
            sender.join().unwrap(),
            frames.frames.len(),
            "tcpreplay sent"
        );
        r
    })
}

/// Asserts that every frame arrived exactly once, at the member `member_of` names, and nothing
/// else arrived.
fn check_mapping(r: &Received, frames: &[Vec<u8>], member_of: impl Fn(&[u8]) -> usize) {
    assert_eq!(
        r.foreign.iter().sum::<usize>(),
        0,
        "frames not sent by the test arrived: {:?}",
        r.foreign
    );
    for f in frames {
        let key = flow_of(f).unwrap();
        let want = member_of(f);
        let got = r.seen.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            got,
            [want],
            "frame {} ({} bytes) went to members {got:?}, expected member {want} (per member {:?})",
            key.1,
            f.len(),
            r.per_member
        );
    }
    assert_eq!(r.per_member.iter().sum::<usize>(), frames.len());
}

/// `ld len; mod #n; ret a`: the member is the packet length (from the network header) modulo `n`.
fn len_mod_program(n: u32) -> BpfProgram {
    BpfProgram::new(vec![
        BpfInsn::new(0x80, 0, 0, 0), // BPF_LD | BPF_W | BPF_LEN
        BpfInsn::new(0x94, 0, 0, n), // BPF_ALU | BPF_MOD | BPF_K
        BpfInsn::new(0x16, 0, 0, 0), // BPF_RET | BPF_A
    ])
    .unwrap()
}

/// The member `len_mod_program(n)` picks for a received Ethernet frame: the kernel runs fanout
/// programs after consuming the 14-byte link-layer header.
fn member_by_len(frame: &[u8], n: usize) -> usize {
    (frame.len() - 14) % n
}

#[test]
fn cbpf_program_picks_the_member_by_length() {
    if !can_run(
        "cbpf_program_picks_the_member_by_length",
        &["scapy", "tcpreplay"],
    ) {
        return;
    }
    const N: usize = 3;
    let frames = length_frames("cbpf", 600, 11, 60, 900);
    let net = TestNet::new();
    let mut caps = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Cbpf(len_mod_program(N as u32)))
                .members(N)
                .capture(length_template(&net))
                .open()
        })
        .unwrap();
    assert_eq!(caps.len(), N);
    let id = caps[0].fanout_group_id().expect("in a group");
    assert!(caps.iter().all(|c| c.fanout_group_id() == Some(id)));

    let r = replay_and_drain(&net, &mut caps, &frames);
    check_mapping(&r, &frames.frames, |f| member_by_len(f, N));
    assert!(r.per_member.iter().all(|&n| n > 0), "{:?}", r.per_member);
    eprintln!("cbpf: per member {:?}", r.per_member);
}

/// `r0 = byte 7 of the packet from its network header (the low byte of the index) % n`, with
/// the legacy packet load (`BPF_LD | BPF_ABS | BPF_B`, context in R6).
fn index_byte_mod(n: i32) -> Vec<Insn> {
    vec![
        Insn::mov64_reg(Reg::R6, Reg::R1),
        Insn::new(0x30, 0, 0, 0, 7), // r0 = *(u8 *)(skb->data + 7)
        Insn::alu64_imm(AluOp::Mod, Reg::R0, n),
        Insn::exit(),
    ]
}

#[test]
fn ebpf_program_picks_the_member_by_payload() {
    if !can_run(
        "ebpf_program_picks_the_member_by_payload",
        &["scapy", "tcpreplay"],
    ) {
        return;
    }
    const N: usize = 4;
    let frames = length_frames("ebpf", 600, 12, 60, 400);
    let prog = SocketProgram::load(&index_byte_mod(N as i32)).unwrap();
    // The kernel's own run of the program agrees with the expected mapping.
    for f in frames.frames.iter().take(20) {
        let want = (index_of(f) & 0xff) as u32 % N as u32;
        assert_eq!(prog.test_run(f).unwrap(), want);
    }
    // A length program sees the frame from its network header too.
    let len = SocketProgram::load(&[Insn::ldx_mem(MemSize::W, Reg::R0, Reg::R1, 0), Insn::exit()])
        .unwrap();
    assert_eq!(len.test_run(&frames.frames[0]).unwrap() as usize, 60 - 14);
    // Adopting a descriptor (as from aya) gives the same program.
    let dup = prog.as_fd().try_clone_to_owned().unwrap();
    assert_eq!(SocketProgram::from_fd(dup).unwrap(), prog);

    let net = TestNet::new();
    let mut caps = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Ebpf(Arc::new(prog)))
                .members(N)
                .capture(length_template(&net))
                .open()
        })
        .unwrap();
    let r = replay_and_drain(&net, &mut caps, &frames);
    check_mapping(&r, &frames.frames, |f| (index_of(f) & 0xff) as usize % N);
    eprintln!("ebpf: per member {:?}", r.per_member);
}

#[test]
fn hash_group_keeps_both_directions_of_a_flow_together() {
    if !can_run(
        "hash_group_keeps_both_directions_of_a_flow_together",
        &["scapy"],
    ) {
        return;
    }
    const N: usize = 4;
    const FLOWS: u16 = 32;
    const PER_FLOW: u16 = 10;
    let net = TestNet::new();
    let id = group_id();
    let mut caps = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Hash)
                .members(N)
                .id(id)
                .open()
        })
        .unwrap();
    assert!(caps.iter().all(|c| c.fanout_group_id() == Some(id)));

    let total = FLOWS as usize * PER_FLOW as usize * 2;
    let sender = scapy_send_flows(&net, &net.a, net.mac(&net.b), FLOWS, PER_FLOW, true);
    let r = drain(&mut caps, total);
    finish_sender(sender, total);
    let diag = diagnostics(&net, &mut caps);
    assert_eq!(r.foreign.iter().sum::<usize>(), 0, "{:?}", r.foreign);
    assert_eq!(r.per_member.iter().sum::<usize>(), total, "{diag}");
    let mut used = BTreeSet::new();
    for f in 0..FLOWS {
        let mut members = BTreeSet::new();
        for s in 0..PER_FLOW {
            for key in [(f, s), (f, s | 0x8000)] {
                let got = r.seen.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                assert_eq!(got.len(), 1, "{key:?} went to members {got:?}; {diag}");
                members.insert(got[0]);
            }
        }
        assert_eq!(
            members.len(),
            1,
            "flow {f} (both directions) was split over members {members:?}"
        );
        used.extend(members);
    }
    assert!(used.len() >= 2, "every flow went to member(s) {used:?}");
    eprintln!("hash both ways: per member {:?}", r.per_member);
}

#[test]
fn unique_id_groups_get_distinct_ids_and_do_not_mix() {
    if !can_run(
        "unique_id_groups_get_distinct_ids_and_do_not_mix",
        &["scapy", "tcpreplay"],
    ) {
        return;
    }
    let frames = length_frames("unique", 300, 13, 60, 300);
    let net = TestNet::new();
    let open = || {
        net.within(|| {
            FanoutGroup::new(&net.b, FanoutMode::LoadBalance)
                .members(2)
                .capture(length_template(&net))
                .open()
        })
        .unwrap()
    };
    let first = open();
    let second = open();
    let ids: Vec<Option<u16>> = first
        .iter()
        .chain(&second)
        .map(Capture::fanout_group_id)
        .collect();
    assert!(ids.iter().all(Option::is_some), "{ids:?}");
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2], "two unique-id groups got the same id");

    // Members 0 and 1 are the first group, 2 and 3 the second: each group gets every frame once.
    let mut caps: Vec<Capture> = first.into_iter().chain(second).collect();
    let r = replay_and_drain(&net, &mut caps, &frames);
    assert_eq!(r.foreign.iter().sum::<usize>(), 0);
    for f in &frames.frames {
        let key = flow_of(f).unwrap();
        let got = r.seen.get(&key).cloned().unwrap_or_default();
        let in_first = got.iter().filter(|&&m| m < 2).count();
        let in_second = got.iter().filter(|&&m| m >= 2).count();
        assert_eq!(
            (in_first, in_second),
            (1, 1),
            "frame {} went to members {got:?}",
            key.1
        );
    }
    assert_eq!(r.per_member.iter().sum::<usize>(), 2 * frames.frames.len());
    assert!(r.per_member.iter().all(|&n| n > 0), "{:?}", r.per_member);
}

#[test]
fn every_mode_delivers_each_frame_to_exactly_one_member() {
    if !can_run(
        "every_mode_delivers_each_frame_to_exactly_one_member",
        &["scapy", "tcpreplay"],
    ) {
        return;
    }
    const N: usize = 3;
    let frames = length_frames("modes", 300, 14, 60, 500);
    let net = TestNet::new();
    let cases = [
        (FanoutMode::LoadBalance, FanoutFlags::ROLLOVER, true),
        (FanoutMode::LoadBalance, FanoutFlags::NONE, true),
        (FanoutMode::Rollover, FanoutFlags::NONE, false),
        (FanoutMode::Cpu, FanoutFlags::NONE, false),
        (FanoutMode::Random, FanoutFlags::NONE, false),
        (FanoutMode::QueueMapping, FanoutFlags::NONE, false),
        (
            FanoutMode::Hash,
            FanoutFlags::DEFRAG | FanoutFlags::ROLLOVER | FanoutFlags::IGNORE_OUTGOING,
            false,
        ),
    ];
    for (mode, flags, spread) in cases {
        let what = format!("{mode:?} with flags {:#06x}", flags.bits());
        let mut caps = net
            .within(|| {
                FanoutGroup::new(&net.b, mode.clone())
                    .members(N)
                    .flags(flags)
                    .capture(length_template(&net))
                    .open()
            })
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let r = replay_and_drain(&net, &mut caps, &frames);
        assert_eq!(r.foreign.iter().sum::<usize>(), 0, "{what}");
        for f in &frames.frames {
            let key = flow_of(f).unwrap();
            let got = r.seen.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            assert_eq!(got.len(), 1, "{what}: frame {} went to {got:?}", key.1);
        }
        assert_eq!(
            r.per_member.iter().sum::<usize>(),
            frames.frames.len(),
            "{what}"
        );
        if spread {
            assert!(
                r.per_member.iter().all(|&n| n > 0),
                "{what}: a member got nothing: {:?}",
                r.per_member
            );
        }
        eprintln!("{what}: per member {:?}", r.per_member);
    }
}

#[test]
fn ignore_outgoing_flag_skips_frames_the_host_sends() {
    if !can_run(
        "ignore_outgoing_flag_skips_frames_the_host_sends",
        &["scapy", "tcpreplay"],
    ) {
        return;
    }
    let frames = length_frames("outgoing", 100, 15, 60, 200);
    let net = TestNet::new();
    // Only `Protocol::All` sockets see outgoing frames at all.
    let open = |flags| {
        net.within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Hash)
                .members(2)
                .flags(flags)
                .capture(length_template(&net).protocol(Protocol::All))
                .open()
        })
        .unwrap()
    };
    // Members 0, 1: ignoring outgoing frames; 2, 3: a control group that sees them.
    let mut caps: Vec<Capture> = open(FanoutFlags::IGNORE_OUTGOING)
        .into_iter()
        .chain(open(FanoutFlags::NONE))
        .collect();
    // Sent out of net.b: outgoing there.
    let sent = common::frames::tcpreplay(&net, &net.b, &frames.file, 3000) as usize;
    assert_eq!(sent, frames.frames.len());
    let r = drain(&mut caps, frames.frames.len());
    let ours = |r: &Received, m: usize| r.per_member[m] - r.foreign[m];
    assert_eq!(
        ours(&r, 0) + ours(&r, 1),
        0,
        "the ignoring group got outgoing frames: {:?}",
        r.per_member
    );
    assert_eq!(
        ours(&r, 2) + ours(&r, 3),
        frames.frames.len(),
        "the control group: {:?}",
        r.per_member
    );
    // Received on net.b: both groups get every frame, once.
    let r = replay_and_drain(&net, &mut caps, &frames);
    assert_eq!(ours(&r, 0) + ours(&r, 1), frames.frames.len());
    assert_eq!(ours(&r, 2) + ours(&r, 3), frames.frames.len());
    assert!(
        r.seen.values().all(|m| m.len() == 2),
        "a frame twice in a group"
    );
}

#[test]
fn bad_group_settings_are_config_errors() {
    // Checked before touching the kernel: no privileges needed.
    for n in [0, MAX_FANOUT_MEMBERS + 1] {
        let err = FanoutGroup::new("lo", FanoutMode::Hash)
            .members(n)
            .open()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{n}: {err}");
        assert!(err.to_string().contains("members"), "{err}");
    }
    let err = FanoutGroup::new("lo", FanoutMode::Hash)
        .members(2)
        .id(5)
        .flags(FanoutFlags::UNIQUE_ID)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err = Capture::builder("lo")
        .fanout(Fanout::new(FanoutMode::Hash, 5).flags(FanoutFlags::UNIQUE_ID))
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err = Capture::builder("lo")
        .fanout(Fanout::new(FanoutMode::Rollover, 5).flags(FanoutFlags::ROLLOVER))
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    // Not a BPF program.
    let null = std::fs::File::open("/dev/null").unwrap();
    let err = SocketProgram::from_fd(null.into()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[test]
fn joining_a_group_with_other_settings_is_a_typed_error() {
    if !can_run("joining_a_group_with_other_settings_is_a_typed_error", &[]) {
        return;
    }
    let net = TestNet::new();
    let id = group_id();
    let existing = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Hash)
                .members(2)
                .id(id)
                .open()
        })
        .unwrap();
    let other_mode = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::LoadBalance)
                .members(2)
                .id(id)
                .open()
        })
        .unwrap_err();
    match &other_mode {
        Error::Fanout { group_id, reason } => {
            assert_eq!(*group_id, id);
            assert!(reason.contains("another mode"), "{reason}");
        }
        e => panic!("expected Error::Fanout, got {e:?}"),
    }
    let other_flags = net
        .within(|| {
            Capture::builder(&net.b)
                .fanout(Fanout::new(FanoutMode::Hash, id).flags(FanoutFlags::DEFRAG))
                .open()
        })
        .unwrap_err();
    assert!(
        matches!(other_flags, Error::Fanout { group_id, .. } if group_id == id),
        "{other_flags:?}"
    );
    let other_device = net
        .within(|| {
            FanoutGroup::new(&net.a, FanoutMode::Hash)
                .members(1)
                .id(id)
                .open()
        })
        .unwrap_err();
    assert!(
        matches!(other_device, Error::Fanout { .. }),
        "{other_device:?}"
    );
    // The same settings join.
    let more = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Hash)
                .members(3)
                .id(id)
                .open()
        })
        .unwrap();
    assert!(
        existing
            .iter()
            .chain(&more)
            .all(|c| c.fanout_group_id() == Some(id))
    );
}

#[test]
fn refused_program_closes_every_member() {
    if !can_run("refused_program_closes_every_member", &[]) {
        return;
    }
    let net = TestNet::new();
    let id = group_id();
    // `mod #0`: structurally fine, refused by the kernel's checker.
    let bad = BpfProgram::new(vec![
        BpfInsn::new(0x80, 0, 0, 0),
        BpfInsn::new(0x94, 0, 0, 0),
        BpfInsn::new(0x16, 0, 0, 0),
    ])
    .unwrap();
    let err = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::Cbpf(bad))
                .members(3)
                .id(id)
                .open()
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidFilter(_)), "{err:?}");
    // Had any member stayed open, the group would still exist in cbpf mode and refuse this.
    let caps = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::LoadBalance)
                .members(2)
                .id(id)
                .open()
        })
        .unwrap();
    assert_eq!(caps[1].fanout_group_id(), Some(id));

    // An eBPF program the verifier refuses (R0 is never set) comes with the verifier's log.
    let err = SocketProgram::load(&[Insn::exit()]).unwrap_err();
    match err {
        Error::BpfVerifier { log } => assert!(log.contains("R0"), "{log}"),
        e => panic!("expected Error::BpfVerifier, got {e:?}"),
    }
}

#[test]
fn member_refused_midway_closes_the_ones_opened_before() {
    if !can_run("member_refused_midway_closes_the_ones_opened_before", &[]) {
        return;
    }
    let net = TestNet::new();
    let id = group_id();
    let tiny = || {
        Capture::builder(&net.b)
            .block_size(4096)
            .block_count(1)
            .frame_size(2048)
    };
    // Two places left in the group.
    let existing = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::LoadBalance)
                .members(MAX_FANOUT_MEMBERS - 2)
                .id(id)
                .capture(tiny())
                .open()
        })
        .unwrap();
    assert_eq!(existing.len(), MAX_FANOUT_MEMBERS - 2);
    // Members 0 and 1 join, member 2 is refused: the error says the group is full.
    let err = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::LoadBalance)
                .members(3)
                .id(id)
                .capture(tiny())
                .open()
        })
        .unwrap_err();
    match &err {
        Error::Fanout { group_id, reason } => {
            assert_eq!(*group_id, id);
            assert!(reason.contains("full"), "{reason}");
        }
        e => panic!("expected Error::Fanout, got {e:?}"),
    }
    // The two that joined were closed again: their places are free.
    let last_two = net
        .within(|| {
            FanoutGroup::new(&net.b, FanoutMode::LoadBalance)
                .members(2)
                .id(id)
                .capture(tiny())
                .open()
        })
        .unwrap();
    assert!(last_two.iter().all(|c| c.fanout_group_id() == Some(id)));
}

// ---------------------------------------------------------------------------------------------
// Async: every member a stream in its own task.

#[cfg(all(feature = "tokio", feature = "smol"))]
mod on_runtimes {
    use super::*;
    use common::asyncrt::*;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    crate::on_each_runtime!(member_streams_in_their_own_tasks);

    /// What one member's task received: our frames' keys, and how many other frames.
    type MemberHaul = (Vec<(u16, u16)>, usize);

    async fn member_streams_in_their_own_tasks<R: Exec>() {
        if !can_run("member_streams_in_their_own_tasks", &["scapy", "tcpreplay"]) {
            return;
        }
        const N: usize = 3;
        let frames = length_frames("async", 400, 16, 60, 700);
        let net = Arc::new(TestNet::new());
        let streams = net
            .within(|| {
                FanoutGroup::new(&net.b, FanoutMode::Cbpf(len_mod_program(N as u32)))
                    .members(N)
                    .capture(length_template(&net))
                    .open_packets::<R>()
            })
            .unwrap();
        assert_eq!(streams.len(), N);
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<Task<MemberHaul>> = streams
            .into_iter()
            .map(|mut stream| {
                let (stop, count) = (stop.clone(), count.clone());
                R::spawn(async move {
                    let (mut ours, mut foreign) = (Vec::new(), 0);
                    while !stop.load(Ordering::Relaxed) {
                        let Some(item) =
                            timeout::<R, _>(Duration::from_millis(50), stream.next()).await
                        else {
                            continue;
                        };
                        let pkt = item.expect("stream ended").expect("stream error");
                        match flow_of(pkt.data()) {
                            Some(key) => {
                                ours.push(key);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            None => foreign += 1,
                        }
                    }
                    (ours, foreign)
                })
            })
            .collect();

        let sent = replay(&net, &net.a, &frames.file, 3000).await;
        assert_eq!(sent as usize, frames.frames.len());
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::Relaxed) < frames.frames.len() && Instant::now() < deadline {
            R::sleep(Duration::from_millis(20)).await;
        }
        // A little longer, so duplicates would show.
        R::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);

        let mut r = Received {
            seen: BTreeMap::new(),
            foreign: vec![0; N],
            per_member: vec![0; N],
        };
        for (i, task) in tasks.into_iter().enumerate() {
            let (ours, foreign) = task.await;
            r.foreign[i] = foreign;
            r.per_member[i] = ours.len() + foreign;
            for key in ours {
                r.seen.entry(key).or_default().push(i);
            }
        }
        check_mapping(&r, &frames.frames, |f| member_by_len(f, N));
        eprintln!("{}: per member {:?}", R::name(), r.per_member);
    }
}
