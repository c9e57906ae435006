//! End-to-end benchmark on a throwaway veth pair (needs root; `cargo bench --bench capture`).
//!
//! - RX: a generator (trafgen, or netring's own TX ring if trafgen is missing) sends a fixed
//!   number of 64-byte frames into one end; netring's `Capture` and libpcap (through the `pcap`
//!   crate, 16 MiB buffer, not immediate) take turns counting them on the other end. For each:
//!   packets received, the kernel's packet-socket drops, and the capture thread's CPU time per
//!   packet (`CLOCK_THREAD_CPUTIME_ID`).
//! - TX: packets per second of netring's `Injector` sending 64-byte frames, with and without
//!   `qdisc_bypass`, against trafgen on the same veth.
//!
//! Every figure is the median of several rounds (the order alternates between rounds). Loss is
//! located with the veth and softnet counters. Settings: `NETRING_BENCH_PACKETS` (RX frames per
//! round, default 1000000), `NETRING_BENCH_TX_PACKETS` (default 500000), `NETRING_BENCH_ROUNDS`
//! (default 5), `NETRING_BENCH_TX_SLOTS` (the Injector's ring slots, default 4096), `NETRING_BENCH_NO_TRAFGEN=1`
//! (use the fallback generator even when trafgen is installed). On a busy
//! machine the medians move with the load; the best round shows the uncontended figure.

#[path = "../tests/common/testnet.rs"]
mod testnet;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netring::{Capture, Injector};
use testnet::TestNet;

const FRAME_LEN: usize = 64;
/// Receive buffers: 16 MiB for both readers.
const RING_BYTES: usize = 16 << 20;
/// After the generator is done, a reader stops once it has seen nothing for this long.
const IDLE_END: Duration = Duration::from_millis(300);
/// No single run may take longer than this.
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The frame, and small system helpers.

/// One's-complement sum over 16-bit big-endian words, folded and inverted (RFC 1071).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A `len`-byte broadcast UDP/IPv4 frame, 198.18.0.1:40000 -> 198.18.0.2:9 (RFC 2544 range).
fn udp_frame(len: usize, src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling thread to one CPU (best effort).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `poll(2)` for readability, up to `ms` milliseconds.
fn wait_readable(fd: std::os::fd::RawFd, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Interface counters as the namespace sees them.
#[derive(Debug, Clone, Copy, Default)]
struct LinkCounters {
    a_tx: u64,
    a_tx_dropped: u64,
    b_rx: u64,
    b_rx_dropped: u64,
    /// Sum of /proc/net/softnet_stat's "dropped" column (backlog overflows, all CPUs).
    softnet_dropped: u64,
}

impl LinkCounters {
    fn read(net: &TestNet) -> Self {
        let stat = |dev: &str, name: &str| -> u64 {
            let out = net
                .cmd("cat")
                .arg(format!("/sys/class/net/{dev}/statistics/{name}"))
                .output()
                .ok();
            out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(0)
        };
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|h| u64::from_str_radix(h, 16).ok())
            .sum();
        Self {
            a_tx: stat(&net.a, "tx_packets"),
            a_tx_dropped: stat(&net.a, "tx_dropped"),
            b_rx: stat(&net.b, "rx_packets"),
            b_rx_dropped: stat(&net.b, "rx_dropped"),
            softnet_dropped: softnet,
        }
    }

    fn delta(self, before: Self) -> Self {
        Self {
            a_tx: self.a_tx - before.a_tx,
            a_tx_dropped: self.a_tx_dropped - before.a_tx_dropped,
            b_rx: self.b_rx - before.b_rx,
            b_rx_dropped: self.b_rx_dropped - before.b_rx_dropped,
            softnet_dropped: self.softnet_dropped.wrapping_sub(before.softnet_dropped),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mpps(pps: f64) -> String {
    format!("{:.3} Mpps", pps / 1e6)
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// What a generator run achieved.
#[derive(Debug, Clone, Copy)]
struct Generated {
    packets: u64,
    /// Seconds the generator itself reports spending (trafgen), or the send loop's wall time.
    secs: f64,
    /// Wall time of the whole process (startup included).
    wall: f64,
}

impl Generated {
    fn pps(&self) -> f64 {
        self.packets as f64 / self.secs
    }
}

struct Trafgen {
    conf: String,
}

impl Trafgen {
    fn new(frame: &[u8]) -> Self {
        let conf =
            std::env::temp_dir().join(format!("netring-bench-{}.trafgen", std::process::id()));
        let body = frame
            .iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut f = std::fs::File::create(&conf).expect("writing the trafgen config");
        writeln!(f, "/* {}-byte UDP/IPv4 broadcast frame */", frame.len()).unwrap();
        writeln!(f, "{{ {body} }}").unwrap();
        Trafgen {
            conf: conf.to_string_lossy().into_owned(),
        }
    }

    /// Sends `count` frames on `dev` from one CPU (`-P 1`), without touching the machine's
    /// socket-memory sysctls (`--no-sock-mem`; its short form `-A` is broken in trafgen 0.6.8) or
    /// IRQ affinities (`--notouch-irq`).
    fn run(&self, net: &TestNet, dev: &str, count: u64) -> Result<Generated, String> {
        let started = Instant::now();
        let mut child = net
            .cmd("trafgen")
            .args([
                "--dev",
                dev,
                "--conf",
                &self.conf,
                "--num",
                &count.to_string(),
            ])
            .args(["-P", "1", "--no-sock-mem", "--notouch-irq"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning trafgen: {e}"))?;
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            if started.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err("trafgen ran past the time limit".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall = started.elapsed().as_secs_f64();
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("trafgen failed ({}): {text}", out.status));
        }
        let (packets, secs) = parse_trafgen(&text)
            .ok_or_else(|| format!("could not read trafgen's summary: {text}"))?;
        Ok(Generated {
            packets,
            secs: if secs > 0.0 { secs } else { wall },
            wall,
        })
    }
}

/// trafgen's closing summary: "N packets outgoing" and per-CPU "S sec, U usec on CPUx (...)".
fn parse_trafgen(text: &str) -> Option<(u64, f64)> {
    let mut packets = None;
    let mut secs: f64 = 0.0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 3 && words[1] == "packets" && words[2] == "outgoing" {
            packets = words[0].parse().ok();
        }
        if let Some(i) = words.iter().position(|w| *w == "sec,") {
            if i >= 1 && words.get(i + 2).is_some_and(|w| w.starts_with("usec")) {
                let s: f64 = words[i - 1].parse().ok()?;
                let us: f64 = words.get(i + 1)?.parse().ok()?;
                secs = secs.max(s + us / 1e6);
            }
        }
    }
    Some((packets?, secs))
}

/// netring's TX ring as a generator: `count` copies of `frame`.
fn injector_send(
    net: &TestNet,
    dev: &str,
    frame: &[u8],
    count: u64,
    bypass: bool,
) -> Result<Generated, String> {
    let mut tx = net
        .within(|| {
            Injector::builder(dev)
                .frame_count(env_num("NETRING_BENCH_TX_SLOTS", 4096) as usize)
                .qdisc_bypass(bypass)
                .open()
        })
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for i in 0..count {
        tx.send(frame).map_err(|e| e.to_string())?;
        if tx.queued() >= 256 {
            tx.flush().map_err(|e| e.to_string())?;
        }
        if i % 4096 == 0 && started.elapsed() > RUN_LIMIT {
            return Err("the injector ran past the time limit".into());
        }
    }
    if !tx
        .wait_sent(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?
    {
        return Err("frames still in the TX ring after 10 s".into());
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Generated {
        packets: count,
        secs,
        wall: secs,
    })
}

/// Nanoseconds per `Injector::try_send` when the ring has room: 65536 small slots filled without
/// a flush, so the kernel does no work inside the timed loop. (The frames leave afterwards, when
/// the injector is dropped; that is not timed.)
fn injector_fill_cost(net: &TestNet, frame: &[u8]) -> Result<f64, String> {
    let slots = 65_536;
    let mut tx = net
        .within(|| {
            Injector::builder(&net.a)
                .frame_size(128)
                .frame_count(slots)
                .open()
        })
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for _ in 0..slots {
        if !tx.try_send(frame).map_err(|e| e.to_string())? {
            return Err("ring full early".into());
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / slots as f64;
    tx.wait_sent(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(ns)
}

enum Generator {
    Trafgen(Trafgen),
    Injector(Vec<u8>),
}

impl Generator {
    fn name(&self) -> &'static str {
        match self {
            Generator::Trafgen(_) => "trafgen -P 1",
            Generator::Injector(_) => "netring Injector (no trafgen)",
        }
    }

    fn run(&self, net: &TestNet, count: u64) -> Result<Generated, String> {
        match self {
            Generator::Trafgen(t) => t.run(net, &net.a, count),
            Generator::Injector(frame) => {
                // Keep the generator off the reader's CPU.
                pin_to(0);
                injector_send(net, &net.a, frame, count, true)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readers.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Netring,
    Libpcap,
}

impl Reader {
    fn name(self) -> &'static str {
        match self {
            Reader::Netring => "netring Capture",
            Reader::Libpcap => "libpcap (pcap crate)",
        }
    }
}

/// What a reader counted.
#[derive(Debug, Clone, Copy, Default)]
struct ReadResult {
    packets: u64,
    bytes: u64,
    /// Packets the kernel handed to the socket (`tp_packets`, drops included).
    socket_packets: u64,
    /// The kernel's packet-socket drops (ring full).
    drops: u64,
    cpu: Duration,
}

/// Tells the reader thread to stop once idle, and collects its result.
struct RunningReader {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Result<ReadResult, String>>,
}

fn reader_cpu() -> usize {
    cpus().saturating_sub(1)
}

fn start_reader(net: &TestNet, reader: Reader) -> Result<RunningReader, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let ns = net.ns.clone();
    let dev = net.b.clone();
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        pin_to(reader_cpu());
        match reader {
            Reader::Netring => read_netring(&ns, &dev, &stop2, ready_tx),
            Reader::Libpcap => read_libpcap(&ns, &dev, &stop2, ready_tx),
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(RunningReader { stop, handle }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{} did not start", reader.name())),
    }
}

impl RunningReader {
    fn finish(self) -> Result<ReadResult, String> {
        self.stop.store(true, Ordering::Release);
        self.handle
            .join()
            .map_err(|_| "reader thread panicked".to_string())?
    }
}

/// Idle/stop bookkeeping shared by both readers.
struct EndCheck {
    idle_since: Option<Instant>,
    started: Instant,
}

impl EndCheck {
    fn new() -> Self {
        Self {
            idle_since: None,
            started: Instant::now(),
        }
    }
    fn busy(&mut self) {
        self.idle_since = None;
    }
    /// True when the reader should end: stopped and quiet, or past the time limit.
    fn idle(&mut self, stop: &AtomicBool) -> bool {
        if self.started.elapsed() > RUN_LIMIT + Duration::from_secs(5) {
            return true;
        }
        if !stop.load(Ordering::Acquire) {
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        since.elapsed() >= IDLE_END
    }
}

fn read_netring(
    ns: &str,
    dev: &str,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<ReadResult, String> {
    // netring's defaults: 64 blocks of 256 KiB (16 MiB, like libpcap's buffer here), 10 ms block
    // timeout (libpcap's is the 10 ms read timeout set below).
    let opened = netring::netns::within(ns, || {
        let b = Capture::builder(dev);
        assert_eq!(
            netring::CaptureBuilder::DEFAULT_BLOCK_SIZE
                * netring::CaptureBuilder::DEFAULT_BLOCK_COUNT,
            RING_BYTES
        );
        b.open()
    })
    .and_then(|r| r);
    let mut cap = match opened {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Err(e.to_string());
        }
    };
    let _ = ready.send(Ok(()));
    let mut r = ReadResult::default();
    let mut end = EndCheck::new();
    let cpu0 = thread_cpu();
    loop {
        match cap.next_batch(Some(Duration::from_millis(50))) {
            Ok(Some(batch)) => {
                end.busy();
                for p in &batch {
                    r.packets += 1;
                    r.bytes += p.wire_len() as u64;
                }
            }
            Ok(None) => {
                if end.idle(stop) {
                    break;
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    r.cpu = thread_cpu() - cpu0;
    let stats = cap.cumulative_stats().map_err(|e| e.to_string())?;
    r.socket_packets = stats.packets;
    r.drops = stats.drops;
    Ok(r)
}

fn read_libpcap(
    ns: &str,
    dev: &str,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<ReadResult, String> {
    let opened = netring::netns::within(ns, || {
        pcap::Capture::from_device(dev).and_then(|c| {
            c.immediate_mode(false)
                .buffer_size(RING_BYTES as i32)
                .snaplen(65535)
                .timeout(10)
                .open()
                // With TPACKET_V3 libpcap polls with no timeout (the kernel's block timeout wakes
                // it), and an empty block never retires: a blocking read would wait forever once
                // the traffic stops. Non-blocking reads plus our own poll keep it bounded.
                .and_then(|c| c.setnonblock())
        })
    });
    let mut cap = match opened {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("libpcap: {e}")));
            return Err(format!("libpcap: {e}"));
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Err(e.to_string());
        }
    };
    let _ = ready.send(Ok(()));
    let mut r = ReadResult::default();
    let mut end = EndCheck::new();
    let cpu0 = thread_cpu();
    loop {
        match cap.next_packet() {
            Ok(p) => {
                end.busy();
                r.packets += 1;
                r.bytes += u64::from(p.header.len);
            }
            Err(pcap::Error::TimeoutExpired) => {
                if end.idle(stop) {
                    break;
                }
                wait_readable(cap.as_raw_fd(), 50);
            }
            Err(e) => return Err(format!("libpcap: {e}")),
        }
    }
    r.cpu = thread_cpu() - cpu0;
    let stats = cap.stats().map_err(|e| e.to_string())?;
    r.socket_packets = u64::from(stats.received);
    r.drops = u64::from(stats.dropped);
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// The runs.

struct RxRound {
    generated: Generated,
    read: ReadResult,
    link: LinkCounters,
}

fn rx_round(
    net: &TestNet,
    reader: Reader,
    generator: &Generator,
    count: u64,
) -> Result<RxRound, String> {
    let running = start_reader(net, reader)?;
    let before = LinkCounters::read(net);
    let generated = generator.run(net, count);
    let read = running.finish()?;
    let generated = generated?;
    let link = LinkCounters::read(net).delta(before);
    Ok(RxRound {
        generated,
        read,
        link,
    })
}

/// Prints one reader's figures; returns (median CPU ns/packet, best CPU ns/packet, median
/// packets received).
fn report_rx(reader: Reader, rounds: &[RxRound], count: u64) -> (f64, f64, f64) {
    let recv = median(rounds.iter().map(|r| r.read.packets as f64).collect());
    let drops = median(rounds.iter().map(|r| r.read.drops as f64).collect());
    let gen_pps = median(rounds.iter().map(|r| r.generated.pps()).collect());
    let per_pkt: Vec<f64> = rounds
        .iter()
        .filter(|r| r.read.packets > 0)
        .map(|r| r.read.cpu.as_nanos() as f64 / r.read.packets as f64)
        .collect();
    let best_ns = per_pkt.iter().copied().fold(f64::NAN, f64::min);
    let ns_per_pkt = median(per_pkt);
    let cpu_ms = median(
        rounds
            .iter()
            .map(|r| r.read.cpu.as_secs_f64() * 1e3)
            .collect(),
    );
    let recv_pps = median(
        rounds
            .iter()
            .map(|r| r.read.packets as f64 / r.generated.secs)
            .collect(),
    );
    println!(
        "  {:<22} received {:>9.0} of {count} ({:5.1}%), socket drops {:>8.0}, \
         reader CPU {:7.1} ms = {:6.1} ns/packet (best {:.1}); generator {} (received {})",
        reader.name(),
        recv,
        recv * 100.0 / count as f64,
        drops,
        cpu_ms,
        ns_per_pkt,
        best_ns,
        mpps(gen_pps),
        mpps(recv_pps),
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "      round {i}: generator {} pkts in {:.3} s ({}; wall {:.3} s) | read {} pkts, {} B, \
             drops {}, cpu {:.1} ms | veth: a tx {} (dropped {}), b rx {} (dropped {}), softnet dropped {}",
            r.generated.packets,
            r.generated.secs,
            mpps(r.generated.pps()),
            r.generated.wall,
            r.read.packets,
            r.read.bytes,
            r.read.drops,
            r.read.cpu.as_secs_f64() * 1e3,
            r.link.a_tx,
            r.link.a_tx_dropped,
            r.link.b_rx,
            r.link.b_rx_dropped,
            r.link.softnet_dropped,
        );
    }
    // Where the frames that did not reach the reader were lost, over all rounds.
    let sum = |f: &dyn Fn(&RxRound) -> u64| rounds.iter().map(f).sum::<u64>();
    let generated = sum(&|r| r.generated.packets);
    let a_tx = sum(&|r| r.link.a_tx);
    let b_rx = sum(&|r| r.link.b_rx);
    let socket = sum(&|r| r.read.socket_packets);
    let drops = sum(&|r| r.read.drops);
    let read = sum(&|r| r.read.packets);
    println!(
        "      loss over all rounds: generator->veth a {}, veth a->b {} (a tx_dropped {}, b rx_dropped {}, \
         softnet backlog drops {}), b->socket {}, socket ring drops {}, ring->reader {}",
        generated.saturating_sub(a_tx),
        a_tx.saturating_sub(b_rx),
        sum(&|r| r.link.a_tx_dropped),
        sum(&|r| r.link.b_rx_dropped),
        sum(&|r| r.link.softnet_dropped),
        b_rx.saturating_sub(socket),
        drops,
        socket.saturating_sub(drops).saturating_sub(read),
    );
    (ns_per_pkt, best_ns, recv)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !tool_exists("ip") {
        println!("bench capture: SKIPPED (needs root and `ip`: it builds a veth pair in a netns)");
        return;
    }
    let rx_count = env_num("NETRING_BENCH_PACKETS", 1_000_000);
    let tx_count = env_num("NETRING_BENCH_TX_PACKETS", 500_000);
    let rounds = env_num("NETRING_BENCH_ROUNDS", 5) as usize;
    let started = Instant::now();

    let net = TestNet::new();
    let frame = udp_frame(FRAME_LEN, net.mac(&net.a));
    // NETRING_BENCH_NO_TRAFGEN=1 forces the fallback generator (to check that path).
    let have_trafgen =
        tool_exists("trafgen") && std::env::var_os("NETRING_BENCH_NO_TRAFGEN").is_none();
    let generator = if have_trafgen {
        Generator::Trafgen(Trafgen::new(&frame))
    } else {
        Generator::Injector(frame.clone())
    };
    println!(
        "netring capture benchmark: veth {} -> {} in netns {}, {} CPUs, {FRAME_LEN}-byte frames, \
         {rounds} rounds (medians), readers pinned to CPU {}, 16 MiB buffers",
        net.a,
        net.b,
        net.ns,
        cpus(),
        reader_cpu()
    );
    if !have_trafgen {
        println!(
            "NOTE: trafgen (netsniff-ng) not available: netring's own TX ring is the generator, \
             and the TX comparison is skipped"
        );
    }

    // RX: alternate which reader goes first.
    println!(
        "\nRX: {} sends {rx_count} frames into {} per round; readers count on {}",
        generator.name(),
        net.a,
        net.b
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Reader::Netring, Reader::Libpcap]
        } else {
            [Reader::Libpcap, Reader::Netring]
        };
        for reader in order {
            match rx_round(&net, reader, &generator, rx_count) {
                Ok(r) => match reader {
                    Reader::Netring => ours.push(r),
                    Reader::Libpcap => theirs.push(r),
                },
                Err(e) => println!("  round {round} {}: FAILED: {e}", reader.name()),
            }
        }
    }
    let (ours_ns, ours_best, ours_recv) = report_rx(Reader::Netring, &ours, rx_count);
    let (theirs_ns, theirs_best, theirs_recv) = report_rx(Reader::Libpcap, &theirs, rx_count);
    println!(
        "  ratio netring/libpcap: CPU per packet {:.2} (median), {:.2} (best); packets received {:.3}",
        ours_ns / theirs_ns,
        ours_best / theirs_best,
        ours_recv / theirs_recv
    );

    // TX: netring's Injector (with and without qdisc bypass) against trafgen.
    println!(
        "\nTX: {tx_count} frames of {FRAME_LEN} bytes on {} per run",
        net.a
    );
    pin_to(0);
    let mut plain = Vec::new();
    let mut bypass = Vec::new();
    let mut tg = Vec::new();
    for round in 0..rounds {
        for which in 0..3 {
            let which = (which + round) % 3;
            let result = match (which, &generator) {
                (0, _) => injector_send(&net, &net.a, &frame, tx_count, false).map(|g| (0, g)),
                (1, _) => injector_send(&net, &net.a, &frame, tx_count, true).map(|g| (1, g)),
                (_, Generator::Trafgen(t)) => t.run(&net, &net.a, tx_count).map(|g| (2, g)),
                (_, Generator::Injector(_)) => continue,
            };
            match result {
                Ok((0, g)) => plain.push(g.pps()),
                Ok((1, g)) => bypass.push(g.pps()),
                Ok((_, g)) => tg.push(g.pps()),
                Err(e) => println!("  round {round} TX run {which}: FAILED: {e}"),
            }
        }
    }
    let (p, b, t) = (
        median(plain.clone()),
        median(bypass.clone()),
        median(tg.clone()),
    );
    let best = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let line = |name: &str, v: &[f64]| {
        println!(
            "  {name:<30} median {}, best {}   (rounds: {})",
            mpps(median(v.to_vec())),
            mpps(best(v)),
            v.iter()
                .map(|x| format!("{:.3}", x / 1e6))
                .collect::<Vec<_>>()
                .join(" ")
        );
    };
    line("netring Injector", &plain);
    line("netring Injector qdisc_bypass", &bypass);
    if have_trafgen {
        line("trafgen -P 1 (qdisc bypass)", &tg);
        println!(
            "  ratio netring/trafgen: median {:.2} (plain), {:.2} (qdisc_bypass); best {:.2}, {:.2}",
            p / t,
            b / t,
            best(&plain) / best(&tg),
            best(&bypass) / best(&tg)
        );
    }
    // User-space cost of Injector::try_send alone: fill a large ring before kicking the kernel.
    let mut per_frame = Vec::new();
    for _ in 0..rounds {
        match injector_fill_cost(&net, &frame) {
            Ok(ns) => per_frame.push(ns),
            Err(e) => println!("  Injector fill: FAILED: {e}"),
        }
    }
    println!(
        "  Injector::try_send user-space cost (ring filled, no flush): {:.1} ns/frame (rounds: {})",
        median(per_frame.clone()),
        per_frame
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    println!(
        "\nbench capture: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Generator::Trafgen(t) = &generator {
        let _ = std::fs::remove_file(&t.conf);
    }
}
