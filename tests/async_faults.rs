//! Interface events through `AsyncCapture`, under tokio current-thread, tokio multi-thread and
//! smol: the interface going down (with frames still in the block the kernel has open), coming
//! back up, and being deleted while already down.
//!
//! These are the events that reach an async capture outside the data path: on tokio (an
//! edge-triggered reactor) they come through the capture's second descriptor, which watches only
//! socket errors and the capture's timer, while the socket itself signals blocks; on smol (a
//! one-shot reactor) through the ring's epoll instance, which the capture does not collect after
//! a wakeup it answered with a block. The frames come from scapy.
//!
//! Needs the `tokio` and `smol` features (`cargo test --all-features`); without them this file
//! compiles to nothing.
#![cfg(all(feature = "tokio", feature = "smol"))]

mod common;
use common::asyncrt::*;
use common::frames::*;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use netring::{AsyncCapture, Capture, Error};

crate::on_each_runtime!(
    down_after_frames_then_up_again,
    down_interface_deleted_while_waiting,
);

/// How long one item may take (the grace period for the last open block is far shorter).
const STEP: Duration = Duration::from_secs(10);

/// Reads our frames until an error: returns them and the error.
async fn frames_until_error<R: Exec>(rx: &mut AsyncCapture<R>) -> (Vec<Vec<u8>>, Error) {
    let mut got = Vec::new();
    loop {
        match within::<R, _>(STEP, "the stream's next item", rx.next()).await {
            Some(Ok(batch)) => got.extend(
                batch
                    .iter()
                    .filter(|p| is_ours(p.data()))
                    .map(|p| with_tag(p.data(), p.vlan())),
            ),
            Some(Err(e)) => return (got, e),
            None => panic!("the stream ended without an error ({} frames)", got.len()),
        }
    }
}

/// Reads until `want` of our frames arrived.
async fn frames<R: Exec>(rx: &mut AsyncCapture<R>, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < want {
        let batch = within::<R, _>(STEP, "the next batch", rx.next())
            .await
            .expect("the stream ended")
            .expect("a stream error");
        got.extend(
            batch
                .iter()
                .filter(|p| is_ours(p.data()))
                .map(|p| with_tag(p.data(), p.vlan())),
        );
    }
    got
}

/// scapy sends frames and the interface goes down right after (the last frames sit in the block
/// the kernel has open until its timer retires it): the stream yields every frame, then
/// `InterfaceDown`; while down it waits quietly; up again, new frames arrive; down again while
/// a `next()` is pending wakes it with `InterfaceDown`.
async fn down_after_frames_then_up_again<R: Exec>() {
    if !can_run("down_after_frames_then_up_again", &["scapy"]) {
        return;
    }
    let burst = scapy_frames("faults-burst", 40, 21, 60, 1514, 0);
    let after = scapy_frames("faults-after", 25, 22, 60, 1514, 0);
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");

    let send_then_down = {
        let (net, file) = (net.clone(), burst.file.clone());
        blocking(move || {
            assert_eq!(scapy_sendp_file(&net, &net.a, &file), 40);
            net.ip(&["link", "set", &net.b, "down"]);
        })
    };
    let ((got, err), ()) = futures::join!(frames_until_error(&mut rx), send_then_down);
    assert_frames(
        "frames sent before the interface went down",
        &got,
        &burst.frames,
    );
    match &err {
        Error::InterfaceDown { name } => assert_eq!(name, &net.b),
        other => panic!("expected InterfaceDown, got {other:?}"),
    }

    // Down: no repeated error, no item at all.
    let quiet = timeout::<R, _>(Duration::from_millis(300), rx.next()).await;
    assert!(quiet.is_none(), "while down: {quiet:?}");

    // Up again: the same stream goes on.
    net.ip(&["link", "set", &net.b, "up"]);
    net.wait_oper_up(&net.a);
    net.wait_oper_up(&net.b);
    let send = {
        let (net, file) = (net.clone(), after.file.clone());
        blocking(move || assert_eq!(scapy_sendp_file(&net, &net.a, &file), 25))
    };
    let (got, ()) = futures::join!(frames(&mut rx, after.frames.len()), send);
    assert_frames("frames after the interface came back", &got, &after.frames);

    // Down while next() is pending.
    let down = {
        let net = net.clone();
        blocking(move || {
            std::thread::sleep(Duration::from_millis(200));
            net.ip(&["link", "set", &net.b, "down"]);
        })
    };
    let next = async {
        match within::<R, _>(STEP, "next() across the interface going down", rx.next()).await {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let (err, ()) = futures::join!(next, down);
    assert!(matches!(err, Error::InterfaceDown { .. }), "{err:?}");
    let s = rx.cumulative_stats().unwrap();
    assert_eq!(s.drops, 0, "{s:?}");
}

/// The interface goes down (`InterfaceDown`), then is deleted while a `next()` is pending. The
/// kernel gives the socket no event for deleting a down interface: only the capture's timer
/// can notice it. The stream yields `InterfaceGone`, then ends.
async fn down_interface_deleted_while_waiting<R: Exec>() {
    if !can_run("down_interface_deleted_while_waiting", &[]) {
        return;
    }
    let net = Arc::new(TestNet::new());
    let mut rx: AsyncCapture<R> = net
        .within(|| Capture::builder(&net.b).open_async())
        .expect("open_async");
    net.ip(&["link", "set", &net.b, "down"]);
    let (got, err) = frames_until_error(&mut rx).await;
    assert!(got.is_empty(), "{} frames", got.len());
    assert!(matches!(err, Error::InterfaceDown { .. }), "{err:?}");

    let delete = {
        let net = net.clone();
        blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            net.ip(&["link", "del", &net.b]);
        })
    };
    let next = async {
        match within::<R, _>(STEP, "next() across the deletion", rx.next()).await {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let (err, ()) = futures::join!(next, delete);
    match &err {
        Error::InterfaceGone { name, .. } => assert_eq!(name, &net.b),
        other => panic!("expected InterfaceGone, got {other:?}"),
    }
    for _ in 0..2 {
        let after = within::<R, _>(STEP, "the item after the error", rx.next()).await;
        assert!(after.is_none(), "after the error: {after:?}");
    }
}
