//! Cancel safety, under tokio current-thread, tokio multi-thread and smol.
//!
//! RX: while tcpreplay traffic arrives, `next()` futures are dropped while pending, again and
//! again (polled once, or raced against a short timer that wins), for both `AsyncCapture` and
//! `PacketStream`: every frame still arrives exactly once, in order.
//!
//! TX: on a throttled link (so the 8-slot ring really is full at times), `SinkExt::send` futures
//! are polled once and dropped, or raced against a short timer, and `reserve()` futures likewise.
//! A `Probe` around the sink records which frames `start_send` accepted (committed to the ring);
//! tcpdump on the peer must see exactly those, each once, in order: a frame committed before its
//! future was dropped leaves exactly once, and a frame whose `poll_ready` never completed never
//! leaves.
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`); without them this file
//! compiles to nothing.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::{Either, select};
use futures::{SinkExt, StreamExt};
use netring::{AsyncCapture, Batch, Capture, Injector, OwnedPacket, PacketStream};

crate::on_each_runtime!(
    dropped_next_batch_loses_nothing,
    dropped_next_packet_loses_nothing,
    dropped_send_sends_nothing_twice,
);

const STEP: Duration = Duration::from_secs(10);

/// How a pending future was abandoned.
#[derive(Debug, Default)]
struct Cancels {
    /// Polled exactly once, `Pending`, dropped.
    polled_once: u64,
    /// Raced against a timer that won, dropped.
    timer_won: u64,
}

/// Polls `fut` once (with the task's context) and hands back the result; the future is dropped.
async fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut fut = pin!(fut);
    futures::poll!(fut.as_mut())
}

/// `fut` unless a timer of `d` fires first; the loser is dropped.
async fn race<R: Exec, F: Future>(fut: F, d: Duration) -> Option<F::Output> {
    match select(pin!(fut), pin!(R::sleep(d))).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Something with a cancel-safe "next item" future.
trait Source {
    type Item;
    /// The next item; `alt` picks the other way of asking, where there is one.
    fn next_item(
        &mut self,
        alt: bool,
    ) -> impl Future<Output = Option<netring::Result<Self::Item>>> + '_;
}

impl<R: Exec> Source for AsyncCapture<R> {
    type Item = Batch;
    fn next_item(
        &mut self,
        alt: bool,
    ) -> impl Future<Output = Option<netring::Result<Batch>>> + '_ {
        if alt {
            Either::Left(self.next_batch())
        } else {
            Either::Right(self.next())
        }
    }
}

impl<R: Exec> Source for PacketStream<R> {
    type Item = OwnedPacket;
    fn next_item(
        &mut self,
        _: bool,
    ) -> impl Future<Output = Option<netring::Result<OwnedPacket>>> + '_ {
        self.next()
    }
}

/// Abandons pending `next()` futures in two ways (polled once; beaten by a timer), rotating,
/// until one yields; returns that item.
async fn next_with_cancels<R: Exec, S: Source>(
    src: &mut S,
    alt: bool,
    round: &mut u64,
    rng: &mut Rng,
    cancels: &mut Cancels,
) -> S::Item {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no item within {STEP:?}"
        );
        *round += 1;
        let item = if *round % 3 == 0 {
            match poll_once(src.next_item(alt)).await {
                Poll::Ready(v) => Some(v),
                Poll::Pending => {
                    cancels.polled_once += 1;
                    // Let some traffic come before asking again.
                    R::sleep(Duration::from_micros(rng.range(0, 1500) as u64)).await;
                    None
                }
            }
        } else {
            let d = Duration::from_micros(rng.range(50, 2000) as u64);
            match race::<R, _>(src.next_item(alt), d).await {
                Some(v) => Some(v),
                None => {
                    cancels.timer_won += 1;
                    None
                }
            }
        };
        if let Some(v) = item {
            return v.expect("stream ended").expect("stream error");
        }
    }
}

/// `AsyncCapture`: `StreamExt::next` and `next_batch` futures dropped while pending.
async fn dropped_next_batch_loses_nothing<R: Exec>() {
    if !can_run("dropped_next_batch_loses_nothing", &["tcpreplay", "scapy"]) {
        return;
    }
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    // Slow enough that most blocks retire by timeout: many waits, many chances to cancel.
    let sent = replay(&net, &net.a, &rx_frames().file, 5_000);
    let (mut round, mut rng, mut cancels) = (0u64, Rng::new(31), Cancels::default());
    let mut got = Vec::new();
    let mut last_seq = None;
    while got.len() < want.len() {
        // Alternate `StreamExt::next` and `next_batch`.
        let alt = round % 2 == 1;
        let batch =
            next_with_cancels::<R, _>(&mut rx, alt, &mut round, &mut rng, &mut cancels).await;
        if let Some(last) = last_seq {
            assert_eq!(batch.seq(), last + 1, "batch sequence numbers");
        }
        last_seq = Some(batch.seq());
        got.extend(
            batch
                .iter()
                .filter(|p| is_ours(p.data()))
                .map(|p| with_tag(p.data(), p.vlan())),
        );
    }
    assert_eq!(sent.await, want.len() as u64);
    // Nothing more of ours.
    R::sleep(Duration::from_millis(50)).await;
    while let Some(item) = timeout::<R, _>(Duration::from_millis(200), rx.next()).await {
        let batch = item.expect("stream ended").expect("stream error");
        assert_eq!(batch.iter().filter(|p| is_ours(p.data())).count(), 0);
    }
    assert_frames("batches with cancelled next()", &got, want);
    let stats = rx.cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
    assert!(
        cancels.polled_once > 0 && cancels.timer_won > 0,
        "too few cancellations to mean anything: {cancels:?}"
    );
    eprintln!(
        "{}: {} frames in order; pending next() dropped {cancels:?}",
        R::name(),
        got.len()
    );
}

/// `PacketStream`: `next()` futures dropped while pending, including in the middle of a batch
/// (the stream keeps its place in the batch).
async fn dropped_next_packet_loses_nothing<R: Exec>() {
    if !can_run("dropped_next_packet_loses_nothing", &["tcpreplay", "scapy"]) {
        return;
    }
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut pkts = net
        .within(|| Capture::builder(&net.b).open_async::<R>())
        .expect("open_async")
        .packets();
    let sent = replay(&net, &net.a, &rx_frames().file, 5_000);
    let (mut round, mut rng, mut cancels) = (0u64, Rng::new(32), Cancels::default());
    let mut got = Vec::new();
    while got.len() < want.len() {
        let pkt =
            next_with_cancels::<R, _>(&mut pkts, false, &mut round, &mut rng, &mut cancels).await;
        if is_ours(pkt.data()) {
            got.push(with_tag(pkt.data(), pkt.vlan()));
        }
    }
    assert_eq!(sent.await, want.len() as u64);
    R::sleep(Duration::from_millis(50)).await;
    while let Some(item) = timeout::<R, _>(Duration::from_millis(200), pkts.next()).await {
        let pkt = item.expect("stream ended").expect("stream error");
        assert!(!is_ours(pkt.data()), "a frame arrived twice");
    }
    assert_frames("packets with cancelled next()", &got, want);
    let stats = pkts.get_mut().cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
    assert!(
        cancels.polled_once > 0 && cancels.timer_won > 0,
        "too few cancellations to mean anything: {cancels:?}"
    );
    eprintln!(
        "{}: {} packets in order; pending next() dropped {cancels:?}",
        R::name(),
        got.len()
    );
}

/// What became of each TX attempt.
#[derive(Debug, Default)]
struct TxOutcomes {
    /// The future completed (frame committed and flushed).
    completed: u64,
    /// Dropped while pending after `start_send` accepted the frame (it must leave, once).
    dropped_after_commit: u64,
    /// Dropped while `poll_ready` was pending (it must never leave).
    dropped_before_commit: u64,
    /// A `reserve()` dropped while pending (nothing queued).
    reserve_dropped: u64,
    /// A `reserve()` that completed; the frame was written in place and committed.
    reserve_committed: u64,
}

/// Sends 1500 frames through an 8-slot ring on a link throttled to 2 Mbit/s, abandoning most
/// `send()` / `reserve()` futures while pending. tcpdump on the peer sees exactly the frames the
/// ring accepted, each once, in order.
async fn dropped_send_sends_nothing_twice<R: Exec>() {
    if !can_run("dropped_send_sends_nothing_twice", &["tcpdump", "tc"]) {
        return;
    }
    // See async_tx.rs: frames sent from one CPU reach the peer in order.
    let _pinned = pin_to_one_cpu();
    let specs = frame_specs(1500, 60, 300, 41);
    let net = TestNet::new();
    throttle(&net, &net.a, "2mbit");
    let dump = Tcpdump::start(&net, &net.b, &scratch("cancel-send.pcap"));
    let mut tx = net
        .within(|| Injector::builder(&net.a).frame_count(8).open_async::<R>())
        .expect("open_async");
    assert_eq!(tx.get_ref().frame_count(), 8);
    let mut probe = Probe::logging(&mut tx);
    let mut rng = Rng::new(42);
    let mut out = TxOutcomes::default();
    let started = std::time::Instant::now();
    for (i, spec) in specs.iter().enumerate() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the loop is stuck"
        );
        let frame = spec.build();
        let before = probe.accepted;
        let classify = |done: bool, probe_accepted: u64, out: &mut TxOutcomes| {
            if done {
                out.completed += 1;
            } else if probe_accepted > before {
                out.dropped_after_commit += 1;
            } else {
                out.dropped_before_commit += 1;
            }
        };
        match i % 20 {
            // Bursts of poll-once-then-drop: the ring fills, then poll_ready is pending.
            0..10 => {
                let done = match poll_once(probe.send(frame)).await {
                    Poll::Ready(r) => {
                        r.expect("send");
                        true
                    }
                    Poll::Pending => false,
                };
                classify(done, probe.accepted, &mut out);
            }
            // Raced against a short timer.
            13..17 => {
                let d = Duration::from_micros(rng.range(100, 3000) as u64);
                let done = match race::<R, _>(probe.send(frame), d).await {
                    Some(r) => {
                        r.expect("send");
                        true
                    }
                    None => false,
                };
                classify(done, probe.accepted, &mut out);
            }
            // The async in-place path, while the ring is full: polled once, or raced against a
            // short timer.
            10..13 => {
                let reserve = probe.inner.reserve(spec.len);
                let slot = if i % 20 < 12 {
                    match poll_once(reserve).await {
                        Poll::Ready(slot) => Some(slot),
                        Poll::Pending => None,
                    }
                } else {
                    let d = Duration::from_micros(rng.range(50, 1500) as u64);
                    race::<R, _>(reserve, d).await
                };
                let committed = match slot {
                    Some(slot) => {
                        let mut slot = slot.expect("reserve");
                        spec.fill(slot.data_mut());
                        slot.commit();
                        true
                    }
                    None => false,
                };
                if committed {
                    out.reserve_committed += 1;
                    probe.accepted += 1;
                    probe.log.as_mut().unwrap().push(frame);
                } else {
                    out.reserve_dropped += 1;
                }
            }
            // Sent to completion (the ring drains).
            _ => {
                within::<R, _>(STEP, "send", probe.send(frame))
                    .await
                    .expect("send");
                classify(true, probe.accepted, &mut out);
            }
        }
    }
    within::<R, _>(STEP, "final flush", probe.inner.flush())
        .await
        .expect("flush");
    assert_eq!(probe.inner.get_ref().in_flight(), 0);
    let accepted = probe.log.take().unwrap();
    assert_eq!(accepted.len() as u64, probe.accepted);

    // Everything accepted has left; give anything extra a moment to show up too.
    let records = dump.wait_for_records(accepted.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let file = dump.file.clone();
    let stats = dump.stop();
    let got = read_pcap(&file);
    assert!(records >= accepted.len(), "tcpdump saw {records} frames");
    assert_eq!(stats.dropped_by_kernel, 0, "{stats:?}");
    assert_frames("frames on the wire vs frames accepted", &got, &accepted);
    eprintln!(
        "{}: {} of {} frames accepted and seen once each; {out:?}",
        R::name(),
        accepted.len(),
        specs.len()
    );
    assert!(
        out.dropped_after_commit > 0 && out.dropped_before_commit > 0 && out.reserve_dropped > 0,
        "the interesting cancellations did not all happen: {out:?}"
    );
}
