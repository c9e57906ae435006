//! Start-up isolation: a capture delivers nothing from before it was fully set up. Opening a
//! capture on an idle interface while another interface of the same namespace is flooded must
//! yield no frame at all, and a filtered capture opened on the flooded interface must yield
//! nothing the filter rejects, however many times it is opened.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use netring::{BpfProgram, Capture, Injector};

const OPENS: usize = 100;
const FLOOD_DPORT: u16 = 5555;

/// Reads a statistics counter of `dev` inside the namespace (`/sys/class/net/DEV/statistics`).
fn counter(net: &TestNet, dev: &str, name: &str) -> u64 {
    let out = run(net
        .cmd("cat")
        .arg(format!("/sys/class/net/{dev}/statistics/{name}")));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("parsing {dev} {name}: {e}"))
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A flood generator running in its own process group (trafgen forks a worker), killed as a
/// group on drop.
struct Flood {
    child: std::process::Child,
}

impl Drop for Flood {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group our own child leads.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Starts trafgen flooding `dev` with UDP to port `FLOOD_DPORT`, addressed to `dst_mac`, at
/// 300 kpps. Bounded: at most 9 M packets (30 s), and killed when the returned handle drops.
fn start_flood(net: &TestNet, dev: &str, dst_mac: [u8; 6]) -> Flood {
    use std::os::unix::process::CommandExt;
    let conf = scratch("flood.trafgen");
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={}, sa=02:00:00:00:00:01, type=0x0800), \
             ipv4(saddr=10.9.0.1, daddr=10.9.0.2, proto=17), \
             udp(sp=4444, dp={FLOOD_DPORT}), fill(0x41, 32) }}\n",
            mac_str(dst_mac)
        ),
    )
    .unwrap();
    let child = net
        .cmd("trafgen")
        .args([
            "--no-sock-mem",
            "--notouch-irq",
            "--no-cpu-stats",
            "--cpus",
            "1",
            "--num",
            "9000000",
            "--rate",
            "300000pps",
            "--out",
            dev,
            "--in",
            &conf,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawning trafgen");
    Flood { child }
}

/// Waits until `dev` has received at least `n` more packets than `from` (the flood is running).
fn wait_for_rx(net: &TestNet, dev: &str, from: u64, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = counter(net, dev, "rx_packets");
        if now >= from + n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the flood did not start: {dev} rx_packets {from} -> {now}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tcpdump_dd(expr: &str) -> BpfProgram {
    let out = run(Command::new("tcpdump").args(["-dd", "-y", "EN10MB", expr]));
    BpfProgram::from_tcpdump_dd(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// Reads a fresh capture for a short while; returns (frames delivered, their ifindexes).
fn read_briefly(cap: &mut Capture) -> (usize, BTreeSet<u32>) {
    let mut n = 0;
    let mut ifindexes = BTreeSet::new();
    let _ = cap.try_next_batch().unwrap().map(|b| {
        n += b.len();
        ifindexes.extend(b.iter().map(|p| p.ifindex()));
    });
    for _ in 0..3 {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(20))).unwrap() {
            n += b.len();
            ifindexes.extend(b.iter().map(|p| p.ifindex()));
        }
    }
    (n, ifindexes)
}

#[test]
fn idle_interface_sees_nothing_while_another_is_flooded() {
    if !can_run(
        "idle_interface_sees_nothing_while_another_is_flooded",
        &["trafgen"],
    ) {
        return;
    }
    let net = TestNet::new();
    // A second, idle veth pair in the same namespace.
    let (idle, idle_peer) = ("nridle0", "nridle1");
    net.ip(&[
        "link", "add", idle, "type", "veth", "peer", "name", idle_peer,
    ]);
    for dev in [idle, idle_peer] {
        net.ip(&["link", "set", dev, "up"]);
    }
    let idle_index = net
        .within(|| netring::Interface::by_name(idle))
        .unwrap()
        .index();

    let rx0 = counter(&net, &net.b, "rx_packets");
    let flood = start_flood(&net, &net.a, net.mac(&net.b));
    let rx_start = wait_for_rx(&net, &net.b, rx0, 1000);

    // The flood is visible to a capture on the flooded interface.
    {
        let mut witness = net.within(|| Capture::open(&net.b)).unwrap();
        let b = witness
            .next_batch(Some(Duration::from_secs(2)))
            .unwrap()
            .expect("a capture on the flooded interface saw nothing");
        assert!(!b.is_empty());
        let p = b.iter().next().unwrap();
        assert_eq!(&p.data()[36..38], &FLOOD_DPORT.to_be_bytes());
    }

    let mut delivered = 0;
    let mut foreign = BTreeSet::new();
    for i in 0..OPENS {
        let mut cap = net.within(|| Capture::open(idle)).unwrap();
        let (n, ifs) = read_briefly(&mut cap);
        delivered += n;
        foreign.extend(ifs.into_iter().filter(|&x| x != idle_index));
        assert_eq!(
            delivered, 0,
            "open #{i}: the capture on idle {idle} (index {idle_index}) delivered {n} frames; \
             ifindexes not {idle_index}: {foreign:?}"
        );
        assert_eq!(cap.cumulative_stats().unwrap().packets, 0, "open #{i}");
    }

    let rx_end = counter(&net, &net.b, "rx_packets");
    drop(flood);
    assert!(
        rx_end > rx_start + 10_000,
        "the flood did not keep running during the opens: {} rx_packets {rx_start} -> {rx_end}",
        net.b
    );
    // The idle pair really stayed idle (nothing legitimately arrived there).
    assert_eq!(counter(&net, idle, "rx_packets"), 0);
    assert_eq!(counter(&net, idle_peer, "rx_packets"), 0);
    eprintln!(
        "{OPENS} opens on {idle} during a flood of {} packets on {}: nothing delivered",
        rx_end - rx_start,
        net.b
    );
}

#[test]
fn filtered_capture_on_flooded_interface_sees_nothing_rejected() {
    if !can_run(
        "filtered_capture_on_flooded_interface_sees_nothing_rejected",
        &["trafgen", "tcpdump"],
    ) {
        return;
    }
    let net = TestNet::new();
    let filter = tcpdump_dd("udp port 9999");

    let rx0 = counter(&net, &net.b, "rx_packets");
    let flood = start_flood(&net, &net.a, net.mac(&net.b));
    let rx_start = wait_for_rx(&net, &net.b, rx0, 1000);

    for i in 0..OPENS {
        let mut cap = net
            .within(|| Capture::builder(&net.b).filter(filter.clone()).open())
            .unwrap();
        let (n, ifs) = read_briefly(&mut cap);
        assert_eq!(
            n, 0,
            "open #{i}: a capture filtered on `udp port 9999` delivered {n} frames of a \
             udp port {FLOOD_DPORT} flood (ifindexes {ifs:?})"
        );
        let s = cap.cumulative_stats().unwrap();
        assert_eq!(s.packets, 0, "open #{i}: {s:?}");
    }

    // The filter is not simply rejecting everything: frames to udp port 9999 sent into the flood
    // arrive, and only they do.
    let mut cap = net
        .within(|| Capture::builder(&net.b).filter(filter.clone()).open())
        .unwrap();
    let mut tx = net.within(|| Injector::open(&net.a)).unwrap();
    let dst = net.mac(&net.b);
    let mut sent = Vec::new();
    for k in 0..5u8 {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[0x08, 0x00]);
        // IPv4, 20-byte header, total length 20 + 8 + 8, UDP, checksum left 0.
        f.extend_from_slice(&[0x45, 0, 0, 36, 0, k, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 9, 0, 1, 10, 9, 0, 2]);
        f.extend_from_slice(&[0x10, 0x00, 0x27, 0x0f, 0, 16, 0, 0]);
        f.extend_from_slice(&[b'N', b'R', b'S', b'U', k, k, k, k]);
        tx.send(&f).unwrap();
        sent.push(f);
    }
    assert!(tx.wait_sent(Some(Duration::from_secs(5))).unwrap());
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < sent.len() && Instant::now() < deadline {
        if let Some(b) = cap.next_batch(Some(Duration::from_millis(100))).unwrap() {
            got.extend(b.iter().map(|p| p.data().to_vec()));
        }
    }
    while let Some(b) = cap.next_batch(Some(Duration::from_millis(100))).unwrap() {
        got.extend(b.iter().map(|p| p.data().to_vec()));
    }
    assert_eq!(got, sent, "exactly the udp port 9999 frames, in order");

    let rx_end = counter(&net, &net.b, "rx_packets");
    drop(flood);
    assert!(
        rx_end > rx_start + 10_000,
        "the flood did not keep running during the opens: {} rx_packets {rx_start} -> {rx_end}",
        net.b
    );
    eprintln!(
        "{OPENS} filtered opens on {} during a flood of {} packets: nothing delivered",
        net.b,
        rx_end - rx_start
    );
}
