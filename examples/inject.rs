//! Sends frames through a TX ring: every frame of a pcap file (optionally several times), or N
//! copies of a synthetic UDP/IPv4 frame.
//!
//! ```text
//! inject --iface IF (--read FILE.pcap [--repeat K] | --synthetic LEN --count N)
//!        [--netns NAME] [--runtime sync] [--backend afpacket]
//! ```
//!
//! Waits until the kernel has sent every frame, then prints one line on stdout:
//! `sent=N bytes=B`. Exit status: 0 on success, 1 on an error (the library's message on stderr),
//! 2 on bad arguments.

use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;
use std::time::Duration;

use netring::Injector;
use netring::pcap::{LINKTYPE_ETHERNET, PcapReader};

const USAGE: &str = "\
usage: inject --iface IF (--read FILE.pcap [--repeat K] | --synthetic LEN --count N)
              [--netns NAME] [--runtime sync] [--backend afpacket]

  --iface IF         interface to send on
  --read FILE        send every frame of a pcap file (Ethernet link type)
  --repeat K         send the file K times (default 1)
  --synthetic LEN    send LEN-byte UDP/IPv4 broadcast frames (LEN >= 42)
  --count N          how many synthetic frames to send
  --netns NAME       open the socket inside the network namespace NAME
  --runtime sync     I/O runtime (only `sync` is available yet)
  --backend afpacket packet backend (only `afpacket` is available yet)

Prints `sent=N bytes=B` once every frame has left.";

/// Frames committed before a flush kicks the kernel.
const FLUSH_EVERY: usize = 64;
/// How long to wait for the last frames to leave.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

enum Source {
    Read { path: String, repeat: u64 },
    Synthetic { len: usize, count: u64 },
}

struct Args {
    iface: String,
    source: Source,
    netns: Option<String>,
}

/// Prints the problem and the usage on stderr, exits with status 2.
fn bad_args(msg: &str) -> ! {
    eprintln!("inject: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| bad_args(&format!("{flag}: `{value}` is not a valid number")))
}

fn parse_args() -> Args {
    let mut iface = None;
    let mut read = None;
    let mut repeat = None;
    let mut synthetic = None;
    let mut count = None;
    let mut netns = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let known = [
            "--iface",
            "--read",
            "--repeat",
            "--synthetic",
            "--count",
            "--netns",
            "--runtime",
            "--backend",
        ];
        if !known.contains(&flag.as_str()) {
            bad_args(&format!("unknown argument `{flag}`"));
        }
        let Some(value) = args.next() else {
            bad_args(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--iface" => iface = Some(value),
            "--read" => read = Some(value),
            "--repeat" => repeat = Some(number::<u64>(&flag, &value)),
            "--synthetic" => synthetic = Some(number::<usize>(&flag, &value)),
            "--count" => count = Some(number::<u64>(&flag, &value)),
            "--netns" => netns = Some(value),
            "--runtime" => match value.as_str() {
                "sync" => {}
                "tokio" | "smol" => bad_args(&format!(
                    "--runtime {value}: not available yet (only `sync` is)"
                )),
                _ => bad_args(&format!(
                    "--runtime: unknown runtime `{value}` (sync, tokio, smol)"
                )),
            },
            "--backend" => match value.as_str() {
                "afpacket" => {}
                "xdp" => bad_args("--backend xdp: not available yet (only `afpacket` is)"),
                _ => bad_args(&format!(
                    "--backend: unknown backend `{value}` (afpacket, xdp)"
                )),
            },
            _ => unreachable!(),
        }
    }
    let Some(iface) = iface else {
        bad_args("--iface is required");
    };
    let source = match (read, synthetic) {
        (Some(_), Some(_)) => bad_args("--read and --synthetic are exclusive"),
        (None, None) => bad_args("one of --read or --synthetic is required"),
        (Some(path), None) => {
            if count.is_some() {
                bad_args("--count goes with --synthetic (use --repeat with --read)");
            }
            let repeat = repeat.unwrap_or(1);
            if repeat == 0 {
                bad_args("--repeat must be at least 1");
            }
            Source::Read { path, repeat }
        }
        (None, Some(len)) => {
            if repeat.is_some() {
                bad_args("--repeat goes with --read");
            }
            if !(MIN_UDP_FRAME..=MAX_UDP_FRAME).contains(&len) {
                bad_args(&format!(
                    "--synthetic: length {len} out of range ({MIN_UDP_FRAME}..={MAX_UDP_FRAME})"
                ));
            }
            let Some(count) = count else {
                bad_args("--synthetic needs --count N");
            };
            Source::Synthetic { len, count }
        }
    };
    Args {
        iface,
        source,
        netns,
    }
}

/// Ethernet + IPv4 + UDP headers.
const MIN_UDP_FRAME: usize = 42;
/// Largest IPv4 datagram plus the Ethernet header.
const MAX_UDP_FRAME: usize = 65535 + 14;

/// One's-complement sum over 16-bit big-endian words, folded and inverted (RFC 1071).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A `len`-byte broadcast Ethernet frame carrying UDP/IPv4 198.18.0.1:40000 -> 198.18.0.2:9
/// (the RFC 2544 benchmarking range), valid IP checksum, no UDP checksum, payload bytes 0,1,2,...
fn udp_frame(len: usize, src_mac: [u8; 6]) -> Vec<u8> {
    assert!((MIN_UDP_FRAME..=MAX_UDP_FRAME).contains(&len));
    let mut f = vec![0u8; len];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45; // IPv4, 20-byte header
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// Opens the TX ring, with slots large enough for the interface's MTU (plus a VLAN tag).
fn open_injector(iface: &str) -> netring::Result<Injector> {
    let mtu = netring::Interface::by_name(iface)?.mtu() as usize;
    let slot = (mtu + 14 + 4 + 32)
        .next_multiple_of(16)
        .max(netring::InjectorBuilder::DEFAULT_FRAME_SIZE);
    Injector::builder(iface)
        .frame_size(slot)
        .frame_count(1024)
        .open()
}

struct Sender {
    tx: Injector,
    sent: u64,
    bytes: u64,
}

impl Sender {
    fn send(&mut self, frame: &[u8]) -> netring::Result<()> {
        self.tx.send(frame)?;
        self.sent += 1;
        self.bytes += frame.len() as u64;
        if self.tx.queued() >= FLUSH_EVERY {
            self.tx.flush()?;
        }
        Ok(())
    }
}

fn run(args: Args) -> Result<(u64, u64), String> {
    let tx = match &args.netns {
        Some(ns) => netring::netns::within(ns, || open_injector(&args.iface)).and_then(|r| r),
        None => open_injector(&args.iface),
    }
    .map_err(|e| e.to_string())?;
    let mut s = Sender {
        tx,
        sent: 0,
        bytes: 0,
    };
    match &args.source {
        Source::Synthetic { len, count } => {
            let frame = udp_frame(*len, s.tx.interface().mac());
            for _ in 0..*count {
                s.send(&frame).map_err(|e| e.to_string())?;
            }
        }
        Source::Read { path, repeat } => {
            for _ in 0..*repeat {
                let file = File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
                let reader = PcapReader::new(BufReader::with_capacity(1 << 20, file))
                    .map_err(|e| format!("{path}: {e}"))?;
                if reader.link_type() != LINKTYPE_ETHERNET {
                    return Err(format!(
                        "{path}: link type {} is not Ethernet (1)",
                        reader.link_type()
                    ));
                }
                for record in reader {
                    let record = record.map_err(|e| format!("{path}: {e}"))?;
                    s.send(&record.data).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    let done =
        s.tx.wait_sent(Some(DRAIN_TIMEOUT))
            .map_err(|e| e.to_string())?;
    if !done {
        return Err(format!(
            "{} frames still not sent after {} s",
            s.tx.in_flight(),
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    Ok((s.sent, s.bytes))
}

fn main() -> ExitCode {
    let args = parse_args();
    match run(args) {
        Ok((sent, bytes)) => {
            println!("sent={sent} bytes={bytes}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("inject: {msg}");
            ExitCode::from(1)
        }
    }
}
