//! A self-contained tour: makes a throwaway network namespace with a veth pair, sends frames of
//! every size from 64 to 1514 bytes through the TX ring on one end, captures them through the RX
//! ring on the other, checks every one, and says how fast it went.
//!
//! ```text
//! sudo -E cargo run --release --example demo [-- --count N]
//! ```
//!
//! Needs root (network namespaces, raw sockets) and `ip` (iproute2). The namespace is removed at
//! the end, also on error. Exits 0 only if every frame arrived intact.

#[path = "../tests/common/testnet.rs"]
mod testnet;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netring::{Capture, Injector, Timestamp};
use testnet::TestNet;

const USAGE: &str = "\
usage: demo [--count N]

  --count N   frames to send (default 200000)

Run as root: it creates a network namespace with a veth pair, sends N frames of 64..1514 bytes
through netring's TX ring on one end and captures them with the RX ring on the other.";

const DEFAULT_COUNT: u64 = 200_000;
const MIN_LEN: usize = 64;
const MAX_LEN: usize = 1514;
/// Ethernet + IPv4 + UDP headers, then a 4-byte sequence number, then the pattern.
const HEADERS: usize = 42;
const PAYLOAD_AT: usize = HEADERS + 4;
/// How many packet summaries to show.
const SHOW: usize = 3;

fn bad_args(msg: &str) -> ! {
    eprintln!("demo: {msg}\n\n{USAGE}");
    std::process::exit(2);
}

fn parse_args() -> u64 {
    let mut count = DEFAULT_COUNT;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--count" => {
                let Some(v) = args.next() else {
                    bad_args("--count needs a value");
                };
                count = v
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| (1..=u32::MAX as u64).contains(&n))
                    .unwrap_or_else(|| {
                        bad_args(&format!("--count: `{v}` is not a valid number (1..2^32)"))
                    });
            }
            _ => bad_args(&format!("unknown argument `{flag}`")),
        }
    }
    count
}

/// Frame length for sequence number `seq`: steps through every length in 64..=1514.
fn frame_len(seq: u32) -> usize {
    MIN_LEN + (seq as usize * 7919) % (MAX_LEN - MIN_LEN + 1)
}

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

/// Builds frames in place: broadcast Ethernet, UDP/IPv4 198.18.0.1:40000 -> 198.18.0.2:9 (the
/// RFC 2544 benchmarking range), a sequence number, then bytes `seq, seq+1, ...` (mod 256).
struct FrameMaker {
    header: [u8; HEADERS],
    pattern: Vec<u8>,
}

impl FrameMaker {
    fn new(src_mac: [u8; 6]) -> Self {
        let mut h = [0u8; HEADERS];
        h[0..6].fill(0xff);
        h[6..12].copy_from_slice(&src_mac);
        h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        h[14] = 0x45; // IPv4, 20-byte header
        h[20] = 0x40; // don't fragment
        h[22] = 64; // TTL
        h[23] = 17; // UDP
        h[26..30].copy_from_slice(&[198, 18, 0, 1]);
        h[30..34].copy_from_slice(&[198, 18, 0, 2]);
        h[34..36].copy_from_slice(&40000u16.to_be_bytes());
        h[36..38].copy_from_slice(&9u16.to_be_bytes());
        Self {
            header: h,
            pattern: (0..MAX_LEN + 256).map(|i| i as u8).collect(),
        }
    }

    /// The frame with sequence number `seq` (its length is `buf.len()`).
    fn fill(&self, buf: &mut [u8], seq: u32) {
        let len = buf.len();
        buf[..HEADERS].copy_from_slice(&self.header);
        buf[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        let csum = ipv4_checksum(&buf[14..34]);
        buf[24..26].copy_from_slice(&csum.to_be_bytes());
        buf[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        buf[HEADERS..PAYLOAD_AT].copy_from_slice(&seq.to_be_bytes());
        let start = seq as usize % 256;
        buf[PAYLOAD_AT..].copy_from_slice(&self.pattern[start..start + len - PAYLOAD_AT]);
    }

    /// The sequence number of a received frame, if it is exactly what `fill` made.
    fn check(&self, data: &[u8]) -> Option<u32> {
        let len = data.len();
        if len < PAYLOAD_AT {
            return None;
        }
        let seq = u32::from_be_bytes(data[HEADERS..PAYLOAD_AT].try_into().ok()?);
        let start = seq as usize % 256;
        let h = &self.header;
        let intact = len == frame_len(seq)
            && data[..16] == h[..16]
            && data[16..18] == ((len - 14) as u16).to_be_bytes()
            && data[18..24] == h[18..24]
            && ipv4_checksum(&data[14..34]) == 0 // a valid header sums to 0xffff
            && data[26..38] == h[26..38]
            && data[38..40] == ((len - 34) as u16).to_be_bytes()
            && data[40..42] == h[40..42]
            && data[PAYLOAD_AT..] == self.pattern[start..start + len - PAYLOAD_AT];
        intact.then_some(seq)
    }
}

/// `YYYY-MM-DD HH:MM:SS.nnnnnnnnn` UTC.
fn utc(ts: Timestamp) -> String {
    let days = i64::from(ts.sec) / 86_400;
    let rem = i64::from(ts.sec) % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ts.nsec
    )
}

/// A one-line description of a frame this demo sent.
fn summary(data: &[u8], ts: Timestamp) -> String {
    let mac = |m: &[u8]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let ip = |a: &[u8]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
    if data.len() < PAYLOAD_AT || data[12..14] != [0x08, 0x00] || data[23] != 17 {
        return format!("{}  {} bytes (not ours)", utc(ts), data.len());
    }
    format!(
        "{}  {} > {}  IPv4 {}:{} > {}:{} UDP  {} bytes  seq={}",
        utc(ts),
        mac(&data[6..12]),
        mac(&data[0..6]),
        ip(&data[26..30]),
        u16::from_be_bytes([data[34], data[35]]),
        ip(&data[30..34]),
        u16::from_be_bytes([data[36], data[37]]),
        data.len(),
        u32::from_be_bytes([data[42], data[43], data[44], data[45]]),
    )
}

/// What the capture thread saw.
#[derive(Default)]
struct Seen {
    packets: u64,
    unique: u64,
    duplicates: u64,
    corrupt: u64,
    out_of_order: u64,
    bytes: u64,
    batches: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    head: Vec<String>,
    tail: String,
    kernel: netring::Stats,
    sequence_gaps: u64,
}

/// Shared between the sender and the capture thread.
#[derive(Default)]
struct Progress {
    /// Set once the sender has sent everything (or given up).
    sender_done: AtomicBool,
    /// Bytes the capture thread has read so far.
    received_bytes: AtomicU64,
}

fn receive(
    mut cap: Capture,
    maker: &FrameMaker,
    count: u64,
    progress: &Progress,
) -> netring::Result<Seen> {
    let mut seen = Seen::default();
    let mut got = vec![false; count as usize];
    let mut expect_next = 0u32;
    let hard_deadline = Instant::now() + Duration::from_secs(60);
    let mut idle_since: Option<Instant> = None;
    while seen.unique < count && Instant::now() < hard_deadline {
        let Some(batch) = cap.next_batch(Some(Duration::from_millis(100)))? else {
            // Once the sender is done, a second without traffic means nothing more is coming.
            if progress.sender_done.load(Ordering::Acquire) {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
            continue;
        };
        idle_since = None;
        seen.batches += 1;
        for pkt in &batch {
            let data = pkt.data();
            seen.packets += 1;
            seen.bytes += pkt.wire_len() as u64;
            seen.first.get_or_insert(pkt.timestamp());
            seen.last = Some(pkt.timestamp());
            if seen.head.len() < SHOW {
                seen.head.push(summary(data, pkt.timestamp()));
            }
            match maker.check(data) {
                Some(seq) if (seq as u64) < count => {
                    if seq != expect_next {
                        seen.out_of_order += 1;
                    }
                    expect_next = seq.wrapping_add(1);
                    if std::mem::replace(&mut got[seq as usize], true) {
                        seen.duplicates += 1;
                    } else {
                        seen.unique += 1;
                    }
                    if seen.unique == count {
                        seen.tail = summary(data, pkt.timestamp());
                    }
                }
                _ => seen.corrupt += 1,
            }
        }
        progress.received_bytes.store(seen.bytes, Ordering::Release);
    }
    seen.kernel = cap.cumulative_stats()?;
    seen.sequence_gaps = cap.sequence_gaps();
    Ok(seen)
}

struct Sent {
    frames: u64,
    bytes: u64,
    elapsed: Duration,
    pauses: u64,
}

/// Sends `count` frames, staying at most `window` bytes ahead of the reader so a descheduled
/// capture thread cannot make the ring overflow.
fn send(
    tx: &mut Injector,
    maker: &FrameMaker,
    count: u64,
    progress: &Progress,
    window: u64,
) -> netring::Result<Sent> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut pauses = 0u64;
    for seq in 0..count as u32 {
        if seq % 256 == 0
            && bytes.saturating_sub(progress.received_bytes.load(Ordering::Acquire)) > window
        {
            tx.flush()?;
            pauses += 1;
            let until = Instant::now() + Duration::from_secs(10);
            while bytes.saturating_sub(progress.received_bytes.load(Ordering::Acquire)) > window / 2
            {
                if Instant::now() > until {
                    return Err(netring::Error::InvalidConfig(
                        "the capture thread read nothing for 10 s".into(),
                    ));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let len = frame_len(seq);
        let Some(mut slot) = tx.reserve(len, Some(Duration::from_secs(10)))? else {
            return Err(netring::Error::InvalidConfig(
                "the TX ring made no progress for 10 s".into(),
            ));
        };
        maker.fill(slot.data_mut(), seq);
        slot.commit();
        bytes += len as u64;
        if tx.queued() >= 64 {
            tx.flush()?;
        }
    }
    if !tx.wait_sent(Some(Duration::from_secs(10)))? {
        return Err(netring::Error::InvalidConfig(format!(
            "{} frames still in the TX ring after 10 s",
            tx.in_flight()
        )));
    }
    Ok(Sent {
        frames: count,
        bytes,
        elapsed: started.elapsed(),
        pauses,
    })
}

fn rate(n: f64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    let r = n / secs;
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0} ")
    }
}

fn run(count: u64) -> Result<bool, String> {
    let net = TestNet::new();
    println!(
        "netring demo: namespace {}, veth {} -> {} (MTU 1500)",
        net.ns, net.a, net.b
    );
    // 64 MiB receive ring: 64 blocks of 1 MiB, retired after 10 ms on a quiet link.
    let cap = net
        .within(|| {
            Capture::builder(&net.b)
                .block_size(1 << 20)
                .block_count(64)
                .open()
        })
        .map_err(|e| format!("opening the capture on {}: {e}", net.b))?;
    let mut tx = net
        .within(|| Injector::builder(&net.a).frame_count(1024).open())
        .map_err(|e| format!("opening the TX ring on {}: {e}", net.a))?;
    let maker = Arc::new(FrameMaker::new(tx.interface().mac()));
    println!(
        "sending {count} UDP/IPv4 frames of {MIN_LEN}..{MAX_LEN} bytes through the TX ring on {} ({} slots),\n\
         capturing them through the RX ring on {} ({} x {} KiB blocks)\n",
        net.a,
        tx.frame_count(),
        net.b,
        cap.block_count(),
        cap.block_size() >> 10
    );

    // Half the ring's bytes: room for the per-packet headers and partly filled blocks.
    let window = (cap.block_count() * cap.block_size() / 2) as u64;
    let progress = Arc::new(Progress::default());
    let receiver = {
        let (maker, progress) = (maker.clone(), progress.clone());
        std::thread::spawn(move || receive(cap, &maker, count, &progress))
    };
    let sent = send(&mut tx, &maker, count, &progress, window);
    progress.sender_done.store(true, Ordering::Release);
    let seen = receiver
        .join()
        .map_err(|_| "the capture thread panicked".to_string())?
        .map_err(|e| format!("capture: {e}"))?;
    let sent = sent.map_err(|e| format!("sending: {e}"))?;

    println!("first packets seen on {}:", net.b);
    for line in &seen.head {
        println!("  {line}");
    }
    if !seen.tail.is_empty() {
        println!("last:\n  {}", seen.tail);
    }
    let tx_secs = sent.elapsed.as_secs_f64();
    println!(
        "\nTX  {} frames, {:.1} MB in {:.3} s: {}pps, {:.2} Gbit/s ({} pauses for the reader)",
        sent.frames,
        sent.bytes as f64 / 1e6,
        tx_secs,
        rate(sent.frames as f64, tx_secs),
        sent.bytes as f64 * 8.0 / tx_secs / 1e9,
        sent.pauses
    );
    let span = match (seen.first, seen.last) {
        (Some(a), Some(b)) => (b.as_nanos().saturating_sub(a.as_nanos())) as f64 / 1e9,
        _ => 0.0,
    };
    println!(
        "RX  {} frames, {:.1} MB in {} batches; timestamps {} .. {} UTC ({:.3} s): {}pps, {:.2} Gbit/s",
        seen.packets,
        seen.bytes as f64 / 1e6,
        seen.batches,
        seen.first.map_or("-".into(), utc),
        seen.last.map_or("-".into(), utc),
        span,
        rate(seen.packets as f64, span),
        if span > 0.0 {
            seen.bytes as f64 * 8.0 / span / 1e9
        } else {
            0.0
        }
    );
    let missing = count - seen.unique;
    println!(
        "    kernel: {} packets, {} drops, {} freezes; sequence gaps {}; \
         missing {missing}, duplicates {}, corrupt {}, out of order {}",
        seen.kernel.packets,
        seen.kernel.drops,
        seen.kernel.freeze_count,
        seen.sequence_gaps,
        seen.duplicates,
        seen.corrupt,
        seen.out_of_order
    );
    let ok = missing == 0 && seen.duplicates == 0 && seen.corrupt == 0;
    if ok {
        println!("\nOK: every frame arrived intact ({count} of {count}).");
    } else {
        println!(
            "\nFAILED: {missing} of {count} frames missing, {} duplicates, {} corrupt.",
            seen.duplicates, seen.corrupt
        );
    }
    Ok(ok)
    // `net` drops here: the namespace and its veth pair are deleted.
}

fn main() -> ExitCode {
    let count = parse_args();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "demo: this needs root (it creates a network namespace and raw sockets).\n\
             Run it as root, e.g.: sudo -E cargo run --release --example demo"
        );
        return ExitCode::from(1);
    }
    if !testnet::can_run("demo", &[]) {
        eprintln!("demo: the `ip` tool (iproute2) is needed");
        return ExitCode::from(1);
    }
    match run(count) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(1)
        }
    }
}
