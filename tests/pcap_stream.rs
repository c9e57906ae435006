//! pcap files as async streams and sinks, under tokio current-thread, tokio multi-thread and smol:
//!
//! - Replay: scapy writes 500 varied frames (IPv4 TCP/UDP/ICMP, ARP, IPv6, 802.1Q and 802.1ad
//!   tags, 60..1514 bytes); `pcap::replay` sends them as fast as possible through an
//!   `AsyncInjector`, and through an `AsyncXdpSocket`, on `net.a`; tcpdump on `net.b` captures
//!   them and they are compared byte for byte (and in order where the path keeps order).
//! - Pacing: scapy writes frames stamped at irregular offsets (0, 50 ms, 130 ms, ...); the
//!   recorded pace (and twice that) reproduces the gaps as tcpdump's timestamps show them, within
//!   a generous tolerance: a check that pacing works and does not drift, not a speed test.
//! - Writing: a capture's stream (AF_PACKET `PacketStream`, AF_XDP frames) forwarded into a
//!   `PcapWriter` sink while tcpreplay sends scapy's frames; `tcpdump -r` reads the file and
//!   every frame equals what scapy wrote, VLAN tags included (put back on AF_PACKET, where the
//!   kernel strips them).
//!
//! The sending thread is pinned to one CPU (see `async_tx.rs` for why).
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`).
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::io::BufReader;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use netring::pcap::{Pace, PcapReader, PcapWriter, Replayed, replay};
use netring::xdp::{AsyncXdpSocket, XdpFrame, XdpSocket};
use netring::{AsyncInjector, Injector, OwnedPacket};

crate::on_each_runtime!(
    replay_into_async_injector,
    replay_into_async_xdp_socket,
    recorded_pace_keeps_the_gaps,
    afpacket_capture_into_pcap_sink,
    xdp_capture_into_pcap_sink,
);

/// How long one step (a replay, a capture) may take.
const STEP: Duration = Duration::from_secs(60);

fn reader(file: &str) -> PcapReader<BufReader<std::fs::File>> {
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    PcapReader::new(BufReader::new(f)).expect("a pcap file")
}

/// Stops tcpdump once it has `want.len()` records (no kernel drops) and returns what it saw.
fn tcpdump_records(dump: Tcpdump, n: usize, what: &str) -> Vec<netring::pcap::PcapRecord> {
    let records = dump.wait_for_records(n, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let file = dump.file.clone();
    let stats = dump.stop();
    assert_eq!(stats.dropped_by_kernel, 0, "{what}: {stats:?}");
    let got: Vec<_> = reader(&file)
        .collect::<Result<_, _>>()
        .expect("tcpdump's file");
    assert_eq!(got.len(), n, "{what}: {records} records seen, {stats:?}");
    let _ = std::fs::remove_file(&file);
    got
}

fn total_bytes(frames: &[Vec<u8>]) -> u64 {
    frames.iter().map(|f| f.len() as u64).sum()
}

// ---------------------------------------------------------------------------------------------

/// 500 varied frames, `replay` as fast as possible into an `AsyncInjector` with a 32-frame ring
/// (so `poll_ready` really waits): tcpdump sees them byte for byte, in order.
async fn replay_into_async_injector<R: Exec>() {
    if !can_run("replay_into_async_injector", &["tcpdump", "scapy"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let src = scapy_varied("replay-afpacket", 500, 11, None);
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("replay-afpacket-seen.pcap"));
    let mut tx: AsyncInjector<R> = net
        .within(|| Injector::builder(&net.a).frame_count(32).open_async())
        .expect("open_async");
    let sent = within::<R, _>(
        STEP,
        "replay",
        replay::<R, _, _>(reader(&src.file), &mut tx, Pace::AsFastAsPossible),
    )
    .await
    .expect("replay");
    assert_eq!(
        sent,
        Replayed {
            records: 500,
            bytes: total_bytes(&src.frames)
        }
    );
    assert_eq!(tx.get_ref().in_flight(), 0, "replay flushes the sink");
    let got: Vec<Vec<u8>> = tcpdump_records(dump, 500, "replay afpacket")
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_frames("replay into AsyncInjector", &got, &src.frames);
}

/// The same through an `AsyncXdpSocket` (copy mode, a 128-frame UMEM). AF_XDP in copy mode
/// transmits from whichever thread polls the socket, so frames are in order only under tokio
/// current-thread; elsewhere each must arrive exactly once, byte for byte.
async fn replay_into_async_xdp_socket<R: Exec>() {
    if !can_run("replay_into_async_xdp_socket", &["tcpdump", "scapy"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let src = scapy_varied("replay-xdp", 500, 12, None);
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("replay-xdp-seen.pcap"));
    let sock = net
        .within(|| {
            XdpSocket::builder(&net.a)
                .frame_count(128)
                .ring_size(64)
                .open_socket()
        })
        .expect("open_socket");
    let mut tx = AsyncXdpSocket::<R>::new(sock).expect("registering with the runtime");
    let sent = within::<R, _>(
        STEP,
        "replay",
        replay::<R, _, _>(reader(&src.file), &mut tx, Pace::AsFastAsPossible),
    )
    .await
    .expect("replay");
    assert_eq!(sent.records, 500);
    assert_eq!(sent.bytes, total_bytes(&src.frames));
    let mut got: Vec<Vec<u8>> = tcpdump_records(dump, 500, "replay xdp")
        .into_iter()
        .map(|r| r.data)
        .collect();
    if R::name() == "tokio current-thread" {
        assert_frames("replay into AsyncXdpSocket", &got, &src.frames);
    } else {
        let mut want = src.frames.clone();
        want.sort();
        got.sort();
        assert_frames("replay into AsyncXdpSocket (sorted)", &got, &want);
    }
}

// ---------------------------------------------------------------------------------------------

/// Offsets (seconds) of the paced frames: irregular gaps of 0 to 150 ms, 1.1 s in all.
const OFFSETS: [f64; 14] = [
    0.0, 0.05, 0.13, 0.15, 0.30, 0.31, 0.45, 0.50, 0.62, 0.70, 0.85, 0.86, 1.0, 1.1,
];

/// Each captured gap may differ from the recorded one by this much.
const GAP_TOLERANCE: Duration = Duration::from_millis(25);

/// Replays the timed file at `pace` and checks tcpdump's timestamps against `OFFSETS / factor`.
async fn paced<R: Exec>(net: &TestNet, src: &ScapyFile, pace: Pace, factor: f64) {
    let what = format!("{pace:?} under {}", R::name());
    let dump = Tcpdump::start(net, &net.b, &scratch("paced-seen.pcap"));
    let mut tx: AsyncInjector<R> = net
        .within(|| Injector::builder(&net.a).open_async())
        .expect("open_async");
    let started = Instant::now();
    let sent = within::<R, _>(STEP, "paced replay", async {
        replay::<R, _, _>(reader(&src.file), &mut tx, pace).await
    })
    .await
    .expect("replay");
    let took = started.elapsed();
    assert_eq!(sent.records, OFFSETS.len() as u64, "{what}");
    let recorded_total = Duration::from_secs_f64(OFFSETS[OFFSETS.len() - 1] / factor);
    assert!(
        took >= recorded_total,
        "{what}: the replay took {took:?}, less than the recorded {recorded_total:?}"
    );
    let got = tcpdump_records(dump, OFFSETS.len(), &what);
    let data: Vec<Vec<u8>> = got.iter().map(|r| r.data.clone()).collect();
    assert_frames(&what, &data, &src.frames);
    let at: Vec<Duration> = got
        .iter()
        .map(|r| Duration::from_nanos(r.timestamp.as_nanos() - got[0].timestamp.as_nanos()))
        .collect();
    let captured_total = at[at.len() - 1];
    assert!(
        captured_total + Duration::from_millis(2) >= recorded_total,
        "{what}: the frames spanned {captured_total:?} on the wire, less than the recorded \
         {recorded_total:?}"
    );
    let worst = (1..OFFSETS.len())
        .map(|i| {
            let want = Duration::from_secs_f64((OFFSETS[i] - OFFSETS[i - 1]) / factor);
            (at[i] - at[i - 1]).abs_diff(want)
        })
        .max()
        .unwrap_or_default();
    eprintln!(
        "{what}: {} frames over {captured_total:?} (recorded {recorded_total:?}), largest gap \
         error {worst:?}",
        OFFSETS.len()
    );
    for i in 1..OFFSETS.len() {
        let want = Duration::from_secs_f64((OFFSETS[i] - OFFSETS[i - 1]) / factor);
        let gap = at[i] - at[i - 1];
        assert!(
            gap.abs_diff(want) <= GAP_TOLERANCE,
            "{what}: gap before frame {i} was {gap:?} on the wire, recorded {want:?} \
             (all offsets: {at:?})"
        );
    }
    // No drift: the last frame is where the schedule put it, not behind by the sum of the
    // per-frame delays.
    assert!(
        captured_total.abs_diff(recorded_total) <= GAP_TOLERANCE,
        "{what}: last frame at {captured_total:?}, recorded {recorded_total:?}"
    );
}

/// Recorded pace, then twice as fast: tcpdump's timestamps show the recorded gaps.
async fn recorded_pace_keeps_the_gaps<R: Exec>() {
    if !can_run("recorded_pace_keeps_the_gaps", &["tcpdump", "scapy"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let src = scapy_varied("paced", OFFSETS.len(), 13, Some(&OFFSETS));
    // scapy stamped the records as asked (microsecond file).
    let stamps: Vec<u64> = reader(&src.file)
        .map(|r| r.unwrap().timestamp.as_nanos())
        .collect();
    for (i, t) in stamps.iter().enumerate() {
        let want = (OFFSETS[i] * 1e9).round() as u64;
        assert!(
            (t - stamps[0]).abs_diff(want) <= 1_000,
            "record {i}: {stamps:?}"
        );
    }
    let net = TestNet::new();
    paced::<R>(&net, &src, Pace::Recorded, 1.0).await;
    paced::<R>(&net, &src, Pace::Scaled(2.0), 2.0).await;
}

// ---------------------------------------------------------------------------------------------

/// Checks a pcap file we wrote with tcpdump: it reads `want.len()` packets whose bytes are
/// `want`, in order (tags included), with timestamps that do not go backwards.
fn tcpdump_reads(file: &str, want: &[Vec<u8>], what: &str) {
    assert_eq!(tcpdump_count(file), want.len(), "{what}: tcpdump -r count");
    let dumped = tcpdump_dump(file);
    let got: Vec<Vec<u8>> = dumped.iter().map(|p| p.bytes.clone()).collect();
    assert_frames(what, &got, want);
    let stamps: Vec<f64> = dumped
        .iter()
        .map(|p| p.ts.parse::<f64>().expect("a timestamp"))
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "{what}: timestamps go backwards"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - stamps[0]).abs() < 600.0,
        "{what}: first timestamp {} is not the capture time",
        stamps[0]
    );
}

/// tcpreplay -> net.a -> net.b -> `PacketStream` (our frames only, 500 of them) forwarded into a
/// `PcapWriter`; the kernel strips VLAN tags on receive and the writer puts them back.
async fn afpacket_capture_into_pcap_sink<R: Exec>() {
    if !can_run(
        "afpacket_capture_into_pcap_sink",
        &["tcpdump", "tcpreplay", "scapy", "taskset"],
    ) {
        return;
    }
    let src = scapy_varied("capture-afpacket", 500, 14, None);
    let net = Arc::new(TestNet::new());
    let rx = net
        .within(|| {
            netring::Capture::builder(&net.b)
                .block_size(1 << 20)
                .block_count(8)
                .open_async::<R>()
        })
        .expect("open_async");
    let out = scratch("capture-afpacket-written.pcap");
    let writer = PcapWriter::new(std::fs::File::create(&out).unwrap()).unwrap();
    let sent = replay_with_tcpreplay(&net, &src.file);
    let tagged_seen = std::sync::atomic::AtomicUsize::new(0);
    within::<R, _>(
        STEP,
        "capture into the pcap sink",
        rx.packets()
            .try_filter(|p: &OwnedPacket| {
                if p.vlan().is_some() {
                    tagged_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                futures::future::ready(is_ours(p.data()))
            })
            .take(500)
            .forward(writer),
    )
    .await
    .expect("forward");
    assert_eq!(sent.await, 500, "tcpreplay's count");
    let tags = src.frames.iter().filter(|f| wire_tag(f).is_some()).count();
    assert!(tags > 50, "{tags} tagged frames");
    assert_eq!(
        tagged_seen.into_inner(),
        tags,
        "frames whose tag the kernel reported apart"
    );
    tcpdump_reads(&out, &src.frames, "AF_PACKET capture into PcapWriter");
    let _ = std::fs::remove_file(&out);
}

/// tcpreplay -> net.a -> net.b -> `AsyncXdpSocket::frames` (owned `XdpFrame`s) forwarded into a
/// `PcapWriter` (no kernel timestamps: the writer stamps the current time).
async fn xdp_capture_into_pcap_sink<R: Exec>() {
    if !can_run(
        "xdp_capture_into_pcap_sink",
        &["tcpdump", "tcpreplay", "scapy", "taskset"],
    ) {
        return;
    }
    let src = scapy_varied("capture-xdp", 500, 15, None);
    let net = Arc::new(TestNet::new());
    let rx: AsyncXdpSocket<R> = net
        .within(|| {
            XdpSocket::builder(&net.b)
                .frame_count(2048)
                .rx_frames(1536)
                .ring_size(2048)
                .open_async::<R>()
        })
        .expect("open_async");
    let out = scratch("capture-xdp-written.pcap");
    let writer = PcapWriter::new(std::fs::File::create(&out).unwrap()).unwrap();
    let sent = replay_with_tcpreplay(&net, &src.file);
    within::<R, _>(
        STEP,
        "capture into the pcap sink",
        rx.frames()
            .try_filter(|f: &XdpFrame| futures::future::ready(is_ours(f.data())))
            .take(500)
            .forward(writer),
    )
    .await
    .expect("forward");
    assert_eq!(sent.await, 500, "tcpreplay's count");
    tcpdump_reads(&out, &src.frames, "AF_XDP capture into PcapWriter");
    let _ = std::fs::remove_file(&out);
}

/// tcpreplay of `file` on `net.a` at 5000 frames/s, from a thread of its own.
fn replay_with_tcpreplay(
    net: &Arc<TestNet>,
    file: &str,
) -> impl std::future::Future<Output = u64> + Send + use<> {
    common::asyncrt::replay(net, &net.a, file, 5000)
}
