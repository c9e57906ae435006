//! `netring::combinators` with real traffic, under tokio current-thread, tokio multi-thread and
//! smol:
//!
//! - filters: tcpreplay sends 3000 frames scapy wrote into `net.a`; `filter_packets` (over
//!   `PacketStream`) and `filter_batches` (over `AsyncCapture`) on `net.b` yield exactly the
//!   selected ones, byte for byte, in order.
//! - fanout: scapy writes many flows in both directions (IPv4 TCP/UDP, fragmented UDP, IPv6,
//!   non-IP, untagged/802.1Q/QinQ, addresses, ports and MACs swapped on the way back); every
//!   frame of a flow, both directions, lands in one worker; every frame exactly once. A slow
//!   worker makes the source wait (nothing lost), a dropped worker's share is dropped and counted.
//! - buffer: DropNewest keeps the first N, DropOldest the last N, Wait loses nothing; the
//!   counters add up exactly and the kernel dropped nothing.
//! - AF_XDP: `filter_batches` over `AsyncXdpSocket`, and `frames()` -> `filter_packets` ->
//!   `fanout_flows`.
//! - TX: a filtered, fanned-out capture `forward`ed (as `OwnedPacket`s, no copy) into two
//!   `AsyncInjector`s on a throttled link: `poll_ready` backpressure reaches through the
//!   combinators to the capture ring; tcpdump on the peer sees every frame byte for byte.
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`).
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, future::join};
use netring::combinators::{
    BatchStreamExt, BufferStats, PacketStreamExt, Policy, flow_hash, flow_key,
};
use netring::xdp::{AsyncXdpSocket, XdpSocket};
use netring::{AsPacket, AsyncCapture, Capture, Error, Injector, OwnedPacket};

crate::on_each_runtime!(
    filter_packets_exact_set,
    filter_batches_exact_set,
    fanout_keeps_flows_together,
    fanout_slow_and_dropped_workers,
    fanout_error_reaches_every_worker,
    buffer_drop_newest_keeps_the_first,
    buffer_drop_oldest_keeps_the_last,
    buffer_wait_loses_nothing,
    xdp_filters_and_fanout,
    forward_through_combinators_to_a_throttled_link,
);

/// How long one item may take to come while traffic flows.
const STEP: Duration = Duration::from_secs(10);

/// The index a test frame carries after [`MARKER`] (its position in the scapy output).
fn marker_index(data: &[u8]) -> Option<u32> {
    let at = data.windows(MARKER.len()).position(|w| w == MARKER)?;
    let b = data.get(at + 3..at + 7)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The filter under test: our frames whose index is not 1 mod 3 (two thirds of them).
fn selected(data: &[u8]) -> bool {
    is_ours(data) && marker_index(data).is_some_and(|i| i % 3 != 1)
}

fn wire(p: &impl AsPacket) -> Vec<u8> {
    with_tag(p.data(), p.vlan())
}

/// A frame as AF_PACKET on a veth delivers it: the outer VLAN tag taken out of the bytes.
fn stripped(frame: &[u8]) -> Vec<u8> {
    match wire_tag(frame) {
        Some(_) => [&frame[..12], &frame[16..]].concat(),
        None => frame.to_vec(),
    }
}

fn open_capture<R: Exec>(net: &TestNet) -> AsyncCapture<R> {
    net.within(|| Capture::builder(&net.b).open_async())
        .expect("open_async")
}

/// Asserts nothing more comes out of `s` for a while (nothing delivered twice, no extras).
async fn assert_quiet<R: Exec, S: futures::Stream + Unpin>(s: &mut S, what: &str) {
    let extra = timeout::<R, _>(Duration::from_millis(300), s.next()).await;
    assert!(extra.is_none(), "{what}: something more came out");
}

/// Asserts `part` appears in `whole` in the same order (frames are unique).
#[track_caller]
fn assert_subsequence(what: &str, part: &[Vec<u8>], whole: &[Vec<u8>]) {
    let pos: HashMap<&[u8], usize> = whole.iter().enumerate().map(|(i, f)| (&f[..], i)).collect();
    let mut last = None;
    for f in part {
        let p = *pos
            .get(&f[..])
            .unwrap_or_else(|| panic!("{what}: a frame never sent"));
        assert!(
            last.is_none_or(|l| l < p),
            "{what}: out of order at sent #{p}"
        );
        last = Some(p);
    }
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Filters.

/// `PacketStream` -> `filter_packets`: exactly the selected frames, in order, byte for byte.
async fn filter_packets_exact_set<R: Exec>() {
    if !can_run("filter_packets_exact_set", &["tcpreplay", "scapy"]) {
        return;
    }
    let all = &rx_frames().frames;
    let want: Vec<Vec<u8>> = all.iter().filter(|f| selected(f)).cloned().collect();
    assert!(want.len() > 1900 && want.len() < all.len());
    let net = Arc::new(TestNet::new());
    let mut rx = open_capture::<R>(&net)
        .packets()
        .filter_packets(|p: &OwnedPacket| selected(p.data()));
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);
    let mut got = Vec::with_capacity(want.len());
    while got.len() < want.len() {
        let p = within::<R, _>(STEP, "next()", rx.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        got.push(wire(&p));
    }
    assert_eq!(sent.await, all.len() as u64, "tcpreplay's count");
    assert_quiet::<R, _>(&mut rx, "filter_packets").await;
    assert_frames("filter_packets", &got, &want);
    let rejected = rx.rejected();
    assert!(
        rejected >= (all.len() - want.len()) as u64,
        "rejected {rejected}"
    );
    let stats = rx.get_mut().get_mut().cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
    eprintln!(
        "{}: {} of {} kept, {rejected} rejected",
        R::name(),
        got.len(),
        all.len()
    );
}

/// The batch filter's selection: [`selected`] among the first 1500 frames; the batches holding
/// only later frames have nothing accepted.
fn selected_early(data: &[u8]) -> bool {
    selected(data) && marker_index(data).is_some_and(|i| i < 1500)
}

/// `AsyncCapture` -> `filter_batches`: iterating the filtered batches gives exactly the selected
/// frames; `len()`, `positions()` and `is_accepted()` agree with the whole batch; batches with
/// nothing accepted (all frames after the first 1500) are skipped, never yielded.
async fn filter_batches_exact_set<R: Exec>() {
    if !can_run("filter_batches_exact_set", &["tcpreplay", "scapy"]) {
        return;
    }
    let all = &rx_frames().frames;
    let want: Vec<Vec<u8>> = all.iter().filter(|f| selected_early(f)).cloned().collect();
    let net = Arc::new(TestNet::new());
    let mut rx = open_capture::<R>(&net).filter_batches(|p| selected_early(p.data()));
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);
    let mut got = Vec::with_capacity(want.len());
    let mut batches = 0;
    while got.len() < want.len() {
        let batch = within::<R, _>(STEP, "next()", rx.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        assert!(!batch.is_empty(), "an empty filtered batch was yielded");
        let before = got.len();
        got.extend(batch.iter().map(|p| wire(&p)));
        assert_eq!(got.len() - before, batch.len(), "len() vs iteration");
        // The same set, from the whole batch and the accepted positions.
        let whole: Vec<_> = batch.batch().iter().collect();
        let accepted: Vec<usize> = batch.positions().collect();
        assert_eq!(accepted.len(), batch.len());
        for (i, p) in whole.iter().enumerate() {
            assert_eq!(
                batch.is_accepted(i),
                selected_early(p.data()),
                "position {i}"
            );
        }
        for (k, &i) in accepted.iter().enumerate() {
            assert_eq!(wire(&whole[i]), got[before + k]);
        }
        batches += 1;
    }
    assert_eq!(sent.await, all.len() as u64, "tcpreplay's count");
    assert_quiet::<R, _>(&mut rx, "filter_batches").await;
    assert_frames("filter_batches", &got, &want);
    // 1500 frames of 60..1514 bytes fill several 256 KiB blocks after the last accepted one.
    assert!(
        rx.skipped_batches() >= 2,
        "skipped {}",
        rx.skipped_batches()
    );
    let stats = rx.get_mut().cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
    eprintln!(
        "{}: {} frames in {batches} filtered batches, {} batches skipped",
        R::name(),
        got.len(),
        rx.skipped_batches()
    );
}

// ---------------------------------------------------------------------------------------------
// Fanout.

/// Writes frames of `FLOWS` flows, `PER` datagrams each, alternating direction: the reply swaps
/// MACs, addresses and ports. Kinds by flow number: 0 TCP/IPv4, 1 UDP/IPv4, 2 UDP/IPv4
/// fragmented in three, 3 TCP/IPv6, 4 UDP/IPv6, 5 non-IP (EtherType 0x88b5, only MACs differ).
/// Tagging by flow number: none, 802.1Q, QinQ (802.1ad + 802.1Q). Prints "FLOW HEX" per frame.
const SCAPY_FLOWS: &str = r#"
import random, sys
from scapy.all import Dot1AD, Dot1Q, Ether, IP, IPv6, TCP, UDP, Raw, fragment, wrpcap
out, flows, per, seed = sys.argv[1], *map(int, sys.argv[2:5])
rng = random.Random(seed)
A, B = "02:4e:52:00:00:01", "02:4e:52:00:00:02"
frames, lines, idx = [], [], 0
for f in range(flows):
    kind, tags = f % 6, (f // 6) % 3
    inner, outer = rng.randint(1, 4094), rng.randint(1, 4094)
    if kind in (3, 4):
        a = "fd00::%x:%x" % (rng.randint(1, 0xffff), rng.randint(1, 0xffff))
        b = "fd01::%x:%x" % (rng.randint(1, 0xffff), rng.randint(1, 0xffff))
    else:
        a = "10.%d.%d.%d" % (rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
        b = "10.%d.%d.%d" % (rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
    sa, sb = rng.randint(1024, 65535), rng.choice([53, 80, 443, rng.randint(1024, 65535)])
    macs = (A, "02:4e:52:00:%02x:%02x" % (f // 256, f % 256)) if kind == 5 else (A, B)
    for k in range(per):
        fwd = k % 2 == 0
        src, dst, sp, dp = (a, b, sa, sb) if fwd else (b, a, sb, sa)
        msrc, mdst = macs if fwd else (macs[1], macs[0])
        l2 = Ether(src=msrc, dst=mdst)
        if tags == 1:
            l2 = l2 / Dot1Q(vlan=inner)
        elif tags == 2:
            l2 = l2 / Dot1AD(vlan=outer) / Dot1Q(vlan=inner)
        payload = b"NRT" + idx.to_bytes(4, "big") + rng.randbytes(rng.randint(10, 300))
        idx += 1
        if kind == 5:
            l2.lastlayer().type = 0x88b5
            pkts = [l2 / Raw(payload)]
        elif kind in (3, 4):
            l4 = TCP(sport=sp, dport=dp) if kind == 3 else UDP(sport=sp, dport=dp)
            pkts = [l2 / IPv6(src=src, dst=dst) / l4 / Raw(payload)]
        else:
            l4 = TCP(sport=sp, dport=dp) if kind == 0 else UDP(sport=sp, dport=dp)
            ip = IP(src=src, dst=dst, id=idx & 0xffff)
            if kind == 2:
                big = ip / l4 / Raw(payload + rng.randbytes(2200))
                pkts = [l2 / p for p in fragment(big, fragsize=1000)]
            else:
                pkts = [l2 / ip / l4 / Raw(payload)]
        for p in pkts:
            raw = bytes(p)
            frames.append(raw)
            lines.append("%d %s" % (f, raw.hex()))
wrpcap(out, frames, linktype=1)
sys.stdout.write("\n".join(lines) + "\n")
"#;

struct Flows {
    file: String,
    /// (flow, frame) in sending order.
    frames: Vec<(usize, Vec<u8>)>,
}

impl Drop for Flows {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

fn scapy_flows(flows: usize, per: usize) -> Flows {
    let file = scratch("flows.pcap");
    let out = run(scapy_script(SCAPY_FLOWS)
        .arg(&file)
        .args([flows, per, 11].map(|v| v.to_string())));
    let frames: Vec<(usize, Vec<u8>)> = String::from_utf8(out.stdout)
        .expect("text")
        .lines()
        .map(|l| {
            let (f, hex) = l.split_once(' ').expect("FLOW HEX");
            (f.parse().expect("flow number"), unhex(hex))
        })
        .collect();
    let in_file = read_pcap(&file);
    assert_eq!(in_file.len(), frames.len(), "records in scapy's pcap");
    for (i, (a, (_, b))) in in_file.iter().zip(&frames).enumerate() {
        assert_frame_eq("scapy pcap vs hex", i, a, b);
    }
    Flows { file, frames }
}

/// A frame of ours in the flow test: one of our MACs on either side.
fn ours_either_way(data: &[u8]) -> bool {
    data.len() >= 12 && (data[..6] == SRC_MAC || data[6..12] == SRC_MAC)
}

/// Both directions of 96 flows (tagged, untagged, IPv4, IPv6, fragments, non-IP) fanned out
/// by flow to 4 workers (spawned tasks): every flow in exactly one worker, every frame exactly
/// once, each worker's frames in sending order.
async fn fanout_keeps_flows_together<R: Exec>() {
    if !can_run("fanout_keeps_flows_together", &["tcpreplay", "scapy"]) {
        return;
    }
    const WORKERS: usize = 4;
    let flows = scapy_flows(96, 10);
    let sent_frames: Vec<Vec<u8>> = flows.frames.iter().map(|(_, f)| f.clone()).collect();
    let flow_of: HashMap<Vec<u8>, usize> =
        flows.frames.iter().map(|(k, f)| (f.clone(), *k)).collect();
    assert_eq!(flow_of.len(), sent_frames.len(), "frames are unique");
    let net = Arc::new(TestNet::new());
    let source = open_capture::<R>(&net)
        .packets()
        .filter_packets(|p: &OwnedPacket| ours_either_way(p.data()))
        .take(sent_frames.len());
    let workers: Vec<Task<Vec<Vec<u8>>>> = source
        .fanout_flows(WORKERS, 64)
        .expect("fanout")
        .into_iter()
        .map(|mut part| {
            R::spawn(async move {
                let mut got = Vec::new();
                while let Some(p) = part.next().await {
                    got.push(wire(&p.expect("stream error")));
                }
                got
            })
        })
        .collect();
    let sent = replay(&net, &net.a, &flows.file, 20_000);
    let mut per_worker = Vec::new();
    for w in workers {
        per_worker.push(within::<R, _>(Duration::from_secs(60), "worker", w).await);
    }
    assert_eq!(sent.await, sent_frames.len() as u64, "tcpreplay's count");

    let mut worker_of_flow: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (w, got) in per_worker.iter().enumerate() {
        assert_subsequence(&format!("worker {w}"), got, &sent_frames);
        for f in got {
            let flow = *flow_of.get(f).expect("a frame that was sent");
            worker_of_flow.entry(flow).or_default().insert(w);
        }
    }
    for (flow, ws) in &worker_of_flow {
        assert_eq!(ws.len(), 1, "flow {flow} was split between workers {ws:?}");
    }
    assert_eq!(worker_of_flow.len(), 96, "every flow arrived");
    let busy = per_worker.iter().filter(|g| !g.is_empty()).count();
    assert!(
        busy >= 3,
        "flows spread over only {busy} of {WORKERS} workers"
    );
    let all: Vec<Vec<u8>> = per_worker.iter().flatten().cloned().collect();
    assert_eq!(all.len(), sent_frames.len(), "frames delivered in total");
    assert!(
        sorted(all) == sorted(sent_frames.clone()),
        "every frame exactly once"
    );
    eprintln!(
        "{}: {} frames of 96 flows over {WORKERS} workers: {:?}",
        R::name(),
        sent_frames.len(),
        per_worker.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// Three workers over 3000 frames (1000 UDP flows): worker 0 is slow at first (5 ms per packet
/// for its first 40), worker 2 is dropped before any traffic. The source waits for worker 0
/// (its `full_waits` > 0) and nothing is lost: workers 0 and 1 get exactly their flows' frames,
/// in order; worker 2's share is counted as dropped; the kernel dropped nothing.
async fn fanout_slow_and_dropped_workers<R: Exec>() {
    if !can_run("fanout_slow_and_dropped_workers", &["tcpreplay", "scapy"]) {
        return;
    }
    let all = &rx_frames().frames;
    let lane = |f: &Vec<u8>| (flow_hash(f) % 3) as usize;
    let net = Arc::new(TestNet::new());
    let source = open_capture::<R>(&net)
        .packets()
        .filter_packets(|p: &OwnedPacket| is_ours(p.data()))
        .take(all.len());
    let mut parts = source.fanout(3, 8, flow_key).expect("fanout");
    drop(parts.pop()); // worker 2: gone before the traffic
    let workers: Vec<_> = parts
        .into_iter()
        .map(|mut part| {
            R::spawn(async move {
                let mut got = Vec::new();
                while let Some(p) = part.next().await {
                    got.push(wire(&p.expect("stream error")));
                    if part.index() == 0 && got.len() <= 40 {
                        R::sleep(Duration::from_millis(5)).await; // slow, holding the packet's block
                    }
                }
                (got, part.stats(), part.all_stats())
            })
        })
        .collect();
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);
    let mut results = Vec::new();
    for w in workers {
        results.push(within::<R, _>(Duration::from_secs(60), "worker", w).await);
    }
    assert_eq!(sent.await, all.len() as u64, "tcpreplay's count");
    for (w, (got, stats, _)) in results.iter().enumerate() {
        let want: Vec<Vec<u8>> = all.iter().filter(|f| lane(f) == w).cloned().collect();
        assert_frames(&format!("worker {w}"), got, &want);
        assert_eq!(stats.delivered, want.len() as u64, "worker {w}: {stats:?}");
        assert_eq!(stats.dropped, 0, "worker {w}: {stats:?}");
        assert!(stats.high_water <= 8, "worker {w}: {stats:?}");
    }
    let (_, slow, every) = &results[0];
    assert!(
        slow.full_waits > 0,
        "the source never waited for the slow worker: {slow:?}"
    );
    let gone = every[2];
    let share = all.iter().filter(|f| lane(f) == 2).count() as u64;
    assert_eq!(gone.dropped, share, "dropped worker: {gone:?}");
    assert_eq!(gone.delivered, 0);
    eprintln!("{}: workers {every:?}", R::name());
}

/// Three workers; after all 3000 frames arrived the interface is deleted: the capture's
/// `InterfaceGone` reaches every worker, after which every stream ends.
async fn fanout_error_reaches_every_worker<R: Exec>() {
    if !can_run("fanout_error_reaches_every_worker", &["tcpreplay", "scapy"]) {
        return;
    }
    let all = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let delivered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = open_capture::<R>(&net)
        .packets()
        .filter_packets(|p: &OwnedPacket| is_ours(p.data()))
        .fanout_flows(3, 64)
        .expect("fanout")
        .into_iter()
        .map(|mut part| {
            let delivered = delivered.clone();
            R::spawn(async move {
                let (mut packets, mut errors) = (0, Vec::new());
                while let Some(item) = part.next().await {
                    match item {
                        Ok(_) => {
                            packets += 1;
                            delivered.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                (packets, errors)
            })
        })
        .collect();
    assert_eq!(
        replay(&net, &net.a, &rx_frames().file, 20_000).await,
        all.len() as u64
    );
    within::<R, _>(Duration::from_secs(30), "all frames delivered", async {
        while delivered.load(Ordering::SeqCst) < all.len() {
            R::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    net.ip(&["link", "del", &net.b]);
    let mut total = 0;
    for (w, task) in workers.into_iter().enumerate() {
        let (packets, errors) = within::<R, _>(Duration::from_secs(30), "worker end", task).await;
        total += packets;
        assert_eq!(errors.len(), 1, "worker {w}: {errors:?}");
        match &errors[0] {
            Error::InterfaceGone { name, .. } => assert_eq!(name, &net.b),
            other => panic!("worker {w}: expected InterfaceGone, got {other:?}"),
        }
    }
    assert_eq!(total, all.len());
}

// ---------------------------------------------------------------------------------------------
// Buffer.

/// The capture (our frames only) through `buffer(cap, policy)` with the pump spawned; the
/// consumer reads nothing until the pump has taken the whole burst (drop policies) or has stopped
/// with a full buffer (Wait). Returns what the consumer then reads, the counters, and the kernel's
/// drop count (read from the capture the pump hands back).
async fn buffered<R: Exec>(cap: usize, policy: Policy) -> (Vec<Vec<u8>>, BufferStats, u64) {
    let all = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let source = open_capture::<R>(&net)
        .packets()
        .filter_packets(|p: &OwnedPacket| is_ours(p.data()));
    let (pump, mut rx) = source.buffer(cap, policy).expect("buffer");
    let (handle, live) = (rx.handle(), pump.source());
    let pump = R::spawn(pump);
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);
    assert_eq!(sent.await, all.len() as u64, "tcpreplay's count");
    let target = if policy == Policy::Wait {
        cap
    } else {
        all.len()
    } as u64;
    within::<R, _>(
        Duration::from_secs(30),
        "the pump taking the burst",
        async {
            while handle.stats().received < target {
                R::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let mut got = Vec::new();
    if policy == Policy::Wait {
        // Still stopped: nothing read beyond the full buffer, whatever the ring holds.
        R::sleep(Duration::from_millis(100)).await;
        let s = handle.stats();
        assert_eq!(
            (s.received, s.queued, s.full_events),
            (cap as u64, cap as u64, 1),
            "{s:?}"
        );
        while got.len() < all.len() {
            let p = within::<R, _>(STEP, "next()", rx.next()).await;
            got.push(wire(&p.expect("ended").expect("stream error")));
        }
    } else {
        while got.len() < cap {
            let p = within::<R, _>(STEP, "next()", rx.next()).await;
            got.push(wire(&p.expect("ended").expect("stream error")));
        }
    }
    assert_quiet::<R, _>(&mut rx, "buffer").await;
    let stats = rx.stats();
    // The kernel's counters while the pump runs, through its source handle.
    let running = live.with(|s| s.get_mut().get_mut().cumulative_stats().unwrap());
    let running = running.expect("the pump is running");
    assert!(running.packets >= all.len() as u64, "{running:?}");
    drop(rx); // the pump ends and hands the capture back
    let mut source = within::<R, _>(STEP, "the pump", pump).await;
    assert!(live.with(|_| ()).is_none(), "the source went back");
    let kernel = source.get_mut().get_mut().cumulative_stats().unwrap();
    assert_eq!(kernel.drops, running.drops);
    assert_eq!(stats, handle.stats(), "nothing was left to drop");
    assert_eq!(
        stats.received,
        stats.delivered
            + stats.dropped_newest
            + stats.dropped_oldest
            + stats.dropped_unread
            + stats.queued,
        "{stats:?}"
    );
    eprintln!("{}: {policy:?}: {stats:?}, kernel {kernel:?}", R::name());
    (got, stats, kernel.drops)
}

/// DropNewest: the first `cap` frames of a 3000-frame burst, exactly; 2,970 counted as dropped.
async fn buffer_drop_newest_keeps_the_first<R: Exec>() {
    if !can_run(
        "buffer_drop_newest_keeps_the_first",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let all = &rx_frames().frames;
    let (got, s, kernel_drops) = buffered::<R>(30, Policy::DropNewest).await;
    assert_frames("DropNewest", &got, &all[..30]);
    let n = all.len() as u64;
    assert_eq!(
        (s.received, s.delivered, s.dropped_newest, s.dropped_oldest),
        (n, 30, n - 30, 0)
    );
    assert_eq!((s.full_events, s.high_water, s.queued), (n - 30, 30, 0));
    assert_eq!(kernel_drops, 0);
}

/// DropOldest: the last `cap` frames of the burst, exactly.
async fn buffer_drop_oldest_keeps_the_last<R: Exec>() {
    if !can_run("buffer_drop_oldest_keeps_the_last", &["tcpreplay", "scapy"]) {
        return;
    }
    let all = &rx_frames().frames;
    let (got, s, kernel_drops) = buffered::<R>(30, Policy::DropOldest).await;
    assert_frames("DropOldest", &got, &all[all.len() - 30..]);
    let n = all.len() as u64;
    assert_eq!(
        (s.received, s.delivered, s.dropped_newest, s.dropped_oldest),
        (n, 30, 0, n - 30)
    );
    assert_eq!((s.full_events, s.high_water, s.queued), (n - 30, 30, 0));
    assert_eq!(kernel_drops, 0);
}

/// Wait: the pump stops at a full buffer (the ring holds the rest); then every frame arrives,
/// in order, none dropped anywhere.
async fn buffer_wait_loses_nothing<R: Exec>() {
    if !can_run("buffer_wait_loses_nothing", &["tcpreplay", "scapy"]) {
        return;
    }
    let all = &rx_frames().frames;
    let (got, s, kernel_drops) = buffered::<R>(16, Policy::Wait).await;
    assert_frames("Wait", &got, all);
    let n = all.len() as u64;
    assert_eq!((s.received, s.delivered, s.dropped()), (n, n, 0), "{s:?}");
    assert!(s.full_events >= 1 && s.high_water == 16, "{s:?}");
    assert_eq!(kernel_drops, 0);
}

// ---------------------------------------------------------------------------------------------
// AF_XDP.

/// AF_XDP on `net.b`: `filter_batches` over the socket (borrowed), then `frames()` ->
/// `filter_packets` -> `fanout_flows(2)` with two spawned workers; each time tcpreplay sends the
/// 3000 frames and exactly the selected ones come out (in order for the batch filter; each
/// worker in order and with its flows' frames for the fanout).
async fn xdp_filters_and_fanout<R: Exec>() {
    if !can_run("xdp_filters_and_fanout", &["tcpreplay", "scapy", "taskset"]) {
        return;
    }
    let all = &rx_frames().frames;
    let want: Vec<Vec<u8>> = all.iter().filter(|f| selected(f)).cloned().collect();
    let net = Arc::new(TestNet::new());
    let mut xsk: AsyncXdpSocket<R> = net
        .within(|| {
            XdpSocket::builder(&net.b)
                .frame_count(2048)
                .rx_frames(1536)
                .ring_size(2048)
                .open_async::<R>()
        })
        .expect("open_async");

    // Batches, filtered.
    let sent = replay(&net, &net.a, &rx_frames().file, 6000);
    let mut got = Vec::with_capacity(want.len());
    {
        let mut batches = (&mut xsk).filter_batches(|p| selected(p.data()));
        while got.len() < want.len() {
            let batch = within::<R, _>(STEP, "next()", batches.next())
                .await
                .expect("never ends")
                .expect("stream error");
            got.extend(batch.iter().map(|p| p.data().to_vec()));
        }
        assert_eq!(sent.await, all.len() as u64);
        assert_quiet::<R, _>(&mut batches, "xdp filter_batches").await;
    }
    assert_frames("xdp filter_batches", &got, &want);

    // Frames, filtered, fanned out.
    let source = xsk
        .frames()
        .filter_packets(|f| selected(f.data()))
        .take(want.len());
    let workers: Vec<_> = source
        .fanout_flows(2, 64)
        .expect("fanout")
        .into_iter()
        .map(|mut part| {
            R::spawn(async move {
                let mut got = Vec::new();
                while let Some(f) = part.next().await {
                    got.push(f.expect("stream error").data().to_vec()); // frame recycled here
                }
                got
            })
        })
        .collect();
    let sent = replay(&net, &net.a, &rx_frames().file, 6000);
    let mut per_worker = Vec::new();
    for w in workers {
        per_worker.push(within::<R, _>(Duration::from_secs(60), "worker", w).await);
    }
    assert_eq!(sent.await, all.len() as u64);
    for (w, got) in per_worker.iter().enumerate() {
        let mine: Vec<Vec<u8>> = want
            .iter()
            .filter(|f| flow_hash(f) % 2 == w as u64)
            .cloned()
            .collect();
        assert!(!mine.is_empty());
        assert_frames(&format!("xdp worker {w}"), got, &mine);
    }
    eprintln!(
        "{}: xdp: {} filtered, fanout {:?}",
        R::name(),
        got.len(),
        per_worker.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// TX.

/// Capture on one test network (tcpreplay in), `filter_packets` -> `take` -> `fanout_flows(2)`,
/// each part `forward`ed as `OwnedPacket`s (no copy) into its own `AsyncInjector` (16 slots) on a
/// second test network whose link is throttled to 20 Mbit/s; tcpdump on its peer. The injectors'
/// `poll_ready` waits, the fanout waits for them, the capture ring absorbs: tcpdump sees every
/// selected frame (as the capture delivered it: outer tag stripped), byte for byte, each part's
/// frames in its order, and nothing is dropped on the way out.
async fn forward_through_combinators_to_a_throttled_link<R: Exec>() {
    if !can_run(
        "forward_through_combinators_to_a_throttled_link",
        &["tcpreplay", "scapy", "tcpdump", "tc"],
    ) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let all = &rx_frames().frames;
    let want: Vec<Vec<u8>> = all
        .iter()
        .filter(|f| selected(f))
        .map(|f| stripped(f))
        .collect();
    let net = Arc::new(TestNet::new());
    let out = TestNet::new();
    throttle(&out, &out.a, "20mbit");
    let dump = Tcpdump::start(&out, &out.b, &scratch("combinators-forward.pcap"));
    let injector = || {
        out.within(|| Injector::builder(&out.a).frame_count(16).open_async::<R>())
            .expect("open_async")
    };
    let (mut tx0, mut tx1) = (injector(), injector());
    let mut parts = open_capture::<R>(&net)
        .packets()
        .filter_packets(|p: &OwnedPacket| selected(p.data()))
        .take(want.len())
        .fanout_flows(2, 32)
        .expect("fanout");
    let (part1, part0) = (parts.pop().unwrap(), parts.pop().unwrap());
    let (mut probe0, mut probe1) = (Probe::logging(&mut tx0), Probe::logging(&mut tx1));
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);
    let (r0, r1) = within::<R, _>(
        Duration::from_secs(90),
        "forward",
        join(part0.forward(&mut probe0), part1.forward(&mut probe1)),
    )
    .await;
    r0.expect("forward 0");
    r1.expect("forward 1");
    assert_eq!(sent.await, all.len() as u64);
    let waits = probe0.ready_pending + probe1.ready_pending;
    let logs = [probe0.log.take().unwrap(), probe1.log.take().unwrap()];
    assert_eq!(logs[0].len() + logs[1].len(), want.len());
    assert!(!logs[0].is_empty() && !logs[1].is_empty());

    let records = dump.wait_for_records(want.len(), Duration::from_secs(30));
    let file = dump.file.clone();
    let stats = dump.stop();
    assert_eq!(
        records,
        want.len(),
        "tcpdump recorded {records} ({stats:?})"
    );
    let got = read_pcap(&file);
    assert!(
        sorted(got.clone()) == sorted(want.clone()),
        "tcpdump saw other frames than were selected"
    );
    for (i, log) in logs.iter().enumerate() {
        let mine: BTreeSet<&Vec<u8>> = log.iter().collect();
        let seen: Vec<Vec<u8>> = got.iter().filter(|f| mine.contains(f)).cloned().collect();
        assert_frames(&format!("part {i} on the wire"), &seen, log);
        assert_subsequence(&format!("part {i}"), log, &want);
    }
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_eq!(
        link_stat(&out, &out.a, "tx_dropped"),
        0,
        "out.a dropped frames"
    );
    assert!(waits > 0, "poll_ready never waited on a throttled link");
    eprintln!(
        "{}: {} frames forwarded in parts of {} and {}, poll_ready waited {waits} times",
        R::name(),
        want.len(),
        logs[0].len(),
        logs[1].len()
    );
}
