//! Sends frames through a TX ring (or an AF_XDP socket): every frame of a pcap file (optionally
//! several times), or N copies of a synthetic UDP/IPv4 frame.
//!
//! ```text
//! inject --iface IF (--read FILE.pcap [--repeat K] | --synthetic LEN --count N)
//!        [--netns NAME] [--runtime sync|tokio|smol] [--backend afpacket|xdp]
//! ```
//!
//! Says which backend and runtime it uses on stderr, waits until the kernel has sent every frame,
//! then prints one line on stdout:
//! `sent=N bytes=B`. Exit status: 0 on success, 1 on an error (the library's message on stderr),
//! 2 on bad arguments.
//!
//! - `--runtime sync` uses the blocking calls (`send`, `flush`, `wait_sent`); `tokio` feeds the
//!   frames into an `AsyncInjector` / `AsyncXdpSocket` `Sink` on a current-thread tokio runtime,
//!   `smol` does the same on `smol::block_on`. The async runtimes need the crate features of the
//!   same names.
//! - `--backend xdp` sends through the TX ring of an AF_XDP socket bound to queue 0 (no XDP
//!   program is attached: the socket only transmits). Frames must fit a UMEM frame (4096 bytes).
//!
//! Every 64 frames the queued ones are handed to the kernel (a flush that does not wait).

#[path = "common/cli.rs"]
mod cli;

use std::fs::File;
use std::future::Future;
use std::io::BufReader;
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use cli::{Backend, RuntimeKind, open_in_netns, parse_backend, parse_number, parse_runtime};
use futures::SinkExt;
use futures::future::{Either, select};
use netring::pcap::{LINKTYPE_ETHERNET, PcapReader};
use netring::runtime::Runtime;
use netring::xdp::{AsyncXdpSocket, XdpSocket};
use netring::{AsyncInjector, Injector};

const USAGE: &str = "\
usage: inject --iface IF (--read FILE.pcap [--repeat K] | --synthetic LEN --count N)
              [--netns NAME] [--runtime sync|tokio|smol] [--backend afpacket|xdp]

  --iface IF         interface to send on
  --read FILE        send every frame of a pcap file (Ethernet link type)
  --repeat K         send the file K times (default 1)
  --synthetic LEN    send LEN-byte UDP/IPv4 broadcast frames (LEN >= 42)
  --count N          how many synthetic frames to send
  --netns NAME       open the socket inside the network namespace NAME
  --runtime RT       sync (blocking calls, default), tokio (current-thread runtime) or smol
  --backend B        afpacket (TX ring, default) or xdp (AF_XDP socket on queue 0)

Prints `sent=N bytes=B` once every frame has left.";

/// Frames queued before a flush kicks the kernel.
const FLUSH_EVERY: u64 = 64;
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
    runtime: RuntimeKind,
    backend: Backend,
}

/// Prints the problem and the usage on stderr, exits with status 2.
fn bad_args(msg: &str) -> ! {
    eprintln!("inject: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    parse_number(flag, value).unwrap_or_else(|m| bad_args(&m))
}

fn parse_args() -> Args {
    let mut iface = None;
    let mut read = None;
    let mut repeat = None;
    let mut synthetic = None;
    let mut count = None;
    let mut netns = None;
    let mut runtime = RuntimeKind::Sync;
    let mut backend = Backend::AfPacket;
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
            "--runtime" => runtime = parse_runtime(&value).unwrap_or_else(|m| bad_args(&m)),
            "--backend" => backend = parse_backend(&value).unwrap_or_else(|m| bad_args(&m)),
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
        runtime,
        backend,
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

/// The opened transmitter, before any runtime is involved.
enum Tx {
    AfPacket(Injector),
    /// Boxed: an `XdpSocket` is several times larger than the other variant.
    Xdp(Box<XdpSocket>),
}

impl Tx {
    /// `afpacket (...)` or `xdp (...)`, with the details that matter.
    fn describe(&self) -> String {
        match self {
            Tx::AfPacket(t) => format!("afpacket (TX ring of {} slots)", t.frame_count()),
            Tx::Xdp(x) => format!(
                "xdp (AF_XDP queue {}, {:?} mode, TX only)",
                x.queue(),
                x.bind_mode()
            ),
        }
    }

    fn mac(&self) -> [u8; 6] {
        match self {
            Tx::AfPacket(t) => t.interface().mac(),
            Tx::Xdp(x) => x.interface().mac(),
        }
    }
}

/// Opens the TX ring (slots large enough for the interface's MTU plus a VLAN tag), or an AF_XDP
/// socket that only transmits (no XDP program: the interface's RX is left alone).
fn open_tx(args: &Args) -> netring::Result<Tx> {
    let mtu = netring::Interface::by_name(&args.iface)?.mtu() as usize;
    match args.backend {
        Backend::AfPacket => {
            let slot = (mtu + 14 + 4 + 32)
                .next_multiple_of(16)
                .max(netring::InjectorBuilder::DEFAULT_FRAME_SIZE);
            Injector::builder(&args.iface)
                .frame_size(slot)
                .frame_count(1024)
                .open()
                .map(Tx::AfPacket)
        }
        Backend::Xdp => {
            let frame_size = if mtu + 14 + 4 > 2048 { 4096 } else { 2048 };
            XdpSocket::builder(&args.iface)
                .queue(0)
                .frame_size(frame_size)
                .open_socket()
                .map(|x| Tx::Xdp(Box::new(x)))
        }
    }
}

/// The frames to send, one at a time: `advance`, then `current`.
enum Frames {
    Synthetic {
        frame: Vec<u8>,
        left: u64,
    },
    Read {
        path: String,
        repeats_left: u64,
        reader: Option<PcapReader<BufReader<File>>>,
        current: Vec<u8>,
    },
}

impl Frames {
    fn new(source: &Source, src_mac: [u8; 6]) -> Self {
        match source {
            Source::Synthetic { len, count } => Frames::Synthetic {
                frame: udp_frame(*len, src_mac),
                left: *count,
            },
            Source::Read { path, repeat } => Frames::Read {
                path: path.clone(),
                repeats_left: *repeat,
                reader: None,
                current: Vec::new(),
            },
        }
    }

    /// Moves to the next frame; false at the end.
    fn advance(&mut self) -> Result<bool, String> {
        match self {
            Frames::Synthetic { left, .. } => {
                if *left == 0 {
                    return Ok(false);
                }
                *left -= 1;
                Ok(true)
            }
            Frames::Read {
                path,
                repeats_left,
                reader,
                current,
            } => loop {
                if reader.is_none() {
                    if *repeats_left == 0 {
                        return Ok(false);
                    }
                    *repeats_left -= 1;
                    let file =
                        File::open(&*path).map_err(|e| format!("cannot open {path}: {e}"))?;
                    let r = PcapReader::new(BufReader::with_capacity(1 << 20, file))
                        .map_err(|e| format!("{path}: {e}"))?;
                    if r.link_type() != LINKTYPE_ETHERNET {
                        return Err(format!(
                            "{path}: link type {} is not Ethernet (1)",
                            r.link_type()
                        ));
                    }
                    *reader = Some(r);
                }
                let r = reader.as_mut().expect("opened above");
                match r.next_record().map_err(|e| format!("{path}: {e}"))? {
                    Some(record) => {
                        *current = record.data;
                        return Ok(true);
                    }
                    None => *reader = None,
                }
            },
        }
    }

    /// The frame `advance` moved to.
    fn current(&self) -> &[u8] {
        match self {
            Frames::Synthetic { frame, .. } => frame,
            Frames::Read { current, .. } => current,
        }
    }
}

#[derive(Default)]
struct Totals {
    sent: u64,
    bytes: u64,
}

impl Totals {
    /// Counts one frame; true when it is time to flush.
    fn add(&mut self, frame: &[u8]) -> bool {
        self.sent += 1;
        self.bytes += frame.len() as u64;
        self.sent % FLUSH_EVERY == 0
    }
}

fn not_drained(in_flight: u64) -> String {
    format!(
        "{in_flight} frames still not sent after {} s",
        DRAIN_TIMEOUT.as_secs()
    )
}

/// The blocking loop.
fn inject_sync(tx: Tx, frames: &mut Frames) -> Result<Totals, String> {
    let err = |e: netring::Error| e.to_string();
    let mut t = Totals::default();
    match tx {
        Tx::AfPacket(mut tx) => {
            while frames.advance()? {
                tx.send(frames.current()).map_err(err)?;
                if t.add(frames.current()) {
                    tx.flush().map_err(err)?;
                }
            }
            if !tx.wait_sent(Some(DRAIN_TIMEOUT)).map_err(err)? {
                return Err(not_drained(tx.in_flight() as u64));
            }
        }
        Tx::Xdp(mut xsk) => {
            while frames.advance()? {
                xsk.send(frames.current()).map_err(err)?;
                if t.add(frames.current()) {
                    xsk.flush().map_err(err)?;
                }
            }
            if !xsk.wait_sent(Some(DRAIN_TIMEOUT)).map_err(err)? {
                return Err(not_drained(u64::from(xsk.in_flight())));
            }
        }
    }
    Ok(t)
}

/// `fut`'s output, or `None` if `timer` finishes first.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
async fn or_timeout<T>(fut: impl Future<Output = T>, timer: impl Future<Output = ()>) -> Option<T> {
    match select(pin!(fut), pin!(timer)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// The async loop on the runtime `R`, with that runtime's timer `sleep`: each frame goes through
/// `SinkExt::feed` (waits for a free slot, copies the frame in, queues it), every
/// [`FLUSH_EVERY`] frames the queue is handed to the kernel without waiting, and at the end
/// `flush().await` waits until every frame has left. Must run inside the runtime.
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
async fn inject_async<R, S, F>(tx: Tx, frames: &mut Frames, sleep: S) -> Result<Totals, String>
where
    R: Runtime,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let err = |e: netring::Error| e.to_string();
    let mut t = Totals::default();
    match tx {
        Tx::AfPacket(tx) => {
            let mut tx = AsyncInjector::<R>::new(tx).map_err(err)?;
            while frames.advance()? {
                tx.feed(frames.current()).await.map_err(err)?;
                if t.add(frames.current()) {
                    tx.get_mut().flush().map_err(err)?;
                }
            }
            match or_timeout(tx.flush(), sleep(DRAIN_TIMEOUT)).await {
                Some(done) => done.map_err(err)?,
                None => return Err(not_drained(tx.get_ref().in_flight() as u64)),
            }
        }
        Tx::Xdp(xsk) => {
            let mut tx = AsyncXdpSocket::<R>::new(*xsk).map_err(err)?;
            while frames.advance()? {
                tx.feed(frames.current()).await.map_err(err)?;
                if t.add(frames.current()) {
                    tx.get_mut().flush().map_err(err)?;
                }
            }
            match or_timeout(tx.flush(), sleep(DRAIN_TIMEOUT)).await {
                Some(done) => done.map_err(err)?,
                None => return Err(not_drained(u64::from(tx.get_ref().in_flight()))),
            }
        }
    }
    Ok(t)
}

#[cfg(feature = "tokio")]
fn inject_tokio(tx: Tx, frames: &mut Frames) -> Result<Totals, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(inject_async::<netring::runtime::Tokio, _, _>(
        tx,
        frames,
        tokio::time::sleep,
    ))
}

#[cfg(not(feature = "tokio"))]
fn inject_tokio(_: Tx, _: &mut Frames) -> Result<Totals, String> {
    unreachable!("rejected while parsing the arguments")
}

#[cfg(feature = "smol")]
fn inject_smol(tx: Tx, frames: &mut Frames) -> Result<Totals, String> {
    smol::block_on(inject_async::<netring::runtime::Smol, _, _>(
        tx,
        frames,
        |d| async move {
            smol::Timer::after(d).await;
        },
    ))
}

#[cfg(not(feature = "smol"))]
fn inject_smol(_: Tx, _: &mut Frames) -> Result<Totals, String> {
    unreachable!("rejected while parsing the arguments")
}

fn run(args: Args) -> Result<(u64, u64), String> {
    let tx = open_in_netns(args.netns.as_deref(), || open_tx(&args))?;
    eprintln!(
        "inject: backend {}, runtime {}",
        tx.describe(),
        match args.runtime {
            RuntimeKind::Sync => "sync",
            RuntimeKind::Tokio => "tokio (current thread)",
            RuntimeKind::Smol => "smol",
        }
    );
    let mut frames = Frames::new(&args.source, tx.mac());
    let t = match args.runtime {
        RuntimeKind::Sync => inject_sync(tx, &mut frames),
        RuntimeKind::Tokio => inject_tokio(tx, &mut frames),
        RuntimeKind::Smol => inject_smol(tx, &mut frames),
    }?;
    Ok((t.sent, t.bytes))
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
