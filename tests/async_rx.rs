//! Async receive, under tokio current-thread, tokio multi-thread and smol: real traffic from
//! independent senders (tcpreplay and scapy, replaying frames scapy wrote) into `net.a`, captured
//! on `net.b` through `AsyncCapture` / `PacketStream`, compared byte for byte and in order.
//!
//! The kernel strips the outer VLAN tag on veth into `Packet::vlan()`; it is put back before
//! comparing. Batches and packets travel to other tasks over channels and are dropped there;
//! deleting the interface ends the stream after everything received.
//!
//! Also runs `examples/workers.rs` (tokio multi-thread, batches fanned out to worker tasks).
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`); without them this file
//! compiles to nothing.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use netring::{AsyncCapture, Batch, Capture, Error, OwnedPacket, Packet};

crate::on_each_runtime!(
    batches_in_order,
    batches_to_tasks_over_channels,
    owned_packets_to_tasks,
    held_ring_waits_for_release,
    interface_gone_after_backlog,
    interface_gone_while_waiting,
);

/// How long one batch may take to come (traffic is flowing when a test waits for one).
const STEP: Duration = Duration::from_secs(10);

/// A received packet as it was on the wire (the stripped tag put back).
fn wire(p: &Packet<'_>) -> Vec<u8> {
    with_tag(p.data(), p.vlan())
}

fn wire_owned(p: &OwnedPacket) -> Vec<u8> {
    with_tag(p.data(), p.vlan())
}

/// After the traffic: nothing more of ours arrives (no frame is delivered twice).
async fn assert_nothing_more<R: Exec>(rx: &mut AsyncCapture<R>) {
    R::sleep(Duration::from_millis(50)).await;
    while let Some(item) = timeout::<R, _>(Duration::from_millis(200), rx.next()).await {
        let batch = item.expect("stream ended").expect("stream error");
        let extra = batch.iter().filter(|p| is_ours(p.data())).count();
        assert_eq!(extra, 0, "{extra} extra frames after all were received");
    }
}

/// tcpreplay -> net.a -> net.b -> `AsyncCapture` (`StreamExt::next` and `next_batch`): all
/// frames, byte for byte, in order; consecutive batch sequence numbers; no drops.
async fn batches_in_order<R: Exec>() {
    if !can_run("batches_in_order", &["tcpreplay", "scapy"]) {
        return;
    }
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);

    let mut got = Vec::with_capacity(want.len());
    let mut last_seq = None;
    let mut batches = 0usize;
    while got.len() < want.len() {
        // Alternate the two ways of asking.
        let item = if batches % 2 == 0 {
            within::<R, _>(STEP, "next()", rx.next()).await
        } else {
            within::<R, _>(STEP, "next_batch()", rx.next_batch()).await
        };
        let batch = item.expect("stream ended").expect("stream error");
        if let Some(last) = last_seq {
            assert_eq!(batch.seq(), last + 1, "batch sequence numbers");
        }
        last_seq = Some(batch.seq());
        batches += 1;
        got.extend(batch.iter().filter(|p| is_ours(p.data())).map(|p| wire(&p)));
    }
    assert_eq!(sent.await, want.len() as u64, "tcpreplay's count");
    assert_nothing_more(&mut rx).await;
    assert_frames("async rx", &got, want);
    let stats = rx.cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
    assert_eq!(rx.get_ref().sequence_gaps(), 0);
    eprintln!(
        "{}: {} frames in {batches} batches, {stats:?}",
        R::name(),
        got.len()
    );
}

/// What a batch held when it was received: its sequence number and our frames in it.
type Received = (u64, Vec<Vec<u8>>);

/// A consumer task: keeps the last `hold` batches it was given (dropping older ones here, while
/// the stream goes on), and re-reads each batch just before dropping it to check the kernel did
/// not write into a block we held.
async fn consume(mut jobs: ChanRx<Batch>, hold: usize) -> Vec<Received> {
    let mut held: VecDeque<(Batch, usize)> = VecDeque::new();
    let mut out: Vec<Received> = Vec::new();
    fn release((batch, at): (Batch, usize), out: &[Received]) {
        let again: Vec<Vec<u8>> = batch
            .iter()
            .filter(|p| is_ours(p.data()))
            .map(|p| wire(&p))
            .collect();
        assert_eq!(again, out[at].1, "batch {} changed while held", batch.seq());
        drop(batch); // its block goes back to the kernel, from this task
    }
    while let Some(batch) = jobs.recv().await {
        let frames = batch
            .iter()
            .filter(|p| is_ours(p.data()))
            .map(|p| wire(&p))
            .collect();
        out.push((batch.seq(), frames));
        held.push_back((batch, out.len() - 1));
        if held.len() > hold {
            release(held.pop_front().unwrap(), &out);
        }
    }
    while let Some(h) = held.pop_front() {
        release(h, &out);
    }
    out
}

/// Batches handed round robin to two consumer tasks over bounded channels (tokio mpsc /
/// async-channel), each holding its last three batches, dropped there while the stream goes
/// on. A small ring (24 blocks of 64 KiB) wraps several times. Nothing lost, nothing reordered.
async fn batches_to_tasks_over_channels<R: Exec>() {
    if !can_run("batches_to_tasks_over_channels", &["tcpreplay", "scapy"]) {
        return;
    }
    const CONSUMERS: usize = 2;
    const QUEUE: usize = 2;
    const HOLD: usize = 3;
    const BLOCKS: usize = 24;
    // Held by consumers + queued + the one being handed over, with room left for the kernel.
    const _: () = assert!(CONSUMERS * (HOLD + QUEUE + 1) + 1 < BLOCKS - 4);
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| {
            Capture::builder(&net.b)
                .block_size(64 << 10)
                .block_count(BLOCKS)
                .open_async()
        })
        .expect("open_async");
    let mut queues = Vec::new();
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let (tx, jobs) = R::channel::<Batch>(QUEUE);
        queues.push(tx);
        consumers.push(R::spawn(consume(jobs, HOLD)));
    }
    let sent = replay(&net, &net.a, &rx_frames().file, 5_000);

    let mut ours = 0usize;
    let mut batches = 0usize;
    while ours < want.len() {
        let batch = within::<R, _>(STEP, "next batch", rx.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        ours += batch.iter().filter(|p| is_ours(p.data())).count();
        assert!(
            queues[batches % CONSUMERS].send(batch).await,
            "consumer gone"
        );
        batches += 1;
    }
    drop(queues);
    let mut received: Vec<Received> = Vec::new();
    for c in consumers {
        received.extend(within::<R, _>(STEP, "consumer", c).await);
    }
    assert_eq!(received.len(), batches);
    received.sort_by_key(|(seq, _)| *seq);
    for w in received.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "batch sequence numbers");
    }
    let got: Vec<Vec<u8>> = received.into_iter().flat_map(|(_, f)| f).collect();
    assert_eq!(sent.await, want.len() as u64);
    assert_nothing_more(&mut rx).await;
    assert_frames("batches through channels", &got, want);
    let stats = rx.cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
    assert!(
        batches > BLOCKS,
        "only {batches} batches: the ring did not wrap"
    );
    eprintln!(
        "{}: {} frames in {batches} batches over {CONSUMERS} tasks, {stats:?}",
        R::name(),
        got.len()
    );
}

/// `PacketStream`: every `OwnedPacket` moves into a task of its own, which reads it there (and
/// drops it); results are collected in spawn order. All frames, byte for byte, in order.
async fn owned_packets_to_tasks<R: Exec>() {
    if !can_run("owned_packets_to_tasks", &["tcpreplay", "scapy"]) {
        return;
    }
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut pkts = net
        .within(|| Capture::builder(&net.b).open_async::<R>())
        .expect("open_async")
        .packets();
    let sent = replay(&net, &net.a, &rx_frames().file, 20_000);

    let mut pending: VecDeque<Task<Vec<u8>>> = VecDeque::new();
    let mut got = Vec::with_capacity(want.len());
    let mut spawned = 0usize;
    while spawned < want.len() {
        let pkt = within::<R, _>(STEP, "next packet", pkts.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        if !is_ours(pkt.data()) {
            continue;
        }
        pending.push_back(R::spawn(async move { wire_owned(&pkt) }));
        spawned += 1;
        if pending.len() > 64 {
            got.push(pending.pop_front().unwrap().await);
        }
    }
    for t in pending {
        got.push(t.await);
    }
    assert_eq!(sent.await, want.len() as u64);
    assert_nothing_more(pkts.get_mut()).await;
    assert_frames("owned packets in tasks", &got, want);
    let stats = pkts.get_mut().cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
}

/// Holding every block of the ring: the stream waits (and yields nothing twice) until a batch is
/// dropped, from another task; then it goes on. Frames are paced by tcpreplay (4 per second) so
/// that each retires its own block.
async fn held_ring_waits_for_release<R: Exec>() {
    if !can_run("held_ring_waits_for_release", &["tcpreplay", "scapy"]) {
        return;
    }
    let traffic = scapy_frames("release", 4, 11, 60, 400, 2);
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| {
            Capture::builder(&net.b)
                .block_size(64 << 10)
                .block_count(2)
                .open_async()
        })
        .expect("open_async");

    // Phase 1: two frames, 250 ms apart: one block each, so both blocks end up held.
    let sent = replay(&net, &net.a, &traffic.chunks[0].0, 4);
    let mut held = Vec::new();
    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = within::<R, _>(STEP, "phase 1 batch", rx.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        got.extend(batch.iter().filter(|p| is_ours(p.data())).map(|p| wire(&p)));
        held.push(batch);
    }
    assert_eq!(sent.await, 2);
    assert_eq!(
        held.len(),
        2,
        "both frames came in one block (timing); the test needs one block each"
    );
    // Every block is held: nothing to yield (and certainly not a held block again).
    let early = timeout::<R, _>(Duration::from_millis(300), rx.next()).await;
    assert!(
        early.is_none(),
        "the stream yielded while every block was held"
    );

    // Phase 2: another task drops the batches while `next()` is pending; then two more frames.
    let release = R::spawn(async move {
        R::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    let phase2 = async {
        release.await;
        replay(&net, &net.a, &traffic.chunks[1].0, 4).await
    };
    let next = async {
        let mut frames = Vec::new();
        while frames.len() < 2 {
            let batch = within::<R, _>(STEP, "phase 2 batch", rx.next())
                .await
                .expect("stream ended")
                .expect("stream error");
            frames.extend(batch.iter().filter(|p| is_ours(p.data())).map(|p| wire(&p)));
        }
        frames
    };
    let (sent2, frames) = futures::join!(phase2, next);
    assert_eq!(sent2, 2);
    got.extend(frames);
    assert_frames("held ring", &got, &traffic.frames);
    let stats = rx.cumulative_stats().unwrap();
    assert_eq!(stats.drops, 0, "{stats:?}");
}

/// Reads the stream to its end: our frames, then exactly one error, then `None` (twice).
async fn drain_to_end<R: Exec>(rx: &mut AsyncCapture<R>, got: &mut Vec<Vec<u8>>) -> Error {
    let err = loop {
        match within::<R, _>(STEP, "the stream's next item", rx.next()).await {
            Some(Ok(batch)) => {
                got.extend(batch.iter().filter(|p| is_ours(p.data())).map(|p| wire(&p)))
            }
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error ({} frames)", got.len()),
        }
    };
    for _ in 0..2 {
        let after = within::<R, _>(STEP, "the item after the error", rx.next()).await;
        assert!(after.is_none(), "after the error: {after:?}");
    }
    err
}

#[track_caller]
fn assert_gone(err: &Error, net: &TestNet) {
    match err {
        Error::InterfaceGone { name, .. } => assert_eq!(name, &net.b),
        other => panic!("expected InterfaceGone, got {other:?}"),
    }
}

/// All frames arrive (unread) in the ring; the interface is deleted; reading then yields every
/// frame, then `Err(InterfaceGone)`, then `None`.
async fn interface_gone_after_backlog<R: Exec>() {
    if !can_run("interface_gone_after_backlog", &["tcpreplay", "scapy"]) {
        return;
    }
    let want = &rx_frames().frames;
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    assert_eq!(
        replay(&net, &net.a, &rx_frames().file, 20_000).await,
        want.len() as u64
    );
    // Wait until the kernel has put every frame into the ring: deleting the interface flushes
    // frames still queued on their way to it.
    let mut waited = Duration::ZERO;
    loop {
        let stats = rx.cumulative_stats().unwrap();
        if stats.packets >= want.len() as u64 {
            assert_eq!(stats.drops, 0, "{stats:?}");
            break;
        }
        assert!(waited < STEP, "the kernel saw only {stats:?}");
        R::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    net.ip(&["link", "del", &net.b]);

    let mut got = Vec::new();
    let err = drain_to_end(&mut rx, &mut got).await;
    assert_frames("frames before the error", &got, want);
    assert_gone(&err, &net);
}

/// Traffic from scapy's `sendp` through `PacketStream`; once everything is read, `next()` is
/// pending when the interface is deleted (from a blocking thread): the stream wakes with
/// `Err(InterfaceGone)`, then ends.
async fn interface_gone_while_waiting<R: Exec>() {
    if !can_run("interface_gone_while_waiting", &["scapy"]) {
        return;
    }
    let traffic = scapy_frames("gone", 200, 13, 60, 1514, 0);
    let net = Arc::new(TestNet::new());
    let mut pkts = net
        .within(|| Capture::builder(&net.b).open_async::<R>())
        .expect("open_async")
        .packets();
    let sent = {
        let (net, file) = (net.clone(), traffic.file.clone());
        blocking(move || scapy_sendp_file(&net, &net.a, &file))
    };
    let mut got = Vec::new();
    while got.len() < traffic.frames.len() {
        let pkt = within::<R, _>(Duration::from_secs(60), "next packet", pkts.next())
            .await
            .expect("stream ended")
            .expect("stream error");
        if is_ours(pkt.data()) {
            got.push(wire_owned(&pkt));
        }
    }
    assert_eq!(sent.await, traffic.frames.len());
    assert_frames("scapy sendp", &got, &traffic.frames);

    let delete = {
        let net = net.clone();
        blocking(move || {
            std::thread::sleep(Duration::from_millis(200));
            net.ip(&["link", "del", &net.b]);
        })
    };
    let next = async {
        let item = within::<R, _>(STEP, "next() across the deletion", pkts.next()).await;
        match item {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let (err, ()) = futures::join!(next, delete);
    assert_gone(&err, &net);
    for _ in 0..2 {
        let after = within::<R, _>(STEP, "after the error", pkts.next()).await;
        assert!(after.is_none(), "after the error: {after:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// examples/workers.rs

/// The `workers` example binary (built with `--all-features` if missing or built without tokio).
fn workers_binary() -> std::path::PathBuf {
    use std::process::Command;
    // target/<profile>/deps/async_rx-HASH -> target/<profile>/examples/workers
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("test binary lives in target/<profile>/deps");
    let sibling = profile_dir.join("examples").join("workers");
    let usable = |path: &std::path::Path| {
        // A binary built without the tokio feature says so and exits 2.
        path.exists()
            && Command::new(path)
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if usable(&sibling) {
        return sibling;
    }
    // A target dir of our own: the outer cargo may hold the lock on the main one.
    let target = profile_dir.join("async-rx-examples");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--example",
        "workers",
        "--all-features",
        "--target-dir",
    ])
    .arg(&target)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd);
    let built = target
        .join(if release { "release" } else { "debug" })
        .join("examples")
        .join("workers");
    assert!(usable(&built), "{} does not run", built.display());
    built
}

/// `workers --iface B --netns NS --workers 3 --count N`: tcpreplay sends the reference frames;
/// the example reports every packet and byte (the kernel's wire length, without the stripped
/// tag), no drops, and the per-worker counts add up, spread round robin.
#[test]
fn workers_example_counts_every_packet() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    if !can_run(
        "workers_example_counts_every_packet",
        &["tcpreplay", "scapy"],
    ) {
        return;
    }
    let frames = rx_frames();
    let want_bytes: usize = frames
        .frames
        .iter()
        .map(|f| f.len() - if wire_tag(f).is_some() { 4 } else { 0 })
        .sum();
    let bin = workers_binary();
    let net = TestNet::new();
    let n = frames.frames.len().to_string();
    let mut child = Background::spawn(
        Command::new(&bin)
            .args(["--iface", &net.b, "--netns", &net.ns, "--workers", "3"])
            .args(["--count", &n, "--duration", "60"])
            .stdin(Stdio::null()),
    );
    // Wait for "listening", keeping the rest of stderr.
    let stderr = child.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening on") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("workers did not start listening within 30 s");
    // 3000 frames at 3000 pps: blocks retire by timeout, so there are many batches to spread.
    assert_eq!(
        tcpreplay(&net, &net.a, &frames.file, 3_000),
        frames.frames.len() as u64
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "workers did not exit after the count"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.interrupt_and_wait(5);
    let stderr = reader.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{stderr:?}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!("packets={n} bytes={want_bytes} drops=0"),
        "stderr: {stderr:?}"
    );
    // worker I: batches=X packets=Y bytes=Z
    let workers: Vec<[u64; 3]> = stderr
        .iter()
        .filter_map(|l| l.strip_prefix("worker "))
        .map(|l| {
            let (_, rest) = l.split_once(": ").expect("worker line");
            let v: Vec<u64> = rest
                .split(' ')
                .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
                .collect();
            [v[0], v[1], v[2]]
        })
        .collect();
    assert_eq!(workers.len(), 3, "{stderr:?}");
    assert_eq!(
        workers.iter().map(|w| w[1]).sum::<u64>(),
        frames.frames.len() as u64
    );
    assert_eq!(workers.iter().map(|w| w[2]).sum::<u64>(), want_bytes as u64);
    let batches: Vec<u64> = workers.iter().map(|w| w[0]).collect();
    let (lo, hi) = (
        *batches.iter().min().unwrap(),
        *batches.iter().max().unwrap(),
    );
    assert!(
        lo >= 1 && hi - lo <= 1,
        "not round robin: batches per worker {batches:?}"
    );
    eprintln!("workers: {last}; per worker {workers:?}");
}
