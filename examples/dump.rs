//! A small tcpdump: one line per packet, optionally a pcap file, with a tcpdump filter
//! expression.
//!
//! ```text
//! dump --iface IF [--backend afpacket|xdp] [--count N] [--write FILE] [--netns NS]
//!      [--runtime tokio|smol] [--no-promisc] [EXPR...]
//! ```
//!
//! For every packet it prints on stdout the time (UTC, `HH:MM:SS.micro`), then `vlan ID, ` for
//! each VLAN tag (outermost first, whether the kernel stripped it or it is in the frame), then
//! what `tcpdump -nn -q` prints for IPv4/IPv6 TCP, UDP, ICMP echo and ARP:
//!
//! ```text
//! 12:00:01.000123 IP 10.0.0.1.1234 > 10.0.0.2.80: tcp 100
//! 12:00:01.000125 vlan 100, IP 10.0.0.1.5 > 10.0.0.2.6: UDP, length 30
//! 12:00:01.000130 IP6 fd00::1 > fd00::2: ICMP6, echo request, id 1, seq 2, length 8
//! 12:00:01.000140 ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 46
//! 12:00:01.000150 02:4e:52:00:00:01 > 02:4e:52:00:00:02, ethertype 0x88b5, length 60
//! ```
//!
//! (other ICMP types and IP protocols get a shorter line of their own; frames it cannot read say
//! where they end, like `[|tcp]`). Once a second it prints the rate on stderr
//! (`dump: 1200 pkt/s, 9.61 Mbit/s, 3600 packets`), and at the end, on stdout,
//! `packets=N bytes=B drops=D`: bytes on the wire (VLAN tags included), drops from the kernel
//! (AF_PACKET: the socket's ring drops; AF_XDP: `rx_dropped`). It stops after N packets or on
//! SIGINT/SIGTERM.
//!
//! - EXPR (the remaining arguments, joined with spaces) is compiled by
//!   `netring::filter::Filter`: attached to the socket in the kernel on AF_PACKET, applied to
//!   each frame in user space on AF_XDP. A bad expression is an error (exit 2) before anything is
//!   opened.
//! - `--write FILE` writes the packets to a pcap file through `PcapWriter`'s `Sink`
//!   (nanosecond timestamps, VLAN tags put back).
//! - AF_PACKET captures in promiscuous mode, like tcpdump (`--no-promisc` to not). AF_XDP
//!   (`--backend xdp`) takes over queue 0: the kernel stack does not see those frames while
//!   dump runs, and they carry no timestamp (the time they were read stands in).
//! - `--runtime` is `tokio` (current-thread) or `smol`, default tokio; each needs the crate
//!   feature of the same name. The once-a-second timer is `netring::runtime::Timer`, the same
//!   on both.
//!
//! Exit status: 0 on success, 1 on an error (the library's message on stderr), 2 on bad
//! arguments.

// Without an async runtime feature the capture code is never called (dump says so and exits).
#![cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]

#[path = "common/cli.rs"]
mod cli;

use std::fmt::Write as _;
use std::io::{BufWriter, Stdout, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cli::{
    Backend, PcapFile, RuntimeKind, create_pcap, open_in_netns, parse_async_runtime, parse_backend,
    parse_number,
};
use futures::future::{Either, select};
use futures::{SinkExt, StreamExt};
use netring::filter::Filter;
use netring::runtime::{Runtime, Timer};
use netring::xdp::{AsyncXdpSocket, XdpSocket};
use netring::{AsPacket, AsyncCapture, Capture, Timestamp, VlanTag};

const USAGE: &str = "\
usage: dump --iface IF [--backend afpacket|xdp] [--count N] [--write FILE] [--netns NS]
            [--runtime tokio|smol] [--no-promisc] [EXPR...]

  --iface IF         interface to capture on
  --backend B        afpacket (TPACKET_V3 ring, default) or xdp (AF_XDP socket on queue 0)
  --count N          stop after N packets
  --write FILE       also write the packets to a pcap file
  --netns NS         open the socket inside the network namespace NS
  --runtime RT       tokio (current-thread runtime, default) or smol
  --no-promisc       do not put the interface into promiscuous mode (AF_PACKET)
  EXPR               a tcpdump filter expression, e.g. `udp and port 53`

Prints one line per packet, then `packets=N bytes=B drops=D`.";

/// Longest wait without checking for a signal, and how often stdout is flushed.
const POLL_STEP: Duration = Duration::from_millis(100);
/// How often the rate line is printed.
const RATE_EVERY: Duration = Duration::from_secs(1);

struct Args {
    iface: String,
    backend: Backend,
    count: Option<u64>,
    write: Option<String>,
    netns: Option<String>,
    runtime: RuntimeKind,
    promiscuous: bool,
    filter: Option<Filter>,
}

/// Prints the problem and the usage on stderr, exits with status 2.
fn bad_args(msg: &str) -> ! {
    eprintln!("dump: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut iface = None;
    let mut backend = Backend::AfPacket;
    let mut count = None;
    let mut write = None;
    let mut netns = None;
    let mut runtime = None;
    let mut promiscuous = true;
    let mut expr: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if arg == "--no-promisc" {
            promiscuous = false;
            continue;
        }
        if !arg.starts_with("--") {
            expr.push(arg);
            continue;
        }
        let known = [
            "--iface",
            "--backend",
            "--count",
            "--write",
            "--netns",
            "--runtime",
        ];
        if !known.contains(&arg.as_str()) {
            bad_args(&format!("unknown argument `{arg}`"));
        }
        let Some(value) = args.next() else {
            bad_args(&format!("{arg} needs a value"));
        };
        match arg.as_str() {
            "--iface" => iface = Some(value),
            "--backend" => backend = parse_backend(&value).unwrap_or_else(|m| bad_args(&m)),
            "--count" => {
                count = Some(parse_number::<u64>(&arg, &value).unwrap_or_else(|m| bad_args(&m)));
            }
            "--write" => write = Some(value),
            "--netns" => netns = Some(value),
            "--runtime" => {
                runtime = Some(parse_async_runtime(&value).unwrap_or_else(|m| bad_args(&m)));
            }
            _ => unreachable!("listed in `known`"),
        }
    }
    let Some(iface) = iface else {
        bad_args("--iface is required");
    };
    let runtime = match runtime {
        Some(r) => r,
        None => cli::default_async_runtime().unwrap_or_else(|m| bad_args(&m)),
    };
    // Compiled before anything is opened: a typo is reported without privileges.
    let expr = expr.join(" ");
    let filter = if expr.trim().is_empty() {
        None
    } else {
        Some(
            Filter::new(&expr).unwrap_or_else(|e| bad_args(&format!("bad filter expression: {e}"))),
        )
    };
    Args {
        iface,
        backend,
        count,
        write,
        netns,
        runtime,
        promiscuous,
        filter,
    }
}

// ---------------------------------------------------------------------------------------------
// One line per packet.

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

fn ipv6(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// The summary of one frame: VLAN tags, then the tcpdump-like decode. `stripped` is the tag the
/// kernel took out of `data` (AF_PACKET), which was the outermost.
fn summarize(data: &[u8], stripped: Option<VlanTag>) -> String {
    let mut out = String::new();
    if let Some(t) = stripped {
        let _ = write!(out, "vlan {}, ", t.id());
    }
    let Some(mut ethertype) = be16(data, 12) else {
        let _ = write!(out, "[|ether], length {}", data.len());
        return out;
    };
    let mut at = 14;
    while matches!(ethertype, 0x8100 | 0x88a8) {
        let (Some(tci), Some(next)) = (be16(data, at), be16(data, at + 2)) else {
            out.push_str("[|vlan]");
            return out;
        };
        let _ = write!(out, "vlan {}, ", tci & 0x0fff);
        ethertype = next;
        at += 4;
    }
    let l3 = &data[at..];
    match ethertype {
        0x0800 => ipv4_line(l3, &mut out),
        0x86dd => ipv6_line(l3, &mut out),
        0x0806 => arp_line(l3, &mut out),
        _ => {
            let _ = write!(
                out,
                "{} > {}, ethertype 0x{ethertype:04x}, length {}",
                mac(&data[6..12]),
                mac(&data[0..6]),
                data.len()
            );
        }
    }
    out
}

/// `tcp N` / `UDP, length N` after `src[.port] > dst[.port]: `, for IPv4 and IPv6.
fn transport(
    out: &mut String,
    proto: u8,
    l4: &[u8],
    l4_len: usize,
    src: &dyn std::fmt::Display,
    dst: &dyn std::fmt::Display,
) -> bool {
    let ports = (be16(l4, 0), be16(l4, 2));
    match (proto, ports) {
        (6, (Some(sp), Some(dp))) => {
            let Some(off) = l4.get(12).map(|b| usize::from(b >> 4) * 4) else {
                let _ = write!(out, "{src}.{sp} > {dst}.{dp}: [|tcp]");
                return true;
            };
            let _ = write!(
                out,
                "{src}.{sp} > {dst}.{dp}: tcp {}",
                l4_len.saturating_sub(off)
            );
            true
        }
        (17, (Some(sp), Some(dp))) => {
            match be16(l4, 4) {
                Some(len) => {
                    let _ = write!(
                        out,
                        "{src}.{sp} > {dst}.{dp}: UDP, length {}",
                        usize::from(len).saturating_sub(8)
                    );
                }
                None => {
                    let _ = write!(out, "{src}.{sp} > {dst}.{dp}: [|udp]");
                }
            }
            true
        }
        _ => false,
    }
}

fn ipv4_line(b: &[u8], out: &mut String) {
    let (Some(first), Some(total), Some(src), Some(dst)) =
        (b.first(), be16(b, 2), ipv4(b, 12), ipv4(b, 16))
    else {
        out.push_str("IP [|ip]");
        return;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        out.push_str("IP bad header");
        return;
    }
    let proto = b[9];
    let frag_offset = be16(b, 6).unwrap_or(0) & 0x1fff;
    let payload_len = usize::from(total).saturating_sub(ihl);
    let l4 = b.get(ihl..).unwrap_or(&[]);
    out.push_str("IP ");
    if frag_offset != 0 {
        let _ = write!(out, "{src} > {dst}: ip-proto-{proto} (fragment)");
        return;
    }
    if transport(out, proto, l4, payload_len, &src, &dst) {
        return;
    }
    let _ = write!(out, "{src} > {dst}: ");
    match (proto, l4.first(), l4.get(1)) {
        (1, Some(&kind @ (0 | 8)), Some(_)) => match (be16(l4, 4), be16(l4, 6)) {
            (Some(id), Some(seq)) => {
                let what = if kind == 8 { "request" } else { "reply" };
                let _ = write!(
                    out,
                    "ICMP echo {what}, id {id}, seq {seq}, length {payload_len}"
                );
            }
            _ => out.push_str("[|icmp]"),
        },
        (1, Some(kind), Some(code)) => {
            let _ = write!(out, "ICMP type {kind}, code {code}, length {payload_len}");
        }
        (1, _, _) => out.push_str("[|icmp]"),
        _ => {
            let _ = write!(out, "ip-proto-{proto} {payload_len}");
        }
    }
}

fn ipv6_line(b: &[u8], out: &mut String) {
    let (Some(len), Some(&next), Some(src), Some(dst)) =
        (be16(b, 4), b.get(6), ipv6(b, 8), ipv6(b, 24))
    else {
        out.push_str("IP6 [|ip6]");
        return;
    };
    let mut len = usize::from(len);
    let mut next = next;
    let mut l4 = b.get(40..).unwrap_or(&[]);
    out.push_str("IP6 ");
    // Hop-by-hop, routing and destination options headers (MLD reports carry one): skipped,
    // and named before the decode like tcpdump does.
    let mut ext = String::new();
    while matches!(next, 0 | 43 | 60) {
        let (Some(&after), Some(&units)) = (l4.first(), l4.get(1)) else {
            let _ = write!(out, "{src} > {dst}: {ext}[|ip6]");
            return;
        };
        let skip = (usize::from(units) + 1) * 8;
        ext.push_str(match next {
            0 => "HBH ",
            43 => "srcrt ",
            _ => "DSTOPT ",
        });
        next = after;
        len = len.saturating_sub(skip);
        l4 = l4.get(skip..).unwrap_or(&[]);
    }
    if transport(out, next, l4, len, &src, &dst) {
        return;
    }
    let _ = write!(out, "{src} > {dst}: {ext}");
    match (next, l4.first()) {
        (58, Some(&kind @ (128 | 129))) => match (be16(l4, 4), be16(l4, 6)) {
            (Some(id), Some(seq)) => {
                let what = if kind == 128 { "request" } else { "reply" };
                let _ = write!(out, "ICMP6, echo {what}, id {id}, seq {seq}, length {len}");
            }
            _ => out.push_str("[|icmp6]"),
        },
        (58, Some(&kind @ (135 | 136))) => match ipv6(l4, 8) {
            Some(target) if kind == 135 => {
                let _ = write!(
                    out,
                    "ICMP6, neighbor solicitation, who has {target}, length {len}"
                );
            }
            Some(target) => {
                let _ = write!(
                    out,
                    "ICMP6, neighbor advertisement, tgt is {target}, length {len}"
                );
            }
            None => out.push_str("[|icmp6]"),
        },
        (58, Some(133)) => {
            let _ = write!(out, "ICMP6, router solicitation, length {len}");
        }
        (58, Some(kind)) => {
            let _ = write!(out, "ICMP6, type {kind}, length {len}");
        }
        (58, None) => out.push_str("[|icmp6]"),
        _ => {
            let _ = write!(out, "ip-proto-{next} {len}");
        }
    }
}

fn arp_line(b: &[u8], out: &mut String) {
    let len = b.len();
    let ether_ipv4 = be16(b, 0) == Some(1)
        && be16(b, 2) == Some(0x0800)
        && b.get(4) == Some(&6)
        && b.get(5) == Some(&4);
    let (Some(op), true) = (be16(b, 6), ether_ipv4) else {
        let _ = write!(out, "ARP, length {len}");
        return;
    };
    let (Some(sha), Some(spa), Some(tha), Some(tpa)) =
        (b.get(8..14), ipv4(b, 14), b.get(18..24), ipv4(b, 24))
    else {
        out.push_str("ARP, [|arp]");
        return;
    };
    match op {
        1 => {
            let _ = write!(out, "ARP, Request who-has {tpa}");
            if tha.iter().any(|&x| x != 0) {
                let _ = write!(out, " ({})", mac(tha));
            }
            let _ = write!(out, " tell {spa}, length {len}");
        }
        2 => {
            let _ = write!(out, "ARP, Reply {spa} is-at {}, length {len}", mac(sha));
        }
        _ => {
            let _ = write!(out, "ARP, op {op}, length {len}");
        }
    }
}

/// `HH:MM:SS.micro` in UTC.
fn clock(ts: Timestamp) -> String {
    let s = ts.sec % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ts.nsec / 1000
    )
}

fn now() -> Timestamp {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        sec: t.as_secs() as u32,
        nsec: t.subsec_nanos(),
    }
}

// ---------------------------------------------------------------------------------------------
// The capture.

/// The opened socket, before any runtime is involved.
enum Socket {
    AfPacket(Box<Capture>),
    Xdp(Box<XdpSocket>),
}

fn open_socket(args: &Args) -> netring::Result<Socket> {
    match args.backend {
        Backend::AfPacket => {
            let mut b = Capture::builder(&args.iface).promiscuous(args.promiscuous);
            if let Some(f) = &args.filter {
                b = b.filter(f.kernel_program().clone());
            }
            b.open().map(|c| Socket::AfPacket(Box::new(c)))
        }
        Backend::Xdp => {
            // Copy-mode RX writes frames after the kernel's 256-byte XDP headroom.
            let mtu = netring::Interface::by_name(&args.iface)?.mtu() as usize;
            let frame_size = if mtu + 18 + 256 > 2048 { 4096 } else { 2048 };
            XdpSocket::builder(&args.iface)
                .queue(0)
                .frame_size(frame_size)
                .open()
                .map(|s| Socket::Xdp(Box::new(s)))
        }
    }
}

/// Where packets go: stdout, the pcap sink, the counters.
struct Output {
    stdout: BufWriter<Stdout>,
    /// stdout went away (`dump ... | head`): stop quietly.
    closed: bool,
    pcap: Option<PcapFile>,
    limit: u64,
    packets: u64,
    bytes: u64,
    /// Counters at the previous rate line.
    last: (Instant, u64, u64),
}

impl Output {
    fn done(&self) -> bool {
        self.packets >= self.limit || self.closed || cli::stop_requested()
    }

    async fn packet<P: AsPacket>(&mut self, p: P) -> Result<(), String>
    where
        PcapFile: futures::Sink<P, Error = netring::Error>,
    {
        self.packets += 1;
        // On the wire, with the tag the kernel took out (AF_PACKET) counted back in.
        self.bytes += p.wire_len() as u64 + if p.vlan().is_some() { 4 } else { 0 };
        let line = summarize(p.data(), p.vlan());
        let ts = p.timestamp().unwrap_or_else(now);
        if writeln!(self.stdout, "{} {line}", clock(ts)).is_err() {
            self.closed = true;
        }
        if let Some(w) = self.pcap.as_mut() {
            w.feed(p)
                .await
                .map_err(|e| format!("writing the pcap file: {e}"))?;
        }
        Ok(())
    }

    /// Every `POLL_STEP`: flushes stdout, prints the rate once a second.
    fn tick(&mut self) {
        if self.stdout.flush().is_err() {
            self.closed = true;
        }
        let (at, packets, bytes) = self.last;
        let elapsed = at.elapsed();
        if elapsed >= RATE_EVERY {
            let secs = elapsed.as_secs_f64();
            eprintln!(
                "dump: {:.0} pkt/s, {:.2} Mbit/s, {} packets",
                (self.packets - packets) as f64 / secs,
                (self.bytes - bytes) as f64 * 8.0 / secs / 1e6,
                self.packets
            );
            self.last = (Instant::now(), self.packets, self.bytes);
        }
    }
}

/// The capture loop on runtime `R`; returns the kernel's drops.
async fn dump<R: Runtime>(args: &Args, socket: Socket, out: &mut Output) -> Result<u64, String> {
    let err = |e: netring::Error| e.to_string();
    let mut tick = Timer::<R>::after(POLL_STEP).map_err(err)?;
    let listening = || {
        eprintln!(
            "dump: listening on {} ({}, runtime {}{})",
            args.iface,
            match args.backend {
                Backend::AfPacket => "afpacket",
                Backend::Xdp => "xdp",
            },
            match args.runtime {
                RuntimeKind::Smol => "smol",
                _ => "tokio",
            },
            args.filter
                .as_ref()
                .map_or_else(String::new, |f| format!(", filter `{}`", f.expression()))
        )
    };
    match socket {
        Socket::AfPacket(cap) => {
            let mut packets = AsyncCapture::<R>::new(*cap).map_err(err)?.packets();
            listening();
            while !out.done() {
                match select(packets.next(), &mut tick).await {
                    Either::Left((Some(p), _)) => out.packet(p.map_err(err)?).await?,
                    Either::Left((None, _)) => break,
                    Either::Right((fired, _)) => fired.map_err(err)?,
                }
                // Also here, not only when the timer wins the race: under a flood the packet
                // side is always ready first.
                if tick.is_expired() {
                    out.tick();
                    tick.reset(Instant::now() + POLL_STEP).map_err(err)?;
                }
            }
            Ok(packets.get_mut().cumulative_stats().map_err(err)?.drops)
        }
        Socket::Xdp(xsk) => {
            let mut rx = AsyncXdpSocket::<R>::new(*xsk).map_err(err)?;
            listening();
            while !out.done() {
                match select(std::pin::pin!(rx.next_batch()), &mut tick).await {
                    Either::Left((batch, _)) => {
                        let batch = batch.map_err(err)?;
                        for p in &batch {
                            if out.done() {
                                break;
                            }
                            if args.filter.as_ref().is_none_or(|f| f.matches(&p)) {
                                out.packet(p).await?;
                            }
                        }
                    }
                    Either::Right((fired, _)) => fired.map_err(err)?,
                }
                // Also here, not only when the timer wins the race: under a flood the packet
                // side is always ready first.
                if tick.is_expired() {
                    out.tick();
                    tick.reset(Instant::now() + POLL_STEP).map_err(err)?;
                }
            }
            Ok(rx.get_ref().stats().map_err(err)?.rx_dropped)
        }
    }
}

#[cfg(feature = "tokio")]
fn dump_tokio(args: &Args, socket: Socket, out: &mut Output) -> Result<u64, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(dump::<netring::runtime::Tokio>(args, socket, out))
}

#[cfg(not(feature = "tokio"))]
fn dump_tokio(_: &Args, _: Socket, _: &mut Output) -> Result<u64, String> {
    unreachable!("rejected while parsing the arguments")
}

#[cfg(feature = "smol")]
fn dump_smol(args: &Args, socket: Socket, out: &mut Output) -> Result<u64, String> {
    smol::block_on(dump::<netring::runtime::Smol>(args, socket, out))
}

#[cfg(not(feature = "smol"))]
fn dump_smol(_: &Args, _: Socket, _: &mut Output) -> Result<u64, String> {
    unreachable!("rejected while parsing the arguments")
}

fn run(args: &Args) -> Result<(u64, u64, u64), String> {
    let socket = open_in_netns(args.netns.as_deref(), || open_socket(args))?;
    let pcap = create_pcap(args.write.as_deref())?;
    let mut out = Output {
        stdout: BufWriter::new(std::io::stdout()),
        closed: false,
        pcap,
        limit: args.count.unwrap_or(u64::MAX),
        packets: 0,
        bytes: 0,
        last: (Instant::now(), 0, 0),
    };
    let drops = match args.runtime {
        RuntimeKind::Smol => dump_smol(args, socket, &mut out),
        _ => dump_tokio(args, socket, &mut out),
    }?;
    if let Some(w) = out.pcap.take() {
        w.into_inner()
            .map_err(|e| format!("writing the pcap file: {e}"))?;
    }
    if !out.closed {
        let _ = writeln!(
            out.stdout,
            "packets={} bytes={} drops={drops}",
            out.packets, out.bytes
        );
        let _ = out.stdout.flush();
    }
    Ok((out.packets, out.bytes, drops))
}

fn main() -> ExitCode {
    let args = parse_args();
    cli::install_signal_handlers();
    match run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("dump: {msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    #[test]
    fn truncated_frames_never_panic() {
        let udp = {
            let mut ip = vec![
                0x45, 0, 0, 38, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            ip.extend_from_slice(&[0, 5, 0, 6, 0, 18, 0, 0]);
            ip.extend_from_slice(&[0u8; 10]);
            frame(0x0800, &ip)
        };
        assert_eq!(
            summarize(&udp, None),
            "IP 10.0.0.1.5 > 10.0.0.2.6: UDP, length 10"
        );
        assert_eq!(
            summarize(
                &udp,
                Some(VlanTag {
                    tpid: 0x8100,
                    tci: 0x2064
                })
            ),
            "vlan 100, IP 10.0.0.1.5 > 10.0.0.2.6: UDP, length 10"
        );
        for n in 0..udp.len() {
            let _ = summarize(&udp[..n], None);
        }
        for et in [0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x1234] {
            let f = frame(et, &[0x45; 64]);
            for n in 0..f.len() {
                let _ = summarize(&f[..n], None);
            }
        }
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        let ts = Timestamp {
            sec: 86_400 * 3 + 3600 + 120 + 3,
            nsec: 4_567_890,
        };
        assert_eq!(clock(ts), "01:02:03.004567");
    }
}
