//! The XDP program side of AF_XDP, against the kernel: loading (and the verifier), the XSKMAP,
//! attaching to a veth through a BPF link in native and generic mode, detaching on drop and when
//! the owning process dies however it dies, and the `XDP_PASS` fallback that keeps traffic
//! flowing to the kernel stack for queues without a socket.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netring::Error;
use netring::xdp::{AttachMode, Insn, Match, Reg, XdpAction, XdpAttachment, XdpProgram, XskMap};

/// What `ip link show` says about XDP on a device: the attach flag it prints after the MTU
/// (`xdp` native, `xdpgeneric`, ...) and the program id on the `prog/xdp id N` line.
#[derive(Debug, PartialEq, Eq)]
struct IpXdp {
    flag: Option<String>,
    prog_id: Option<u32>,
    text: String,
}

fn ip_xdp(net: &TestNet, dev: &str) -> IpXdp {
    let out = net.ip(&["link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().next().unwrap_or("");
    let flag = first
        .split_whitespace()
        .find(|t| t.starts_with("xdp"))
        .map(str::to_owned);
    let prog_id = text.lines().find_map(|l| {
        let mut t = l.split_whitespace();
        while let Some(tok) = t.next() {
            if tok.starts_with("prog/xdp") && t.next() == Some("id") {
                return t.next().and_then(|id| id.parse().ok());
            }
        }
        None
    });
    IpXdp {
        flag,
        prog_id,
        text,
    }
}

/// Polls `ip link show` until `done` holds (liveness bound: 5 s), returning the last state.
fn wait_ip_xdp(net: &TestNet, dev: &str, done: impl Fn(&IpXdp) -> bool) -> IpXdp {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = ip_xdp(net, dev);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_xdp(net: &TestNet, dev: &str, what: &str) {
    let s = wait_ip_xdp(net, dev, |s| s.flag.is_none() && s.prog_id.is_none());
    assert!(
        s.flag.is_none() && s.prog_id.is_none(),
        "{what}: `{dev}` still has an XDP program:\n{}",
        s.text
    );
}

fn attach_in(net: &TestNet, prog: &XdpProgram, mode: AttachMode) -> netring::Result<XdpAttachment> {
    net.within(|| prog.attach(&net.b, mode))
}

#[test]
fn auto_attaches_natively_to_veth_and_drop_detaches() {
    if !can_run("auto_attaches_natively_to_veth_and_drop_detaches", &[]) {
        return;
    }
    let net = TestNet::new();
    assert_no_xdp(&net, &net.b, "before");
    let prog = XdpProgram::load_redirect(4, None).unwrap();
    assert_eq!(prog.xsk_map().max_entries(), 4);
    let id = prog.id().unwrap();

    let att = attach_in(&net, &prog, AttachMode::Auto).unwrap();
    eprintln!("veth attached in {} mode", att.mode());
    assert_eq!(att.mode(), AttachMode::Native, "veth supports native XDP");
    assert_eq!(att.interface(), net.b);
    assert_eq!(att.program_id().unwrap(), id);
    assert!(att.link_id().unwrap() > 0);
    assert!(att.is_attached().unwrap());
    let s = ip_xdp(&net, &net.b);
    assert_eq!(s.flag.as_deref(), Some("xdp"), "{}", s.text);
    assert_eq!(s.prog_id, Some(id), "{}", s.text);
    // The peer is untouched.
    assert_eq!(ip_xdp(&net, &net.a).flag, None);

    // The program outlives its XdpProgram while attached: the link holds it.
    drop(prog);
    assert_eq!(ip_xdp(&net, &net.b).prog_id, Some(id));

    drop(att);
    assert_no_xdp(&net, &net.b, "after dropping the attachment");
}

#[test]
fn generic_and_native_modes_explicitly() {
    if !can_run("generic_and_native_modes_explicitly", &[]) {
        return;
    }
    let net = TestNet::new();
    let prog = XdpProgram::load_redirect(2, Some(Match::ipv4().udp_dst_port(4789))).unwrap();
    let id = prog.id().unwrap();

    let att = attach_in(&net, &prog, AttachMode::Generic).unwrap();
    assert_eq!(att.mode(), AttachMode::Generic);
    let s = ip_xdp(&net, &net.b);
    assert_eq!(s.flag.as_deref(), Some("xdpgeneric"), "{}", s.text);
    assert_eq!(s.prog_id, Some(id), "{}", s.text);
    att.detach().unwrap();
    assert_no_xdp(&net, &net.b, "after detach()");

    let att = attach_in(&net, &prog, AttachMode::Native).unwrap();
    assert_eq!(att.mode(), AttachMode::Native);
    let s = ip_xdp(&net, &net.b);
    assert_eq!(s.flag.as_deref(), Some("xdp"), "{}", s.text);
    drop(att);
    assert_no_xdp(&net, &net.b, "after drop");
}

#[test]
fn auto_falls_back_to_generic_where_native_is_refused() {
    if !can_run("auto_falls_back_to_generic_where_native_is_refused", &[]) {
        return;
    }
    let prog = XdpProgram::load_redirect(1, None).unwrap();

    // The namespace's own loopback has no native XDP at all.
    let net = TestNet::new();
    match net.within(|| prog.attach("lo", AttachMode::Native)) {
        Err(e @ Error::XdpUnsupported { .. }) => {
            let msg = e.to_string();
            eprintln!("native on lo: {msg}");
            assert!(msg.contains("`lo`") && msg.contains("Generic"), "{msg}");
        }
        other => panic!("native on lo: expected XdpUnsupported, got {other:?}"),
    }
    let att = net.within(|| prog.attach("lo", AttachMode::Auto)).unwrap();
    assert_eq!(att.mode(), AttachMode::Generic);
    let s = ip_xdp(&net, "lo");
    assert_eq!(s.flag.as_deref(), Some("xdpgeneric"), "{}", s.text);
    drop(att);
    assert_no_xdp(&net, "lo", "lo after drop");

    // A veth whose peer's MTU is too large for single-buffer native XDP: the driver refuses
    // (ERANGE), Auto falls back.
    let jumbo = TestNet::with_mtu(9000);
    match attach_in(&jumbo, &prog, AttachMode::Native) {
        Err(e @ Error::XdpAttach { .. }) => {
            let msg = e.to_string();
            eprintln!("native at MTU 9000: {msg}");
            assert!(msg.contains("native mode") && msg.contains("MTU"), "{msg}");
            assert_eq!(e.raw_os_error(), Some(libc::ERANGE), "{e:?}");
        }
        other => panic!("native at MTU 9000: expected XdpAttach, got {other:?}"),
    }
    let att = attach_in(&jumbo, &prog, AttachMode::Auto).unwrap();
    assert_eq!(att.mode(), AttachMode::Generic);
    let s = ip_xdp(&jumbo, &jumbo.b);
    assert_eq!(s.flag.as_deref(), Some("xdpgeneric"), "{}", s.text);
}

#[test]
fn a_second_program_is_refused_while_one_is_attached() {
    if !can_run("a_second_program_is_refused_while_one_is_attached", &[]) {
        return;
    }
    let net = TestNet::new();
    let first = XdpProgram::load_redirect(1, None).unwrap();
    let second = XdpProgram::load_redirect(1, None).unwrap();
    let att = attach_in(&net, &first, AttachMode::Auto).unwrap();
    for mode in [AttachMode::Auto, AttachMode::Native, AttachMode::Generic] {
        match attach_in(&net, &second, mode) {
            Err(e @ Error::XdpAttach { .. }) => {
                let msg = e.to_string();
                eprintln!("{mode}: {msg}");
                assert!(
                    msg.contains(&net.b) && msg.contains("detach it first"),
                    "{mode}: {msg}"
                );
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)),
                    "{mode}: {e:?}"
                );
            }
            other => panic!("{mode}: expected XdpAttach, got {other:?}"),
        }
    }
    // Still the first one.
    assert_eq!(ip_xdp(&net, &net.b).prog_id, Some(first.id().unwrap()));
    drop(att);
    assert_no_xdp(&net, &net.b, "after drop");
    // Now the second one attaches.
    let att = attach_in(&net, &second, AttachMode::Auto).unwrap();
    assert_eq!(ip_xdp(&net, &net.b).prog_id, Some(second.id().unwrap()));
    drop(att);
}

#[test]
fn deleting_the_interface_detaches_and_unknown_interfaces_are_named() {
    if !can_run(
        "deleting_the_interface_detaches_and_unknown_interfaces_are_named",
        &[],
    ) {
        return;
    }
    let net = TestNet::new();
    let prog = XdpProgram::load_redirect(1, None).unwrap();
    let att = attach_in(&net, &prog, AttachMode::Auto).unwrap();
    assert!(att.is_attached().unwrap());
    net.ip(&["link", "del", &net.b]);
    assert!(!att.is_attached().unwrap());
    drop(att);
    match net.within(|| prog.attach("nr-no-such", AttachMode::Auto)) {
        Err(Error::NoSuchInterface { name }) => assert_eq!(name, "nr-no-such"),
        other => panic!("expected NoSuchInterface, got {other:?}"),
    }
}

// --- The kernel detaches when the owner dies ------------------------------------------------

const CHILD_ENV: &str = "NETRING_XDP_CHILD";
const CHILD_TEST: &str = "abandoned_attachments_are_detached_by_the_kernel";

/// Child side: attach in the namespace it was started in, report, then end as told.
fn child(how: &str, dev: &str) {
    let prog = XdpProgram::load_redirect(2, None).unwrap();
    let att = prog.attach(dev, AttachMode::Auto).unwrap();
    assert!(att.is_attached().unwrap());
    println!("ATTACHED {} {}", prog.id().unwrap(), att.mode());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    match how {
        "panic" => panic!("deliberate panic with the XDP program attached"),
        "abort" => std::process::abort(),
        "exit" => std::process::exit(7), // no destructors run
        "kill" => {
            // Wait for SIGKILL (bounded: the parent kills within seconds).
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(3);
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_child(net: &TestNet, how: &str) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    net.cmd(exe.to_str().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{how} {}", net.b))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until its `ATTACHED id mode` line (30 s bound); returns the id.
fn read_attached(child: &mut std::process::Child) -> u32 {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("ATTACHED ") {
                let _ = tx.send(line[i + 9..].to_owned());
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the child did not report ATTACHED within 30 s");
    let mut parts = line.split_whitespace();
    let id = parts.next().unwrap().parse().unwrap();
    assert_eq!(parts.next(), Some("native"), "{line}");
    id
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn abandoned_attachments_are_detached_by_the_kernel() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (how, dev) = spec.split_once(' ').unwrap();
        child(how, dev);
        return;
    }
    if !can_run(CHILD_TEST, &[]) {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let net = TestNet::new();
    for how in ["kill", "abort", "exit", "panic"] {
        let mut child = spawn_child(&net, how);
        let id = read_attached(&mut child);
        if how == "kill" {
            // Attached while the child lives...
            let s = ip_xdp(&net, &net.b);
            assert_eq!(s.prog_id, Some(id), "{}", s.text);
            child.kill().unwrap(); // SIGKILL
        }
        let status = wait_exit(&mut child);
        match how {
            "kill" => assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}"),
            "abort" => assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}"),
            "exit" => assert_eq!(status.code(), Some(7), "{status:?}"),
            _ => assert!(!status.success(), "the panicking child succeeded"),
        }
        // ...and gone once it is dead, with no destructor having run (except for the panic).
        assert_no_xdp(&net, &net.b, &format!("after the child's {how}"));
    }
}

// --- The verifier ---------------------------------------------------------------------------

#[test]
fn invalid_programs_give_the_verifier_log() {
    if !can_run("invalid_programs_give_the_verifier_log", &[]) {
        return;
    }
    let refused: Vec<(&str, Vec<Insn>, &str)> = vec![
        (
            "reads r2 uninitialised",
            vec![Insn::mov64_reg(Reg::R0, Reg::R2), Insn::exit()],
            "R2",
        ),
        ("no exit", vec![Insn::mov64_imm(Reg::R0, 2)], "exit"),
        (
            "jumps out of the program",
            vec![Insn::mov64_imm(Reg::R0, 2), Insn::ja(5), Insn::exit()],
            "jump",
        ),
        (
            "reads the packet without a bounds check",
            vec![
                Insn::ldx_mem(netring::xdp::MemSize::W, Reg::R2, Reg::R1, 0),
                Insn::ldx_mem(netring::xdp::MemSize::B, Reg::R0, Reg::R2, 12),
                Insn::exit(),
            ],
            "packet",
        ),
    ];
    for (what, insns, needle) in refused {
        let map = XskMap::new(1).unwrap();
        match XdpProgram::load_insns(&insns, "MIT", map) {
            Err(Error::BpfVerifier { log }) => {
                eprintln!("{what}:\n{log}");
                assert!(!log.trim().is_empty(), "{what}: empty log");
                assert!(log.contains(needle), "{what}: `{needle}` not in\n{log}");
            }
            other => panic!("{what}: expected BpfVerifier, got {other:?}"),
        }
    }
    // A valid hand-written program loads: always XDP_DROP.
    let map = XskMap::new(1).unwrap();
    let drop_all = [Insn::mov64_imm(Reg::R0, 1), Insn::exit()];
    let prog = XdpProgram::load_insns(&drop_all, "MIT", map).unwrap();
    assert_eq!(prog.test_run(&[0u8; 64]).unwrap(), XdpAction::Drop);
}

#[test]
fn simple_match_programs_pass_the_verifier() {
    if !can_run("simple_match_programs_pass_the_verifier", &[]) {
        return;
    }
    let matches = [
        Match::ethertype(0x88f7),
        Match::ipv4(),
        Match::ipv6(),
        Match::ipv4().ip_protocol(17),
        Match::ipv6().ip_protocol(58),
        Match::ipv4().udp_dst_port(4789),
        Match::ipv6().udp_dst_port(4789),
        Match::ipv4().ip_protocol(6).dst_port(443),
        Match::ipv6().ip_protocol(132).dst_port(9),
    ];
    let mut frame = vec![0u8; 64];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    for m in matches {
        let prog = XdpProgram::load_redirect(4, Some(m)).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        // No socket anywhere: the kernel stack gets the frame whether it matched or not.
        assert_eq!(prog.test_run(&frame).unwrap(), XdpAction::Pass, "{m:?}");
    }
    // Nonsense is refused before anything is loaded.
    for bad in [
        Match::ethertype(0x0806).ip_protocol(17),
        Match::ipv4().ip_protocol(1).dst_port(7),
    ] {
        assert!(
            matches!(
                XdpProgram::load_redirect(1, Some(bad)),
                Err(Error::InvalidConfig(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        XdpProgram::load_redirect(0, None),
        Err(Error::InvalidConfig(_))
    ));
}

// --- The XSKMAP and adopted programs ----------------------------------------------------------

#[test]
fn xsk_map_checks_queues_and_sockets() {
    if !can_run("xsk_map_checks_queues_and_sockets", &[]) {
        return;
    }
    let prog = XdpProgram::load_redirect(4, None).unwrap();
    let map = prog.xsk_map();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    match map.insert(4, &udp) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("queue 4"), "{msg}"),
        other => panic!("queue 4 of 4: {other:?}"),
    }
    match map.insert(0, &udp) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("AF_XDP"), "{msg}"),
        other => panic!("a UDP socket: {other:?}"),
    }
    let file = std::fs::File::open("/proc/self/status").unwrap();
    assert!(matches!(map.insert(1, &file), Err(Error::InvalidConfig(_))));
    // Removing an empty slot is fine; one past the end is not.
    map.remove(3).unwrap();
    assert!(matches!(map.remove(4), Err(Error::InvalidConfig(_))));
    assert!(map.id().unwrap() > 0);
}

#[test]
fn from_user_adopts_xdp_programs_and_refuses_other_objects() {
    if !can_run(
        "from_user_adopts_xdp_programs_and_refuses_other_objects",
        &[],
    ) {
        return;
    }
    let ours = XdpProgram::load_redirect(3, None).unwrap();
    let dup_prog = || ours.as_fd().try_clone_to_owned().unwrap();
    let dup_map = || ours.xsk_map().as_fd().try_clone_to_owned().unwrap();

    let adopted = XdpProgram::from_user(dup_prog(), dup_map()).unwrap();
    assert_eq!(adopted.id().unwrap(), ours.id().unwrap());
    assert_eq!(
        adopted.xsk_map().id().unwrap(),
        ours.xsk_map().id().unwrap()
    );
    assert_eq!(adopted.xsk_map().max_entries(), 3);

    let file = || std::fs::File::open("/proc/self/status").unwrap().into();
    for (what, prog, map) in [
        ("map as program", dup_map(), dup_map()),
        ("program as map", dup_prog(), dup_prog()),
        ("file as program", file(), dup_map()),
        ("file as map", dup_prog(), file()),
    ] {
        match XdpProgram::from_user(prog, map) {
            Err(Error::InvalidConfig(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
}

// --- Without sockets, traffic still reaches the kernel stack ------------------------------------

const DST_IP: &str = "10.201.0.2";
const SRC_IP: &str = "10.201.0.99";
const PORT: u16 = 9999;

/// Sends `n` UDP datagrams to `DST_IP:PORT` from `net.a` with scapy, payload `TAG-i`.
fn scapy_udp(net: &TestNet, tag: &str, n: usize) {
    let mac = net
        .mac(&net.b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let script = format!(
        r#"
from scapy.all import Ether, IP, UDP, Raw, sendp
f = [Ether(src="02:00:00:00:00:99", dst="{mac}") / IP(src="{SRC_IP}", dst="{DST_IP}")
     / UDP(sport=5555, dport={PORT}) / Raw(("{tag}-%d" % i).encode()) for i in range({n})]
sendp(f, iface="{dev}", verbose=0)
"#,
        dev = net.a
    );
    run(Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "60",
            "ip",
            "netns",
            "exec",
            &net.ns,
            SCAPY_PYTHON,
            "-c",
        ])
        .arg(&script));
}

/// Receives datagrams until `n` arrived or nothing came for `quiet`.
fn receive(sock: &UdpSocket, n: usize, quiet: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n {
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => got.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

fn expect_delivered(net: &TestNet, sock: &UdpSocket, tag: &str) {
    let n = 5;
    scapy_udp(net, tag, n);
    let got = receive(sock, n, Duration::from_secs(5));
    let want: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    assert_eq!(
        got, want,
        "{tag}: the kernel stack should get every datagram"
    );
}

#[test]
fn without_a_socket_traffic_still_reaches_the_kernel_stack() {
    if !can_run(
        "without_a_socket_traffic_still_reaches_the_kernel_stack",
        &["scapy"],
    ) {
        return;
    }
    let net = TestNet::new();
    net.ip(&["addr", "add", &format!("{DST_IP}/24"), "dev", &net.b]);
    let sock = net
        .within(|| UdpSocket::bind((DST_IP, PORT)))
        .expect("binding the UDP socket in the namespace");

    expect_delivered(&net, &sock, "none");

    let all = XdpProgram::load_redirect(4, None).unwrap();
    let matching = XdpProgram::load_redirect(4, Some(Match::ipv4().udp_dst_port(PORT))).unwrap();
    let other = XdpProgram::load_redirect(4, Some(Match::ipv4().udp_dst_port(4789))).unwrap();
    for (what, prog) in [("all", &all), ("matching", &matching), ("other", &other)] {
        for mode in [AttachMode::Native, AttachMode::Generic] {
            let att = attach_in(&net, prog, mode).unwrap();
            assert_eq!(att.mode(), mode);
            expect_delivered(&net, &sock, &format!("{what}-{mode}"));
            drop(att);
        }
    }

    // Control: the attached program really is on the path. A drop-all program stops the same
    // traffic, in both modes, and detaching it lets traffic through again.
    let drop_all = XdpProgram::load_insns(
        &[Insn::mov64_imm(Reg::R0, 1), Insn::exit()],
        "MIT",
        XskMap::new(1).unwrap(),
    )
    .unwrap();
    for mode in [AttachMode::Native, AttachMode::Generic] {
        let att = attach_in(&net, &drop_all, mode).unwrap();
        scapy_udp(&net, &format!("dropped-{mode}"), 5);
        let got = receive(&sock, 5, Duration::from_secs(1));
        assert!(
            got.is_empty(),
            "{mode}: the drop-all program let through {got:?}"
        );
        drop(att);
        expect_delivered(&net, &sock, &format!("after-drop-all-{mode}"));
    }
}

// --- Permissions ------------------------------------------------------------------------------

const PROBE_ENV: &str = "NETRING_XDP_PROBE";
const PROBE_TEST: &str = "without_cap_bpf_loading_is_permission_denied";

#[test]
fn without_cap_bpf_loading_is_permission_denied() {
    if std::env::var(PROBE_ENV).is_ok() {
        // The child, with its capabilities dropped.
        match XdpProgram::load_redirect(1, None) {
            Ok(_) => println!("PROBE loaded"),
            Err(ref e @ Error::PermissionDenied { capability, .. }) => {
                println!("PROBE denied {capability} | {e}")
            }
            Err(e) => println!("PROBE other {e:?}"),
        }
        return;
    }
    if !can_run(PROBE_TEST, &["setpriv"]) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let probe = |wrapper: &[&str]| -> String {
        let mut cmd = Command::new(wrapper.first().copied().unwrap_or(exe.to_str().unwrap()));
        if !wrapper.is_empty() {
            cmd.args(&wrapper[1..]).arg(&exe);
        }
        cmd.args(["--exact", PROBE_TEST, "--nocapture", "--test-threads=1"])
            .env(PROBE_ENV, "1");
        let out = run(&mut cmd);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.find("PROBE ").map(|i| l[i + 6..].to_owned()))
            .expect("no PROBE line")
    };
    // Control: with its capabilities the same child loads.
    assert_eq!(probe(&[]), "loaded");
    let caps = "-bpf,-sys_admin,-net_admin,-perfmon";
    let line = probe(&[
        "setpriv",
        &format!("--inh-caps={caps}"),
        &format!("--bounding-set={caps}"),
        "--ambient-caps=-all",
    ]);
    let rest = line
        .strip_prefix("denied ")
        .unwrap_or_else(|| panic!("expected PermissionDenied, got `{line}`"));
    eprintln!("without CAP_BPF: {rest}");
    assert!(
        rest.contains("CAP_BPF") && rest.contains("CAP_NET_ADMIN"),
        "{rest}"
    );
    assert!(rest.contains("setcap cap_bpf,cap_net_admin"), "{rest}");
}
