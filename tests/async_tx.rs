//! Async transmit, under tokio current-thread, tokio multi-thread and smol: frames go out
//! through `AsyncInjector` on `net.a` (as a `Sink` with `send_all` and `forward`, and through the
//! async reserve/commit path), tcpdump on the peer `net.b` captures them, and they are compared
//! byte for byte and in order. A small ring fed far faster than the link drains waits instead of
//! failing or losing frames.
//!
//! The sending thread is pinned to one CPU while a scenario runs: a veth hands each frame to the
//! backlog of the CPU that transmits it, and two CPUs' backlogs drain in parallel, so frames sent
//! from a thread that migrates (or dequeued by a qdisc timer on another CPU) can reach the peer
//! out of order. (Seen with the throttled link under tokio multi-thread before pinning: single
//! adjacent swaps, every frame still there exactly once.) The scenarios do not spawn tasks, so all
//! sending happens on the pinned thread that runs `block_on`.
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`); without them this file
//! compiles to nothing.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream};
use netring::{AsyncInjector, Error, Injector};

crate::on_each_runtime!(
    send_all_from_a_stream,
    forward_a_stream,
    reserve_and_commit_in_place,
    backpressure_on_a_throttled_link,
    backpressure_on_a_plain_veth,
);

/// `n` frames of `lo..=hi` bytes, some VLAN-tagged (see `frames::frame_specs`).
fn frames(n: usize, lo: usize, hi: usize, seed: u64) -> Vec<Vec<u8>> {
    frame_specs(n, lo, hi, seed)
        .iter()
        .map(FrameSpec::build)
        .collect()
}

fn open<R: Exec>(net: &TestNet, frame_count: usize) -> AsyncInjector<R> {
    net.within(|| {
        Injector::builder(&net.a)
            .frame_count(frame_count)
            .open_async()
    })
    .expect("open_async")
}

/// Waits until tcpdump has `want.len()` records, stops it, and compares. Returns its statistics.
fn tcpdump_saw(dump: Tcpdump, want: &[Vec<u8>], what: &str) -> TcpdumpStats {
    let records = dump.wait_for_records(want.len(), Duration::from_secs(30));
    let file = dump.file.clone();
    let stats = dump.stop();
    let got = read_pcap(&file);
    assert_eq!(
        records,
        want.len(),
        "{what}: tcpdump recorded {records} of {} frames ({stats:?})",
        want.len()
    );
    assert_frames(what, &got, want);
    assert_eq!(stats.dropped_by_kernel, 0, "{what}: {stats:?}");
    assert_eq!(stats.captured, want.len() as u64, "{what}: {stats:?}");
    stats
}

/// `SinkExt::send_all` with a stream of `Vec<u8>`, then `SinkExt::close`.
async fn send_all_from_a_stream<R: Exec>() {
    if !can_run("send_all_from_a_stream", &["tcpdump"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let want = frames(2000, 60, 1514, 21);
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("send_all.pcap"));
    let mut tx = open::<R>(&net, 64);
    let mut items = stream::iter(want.clone()).map(Ok);
    within::<R, _>(Duration::from_secs(30), "send_all", tx.send_all(&mut items))
        .await
        .expect("send_all");
    within::<R, _>(
        Duration::from_secs(10),
        "close",
        SinkExt::<Vec<u8>>::close(&mut tx),
    )
    .await
    .expect("close");
    assert_eq!(tx.get_ref().in_flight(), 0);
    tcpdump_saw(dump, &want, "send_all");
}

/// `StreamExt::forward` of a stream of `Bytes` into `&mut AsyncInjector` (which closes it).
async fn forward_a_stream<R: Exec>() {
    if !can_run("forward_a_stream", &["tcpdump"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let want = frames(2000, 60, 1514, 22);
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("forward.pcap"));
    let mut tx = open::<R>(&net, 32);
    let items = stream::iter(want.clone()).map(|f| Ok::<_, Error>(Bytes::from(f)));
    within::<R, _>(Duration::from_secs(30), "forward", items.forward(&mut tx))
        .await
        .expect("forward");
    assert_eq!(
        tx.get_ref().in_flight(),
        0,
        "forward closes (flushes) the sink"
    );
    tcpdump_saw(dump, &want, "forward");
}

/// `reserve(len).await`, write the frame in place, `commit()`; `flush().await` at the end and
/// every 100 frames.
async fn reserve_and_commit_in_place<R: Exec>() {
    if !can_run("reserve_and_commit_in_place", &["tcpdump"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let specs = frame_specs(2000, 60, 1514, 23);
    let want: Vec<Vec<u8>> = specs.iter().map(FrameSpec::build).collect();
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("reserve.pcap"));
    let mut tx = open::<R>(&net, 16);
    for (i, spec) in specs.iter().enumerate() {
        let mut slot = within::<R, _>(Duration::from_secs(10), "reserve", tx.reserve(spec.len))
            .await
            .expect("reserve");
        spec.fill(slot.data_mut());
        slot.commit();
        if i % 100 == 99 {
            within::<R, _>(Duration::from_secs(10), "flush", tx.flush())
                .await
                .expect("flush");
        }
    }
    within::<R, _>(Duration::from_secs(10), "flush", tx.flush())
        .await
        .expect("flush");
    assert_eq!(tx.get_ref().in_flight(), 0);
    tcpdump_saw(dump, &want, "reserve/commit");
}

/// 50 000 frames through a 16-slot ring with `send_all`: never an error, nothing lost, in order.
/// Returns how often `poll_ready` had to wait.
async fn backpressure<R: Exec>(net: &TestNet, what: &str) -> u64 {
    const N: usize = 50_000;
    // Small frames, so tcpdump's 16 MiB buffer holds all of them even if it fell behind.
    let want = frames(N, 60, 124, 24);
    let dump = Tcpdump::start(net, &net.b, &scratch("backpressure.pcap"));
    let mut tx = open::<R>(net, 16);
    assert_eq!(tx.get_ref().frame_count(), 16);
    let started = std::time::Instant::now();
    let mut probe = Probe::new(&mut tx);
    let mut items = stream::iter(want.iter().map(|f| Ok(&f[..])));
    within::<R, _>(
        Duration::from_secs(120),
        "send_all",
        probe.send_all(&mut items),
    )
    .await
    .expect("send_all never fails under backpressure");
    within::<R, _>(
        Duration::from_secs(30),
        "close",
        SinkExt::<&[u8]>::close(&mut probe),
    )
    .await
    .expect("close");
    let waits = probe.ready_pending;
    assert_eq!(probe.accepted, N as u64);
    let elapsed = started.elapsed();
    let stats = tcpdump_saw(dump, &want, what);
    // A frame the peer could not queue (softnet backlog full) counts as a TX drop on `net.a`.
    let tx_dropped = link_stat(net, &net.a, "tx_dropped");
    assert_eq!(tx_dropped, 0, "net.a dropped frames");
    // `net.b` counts every tagged frame as an RX drop *after* handing it to tcpdump: no protocol
    // (and no VLAN device) takes it. Exactly those, and nothing else.
    let tagged = want.iter().filter(|f| wire_tag(f).is_some()).count() as u64;
    let rx_dropped = link_stat(net, &net.b, "rx_dropped");
    assert_eq!(
        rx_dropped, tagged,
        "net.b rx_dropped besides the {tagged} tagged frames"
    );
    eprintln!(
        "{}: {what}: {N} frames through 16 slots in {elapsed:.2?}, poll_ready waited {waits} \
         times; tcpdump {stats:?}; net.a tx_dropped 0",
        R::name()
    );
    waits
}

/// The link (a token bucket at 20 Mbit/s on `net.a`) drains far slower than the ring fills:
/// `poll_ready` must wait, and every frame still arrives.
async fn backpressure_on_a_throttled_link<R: Exec>() {
    if !can_run("backpressure_on_a_throttled_link", &["tcpdump", "tc"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let net = TestNet::new();
    throttle(&net, &net.a, "20mbit");
    let waits = backpressure::<R>(&net, "throttled link").await;
    assert!(waits > 0, "poll_ready never waited on a throttled link");
}

/// The same on a plain veth (no qdisc; the peer usually takes frames as fast as they come, but
/// the ring still fills whenever the receive side lags).
async fn backpressure_on_a_plain_veth<R: Exec>() {
    if !can_run("backpressure_on_a_plain_veth", &["tcpdump"]) {
        return;
    }
    let _pinned = pin_to_one_cpu();
    let net = TestNet::new();
    backpressure::<R>(&net, "plain veth").await;
}
