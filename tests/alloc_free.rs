//! No heap allocation per packet or per batch on the receive path, once running.
//!
//! A counting global allocator counts, per thread, the allocations made while counting is on.
//! Each test opens a capture (blocking, or async under a tokio current-thread runtime or
//! `smol::block_on`), receives a few thousand packets to warm up, then counts every allocation the
//! receiving thread makes over more than 100 000 packets of real traffic. The traffic comes from
//! tcpreplay (`--loop` over a pcap scapy wrote) in a separate process, ended by one marker frame;
//! this process only receives.
//!
//! Two counts:
//! - *in the loop*: while the receiving code runs: iterating batches, reading every packet field,
//!   holding and dropping batches, taking and dropping `OwnedPacket`s, and (async) every poll of
//!   the receiving future, which is where the library waits, registers wakers and takes batches.
//!   Must be 0 everywhere.
//! - *whole thread*: also what the executor does on that thread between polls (parking, its
//!   reactor). Must be 0 for the blocking loops and tokio current-thread. Under `smol::block_on`
//!   it is not 0 and is only reported: async-io's reactor collects wakers into a fresh
//!   `Vec::new()` on every turn (`async-io-2.6.0/src/reactor.rs`, `ReactorLock::react`), about one
//!   64-byte allocation per wake-up, outside netring.
//!
//! When something allocates in the loop, the test prints the backtrace of the first allocation.
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`); without them this file
//! compiles to nothing.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::alloc::*;
use common::asyncrt::rx_frames;
use common::frames::*;
use common::*;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{Either, select};
use futures::task::AtomicWaker;
use netring::pcap::PcapWriter;
use netring::runtime::{Smol, Tokio};
use netring::{AsyncCapture, Capture, OwnedPacket, Packet, Timestamp};

// ---------------------------------------------------------------------------------------------
// The counting allocator.

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counter works (so a 0 below means something).
#[test]
fn the_counter_counts() {
    let w = Window::start();
    let outside = black_box(vec![0u8; 10]);
    let g = in_loop();
    let v = black_box(vec![1u8; 100]);
    let s = black_box(format!("{}", v.len()));
    drop(g);
    let c = w.stop();
    drop((v, s, outside));
    assert!(c.in_loop >= 2 && c.in_loop_bytes >= 100, "{c:?}");
    assert_eq!(c.all, c.in_loop + 1, "{c:?}");
    let w = Window::start();
    let g = in_loop();
    let x = black_box(3u64) * 7;
    drop(g);
    assert_eq!(w.stop(), Counts::default(), "{x}");
}

// ---------------------------------------------------------------------------------------------
// Traffic.

/// Packets received before counting starts.
const WARMUP: u64 = 5_000;
/// Packets that must be received while counting.
const MEASURED: u64 = 100_000;
/// Passes over the 3000-frame reference pcap.
const LOOPS: u32 = 45;
/// Ethertype of the end marker.
const END_TYPE: u16 = 0x88b6;

/// One traffic test at a time (each sends at a high rate; two at once would mostly measure drops).
static TRAFFIC: Mutex<()> = Mutex::new(());

/// Shared with the sender thread: when to give up, and how to wake an async waiter.
struct Control {
    give_up: AtomicBool,
    finished: AtomicBool,
    waker: AtomicWaker,
}

/// Sends `LOOPS` passes over the reference pcap with tcpreplay, then the end marker; if the
/// receiver has not finished 30 s after that, tells it to give up.
fn start_sender(net: &Arc<TestNet>) -> (std::thread::JoinHandle<u64>, Arc<Control>) {
    let end_file = scratch("end.pcap");
    {
        let mut end = vec![0u8; 60];
        end[..6].copy_from_slice(&DST_MAC);
        end[6..12].copy_from_slice(&SRC_MAC);
        end[12..14].copy_from_slice(&END_TYPE.to_be_bytes());
        end[14..17].copy_from_slice(b"END");
        let mut w = PcapWriter::new(std::fs::File::create(&end_file).unwrap()).unwrap();
        w.write_frame(Timestamp { sec: 0, nsec: 0 }, 60, &end, None)
            .unwrap();
        w.into_inner().unwrap();
    }
    let ctl = Arc::new(Control {
        give_up: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    let (net, ctl2) = (net.clone(), ctl.clone());
    let file = rx_frames().file.clone();
    let t = std::thread::spawn(move || {
        let out = run(net.cmd("timeout").args([
            "-s",
            "KILL",
            "120",
            "taskset",
            "-c",
            &first_allowed_cpu().to_string(),
            "tcpreplay",
            "-i",
            &net.a,
            "--preload-pcap",
            &format!("--loop={LOOPS}"),
            "--pps=60000",
            &file,
        ]));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let sent: u64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Successful packets:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("tcpreplay output:\n{text}"));
        std::thread::sleep(Duration::from_millis(50));
        tcpreplay(&net, &net.a, &end_file, 1000);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !ctl2.finished.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        ctl2.give_up.store(true, Ordering::SeqCst);
        ctl2.waker.wake();
        sent
    });
    (t, ctl)
}

/// Ready once the sender thread says to give up.
async fn gave_up(ctl: &Control) {
    poll_fn(|cx| {
        ctl.waker.register(cx.waker());
        if ctl.give_up.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// What the receiving loop saw.
#[derive(Debug, Default)]
struct Tally {
    packets: u64,
    batches: u64,
    bytes: u64,
    counted_packets: u64,
    counts: Counts,
    end: bool,
    mix: u64,
}

impl Tally {
    /// Reads every field of a packet; true at the end marker.
    fn packet(&mut self, p: &Packet<'_>) -> bool {
        let d = p.data();
        self.mix = self.mix.wrapping_add(
            u64::from(d.first().copied().unwrap_or(0)) + u64::from(d.last().copied().unwrap_or(0)),
        );
        self.mix ^= p.timestamp().as_nanos() ^ p.wire_len() as u64 ^ p.capture_len() as u64;
        self.mix ^= u64::from(p.vlan().map_or(0, |v| v.tci)) ^ u64::from(p.rx_hash());
        self.mix ^= u64::from(p.ifindex()) ^ u64::from(p.protocol()) ^ u64::from(p.status());
        self.mix ^= p.packet_type().is_outgoing() as u64 ^ p.checksum_not_ready() as u64;
        self.mix ^= matches!(p.timestamp_source(), netring::TimestampSource::Software) as u64;
        self.packets += 1;
        self.bytes += p.wire_len() as u64;
        is_end(d)
    }

    fn owned(&mut self, p: &OwnedPacket) -> bool {
        let d = p.data();
        self.mix = self
            .mix
            .wrapping_add(u64::from(d.last().copied().unwrap_or(0)));
        self.mix ^= p.timestamp().as_nanos() ^ p.wire_len() as u64 ^ p.capture_len() as u64;
        self.mix ^= u64::from(p.vlan().map_or(0, |v| v.tci)) ^ u64::from(p.ifindex());
        self.mix ^= u64::from(p.protocol()) ^ p.packet_type().is_outgoing() as u64;
        self.packets += 1;
        self.bytes += p.wire_len() as u64;
        is_end(d)
    }
}

fn is_end(d: &[u8]) -> bool {
    d.len() >= 17 && d[6..12] == SRC_MAC && d[12..14] == END_TYPE.to_be_bytes()
}

/// Starts the counting window once warmed up.
fn maybe_start(t: &Tally, w: &mut Option<(Window, u64)>) {
    if w.is_none() && t.packets >= WARMUP {
        *w = Some((Window::start(), t.packets));
    }
}

fn finish(mut t: Tally, w: Option<(Window, u64)>, what: &str) -> Tally {
    if let Some((w, at)) = w {
        t.counts = w.stop();
        t.counted_packets = t.packets - at;
    }
    let _ = black_box(t.mix);
    eprintln!(
        "{what}: {} packets in {} batches ({} bytes); over the last {} packets: {} allocations in \
         the loop, {} on the whole thread",
        t.packets, t.batches, t.bytes, t.counted_packets, t.counts.in_loop, t.counts.all
    );
    t
}

/// Whether the executor's own work between polls must be allocation-free too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WholeThread {
    MustBeZero,
    Reported,
}

/// Runs one receive loop against the traffic and checks the result.
fn measure(
    what: &str,
    whole_thread: WholeThread,
    receive: impl FnOnce(&Arc<TestNet>, &Control) -> Tally,
) {
    if !can_run(what, &["tcpreplay", "scapy"]) {
        return;
    }
    let _one_at_a_time = TRAFFIC.lock().unwrap_or_else(|e| e.into_inner());
    let _ = rx_frames(); // generated before anything is counted
    let net = Arc::new(TestNet::new());
    let (sender, ctl) = start_sender(&net);
    // `receive` opens its capture right away; the first frames leave after tcpreplay preloads.
    let t = receive(&net, &ctl);
    ctl.finished.store(true, Ordering::SeqCst);
    let sent = sender.join().expect("sender thread");
    assert!(
        t.end,
        "{what}: the end marker never arrived ({t:?}, {sent} sent)"
    );
    assert!(
        t.counted_packets >= MEASURED,
        "{what}: only {} packets while counting ({t:?}, {sent} sent)",
        t.counted_packets
    );
    if t.counts.in_loop != 0 {
        let first = FIRST.lock().unwrap().take().unwrap_or_default();
        panic!(
            "{what}: {} allocations ({} bytes) in the receiving loop over {} packets; the \
             first: {first}",
            t.counts.in_loop, t.counts.in_loop_bytes, t.counted_packets
        );
    }
    if whole_thread == WholeThread::MustBeZero {
        assert_eq!(
            t.counts.all, 0,
            "{what}: allocations on the receiving thread outside the loop: {t:?}"
        );
    }
}

/// A 64 MiB ring (256 blocks of 256 KiB): room for about 80 000 of the reference frames, so a
/// receiver held up on a busy machine still sees the 100 000 packets the count needs.
fn open(net: &TestNet) -> Capture {
    net.within(|| Capture::builder(&net.b).block_count(256).open())
        .expect("open")
}

// ---------------------------------------------------------------------------------------------
// The receive loops.

/// Blocking `next_batch`, reading every packet, holding the last 4 batches.
#[test]
fn blocking_batches() {
    measure("blocking batches", WholeThread::MustBeZero, |net, ctl| {
        let mut cap = open(net);
        let _in_loop = in_loop();
        let mut held = VecDeque::with_capacity(8);
        let (mut t, mut w) = (Tally::default(), None);
        while !t.end {
            assert!(!ctl.give_up.load(Ordering::SeqCst), "gave up: {t:?}");
            let Some(batch) = cap.next_batch(Some(Duration::from_millis(100))).unwrap() else {
                continue;
            };
            t.batches += 1;
            for p in &batch {
                t.end |= t.packet(&p);
            }
            held.push_back(batch);
            if held.len() > 4 {
                held.pop_front();
            }
            maybe_start(&t, &mut w);
        }
        drop(held);
        finish(t, w, "blocking batches")
    });
}

/// Blocking `next_batch`, taking an `OwnedPacket` of every packet and dropping them after the
/// batch.
#[test]
fn blocking_owned_packets() {
    measure(
        "blocking owned packets",
        WholeThread::MustBeZero,
        |net, ctl| {
            let mut cap = open(net);
            let _in_loop = in_loop();
            let mut owned: Vec<OwnedPacket> = Vec::with_capacity(1 << 14);
            let (mut t, mut w) = (Tally::default(), None);
            while !t.end {
                assert!(!ctl.give_up.load(Ordering::SeqCst), "gave up: {t:?}");
                let Some(batch) = cap.next_batch(Some(Duration::from_millis(100))).unwrap() else {
                    continue;
                };
                t.batches += 1;
                owned.extend(batch.iter().map(|p| p.to_owned_packet()));
                drop(batch); // the packets keep the block
                for p in &owned {
                    t.end |= t.owned(p);
                }
                owned.clear();
                maybe_start(&t, &mut w);
            }
            finish(t, w, "blocking owned packets")
        },
    );
}

/// `AsyncCapture` batches (`StreamExt::next`), holding the last 4.
async fn async_batches<R: netring::runtime::Runtime>(
    what: &str,
    net: &TestNet,
    ctl: &Control,
) -> Tally {
    let mut rx: AsyncCapture<R> = AsyncCapture::new(open(net)).expect("register");
    let mut held = VecDeque::with_capacity(8);
    let (mut t, mut w) = (Tally::default(), None);
    let mut give_up = pin!(gave_up(ctl));
    while !t.end {
        let batch = match select(rx.next(), give_up.as_mut()).await {
            Either::Left((item, _)) => item.expect("stream ended").expect("stream error"),
            Either::Right(_) => panic!("gave up: {t:?}"),
        };
        t.batches += 1;
        for p in &batch {
            t.end |= t.packet(&p);
        }
        held.push_back(batch);
        if held.len() > 4 {
            held.pop_front();
        }
        maybe_start(&t, &mut w);
    }
    drop(held);
    finish(t, w, what)
}

/// `PacketStream`: every packet an `OwnedPacket`, read and dropped.
async fn async_packets<R: netring::runtime::Runtime>(
    what: &str,
    net: &TestNet,
    ctl: &Control,
) -> Tally {
    let mut pkts = AsyncCapture::<R>::new(open(net))
        .expect("register")
        .packets();
    let (mut t, mut w) = (Tally::default(), None);
    let mut give_up = pin!(gave_up(ctl));
    while !t.end {
        let p = match select(pkts.next(), give_up.as_mut()).await {
            Either::Left((item, _)) => item.expect("stream ended").expect("stream error"),
            Either::Right(_) => panic!("gave up: {t:?}"),
        };
        t.end |= t.owned(&p);
        drop(p);
        maybe_start(&t, &mut w);
    }
    finish(t, w, what)
}

fn tokio_current() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tokio_current_thread_batches() {
    measure(
        "tokio current-thread batches",
        WholeThread::MustBeZero,
        |net, ctl| {
            tokio_current().block_on(InLoop(Box::pin(async_batches::<Tokio>(
                "tokio current-thread batches",
                net,
                ctl,
            ))))
        },
    );
}

#[test]
fn tokio_current_thread_packet_stream() {
    measure(
        "tokio current-thread packet stream",
        WholeThread::MustBeZero,
        |net, ctl| {
            tokio_current().block_on(InLoop(Box::pin(async_packets::<Tokio>(
                "tokio current-thread packet stream",
                net,
                ctl,
            ))))
        },
    );
}

#[test]
fn smol_batches() {
    measure("smol batches", WholeThread::Reported, |net, ctl| {
        smol::block_on(InLoop(Box::pin(async_batches::<Smol>(
            "smol batches",
            net,
            ctl,
        ))))
    });
}

#[test]
fn smol_packet_stream() {
    measure("smol packet stream", WholeThread::Reported, |net, ctl| {
        smol::block_on(InLoop(Box::pin(async_packets::<Smol>(
            "smol packet stream",
            net,
            ctl,
        ))))
    });
}
