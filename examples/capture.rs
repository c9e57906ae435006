//! Captures packets through a TPACKET_V3 ring (or an AF_XDP socket), optionally into a pcap file.
//!
//! ```text
//! capture --iface IF [--count N] [--duration SECS] [--write FILE.pcap] [--netns NAME]
//!         [--runtime sync|tokio|smol] [--backend afpacket|xdp]
//! ```
//!
//! Runs until N packets arrived, SECS elapsed, or SIGINT/SIGTERM, whichever comes first (with
//! neither limit, until a signal). Once the socket is open it says which backend and runtime it
//! uses, then `capture: listening on IF`, on stderr; at the end it prints exactly one line on stdout: `packets=N bytes=B drops=D` (bytes on
//! the wire; drops are the kernel's ring drops since the socket opened: for AF_PACKET the packet
//! socket's drops, for AF_XDP `XdpStats::rx_dropped`). Exit status: 0 on success, 1 on an error
//! (the library's message on stderr), 2 on bad arguments.
//!
//! - `--runtime sync` uses the blocking API (`Capture::next_batch`, `XdpSocket::next_batch`);
//!   `tokio` runs `AsyncCapture` / `AsyncXdpSocket` on a current-thread tokio runtime, `smol` on
//!   `smol::block_on`. The async runtimes need the crate features of the same names.
//! - `--backend xdp` opens an `XdpSocket` on queue 0 of the interface: the built-in XDP program
//!   redirects every frame of that queue to the socket (the kernel stack no longer sees them) until
//!   the program exits. AF_XDP buffers only the UMEM's RX pool, so the capture must run while the
//!   traffic flows.

#[path = "common/cli.rs"]
mod cli;

use std::future::Future;
use std::pin::pin;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cli::{
    Backend, PcapFile, RuntimeKind, create_pcap, open_in_netns, parse_backend, parse_number,
    parse_runtime, parse_seconds,
};
use futures::future::{Either, select};
use netring::runtime::Runtime;
use netring::xdp::{AsyncXdpSocket, XdpBatch, XdpSocket};
use netring::{AsyncCapture, Batch, Capture, Timestamp};

const USAGE: &str = "\
usage: capture --iface IF [--count N] [--duration SECS] [--write FILE.pcap] [--netns NAME]
               [--runtime sync|tokio|smol] [--backend afpacket|xdp]

  --iface IF         interface to capture on
  --count N          stop after N packets
  --duration SECS    stop after SECS seconds (decimals allowed)
  --write FILE       write the packets to a pcap file (nanosecond timestamps)
  --netns NAME       open the socket inside the network namespace NAME
  --runtime RT       sync (blocking calls, default), tokio (current-thread runtime) or smol
  --backend B        afpacket (TPACKET_V3 ring, default) or xdp (AF_XDP socket on queue 0)

Prints `packets=N bytes=B drops=D` at the end.";

/// Longest single wait, so a signal or the deadline is noticed promptly.
const POLL_STEP: Duration = Duration::from_millis(100);

struct Args {
    iface: String,
    count: Option<u64>,
    duration: Option<Duration>,
    write: Option<String>,
    netns: Option<String>,
    runtime: RuntimeKind,
    backend: Backend,
}

/// Prints the problem and the usage on stderr, exits with status 2.
fn bad_args(msg: &str) -> ! {
    eprintln!("capture: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut out = Args {
        iface: String::new(),
        count: None,
        duration: None,
        write: None,
        netns: None,
        runtime: RuntimeKind::Sync,
        backend: Backend::AfPacket,
    };
    let mut iface = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let known = [
            "--iface",
            "--count",
            "--duration",
            "--write",
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
            "--count" => {
                out.count = Some(parse_number(&flag, &value).unwrap_or_else(|m| bad_args(&m)));
            }
            "--duration" => {
                out.duration = Some(parse_seconds(&flag, &value).unwrap_or_else(|m| bad_args(&m)));
            }
            "--write" => out.write = Some(value),
            "--netns" => out.netns = Some(value),
            "--runtime" => out.runtime = parse_runtime(&value).unwrap_or_else(|m| bad_args(&m)),
            "--backend" => out.backend = parse_backend(&value).unwrap_or_else(|m| bad_args(&m)),
            _ => unreachable!(),
        }
    }
    match iface {
        Some(i) => out.iface = i,
        None => bad_args("--iface is required"),
    }
    out
}

struct Totals {
    packets: u64,
    bytes: u64,
    drops: u64,
}

/// The opened socket, before any runtime is involved.
// Made once per run and moved once: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Socket {
    AfPacket(Capture),
    Xdp(XdpSocket),
}

impl Socket {
    /// `afpacket (...)` or `xdp (...)`, with the details that matter.
    fn describe(&self) -> String {
        match self {
            Socket::AfPacket(cap) => format!(
                "afpacket (TPACKET_V3, {} blocks of {} KiB)",
                cap.block_count(),
                cap.block_size() >> 10
            ),
            Socket::Xdp(xsk) => format!(
                "xdp (AF_XDP queue {}, {:?} mode, {} XDP)",
                xsk.queue(),
                xsk.bind_mode(),
                xsk.attach_mode()
                    .map_or_else(|| "user".to_owned(), |m| m.to_string())
            ),
        }
    }
}

impl RuntimeKind {
    fn name(self) -> &'static str {
        match self {
            RuntimeKind::Sync => "sync",
            RuntimeKind::Tokio => "tokio (current thread)",
            RuntimeKind::Smol => "smol",
        }
    }
}

fn open_socket(args: &Args) -> netring::Result<Socket> {
    match args.backend {
        Backend::AfPacket => Capture::open(&args.iface).map(Socket::AfPacket),
        Backend::Xdp => {
            // Copy-mode RX writes frames after the kernel's 256-byte XDP headroom.
            let mtu = netring::Interface::by_name(&args.iface)?.mtu() as usize;
            let frame_size = if mtu + 18 + 256 > 2048 { 4096 } else { 2048 };
            XdpSocket::builder(&args.iface)
                .queue(0)
                .frame_size(frame_size)
                .open()
                .map(Socket::Xdp)
        }
    }
}

/// Counts (and optionally records) packets up to the `--count` limit.
struct Counter {
    packets: u64,
    bytes: u64,
    limit: u64,
    writer: Option<PcapFile>,
}

impl Counter {
    fn full(&self) -> bool {
        self.packets >= self.limit
    }

    fn add_afpacket(&mut self, batch: &Batch) -> Result<(), String> {
        for pkt in batch {
            if self.full() {
                break;
            }
            self.packets += 1;
            self.bytes += pkt.wire_len() as u64;
            if let Some(w) = self.writer.as_mut() {
                w.write_packet(&pkt).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn add_xdp(&mut self, batch: &XdpBatch) -> Result<(), String> {
        // AF_XDP carries no per-frame timestamp: the batch's arrival time stands in for it.
        let ts = if self.writer.is_some() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Timestamp {
                sec: now.as_secs() as u32,
                nsec: now.subsec_nanos(),
            }
        } else {
            Timestamp { sec: 0, nsec: 0 }
        };
        for pkt in batch {
            if self.full() {
                break;
            }
            self.packets += 1;
            self.bytes += pkt.len() as u64;
            if let Some(w) = self.writer.as_mut() {
                w.write_frame(ts, pkt.len(), pkt.data(), None)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// How long the next wait may last; `None` once the capture should end.
fn next_wait(counter: &Counter, deadline: Option<Instant>) -> Option<Duration> {
    if counter.full() || cli::stop_requested() {
        return None;
    }
    match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(POLL_STEP))
        }
        None => Some(POLL_STEP),
    }
}

/// The blocking loop; returns the drops.
fn capture_sync(
    socket: Socket,
    iface: &str,
    counter: &mut Counter,
    deadline: Option<Instant>,
) -> Result<u64, String> {
    eprintln!("capture: listening on {iface}");
    let err = |e: netring::Error| e.to_string();
    match socket {
        Socket::AfPacket(mut cap) => {
            while let Some(wait) = next_wait(counter, deadline) {
                if let Some(batch) = cap.next_batch(Some(wait)).map_err(err)? {
                    counter.add_afpacket(&batch)?;
                }
            }
            Ok(cap.cumulative_stats().map_err(err)?.drops)
        }
        Socket::Xdp(mut xsk) => {
            while let Some(wait) = next_wait(counter, deadline) {
                if let Some(batch) = xsk.next_batch(Some(wait)).map_err(err)? {
                    counter.add_xdp(&batch)?;
                }
            }
            Ok(xsk.stats().map_err(err)?.rx_dropped)
        }
    }
}

/// `fut`'s output, or `None` if `timer` finishes first (`fut` is then dropped: the streams'
/// `next_batch` futures are cancel-safe, so nothing is lost).
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
async fn or_timeout<T>(fut: impl Future<Output = T>, timer: impl Future<Output = ()>) -> Option<T> {
    match select(pin!(fut), pin!(timer)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// The async loop, on whichever runtime `R` is, with that runtime's timer `sleep`; returns the
/// drops. Must run inside the runtime (registration needs its reactor).
#[cfg_attr(not(any(feature = "tokio", feature = "smol")), allow(dead_code))]
async fn capture_async<R, S, F>(
    socket: Socket,
    iface: &str,
    counter: &mut Counter,
    deadline: Option<Instant>,
    sleep: S,
) -> Result<u64, String>
where
    R: Runtime,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let err = |e: netring::Error| e.to_string();
    match socket {
        Socket::AfPacket(cap) => {
            let mut rx = AsyncCapture::<R>::new(cap).map_err(err)?;
            eprintln!("capture: listening on {iface}");
            while let Some(wait) = next_wait(counter, deadline) {
                match or_timeout(rx.next_batch(), sleep(wait)).await {
                    Some(Some(batch)) => counter.add_afpacket(&batch.map_err(err)?)?,
                    Some(None) => break, // the stream ended (after reporting its error)
                    None => {}
                }
            }
            Ok(rx.cumulative_stats().map_err(err)?.drops)
        }
        Socket::Xdp(xsk) => {
            let mut rx = AsyncXdpSocket::<R>::new(xsk).map_err(err)?;
            eprintln!("capture: listening on {iface}");
            while let Some(wait) = next_wait(counter, deadline) {
                if let Some(batch) = or_timeout(rx.next_batch(), sleep(wait)).await {
                    counter.add_xdp(&batch.map_err(err)?)?;
                }
            }
            Ok(rx.get_ref().stats().map_err(err)?.rx_dropped)
        }
    }
}

#[cfg(feature = "tokio")]
fn capture_tokio(
    socket: Socket,
    iface: &str,
    counter: &mut Counter,
    deadline: Option<Instant>,
) -> Result<u64, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(capture_async::<netring::runtime::Tokio, _, _>(
        socket,
        iface,
        counter,
        deadline,
        tokio::time::sleep,
    ))
}

#[cfg(not(feature = "tokio"))]
fn capture_tokio(_: Socket, _: &str, _: &mut Counter, _: Option<Instant>) -> Result<u64, String> {
    unreachable!("rejected while parsing the arguments")
}

#[cfg(feature = "smol")]
fn capture_smol(
    socket: Socket,
    iface: &str,
    counter: &mut Counter,
    deadline: Option<Instant>,
) -> Result<u64, String> {
    smol::block_on(capture_async::<netring::runtime::Smol, _, _>(
        socket,
        iface,
        counter,
        deadline,
        |d| async move {
            smol::Timer::after(d).await;
        },
    ))
}

#[cfg(not(feature = "smol"))]
fn capture_smol(_: Socket, _: &str, _: &mut Counter, _: Option<Instant>) -> Result<u64, String> {
    unreachable!("rejected while parsing the arguments")
}

fn run(args: &Args) -> Result<Totals, String> {
    let socket = open_in_netns(args.netns.as_deref(), || open_socket(args))?;
    let writer = create_pcap(args.write.as_deref())?;
    let mut counter = Counter {
        packets: 0,
        bytes: 0,
        limit: args.count.unwrap_or(u64::MAX),
        writer,
    };
    eprintln!(
        "capture: backend {}, runtime {}",
        socket.describe(),
        args.runtime.name()
    );
    let deadline = args.duration.map(|d| Instant::now() + d);
    let iface = args.iface.as_str();
    let drops = match args.runtime {
        RuntimeKind::Sync => capture_sync(socket, iface, &mut counter, deadline),
        RuntimeKind::Tokio => capture_tokio(socket, iface, &mut counter, deadline),
        RuntimeKind::Smol => capture_smol(socket, iface, &mut counter, deadline),
    }?;
    if let Some(w) = counter.writer.take() {
        w.into_inner().map_err(|e| e.to_string())?;
    }
    Ok(Totals {
        packets: counter.packets,
        bytes: counter.bytes,
        drops,
    })
}

fn main() -> ExitCode {
    let args = parse_args();
    cli::install_signal_handlers();
    match run(&args) {
        Ok(t) => {
            println!("packets={} bytes={} drops={}", t.packets, t.bytes, t.drops);
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("capture: {msg}");
            ExitCode::from(1)
        }
    }
}
