//! User-space filter cost: netring's tcpdump compiler + classic BPF interpreter
//! (`Filter::matches`) beside libpcap's (`pcap_compile` with its optimizer +
//! `pcap_offline_filter`), same expressions, same frames, same run.
//!
//! `cargo bench --bench filter` prints, per expression, the median nanoseconds per verdict over
//! `NETRING_BENCH_FILTER_ROUNDS` rounds (default 7) of `NETRING_BENCH_FILTER_PASSES` passes
//! (default 100) over 2000 synthetic frames (IPv4/IPv6 TCP and UDP, ARP, 802.1Q-tagged IPv4,
//! short frames), the ratio to libpcap, and how many frames each accepted (they must agree).
//! No privileges or network needed.

use std::hint::black_box;
use std::time::Instant;

use netring::filter::Filter;

const EXPRESSIONS: &[&str] = &[
    "tcp",
    "tcp port 80",
    "host 10.0.0.1",
    "udp or arp",
    "net 192.168.0.0/16 and not port 22",
    "vlan 100 and tcp",
    "ip6 and udp portrange 5000-5010",
    "tcp[13] & 2 != 0",
    "len > 200",
];

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic xorshift generator (the frames are the same every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn ipv4(rng: &mut Rng) -> [u8; 4] {
    rng.pick(&[
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        [192, 168, 1, 7],
        [172, 16, 0, 9],
    ])
}

/// Ethernet + (VLAN) + IPv4/IPv6 + TCP/UDP, ARP, or a runt.
fn frame(rng: &mut Rng) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let kind = rng.next() % 10;
    if kind == 9 {
        f.extend_from_slice(&[0x08, 0x00, 0x45]); // cut short inside the IP header
        return f;
    }
    if kind == 8 {
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ipv4(rng));
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ipv4(rng));
        f.resize(60, 0);
        return f;
    }
    if kind == 7 {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&rng.pick(&[100u16, 200]).to_be_bytes());
    }
    let tcp = rng.next() % 2 == 0;
    let proto = if tcp { 6 } else { 17 };
    let payload = (rng.next() % 400) as usize;
    let l4_len = if tcp { 20 } else { 8 } + payload;
    if kind < 2 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        for _ in 0..2 {
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            f.extend_from_slice(&[0; 11]);
            f.push((rng.next() % 4) as u8);
        }
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&ipv4(rng));
        f.extend_from_slice(&ipv4(rng));
    }
    let ports = [22u16, 53, 80, 443, 5004, 40000];
    f.extend_from_slice(&rng.pick(&ports).to_be_bytes());
    f.extend_from_slice(&rng.pick(&ports).to_be_bytes());
    if tcp {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50]);
        f.push(rng.pick(&[0x02u8, 0x10, 0x12, 0x18]));
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.resize(f.len() + payload, 0xab);
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median ns per verdict of `accept` over the frames; also the number accepted in one pass.
fn measure(
    frames: &[Vec<u8>],
    rounds: usize,
    passes: usize,
    accept: impl Fn(&[u8]) -> bool,
) -> (f64, usize) {
    let accepted = frames.iter().filter(|f| accept(f)).count();
    let mut per_round = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut n = 0usize;
        for _ in 0..passes {
            for f in frames {
                n += usize::from(accept(black_box(f)));
            }
        }
        black_box(n);
        per_round.push(start.elapsed().as_nanos() as f64 / (passes * frames.len()) as f64);
    }
    (median(per_round), accepted)
}

fn main() {
    let rounds = env_num("NETRING_BENCH_FILTER_ROUNDS", 7);
    let passes = env_num("NETRING_BENCH_FILTER_PASSES", 100);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let frames: Vec<Vec<u8>> = (0..2000).map(|_| frame(&mut rng)).collect();
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("libpcap dead handle");

    println!(
        "user-space filter verdicts over {} frames, {rounds} rounds x {passes} passes, median ns/verdict",
        frames.len()
    );
    println!(
        "{:<40} {:>8} {:>8} {:>7} {:>9} {:>9}",
        "expression", "netring", "libpcap", "ratio", "insns", "accepted"
    );
    let mut ratios = Vec::new();
    for expr in EXPRESSIONS {
        let ours = Filter::new(expr).expect("netring compiles it");
        let theirs = dead.compile(expr, true).expect("libpcap compiles it");
        let (ns_ours, acc_ours) = measure(&frames, rounds, passes, |f| ours.matches(f));
        let (ns_pcap, acc_pcap) = measure(&frames, rounds, passes, |f| theirs.filter(f));
        assert_eq!(acc_ours, acc_pcap, "{expr}: verdicts differ from libpcap");
        let ratio = ns_ours / ns_pcap;
        ratios.push(ratio);
        println!(
            "{expr:<40} {ns_ours:>8.1} {ns_pcap:>8.1} {ratio:>7.2} {:>4}/{:<4} {acc_ours:>9}",
            ours.frame_program().len(),
            theirs.get_instructions().len(),
        );
    }
    println!(
        "median ratio netring/libpcap: {:.2} (insns: ours/libpcap's optimized program)",
        median(ratios)
    );
}
