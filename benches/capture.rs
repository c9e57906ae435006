//! End-to-end benchmark on a throwaway veth pair (needs root; `cargo bench --bench capture`;
//! build with `--all-features` for the async readers).
//!
//! 1. RX (AF_PACKET): a generator (trafgen, or netring's own TX ring if trafgen is missing) sends
//!    a fixed number of 64-byte frames into one end; on the other end, in turn: netring's
//!    `Capture` (blocking), `AsyncCapture` on a current-thread tokio runtime, `AsyncCapture` on
//!    `smol::block_on`, and libpcap (through the `pcap` crate, 16 MiB buffer, not immediate). For
//!    each: packets received, the kernel's drops, and the capturing thread's CPU time per packet
//!    (`CLOCK_THREAD_CPUTIME_ID`; the async readers run everything on that one thread, except
//!    smol's `async-io` helper thread, whose CPU is shown beside). All three netring readers
//!    count with the same non-inlined function, so their difference is the cost of waiting.
//! 2. AF_XDP RX: the same traffic into an `XdpSocket` (built-in program, copy mode on veth), with
//!    several wakeup strategies written in the reader loop: the library's `next_batch` (default),
//!    drain + poll(2) (plain), drain + sleep a latency bound (sleep), and poll(2) for the first
//!    frame + sleep the bound + drain (coalesce). CPU per packet and loss beside AF_PACKET's; the
//!    loss-free rate (trafgen `--rate` stepped down when the full rate loses frames).
//! 3. TX (`NETRING_BENCH_ONLY=tx` runs only this part, about a minute): netring's `Injector`
//!    (with and without `qdisc_bypass`) and an `XdpSocket`'s TX ring against trafgen, every
//!    sender on CPU 0. The XDP senders use the public API as an application would: `send` of
//!    64-byte frames with a `flush` every batch, or `send` alone as the `Sink`'s `send_all` does
//!    (the library kicks every `tx_flush_every` frames; also shown with that off, when frames go
//!    only once the TX frames run out), `wait_sent` at the end; as the library sets the socket
//!    up, with the kernel's default TX budget of 32 frames per kick (`tx_budget(32)`), and after
//!    one RX wait (the socket then stays on its epoll set, whose wakeup the kernel runs for every
//!    frame sent). Two figures per sender: packets per second of wall time, and CPU per frame
//!    (the sender's CPU time, which includes the peer's receive: on a veth it runs in the
//!    sender's context, and the `ksoftirqd` threads' time when it spills there), with ratios
//!    to trafgen paired by round. CPU per frame is the steadier measure on a shared machine:
//!    wall time moves with whatever else runs on CPU 0. Two peers: broadcast frames to `b`,
//!    which has no address (each goes up to IPv4 input, whose route lookup fails: ~0.5-0.6 us per
//!    frame that every sender pays), and unicast frames to a MAC nobody has (dropped on
//!    arrival, so the figures show the senders' own costs). Then the user-space cost of
//!    `try_send` for both APIs, and how many frames one `XdpSocket::flush` leaves on the ring.
//!
//! Every figure is the median of several rounds (the order rotates between rounds). Loss is
//! located with the veth and softnet counters. Settings:
//! - `NETRING_BENCH_ONLY`: `rx` or `tx`, only that part (default: both);
//! - `NETRING_BENCH_PACKETS` (RX frames per round, default 1000000), `NETRING_BENCH_ROUNDS`
//!   (default 5);
//! - `NETRING_BENCH_XDP_PACKETS` (AF_XDP RX frames per round, default 500000),
//!   `NETRING_BENCH_XDP_ROUNDS` (default 3), `NETRING_BENCH_XDP_FRAMES` /
//!   `NETRING_BENCH_XDP_RING` (UMEM frames, half for RX, and ring size of the AF_XDP readers,
//!   default 16384 / 8192), `NETRING_BENCH_XDP_BOUNDS_US` (latency bounds of the
//!   sleep/coalesce strategies, default `50,200,1000`), `NETRING_BENCH_RATE_PACKETS` (frames per
//!   loss-free-rate step, default 300000);
//! - `NETRING_BENCH_TX_PACKETS` (default 500000; 300000 with `NETRING_BENCH_ONLY=tx`),
//!   `NETRING_BENCH_TX_SLOTS` (the Injector's ring slots, default 4096),
//!   `NETRING_BENCH_XDP_TX_BATCH` (frames per XDP flush, default 64), `NETRING_BENCH_TX_KINDS`
//!   (the TX senders, comma-separated: `injector`, `bypass`, `trafgen`,
//!   `xdp[:bN][:fN][:aN][:rN][:nw][:rx]` = budget, flush interval (0: none), `tx_flush_every`
//!   (0: no auto-kick), ring size, need_wakeup off, an RX wait first), `NETRING_BENCH_TX_PEERS` (default `broadcast,otherhost`),
//!   `NETRING_BENCH_VERBOSE=1` (a line per XDP TX run with its counters);
//! - `NETRING_BENCH_NO_TRAFGEN=1`: the fallback generator even when trafgen is installed.
//!
//! On a busy machine the medians move with the load; the best round shows the uncontended
//! figure.

#[path = "../tests/common/testnet.rs"]
mod testnet;

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{Either, select};
use netring::runtime::Runtime;
use netring::xdp::{XdpSocket, XdpStats};
use netring::{AsyncCapture, Capture, Injector};
use testnet::TestNet;

const FRAME_LEN: usize = 64;
/// A locally administered unicast MAC that no interface of the benchmark has.
const OTHER_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
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

/// `poll(2)` for readability, up to `ms` milliseconds; true if readable.
fn wait_readable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Timer slack of the calling thread (the kernel's default of 50 us would stretch short sleeps).
fn set_timer_slack(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
}

#[cfg_attr(not(feature = "smol"), allow(dead_code))]
/// CPU time of this process's threads named `name` (from `/proc/self/task/*/schedstat`, ns).
fn named_threads_cpu(name: &str) -> Duration {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
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
    /// CPU seconds the sender used, in user space and in the kernel, including the softirq work
    /// the kernel does in its context (for a veth, the peer's whole receive path): the sending
    /// thread's CPU clock, or for trafgen its processes' user + system time (startup included).
    cpu: f64,
}

impl Generated {
    fn pps(&self) -> f64 {
        self.packets as f64 / self.secs
    }
}

/// CPU time of the kernel's softirq threads (`ksoftirqd/N`, from `/proc/PID/schedstat`). When
/// softirq work piles up the kernel hands it to them: a sender's CPU time alone would then miss
/// part of the peer's receive, so the TX figures add their time to the sender's.
fn ksoftirqd_cpu() -> f64 {
    let mut ns = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("ksoftirqd/") {
            continue;
        }
        ns += std::fs::read_to_string(dir.join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// User + system CPU time of this process's waited-for children (`RUSAGE_CHILDREN`).
fn children_cpu() -> f64 {
    // SAFETY: a zeroed rusage is valid for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to write into.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Trafgen {
    conf: String,
}

impl Trafgen {
    /// A config sending `frame`, in a file named after `tag` (one file per frame).
    fn new(frame: &[u8], tag: &str) -> Self {
        let conf = std::env::temp_dir().join(format!(
            "netring-bench-{}-{tag}.trafgen",
            std::process::id()
        ));
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
        self.run_at(net, dev, count, None)
    }

    /// Like [`run`](Self::run), at most `rate` packets per second (trafgen `--rate`).
    fn run_at(
        &self,
        net: &TestNet,
        dev: &str,
        count: u64,
        rate: Option<u64>,
    ) -> Result<Generated, String> {
        let started = Instant::now();
        let cpu_before = children_cpu();
        let mut cmd = net.cmd("trafgen");
        cmd.args([
            "--dev",
            dev,
            "--conf",
            &self.conf,
            "--num",
            &count.to_string(),
        ])
        .args(["-P", "1", "--no-sock-mem", "--notouch-irq"]);
        if let Some(pps) = rate {
            cmd.args(["--rate", &format!("{pps}pps")]);
        }
        let mut child = cmd
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
        let cpu = children_cpu() - cpu_before;
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
            cpu,
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
    let cpu = thread_cpu();
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
        cpu: (thread_cpu() - cpu).as_secs_f64(),
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
    /// An `XdpSocket` sending flat out: faster than trafgen on this veth, so it probes the RX
    /// loss-free rate above what trafgen can offer.
    Xdp(Vec<u8>),
}

impl Generator {
    fn name(&self) -> &'static str {
        match self {
            Generator::Trafgen(_) => "trafgen -P 1",
            Generator::Injector(_) => "netring Injector (no trafgen)",
            Generator::Xdp(_) => "netring XdpSocket",
        }
    }

    /// At most `rate` packets per second (trafgen only; the others always send flat out).
    fn run_at(&self, net: &TestNet, count: u64, rate: Option<u64>) -> Result<Generated, String> {
        match self {
            Generator::Trafgen(t) => t.run_at(net, &net.a, count, rate),
            Generator::Injector(frame) => {
                // Keep the generator off the reader's CPU.
                pin_to(0);
                injector_send(net, &net.a, frame, count, true)
            }
            Generator::Xdp(frame) => {
                pin_to(0);
                xdp_send(net, &net.a, frame, count, XdpTx::library(0)).map(|(g, _, _)| g)
            }
        }
    }
}

/// The XDP TX sockets' ring size (the library's default).
const XDP_TX_RING: u32 = 2048;
/// The kernel's copy-mode TX budget when nobody sets `XDP_MAX_TX_SKB_BUDGET`.
const XDP_KERNEL_TX_BUDGET: u32 = 32;

/// How an `XdpSocket` sender is set up and driven; everything through the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct XdpTx {
    /// `XdpSocketBuilder::tx_budget` (`None`: the library's default).
    budget: Option<u32>,
    /// `flush` every this many `send`s; 0: never (as with the Sink's `send_all`: frames go when
    /// the library kicks by itself, and at the closing `wait_sent`).
    flush_every: u64,
    /// `XdpSocketBuilder::tx_flush_every` (`None`: the library's default; 0: the library kicks
    /// only when the TX frames run out).
    auto: Option<u32>,
    /// `ring_size` (and so the TX frames: half the UMEM, 2 frames per ring slot).
    ring: u32,
    need_wakeup: bool,
    /// Wait once for RX first (`next_batch` with a 1 ms timeout; nothing arrives): the socket
    /// then stays on its epoll set, as one that also receives does, and the kernel wakes that
    /// set for every frame it transmits.
    rx_waited: bool,
}

impl XdpTx {
    fn library(flush_every: u64) -> Self {
        XdpTx {
            budget: None,
            flush_every,
            ring: XDP_TX_RING,
            need_wakeup: true,
            rx_waited: false,
            auto: None,
        }
    }

    /// `xdp[:bN][:fN][:aN][:rN][:nw][:rx]`: budget, flush interval, `tx_flush_every`, ring size,
    /// need_wakeup off, an RX wait first.
    fn parse(token: &str, flush_every: u64) -> Option<Self> {
        let mut parts = token.split(':');
        if parts.next()? != "xdp" {
            return None;
        }
        let mut x = XdpTx::library(flush_every);
        for p in parts {
            let num = |prefix: &str| p.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = num("b") {
                x.budget = Some(n as u32);
            } else if let Some(n) = num("f") {
                x.flush_every = n;
            } else if let Some(n) = num("a") {
                x.auto = Some(n as u32);
            } else if let Some(n) = num("r") {
                x.ring = n as u32;
            } else if p == "nw" {
                x.need_wakeup = false;
            } else if p == "rx" {
                x.rx_waited = true;
            } else {
                return None;
            }
        }
        Some(x)
    }

    fn name(self) -> String {
        let mut n = match self.flush_every {
            0 => "XdpSocket send only".to_owned(),
            f => format!("XdpSocket send, flush/{f}"),
        };
        match self.budget {
            None => n.push_str(", default budget"),
            Some(b) => n.push_str(&format!(", budget {b}")),
        }
        match self.auto {
            None => {}
            Some(0) => n.push_str(", no auto-kick"),
            Some(a) => n.push_str(&format!(", auto-kick/{a}")),
        }
        if self.ring != XDP_TX_RING {
            n.push_str(&format!(", ring {}", self.ring));
        }
        if !self.need_wakeup {
            n.push_str(", no need_wakeup");
        }
        if self.rx_waited {
            n.push_str(", after an RX wait");
        }
        n
    }
}

/// The TX senders compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Injector { bypass: bool },
    Trafgen,
    Xdp(XdpTx),
}

impl TxKind {
    /// `NETRING_BENCH_TX_KINDS`: a comma-separated subset, e.g. `trafgen,xdp,xdp:b32,bypass`
    /// (`injector`, `bypass`, `trafgen`, `xdp[:bN][:fN][:aN][:rN][:nw][:rx]`, see [`XdpTx::parse`]).
    fn from_env(flush_every: u64) -> Option<Vec<TxKind>> {
        let v = std::env::var("NETRING_BENCH_TX_KINDS").ok()?;
        let kinds: Vec<TxKind> = v
            .split(',')
            .filter_map(|k| match k.trim() {
                "injector" => Some(TxKind::Injector { bypass: false }),
                "bypass" => Some(TxKind::Injector { bypass: true }),
                "trafgen" => Some(TxKind::Trafgen),
                other => XdpTx::parse(other, flush_every).map(TxKind::Xdp),
            })
            .collect();
        (!kinds.is_empty()).then_some(kinds)
    }

    fn name(self) -> String {
        match self {
            TxKind::Injector { bypass: false } => "netring Injector".into(),
            TxKind::Injector { bypass: true } => "netring Injector qdisc_bypass".into(),
            TxKind::Trafgen => "trafgen -P 1 (qdisc bypass)".into(),
            TxKind::Xdp(x) => x.name(),
        }
    }
}

/// An AF_XDP socket's TX ring as a sender, used as an application would: `count` copies of
/// `frame` with `send` (copy into a free UMEM frame, waiting for one if needed), a `flush` every
/// `flush_every` frames, `wait_sent` at the end; the socket only transmits (`open_socket`: no XDP
/// program is attached). Also returns the socket's counters and TX budget.
fn xdp_send(
    net: &TestNet,
    dev: &str,
    frame: &[u8],
    count: u64,
    how: XdpTx,
) -> Result<(Generated, XdpStats, u32), String> {
    let mut xsk = net
        .within(|| {
            let mut b = XdpSocket::builder(dev)
                .ring_size(how.ring)
                .frame_count(2 * how.ring)
                .need_wakeup(how.need_wakeup);
            if let Some(budget) = how.budget {
                b = b.tx_budget(budget);
            }
            if let Some(every) = how.auto {
                b = b.tx_flush_every(every);
            }
            b.open_socket()
        })
        .map_err(|e| e.to_string())?;
    if how.rx_waited {
        xsk.next_batch(Some(Duration::from_millis(1)))
            .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let cpu = thread_cpu();
    for i in 0..count {
        xsk.send(frame).map_err(|e| e.to_string())?;
        if how.flush_every > 0 && (i + 1) % how.flush_every == 0 {
            xsk.flush().map_err(|e| e.to_string())?;
        }
        if i % 4096 == 0 && started.elapsed() > RUN_LIMIT {
            return Err(format!(
                "the XdpSocket ran past the time limit after {i} frames"
            ));
        }
    }
    if !xsk
        .wait_sent(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "{} frames still in flight on the XDP TX ring after 10 s",
            xsk.in_flight()
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu).as_secs_f64();
    let stats = xsk.stats().map_err(|e| e.to_string())?;
    Ok((
        Generated {
            packets: count,
            secs,
            wall: secs,
            cpu,
        },
        stats,
        xsk.tx_budget(),
    ))
}

/// Nanoseconds per `XdpSocket::try_send` when frames and ring room are free: 8192 frames queued
/// without a flush (the kernel does no work inside the timed loop), then sent untimed; the best of
/// five fills.
fn xdp_fill_cost(net: &TestNet, frame: &[u8]) -> Result<f64, String> {
    let n = 8192;
    let mut xsk = net
        .within(|| {
            XdpSocket::builder(&net.a)
                .frame_count(2 * n)
                .ring_size(n)
                .tx_flush_every(0)
                .open_socket()
        })
        .map_err(|e| e.to_string())?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..n {
            if !xsk.try_send(frame).map_err(|e| e.to_string())? {
                return Err("no free TX frame early".into());
            }
        }
        best = best.min(started.elapsed().as_nanos() as f64 / f64::from(n));
        if !xsk
            .wait_sent(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?
        {
            return Err("frames still in flight after 10 s".into());
        }
    }
    Ok(best)
}

/// Frames still on the XDP TX ring 100 ms after one `flush` of `n` queued frames (no further
/// call that kicks the kernel). Copy mode transmits at most the socket's TX budget per kick.
fn xdp_left_after_one_flush(net: &TestNet, frame: &[u8], n: u32) -> Result<u32, String> {
    let mut xsk = net
        .within(|| XdpSocket::builder(&net.a).tx_flush_every(0).open_socket())
        .map_err(|e| e.to_string())?;
    for _ in 0..n {
        if !xsk.try_send(frame).map_err(|e| e.to_string())? {
            return Err("no free TX frame".into());
        }
    }
    xsk.flush().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(100));
    // try_send collects completions (no kick); its own frame is not counted.
    if !xsk.try_send(frame).map_err(|e| e.to_string())? {
        return Err("no free TX frame".into());
    }
    let left = xsk.in_flight() - 1;
    xsk.wait_sent(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(left)
}

/// Runs every sender `rounds` times (the order rotating) with `count` copies of `frame`, and
/// prints packets per second, CPU per frame and the ratios to trafgen.
fn tx_compare(
    net: &TestNet,
    frame: &[u8],
    trafgen: Option<&Trafgen>,
    kinds: &[TxKind],
    rounds: usize,
    tx_count: u64,
    verbose: bool,
) {
    // trafgen's CPU time includes its start-up and teardown (ring set-up, mlockall): measured
    // on a 1-frame run and taken off, so its CPU per frame counts sending alone.
    let trafgen_startup = match trafgen {
        Some(t) if kinds.contains(&TxKind::Trafgen) => median(
            (0..3)
                .filter_map(|_| t.run(net, &net.a, 1).ok())
                .map(|g| g.cpu)
                .collect(),
        ),
        _ => 0.0,
    };
    if kinds.contains(&TxKind::Trafgen) {
        println!(
            "  trafgen start-up + teardown: {:.1} ms CPU (taken off its CPU time)",
            trafgen_startup * 1e3
        );
    }
    let mut pps: Vec<Vec<f64>> = kinds.iter().map(|_| Vec::new()).collect();
    let mut cpu_ns: Vec<Vec<f64>> = kinds.iter().map(|_| Vec::new()).collect();
    let mut soft_ns: Vec<Vec<f64>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..kinds.len() {
            let i = (k + round) % kinds.len();
            let before = LinkCounters::read(net);
            let soft_before = ksoftirqd_cpu();
            let result = match (kinds[i], trafgen) {
                (TxKind::Injector { bypass }, _) => {
                    injector_send(net, &net.a, frame, tx_count, bypass)
                }
                (TxKind::Trafgen, Some(t)) => t.run(net, &net.a, tx_count).map(|g| Generated {
                    cpu: (g.cpu - trafgen_startup).max(0.0),
                    ..g
                }),
                (TxKind::Trafgen, None) => continue,
                (TxKind::Xdp(how), _) => {
                    xdp_send(net, &net.a, frame, tx_count, how).map(|(g, stats, budget)| {
                        let link = LinkCounters::read(net).delta(before);
                        if verbose {
                            println!(
                                "      round {round} {}: {} in {:.3} s, {:.0} ns CPU/frame; \
                                 budget {budget}; veth a tx {} (dropped {}), b rx {}; \
                                 tx_invalid_descs {}, tx_ring_empty {}",
                                kinds[i].name(),
                                mpps(g.pps()),
                                g.secs,
                                g.cpu * 1e9 / g.packets as f64,
                                link.a_tx,
                                link.a_tx_dropped,
                                link.b_rx,
                                stats.tx_invalid_descs,
                                stats.tx_ring_empty
                            );
                        }
                        g
                    })
                }
            };
            let soft = ksoftirqd_cpu() - soft_before;
            match result {
                Ok(g) => {
                    pps[i].push(g.pps());
                    cpu_ns[i].push((g.cpu + soft) * 1e9 / g.packets as f64);
                    soft_ns[i].push(soft * 1e9 / g.packets as f64);
                }
                Err(e) => println!("  round {round} TX {}: FAILED: {e}", kinds[i].name()),
            }
        }
    }
    let list = |v: &[f64], scale: f64, digits: usize| {
        v.iter()
            .map(|x| format!("{:.digits$}", x * scale))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  {:<48} {:>6} {:>7} {:>9}   rounds (Mpps | ns CPU/frame)",
        "sender", "Mpps", "ns CPU", "ksoftirqd"
    );
    for (i, kind) in kinds.iter().enumerate() {
        println!(
            "  {:<48} {:>6.3} {:>7.0} {:>9.0}   {} | {}",
            kind.name(),
            median(pps[i].clone()) / 1e6,
            median(cpu_ns[i].clone()),
            median(soft_ns[i].clone()),
            list(&pps[i], 1e-6, 3),
            list(&cpu_ns[i], 1.0, 0)
        );
    }
    // Paired ratios: every round runs each sender back to back, so the ratio to that round's
    // trafgen run cancels most of the machine's drift between rounds. Two measures: packets per
    // second of wall time (what the issue asks; moves with the other load on CPU 0), and
    // frames per CPU-second (the sender's CPU time, the peer's receive included: the rate on
    // a CPU of its own, much less sensitive to the load).
    if let Some(t) = kinds.iter().position(|k| *k == TxKind::Trafgen) {
        for (i, kind) in kinds.iter().enumerate() {
            if i == t || pps[i].len() != pps[t].len() || cpu_ns[i].len() != cpu_ns[t].len() {
                continue;
            }
            let by_wall: Vec<f64> = pps[i].iter().zip(&pps[t]).map(|(x, t)| x / t).collect();
            let by_cpu: Vec<f64> = cpu_ns[i]
                .iter()
                .zip(&cpu_ns[t])
                .map(|(x, t)| t / x)
                .collect();
            let target = if matches!(kind, TxKind::Xdp(_)) {
                " [target >= 1.5]"
            } else {
                ""
            };
            println!(
                "  ratio {}/trafgen{target}: pps {:.2} (rounds {}), frames per CPU-second {:.2} \
                 (rounds {})",
                kind.name(),
                median(by_wall.clone()),
                list(&by_wall, 1.0, 2),
                median(by_cpu.clone()),
                list(&by_cpu, 1.0, 2),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readers.

/// How an AF_XDP reader waits for frames (all written here, on top of the public API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XdpWake {
    /// `XdpSocket::next_batch(timeout)`: one batch per call, the library's epoll wait when empty.
    Default,
    /// Drain with `try_next_batch` until empty, then `poll(2)` the socket until readable.
    Plain,
    /// Drain, then sleep the bound; never blocks in the kernel (wakes 1/bound times a second
    /// even when idle).
    Sleep(Duration),
    /// `poll(2)` until the first frame, sleep the bound so more accumulate, then drain: batches of
    /// up to `bound` worth of traffic, no wakeups while idle.
    Coalesce(Duration),
}

impl XdpWake {
    fn bound(self) -> Option<Duration> {
        match self {
            XdpWake::Sleep(d) | XdpWake::Coalesce(d) => Some(d),
            XdpWake::Default | XdpWake::Plain => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// `Capture::next_batch` (blocking).
    Netring,
    /// `AsyncCapture<Tokio>` on a current-thread runtime.
    Tokio,
    /// `AsyncCapture<Smol>` on `smol::block_on`.
    Smol,
    Libpcap,
    Xdp(XdpWake),
}

impl Reader {
    fn name(self) -> String {
        match self {
            Reader::Netring => "netring Capture".into(),
            Reader::Tokio => "AsyncCapture tokio".into(),
            Reader::Smol => "AsyncCapture smol".into(),
            Reader::Libpcap => "libpcap (pcap crate)".into(),
            Reader::Xdp(XdpWake::Default) => "XDP default".into(),
            Reader::Xdp(XdpWake::Plain) => "XDP plain".into(),
            Reader::Xdp(XdpWake::Sleep(d)) => format!("XDP sleep {} us", d.as_micros()),
            Reader::Xdp(XdpWake::Coalesce(d)) => format!("XDP coalesce {} us", d.as_micros()),
        }
    }
}

/// What a reader counted.
#[derive(Debug, Clone, Copy, Default)]
struct ReadResult {
    packets: u64,
    bytes: u64,
    /// Packets the kernel handed to the socket (`tp_packets`, drops included; for AF_XDP, read
    /// plus dropped).
    socket_packets: u64,
    /// The kernel's socket drops (AF_PACKET: ring full; AF_XDP: `rx_dropped`).
    drops: u64,
    /// CPU time of the capturing thread.
    cpu: Duration,
    /// CPU time of helper threads the runtime used meanwhile (smol's `async-io` thread).
    helper_cpu: Duration,
    /// Batches taken.
    batches: u64,
    /// Sleeps (XDP sleep/coalesce strategies) and their total length.
    sleeps: u64,
    slept: Duration,
    xdp: Option<XdpStats>,
}

impl ReadResult {
    /// Counts one AF_PACKET batch. Not inlined: the blocking and the async readers run exactly
    /// the same per-packet code, so their difference is the cost of waiting and waking.
    #[inline(never)]
    fn add_batch(&mut self, batch: &netring::Batch) {
        let (mut packets, mut bytes) = (0u64, 0u64);
        for p in batch {
            packets += 1;
            bytes += p.wire_len() as u64;
        }
        self.batches += 1;
        self.packets += packets;
        self.bytes += bytes;
    }
}

/// Tells the reader thread to stop once idle, and collects its result.
struct RunningReader {
    stop: Arc<AtomicBool>,
    /// The same news for the async readers, whose watchdog sleeps until it comes.
    stopped: futures::channel::oneshot::Sender<()>,
    handle: std::thread::JoinHandle<Result<ReadResult, String>>,
}

/// What a reader thread gets: where to open, when to stop, whom to tell it is ready.
struct ReaderCtx {
    ns: String,
    dev: String,
    stop: Arc<AtomicBool>,
    #[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
    stopped: futures::channel::oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<(), String>>,
    xdp: XdpGeometry,
}

impl ReaderCtx {
    /// Reports a failure to open (so `start_reader` does not wait) and returns it.
    fn failed(&self, e: impl ToString) -> String {
        let e = e.to_string();
        let _ = self.ready.send(Err(e.clone()));
        e
    }
}

/// UMEM and ring sizes of the AF_XDP readers.
#[derive(Debug, Clone, Copy)]
struct XdpGeometry {
    frames: u32,
    ring: u32,
}

fn reader_cpu() -> usize {
    cpus().saturating_sub(1)
}

fn start_reader(net: &TestNet, reader: Reader, xdp: XdpGeometry) -> Result<RunningReader, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (stopped, stopped_rx) = futures::channel::oneshot::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let ctx = ReaderCtx {
        ns: net.ns.clone(),
        dev: net.b.clone(),
        stop: stop.clone(),
        stopped: stopped_rx,
        ready: ready_tx,
        xdp,
    };
    let name = match reader {
        Reader::Netring => "rx-sync",
        Reader::Tokio => "rx-tokio",
        Reader::Smol => "rx-smol",
        Reader::Libpcap => "rx-libpcap",
        Reader::Xdp(_) => "rx-xdp",
    };
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            pin_to(reader_cpu());
            match reader {
                Reader::Netring => read_netring(ctx),
                Reader::Tokio => read_tokio(ctx),
                Reader::Smol => read_smol(ctx),
                Reader::Libpcap => read_libpcap(ctx),
                Reader::Xdp(wake) => read_xdp(ctx, wake),
            }
        });
    let handle = spawned.map_err(|e| format!("spawning the reader thread: {e}"))?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(RunningReader {
            stop,
            stopped,
            handle,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{} did not start", reader.name())),
    }
}

impl RunningReader {
    fn finish(self) -> Result<ReadResult, String> {
        self.stop.store(true, Ordering::Release);
        let _ = self.stopped.send(());
        self.handle
            .join()
            .map_err(|_| "reader thread panicked".to_string())?
    }
}

/// Idle/stop bookkeeping shared by the blocking readers.
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

/// Opens netring's capture with its defaults: 64 blocks of 256 KiB (16 MiB, like libpcap's
/// buffer here), 10 ms block timeout (libpcap's is the 10 ms read timeout set below).
fn open_capture(ctx: &ReaderCtx) -> Result<Capture, String> {
    let opened = netring::netns::within(&ctx.ns, || {
        let b = Capture::builder(&ctx.dev);
        assert_eq!(
            netring::CaptureBuilder::DEFAULT_BLOCK_SIZE
                * netring::CaptureBuilder::DEFAULT_BLOCK_COUNT,
            RING_BYTES
        );
        b.open()
    })
    .and_then(|r| r);
    opened.map_err(|e| ctx.failed(e))
}

fn read_netring(ctx: ReaderCtx) -> Result<ReadResult, String> {
    let mut cap = open_capture(&ctx)?;
    let _ = ctx.ready.send(Ok(()));
    let stop = &*ctx.stop;
    let mut r = ReadResult::default();
    let mut end = EndCheck::new();
    let cpu0 = thread_cpu();
    loop {
        match cap.next_batch(Some(Duration::from_millis(50))) {
            Ok(Some(batch)) => {
                end.busy();
                r.add_batch(&batch);
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

/// The async reader: the batch stream, plus a watchdog that waits until the generator is done,
/// then checks every 20 ms on the runtime's timer and ends the read once nothing came for
/// [`IDLE_END`]. Both run in one task on the calling thread (like a `select!` on a shutdown
/// signal); while the traffic flows the watchdog is a oneshot receiver, polled along with the
/// stream. The per-batch work is what the blocking reader does.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
async fn drive_async<R, S, F>(
    rx: &mut AsyncCapture<R>,
    stopped: futures::channel::oneshot::Receiver<()>,
    sleep: S,
    r: &mut ReadResult,
) -> Result<(), String>
where
    R: Runtime,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let last = Cell::new(Instant::now());
    let reading = async {
        while let Some(batch) = rx.next().await {
            r.add_batch(&batch.map_err(|e| e.to_string())?);
            last.set(Instant::now());
        }
        Err::<(), String>("the capture stream ended".into())
    };
    let watchdog = async {
        // `finish` always sends (or drops the sender): no timer is armed while traffic flows,
        // so the runtimes wait exactly as the blocking reader does.
        let _ = stopped.await;
        while last.get().elapsed() < IDLE_END {
            sleep(Duration::from_millis(20)).await;
        }
    };
    match select(pin!(reading), pin!(watchdog)).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => Ok(()),
    }
}

#[cfg(feature = "tokio")]
fn read_tokio(ctx: ReaderCtx) -> Result<ReadResult, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ctx.failed(e))?;
    let cap = open_capture(&ctx)?;
    rt.block_on(async {
        let mut rx =
            AsyncCapture::<netring::runtime::Tokio>::new(cap).map_err(|e| ctx.failed(e))?;
        let _ = ctx.ready.send(Ok(()));
        let mut r = ReadResult::default();
        let cpu0 = thread_cpu();
        drive_async(&mut rx, ctx.stopped, tokio::time::sleep, &mut r).await?;
        r.cpu = thread_cpu() - cpu0;
        let stats = rx.cumulative_stats().map_err(|e| e.to_string())?;
        r.socket_packets = stats.packets;
        r.drops = stats.drops;
        Ok(r)
    })
}

#[cfg(not(feature = "tokio"))]
fn read_tokio(ctx: ReaderCtx) -> Result<ReadResult, String> {
    Err(ctx.failed("built without the `tokio` feature"))
}

#[cfg(feature = "smol")]
fn read_smol(ctx: ReaderCtx) -> Result<ReadResult, String> {
    let cap = open_capture(&ctx)?;
    smol::block_on(async {
        let mut rx = AsyncCapture::<netring::runtime::Smol>::new(cap).map_err(|e| ctx.failed(e))?;
        let _ = ctx.ready.send(Ok(()));
        let mut r = ReadResult::default();
        let helper0 = named_threads_cpu("async-io");
        let cpu0 = thread_cpu();
        let sleep = |d| async move {
            smol::Timer::after(d).await;
        };
        drive_async(&mut rx, ctx.stopped, sleep, &mut r).await?;
        r.cpu = thread_cpu() - cpu0;
        r.helper_cpu = named_threads_cpu("async-io").saturating_sub(helper0);
        let stats = rx.cumulative_stats().map_err(|e| e.to_string())?;
        r.socket_packets = stats.packets;
        r.drops = stats.drops;
        Ok(r)
    })
}

#[cfg(not(feature = "smol"))]
fn read_smol(ctx: ReaderCtx) -> Result<ReadResult, String> {
    Err(ctx.failed("built without the `smol` feature"))
}

fn read_libpcap(ctx: ReaderCtx) -> Result<ReadResult, String> {
    let opened = netring::netns::within(&ctx.ns, || {
        pcap::Capture::from_device(ctx.dev.as_str()).and_then(|c| {
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
        Ok(Err(e)) => return Err(ctx.failed(format!("libpcap: {e}"))),
        Err(e) => return Err(ctx.failed(e)),
    };
    let _ = ctx.ready.send(Ok(()));
    let stop = &*ctx.stop;
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

/// Takes every batch the RX ring holds now; true if there was any.
fn xdp_drain(xsk: &mut XdpSocket, r: &mut ReadResult) -> Result<bool, String> {
    let mut got = false;
    while let Some(batch) = xsk.try_next_batch().map_err(|e| e.to_string())? {
        got = true;
        r.batches += 1;
        for p in &batch {
            r.packets += 1;
            r.bytes += p.len() as u64;
        }
    }
    Ok(got)
}

fn read_xdp(ctx: ReaderCtx, wake: XdpWake) -> Result<ReadResult, String> {
    // The built-in program (native XDP on veth), copy mode; half the UMEM's frames for RX.
    let opened = netring::netns::within(&ctx.ns, || {
        XdpSocket::builder(&ctx.dev)
            .frame_count(ctx.xdp.frames)
            .ring_size(ctx.xdp.ring)
            .open()
    })
    .and_then(|r| r);
    let mut xsk = opened.map_err(|e| ctx.failed(e))?;
    // Short sleeps as asked for (the default slack is 50 us).
    set_timer_slack(1_000);
    let _ = ctx.ready.send(Ok(()));
    let stop = &*ctx.stop;
    let fd = xsk.as_fd().as_raw_fd();
    let mut r = ReadResult::default();
    let mut end = EndCheck::new();
    let nap = |bound: Duration, r: &mut ReadResult| {
        let t = Instant::now();
        std::thread::sleep(bound);
        r.sleeps += 1;
        r.slept += t.elapsed();
    };
    let cpu0 = thread_cpu();
    loop {
        let got = match wake {
            XdpWake::Default => match xsk
                .next_batch(Some(Duration::from_millis(50)))
                .map_err(|e| e.to_string())?
            {
                Some(batch) => {
                    r.batches += 1;
                    for p in &batch {
                        r.packets += 1;
                        r.bytes += p.len() as u64;
                    }
                    true
                }
                None => false,
            },
            XdpWake::Plain => {
                let got = xdp_drain(&mut xsk, &mut r)?;
                if !got {
                    wait_readable(fd, 50);
                }
                got
            }
            XdpWake::Sleep(bound) => {
                let got = xdp_drain(&mut xsk, &mut r)?;
                nap(bound, &mut r);
                got
            }
            XdpWake::Coalesce(bound) => {
                let got = xdp_drain(&mut xsk, &mut r)?;
                if wait_readable(fd, 50) {
                    nap(bound, &mut r);
                }
                got
            }
        };
        if got {
            end.busy();
        } else if end.idle(stop) {
            break;
        }
    }
    r.cpu = thread_cpu() - cpu0;
    let stats = xsk.stats().map_err(|e| e.to_string())?;
    r.drops = stats.rx_dropped;
    r.socket_packets = r.packets + stats.rx_dropped;
    r.xdp = Some(stats);
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// The runs.

struct RxRound {
    generated: Generated,
    read: ReadResult,
    link: LinkCounters,
}

impl RxRound {
    fn ns_per_packet(&self) -> Option<f64> {
        (self.read.packets > 0).then(|| self.read.cpu.as_nanos() as f64 / self.read.packets as f64)
    }
    fn lost(&self) -> u64 {
        self.generated.packets.saturating_sub(self.read.packets)
    }
}

fn rx_round(
    net: &TestNet,
    reader: Reader,
    generator: &Generator,
    count: u64,
    rate: Option<u64>,
    xdp: XdpGeometry,
) -> Result<RxRound, String> {
    let running = start_reader(net, reader, xdp)?;
    let before = LinkCounters::read(net);
    let generated = generator.run_at(net, count, rate);
    let read = running.finish()?;
    let generated = generated?;
    let link = LinkCounters::read(net).delta(before);
    Ok(RxRound {
        generated,
        read,
        link,
    })
}

/// One reader's medians.
#[derive(Debug, Clone, Copy)]
struct RxSummary {
    /// Median and best CPU ns/packet of the capturing thread.
    ns: f64,
    best: f64,
    /// Median packets received.
    recv: f64,
    /// Median generator rate.
    gen_pps: f64,
    /// Rounds that lost frames anywhere on the way (generator count vs packets read).
    lossy_rounds: usize,
}

/// Runs `rounds` rounds of every reader (rotating the order), with `count` frames each.
fn rx_rounds(
    net: &TestNet,
    generator: &Generator,
    readers: &[Reader],
    rounds: usize,
    count: u64,
    xdp: XdpGeometry,
) -> Vec<Vec<RxRound>> {
    let mut results: Vec<Vec<RxRound>> = readers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..readers.len() {
            let i = (k + round) % readers.len();
            match rx_round(net, readers[i], generator, count, None, xdp) {
                Ok(r) => results[i].push(r),
                Err(e) => println!("  round {round} {}: FAILED: {e}", readers[i].name()),
            }
        }
    }
    results
}

/// Prints one reader's figures and returns its medians.
fn report_rx(reader: Reader, rounds: &[RxRound], count: u64) -> RxSummary {
    let recv = median(rounds.iter().map(|r| r.read.packets as f64).collect());
    let drops = median(rounds.iter().map(|r| r.read.drops as f64).collect());
    let gen_pps = median(rounds.iter().map(|r| r.generated.pps()).collect());
    let per_pkt: Vec<f64> = rounds.iter().filter_map(RxRound::ns_per_packet).collect();
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
    if rounds.iter().any(|r| !r.read.helper_cpu.is_zero()) {
        let helper: Vec<f64> = rounds
            .iter()
            .filter(|r| r.read.packets > 0)
            .map(|r| r.read.helper_cpu.as_nanos() as f64 / r.read.packets as f64)
            .collect();
        let with: Vec<f64> = rounds
            .iter()
            .filter(|r| r.read.packets > 0)
            .map(|r| (r.read.cpu + r.read.helper_cpu).as_nanos() as f64 / r.read.packets as f64)
            .collect();
        println!(
            "      + async-io helper thread: {:.1} ns/packet (median); capturing + helper {:.1} ns/packet",
            median(helper),
            median(with)
        );
    }
    for (i, r) in rounds.iter().enumerate() {
        let mut extra = String::new();
        if let Some(x) = r.read.xdp {
            extra = format!(
                " | xdp rx_dropped {} rx_ring_full {} fill_ring_empty {} invalid {}",
                x.rx_dropped, x.rx_ring_full, x.rx_fill_ring_empty, x.rx_invalid_descs
            );
        }
        if r.read.sleeps > 0 {
            extra += &format!(
                " | {} sleeps, mean {:.0} us, {:.0} packets per sleep",
                r.read.sleeps,
                r.read.slept.as_secs_f64() * 1e6 / r.read.sleeps as f64,
                r.read.packets as f64 / r.read.sleeps as f64
            );
        }
        println!(
            "      round {i}: generator {} pkts in {:.3} s ({}; wall {:.3} s) | read {} pkts, {} B, \
             {} batches, drops {}, cpu {:.1} ms | veth: a tx {} (dropped {}), b rx {} (dropped {}), softnet dropped {}{extra}",
            r.generated.packets,
            r.generated.secs,
            mpps(r.generated.pps()),
            r.generated.wall,
            r.read.packets,
            r.read.bytes,
            r.read.batches,
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
         softnet backlog drops {}), b->socket {}, socket drops {}, socket->reader {}; total {} of {}",
        generated.saturating_sub(a_tx),
        a_tx.saturating_sub(b_rx),
        sum(&|r| r.link.a_tx_dropped),
        sum(&|r| r.link.b_rx_dropped),
        sum(&|r| r.link.softnet_dropped),
        b_rx.saturating_sub(socket),
        drops,
        socket.saturating_sub(drops).saturating_sub(read),
        generated.saturating_sub(read),
        generated,
    );
    RxSummary {
        ns: ns_per_pkt,
        best: best_ns,
        recv,
        gen_pps,
        lossy_rounds: rounds.iter().filter(|r| r.lost() > 0).count(),
    }
}

/// The loss-free rate of `reader`: if every round at the generator's full rate was loss-free,
/// that rate is a lower bound; otherwise trafgen `--rate` steps down (75%, 50%, 25% of the full
/// rate) until a run loses nothing. Returns a sentence.
fn loss_free_rate(
    net: &TestNet,
    generator: &Generator,
    reader: Reader,
    full: &RxSummary,
    count: u64,
    xdp: XdpGeometry,
) -> String {
    if full.lossy_rounds == 0 {
        return format!(
            ">= {} (every round at the generator's full rate was loss-free; generator-bound)",
            mpps(full.gen_pps)
        );
    }
    if !matches!(generator, Generator::Trafgen(_)) {
        return format!(
            "below {} ({} rounds lost frames; no rate-limited generator without trafgen)",
            mpps(full.gen_pps),
            full.lossy_rounds
        );
    }
    let mut tried = Vec::new();
    for frac in [0.75, 0.5, 0.25] {
        let rate = (full.gen_pps * frac) as u64;
        match rx_round(net, reader, generator, count, Some(rate), xdp) {
            Ok(r) => {
                tried.push(format!(
                    "{} -> lost {} of {}",
                    mpps(r.generated.pps()),
                    r.lost(),
                    r.generated.packets
                ));
                if r.lost() == 0 {
                    return format!(
                        "{} (trafgen --rate {rate}pps; full rate {} lost frames in {} rounds; steps: {})",
                        mpps(r.generated.pps()),
                        mpps(full.gen_pps),
                        full.lossy_rounds,
                        tried.join(", ")
                    );
                }
            }
            Err(e) => tried.push(format!("{rate} pps FAILED: {e}")),
        }
    }
    format!(
        "below {} (every step lost frames: {})",
        tried.last().map_or("?", |s| s.as_str()),
        tried.join(", ")
    )
}

/// Which parts run: `NETRING_BENCH_ONLY=rx` (AF_PACKET and AF_XDP RX) or `=tx` (TX only, about
/// a minute); unset: everything.
#[derive(Debug, Clone, Copy)]
struct Sections {
    rx: bool,
    tx: bool,
}

impl Sections {
    fn from_env() -> Self {
        match std::env::var("NETRING_BENCH_ONLY").as_deref() {
            Ok("rx") => Sections {
                rx: true,
                tx: false,
            },
            Ok("tx") => Sections {
                rx: false,
                tx: true,
            },
            _ => Sections { rx: true, tx: true },
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !tool_exists("ip") {
        println!("bench capture: SKIPPED (needs root and `ip`: it builds a veth pair in a netns)");
        return;
    }
    let rx_count = env_num("NETRING_BENCH_PACKETS", 1_000_000);
    // TX alone (NETRING_BENCH_ONLY=tx) is the quick run: fewer frames per run by default.
    let tx_only = std::env::var("NETRING_BENCH_ONLY").as_deref() == Ok("tx");
    let tx_count = env_num(
        "NETRING_BENCH_TX_PACKETS",
        if tx_only { 300_000 } else { 500_000 },
    );
    let rounds = env_num("NETRING_BENCH_ROUNDS", 5) as usize;
    let xdp_count = env_num("NETRING_BENCH_XDP_PACKETS", 500_000);
    let xdp_rounds = env_num("NETRING_BENCH_XDP_ROUNDS", 3) as usize;
    let rate_count = env_num("NETRING_BENCH_RATE_PACKETS", 300_000);
    let xdp_tx_batch = env_num("NETRING_BENCH_XDP_TX_BATCH", 64);
    let verbose = std::env::var_os("NETRING_BENCH_VERBOSE").is_some();
    // Default: 8192 RX frames of 2048 bytes (16 MiB, the AF_PACKET ring's size) and rings that
    // hold them all; the library's default (4096 frames, 2048 for RX) buffers only ~5 ms at
    // 0.4 Mpps, too little for a loaded 2-CPU machine.
    let xdp_geometry = XdpGeometry {
        frames: env_num("NETRING_BENCH_XDP_FRAMES", 16384) as u32,
        ring: env_num("NETRING_BENCH_XDP_RING", 8192) as u32,
    };
    let bounds: Vec<Duration> = std::env::var("NETRING_BENCH_XDP_BOUNDS_US")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|x| x.trim().parse::<u64>().ok())
                .filter(|&us| us > 0)
                .map(Duration::from_micros)
                .collect()
        })
        .unwrap_or_else(|| [50, 200, 1000].map(Duration::from_micros).to_vec());
    let sections = Sections::from_env();
    let started = Instant::now();

    let net = TestNet::new();
    let frame = udp_frame(FRAME_LEN, net.mac(&net.a));
    // NETRING_BENCH_NO_TRAFGEN=1 forces the fallback generator (to check that path).
    let have_trafgen =
        tool_exists("trafgen") && std::env::var_os("NETRING_BENCH_NO_TRAFGEN").is_none();
    let generator = if have_trafgen {
        Generator::Trafgen(Trafgen::new(&frame, "broadcast"))
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

    if sections.rx {
        // 1. RX through AF_PACKET: blocking, tokio, smol, libpcap, in rotating order.
        let mut readers = vec![Reader::Netring];
        if cfg!(feature = "tokio") {
            readers.push(Reader::Tokio);
        }
        if cfg!(feature = "smol") {
            readers.push(Reader::Smol);
        }
        readers.push(Reader::Libpcap);
        println!(
            "\nRX: {} sends {rx_count} frames into {} per round; readers count on {}",
            generator.name(),
            net.a,
            net.b
        );
        if readers.len() < 4 {
            println!("  (async readers need --features tokio,smol; skipped those not built)");
        }
        let results = rx_rounds(&net, &generator, &readers, rounds, rx_count, xdp_geometry);
        let summaries: Vec<RxSummary> = readers
            .iter()
            .zip(&results)
            .map(|(r, rounds)| report_rx(*r, rounds, rx_count))
            .collect();
        let find = |which: Reader| {
            readers
                .iter()
                .position(|r| *r == which)
                .map(|i| summaries[i])
        };
        let sync = find(Reader::Netring).expect("always measured");
        let libpcap = find(Reader::Libpcap).expect("always measured");
        println!(
            "  ratio netring/libpcap: CPU per packet {:.2} (median), {:.2} (best); packets received {:.3}",
            sync.ns / libpcap.ns,
            sync.best / libpcap.best,
            sync.recv / libpcap.recv
        );
        // Paired: each round runs every reader on the same generator back to back, so the per-round
        // ratio cancels most of the machine's drift between rounds.
        let rounds_of = |which: Reader| {
            readers
                .iter()
                .position(|r| *r == which)
                .map(|i| &results[i])
        };
        let sync_rounds = rounds_of(Reader::Netring).expect("always measured");
        for which in [Reader::Tokio, Reader::Smol] {
            if let (Some(a), Some(a_rounds)) = (find(which), rounds_of(which)) {
                let paired: Vec<f64> = if a_rounds.len() == sync_rounds.len() {
                    a_rounds
                        .iter()
                        .zip(sync_rounds)
                        .filter_map(|(a, s)| Some(a.ns_per_packet()? / s.ns_per_packet()?))
                        .collect()
                } else {
                    Vec::new()
                };
                let per_batch_us: Vec<f64> = a_rounds
                    .iter()
                    .zip(sync_rounds)
                    .filter(|(a, s)| a.read.batches > 0 && s.read.batches > 0)
                    .map(|(a, s)| {
                        (a.read.cpu.as_secs_f64() / a.read.batches as f64
                            - s.read.cpu.as_secs_f64() / s.read.batches as f64)
                            * 1e6
                    })
                    .collect();
                println!(
                    "  ratio {}/sync: CPU per packet {:.3} (median), {:.3} (best), {:.3} (median of \
                 per-round ratios: {}) [target <= 1.05]; {:+.2} us per batch; vs libpcap {:.2} \
                 (median); packets received {:.3} of sync's",
                    which.name(),
                    a.ns / sync.ns,
                    a.best / sync.best,
                    median(paired.clone()),
                    paired
                        .iter()
                        .map(|x| format!("{x:.3}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    median(per_batch_us),
                    a.ns / libpcap.ns,
                    a.recv / sync.recv
                );
            }
        }

        // 2. AF_XDP RX on the same veth, several wakeup strategies.
        let mut xdp_readers = vec![Reader::Xdp(XdpWake::Default), Reader::Xdp(XdpWake::Plain)];
        for &b in &bounds {
            xdp_readers.push(Reader::Xdp(XdpWake::Sleep(b)));
        }
        for &b in &bounds {
            xdp_readers.push(Reader::Xdp(XdpWake::Coalesce(b)));
        }
        println!(
            "\nAF_XDP RX: {} sends {xdp_count} frames into {} per round, {xdp_rounds} rounds; an XdpSocket \
         (built-in program, copy mode, UMEM of {} frames, half for RX, rings of {}) counts on {}",
            generator.name(),
            net.a,
            xdp_geometry.frames,
            xdp_geometry.ring,
            net.b
        );
        let xdp_results = rx_rounds(
            &net,
            &generator,
            &xdp_readers,
            xdp_rounds,
            xdp_count,
            xdp_geometry,
        );
        let xdp_summaries: Vec<RxSummary> = xdp_readers
            .iter()
            .zip(&xdp_results)
            .map(|(r, rounds)| report_rx(*r, rounds, xdp_count))
            .collect();
        println!(
            "  summary (CPU of the reading thread per packet, median of rounds; the kernel's copy into \
         the ring/UMEM runs in the sender's softirq and is not included for either backend):"
        );
        println!(
            "    {:<22} {:>10} {:>8} {:>14} {:>10} {:>12}",
            "reader", "ns/packet", "best", "latency bound", "vs AF_PKT", "received"
        );
        let row = |name: &str, s: &RxSummary, bound: &str, count: u64| {
            println!(
                "    {:<22} {:>10.1} {:>8.1} {:>14} {:>10.2} {:>11.1}%",
                name,
                s.ns,
                s.best,
                bound,
                s.ns / sync.ns,
                s.recv * 100.0 / count as f64
            );
        };
        row("AF_PACKET Capture", &sync, "block 10 ms", rx_count);
        for (r, s) in xdp_readers.iter().zip(&xdp_summaries) {
            let bound = match r {
                Reader::Xdp(w) => w
                    .bound()
                    .map_or("wakeup".to_owned(), |d| format!("{} us", d.as_micros())),
                _ => String::new(),
            };
            row(&r.name(), s, &bound, xdp_count);
        }
        println!(
            "    reference on this machine: naive poll-per-packet libxdp loop ~850 ns/packet, \
         TPACKET_V3 ~25 ns/packet"
        );
        println!(
            "  loss-free rate ({rate_count} frames per step when the full rate lost frames; the sleep \
         strategies only at the full rate):"
        );
        println!(
            "    {:<22} {}",
            "AF_PACKET Capture",
            loss_free_rate(
                &net,
                &generator,
                Reader::Netring,
                &sync,
                rate_count,
                xdp_geometry
            )
        );
        for (r, s) in xdp_readers.iter().zip(&xdp_summaries) {
            let line = if matches!(r, Reader::Xdp(XdpWake::Sleep(_))) {
                format!(
                    "{} rounds of {} lost frames at the full rate ({})",
                    s.lossy_rounds,
                    xdp_rounds,
                    mpps(s.gen_pps)
                )
            } else {
                loss_free_rate(&net, &generator, *r, s, rate_count, xdp_geometry)
            };
            println!("    {:<22} {line}", r.name());
        }
        // trafgen is the limit on this veth: probe above it with the faster AF_XDP sender, for
        // the readers that lost nothing at trafgen's full rate.
        let fast = Generator::Xdp(frame.clone());
        let probe_rounds = xdp_rounds.max(3);
        println!(
            "  above trafgen's rate ({}, {probe_rounds} rounds of {rate_count} frames, sender on CPU 0):",
            fast.name()
        );
        let lossless: Vec<(Reader, &RxSummary)> = std::iter::once((Reader::Netring, &sync))
            .chain(xdp_readers.iter().copied().zip(&xdp_summaries))
            .filter(|(r, s)| s.lossy_rounds == 0 && !matches!(r, Reader::Xdp(XdpWake::Sleep(_))))
            .collect();
        for (r, _) in lossless {
            let mut rates = Vec::new();
            let mut lost = Vec::new();
            for _ in 0..probe_rounds {
                match rx_round(&net, r, &fast, rate_count, None, xdp_geometry) {
                    Ok(round) => {
                        rates.push(round.generated.pps());
                        lost.push(round.lost());
                    }
                    Err(e) => println!("    {:<22} FAILED: {e}", r.name()),
                }
            }
            if rates.is_empty() {
                continue;
            }
            let lossy = lost.iter().filter(|&&l| l > 0).count();
            println!(
                "    {:<22} sender {} (median), lost frames in {lossy} of {} rounds (lost: {:?}){}",
                r.name(),
                mpps(median(rates.clone())),
                lost.len(),
                lost,
                if lossy == 0 {
                    ": loss-free at that rate"
                } else {
                    ""
                }
            );
        }
    }

    if sections.tx {
        // 3. TX: netring's Injector (with and without qdisc bypass), XdpSocket TX, trafgen.
        println!(
            "\nTX: {tx_count} frames of {FRAME_LEN} bytes on {} per run, every sender on CPU 0 \
             (XdpSocket: copy mode, so each frame still becomes a socket buffer; the peer's \
             receive runs in the sender's context for every sender)",
            net.a
        );
        pin_to(0);
        let mut kinds = TxKind::from_env(xdp_tx_batch).unwrap_or_else(|| {
            vec![
                TxKind::Injector { bypass: false },
                TxKind::Injector { bypass: true },
                TxKind::Xdp(XdpTx::library(xdp_tx_batch)),
                TxKind::Xdp(XdpTx::library(0)),
                TxKind::Xdp(XdpTx {
                    auto: Some(0),
                    ..XdpTx::library(0)
                }),
                TxKind::Xdp(XdpTx {
                    budget: Some(XDP_KERNEL_TX_BUDGET),
                    ..XdpTx::library(xdp_tx_batch)
                }),
                TxKind::Xdp(XdpTx {
                    rx_waited: true,
                    ..XdpTx::library(xdp_tx_batch)
                }),
                TxKind::Trafgen,
            ]
        });
        if !have_trafgen {
            kinds.retain(|k| *k != TxKind::Trafgen);
        }
        let trafgen = match &generator {
            Generator::Trafgen(t) => Some(t),
            Generator::Injector(_) | Generator::Xdp(_) => None,
        };
        let peers = std::env::var("NETRING_BENCH_TX_PEERS")
            .unwrap_or_else(|_| "broadcast,otherhost".into());
        for peer in peers.split(',').map(str::trim) {
            match peer {
                "broadcast" => {
                    println!(
                        "  peer: broadcast frames to {} (no address): each one goes up to IPv4 \
                         input, where the route lookup fails",
                        net.b
                    );
                    tx_compare(&net, &frame, trafgen, &kinds, rounds, tx_count, verbose);
                }
                "otherhost" => {
                    // Unicast to a MAC nobody has: the peer's IPv4 input drops it first thing
                    // (PACKET_OTHERHOST), so the figures show the senders' own costs more.
                    let mut other = frame.clone();
                    other[0..6].copy_from_slice(&OTHER_HOST_MAC);
                    let t = trafgen.map(|_| Trafgen::new(&other, "otherhost"));
                    println!(
                        "  peer: unicast frames to a MAC {} does not have: dropped on arrival \
                         at IPv4 input",
                        net.b
                    );
                    tx_compare(&net, &other, t.as_ref(), &kinds, rounds, tx_count, verbose);
                    if let Some(t) = t {
                        let _ = std::fs::remove_file(&t.conf);
                    }
                }
                other => println!("  peer `{other}`: unknown (broadcast, otherhost)"),
            }
        }
        match xdp_fill_cost(&net, &frame) {
            Ok(ns) => println!(
                "  XdpSocket::try_send user-space cost (8192 frames queued, no flush): {ns:.1} ns/frame (best of 5)"
            ),
            Err(e) => println!("  XdpSocket fill: FAILED: {e}"),
        }
        match xdp_left_after_one_flush(&net, &frame, 256) {
            Ok(left) => println!(
                "  XdpSocket: {left} of 256 frames still on the TX ring 100 ms after one flush (no later kick)"
            ),
            Err(e) => println!("  XdpSocket flush check: FAILED: {e}"),
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
    }

    println!(
        "\nbench capture: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Generator::Trafgen(t) = &generator {
        let _ = std::fs::remove_file(&t.conf);
    }
}
