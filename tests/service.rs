//! Driving a `tower::Service` with captured packets (`ServeExt::serve`), under tokio
//! current-thread, tokio multi-thread and smol: scapy-made frames replayed by tcpreplay into
//! `net.a`, captured on `net.b`, each handed to a service. Every packet is served exactly once
//! or dropped by the kernel (counted in the capture's statistics) when the service is too slow:
//! nothing is lost inside the adapter, and the service's own concurrency limit holds.
//!
//! Needs the `tokio`, `smol` and `tower` features (`cargo test --all-features`).
#![cfg(all(feature = "tokio", feature = "smol", feature = "tower"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use netring::service::ServeExt;
use netring::{AsyncCapture, Capture, CaptureBuilder, OwnedPacket, Stats};
use tower::{BoxError, ServiceBuilder, service_fn};

crate::on_each_runtime!(
    every_packet_served_once_when_the_service_keeps_up,
    ordered_responses_follow_the_packets,
    slow_service_backpressure_reaches_the_ring,
    service_errors_are_items,
);

/// The index scapy wrote after the marker, if the frame is one of ours.
fn index_of(data: &[u8]) -> Option<u32> {
    let at = data.windows(3).position(|w| w == MARKER)? + 3;
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Counts calls running at once and the most ever seen.
#[derive(Clone, Default)]
struct Concurrency {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

struct Running(Arc<AtomicUsize>);

impl Concurrency {
    fn enter(&self) -> Running {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        Running(self.now.clone())
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A capture on `net.b` (ours only) and tcpreplay sending `rx_frames()` into `net.a` at `pps`.
fn capture_and_replay<R: Exec>(
    net: &Arc<TestNet>,
    builder: impl FnOnce(CaptureBuilder) -> CaptureBuilder,
    pps: u32,
) -> (
    impl Stream<Item = netring::Result<OwnedPacket>> + Unpin + HasCapture<R>,
    impl Future<Output = u64>,
) {
    let rx: AsyncCapture<R> = net
        .within(|| builder(Capture::builder(&net.b)).open_async())
        .expect("open_async");
    let sent = replay(net, &net.a, &rx_frames().file, pps);
    (Ours(rx.packets()), sent)
}

/// Our frames only, with access to the capture's statistics.
struct Ours<R: netring::runtime::Runtime>(netring::PacketStream<R>);

trait HasCapture<R: netring::runtime::Runtime> {
    fn stats(&mut self) -> Stats;
}

impl<R: netring::runtime::Runtime> HasCapture<R> for Ours<R> {
    fn stats(&mut self) -> Stats {
        self.0.get_mut().cumulative_stats().expect("stats")
    }
}

impl<R: netring::runtime::Runtime> Stream for Ours<R> {
    type Item = netring::Result<OwnedPacket>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.0.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(p))) if !is_ours(p.data()) => continue,
                other => return other,
            }
        }
    }
}

/// Collects responses until `n` came, or (once `replay` is done) none came for a second.
async fn collect<R: Exec, T>(
    responses: &mut (impl Stream<Item = T> + Unpin),
    n: usize,
    replay: impl Future<Output = u64>,
) -> Vec<T> {
    let mut got = Vec::new();
    let mut replay = std::pin::pin!(replay);
    let mut sent = None;
    while got.len() < n {
        let wait = if sent.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(100)
        };
        match timeout::<R, _>(wait, responses.next()).await {
            Some(Some(r)) => got.push(r),
            Some(None) => panic!("the response stream ended while the capture is open"),
            None if sent.is_some() => break,
            None => {}
        }
        if sent.is_none() {
            sent = futures::FutureExt::now_or_never(replay.as_mut());
        }
    }
    if sent.is_none() {
        sent = Some(replay.await);
    }
    assert_eq!(
        sent,
        Some(rx_frames().frames.len() as u64),
        "tcpreplay's count"
    );
    got
}

/// Sorted indices with no duplicate.
fn once_each(mut indices: Vec<u32>) -> Vec<u32> {
    indices.sort_unstable();
    let before = indices.len();
    indices.dedup();
    assert_eq!(before, indices.len(), "a packet was served twice");
    indices
}

/// A quick service (limited to 8 calls at once by tower's `ConcurrencyLimit`, 32 in flight
/// allowed here): all 3000 packets served exactly once, no kernel drops.
async fn every_packet_served_once_when_the_service_keeps_up<R: Exec>() {
    if !can_run(
        "every_packet_served_once_when_the_service_keeps_up",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let n = rx_frames().frames.len();
    let net = Arc::new(TestNet::new());
    let (packets, sent) = capture_and_replay::<R>(&net, |b| b, 20_000);
    let running = Concurrency::default();
    let r = running.clone();
    let svc = ServiceBuilder::new()
        .concurrency_limit(8)
        .service(service_fn(move |p: OwnedPacket| {
            let guard = r.enter();
            async move {
                R::sleep(Duration::from_micros(50)).await;
                drop(guard);
                Ok::<_, BoxError>(index_of(p.data()).expect("marked"))
            }
        }));
    let mut responses = packets.serve(svc, 32);
    assert_eq!(responses.max_in_flight(), 32);
    let got = collect::<R, _>(&mut responses, n, sent).await;
    let got: Vec<u32> = got.into_iter().map(|r| r.expect("served")).collect();
    assert_eq!(once_each(got), (0..n as u32).collect::<Vec<_>>());
    let stats = responses.get_mut().stats();
    assert_eq!(stats.drops, 0, "{stats:?}");
    assert!(running.max() <= 8, "{} calls at once", running.max());
    assert_eq!(responses.in_flight(), 0);
    eprintln!(
        "{}: {n} served, at most {} at once, {stats:?}",
        R::name(),
        running.max()
    );
}

/// `serve_ordered`: calls finishing out of order (sleeps of 0 to 3 ms), responses in packet
/// order; every packet served once or counted as a kernel drop.
async fn ordered_responses_follow_the_packets<R: Exec>() {
    if !can_run(
        "ordered_responses_follow_the_packets",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let n = rx_frames().frames.len();
    let net = Arc::new(TestNet::new());
    let (packets, sent) = capture_and_replay::<R>(&net, |b| b, 5_000);
    let running = Concurrency::default();
    let r = running.clone();
    let svc = service_fn(move |p: OwnedPacket| {
        let guard = r.enter();
        let i = index_of(p.data()).expect("marked");
        async move {
            R::sleep(Duration::from_micros(u64::from((i * 7919) % 4) * 1000)).await;
            drop(guard);
            Ok::<_, BoxError>(i)
        }
    });
    let mut responses = packets.serve_ordered(svc, 16);
    let got = collect::<R, _>(&mut responses, n, sent).await;
    let got: Vec<u32> = got.into_iter().map(|r| r.expect("served")).collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "responses out of packet order"
    );
    let stats = responses.get_mut().stats();
    assert_eq!(got.len() as u64 + stats.drops, n as u64, "{stats:?}");
    assert!(running.max() <= 16, "{} calls at once", running.max());
    assert!(running.max() > 1, "calls never overlapped");
    eprintln!(
        "{}: {} served in order, {} dropped by the kernel, at most {} at once",
        R::name(),
        got.len(),
        stats.drops,
        running.max()
    );
}

/// A slow service (2 calls at once, 5 ms each) behind a small ring (4 blocks of 64 KiB): the
/// adapter stops taking packets, the ring fills, and the kernel drops and counts the rest. Every
/// packet is served exactly once or counted as dropped; none disappears in between.
async fn slow_service_backpressure_reaches_the_ring<R: Exec>() {
    if !can_run(
        "slow_service_backpressure_reaches_the_ring",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let n = rx_frames().frames.len();
    let net = Arc::new(TestNet::new());
    let (packets, sent) =
        capture_and_replay::<R>(&net, |b| b.block_size(1 << 16).block_count(4), 20_000);
    let running = Concurrency::default();
    let r = running.clone();
    let svc = ServiceBuilder::new()
        .concurrency_limit(2)
        .service(service_fn(move |p: OwnedPacket| {
            let guard = r.enter();
            async move {
                R::sleep(Duration::from_millis(5)).await;
                drop(guard);
                Ok::<_, BoxError>(index_of(p.data()).expect("marked"))
            }
        }));
    // Far more in flight allowed than the service takes: its poll_ready is what holds back.
    let mut responses = packets.serve(svc, 1000);
    let got = collect::<R, _>(&mut responses, n, sent).await;
    let served = once_each(got.into_iter().map(|r| r.expect("served")).collect());
    let stats = responses.get_mut().stats();
    assert!(stats.drops > 0, "the ring never overflowed: {stats:?}");
    assert_eq!(
        served.len() as u64 + stats.drops,
        n as u64,
        "served {} + dropped by the kernel {} != sent {n}",
        served.len(),
        stats.drops
    );
    assert_eq!(running.max(), 2, "the service's limit");
    eprintln!(
        "{}: {} served, {} dropped by the kernel (ring full), {stats:?}",
        R::name(),
        served.len(),
        stats.drops
    );
}

/// Calls failing for every tenth packet: each failure is one item and the stream goes on.
async fn service_errors_are_items<R: Exec>() {
    if !can_run("service_errors_are_items", &["tcpreplay", "scapy"]) {
        return;
    }
    let n = rx_frames().frames.len();
    let net = Arc::new(TestNet::new());
    let (packets, sent) = capture_and_replay::<R>(&net, |b| b, 20_000);
    let svc = service_fn(|p: OwnedPacket| async move {
        let i = index_of(p.data()).expect("marked");
        if i % 10 == 3 {
            Err(BoxError::from(format!("packet {i} refused")))
        } else {
            Ok(i)
        }
    });
    let mut responses = packets.serve(svc, 8);
    let got = collect::<R, _>(&mut responses, n, sent).await;
    assert_eq!(got.len(), n);
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for r in got {
        match r {
            Ok(i) => ok.push(i),
            Err(e) => refused.push(
                e.to_string()
                    .strip_prefix("packet ")
                    .and_then(|s| s.strip_suffix(" refused"))
                    .and_then(|s| s.parse::<u32>().ok())
                    .expect("our error"),
            ),
        }
    }
    let ok = once_each(ok);
    let refused = once_each(refused);
    assert!(ok.iter().all(|i| i % 10 != 3));
    assert!(refused.iter().all(|i| i % 10 == 3));
    assert_eq!(ok.len() + refused.len(), n);
    assert_eq!(refused.len(), n / 10);
    let stats = responses.get_mut().stats();
    assert_eq!(stats.drops, 0, "{stats:?}");
}

// --- Without traffic: readiness errors and the end of the stream ---------------------------------

/// Ready for `ok` calls, then broken.
struct Breaks {
    ok: usize,
    ready_polls_after_break: usize,
}

impl tower::Service<u32> for Breaks {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ok == 0 {
            self.ready_polls_after_break += 1;
            return Poll::Ready(Err("broken".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, i: u32) -> Self::Future {
        self.ok -= 1;
        std::future::ready(Ok(i))
    }
}

#[test]
fn a_poll_ready_error_ends_the_intake() {
    let packets = stream::iter((0..100u32).map(Ok::<_, BoxError>));
    let mut s = packets.serve_ordered(
        Breaks {
            ok: 5,
            ready_polls_after_break: 0,
        },
        3,
    );
    let got: Vec<Result<u32, String>> =
        futures::executor::block_on((&mut s).map(|r| r.map_err(|e| e.to_string())).collect());
    // Three in flight at a time: 0..3 are answered, 3 and 4 are called, the next poll_ready
    // fails and is reported at once, then the calls in flight finish and the stream ends.
    let want: Vec<Result<u32, String>> =
        vec![Ok(0), Ok(1), Ok(2), Err("broken".into()), Ok(3), Ok(4)];
    assert_eq!(got, want);
    assert_eq!(s.service().ready_polls_after_break, 1);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn source_errors_are_items_and_the_end_waits_for_calls() {
    let items = vec![Ok(1u32), Err("bad packet"), Ok(2)];
    let packets = stream::iter(items).map(|r| r.map_err(BoxError::from));
    let svc = service_fn(|i: u32| async move { Ok::<_, BoxError>(i * 10) });
    let got: Vec<Result<u32, String>> = futures::executor::block_on(
        packets
            .serve(svc, 0) // 0 means 1
            .map(|r| r.map_err(|e| e.to_string()))
            .collect(),
    );
    assert_eq!(got, [Ok(10), Err("bad packet".to_string()), Ok(20)]);
}
