//! Runs the example programs (`capture`, `inject`, `demo`, `dump`) as a user would, on throwaway test
//! hosts, and checks their output, files and exit codes.
//!
//! The binaries are the ones `cargo test` builds next to this test (`target/<profile>/examples/`);
//! when they are missing (e.g. `cargo test --test examples_cli`), they are built first.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netring::pcap::{PcapReader, PcapRecord, PcapWriter};

/// Path of an example binary, building the examples if they are not there.
fn example(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/examples_cli-HASH -> target/<profile>/examples/
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("test binary lives in target/<profile>/deps");
        let dir = profile_dir.join("examples");
        // `cargo test` builds the examples; `cargo test --test examples_cli` does not, and may
        // find binaries older than the sources: use them only when they are up to date.
        let sources = newest_source();
        let fresh = |n: &&str| {
            std::fs::metadata(dir.join(n))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= sources)
        };
        if ["capture", "inject", "demo", "dump"].iter().all(fresh) {
            return dir;
        }
        // Build them into a target dir of their own: the outer cargo may still hold the lock on
        // the main one while tests run.
        let target = profile_dir.join("examples-cli-build");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--examples", "--target-dir"])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        // The same async runtimes as this test was built with.
        let features: Vec<&str> = [
            ("tokio", cfg!(feature = "tokio")),
            ("smol", cfg!(feature = "smol")),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
        if !features.is_empty() {
            cmd.arg("--features").arg(features.join(","));
        }
        run(&mut cmd);
        target
            .join(if release { "release" } else { "debug" })
            .join("examples")
    });
    let path = dir.join(name);
    assert!(path.exists(), "example binary {} missing", path.display());
    path
}

/// Modification time of the newest file the examples are built from (src/, examples/,
/// Cargo.toml).
fn newest_source() -> std::time::SystemTime {
    fn walk(path: &std::path::Path, newest: &mut std::time::SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(t) = meta.modified() {
            *newest = (*newest).max(t);
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for part in ["src", "examples", "Cargo.toml"] {
        walk(&root.join(part), &mut newest);
    }
    newest
}

/// Waits for a child up to `secs`, killing it on timeout (then panics).
fn wait_output(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "{what} did not finish within {secs} s\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    child.wait_with_output().expect("wait_with_output")
}

/// Runs an example to completion (bounded by `secs`).
fn run_example(name: &str, args: &[&str], secs: u64) -> Output {
    let child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    wait_output(child, secs, &format!("{name} {args:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// The last non-empty line of stdout.
fn final_line(out: &Output) -> String {
    stdout(out)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

/// Starts `capture` in the background and waits until it says it is listening.
struct RunningCapture {
    child: Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    /// What it said on stderr up to and including `listening on`.
    before: Vec<String>,
}

fn start_capture(args: &[&str]) -> RunningCapture {
    start_example("capture", args)
}

/// Starts example `name` in the background and waits until it says `listening on` on stderr.
fn start_example(name: &str, args: &[&str]) -> RunningCapture {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => {
                seen.push(line);
                break;
            }
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not start listening within 10 s: {seen:?}");
            }
        }
    }
    RunningCapture {
        child,
        stderr_lines: rx,
        before: seen,
    }
}

impl RunningCapture {
    fn finish(self, secs: u64) -> (Output, String) {
        let out = wait_output(self.child, secs, "capture");
        let rest: Vec<String> = self.stderr_lines.try_iter().collect();
        (out, rest.join("\n"))
    }
}

fn read_pcap(path: &str) -> Vec<PcapRecord> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
        .read_to_end(&mut bytes)
        .unwrap();
    PcapReader::new(&bytes[..])
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Lines `tcpdump -r FILE` prints (one per packet).
fn tcpdump_count(path: &str) -> usize {
    let out = run(Command::new("tcpdump").args(["-n", "-r", path]));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// tcpdump on `dev` inside the namespace, writing `file`, exiting by itself after `count`
/// packets; its stderr lines (including the closing statistics) are collected.
struct Tcpdump {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Tcpdump {
    fn start(net: &TestNet, dev: &str, file: &str, count: usize) -> Self {
        let mut child = net
            .cmd("tcpdump")
            .args(["-i", dev, "-w", file, "-n", "-U", "--immediate-mode"])
            // A small snaplen: in immediate mode libpcap sizes each ring slot for the snaplen, and
            // 16 MiB of 64 KiB slots holds only 256 frames, fewer than a burst of the TX ring.
            .args(["-s", "2048", "-B", "16384", "--time-stamp-precision=nano"])
            .args(["-c", &count.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpdump");
        let err = child.stderr.take().expect("tcpdump stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("listening on") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("tcpdump did not start listening within 10 s");
                }
            }
        }
        Tcpdump { child, lines }
    }

    /// Waits up to `secs` for tcpdump to exit by itself, then interrupts it; returns its stderr.
    fn finish(mut self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child's pid; SIGINT makes tcpdump flush and exit.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGINT);
            }
        }
        let _ = wait_output(self.child, 10, "tcpdump");
        self.lines.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// Replays `file` with `inject --read` on net.a while tcpdump records `expect` frames on net.b;
/// returns what tcpdump saw and inject's final line.
fn replay_and_record(
    net: &TestNet,
    file: &str,
    extra: &[&str],
    expect: usize,
) -> (Vec<PcapRecord>, String) {
    let seen = scratch("replayed.pcap");
    let dump = Tcpdump::start(net, &net.b, &seen, expect);
    let mut args = vec!["--netns", &net.ns, "--iface", &net.a, "--read", file];
    args.extend_from_slice(extra);
    let out = run_example("inject", &args, 60);
    assert_ok(&out, "inject --read");
    let stats = dump.finish(10);
    let records = read_pcap(&seen);
    assert_eq!(
        records.len(),
        expect,
        "tcpdump saw {} of {expect} frames: {stats}\n{}",
        records.len(),
        String::from_utf8_lossy(&net.ip(&["-s", "link"]).stdout)
    );
    let _ = std::fs::remove_file(&seen);
    (records, final_line(&out))
}

/// `--runtime` and `--backend` arguments for one combination.
fn mode(runtime: &'static str, backend: &'static str) -> [&'static str; 4] {
    ["--runtime", runtime, "--backend", backend]
}

/// Every combination this build supports (the async runtimes need their crate features).
fn combinations() -> Vec<(&'static str, &'static str)> {
    let mut runtimes = vec!["sync"];
    if cfg!(feature = "tokio") {
        runtimes.push("tokio");
    }
    if cfg!(feature = "smol") {
        runtimes.push("smol");
    }
    runtimes
        .into_iter()
        .flat_map(|r| [(r, "afpacket"), (r, "xdp")])
        .collect()
}

/// capture (on net.b) and inject (on net.a) both with `runtime` and `backend`: capture records
/// the 500 frames inject sends, the file checks out with tcpdump and byte by byte, and replaying
/// it (once, then three times) puts the same frames on the wire as tcpdump sees them. The capture
/// runs while inject sends (AF_XDP buffers only the UMEM's RX pool).
fn round_trip(runtime: &'static str, backend: &'static str) {
    let name = format!("capture_and_inject_round_trip {runtime} {backend}");
    if !can_run(&name, &["tcpdump"]) {
        return;
    }
    let net = TestNet::new();
    let file = scratch(&format!("captured-{runtime}-{backend}.pcap"));
    let m = mode(runtime, backend);

    // capture on net.b (inside the namespace via --netns), inject 500 frames on net.a.
    let mut args = vec![
        "--netns", &net.ns, "--iface", &net.b, "--count", "500", "--write", &file,
    ];
    args.extend_from_slice(&m);
    let cap = start_capture(&args);
    // It says which backend and runtime it uses: the flags were taken.
    let said = cap.before.join("\n");
    assert!(
        said.contains(&format!("backend {backend} ("))
            && said.contains(&format!("runtime {runtime}")),
        "{name}: capture's stderr: {said}"
    );
    if backend == "xdp" {
        assert!(said.contains("AF_XDP queue 0"), "{name}: {said}");
    }
    let mut args = vec![
        "--netns",
        &net.ns,
        "--iface",
        &net.a,
        "--synthetic",
        "100",
        "--count",
        "500",
    ];
    args.extend_from_slice(&m);
    let inj = run_example("inject", &args, 60);
    assert_ok(&inj, &format!("{name}: inject --synthetic"));
    assert!(
        stderr(&inj).contains(&format!("backend {backend} ("))
            && stderr(&inj).contains(&format!("runtime {runtime}")),
        "{name}: inject's stderr: {}",
        stderr(&inj)
    );
    assert_eq!(final_line(&inj), "sent=500 bytes=50000", "{name}");
    let (out, rest) = cap.finish(30);
    assert_ok(&out, &format!("{name}: capture"));
    assert_eq!(
        final_line(&out),
        "packets=500 bytes=50000 drops=0",
        "{name}: stderr: {rest}"
    );
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "{name}: capture prints exactly one line on stdout"
    );

    // The file is a valid pcap holding the 500 frames.
    assert_eq!(tcpdump_count(&file), 500, "{name}");
    let captured = read_pcap(&file);
    assert_eq!(captured.len(), 500, "{name}");
    for r in &captured {
        assert_eq!(r.data.len(), 100, "{name}");
        assert_eq!(r.wire_len, 100, "{name}");
        assert_eq!(&r.data[..6], &[0xff; 6], "{name}: broadcast destination");
        assert_eq!(&r.data[12..14], &[0x08, 0x00], "{name}: IPv4");
        assert_eq!(r.data[23], 17, "{name}: UDP");
        // The IPv4 header checksum verifies (sums to 0xffff).
        let mut sum: u32 = r.data[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "{name}: IPv4 header checksum");
        // Payload bytes 0, 1, 2, ... after the UDP header.
        for (i, b) in r.data[42..].iter().enumerate() {
            assert_eq!(*b, i as u8, "{name}: payload byte {i}");
        }
    }

    // Replaying the file puts the same 500 frames on the wire.
    let (seen, line) = replay_and_record(&net, &file, &m, 500);
    assert_eq!(line, "sent=500 bytes=50000", "{name}");
    assert_eq!(seen.len(), 500, "{name}");
    for (a, b) in seen.iter().zip(&captured) {
        assert_eq!(a.data, b.data, "{name}");
    }

    // --repeat sends the file several times.
    let mut extra = vec!["--repeat", "3"];
    extra.extend_from_slice(&m);
    let (seen, line) = replay_and_record(&net, &file, &extra, 1500);
    assert_eq!(line, "sent=1500 bytes=150000", "{name}");
    assert_eq!(seen.len(), 1500, "{name}");
    for (i, a) in seen.iter().enumerate() {
        assert_eq!(a.data, captured[i % 500].data, "{name}: repeated frame {i}");
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn capture_and_inject_round_trip() {
    round_trip("sync", "afpacket");
}

#[test]
fn capture_and_inject_round_trip_sync_xdp() {
    round_trip("sync", "xdp");
}

#[cfg(feature = "tokio")]
#[test]
fn capture_and_inject_round_trip_tokio_afpacket() {
    round_trip("tokio", "afpacket");
}

#[cfg(feature = "tokio")]
#[test]
fn capture_and_inject_round_trip_tokio_xdp() {
    round_trip("tokio", "xdp");
}

#[cfg(feature = "smol")]
#[test]
fn capture_and_inject_round_trip_smol_afpacket() {
    round_trip("smol", "afpacket");
}

#[cfg(feature = "smol")]
#[test]
fn capture_and_inject_round_trip_smol_xdp() {
    round_trip("smol", "xdp");
}

#[test]
fn inject_replays_distinct_frames_in_order() {
    if !can_run("inject_replays_distinct_frames_in_order", &["tcpdump"]) {
        return;
    }
    let net = TestNet::new();
    // 300 different frames of 60..=1514 bytes, each tagged with its index.
    let file = scratch("distinct.pcap");
    let mut frames = Vec::new();
    {
        let mut w = PcapWriter::new(std::fs::File::create(&file).unwrap()).unwrap();
        for i in 0..300u32 {
            let len = 60 + (i as usize * 97) % (1514 - 60 + 1);
            let mut f = vec![0u8; len];
            f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
            f[14..18].copy_from_slice(&i.to_be_bytes());
            for (j, b) in f[18..].iter_mut().enumerate() {
                *b = (i as usize + j) as u8;
            }
            let ts = netring::Timestamp { sec: 1, nsec: i };
            w.write_frame(ts, len, &f, None).unwrap();
            frames.push(f);
        }
        w.into_inner().unwrap();
    }
    let total: usize = frames.iter().map(Vec::len).sum();
    let (seen, line) = replay_and_record(&net, &file, &[], 300);
    assert_eq!(line, format!("sent=300 bytes={total}"));
    assert_eq!(seen.len(), 300);
    for (i, (a, b)) in seen.iter().zip(&frames).enumerate() {
        assert_eq!(&a.data, b, "frame {i} differs");
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn bad_arguments_exit_2() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("capture", &[], "--iface is required"),
        ("capture", &["--iface"], "needs a value"),
        (
            "capture",
            &["--iface", "x", "--bogus", "1"],
            "unknown argument",
        ),
        (
            "capture",
            &["--iface", "x", "--count", "ten"],
            "not a valid",
        ),
        ("capture", &["--iface", "x", "--duration", "-1"], "seconds"),
        ("capture", &["--iface", "x", "--runtime"], "needs a value"),
        (
            "capture",
            &["--iface", "x", "--runtime", "gevent"],
            "unknown runtime",
        ),
        (
            "capture",
            &["--iface", "x", "--backend", "XDP"],
            "unknown backend",
        ),
        (
            "capture",
            &["--iface", "x", "--backend", "dpdk"],
            "unknown backend",
        ),
        ("inject", &[], "--iface is required"),
        ("inject", &["--iface", "x"], "--read or --synthetic"),
        ("inject", &["--iface", "x", "--synthetic", "100"], "--count"),
        (
            "inject",
            &["--iface", "x", "--synthetic", "10", "--count", "1"],
            "out of range",
        ),
        (
            "inject",
            &["--iface", "x", "--read", "f", "--synthetic", "64"],
            "exclusive",
        ),
        (
            "inject",
            &["--iface", "x", "--read", "f", "--repeat", "0"],
            "at least 1",
        ),
        (
            "inject",
            &["--iface", "x", "--read", "f", "--count", "3"],
            "--count",
        ),
        (
            "inject",
            &["--iface", "x", "--read", "f", "--runtime", "async-std"],
            "unknown runtime",
        ),
        (
            "inject",
            &["--iface", "x", "--read", "f", "--backend", "dpdk"],
            "unknown backend",
        ),
        (
            "inject",
            &["--iface", "x", "--read", "f", "--backend"],
            "needs a value",
        ),
        (
            "inject",
            &["--iface", "x", "--frobnicate"],
            "unknown argument",
        ),
        ("demo", &["--count", "many"], "not a valid"),
        ("demo", &["--what"], "unknown argument"),
    ];
    for (name, args, msg) in cases {
        let out = run_example(name, args, 30);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name} {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(msg),
            "{name} {args:?}: expected `{msg}` in stderr: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("usage:"),
            "{name} {args:?}: no usage in stderr"
        );
        assert!(stdout(&out).is_empty(), "{name} {args:?}: stdout not empty");
    }
}

#[test]
fn missing_interface_exits_1() {
    if !can_run("missing_interface_exits_1", &[]) {
        return;
    }
    // Inside a fresh namespace, where the name surely does not exist.
    let net = TestNet::new();
    for (runtime, backend) in combinations() {
        for (name, args) in [
            ("capture", vec!["--count", "1"]),
            ("inject", vec!["--synthetic", "64", "--count", "1"]),
        ] {
            let mut all = vec!["--netns", net.ns.as_str(), "--iface", "nr-missing0"];
            all.extend(args);
            all.extend(mode(runtime, backend));
            let out = run_example(name, &all, 30);
            let what = format!("{name} {runtime} {backend}");
            assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("no such interface `nr-missing0`"),
                "{what}: {}",
                stderr(&out)
            );
            assert!(stdout(&out).is_empty(), "{what}: stdout not empty");
        }
    }
    // A namespace that does not exist is an error too (exit 1), not a panic.
    let out = run_example(
        "capture",
        &["--netns", "nr-no-such-ns", "--iface", "lo", "--count", "1"],
        30,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no network namespace"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn capture_stops_after_duration() {
    if !can_run("capture_stops_after_duration", &[]) {
        return;
    }
    let net = TestNet::new();
    for (runtime, backend) in combinations() {
        let what = format!("capture --duration {runtime} {backend}");
        let started = Instant::now();
        let mut args = vec!["--netns", &net.ns, "--iface", &net.b, "--duration", "0.5"];
        args.extend(mode(runtime, backend));
        let out = run_example("capture", &args, 30);
        assert_ok(&out, &what);
        assert_eq!(final_line(&out), "packets=0 bytes=0 drops=0", "{what}");
        assert!(started.elapsed() >= Duration::from_millis(500), "{what}");
    }
}

#[test]
fn demo_exits_0() {
    if !can_run("demo_exits_0", &[]) {
        return;
    }
    let out = run_example("demo", &[], 120);
    assert_ok(&out, "demo");
    let text = stdout(&out);
    assert!(text.contains("every frame arrived"), "demo output:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// dump: a small tcpdump.

/// What `tcpdump -nn -q -r FILE [EXPR]` prints, without the timestamps: one line per packet.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
fn tcpdump_q(file: &str, expr: &str) -> Vec<String> {
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-nn", "-q", "-r", file]).stderr(Stdio::null());
    if !expr.is_empty() {
        cmd.arg(expr);
    }
    String::from_utf8_lossy(&run(&mut cmd).stdout)
        .lines()
        .map(|l| l.split_once(' ').map_or("", |(_, rest)| rest).to_owned())
        .collect()
}

/// The VLAN ids of a frame as it is on the wire, outermost first.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
fn vlan_ids(frame: &[u8]) -> Vec<u16> {
    let mut ids = Vec::new();
    let mut at = 12;
    while frame.len() >= at + 4
        && matches!(
            u16::from_be_bytes([frame[at], frame[at + 1]]),
            0x8100 | 0x88a8
        )
    {
        ids.push(u16::from_be_bytes([frame[at + 2], frame[at + 3]]) & 0x0fff);
        at += 4;
    }
    ids
}

/// Checks dump's packet lines against the frames and tcpdump's lines for them: the time is
/// `HH:MM:SS.micro`, the `vlan ID, ` prefixes are the frame's tags, the rest is what tcpdump
/// printed.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
#[track_caller]
fn check_dump_lines(what: &str, lines: &[&str], frames: &[&Vec<u8>], tcpdump: &[String]) {
    assert_eq!(lines.len(), frames.len(), "{what}: packet lines");
    assert_eq!(tcpdump.len(), frames.len(), "{what}: tcpdump's lines");
    for (i, line) in lines.iter().enumerate() {
        let (time, mut rest) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{what}: line {i} `{line}` has no time"));
        let digits = time.replace([':', '.'], "");
        assert!(
            time.len() == 15
                && time.as_bytes()[2] == b':'
                && time.as_bytes()[5] == b':'
                && time.as_bytes()[8] == b'.'
                && digits.len() == 12
                && digits.bytes().all(|b| b.is_ascii_digit()),
            "{what}: line {i}: time `{time}` is not HH:MM:SS.micro"
        );
        let mut vlans = Vec::new();
        while let Some(r) = rest.strip_prefix("vlan ") {
            let (id, r) = r
                .split_once(", ")
                .unwrap_or_else(|| panic!("{what}: line {i}: `{line}`"));
            vlans.push(id.parse::<u16>().expect("a VLAN id"));
            rest = r;
        }
        assert_eq!(vlans, vlan_ids(frames[i]), "{what}: line {i}: `{line}`");
        assert_eq!(
            rest, tcpdump[i],
            "{what}: line {i} (tcpdump -nn -q says the second)"
        );
    }
}

/// dump on net.b (`--count`, `--write`) while tcpreplay sends 240 varied frames (IPv4 TCP/UDP/
/// ICMP, ARP, IPv6, VLAN tags) into net.a at 150 frames/s: one line per frame matching tcpdump's,
/// the closing counters, a rate line on stderr, and a pcap file tcpdump reads back byte for byte.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
fn dump_matches_tcpdump(runtime: &'static str, backend: &'static str, seed: u64) {
    let name = format!("dump_matches_tcpdump {runtime} {backend}");
    if !can_run(&name, &["tcpdump", "tcpreplay", "scapy", "taskset"]) {
        return;
    }
    let net = TestNet::new();
    let src = common::frames::scapy_varied(&format!("dump-{runtime}-{backend}"), 240, seed, None);
    let file = scratch(&format!("dump-{runtime}-{backend}.pcap"));
    let mut args = vec![
        "--netns", &net.ns, "--iface", &net.b, "--count", "240", "--write", &file,
    ];
    args.extend(mode(runtime, backend));
    let dump = start_example("dump", &args);
    let sent = common::frames::tcpreplay(&net, &net.a, &src.file, 150);
    assert_eq!(sent, 240, "{name}: tcpreplay's count");
    let (out, rest) = dump.finish(30);
    assert_ok(&out, &name);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        241,
        "{name}: 240 packet lines and the counters\n{text}"
    );
    let bytes: usize = src.frames.iter().map(Vec::len).sum();
    assert_eq!(
        lines[240],
        format!("packets=240 bytes={bytes} drops=0"),
        "{name}"
    );
    let frames: Vec<&Vec<u8>> = src.frames.iter().collect();
    check_dump_lines(&name, &lines[..240], &frames, &tcpdump_q(&src.file, ""));
    // The traffic lasted 1.6 s: at least one rate line.
    assert!(
        rest.lines()
            .any(|l| l.starts_with("dump: ") && l.contains(" pkt/s, ") && l.contains(" Mbit/s")),
        "{name}: no rate line on stderr: {rest}"
    );
    // The file: tcpdump reads 240 packets, the frames as scapy wrote them (tags put back).
    assert_eq!(tcpdump_count(&file), 240, "{name}");
    let written = read_pcap(&file);
    for (i, (r, f)) in written.iter().zip(&src.frames).enumerate() {
        assert_eq!(&r.data, f, "{name}: frame {i} in the written file");
    }
    assert_eq!(written.len(), 240, "{name}");
    let _ = std::fs::remove_file(&file);
}

#[cfg(feature = "tokio")]
#[test]
fn dump_matches_tcpdump_tokio_afpacket() {
    dump_matches_tcpdump("tokio", "afpacket", 31);
}

#[cfg(feature = "tokio")]
#[test]
fn dump_matches_tcpdump_tokio_xdp() {
    dump_matches_tcpdump("tokio", "xdp", 32);
}

#[cfg(feature = "smol")]
#[test]
fn dump_matches_tcpdump_smol_afpacket() {
    dump_matches_tcpdump("smol", "afpacket", 33);
}

#[cfg(feature = "smol")]
#[test]
fn dump_matches_tcpdump_smol_xdp() {
    dump_matches_tcpdump("smol", "xdp", 34);
}

/// dump with a filter expression (given as several arguments): only the frames tcpdump's same
/// filter selects from the file are printed, and they are the ones tcpdump prints. The
/// expression does not say `vlan`, so (as in tcpdump) tagged frames do not match.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
fn dump_applies_the_filter(runtime: &'static str, backend: &'static str, seed: u64) {
    let name = format!("dump_applies_the_filter {runtime} {backend}");
    if !can_run(&name, &["tcpdump", "tcpreplay", "scapy", "taskset"]) {
        return;
    }
    let net = TestNet::new();
    let src = common::frames::scapy_varied(&format!("dump-filter-{backend}"), 240, seed, None);
    let expr = "udp or arp";
    let want = tcpdump_q(&src.file, expr);
    assert!(
        want.len() > 40 && want.len() < 200,
        "{name}: {} frames match",
        want.len()
    );
    let count = want.len().to_string();
    let mut args = vec!["--netns", &net.ns, "--iface", &net.b, "--count", &count];
    args.extend(mode(runtime, backend));
    args.extend(["udp", "or", "arp"]);
    let dump = start_example("dump", &args);
    assert!(
        dump.before
            .iter()
            .any(|l| l.contains("filter `udp or arp`")),
        "{name}: {:?}",
        dump.before
    );
    assert_eq!(
        common::frames::tcpreplay(&net, &net.a, &src.file, 1000),
        240,
        "{name}"
    );
    let (out, rest) = dump.finish(30);
    assert_ok(&out, &format!("{name}: {rest}"));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let n = want.len();
    assert_eq!(
        lines.len(),
        n + 1,
        "{name}: {n} packet lines and the counters\n{text}"
    );
    // Which frames match, by the same rule: untagged UDP (IPv4 or IPv6) or ARP.
    let matching: Vec<&Vec<u8>> = src
        .frames
        .iter()
        .filter(|f| {
            let et = u16::from_be_bytes([f[12], f[13]]);
            et == 0x0806 || (et == 0x0800 && f[23] == 17) || (et == 0x86dd && f[20] == 17)
        })
        .collect();
    assert_eq!(
        matching.len(),
        n,
        "{name}: frames tcpdump's filter selected"
    );
    check_dump_lines(&name, &lines[..n], &matching, &want);
    let bytes: usize = matching.iter().map(|f| f.len()).sum();
    assert_eq!(
        lines[n],
        format!("packets={n} bytes={bytes} drops=0"),
        "{name}"
    );
}

#[cfg(feature = "tokio")]
#[test]
fn dump_applies_the_filter_tokio_afpacket() {
    dump_applies_the_filter("tokio", "afpacket", 41);
}

#[cfg(feature = "smol")]
#[test]
fn dump_applies_the_filter_smol_xdp() {
    dump_applies_the_filter("smol", "xdp", 42);
}

/// dump stops on SIGINT and still prints its counters (nothing arrived: all zero).
#[cfg(any(feature = "tokio", feature = "smol"))]
#[test]
fn dump_stops_on_sigint() {
    if !can_run("dump_stops_on_sigint", &[]) {
        return;
    }
    let net = TestNet::new();
    for backend in ["afpacket", "xdp"] {
        let dump = start_example(
            "dump",
            &["--netns", &net.ns, "--iface", &net.b, "--backend", backend],
        );
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(dump.child.id() as i32, libc::SIGINT);
        }
        let (out, rest) = dump.finish(10);
        assert_ok(&out, &format!("dump {backend}: {rest}"));
        assert_eq!(
            stdout(&out),
            "packets=0 bytes=0 drops=0\n",
            "dump {backend}"
        );
    }
}

#[cfg(any(feature = "tokio", feature = "smol"))]
#[test]
fn dump_bad_arguments_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--iface is required"),
        (&["--iface"], "needs a value"),
        (&["--iface", "x", "--bogus", "1"], "unknown argument"),
        (&["--iface", "x", "--count", "ten"], "not a valid"),
        (&["--iface", "x", "--backend", "dpdk"], "unknown backend"),
        (&["--iface", "x", "--runtime", "gevent"], "unknown runtime"),
        (&["--iface", "x", "--runtime", "sync"], "async only"),
        (
            &["--iface", "x", "tcp", "and", "and"],
            "bad filter expression: ",
        ),
        (&["--iface", "x", "port", "99999"], "bad filter expression"),
    ];
    for (args, msg) in cases {
        let out = run_example("dump", args, 30);
        assert_eq!(
            out.status.code(),
            Some(2),
            "dump {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(msg),
            "dump {args:?}: expected `{msg}` in stderr: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("usage:"),
            "dump {args:?}: no usage in stderr"
        );
        assert!(stdout(&out).is_empty(), "dump {args:?}: stdout not empty");
    }
}

#[cfg(any(feature = "tokio", feature = "smol"))]
#[test]
fn dump_missing_interface_exits_1() {
    if !can_run("dump_missing_interface_exits_1", &[]) {
        return;
    }
    let net = TestNet::new();
    for backend in ["afpacket", "xdp"] {
        let out = run_example(
            "dump",
            &[
                "--netns",
                &net.ns,
                "--iface",
                "nr-missing0",
                "--backend",
                backend,
            ],
            30,
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "dump {backend}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("no such interface `nr-missing0`"),
            "dump {backend}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "dump {backend}: stdout not empty");
    }
}
