//! AF_XDP through the async adapter (`netring::xdp::AsyncXdpSocket`), under tokio current-thread,
//! tokio multi-thread and smol, with real traffic from independent tools:
//!
//! - RX: tcpreplay sends 3000 frames scapy wrote (60..1514 bytes, some VLAN-tagged) into `net.a`;
//!   the `Stream` on `net.b` yields every one, byte for byte, in order, with nothing dropped.
//! - TX: frames go out through the `Sink` (`SinkExt::send_all`) on `net.a`; tcpdump on `net.b`
//!   captures them and they are compared byte for byte.
//! - Fill-ring recycling: 3000 frames through a 256-frame UMEM, batches held and dropped out of
//!   order in other tasks and on another thread.
//! - A task parked in `next()` is woken when another thread releases the batches holding every
//!   RX frame (otherwise nothing could arrive to wake it).
//! - Backpressure: 20 000 frames through a 64-frame UMEM (32 TX frames): nothing lost, no error.
//!
//! The block_on thread is pinned to one CPU while frames are sent (see `async_tx.rs` for why).
//! AF_XDP in copy mode also transmits from `poll()` on the socket, which the runtime's reactor
//! calls through the epoll set; under tokio multi-thread and smol that can be another thread, so
//! there the TX comparison is frame for frame by index, and in order only under tokio
//! current-thread (where everything runs on the one pinned thread).
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`).
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt, stream};
use netring::runtime::Runtime;
use netring::xdp::{AsyncXdpSocket, BindMode, XdpBatch, XdpSocket, XdpSocketBuilder};

crate::on_each_runtime!(
    rx_byte_for_byte_in_order,
    rx_coalesced_in_order,
    tx_send_all_byte_for_byte,
    fill_ring_recycling_across_tasks_and_threads,
    parked_reader_woken_by_release_elsewhere,
    sink_backpressure_with_a_tiny_pool,
);

/// How long one batch may take to come while traffic is flowing.
const STEP: Duration = Duration::from_secs(10);

/// Our frames in a batch, copied.
fn ours(batch: &XdpBatch) -> Vec<Vec<u8>> {
    batch
        .iter()
        .filter(|p| is_ours(p.data()))
        .map(|p| p.data().to_vec())
        .collect()
}

/// Opens the socket (and its program) inside the namespace, registered with `R`.
fn open_rx<R: Exec>(net: &TestNet, b: XdpSocketBuilder) -> AsyncXdpSocket<R> {
    net.within(|| b.open_async::<R>()).expect("open_async")
}

/// A TX-only socket (no program) on `net.a`, registered with `R`.
fn open_tx<R: Exec>(net: &TestNet, frame_count: u32, ring: u32) -> AsyncXdpSocket<R> {
    let sock = net
        .within(|| {
            XdpSocket::builder(&net.a)
                .frame_count(frame_count)
                .ring_size(ring)
                .open_socket()
        })
        .expect("open_socket");
    assert_eq!(sock.bind_mode(), BindMode::Copy);
    AsyncXdpSocket::new(sock).expect("registering with the runtime")
}

/// After the traffic: no more of our frames (nothing delivered twice).
async fn assert_nothing_more<R: Exec + Runtime>(rx: &mut AsyncXdpSocket<R>) {
    while let Some(item) = timeout::<R, _>(Duration::from_millis(300), rx.next()).await {
        let batch = item.expect("the stream never ends").expect("stream error");
        let extra = ours(&batch).len();
        assert_eq!(extra, 0, "{extra} extra frames after all were received");
    }
}

#[track_caller]
fn assert_clean_rx<R: Exec>(rx: &AsyncXdpSocket<R>) {
    let s = rx.get_ref().stats().unwrap();
    assert_eq!(s.rx_dropped, 0, "{}: {s:?}", R::name());
    assert_eq!(s.rx_invalid_descs, 0, "{}: {s:?}", R::name());
}

// ---------------------------------------------------------------------------------------------

/// tcpreplay -> net.a -> net.b -> `AsyncXdpSocket` (`StreamExt::next` and `next_batch`
/// alternately): 3000 frames at 6000/s through a 1536-frame RX pool (recycled while the traffic
/// lasts), byte for byte, in order, none dropped.
async fn rx_byte_for_byte_in_order<R: Exec>() {
    rx_in_order::<R>(Duration::ZERO).await
}

/// The same with RX coalescing (300 us): 3000 frames are 46 full batches of 64 and a partial one
/// that only the coalescing timer releases, so a lost timer wakeup hangs the stream.
async fn rx_coalesced_in_order<R: Exec>() {
    rx_in_order::<R>(Duration::from_micros(300)).await
}

async fn rx_in_order<R: Exec>(coalesce: Duration) {
    if !can_run("xdp async rx", &["tcpreplay", "scapy", "taskset"]) {
        return;
    }
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncXdpSocket<R> = open_rx(
        &net,
        XdpSocket::builder(&net.b)
            .frame_count(2048)
            .rx_frames(1536)
            .ring_size(2048)
            .rx_coalesce(coalesce),
    );
    assert!(rx.get_ref().attach_mode().is_some());
    let t = Instant::now();
    let sent = replay(&net, &net.a, &rx_frames().file, 6000);
    let mut got = Vec::with_capacity(want.len());
    let mut batches = 0usize;
    while got.len() < want.len() {
        let batch = if batches % 2 == 0 {
            within::<R, _>(STEP, "next()", rx.next())
                .await
                .expect("the stream never ends")
        } else {
            within::<R, _>(STEP, "next_batch()", rx.next_batch()).await
        }
        .expect("stream error");
        batches += 1;
        got.extend(ours(&batch));
    }
    assert_eq!(sent.await, want.len() as u64, "tcpreplay's count");
    assert_nothing_more(&mut rx).await;
    assert_frames("xdp async rx", &got, want);
    assert_clean_rx(&rx);
    eprintln!(
        "{}: {} frames in {batches} batches, {:?}",
        R::name(),
        got.len(),
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------

/// Waits for tcpdump to have `want.len()` records, stops it (no kernel drops) and compares:
/// every frame exactly once, byte for byte (frames carry their index), and in order when
/// `in_order`. Returns whether the capture was in order.
fn tcpdump_saw(dump: Tcpdump, want: &[Vec<u8>], in_order: bool, what: &str) -> bool {
    let records = dump.wait_for_records(want.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let file = dump.file.clone();
    let stats = dump.stop();
    assert_eq!(stats.dropped_by_kernel, 0, "{what}: {stats:?}");
    let got = read_pcap(&file);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {records} records seen, {stats:?}"
    );
    let index = |f: &[u8]| -> usize {
        let at = if wire_tag(f).is_some() { 16 } else { 12 };
        assert_eq!(&f[at + 2..at + 5], MARKER, "{what}: not a test frame");
        u32::from_be_bytes(f[at + 5..at + 9].try_into().unwrap()) as usize
    };
    let ordered = got.iter().enumerate().all(|(i, f)| index(f) == i);
    if in_order {
        assert_frames(what, &got, want);
    } else {
        let mut sorted = got;
        sorted.sort_by_key(|f| index(f));
        assert_frames(what, &sorted, want);
    }
    let _ = std::fs::remove_file(&file);
    ordered
}

fn is_current_thread<R: Exec>() -> bool {
    R::name() == "tokio current-thread"
}

/// 3000 frames (60..1514 bytes, some VLAN-tagged) through the `Sink` with `send_all`, from a
/// 128-frame UMEM (64 TX frames); tcpdump on the peer sees each, byte for byte.
async fn tx_send_all_byte_for_byte<R: Exec>() {
    if !can_run("xdp async tx", &["tcpdump", "taskset"]) {
        return;
    }
    let _pin = pin_to_one_cpu();
    let want: Vec<Vec<u8>> = frame_specs(3000, 60, 1514, 91)
        .iter()
        .map(FrameSpec::build)
        .collect();
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("xdp-async-tx.pcap"));
    let mut tx = Probe::new(open_tx::<R>(&net, 128, 64));
    let mut frames = stream::iter(want.iter().map(Ok::<_, netring::Error>));
    within::<R, _>(
        Duration::from_secs(60),
        "send_all",
        tx.send_all(&mut frames),
    )
    .await
    .expect("send_all");
    within::<R, _>(Duration::from_secs(30), "flush", tx.inner.flush())
        .await
        .expect("flush");
    assert_eq!(tx.inner.get_ref().in_flight(), 0);
    assert_eq!(tx.accepted, want.len() as u64);
    let ordered = tcpdump_saw(dump, &want, is_current_thread::<R>(), "xdp async tx");
    let s = tx.inner.get_ref().stats().unwrap();
    assert_eq!(s.tx_invalid_descs, 0, "{s:?}");
    eprintln!(
        "{}: 3000 frames, poll_ready pending {} times, in order: {ordered}",
        R::name(),
        tx.ready_pending
    );
}

/// 20 000 small frames through a 64-frame UMEM (32 TX frames, 32-slot TX ring) with
/// `send_all`: the `Sink` waits for completions instead of failing; tcpdump sees all of them.
async fn sink_backpressure_with_a_tiny_pool<R: Exec>() {
    if !can_run("xdp async backpressure", &["tcpdump", "taskset"]) {
        return;
    }
    const N: usize = 20_000;
    let _pin = pin_to_one_cpu();
    let want: Vec<Vec<u8>> = frame_specs(N, 60, 200, 92)
        .iter()
        .map(FrameSpec::build)
        .collect();
    let net = TestNet::new();
    let dump = Tcpdump::start(&net, &net.b, &scratch("xdp-async-bp.pcap"));
    let mut tx = Probe::new(open_tx::<R>(&net, 64, 32));
    let t = Instant::now();
    let mut frames = stream::iter(want.iter().map(Ok::<_, netring::Error>));
    within::<R, _>(
        Duration::from_secs(120),
        "send_all",
        tx.send_all(&mut frames),
    )
    .await
    .expect("send_all");
    within::<R, _>(Duration::from_secs(30), "close", tx.inner.close())
        .await
        .expect("close");
    let elapsed = t.elapsed();
    assert_eq!(tx.accepted, N as u64);
    assert_eq!(tx.inner.get_ref().in_flight(), 0);
    let ordered = tcpdump_saw(
        dump,
        &want,
        is_current_thread::<R>(),
        "xdp async backpressure",
    );
    let s = tx.inner.get_ref().stats().unwrap();
    assert_eq!(s.tx_invalid_descs, 0, "{s:?}");
    eprintln!(
        "{}: {N} frames in {elapsed:?}, poll_ready pending {} times, in order: {ordered}, {s:?}",
        R::name(),
        tx.ready_pending
    );
}

// ---------------------------------------------------------------------------------------------

/// A batch and a copy of our frames in it (to check it did not change while held).
type Held = (XdpBatch, Vec<Vec<u8>>);

#[track_caller]
fn release(held: Held) {
    let (batch, copy) = held;
    assert_eq!(ours(&batch), copy, "a held batch changed under its holder");
    drop(batch);
}

/// A consumer task: holds up to two batches, releasing a random one when it has more, and
/// everything when nothing came for a few milliseconds. Returns how many batches it released.
async fn consume<R: Exec>(mut jobs: ChanRx<Held>, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut held: Vec<Held> = Vec::new();
    let mut released = 0;
    loop {
        match timeout::<R, _>(Duration::from_millis(3), jobs.recv()).await {
            Some(Some(item)) => {
                held.push(item);
                if held.len() > 2 {
                    let i = rng.range(0, held.len() - 1);
                    release(held.swap_remove(i));
                    released += 1;
                }
            }
            Some(None) => break,
            None => {
                while let Some(h) = held.pop() {
                    release(h);
                    released += 1;
                }
            }
        }
    }
    released += held.len();
    held.into_iter().for_each(release);
    released
}

/// 3000 frames through a UMEM of 256 frames (192 for RX, batches of at most 8): batches go round
/// robin to two consumer tasks and one plain thread, each holding a few and dropping them out of
/// order. Every frame arrives, in order; the kernel dropped none.
///
/// scapy sends 64-frame chunks, the next once the last has arrived: at most 13 batches (104
/// frames) are ever held (3 + 1 queued per consumer, 1 in the reader's hand), so more than a
/// chunk is always free for the kernel, however late a task or thread runs.
async fn fill_ring_recycling_across_tasks_and_threads<R: Exec>() {
    if !can_run("xdp async recycling", &["tcpreplay", "scapy", "taskset"]) {
        return;
    }
    const RX_FRAMES: usize = 192;
    const BATCH: usize = 8;
    const CHUNK: usize = 64;
    const _: () = assert!(RX_FRAMES - 13 * BATCH >= CHUNK);
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncXdpSocket<R> = open_rx(
        &net,
        XdpSocket::builder(&net.b)
            .frame_count(256)
            .rx_frames(RX_FRAMES as u32)
            .ring_size(256)
            .batch_size(BATCH),
    );
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for seed in 1..=2 {
        let (tx, jobs) = R::channel::<Held>(1);
        queues.push(tx);
        tasks.push(R::spawn(consume::<R>(jobs, seed)));
    }
    let (to_thread, jobs) = std_mpsc::sync_channel::<Held>(1);
    let thread = std::thread::spawn(move || {
        let mut held = std::collections::VecDeque::new();
        let mut released = 0usize;
        for item in jobs {
            held.push_back(item);
            if held.len() > 2 {
                // The newest goes first: out of order.
                release(held.pop_back().unwrap());
                released += 1;
            }
        }
        released + held.len()
    });

    let mut sender = ChunkSender::start(&net, &net.a, &rx_frames().file);
    let t = Instant::now();
    let mut got = Vec::with_capacity(want.len());
    let mut batches = 0usize;
    while got.len() < want.len() {
        if got.len() == sender.requested {
            sender.request(CHUNK.min(want.len() - got.len()));
        }
        let Some(batch) = timeout::<R, _>(STEP, rx.next()).await else {
            panic!(
                "{}: no batch within {STEP:?} after {} of {} frames: {:?}",
                R::name(),
                got.len(),
                want.len(),
                rx.get_ref().stats()
            );
        };
        let batch = batch.expect("the stream never ends").expect("stream error");
        let copy = ours(&batch);
        got.extend(copy.iter().cloned());
        match batches % 3 {
            0 => to_thread.send((batch, copy)).expect("thread gone"),
            k => assert!(queues[k - 1].send((batch, copy)).await, "consumer gone"),
        }
        batches += 1;
    }
    assert_eq!(
        blocking(move || sender.finish()).await,
        want.len(),
        "scapy's count"
    );
    drop(queues);
    drop(to_thread);
    let mut released = 0;
    for t in tasks {
        released += within::<R, _>(STEP, "consumer", t).await;
    }
    released += blocking(move || thread.join().expect("consumer thread")).await;
    assert_eq!(released, batches);
    assert_nothing_more(&mut rx).await;
    assert_frames("xdp async recycling", &got, want);
    assert_clean_rx(&rx);
    assert!(
        got.len() >= 10 * 256,
        "fewer than 10 UMEMs' worth of frames"
    );
    eprintln!(
        "{}: {} frames in {batches} batches, {:?}",
        R::name(),
        got.len(),
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------

/// All 32 RX frames are in batches held by another thread, so the kernel has no frame to fill.
/// The task waits in `next()`; the thread drops the batches, then more traffic comes: the frames
/// must have gone back to the kernel on release (not when some later event wakes the task) and
/// the new traffic arrive.
async fn parked_reader_woken_by_release_elsewhere<R: Exec>() {
    if !can_run(
        "xdp async parked reader",
        &["tcpreplay", "scapy", "taskset"],
    ) {
        return;
    }
    let sf = Arc::new(scapy_frames("xdp-async-release", 48, 4, 60, 600, 32));
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncXdpSocket<R> = open_rx(
        &net,
        XdpSocket::builder(&net.b)
            .frame_count(64)
            .ring_size(64)
            .batch_size(64),
    );
    let sent = replay(&net, &net.a, &sf.chunks[0].0, 2000);
    let mut held = Vec::new();
    let mut got = Vec::new();
    while got.len() < 32 {
        let batch = within::<R, _>(STEP, "next()", rx.next())
            .await
            .expect("the stream never ends")
            .expect("stream error");
        got.extend(ours(&batch));
        held.push(batch);
    }
    assert_eq!(sent.await, 32);
    assert_frames("first 32", &got, &sf.frames[..32]);

    let (net2, sf2) = (net.clone(), sf.clone());
    let helper = blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        std::thread::sleep(Duration::from_millis(300));
        tcpreplay(&net2, &net2.a, &sf2.chunks[1].0, 2000)
    });
    // Parked in next() the whole time; 20 s is far more than the traffic needs.
    let mut second = Vec::new();
    let reading = async {
        while second.len() < 16 {
            let batch = rx
                .next()
                .await
                .expect("the stream never ends")
                .expect("stream error");
            second.extend(ours(&batch));
        }
    };
    let t = Instant::now();
    let (_, sent) = futures::join!(
        within::<R, _>(
            Duration::from_secs(20),
            "the frames after the release",
            reading
        ),
        helper
    );
    assert_eq!(sent, 16);
    assert_frames("after the release", &second, &sf.frames[32..]);
    assert_clean_rx(&rx);
    eprintln!(
        "{}: 16 frames after the release in {:?}",
        R::name(),
        t.elapsed()
    );
}
