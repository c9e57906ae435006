//! Every documented failure comes out as its typed error, with a message that says what to do.

mod common;
use common::*;

use std::time::{Duration, Instant};

use netring::{BpfInsn, BpfProgram, Capture, Error, GeometryError, Injector};

/// Reads `cap` until `want` frames arrived or 5 s passed, then 300 ms more to catch strays.
fn collect(cap: &mut Capture, want: usize) -> Vec<netring::OwnedPacket> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(50))).unwrap() {
            got.extend(b.iter().map(|p| p.to_owned_packet()));
        }
    }
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(50))).unwrap() {
            got.extend(b.iter().map(|p| p.to_owned_packet()));
        }
    }
    got
}

fn frame(len: usize, vlan: Option<u16>, fill: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a];
    if let Some(id) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.resize(len, fill);
    f
}

#[test]
fn no_such_interface() {
    if !can_run("no_such_interface", &[]) {
        return;
    }
    let net = TestNet::new();
    let name = "nr-nope0";
    let cap = net.within(|| Capture::open(name));
    match &cap {
        Err(e @ Error::NoSuchInterface { name: n }) => {
            assert_eq!(n, name);
            let msg = e.to_string();
            assert!(msg.contains(name), "{msg}");
            assert!(msg.contains("ip link show"), "says how to check: {msg}");
        }
        other => panic!("Capture::open({name}) gave {other:?}"),
    }
    match net.within(|| Injector::open(name)) {
        Err(e @ Error::NoSuchInterface { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains("ip link show"), "{msg}");
        }
        other => panic!("Injector::open({name}) gave {other:?}"),
    }
    // The same names exist in the namespace only: from outside, the test's own interfaces are
    // not found either.
    match Capture::open(&net.b) {
        Err(Error::NoSuchInterface { name }) => assert_eq!(name, net.b),
        Ok(c) => panic!(
            "{} opened outside its namespace: {:?}",
            net.b,
            c.interface()
        ),
        Err(e) => panic!("{e:?}"),
    }
}

#[test]
fn bad_ring_geometry() {
    if !can_run("bad_ring_geometry", &[]) {
        return;
    }
    let net = TestNet::new();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let open = |b: netring::CaptureBuilder| net.within(|| b.open());
    let geometry = |r: netring::Result<Capture>| match r {
        Err(e @ Error::Geometry(_)) => {
            let msg = e.to_string();
            let Error::Geometry(g) = e else {
                unreachable!()
            };
            (g, msg)
        }
        other => panic!("expected a geometry error, got {other:?}"),
    };
    let b = || Capture::builder(&net.b);

    let (g, msg) = geometry(open(b().block_size(page + 1)));
    assert_eq!(
        g,
        GeometryError::BlockSizeNotPageMultiple {
            block_size: page + 1,
            page_size: page
        }
    );
    assert!(msg.contains("multiple of the page size"), "{msg}");

    let (g, msg) = geometry(open(b().frame_size(2050)));
    assert_eq!(g, GeometryError::FrameSizeUnaligned { frame_size: 2050 });
    assert!(msg.contains("multiple of 16"), "{msg}");

    let (g, msg) = geometry(open(b().block_size(page).frame_size(2 * page)));
    assert_eq!(
        g,
        GeometryError::FrameLargerThanBlock {
            frame_size: 2 * page,
            block_size: page
        }
    );
    assert!(msg.contains("larger than the block size"), "{msg}");

    let (g, msg) = geometry(open(b().block_count(0)));
    assert_eq!(g, GeometryError::Empty { what: "block" });
    assert!(msg.contains("at least one block"), "{msg}");

    let (g, msg) = geometry(open(b().block_timeout(Duration::ZERO)));
    assert_eq!(g, GeometryError::BlockTimeout { ms: 0 });
    assert!(msg.contains("1..=60000 ms"), "{msg}");

    let (g, _) = geometry(open(b().block_timeout(Duration::from_secs(61))));
    assert_eq!(g, GeometryError::BlockTimeout { ms: 61_000 });

    // The TX ring's geometry too.
    match net.within(|| Injector::builder(&net.a).frame_size(2050).open()) {
        Err(Error::Geometry(GeometryError::FrameSizeUnaligned { frame_size: 2050 })) => {}
        other => panic!("{other:?}"),
    }
    match net.within(|| Injector::builder(&net.a).frame_count(0).open()) {
        Err(Error::Geometry(GeometryError::Empty { what: "frame" })) => {}
        other => panic!("{other:?}"),
    }

    // And the same builders with the geometry fixed do open.
    open(b().block_size(page).frame_size(page)).unwrap();
    open(b().block_timeout(Duration::from_secs(60))).unwrap();
}

#[test]
fn oversize_and_short_tx_frames_are_refused_and_not_sent() {
    if !can_run("oversize_and_short_tx_frames_are_refused_and_not_sent", &[]) {
        return;
    }
    const MTU: u32 = 1400;
    let net = TestNet::with_mtu(MTU);
    let mut cap = net.within(|| Capture::open(&net.b)).unwrap();
    let mut tx = net.within(|| Injector::open(&net.a)).unwrap();
    let slot_max = tx.max_frame_len();
    assert_eq!(slot_max, 2048 - 32);
    let mtu = MTU as usize;

    // Larger than a slot.
    for r in [
        tx.send(&frame(slot_max + 1, None, 1)).map(|_| ()),
        tx.try_send(&frame(slot_max + 1, None, 1)).map(|_| ()),
        tx.try_reserve(slot_max + 1).map(|_| ()),
    ] {
        match r {
            Err(e @ Error::FrameTooLarge { .. }) => {
                let Error::FrameTooLarge { len, max } = e else {
                    unreachable!()
                };
                assert_eq!((len, max), (slot_max + 1, slot_max));
                assert!(e.to_string().contains("raise `frame_size`"), "{e}");
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    // Fits a slot, longer than the link takes (MTU + 14; + 18 with a VLAN tag).
    for (len, vlan, max) in [(mtu + 15, None, mtu + 14), (mtu + 19, Some(42), mtu + 18)] {
        match tx.send(&frame(len, vlan, 2)) {
            Err(
                ref e @ Error::FrameExceedsMtu {
                    len: l,
                    mtu: m,
                    max: x,
                },
            ) => {
                assert_eq!((l, m, x), (len, MTU, max));
                let msg = e.to_string();
                assert!(msg.contains("raise the interface MTU"), "{msg}");
            }
            other => panic!("expected FrameExceedsMtu for {len} bytes, got {other:?}"),
        }
    }
    match tx.try_reserve(mtu + 15) {
        Err(Error::FrameExceedsMtu { .. }) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }

    // Shorter than an Ethernet header.
    for r in [
        tx.send(&[0u8; 13]).map(|_| ()),
        tx.try_reserve(13).map(|_| ()),
    ] {
        match r {
            Err(e @ Error::FrameTooShort { len: 13 }) => {
                assert!(
                    e.to_string().contains("shorter than an Ethernet header"),
                    "{e}"
                );
            }
            other => panic!("expected FrameTooShort, got {other:?}"),
        }
    }

    // None of that left anything in the ring, and nothing reached the wire.
    assert_eq!(tx.queued(), 0);
    assert!(tx.wait_sent(Some(Duration::from_secs(2))).unwrap());
    assert_eq!(tx.in_flight(), 0);
    let stray = collect(&mut cap, 0);
    assert!(
        stray.is_empty(),
        "refused frames were sent anyway: {:?}",
        stray.iter().map(|p| p.data().len()).collect::<Vec<_>>()
    );

    // At the limits they go, and arrive: a VLAN-tagged frame of MTU + 18 and a plain MTU + 14.
    let tagged = frame(mtu + 18, Some(42), 3);
    let plain = frame(mtu + 14, None, 4);
    tx.send(&tagged).unwrap();
    tx.send(&plain).unwrap();
    assert!(tx.wait_sent(Some(Duration::from_secs(5))).unwrap());
    let got = collect(&mut cap, 2);
    assert_eq!(got.len(), 2, "expected exactly the two frames at the limit");
    // The receiving side may strip the tag into the packet metadata.
    let t = &got[0];
    if t.data().len() == tagged.len() {
        assert_eq!(t.data(), &tagged[..]);
    } else {
        let mut untagged = tagged[..12].to_vec();
        untagged.extend_from_slice(&tagged[16..]);
        assert_eq!(t.data(), &untagged[..]);
        assert_eq!(
            t.vlan().map(|v| v.id()),
            Some(42),
            "stripped tag must be reported"
        );
    }
    assert_eq!(got[1].data(), &plain[..]);
}

#[test]
fn kernel_refused_bpf_program() {
    if !can_run("kernel_refused_bpf_program", &[]) {
        return;
    }
    let net = TestNet::new();
    let ret = BpfInsn::new(0x06, 0, 0, 0xffff);
    let refused = [
        // A = A / 0 (BPF_ALU | BPF_DIV | BPF_K with k = 0).
        (
            "division by constant zero",
            vec![BpfInsn::new(0x34, 0, 0, 0), ret],
        ),
        // A = M[16]: scratch memory has 16 slots.
        (
            "scratch slot out of range",
            vec![BpfInsn::new(0x60, 0, 0, 16), ret],
        ),
        // Not an opcode at all.
        ("unknown opcode", vec![BpfInsn::new(0xfe, 0, 0, 0), ret]),
    ];
    for (what, insns) in refused {
        // It passes the crate's own structural checks...
        let prog = BpfProgram::new(insns).unwrap();
        // ...and the kernel refuses it.
        match net.within(|| Capture::builder(&net.b).filter(prog).open()) {
            Err(e @ Error::InvalidFilter(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("kernel refused"), "{what}: {msg}");
                assert!(msg.contains("tcpdump"), "{what}: says what to do: {msg}");
            }
            other => panic!("{what}: expected InvalidFilter, got {other:?}"),
        }
    }
}

// --- No CAP_NET_RAW ---------------------------------------------------------------------------

const PROBE_ENV: &str = "NETRING_ERRORS_PROBE_IFACE";
const PROBE_TEST: &str = "without_cap_net_raw_open_is_permission_denied";
const CAP_NET_RAW_BIT: u32 = 13;

/// Child side: report the effective capabilities and what opening gives, one `PROBE` line each.
fn probe(iface: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let capeff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_owned();
    println!("PROBE capeff {capeff}");
    let report = |what: &str, r: netring::Result<()>| match r {
        Ok(()) => println!("PROBE {what} ok"),
        Err(ref e @ Error::PermissionDenied { capability, .. }) => {
            println!("PROBE {what} denied {capability} {e}")
        }
        Err(e) => println!("PROBE {what} other {e:?}"),
    };
    report("capture", Capture::open(iface).map(drop));
    report("injector", Injector::open(iface).map(drop));
}

/// Runs this test binary again, inside the namespace, as `PROBE_TEST` in probe mode, with
/// `wrapper` (e.g. setpriv dropping CAP_NET_RAW) in front; returns its PROBE lines.
fn run_probe(net: &TestNet, wrapper: &[&str]) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let mut cmd = net.cmd(wrapper.first().copied().unwrap_or(exe));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(exe);
    }
    cmd.args(["--exact", PROBE_TEST, "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, &net.b);
    let out = run(&mut cmd);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(probe_line)
        .collect();
    assert_eq!(lines.len(), 3, "probe output: {lines:?}");
    lines
}

/// The text after `PROBE ` (libtest may print its own `test NAME ... ` in front of the first one).
fn probe_line(line: &str) -> Option<String> {
    line.find("PROBE ").map(|i| line[i + 6..].to_owned())
}

fn has_cap_net_raw(capeff_line: &str) -> bool {
    let hex = capeff_line.strip_prefix("capeff ").unwrap();
    let bits = u64::from_str_radix(hex, 16).unwrap();
    bits & (1 << CAP_NET_RAW_BIT) != 0
}

#[test]
fn without_cap_net_raw_open_is_permission_denied() {
    if let Ok(iface) = std::env::var(PROBE_ENV) {
        // We are the child that `run_probe` started.
        probe(&iface);
        return;
    }
    if !can_run(PROBE_TEST, &["setpriv", "capsh"]) {
        return;
    }
    let net = TestNet::new();

    // Control: with its capabilities the same child opens both.
    let full = run_probe(&net, &[]);
    assert!(has_cap_net_raw(&full[0]), "{full:?}");
    assert_eq!(full[1..], ["capture ok", "injector ok"], "{full:?}");

    for wrapper in [
        &[
            "setpriv",
            "--inh-caps=-net_raw",
            "--bounding-set=-net_raw",
            "--ambient-caps=-all",
        ][..],
        &["capsh", "--drop=cap_net_raw", "--"][..],
    ] {
        let lines = if wrapper[0] == "capsh" {
            // capsh runs a shell command after `--`: `-c 'exe args'`.
            let exe = std::env::current_exe().unwrap();
            let script = format!(
                "exec {} --exact {PROBE_TEST} --nocapture --test-threads=1",
                exe.display()
            );
            let out = run(net
                .cmd("capsh")
                .args(["--drop=cap_net_raw", "--", "-c", &script])
                .env(PROBE_ENV, &net.b));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(probe_line)
                .collect()
        } else {
            run_probe(&net, wrapper)
        };
        assert_eq!(lines.len(), 3, "{wrapper:?}: {lines:?}");
        assert!(
            !has_cap_net_raw(&lines[0]),
            "{wrapper:?}: the child still has CAP_NET_RAW: {lines:?}"
        );
        for (line, what) in lines[1..].iter().zip(["capture", "injector"]) {
            let rest = line
                .strip_prefix(&format!("{what} denied CAP_NET_RAW "))
                .unwrap_or_else(|| {
                    panic!(
                        "{wrapper:?}: {what}: expected PermissionDenied(CAP_NET_RAW), got `{line}`"
                    )
                });
            assert!(
                rest.contains("setcap") && rest.contains("root"),
                "{what}: the message should say to run as root or use setcap: {rest}"
            );
        }
    }
}
