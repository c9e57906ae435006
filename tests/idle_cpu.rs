//! An idle async ring costs no CPU: a busy-loop detector (not a benchmark), under tokio
//! current-thread, tokio multi-thread and smol.
//!
//! The process's CPU time (`getrusage(RUSAGE_SELF)`, user + system, every thread: the executor's
//! and the reactor's too) is measured while `next()` is pending for 3 s on a quiet veth: with
//! nothing ever received; while holding the newest batch (the kernel then reports the socket
//! readable all the time, which the edge-triggered epoll must not turn into a spin); while holding
//! every block of the ring (the reader waits for a release). And while an `AsyncInjector` waits for
//! free slots on a link throttled to a trickle. The bound is generous: [`BOUND`] over the period.
//! One scenario runs at a time, so the figure is this scenario's alone.
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`); without them this file
//! compiles to nothing.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::lock::Mutex;
use futures::{SinkExt, StreamExt, stream};
use netring::{AsyncCapture, Capture, Injector};

crate::on_each_runtime!(
    quiet_link,
    holding_the_newest_batch,
    holding_every_block,
    tx_waiting_for_free_slots,
);

/// How long each idle period lasts.
const IDLE: Duration = Duration::from_secs(3);
/// The most CPU time an idle period may cost (a busy loop would burn ~3 s).
const BOUND: Duration = Duration::from_millis(100);

/// One measurement at a time (RUSAGE_SELF covers every thread of the test process). An async
/// mutex: each scenario holds it across its awaits, on its own runtime.
static SERIAL: Mutex<()> = Mutex::new(());

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut ru), 0);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Polls `rx.next()` for [`IDLE`] and returns the CPU time spent, and how many batches came.
async fn idle<R: Exec>(rx: &mut AsyncCapture<R>, what: &str) -> (Duration, usize) {
    let start = Instant::now();
    let cpu0 = cpu_time();
    let mut batches = 0;
    loop {
        let left = IDLE.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        if let Some(item) = timeout::<R, _>(left, rx.next()).await {
            item.expect("stream ended").expect("stream error");
            batches += 1;
        }
    }
    let cpu = cpu_time() - cpu0;
    eprintln!(
        "{}: {what}: {cpu:?} of CPU over {:?} of pending next() ({batches} batches came)",
        R::name(),
        start.elapsed()
    );
    (cpu, batches)
}

#[track_caller]
fn assert_idle(cpu: Duration, what: &str) {
    assert!(
        cpu < BOUND,
        "{what}: {cpu:?} of CPU while idle for {IDLE:?} (bound {BOUND:?}): a busy loop?"
    );
}

/// Nothing ever arrives.
async fn quiet_link<R: Exec>() {
    if !can_run("quiet_link", &[]) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let net = TestNet::new();
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    let (cpu, batches) = idle(&mut rx, "quiet link").await;
    assert_eq!(batches, 0, "the quiet link carried traffic");
    assert_idle(cpu, "quiet link");
}

/// Receives a few frames (one block) and keeps that newest batch while waiting for more.
async fn holding_the_newest_batch<R: Exec>() {
    if !can_run("holding_the_newest_batch", &["tcpreplay", "scapy"]) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let traffic = scapy_frames("idle-newest", 20, 51, 60, 600, 0);
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    assert_eq!(replay(&net, &net.a, &traffic.file, 10_000).await, 20);
    let mut held = Vec::new();
    let mut got = 0;
    while got < 20 {
        let batch = within::<R, _>(Duration::from_secs(10), "a batch", rx.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        got += batch.iter().filter(|p| is_ours(p.data())).count();
        held.push(batch);
    }
    let newest = held.pop().unwrap();
    drop(held);
    let (cpu, batches) = idle(&mut rx, "holding the newest batch").await;
    assert_eq!(batches, 0);
    assert!(!newest.is_empty());
    drop(newest);
    assert_idle(cpu, "holding the newest batch");
}

/// A 4-block ring, every block held (one frame each, 250 ms apart): the reader waits for a
/// release that does not come.
async fn holding_every_block<R: Exec>() {
    if !can_run("holding_every_block", &["tcpreplay", "scapy"]) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let traffic = scapy_frames("idle-every", 4, 52, 60, 600, 0);
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| {
            Capture::builder(&net.b)
                .block_size(64 << 10)
                .block_count(4)
                .open_async()
        })
        .expect("open_async");
    let sent = replay(&net, &net.a, &traffic.file, 4);
    let mut held = Vec::new();
    while held.len() < 4 {
        let batch = within::<R, _>(Duration::from_secs(10), "a batch", rx.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        held.push(batch);
    }
    assert_eq!(sent.await, 4);
    let (cpu, batches) = idle(&mut rx, "holding every block").await;
    assert_eq!(batches, 0, "a held block was yielded again");
    drop(held);
    assert_idle(cpu, "holding every block");
}

/// `send_all` into an 8-slot ring on a link throttled to 16 kbit/s: after the token bucket's
/// burst, the sink waits for a free slot about ten times a second, for about 3 s.
async fn tx_waiting_for_free_slots<R: Exec>() {
    if !can_run("tx_waiting_for_free_slots", &["tc"]) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let net = TestNet::new();
    throttle(&net, &net.a, "16kbit");
    let mut tx = net
        .within(|| Injector::builder(&net.a).frame_count(8).open_async::<R>())
        .expect("open_async");
    let frames: Vec<Vec<u8>> = frame_specs(50, 200, 200, 53)
        .iter()
        .map(FrameSpec::build)
        .collect();
    let start = Instant::now();
    let cpu0 = cpu_time();
    let mut probe = Probe::new(&mut tx);
    let mut items = stream::iter(frames.iter().map(|f| Ok(&f[..])));
    within::<R, _>(
        Duration::from_secs(30),
        "send_all",
        probe.send_all(&mut items),
    )
    .await
    .expect("send_all");
    within::<R, _>(
        Duration::from_secs(30),
        "close",
        SinkExt::<&[u8]>::close(&mut probe),
    )
    .await
    .expect("close");
    let cpu = cpu_time() - cpu0;
    let elapsed = start.elapsed();
    eprintln!(
        "{}: tx waiting for slots: {cpu:?} of CPU over {elapsed:?} (poll_ready waited {} times)",
        R::name(),
        probe.ready_pending
    );
    assert!(
        elapsed > Duration::from_secs(2),
        "the link was not throttled ({elapsed:?})"
    );
    assert!(probe.ready_pending > 0);
    assert_idle(cpu, "tx waiting for slots");
}
