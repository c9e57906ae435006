//! Captures packets through a TPACKET_V3 ring, optionally into a pcap file.
//!
//! ```text
//! capture --iface IF [--count N] [--duration SECS] [--write FILE.pcap] [--netns NAME]
//!         [--runtime sync] [--backend afpacket]
//! ```
//!
//! Runs until N packets arrived, SECS elapsed, or SIGINT/SIGTERM, whichever comes first (with
//! neither limit, until a signal). Once the socket is open it says `capture: listening on IF` on
//! stderr; at the end it prints exactly one line on stdout: `packets=N bytes=B drops=D` (bytes on
//! the wire; drops are the kernel's ring drops since the socket opened). Exit status: 0 on
//! success, 1 on an error (the library's message on stderr), 2 on bad arguments.

use std::fs::File;
use std::io::BufWriter;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netring::Capture;
use netring::pcap::PcapWriter;

const USAGE: &str = "\
usage: capture --iface IF [--count N] [--duration SECS] [--write FILE.pcap] [--netns NAME]
               [--runtime sync] [--backend afpacket]

  --iface IF         interface to capture on
  --count N          stop after N packets
  --duration SECS    stop after SECS seconds (decimals allowed)
  --write FILE       write the packets to a pcap file (nanosecond timestamps)
  --netns NAME       open the socket inside the network namespace NAME
  --runtime sync     I/O runtime (only `sync` is available yet)
  --backend afpacket packet backend (only `afpacket` is available yet)

Prints `packets=N bytes=B drops=D` at the end.";

/// Longest single wait, so a signal or the deadline is noticed promptly.
const POLL_STEP: Duration = Duration::from_millis(100);

struct Args {
    iface: String,
    count: Option<u64>,
    duration: Option<Duration>,
    write: Option<String>,
    netns: Option<String>,
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
                let n = value.parse::<u64>().unwrap_or_else(|_| {
                    bad_args(&format!("--count: `{value}` is not a valid number"))
                });
                out.count = Some(n);
            }
            "--duration" => {
                let secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                    .unwrap_or_else(|| {
                        bad_args(&format!("--duration: `{value}` is not a number of seconds"))
                    });
                out.duration = Some(Duration::from_secs_f64(secs));
            }
            "--write" => out.write = Some(value),
            "--netns" => out.netns = Some(value),
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
    match iface {
        Some(i) => out.iface = i,
        None => bad_args("--iface is required"),
    }
    out
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM end the capture cleanly (the final line is still printed).
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

struct Totals {
    packets: u64,
    bytes: u64,
    drops: u64,
}

fn run(args: &Args) -> Result<Totals, String> {
    let open = || Capture::open(&args.iface);
    let mut cap = match &args.netns {
        Some(ns) => netring::netns::within(ns, open).and_then(|r| r),
        None => open(),
    }
    .map_err(|e| e.to_string())?;
    let mut writer = match &args.write {
        Some(path) => {
            let file = File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?;
            Some(
                PcapWriter::new(BufWriter::with_capacity(1 << 20, file))
                    .map_err(|e| format!("{path}: {e}"))?,
            )
        }
        None => None,
    };
    eprintln!("capture: listening on {}", args.iface);

    let deadline = args.duration.map(|d| Instant::now() + d);
    let limit = args.count.unwrap_or(u64::MAX);
    let mut t = Totals {
        packets: 0,
        bytes: 0,
        drops: 0,
    };
    'outer: while t.packets < limit && !STOP.load(Ordering::Relaxed) {
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.min(POLL_STEP)
            }
            None => POLL_STEP,
        };
        let Some(batch) = cap.next_batch(Some(wait)).map_err(|e| e.to_string())? else {
            continue;
        };
        for pkt in &batch {
            if t.packets == limit {
                break 'outer;
            }
            t.packets += 1;
            t.bytes += pkt.wire_len() as u64;
            if let Some(w) = writer.as_mut() {
                w.write_packet(&pkt).map_err(|e| e.to_string())?;
            }
        }
    }
    if let Some(w) = writer {
        w.into_inner().map_err(|e| e.to_string())?;
    }
    t.drops = cap.cumulative_stats().map_err(|e| e.to_string())?.drops;
    Ok(t)
}

fn main() -> ExitCode {
    let args = parse_args();
    install_signal_handlers();
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
