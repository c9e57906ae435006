//! Interface events while capturing: the interface going down (and up again) and being deleted.
//! Every frame received before the event is delivered, then the typed error; nothing hangs,
//! nothing panics, and batches already held stay readable.
//!
//! Sockets are opened inside the test namespace and then used from the test thread, outside it,
//! as `netring::netns` documents.

mod common;
use common::*;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use netring::{Batch, Capture, Error, Injector};

const MAGIC: &[u8; 4] = b"NRIE";

/// Test frame `seq`: broadcast, local experimental ethertype, the sequence number after `MAGIC`.
fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5]);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60 + (seq as usize % 7) * 10, seq as u8);
    f
}

fn frames(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(frame).collect()
}

/// A shell command line that sends `frames` from `dev` with scapy (a script in a scratch file).
fn scapy_cmdline(dev: &str, frames: &[Vec<u8>]) -> String {
    let hexes: Vec<String> = frames
        .iter()
        .map(|f| {
            let h: String = f.iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{h}\"")
        })
        .collect();
    let script = scratch("send.py");
    std::fs::write(
        &script,
        format!(
            "from scapy.all import Raw, sendp\n\
             sendp([Raw(bytes.fromhex(h)) for h in [{}]], iface=\"{dev}\", verbose=0)\n",
            hexes.join(",")
        ),
    )
    .unwrap();
    format!("{SCAPY_PYTHON} {script}")
}

/// Runs `sh -c LINE` inside the namespace.
fn sh(net: &TestNet, line: &str) {
    run(net.cmd("sh").args(["-c", line]));
}

/// The frames of a batch, as owned vectors.
fn data_of(b: &Batch) -> Vec<Vec<u8>> {
    b.iter().map(|p| p.data().to_vec()).collect()
}

/// Reads until `want` frames arrived (5 s at most); keeps the batches.
fn read_frames(cap: &mut Capture, want: usize, held: &mut Vec<Batch>) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(100))).unwrap() {
            got.extend(data_of(&b));
            held.push(b);
        }
    }
    got
}

/// Reads until an error, each call bounded by `per_call` and the whole by 15 s: returns the frames
/// delivered first and the error. Fails if the calls keep timing out instead.
fn read_until_error(
    cap: &mut Capture,
    per_call: Duration,
    held: &mut Vec<Batch>,
) -> (Vec<Vec<u8>>, Error) {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < deadline,
            "no error within 15 s; frames so far: {}",
            got.len()
        );
        match cap.next_batch(Some(per_call)) {
            Ok(Some(b)) => {
                got.extend(data_of(&b));
                held.push(b);
            }
            Ok(None) => {}
            Err(e) => return (got, e),
        }
    }
}

/// Runs `f` on another thread and fails if it has not returned within `secs` (a hang).
fn bounded<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not return within {secs} s"))
}

fn check_held(held: &[Batch], expected: &[Vec<u8>]) {
    let data: Vec<Vec<u8>> = held.iter().flat_map(data_of).collect();
    assert_eq!(data, expected, "held batches changed");
}

#[test]
fn interface_down_delivers_everything_then_errors_and_recovers() {
    if !can_run(
        "interface_down_delivers_everything_then_errors_and_recovers",
        &["scapy"],
    ) {
        return;
    }
    let net = TestNet::new();
    let mut cap = net.within(|| Capture::open(&net.b)).unwrap();
    let mut tx_b = net.within(|| Injector::open(&net.b)).unwrap();

    // Received and held before anything happens.
    let before = frames(0..20);
    sh(&net, &scapy_cmdline(&net.a, &before));
    let mut held_before = Vec::new();
    assert_eq!(read_frames(&mut cap, 20, &mut held_before), before);

    // Frames, then the interface goes down right after (the last ones may still sit in the
    // block the kernel has open): all of them, then InterfaceDown.
    let burst = frames(20..50);
    sh(
        &net,
        &format!(
            "{} && ip link set {} down",
            scapy_cmdline(&net.a, &burst),
            net.b
        ),
    );
    let mut held_burst = Vec::new();
    let (got, err) = read_until_error(&mut cap, Duration::from_secs(5), &mut held_burst);
    assert_eq!(
        got, burst,
        "every frame sent before the interface went down"
    );
    match &err {
        Error::InterfaceDown { name } => assert_eq!(name, &net.b),
        other => panic!("expected InterfaceDown, got {other:?}"),
    }
    assert!(err.to_string().contains(&net.b), "{err}");

    // The TX side of the same interface says the same.
    match tx_b.flush() {
        Err(Error::InterfaceDown { name }) => assert_eq!(name, net.b),
        other => {
            panic!("Injector::flush on a down interface: expected InterfaceDown, got {other:?}")
        }
    }

    // Held batches are still readable.
    check_held(&held_before, &before);
    check_held(&held_burst, &burst);

    // Up again: the capture goes on.
    net.ip(&["link", "set", &net.b, "up"]);
    net.wait_oper_up(&net.a);
    net.wait_oper_up(&net.b);
    let after = frames(50..60);
    sh(&net, &scapy_cmdline(&net.a, &after));
    let mut held_after = Vec::new();
    assert_eq!(read_frames(&mut cap, 10, &mut held_after), after);

    // Down again while a reader is blocked waiting: it wakes with the error, not a timeout.
    let ns = net.ns.clone();
    let dev = net.b.clone();
    let downer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        run(std::process::Command::new("ip").args(["-n", &ns, "link", "set", &dev, "down"]));
    });
    let started = Instant::now();
    let r = cap.next_batch(Some(Duration::from_secs(20)));
    downer.join().unwrap();
    match r {
        Err(Error::InterfaceDown { .. }) => {}
        Ok(Some(b)) => panic!("unexpected frames: {:?}", data_of(&b)),
        Ok(None) => panic!(
            "a blocked reader was not woken by the interface going down ({:?})",
            started.elapsed()
        ),
        Err(e) => panic!("expected InterfaceDown, got {e:?}"),
    }
    // While down, reading times out quietly (no repeated error, no hang).
    assert!(matches!(
        cap.next_batch(Some(Duration::from_millis(200))),
        Ok(None)
    ));

    check_held(&held_before, &before);
    check_held(&held_after, &after);
    drop(held_before);
    drop(held_burst);
    drop(held_after);

    net.ip(&["link", "set", &net.b, "up"]);
    net.wait_oper_up(&net.b);
    let last = frames(60..65);
    sh(&net, &scapy_cmdline(&net.a, &last));
    let mut held = Vec::new();
    assert_eq!(read_frames(&mut cap, 5, &mut held), last);
    let s = cap.cumulative_stats().unwrap();
    assert_eq!(s.drops, 0, "{s:?}");
}

#[test]
fn interface_deleted_delivers_everything_then_gone_for_good() {
    if !can_run(
        "interface_deleted_delivers_everything_then_gone_for_good",
        &["scapy"],
    ) {
        return;
    }
    let net = TestNet::new();
    let mut cap = net.within(|| Capture::open(&net.b)).unwrap();
    let index = cap.interface().index();
    let mut tx_a = net.within(|| Injector::open(&net.a)).unwrap();
    let mut tx_b = net.within(|| Injector::open(&net.b)).unwrap();

    let before = frames(0..20);
    sh(&net, &scapy_cmdline(&net.a, &before));
    let mut held = Vec::new();
    assert_eq!(read_frames(&mut cap, 20, &mut held), before);

    // Frames, then the interface (and with it its peer) is deleted right after.
    let burst = frames(20..50);
    sh(
        &net,
        &format!("{} && ip link del {}", scapy_cmdline(&net.a, &burst), net.b),
    );
    let mut held_burst = Vec::new();
    let (got, err) = read_until_error(&mut cap, Duration::from_secs(5), &mut held_burst);
    assert_eq!(
        got, burst,
        "every frame sent before the interface was deleted"
    );
    match &err {
        Error::InterfaceGone { name, index: i } => {
            assert_eq!(name, &net.b);
            assert_eq!(*i, index);
        }
        other => panic!("expected InterfaceGone, got {other:?}"),
    }

    // From now on every call says so at once, whatever its timeout.
    for timeout in [
        Some(Duration::ZERO),
        Some(Duration::from_secs(30)),
        Some(Duration::from_secs(30)),
    ] {
        let started = Instant::now();
        match cap.next_batch(timeout) {
            Err(Error::InterfaceGone { .. }) => {}
            Ok(r) => panic!(
                "next_batch({timeout:?}) after deletion returned Ok({}) after {:?}",
                r.map_or("None".to_string(), |b| format!("{} frames", b.len())),
                started.elapsed()
            ),
            Err(e) => panic!("expected InterfaceGone, got {e:?}"),
        }
    }
    assert!(matches!(
        cap.try_next_batch(),
        Err(Error::InterfaceGone { .. })
    ));
    // Even with no timeout at all.
    let (cap, r) = bounded(10, "next_batch(None) after deletion", move || {
        let r = cap.next_batch(None).map(|b| b.map(|b| b.len()));
        (cap, r)
    });
    assert!(matches!(r, Err(Error::InterfaceGone { .. })), "{r:?}");

    // Held batches are still valid, also after the capture is gone.
    drop(cap);
    check_held(&held, &before);
    check_held(&held_burst, &burst);

    // Both TX rings (on the deleted interface and on its deleted peer) give typed errors.
    for (tx, dev) in [(&mut tx_a, &net.a), (&mut tx_b, &net.b)] {
        match tx.flush() {
            Err(Error::InterfaceGone { name, .. }) => assert_eq!(&name, dev),
            other => panic!("flush on deleted {dev}: expected InterfaceGone, got {other:?}"),
        }
        let r = tx.send(&frame(99)).and_then(|()| tx.flush());
        match r {
            Err(Error::InterfaceGone { .. }) => {}
            other => panic!("send+flush on deleted {dev}: expected InterfaceGone, got {other:?}"),
        }
        match tx.wait_sent(Some(Duration::from_secs(2))) {
            Err(Error::InterfaceGone { .. }) => {}
            other => panic!("wait_sent on deleted {dev}: expected InterfaceGone, got {other:?}"),
        }
    }
}

#[test]
fn blocked_reader_sees_deletion_as_gone() {
    if !can_run("blocked_reader_sees_deletion_as_gone", &["scapy"]) {
        return;
    }
    let net = TestNet::new();
    let mut cap = net.within(|| Capture::open(&net.b)).unwrap();
    let sent = frames(0..10);
    sh(&net, &scapy_cmdline(&net.a, &sent));
    let mut held = Vec::new();
    assert_eq!(read_frames(&mut cap, 10, &mut held), sent);

    // The reader is blocked (nothing pending) when the interface is deleted.
    let ns = net.ns.clone();
    let dev = net.b.clone();
    let deleter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        run(std::process::Command::new("ip").args(["-n", &ns, "link", "del", &dev]));
    });
    let (mut cap, first) = bounded(30, "a blocked next_batch", move || {
        let r = cap.next_batch(Some(Duration::from_secs(20)));
        let r = r.map(|b| b.map(|b| b.len()));
        (cap, r)
    });
    deleter.join().unwrap();
    match first {
        Err(Error::InterfaceGone { ref name, .. }) => assert_eq!(name, &net.b),
        ref other => panic!("a blocked reader of a deleted interface got {other:?}"),
    }
    for _ in 0..3 {
        match cap.next_batch(Some(Duration::from_secs(20))) {
            Err(Error::InterfaceGone { .. }) => {}
            other => panic!(
                "after deletion: expected InterfaceGone, got {:?}",
                other.map(|b| b.map(|b| b.len()))
            ),
        }
    }
    check_held(&held, &sent);
}

#[test]
fn deletion_of_a_down_interface_is_noticed() {
    if !can_run("deletion_of_a_down_interface_is_noticed", &[]) {
        return;
    }
    let net = TestNet::new();
    let mut cap = net.within(|| Capture::open(&net.b)).unwrap();
    net.ip(&["link", "set", &net.b, "down"]);
    let mut held = Vec::new();
    let (got, err) = read_until_error(&mut cap, Duration::from_secs(5), &mut held);
    assert!(got.is_empty());
    assert!(matches!(err, Error::InterfaceDown { .. }), "{err:?}");

    // Deleting an interface that is already down gives the socket no event of its own; a reader
    // waiting without a timeout must still learn of it.
    let ns = net.ns.clone();
    let dev = net.b.clone();
    let deleter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        run(std::process::Command::new("ip").args(["-n", &ns, "link", "del", &dev]));
    });
    let (mut cap, r) = bounded(
        15,
        "next_batch(None) on a deleted down interface",
        move || {
            let r = cap.next_batch(None).map(|b| b.map(|b| b.len()));
            (cap, r)
        },
    );
    deleter.join().unwrap();
    assert!(matches!(r, Err(Error::InterfaceGone { .. })), "{r:?}");
    assert!(matches!(
        cap.try_next_batch(),
        Err(Error::InterfaceGone { .. })
    ));
}
