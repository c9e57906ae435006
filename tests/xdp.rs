//! AF_XDP sockets (`netring::xdp::XdpSocket`) with real traffic, blocking API.
//!
//! Every test builds its own namespace with a veth pair (`TestNet`). Traffic comes from
//! independent tools: frames written by scapy and sent by tcpreplay (or by scapy itself) for RX,
//! tcpdump capturing what an `XdpSocket` transmits for TX, both compared byte for byte.
//!
//! AF_XDP RX buffers only as many frames as the UMEM's RX pool holds, so every test reads while
//! its sender runs. Where the traffic is paced (tcpreplay), the RX pool covers a few hundred
//! milliseconds of it; the tests whose UMEM is deliberately tiny (recycling, forwarding) use a
//! flow-controlled scapy sender instead (`ChunkSender`: the next chunk once the last arrived), so
//! no scheduling delay on a loaded 2-core machine can overflow them.
//!
//! Covered: RX in native and generic XDP (and jumbo frames through the generic fallback), TX,
//! fill-ring recycling with batches held and dropped out of order on other threads, zero-copy
//! forwarding of received frames (`XdpBatch::take` + `send_frame`), the program's removal on
//! drop and when the owning process dies, multi-queue sockets (`open_queues`), the `Match`
//! filter passing other traffic to the kernel stack, and the typed errors (queue out of range,
//! zero-copy on veth, UMEM over `RLIMIT_MEMLOCK`).

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::frames::*;
use common::*;
use netring::Error;
use netring::xdp::{AttachMode, BindMode, Match, XdpBatch, XdpSocket, XdpStats};

/// How long a test waits for traffic it is sure to get (liveness bound, not a timing check).
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The XDP flag `ip link show` prints for `dev` (`xdp`, `xdpgeneric`, ...), with the full text.
fn ip_xdp_flag(net: &TestNet, dev: &str) -> (Option<String>, String) {
    let out = net.ip(&["link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flag = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .find(|t| t.starts_with("xdp"))
        .map(str::to_owned);
    let flag = flag.or_else(|| text.contains("prog/xdp").then(|| "prog/xdp".to_owned()));
    (flag, text)
}

/// Waits (5 s bound) until `dev` has no XDP program; fails with `ip link show`'s text otherwise.
#[track_caller]
fn assert_no_xdp(net: &TestNet, dev: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (flag, text) = ip_xdp_flag(net, dev);
        if flag.is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{dev}` still has an XDP program:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens an `XdpSocket` inside the namespace.
fn open_in(net: &TestNet, b: netring::xdp::XdpSocketBuilder) -> XdpSocket {
    net.within(|| b.open()).expect("opening the XdpSocket")
}

/// Copies our frames out of a batch.
fn ours(batch: &XdpBatch) -> Vec<Vec<u8>> {
    batch
        .iter()
        .filter(|p| is_ours(p.data()))
        .map(|p| p.data().to_vec())
        .collect()
}

/// Reads until `n` of our frames arrived (bounded by [`PATIENCE`]), calling `keep` with each
/// batch after copying its frames (so a test can hold or hand batches off).
fn read_frames(xsk: &mut XdpSocket, n: usize, mut keep: impl FnMut(XdpBatch)) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::with_capacity(n);
    while got.len() < n && Instant::now() < deadline {
        if let Some(batch) = xsk.next_batch(Some(Duration::from_millis(250))).unwrap() {
            got.extend(ours(&batch));
            keep(batch);
        }
    }
    got
}

/// After the traffic: no more of our frames come (nothing delivered twice).
fn assert_nothing_more(xsk: &mut XdpSocket) {
    while let Some(batch) = xsk.next_batch(Some(Duration::from_millis(300))).unwrap() {
        let extra = ours(&batch).len();
        assert_eq!(extra, 0, "{extra} test frames beyond those sent");
    }
}

/// Compares frame lists in order, byte for byte.
#[track_caller]
fn assert_frames(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_frame_eq(what, i, g, w);
    }
    assert_eq!(got.len(), want.len(), "{what}: number of frames");
}

#[track_caller]
fn assert_clean_rx(what: &str, stats: XdpStats) {
    assert_eq!(stats.rx_dropped, 0, "{what}: {stats:?}");
    assert_eq!(stats.rx_invalid_descs, 0, "{what}: {stats:?}");
}

/// tcpreplay `file` on `net.a` at `pps` while `read` runs; returns what `read` returned after
/// checking tcpreplay sent `n` frames.
fn with_replay<T>(net: &TestNet, file: &str, n: usize, pps: u32, read: impl FnOnce() -> T) -> T {
    std::thread::scope(|s| {
        let sender = s.spawn(|| tcpreplay(net, &net.a, file, pps));
        let out = read();
        let sent = sender.join().expect("tcpreplay thread");
        assert_eq!(sent, n as u64, "tcpreplay's count");
        out
    })
}

/// A tcpdump with a filter of our choice (the `frames::Tcpdump` helper has a fixed one), not in
/// immediate mode (see `frames::Tcpdump::start` for why), keeping its exit statistics.
struct Dump {
    bg: Background,
    stderr: std::thread::JoinHandle<Vec<String>>,
    file: String,
}

impl Dump {
    fn start(net: &TestNet, dev: &str, name: &str, filter: &str) -> Self {
        let file = scratch(name);
        let mut bg = Background::spawn(
            net.cmd("tcpdump")
                .args(["-i", dev, "-w", &file, "-B", "16384", "-n", "-U"])
                .args(["-Q", "in", filter]),
        );
        let stderr = bg.child.stderr.take().expect("tcpdump stderr");
        let (tx, rx) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            drop(bg);
            panic!(
                "tcpdump did not start listening within 10 s: {:?}",
                stderr.join()
            );
        }
        Dump { bg, stderr, file }
    }

    /// Waits (bounded) for `n` records, stops tcpdump, checks it dropped nothing and returns the
    /// frames it wrote.
    fn finish(self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while pcap_records_so_far(&self.file) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // A little longer: anything beyond `n` would be a duplicate.
        std::thread::sleep(Duration::from_millis(300));
        let out = self.bg.interrupt_and_wait(10);
        let lines = self.stderr.join().expect("tcpdump stderr reader");
        let dropped = lines
            .iter()
            .find_map(|l| l.strip_suffix("packets dropped by kernel"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no drop count from tcpdump ({:?}): {lines:?}", out.status));
        assert_eq!(dropped, 0, "tcpdump dropped frames: {lines:?}");
        let frames = read_pcap(&self.file);
        let _ = std::fs::remove_file(&self.file);
        frames
    }
}

/// Like [`read_frames`], with the traffic asked from `sender` `chunk` frames at a time: the next
/// chunk only once every frame asked for so far has arrived.
fn read_chunked(
    xsk: &mut XdpSocket,
    sender: &mut ChunkSender,
    n: usize,
    chunk: usize,
    mut keep: impl FnMut(XdpBatch),
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::with_capacity(n);
    while got.len() < n && Instant::now() < deadline {
        if got.len() == sender.requested {
            sender.request(chunk.min(n - got.len()));
        }
        if let Some(batch) = xsk.next_batch(Some(Duration::from_millis(250))).unwrap() {
            got.extend(ours(&batch));
            keep(batch);
        }
    }
    got
}

// ---------------------------------------------------------------------------------------------
// 1. RX, byte for byte.

/// tcpreplay sends 2400 frames (60..1514 bytes, some VLAN-tagged) written by scapy into `net.a`
/// at 6000 frames/s; an `XdpSocket` on `net.b` (1536 RX frames, so they are recycled while the
/// traffic lasts) gets every one, byte for byte, in order, with the built-in program attached
/// natively and then generically. The kernel dropped nothing (`XDP_STATISTICS`).
#[test]
fn rx_tcpreplay_byte_for_byte_native_and_generic() {
    if !can_run(
        "rx_tcpreplay_byte_for_byte_native_and_generic",
        &["scapy", "tcpreplay", "taskset"],
    ) {
        return;
    }
    let sf = scapy_frames("xdp-rx", 2400, 21, 60, 1514, 0);
    let net = TestNet::new();
    for mode in [AttachMode::Native, AttachMode::Generic] {
        let t = Instant::now();
        let mut xsk = open_in(
            &net,
            XdpSocket::builder(&net.b)
                .attach_mode(mode)
                .frame_count(2048)
                .rx_frames(1536)
                .ring_size(2048),
        );
        assert_eq!(xsk.attach_mode(), Some(mode));
        assert_eq!(xsk.bind_mode(), BindMode::Copy, "veth has no zero-copy");
        assert_eq!(xsk.queue(), 0);
        let want_flag = if mode == AttachMode::Native {
            "xdp"
        } else {
            "xdpgeneric"
        };
        let (flag, text) = ip_xdp_flag(&net, &net.b);
        assert_eq!(flag.as_deref(), Some(want_flag), "{text}");
        let got = with_replay(&net, &sf.file, sf.frames.len(), 6000, || {
            read_frames(&mut xsk, sf.frames.len(), drop)
        });
        assert_nothing_more(&mut xsk);
        assert_frames(&format!("xdp rx ({mode})"), &got, &sf.frames);
        let stats = xsk.stats().unwrap();
        assert_clean_rx(mode.as_str(), stats);
        eprintln!(
            "{mode}: {} frames in {:?}, {stats:?}",
            got.len(),
            t.elapsed()
        );
        drop(xsk);
        assert_no_xdp(&net, &net.b, "after the socket dropped");
    }
}

/// With RX coalescing, frames wait up to the bound for company, then come out all the same: every
/// frame byte for byte and in order, including a final partial batch (drained by the timer alone).
#[test]
fn rx_coalescing_delivers_everything_within_the_bound() {
    if !can_run(
        "rx_coalescing_delivers_everything_within_the_bound",
        &["scapy", "tcpreplay", "taskset"],
    ) {
        return;
    }
    // 2401 = 37 full batches of 64 and a partial one: the tail is released by the timer only.
    let sf = scapy_frames("xdp-coalesce", 2401, 23, 60, 1514, 0);
    let net = TestNet::new();
    for bound in [Duration::from_micros(200), Duration::from_millis(2)] {
        let mut xsk = open_in(
            &net,
            XdpSocket::builder(&net.b)
                .frame_count(4096)
                .rx_frames(3072)
                .ring_size(4096)
                .rx_coalesce(bound),
        );
        let got = with_replay(&net, &sf.file, sf.frames.len(), 6000, || {
            read_frames(&mut xsk, sf.frames.len(), drop)
        });
        assert_nothing_more(&mut xsk);
        assert_frames(&format!("xdp rx coalesced {bound:?}"), &got, &sf.frames);
        assert_clean_rx("coalesced", xsk.stats().unwrap());
    }
}

/// At MTU 9000 the veth refuses native XDP, so `Auto` attaches generically; with 4096-byte UMEM
/// frames, frames up to 3800 bytes arrive whole.
#[test]
fn rx_jumbo_frames_through_the_generic_fallback() {
    if !can_run(
        "rx_jumbo_frames_through_the_generic_fallback",
        &["scapy", "tcpreplay", "taskset"],
    ) {
        return;
    }
    let sf = scapy_frames("xdp-jumbo", 600, 5, 1400, 3800, 0);
    let net = TestNet::with_mtu(9000);
    let mut xsk = open_in(
        &net,
        XdpSocket::builder(&net.b)
            .frame_size(4096)
            .frame_count(512)
            .ring_size(256),
    );
    assert_eq!(xsk.attach_mode(), Some(AttachMode::Generic));
    let got = with_replay(&net, &sf.file, sf.frames.len(), 4000, || {
        read_frames(&mut xsk, sf.frames.len(), drop)
    });
    assert_nothing_more(&mut xsk);
    assert_frames("xdp jumbo rx", &got, &sf.frames);
    assert!(got.iter().any(|f| f.len() > 3000));
    assert_clean_rx("jumbo", xsk.stats().unwrap());
}

// ---------------------------------------------------------------------------------------------
// 2. TX, byte for byte.

/// 3000 frames (60..1514 bytes, some VLAN-tagged) sent with `send` (and every third with
/// `try_send`, then `flush` while the pool is empty) through an `XdpSocket` on `net.a` whose TX
/// pool is 32 frames; tcpdump on `net.b` captures them all, byte for byte, in order.
#[test]
fn tx_send_byte_for_byte_in_order() {
    if !can_run("tx_send_byte_for_byte_in_order", &["tcpdump"]) {
        return;
    }
    let net = TestNet::new();
    let specs = frame_specs(3000, 60, 1514, 77);
    let dump = Tcpdump::start(&net, &net.b, &scratch("xdp-tx.pcap"));
    let file = dump.file.clone();
    let mut xsk = net
        .within(|| {
            XdpSocket::builder(&net.a)
                .frame_count(64)
                .ring_size(32)
                .open_socket()
        })
        .unwrap();
    assert_eq!(xsk.attach_mode(), None, "open_socket attaches no program");
    assert_no_xdp(&net, &net.a, "open_socket");
    {
        // One CPU: frames sent from one CPU through a veth reach the peer in order.
        let _pin = pin_to_one_cpu();
        let mut full = 0u32;
        for (i, spec) in specs.iter().enumerate() {
            let frame = spec.build();
            if i % 3 != 0 {
                xsk.send(&frame).unwrap();
            } else {
                let deadline = Instant::now() + PATIENCE;
                while !xsk.try_send(&frame).unwrap() {
                    full += 1;
                    assert!(Instant::now() < deadline, "the TX pool never freed up");
                    xsk.flush().unwrap();
                }
            }
        }
        assert!(
            xsk.wait_sent(Some(PATIENCE)).unwrap(),
            "frames left in flight"
        );
        assert_eq!(xsk.in_flight(), 0);
        eprintln!("try_send found the pool full {full} times");
        assert!(full > 0, "the 32-frame TX pool never ran out");
    }
    assert_eq!(
        dump.wait_for_records(specs.len(), Duration::from_secs(30)),
        specs.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let stats = dump.stop();
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    let got = read_pcap(&file);
    let want: Vec<Vec<u8>> = specs.iter().map(FrameSpec::build).collect();
    assert_frames("xdp tx", &got, &want);
    let s = xsk.stats().unwrap();
    assert_eq!(s.tx_invalid_descs, 0, "{s:?}");
    let _ = std::fs::remove_file(&file);
}

/// True if this kernel has `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+).
fn kernel_has_tx_budget() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 17)
}

/// `tx_budget`: out-of-range values are `InvalidConfig`; in range, one kick (a raw `sendto`,
/// not `flush`, which kicks again) transmits exactly the budget's worth of 300 queued frames, as
/// the veth's TX counter shows, and tcpdump sees every frame byte for byte once flushed.
#[test]
fn tx_budget_is_frames_per_kick_and_checked() {
    if !can_run("tx_budget_is_frames_per_kick_and_checked", &["tcpdump"]) {
        return;
    }
    let net = TestNet::new();
    for bad in [16, 31, 513] {
        let r = net.within(|| {
            XdpSocket::builder(&net.a)
                .ring_size(512)
                .tx_budget(bad)
                .open_socket()
        });
        match r {
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains("TX budget"), "{msg}"),
            other => panic!("tx_budget({bad}) with a 512-slot ring: {other:?}"),
        }
    }
    let specs = frame_specs(300, 60, 200, 41);
    let want: Vec<Vec<u8>> = specs.iter().map(FrameSpec::build).collect();
    let dump = Tcpdump::start(&net, &net.b, &scratch("xdp-tx-budget.pcap"));
    let file = dump.file.clone();
    let sent = |net: &TestNet| -> u64 {
        let out = net
            .cmd("cat")
            .arg(format!("/sys/class/net/{}/statistics/tx_packets", net.a))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let mut all = Vec::new();
    // (option, budget expected on a 6.17+ kernel): the default is 256.
    for (option, expected) in [
        (None, 256),
        (Some(32), 32),
        (Some(64), 64),
        (Some(128), 128),
        (Some(512), 512),
    ] {
        let mut xsk = net
            .within(|| {
                // No auto-kick: the frames wait on the ring for the test's own kick.
                let b = XdpSocket::builder(&net.a)
                    .ring_size(512)
                    .frame_count(2048)
                    .tx_flush_every(0);
                match option {
                    Some(n) => b.tx_budget(n),
                    None => b,
                }
                .open_socket()
            })
            .unwrap();
        if kernel_has_tx_budget() {
            assert_eq!(xsk.tx_budget(), expected, "{option:?}");
        } else {
            assert_eq!(
                xsk.tx_budget(),
                32,
                "{option:?} on a kernel without the option"
            );
        }
        for f in &want {
            assert!(xsk.try_send(f).unwrap(), "free TX frames");
        }
        let before = sent(&net);
        // SAFETY: a valid socket; a zero-length sendto with no buffer is the AF_XDP TX kick.
        let rc = unsafe {
            libc::sendto(
                xsk.as_fd().as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        assert!(rc >= 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN));
        std::thread::sleep(Duration::from_millis(100));
        let one_kick = sent(&net) - before;
        assert_eq!(
            one_kick,
            u64::from(xsk.tx_budget()).min(300),
            "frames sent by one kick with budget {}",
            xsk.tx_budget()
        );
        assert!(
            xsk.wait_sent(Some(PATIENCE)).unwrap(),
            "frames left in flight"
        );
        all.extend(want.iter().cloned());
    }
    assert_eq!(
        dump.wait_for_records(all.len(), Duration::from_secs(30)),
        all.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let stats = dump.stop();
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_frames("xdp tx budget", &read_pcap(&file), &all);
    let _ = std::fs::remove_file(&file);
}

/// A peer whose receive runs on another CPU (RPS on `net.b` sends it to every CPU but the
/// sender's): TX completions then come after the kick, from that CPU, and a sender with an
/// 8-frame TX pool must wait for them. The socket is off the epoll set while it only transmits
/// (copy mode): these waits check it goes back on in time to be woken, blocking (`send`,
/// `wait_sent`) and async (the `Sink`, whose task would never wake otherwise). tcpdump sees every
/// frame byte for byte.
#[test]
fn tx_waits_are_woken_by_completions_from_another_cpu() {
    if !can_run(
        "tx_waits_are_woken_by_completions_from_another_cpu",
        &["tcpdump"],
    ) {
        return;
    }
    const N: usize = 3000;
    let net = TestNet::new();
    let _pin = pin_to_one_cpu();
    // SAFETY: no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "sched_getcpu");
    let others: u64 = (0..64)
        .filter(|&c| c != cpu as u64)
        // SAFETY: no preconditions. (Online CPUs: our own affinity is one CPU now.)
        .filter(|&c| c < unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u64)
        .fold(0, |m, c| m | 1 << c);
    assert!(others != 0, "needs a second CPU");
    let rps = net
        .cmd("sh")
        .args([
            "-c",
            &format!(
                "echo {others:x} > /sys/class/net/{}/queues/rx-0/rps_cpus",
                net.b
            ),
        ])
        .status()
        .unwrap();
    assert!(rps.success(), "RPS on {}", net.b);
    let want: Vec<Vec<u8>> = frame_specs(N, 60, 300, 43)
        .iter()
        .map(FrameSpec::build)
        .collect();
    let dump = Tcpdump::start(&net, &net.b, &scratch("xdp-tx-wake.pcap"));
    let file = dump.file.clone();
    let open = || {
        net.within(|| {
            XdpSocket::builder(&net.a)
                .frame_count(16)
                .rx_frames(8)
                .ring_size(8)
                .open_socket()
        })
        .unwrap()
    };
    let mut expected = Vec::new();

    // Blocking: count the times a flush left no free frame (the completions were still to come).
    let mut xsk = open();
    let mut waited = 0u32;
    {
        for f in &want {
            if !xsk.try_send(f).unwrap() {
                xsk.flush().unwrap();
                if !xsk.try_send(f).unwrap() {
                    waited += 1;
                    xsk.send(f).unwrap();
                }
            }
        }
        assert!(
            xsk.wait_sent(Some(PATIENCE)).unwrap(),
            "frames left in flight"
        );
    }
    expected.extend(want.iter().cloned());
    eprintln!("blocking: waited for completions {waited} times");
    drop(xsk);

    #[cfg(feature = "tokio")]
    {
        use futures::{Sink, SinkExt};
        use std::pin::Pin;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let parked = rt.block_on(async {
            let mut tx =
                netring::xdp::AsyncXdpSocket::<netring::runtime::Tokio>::new(open()).unwrap();
            let mut parked = 0u32;
            let run = async {
                for f in &want {
                    futures::future::poll_fn(|cx| {
                        let p = Sink::<&[u8]>::poll_ready(Pin::new(&mut tx), cx);
                        if p.is_pending() {
                            parked += 1;
                        }
                        p
                    })
                    .await?;
                    Sink::<&[u8]>::start_send(Pin::new(&mut tx), f.as_slice())?;
                }
                SinkExt::<&[u8]>::flush(&mut tx).await
            };
            tokio::time::timeout(PATIENCE, run)
                .await
                .expect("the async sender was never woken")
                .unwrap();
            assert_eq!(tx.get_ref().in_flight(), 0);
            parked
        });
        expected.extend(want.iter().cloned());
        eprintln!("async: poll_ready pending {parked} times");
    }

    let seen = dump.wait_for_records(expected.len(), Duration::from_secs(30));
    let counters = net.cmd("ip").args(["-s", "link"]).output().unwrap();
    assert_eq!(
        seen,
        expected.len(),
        "{}",
        String::from_utf8_lossy(&counters.stdout)
    );
    std::thread::sleep(Duration::from_millis(300));
    let stats = dump.stop();
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_frames("xdp tx woken", &read_pcap(&file), &expected);
    let _ = std::fs::remove_file(&file);
}

// ---------------------------------------------------------------------------------------------
// 3. Fill-ring recycling.

/// A batch and a copy of our frames in it, to check the kernel did not write into the batch's
/// frames while it was held.
type Held = (XdpBatch, Vec<Vec<u8>>);

#[track_caller]
fn release(held: Held) {
    let (batch, copy) = held;
    assert_eq!(ours(&batch), copy, "a held batch changed under its holder");
    drop(batch);
}

/// A worker thread: holds up to `hold` batches and releases a random one when it has more;
/// when no batch comes for a few milliseconds it releases all it holds, newest first.
fn hold_and_release(jobs: mpsc::Receiver<Held>, hold: usize, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut held: Vec<Held> = Vec::new();
    let mut released = 0;
    loop {
        match jobs.recv_timeout(Duration::from_millis(3)) {
            Ok(item) => {
                held.push(item);
                if held.len() > hold {
                    let i = rng.range(0, held.len() - 1);
                    release(held.swap_remove(i));
                    released += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                while let Some(h) = held.pop() {
                    release(h);
                    released += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    released += held.len();
    held.into_iter().for_each(release);
    released
}

/// 6000 frames through a UMEM of 256 frames (192 of them for RX, batches of at most 8): every RX
/// frame goes round the fill ring about 30 times. Batches are held by the reader and by two
/// worker threads and dropped there out of order; every frame arrives, in order, intact.
///
/// scapy sends 64-frame chunks at full speed, the next once the last has arrived: at most 11
/// batches (88 frames) are ever held (2 + 1 in hand by the reader, 3 + 1 queued per worker), so
/// 104 frames are always free for the kernel, more than a chunk, however late a thread runs.
#[test]
fn fill_ring_recycles_batches_dropped_out_of_order_on_other_threads() {
    if !can_run(
        "fill_ring_recycles_batches_dropped_out_of_order_on_other_threads",
        &["scapy", "taskset"],
    ) {
        return;
    }
    const N: usize = 6000;
    const RX_FRAMES: usize = 192;
    const BATCH: usize = 8;
    const CHUNK: usize = 64;
    const _: () = assert!(RX_FRAMES - 11 * BATCH >= CHUNK);
    let sf = scapy_frames("xdp-recycle", N, 31, 60, 1514, 0);
    let net = TestNet::new();
    let mut xsk = open_in(
        &net,
        XdpSocket::builder(&net.b)
            .frame_count(256)
            .rx_frames(RX_FRAMES as u32)
            .ring_size(256)
            .batch_size(BATCH),
    );
    let mut sender = ChunkSender::start(&net, &net.a, &sf.file);
    let t = Instant::now();
    let (got, batches, released) = std::thread::scope(|s| {
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for w in 0..2u64 {
            let (tx, jobs) = mpsc::sync_channel::<Held>(1);
            queues.push(tx);
            workers.push(s.spawn(move || hold_and_release(jobs, 2, w + 1)));
        }
        let mut mine: VecDeque<Held> = VecDeque::new();
        let mut batches = 0usize;
        let mut released = 0usize;
        let got = read_chunked(&mut xsk, &mut sender, N, CHUNK, |batch| {
            batches += 1;
            let copy = ours(&batch);
            match batches % 3 {
                0 => {
                    mine.push_back((batch, copy));
                    if mine.len() > 2 {
                        // The older of the two goes.
                        release(mine.pop_front().unwrap());
                        released += 1;
                    }
                }
                k => queues[k - 1].send((batch, copy)).expect("worker gone"),
            }
        });
        drop(queues);
        released += mine.len();
        mine.into_iter().for_each(release);
        for w in workers {
            released += w.join().expect("worker thread");
        }
        (got, batches, released)
    });
    assert_eq!(sender.finish(), N, "scapy's count");
    assert_nothing_more(&mut xsk);
    assert_frames("recycled rx", &got, &sf.frames);
    let stats = xsk.stats().unwrap();
    assert_clean_rx("recycling", stats);
    assert_eq!(released, batches);
    assert!(batches >= N / BATCH, "{batches} batches for {N} frames");
    eprintln!(
        "{N} frames in {batches} batches, {:?}, {stats:?}",
        t.elapsed()
    );
}

/// Every RX frame of the UMEM is in batches the reader handed to another thread, so the fill
/// ring is empty and the kernel can deliver nothing. That thread drops them while the reader
/// waits in `next_batch`; the frames must get back to the kernel then, not only when the reader
/// next wakes up (it would not: with an empty fill ring nothing arrives to wake it).
#[test]
fn batches_dropped_elsewhere_refill_a_waiting_socket() {
    if !can_run(
        "batches_dropped_elsewhere_refill_a_waiting_socket",
        &["scapy", "tcpreplay", "taskset"],
    ) {
        return;
    }
    // 32 RX frames: the first file fills them all, the second comes after they were released.
    let sf = scapy_frames("xdp-release", 48, 3, 60, 600, 32);
    let net = TestNet::new();
    let mut xsk = open_in(
        &net,
        XdpSocket::builder(&net.b)
            .frame_count(64)
            .ring_size(64)
            .batch_size(64),
    );
    let mut held = Vec::new();
    let first = with_replay(&net, &sf.chunks[0].0, 32, 2000, || {
        read_frames(&mut xsk, 32, |b| held.push(b))
    });
    assert_frames("first 32", &first, &sf.frames[..32]);
    assert_clean_rx("first 32", xsk.stats().unwrap());

    let (released_tx, released) = mpsc::channel();
    let t0 = Instant::now();
    let (second, sent) = std::thread::scope(|s| {
        let net = &net;
        let file = &sf.chunks[1].0;
        let helper = s.spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
            released_tx.send(Instant::now()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            tcpreplay(net, &net.a, file, 2000)
        });
        // One long wait per batch: the reader must not need a timeout to notice the release.
        let mut got = Vec::new();
        while got.len() < 16 {
            match xsk.next_batch(Some(Duration::from_secs(20))).unwrap() {
                Some(batch) => got.extend(ours(&batch)),
                None => break,
            }
        }
        (got, helper.join().expect("helper thread"))
    });
    assert_eq!(sent, 16);
    let released = released.recv().unwrap();
    eprintln!(
        "released after {:?}; 16 more frames read {:?} after that",
        released - t0,
        released.elapsed()
    );
    assert_frames("after the release", &second, &sf.frames[32..]);
    assert_clean_rx("after the release", xsk.stats().unwrap());
}

// ---------------------------------------------------------------------------------------------
// 4. Forwarding without a copy.

/// Swaps the destination and source MAC addresses.
fn swap_macs(frame: &mut [u8]) {
    let (dst, rest) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut rest[..6]);
}

/// 2000 frames from scapy arrive on `net.b`; each is taken out of its batch, its MACs swapped in
/// place, and sent back out of `net.b` with `send_frame` (no copy: the RX frame itself goes on
/// the TX ring, and back to the fill ring when it completes). The UMEM has 128 RX frames, so
/// each goes round ~16 times. tcpdump on `net.a` sees every frame, byte for byte, in order.
///
/// scapy sends 50-frame chunks, the next once the last was forwarded: with at most one chunk's
/// frames still in flight, the next always finds room.
#[test]
fn forwards_received_frames_without_copy() {
    if !can_run(
        "forwards_received_frames_without_copy",
        &["scapy", "taskset", "tcpdump"],
    ) {
        return;
    }
    const N: usize = 2000;
    const CHUNK: usize = 50;
    let sf = scapy_frames("xdp-fwd", N, 41, 60, 1514, 0);
    let net = TestNet::new();
    // The forwarded frames come from DST_MAC.
    let dump = Dump::start(&net, &net.a, "xdp-fwd.pcap", "ether src 02:4e:52:00:00:02");
    let mut xsk = open_in(
        &net,
        XdpSocket::builder(&net.b).frame_count(256).ring_size(128),
    );
    let mut sender = ChunkSender::start(&net, &net.a, &sf.file);
    let forwarded = {
        // Forward from one CPU so the frames stay in order on the way back.
        let _pin = pin_to_one_cpu();
        let deadline = Instant::now() + PATIENCE;
        let mut forwarded = 0usize;
        while forwarded < N && Instant::now() < deadline {
            if forwarded == sender.requested {
                sender.request(CHUNK.min(N - forwarded));
            }
            let Some(mut batch) = xsk.next_batch(Some(Duration::from_millis(250))).unwrap() else {
                continue;
            };
            for i in 0..batch.len() {
                let mut frame = batch.take(i).expect("not taken yet");
                assert!(batch.take(i).is_none(), "taken twice");
                if !is_ours(frame.data()) {
                    continue; // dropped: back to the fill ring
                }
                swap_macs(frame.data_mut());
                xsk.send_frame(frame).unwrap();
                forwarded += 1;
            }
            assert_eq!(batch.iter().count(), 0, "every frame was taken");
            drop(batch);
            xsk.flush().unwrap();
        }
        assert!(
            xsk.wait_sent(Some(PATIENCE)).unwrap(),
            "forwarded frames left in flight"
        );
        forwarded
    };
    assert_eq!(sender.finish(), N, "scapy's count");
    assert_eq!(forwarded, N);
    let got = dump.finish(N);
    let want: Vec<Vec<u8>> = sf
        .frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            swap_macs(&mut f);
            f
        })
        .collect();
    assert_frames("forwarded", &got, &want);
    let stats = xsk.stats().unwrap();
    assert_clean_rx("forwarding", stats);
    assert_eq!(stats.tx_invalid_descs, 0, "{stats:?}");
    eprintln!("forwarded {N}: {stats:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. The program goes away with its socket, and with its process.

const OWNER_ENV: &str = "NETRING_XDP_OWNER_CHILD";
const OWNER_TEST: &str = "program_detached_on_drop_and_when_the_owner_dies";

/// Child side: open a socket (attaching the program), report, wait for the parent's go, then end
/// as told.
fn owner_child(how: &str, dev: &str) {
    let xsk = XdpSocket::builder(dev)
        .frame_count(64)
        .ring_size(32)
        .open()
        .unwrap();
    println!(
        "OPENED {} {:?}",
        xsk.attach_mode().expect("the built-in program"),
        xsk.bind_mode()
    );
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    match how {
        // Unwinding drops the socket.
        "panic" => panic!("deliberate panic while owning an XdpSocket"),
        // Nothing drops it: only the process's end closes the link.
        "leak-panic" => {
            std::mem::forget(xsk);
            panic!("deliberate panic after leaking an XdpSocket")
        }
        "abort" => std::process::abort(),
        "kill" => {
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(3);
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Dropping the socket removes the program in every attach mode (which the socket reports); so
/// does the death of the process that owns it: a panic (unwinding, or with the socket leaked),
/// an abort, SIGKILL.
#[test]
fn program_detached_on_drop_and_when_the_owner_dies() {
    if let Ok(spec) = std::env::var(OWNER_ENV) {
        let (how, dev) = spec.split_once(' ').unwrap();
        owner_child(how, dev);
        return;
    }
    if !can_run(OWNER_TEST, &[]) {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let net = TestNet::new();
    for (mode, want, flag) in [
        (AttachMode::Auto, AttachMode::Native, "xdp"),
        (AttachMode::Native, AttachMode::Native, "xdp"),
        (AttachMode::Generic, AttachMode::Generic, "xdpgeneric"),
    ] {
        let xsk = open_in(
            &net,
            XdpSocket::builder(&net.b)
                .attach_mode(mode)
                .frame_count(64)
                .ring_size(32),
        );
        assert_eq!(xsk.attach_mode(), Some(want), "{mode}");
        let (got, text) = ip_xdp_flag(&net, &net.b);
        assert_eq!(got.as_deref(), Some(flag), "{mode}: {text}");
        assert_eq!(ip_xdp_flag(&net, &net.a).0, None, "the peer is untouched");
        drop(xsk);
        assert_no_xdp(&net, &net.b, &format!("{mode}: after drop"));
    }

    let exe = std::env::current_exe().unwrap();
    for how in ["panic", "leak-panic", "abort", "kill"] {
        let mut child = net
            .cmd(exe.to_str().unwrap())
            .args(["--exact", OWNER_TEST, "--nocapture", "--test-threads=1"])
            .env(OWNER_ENV, format!("{how} {}", net.b))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("OPENED ") {
                    let _ = tx.send(line[i + 7..].to_owned());
                }
            }
        });
        let opened = rx.recv_timeout(Duration::from_secs(30));
        let opened = match opened {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{how}: the child did not open its socket within 30 s");
            }
        };
        assert_eq!(opened, "native Copy", "{how}");
        let (flag, text) = ip_xdp_flag(&net, &net.b);
        assert_eq!(
            flag.as_deref(),
            Some("xdp"),
            "{how}: while the child lives: {text}"
        );
        if how == "kill" {
            child.kill().unwrap();
        } else {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{how}: the child did not exit within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match how {
            "kill" => assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}"),
            "abort" => assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}"),
            // libtest reports the panicking test and exits with 101.
            _ => assert_eq!(status.code(), Some(101), "{how}: {status:?}"),
        }
        assert_no_xdp(&net, &net.b, &format!("after the child's {how}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Errors, and the filter.

/// A queue the veth does not have is `Error::InvalidConfig` naming the queue and the interface,
/// and the failed open leaves no program behind (also when an earlier queue had opened).
#[test]
fn queue_out_of_range_is_invalid_config_and_leaves_nothing_attached() {
    if !can_run(
        "queue_out_of_range_is_invalid_config_and_leaves_nothing_attached",
        &[],
    ) {
        return;
    }
    let net = TestNet::new();
    let check = |what: &str, r: netring::Result<()>| match r {
        Err(ref e @ Error::InvalidConfig(ref msg)) => {
            eprintln!("{what}: {e}");
            assert!(
                msg.contains("queue 7") && msg.contains(&net.b),
                "{what}: {msg}"
            );
        }
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    let b = || XdpSocket::builder(&net.b).frame_count(64).ring_size(32);
    check("open", net.within(|| b().queue(7).open().map(drop)));
    assert_no_xdp(&net, &net.b, "after open failed");
    check(
        "open_socket",
        net.within(|| b().queue(7).open_socket().map(drop)),
    );
    check(
        "open_queues",
        net.within(|| b().open_queues([0, 7]).map(drop)),
    );
    assert_no_xdp(&net, &net.b, "after open_queues failed");
    // The queue that exists still opens (rebinding queue 0 right after a socket on it closed).
    let xsk = open_in(&net, b());
    assert_eq!(xsk.queue(), 0);
}

/// veth has no zero-copy AF_XDP: `BindMode::ZeroCopy` is `Error::XdpUnsupported` naming the
/// interface, the program is gone again, and `Auto` falls back to copy mode.
#[test]
fn zero_copy_on_veth_is_xdp_unsupported() {
    if !can_run("zero_copy_on_veth_is_xdp_unsupported", &[]) {
        return;
    }
    let net = TestNet::new();
    let b = || XdpSocket::builder(&net.b).frame_count(64).ring_size(32);
    match net.within(|| b().bind_mode(BindMode::ZeroCopy).open()) {
        Err(ref e @ Error::XdpUnsupported { ref interface, .. }) => {
            eprintln!("zero-copy: {e}");
            assert_eq!(interface, &net.b);
        }
        other => panic!("expected XdpUnsupported, got {other:?}"),
    }
    assert_no_xdp(&net, &net.b, "after the zero-copy open failed");
    let xsk = open_in(&net, b().bind_mode(BindMode::Auto));
    assert_eq!(xsk.bind_mode(), BindMode::Copy);
    let xsk_copy = net.within(|| b().queue(0).bind_mode(BindMode::Copy).open_socket());
    // The queue is taken by `xsk` (the library retries EBUSY for a while, then says so).
    match xsk_copy {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("busy"), "{msg}"),
        other => panic!("a second socket on a bound queue: {other:?}"),
    }
}

const FILTER_IP: &str = "10.203.0.2";
const MATCH_PORT: u16 = 7001;
const OTHER_PORT: u16 = 7002;

/// With `Match::ipv4().udp_dst_port(P)`, UDP datagrams to P reach the `XdpSocket` (and not the
/// UDP socket bound to P on `net.b`), while datagrams to another port reach their UDP socket
/// through the kernel stack, interleaved in the same traffic from scapy.
#[test]
fn filter_redirects_matching_traffic_and_passes_the_rest_to_the_kernel() {
    if !can_run(
        "filter_redirects_matching_traffic_and_passes_the_rest_to_the_kernel",
        &["scapy"],
    ) {
        return;
    }
    const N: usize = 200;
    let net = TestNet::new();
    net.ip(&["addr", "add", &format!("{FILTER_IP}/24"), "dev", &net.b]);
    let (sock_match, sock_other) = net.within(|| {
        (
            UdpSocket::bind((FILTER_IP, MATCH_PORT)).unwrap(),
            UdpSocket::bind((FILTER_IP, OTHER_PORT)).unwrap(),
        )
    });
    let mut xsk = open_in(
        &net,
        XdpSocket::builder(&net.b)
            .filter(Match::ipv4().udp_dst_port(MATCH_PORT))
            .frame_count(512)
            .ring_size(256),
    );
    let mac: Vec<String> = net.mac(&net.b).iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        r#"
from scapy.all import Ether, IP, UDP, Raw, sendp
f = [Ether(src="02:4e:52:00:00:01", dst="{mac}") / IP(src="10.203.0.99", dst="{FILTER_IP}")
     / UDP(sport=5555, dport=({MATCH_PORT}, {OTHER_PORT})[i % 2])
     / Raw((("match-%d", "other-%d")[i % 2] % (i // 2)).encode()) for i in range({n})]
sendp(f, iface="{dev}", verbose=0)
"#,
        mac = mac.join(":"),
        n = 2 * N,
        dev = net.a
    );
    let (to_xsk, other) = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            run(net
                .cmd("timeout")
                .args(["-s", "KILL", "60", SCAPY_PYTHON, "-c", &script]))
        });
        let other = s.spawn(|| {
            sock_other
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < N {
                match sock_other.recv_from(&mut buf) {
                    Ok((len, _)) => got.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
                    Err(_) => break,
                }
            }
            got
        });
        let frames = read_frames(&mut xsk, N, drop);
        sender.join().expect("scapy thread");
        (frames, other.join().expect("UDP reader"))
    });
    assert_nothing_more(&mut xsk);
    // The XdpSocket got the matching datagrams, whole frames: Ethernet + IPv4 + UDP + payload.
    let payloads: Vec<String> = to_xsk
        .iter()
        .map(|f| {
            assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4");
            assert_eq!(f[23], 17, "UDP");
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), MATCH_PORT);
            String::from_utf8_lossy(&f[42..]).into_owned()
        })
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("match-{i}")).collect();
    assert_eq!(payloads, want, "to the XdpSocket");
    let want: Vec<String> = (0..N).map(|i| format!("other-{i}")).collect();
    assert_eq!(other, want, "to the UDP socket on the other port");
    sock_match.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        sock_match.recv_from(&mut buf).is_err(),
        "a redirected datagram reached the kernel stack too"
    );
    assert_clean_rx("filter", xsk.stats().unwrap());
}

const MEMLOCK_ENV: &str = "NETRING_XDP_MEMLOCK_CHILD";
const MEMLOCK_TEST: &str = "umem_over_rlimit_memlock_is_error_memlock";
/// The limit the child sets for itself.
const MEMLOCK_LIMIT: u64 = 4 << 20;

/// Child side: lower RLIMIT_MEMLOCK, then open a small UMEM (under the limit) and a big one.
fn memlock_child(dev: &str) {
    let lim = libc::rlimit {
        rlim_cur: MEMLOCK_LIMIT,
        rlim_max: MEMLOCK_LIMIT,
    };
    // SAFETY: setrlimit with a valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) }, 0);
    let report = |what: &str, frames: u32| {
        let r = XdpSocket::builder(dev)
            .frame_count(frames)
            .ring_size(64)
            .open_socket();
        match r {
            Ok(_) => println!("PROBE {what} ok"),
            Err(Error::Memlock { bytes }) => println!("PROBE {what} memlock {bytes}"),
            Err(e) => println!("PROBE {what} other {e:?}"),
        }
    };
    report("small", 256); // 512 KiB
    report("big", 32768); // 64 MiB
}

/// A UMEM larger than `RLIMIT_MEMLOCK`, in a process without `CAP_IPC_LOCK`, is
/// `Error::Memlock` with its size; a small one still opens. Control: with `CAP_IPC_LOCK` the
/// same big UMEM opens under the same limit.
#[test]
fn umem_over_rlimit_memlock_is_error_memlock() {
    if let Ok(dev) = std::env::var(MEMLOCK_ENV) {
        memlock_child(&dev);
        return;
    }
    if !can_run(MEMLOCK_TEST, &["setpriv"]) {
        return;
    }
    let net = TestNet::new();
    let exe = std::env::current_exe().unwrap();
    let probe = |wrapper: &[&str]| -> Vec<String> {
        let mut cmd = net.cmd(wrapper.first().copied().unwrap_or(exe.to_str().unwrap()));
        if !wrapper.is_empty() {
            cmd.args(&wrapper[1..]).arg(&exe);
        }
        cmd.args(["--exact", MEMLOCK_TEST, "--nocapture", "--test-threads=1"])
            .env(MEMLOCK_ENV, &net.b);
        let out = run(&mut cmd);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.find("PROBE ").map(|i| l[i + 6..].to_owned()))
            .collect()
    };
    assert_eq!(probe(&[]), ["small ok", "big ok"], "with CAP_IPC_LOCK");
    let without = probe(&[
        "setpriv",
        "--inh-caps=-ipc_lock",
        "--bounding-set=-ipc_lock",
    ]);
    eprintln!("without CAP_IPC_LOCK: {without:?}");
    assert_eq!(
        without,
        [
            "small ok".to_owned(),
            format!("big memlock {}", 32768 * 2048)
        ],
        "without CAP_IPC_LOCK"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Multi-queue.

/// Writes `n` IPv4/UDP frames in `flows` flows (frame i belongs to flow i % flows: source port
/// 20000 + flow, source address by flow) to a pcap with scapy; payload MARKER + index + flow.
/// Returns the file and the frames.
fn scapy_flows(name: &str, n: usize, flows: usize, tag: u8) -> (String, Vec<Vec<u8>>) {
    let file = scratch(&format!("{name}.pcap"));
    let script = r#"
import sys
from scapy.all import Ether, IP, UDP, Raw, wrpcap
out, n, flows, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
frames = []
for i in range(n):
    f = i % flows
    p = Ether(src="02:4e:52:00:00:01", dst="02:4e:52:00:00:02") \
        / IP(src="10.9.%d.%d" % (f // 200, 1 + f % 200), dst="10.9.255.1") \
        / UDP(sport=20000 + f, dport=9) \
        / Raw(b"NRT" + i.to_bytes(4, "big") + f.to_bytes(2, "big") + bytes([tag]) + bytes(20 + i % 50))
    frames.append(bytes(p))
wrpcap(out, frames, linktype=1)
sys.stdout.write("\n".join(f.hex() for f in frames) + "\n")
"#;
    let out = run(Command::new("timeout")
        .args(["-s", "KILL", "120", SCAPY_PYTHON, "-c", script, &file])
        .args([n.to_string(), flows.to_string(), tag.to_string()]));
    let frames: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(unhex)
        .collect();
    assert_eq!(frames.len(), n);
    (file, frames)
}

/// (index, flow, tag) of a frame written by `scapy_flows`.
fn flow_of(frame: &[u8]) -> (u32, u16, u8) {
    let p = &frame[42..];
    assert_eq!(&p[..3], MARKER, "not a flow frame");
    (
        u32::from_be_bytes([p[3], p[4], p[5], p[6]]),
        u16::from_be_bytes([p[7], p[8]]),
        p[9],
    )
}

/// Reads the sockets of `open_queues` on one thread each until `n` of our frames arrived in
/// total (bounded), then a little longer; returns each socket's frames.
fn read_queues(xsks: &mut [XdpSocket], n: usize) -> Vec<Vec<Vec<u8>>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let total = AtomicUsize::new(0);
    let deadline = Instant::now() + PATIENCE;
    std::thread::scope(|s| {
        let readers: Vec<_> = xsks
            .iter_mut()
            .map(|xsk| {
                let total = &total;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut quiet_since = None;
                    loop {
                        let done = total.load(Ordering::SeqCst) >= n;
                        if Instant::now() > deadline {
                            break;
                        }
                        match xsk.next_batch(Some(Duration::from_millis(50))).unwrap() {
                            Some(b) => {
                                let f = ours(&b);
                                total.fetch_add(f.len(), Ordering::SeqCst);
                                got.extend(f);
                                quiet_since = None;
                            }
                            None if done => {
                                // Everything arrived somewhere; stop after 300 ms of quiet.
                                let q = *quiet_since.get_or_insert_with(Instant::now);
                                if q.elapsed() > Duration::from_millis(300) {
                                    break;
                                }
                            }
                            None => {}
                        }
                    }
                    got
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("queue reader"))
            .collect()
    })
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity with pid 0 fills it for this thread.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        set
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// Sets `dev`'s transmit-queue CPU map (XPS) for queue `queue` to the CPUs in `mask`.
fn set_xps(net: &TestNet, dev: &str, queue: usize, mask: u64) {
    run(net.cmd("sh").args([
        "-c",
        &format!("echo {mask:x} > /sys/class/net/{dev}/queues/tx-{queue}/xps_cpus"),
    ]));
}

/// Frames of one socket: in order within each flow, and which flows they are.
#[track_caller]
fn flows_in_order(what: &str, got: &[Vec<u8>]) -> Vec<u16> {
    let mut last: HashMap<(u16, u8), u32> = HashMap::new();
    for f in got {
        let (i, flow, tag) = flow_of(f);
        if let Some(prev) = last.insert((flow, tag), i) {
            assert!(prev < i, "{what}: flow {flow}: frame {i} after {prev}");
        }
    }
    let mut flows: Vec<u16> = last.keys().map(|k| k.0).collect();
    flows.sort_unstable();
    flows.dedup();
    flows
}

/// A 4-queue veth, one socket per queue (`open_queues(0..4)`, one program).
///
/// - Flows spread: tcpreplay sends 64 UDP flows; the veth picks the TX queue (and so the peer's
///   RX queue) by flow hash. Every frame arrives on exactly one socket (total = sent, each byte
///   for byte), every flow on one socket only, in order, and more than one queue is used.
/// - By CPU: with XPS mapping CPU k to TX queue 2 + k, a scapy sender pinned to each CPU marks
///   its frames with k; socket 2 + k gets exactly those.
/// - The program is shared: with three sockets dropped it stays, and the same flows replayed
///   reach the remaining socket of queue 0 exactly as before (the others' go to the kernel
///   stack); dropping the last socket removes it.
#[test]
fn multi_queue_sockets_share_one_program_and_get_their_queues() {
    if !can_run(
        "multi_queue_sockets_share_one_program_and_get_their_queues",
        &["scapy", "tcpreplay", "taskset"],
    ) {
        return;
    }
    const N: usize = 2000;
    let net = TestNet::with_options(1500, 4);
    let (file, frames) = scapy_flows("xdp-mq", N, 64, 0);
    let mut xsks = net
        .within(|| {
            XdpSocket::builder(&net.b)
                .frame_count(1024)
                .ring_size(512)
                .open_queues(0..4)
        })
        .unwrap();
    for (q, xsk) in xsks.iter().enumerate() {
        assert_eq!(xsk.queue(), q as u32);
        assert_eq!(xsk.attach_mode(), Some(AttachMode::Native));
    }
    let (flag, text) = ip_xdp_flag(&net, &net.b);
    assert_eq!(flag.as_deref(), Some("xdp"), "{text}");

    // By flow hash.
    let per = with_replay(&net, &file, N, 5000, || read_queues(&mut xsks, N));
    let mut all: Vec<Vec<u8>> = per.iter().flatten().cloned().collect();
    all.sort_by_key(|f| flow_of(f).0);
    assert_frames("union of the queues", &all, &frames);
    let mut owner: HashMap<u16, usize> = HashMap::new();
    for (q, got) in per.iter().enumerate() {
        let flows = flows_in_order(&format!("queue {q}"), got);
        eprintln!(
            "by flow: queue {q}: {} frames, {} flows",
            got.len(),
            flows.len()
        );
        for f in flows {
            if let Some(other) = owner.insert(f, q) {
                panic!("flow {f} reached queue {other} and queue {q}");
            }
        }
    }
    let used = per.iter().filter(|g| !g.is_empty()).count();
    assert!(
        used > 1,
        "all flows on one queue: {:?}",
        per.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // By sender CPU.
    let cpus = allowed_cpus();
    let cpus = &cpus[..cpus.len().min(2)];
    for (k, &cpu) in cpus.iter().enumerate() {
        set_xps(&net, &net.a, 2 + k, 1 << cpu);
    }
    const M: usize = 300;
    let sends: Vec<(usize, String, Vec<Vec<u8>>)> = cpus
        .iter()
        .enumerate()
        .map(|(k, &cpu)| {
            let (f, fr) = scapy_flows(&format!("xdp-mq-cpu{k}"), M, 16, k as u8 + 1);
            (cpu, f, fr)
        })
        .collect();
    let script = "import sys\n\
                  from scapy.all import rdpcap, sendp\n\
                  sendp(rdpcap(sys.argv[2]), iface=sys.argv[1], verbose=0)\n";
    let per = std::thread::scope(|s| {
        let senders: Vec<_> = sends
            .iter()
            .map(|(cpu, f, _)| {
                let net = &net;
                s.spawn(move || {
                    run(net.cmd("timeout").args([
                        "-s",
                        "KILL",
                        "120",
                        "taskset",
                        "-c",
                        &cpu.to_string(),
                        SCAPY_PYTHON,
                        "-c",
                        script,
                        &net.a,
                        f,
                    ]))
                })
            })
            .collect();
        let per = read_queues(&mut xsks, M * sends.len());
        for s in senders {
            s.join().expect("scapy sender");
        }
        per
    });
    for (q, got) in per.iter().enumerate() {
        eprintln!("by CPU: queue {q}: {} frames", got.len());
    }
    for (k, (cpu, _, want)) in sends.iter().enumerate() {
        assert_frames(&format!("queue {} (CPU {cpu})", 2 + k), &per[2 + k], want);
    }
    assert!(
        per[0].is_empty() && per[1].is_empty(),
        "frames on queues without a CPU"
    );
    for k in 0..cpus.len() {
        set_xps(&net, &net.a, 2 + k, 0);
    }

    // Shared program: three sockets go, the program stays and queue 0 gets the same flows.
    let queue0: Vec<Vec<u8>> = per_flow_owner_frames(&owner, &frames, 0);
    let mut xsk0 = xsks.remove(0);
    drop(xsks);
    let (flag, text) = ip_xdp_flag(&net, &net.b);
    assert_eq!(flag.as_deref(), Some("xdp"), "with one socket left: {text}");
    let got = with_replay(&net, &file, N, 5000, || {
        let mut v = read_frames(&mut xsk0, queue0.len(), drop);
        // Anything beyond queue 0's flows would show up here.
        while let Some(b) = xsk0.next_batch(Some(Duration::from_millis(500))).unwrap() {
            v.extend(ours(&b));
        }
        v
    });
    assert_frames("queue 0 alone, same flows again", &got, &queue0);
    assert_clean_rx("queue 0", xsk0.stats().unwrap());
    drop(xsk0);
    assert_no_xdp(&net, &net.b, "after the last socket dropped");
    let _ = std::fs::remove_file(&file);
    for (_, f, _) in &sends {
        let _ = std::fs::remove_file(f);
    }
}

/// The frames of `frames` whose flow `owner` puts on queue `q`, in order.
fn per_flow_owner_frames(
    owner: &HashMap<u16, usize>,
    frames: &[Vec<u8>],
    q: usize,
) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| owner.get(&flow_of(f).1) == Some(&q))
        .cloned()
        .collect()
}

/// Four sockets on the queues of a 4-queue veth sharing one UMEM (`share_umem`): registered once,
/// one region per socket, each with its own fill and completion rings. Flows spread over the
/// queues arrive byte for byte on the union of the sockets, each flow on one socket, and each
/// socket also transmits from its own region (tcpdump on the peer sees every frame).
#[test]
fn multi_queue_sockets_sharing_one_umem() {
    if !can_run(
        "multi_queue_sockets_sharing_one_umem",
        &["scapy", "tcpreplay", "taskset", "tcpdump"],
    ) {
        return;
    }
    const N: usize = 2000;
    let net = TestNet::with_options(1500, 4);
    let (file, frames) = scapy_flows("xdp-shared", N, 64, 0);
    let mut xsks = net
        .within(|| {
            XdpSocket::builder(&net.b)
                .frame_count(512)
                .ring_size(512)
                .share_umem(true)
                .open_queues(0..4)
        })
        .unwrap();
    for (q, xsk) in xsks.iter().enumerate() {
        assert_eq!(xsk.queue(), q as u32);
        assert_eq!(xsk.bind_mode(), BindMode::Copy);
    }
    let per = with_replay(&net, &file, N, 5000, || read_queues(&mut xsks, N));
    let mut all: Vec<Vec<u8>> = per.iter().flatten().cloned().collect();
    all.sort_by_key(|f| flow_of(f).0);
    assert_frames("union of the sharing sockets", &all, &frames);
    let mut owner: HashMap<u16, usize> = HashMap::new();
    for (q, got) in per.iter().enumerate() {
        for f in flows_in_order(&format!("queue {q}"), got) {
            if let Some(other) = owner.insert(f, q) {
                panic!("flow {f} reached queue {other} and queue {q}");
            }
        }
    }
    assert!(
        per.iter().filter(|g| !g.is_empty()).count() > 1,
        "all flows on one queue: {:?}",
        per.iter().map(Vec::len).collect::<Vec<_>>()
    );
    for xsk in &xsks {
        assert_clean_rx("shared umem", xsk.stats().unwrap());
    }

    // Each socket sends from its own TX pool; the peer sees all of them.
    let pcap = scratch("xdp-shared-tx.pcap");
    let dump = start_tcpdump(
        &net,
        &net.a,
        &pcap,
        &["-Q", "in", "ether", "proto", "0x88b5"],
    );
    let mut want = Vec::new();
    for (q, xsk) in xsks.iter_mut().enumerate() {
        for i in 0..300u32 {
            let mut f = vec![0xffu8; 6];
            f.extend_from_slice(&[0x02, 0x4e, 0x52, 0x00, 0x01, q as u8, 0x88, 0xb5]);
            f.extend_from_slice(&i.to_be_bytes());
            f.resize(60 + (i as usize % 500), q as u8);
            xsk.send(&f).unwrap();
            want.push(f);
        }
        assert!(xsk.wait_sent(Some(Duration::from_secs(10))).unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while netring::pcap::PcapReader::new(std::fs::File::open(&pcap).unwrap())
        .map(|r| r.count())
        .unwrap_or(0)
        < want.len()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    dump.interrupt_and_wait(10);
    let got: Vec<Vec<u8>> = netring::pcap::PcapReader::new(std::fs::File::open(&pcap).unwrap())
        .unwrap()
        .map(|r| r.unwrap().data)
        .collect();
    assert_frames("frames sent by the sharing sockets", &got, &want);
    let _ = std::fs::remove_file(&pcap);
}

/// Reads a `/proc/meminfo` counter.
fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/meminfo"))
}

/// Sets `vm.nr_hugepages` for the test and puts the old value back on drop (also on panic).
struct HugePages(String);

impl HugePages {
    fn reserve(extra: u64) -> Self {
        let old = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
        let want = old.trim().parse::<u64>().unwrap() + extra;
        std::fs::write("/proc/sys/vm/nr_hugepages", want.to_string()).unwrap();
        HugePages(old)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", self.0.trim());
    }
}

/// A UMEM on huge pages: with pages reserved, the socket takes them (HugePages_Free drops while
/// it lives) and receives byte for byte; without free pages, opening is a typed error.
#[test]
fn umem_on_huge_pages() {
    if !can_run("umem_on_huge_pages", &["scapy", "tcpreplay", "taskset"]) {
        return;
    }
    let sf = scapy_frames("xdp-huge", 600, 29, 60, 1514, 0);
    let net = TestNet::new();
    let builder = || {
        XdpSocket::builder(&net.b)
            .frame_count(2048)
            .rx_frames(1536)
            .ring_size(2048)
            .huge_pages(true)
    };
    {
        // 2048 frames of 2 KiB = 4 MiB: two 2 MiB pages, plus slack for other users.
        let _reserved = HugePages::reserve(8);
        let free_before = meminfo("HugePages_Free:");
        assert!(free_before >= 2, "the kernel reserved no huge pages");
        let mut xsk = open_in(&net, builder());
        let free_during = meminfo("HugePages_Free:");
        assert!(
            free_during < free_before,
            "the UMEM took no huge page ({free_before} free before, {free_during} after)"
        );
        let got = with_replay(&net, &sf.file, sf.frames.len(), 6000, || {
            read_frames(&mut xsk, sf.frames.len(), drop)
        });
        assert_frames("xdp rx on huge pages", &got, &sf.frames);
        assert_clean_rx("huge pages", xsk.stats().unwrap());
        drop(xsk);
        // The kernel unpins a UMEM in deferred work after the socket closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while meminfo("HugePages_Free:") != free_before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            meminfo("HugePages_Free:"),
            free_before,
            "huge pages not returned"
        );
    }
    if meminfo("HugePages_Free:") == 0 {
        match net.within(|| builder().open()) {
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains("nr_hugepages"), "{msg}"),
            other => panic!("expected InvalidConfig about huge pages, got {other:?}"),
        }
        assert_no_xdp(&net, &net.b, "after the failed open");
    }
}

/// Two sockets on the queues of a 2-queue veth share one UMEM; every frame either receives is
/// forwarded, without a copy, by the OTHER socket. Each socket has 64 RX frames and 2000 frames
/// arrive, so receiving goes on only if every forwarded frame comes back to the fill ring of the
/// socket that received it. tcpdump on the peer sees every frame, byte for byte.
#[test]
fn forwards_frames_between_sockets_sharing_a_umem() {
    if !can_run(
        "forwards_frames_between_sockets_sharing_a_umem",
        &["scapy", "taskset", "tcpdump"],
    ) {
        return;
    }
    const N: usize = 2000;
    const CHUNK: usize = 40;
    let sf = scapy_frames("xdp-fwd-shared", N, 43, 60, 1514, 0);
    let net = TestNet::with_options(1500, 2);
    let dump = Dump::start(
        &net,
        &net.a,
        "xdp-fwd-shared.pcap",
        "ether src 02:4e:52:00:00:02",
    );
    let mut xsks = net
        .within(|| {
            XdpSocket::builder(&net.b)
                .frame_count(128)
                .rx_frames(64)
                .ring_size(64)
                .share_umem(true)
                .open_queues(0..2)
        })
        .unwrap();
    let mut sender = ChunkSender::start(&net, &net.a, &sf.file);
    let mut received = [0usize; 2];
    let forwarded = {
        let _pin = pin_to_one_cpu();
        let deadline = Instant::now() + PATIENCE;
        let mut forwarded = 0usize;
        while forwarded < N && Instant::now() < deadline {
            if forwarded == sender.requested {
                sender.request(CHUNK.min(N - forwarded));
            }
            for q in 0..2 {
                let Some(mut batch) = xsks[q].next_batch(Some(Duration::from_millis(20))).unwrap()
                else {
                    continue;
                };
                let other = 1 - q;
                for i in 0..batch.len() {
                    let mut frame = batch.take(i).expect("not taken yet");
                    if !is_ours(frame.data()) {
                        continue;
                    }
                    received[q] += 1;
                    swap_macs(frame.data_mut());
                    xsks[other].send_frame(frame).unwrap();
                    forwarded += 1;
                }
                drop(batch);
                // Completions on the other socket return the frames to this one.
                xsks[other].flush().unwrap();
            }
        }
        for xsk in &mut xsks {
            assert!(
                xsk.wait_sent(Some(PATIENCE)).unwrap(),
                "forwarded frames left in flight"
            );
        }
        forwarded
    };
    assert_eq!(sender.finish(), N, "scapy's count");
    assert_eq!(forwarded, N, "received per queue: {received:?}");
    let mut got = dump.finish(N);
    let mut want: Vec<Vec<u8>> = sf
        .frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            swap_macs(&mut f);
            f
        })
        .collect();
    // Two TX queues: frames from different sockets may interleave differently.
    got.sort();
    want.sort();
    assert_frames("forwarded across sockets", &got, &want);
    for xsk in &xsks {
        let stats = xsk.stats().unwrap();
        assert_clean_rx("cross-socket forwarding", stats);
        assert_eq!(stats.tx_invalid_descs, 0, "{stats:?}");
    }
    eprintln!("received per queue {received:?}, each forwarded by the other socket");
}

/// A frame from a socket with its own UMEM cannot be sent by another socket without a copy: a
/// typed error, and the frame goes back to its owner.
#[test]
fn send_frame_from_a_foreign_umem_is_refused() {
    if !can_run("send_frame_from_a_foreign_umem_is_refused", &["scapy"]) {
        return;
    }
    let net = TestNet::new();
    let mut rx = open_in(
        &net,
        XdpSocket::builder(&net.b).frame_count(64).ring_size(32),
    );
    let mut tx = open_in(
        &net,
        XdpSocket::builder(&net.a).frame_count(64).ring_size(32),
    );
    let sf = scapy_frames("xdp-foreign", 5, 44, 60, 200, 0);
    let mut sender = ChunkSender::start(&net, &net.a, &sf.file);
    sender.request(5);
    let deadline = Instant::now() + Duration::from_secs(20);
    let frame = loop {
        assert!(Instant::now() < deadline, "no frame arrived");
        if let Some(mut batch) = rx.next_batch(Some(Duration::from_millis(100))).unwrap() {
            if let Some(i) =
                (0..batch.len()).find(|&i| batch.get(i).is_some_and(|p| is_ours(p.data())))
            {
                break batch.take(i).unwrap();
            }
        }
    };
    match tx.send_frame(frame) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("share_umem"), "{msg}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(tx.in_flight(), 0);
    assert_eq!(sender.finish(), 5);
}
