//! Fans a capture out to worker tasks: an `AsyncCapture` on a tokio multi-thread runtime hands
//! each batch (an owned ring block, no copy) to one of N workers, round robin over bounded
//! channels; the workers count packets and bytes.
//!
//! ```text
//! workers --iface IF [--workers N] [--count N] [--duration SECS] [--netns NAME]
//! ```
//!
//! Needs the `tokio` feature: `cargo run --example workers --features tokio -- --iface eth0`.
//!
//! Runs until N packets were handed out, SECS elapsed, or SIGINT/SIGTERM, whichever comes first
//! (with neither limit, until a signal). Once the socket is open it says `workers: listening on
//! IF` on stderr. At the end each worker's counts go to stderr (`worker I: batches=X packets=Y
//! bytes=Z`) and exactly one line to stdout: `packets=N bytes=B drops=D` (bytes on the wire, as
//! the kernel reports them; drops are the kernel's ring drops since the socket opened). Exit
//! status: 0 on success, 1 on an error (the library's message on stderr), 2 on bad arguments.

#[cfg(feature = "tokio")]
fn main() -> std::process::ExitCode {
    imp::main()
}

#[cfg(not(feature = "tokio"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "workers: built without the `tokio` feature; run it with \
         `cargo run --example workers --features tokio -- --iface IF`"
    );
    std::process::ExitCode::from(2)
}

#[cfg(feature = "tokio")]
#[path = "common/cli.rs"]
mod cli;

#[cfg(feature = "tokio")]
mod imp {
    use std::process::ExitCode;
    use std::time::Duration;

    use futures::StreamExt;
    use netring::runtime::Tokio;
    use netring::{AsyncCapture, Batch, Capture, CaptureBuilder};
    use tokio::sync::mpsc;

    const USAGE: &str = "\
usage: workers --iface IF [--workers N] [--count N] [--duration SECS] [--netns NAME]

  --iface IF         interface to capture on
  --workers N        worker tasks the batches are spread over (default 4, at most 64)
  --count N          stop after N packets
  --duration SECS    stop after SECS seconds (decimals allowed)
  --netns NAME       open the socket inside the network namespace NAME

Prints each worker's counts on stderr and `packets=N bytes=B drops=D` on stdout at the end.";

    /// Batches queued per worker. Together with the one each worker is reading, this is how many
    /// ring blocks the workers can hold at once; the ring is sized well above that.
    const QUEUE: usize = 4;

    /// How often the dispatcher looks at the signal flag while the link is quiet.
    const TICK: Duration = Duration::from_millis(100);

    struct Args {
        iface: String,
        workers: usize,
        count: Option<u64>,
        duration: Option<Duration>,
        netns: Option<String>,
    }

    /// Prints the problem and the usage on stderr, exits with status 2.
    fn bad_args(msg: &str) -> ! {
        eprintln!("workers: {msg}\n\n{USAGE}");
        std::process::exit(2);
    }

    fn parse_args() -> Args {
        let mut out = Args {
            iface: String::new(),
            workers: 4,
            count: None,
            duration: None,
            netns: None,
        };
        let mut iface = None;
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let known = ["--iface", "--workers", "--count", "--duration", "--netns"];
            if !known.contains(&flag.as_str()) {
                bad_args(&format!("unknown argument `{flag}`"));
            }
            let Some(value) = args.next() else {
                bad_args(&format!("{flag} needs a value"));
            };
            match flag.as_str() {
                "--iface" => iface = Some(value),
                "--workers" => {
                    out.workers = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .unwrap_or_else(|| {
                            bad_args(&format!("--workers: `{value}` is not a number in 1..=64"))
                        });
                }
                "--count" => {
                    out.count = Some(
                        super::cli::parse_number(&flag, &value).unwrap_or_else(|m| bad_args(&m)),
                    );
                }
                "--duration" => {
                    out.duration = Some(
                        super::cli::parse_seconds(&flag, &value).unwrap_or_else(|m| bad_args(&m)),
                    );
                }
                "--netns" => out.netns = Some(value),
                _ => unreachable!(),
            }
        }
        match iface {
            Some(i) => out.iface = i,
            None => bad_args("--iface is required"),
        }
        out
    }

    /// One batch for a worker, and how many of its packets to count (the last batch of a
    /// `--count` run may be cut short).
    struct Job {
        batch: Batch,
        take: usize,
    }

    #[derive(Debug, Default, Clone, Copy)]
    struct Counts {
        batches: u64,
        packets: u64,
        bytes: u64,
    }

    /// Counts what it is given; each batch goes back to the kernel when the job is dropped, here,
    /// on the worker's thread.
    async fn worker(mut jobs: mpsc::Receiver<Job>) -> Counts {
        let mut c = Counts::default();
        while let Some(job) = jobs.recv().await {
            c.batches += 1;
            for pkt in job.batch.iter().take(job.take) {
                c.packets += 1;
                c.bytes += pkt.wire_len() as u64;
            }
        }
        c
    }

    struct Totals {
        packets: u64,
        bytes: u64,
        drops: u64,
    }

    async fn run(args: &Args) -> Result<Totals, String> {
        // Enough blocks that the workers can hold their share and the kernel still has room.
        let blocks = CaptureBuilder::DEFAULT_BLOCK_COUNT.max(args.workers * (QUEUE + 1) + 8);
        let cap = super::cli::open_in_netns(args.netns.as_deref(), || {
            Capture::builder(&args.iface).block_count(blocks).open()
        })?;
        let mut rx = AsyncCapture::<Tokio>::new(cap).map_err(|e| e.to_string())?;
        eprintln!(
            "workers: listening on {} with {} workers",
            args.iface, args.workers
        );

        let mut queues = Vec::with_capacity(args.workers);
        let mut handles = Vec::with_capacity(args.workers);
        for _ in 0..args.workers {
            let (tx, jobs) = mpsc::channel(QUEUE);
            queues.push(tx);
            handles.push(tokio::spawn(worker(jobs)));
        }

        let limit = args.count.unwrap_or(u64::MAX);
        let deadline = tokio::time::Instant::now()
            + args
                .duration
                .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
        let mut tick = tokio::time::interval(TICK);
        let mut handed_out = 0u64;
        let mut next = 0usize;
        let mut failure = None;
        while handed_out < limit && !super::cli::stop_requested() {
            // `next()` is cancel-safe: losing the race to the timers loses no batch.
            let item = tokio::select! {
                item = rx.next() => item,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => continue,
            };
            let batch = match item {
                None => break,
                Some(Err(e)) => {
                    failure = Some(e.to_string());
                    break;
                }
                Some(Ok(batch)) => batch,
            };
            let take = (limit - handed_out).min(batch.len() as u64) as usize;
            handed_out += take as u64;
            if queues[next].send(Job { batch, take }).await.is_err() {
                failure = Some(format!("worker {next} stopped early"));
                break;
            }
            next = (next + 1) % queues.len();
        }
        drop(queues);

        let mut totals = Totals {
            packets: 0,
            bytes: 0,
            drops: 0,
        };
        for (i, handle) in handles.into_iter().enumerate() {
            let c = handle
                .await
                .map_err(|e| format!("worker {i} failed: {e}"))?;
            eprintln!(
                "worker {i}: batches={} packets={} bytes={}",
                c.batches, c.packets, c.bytes
            );
            totals.packets += c.packets;
            totals.bytes += c.bytes;
        }
        if let Some(msg) = failure {
            return Err(msg);
        }
        totals.drops = rx.cumulative_stats().map_err(|e| e.to_string())?.drops;
        Ok(totals)
    }

    pub fn main() -> ExitCode {
        let args = parse_args();
        super::cli::install_signal_handlers();
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("workers: cannot start the tokio runtime: {e}");
                return ExitCode::from(1);
            }
        };
        match rt.block_on(run(&args)) {
            Ok(t) => {
                println!("packets={} bytes={} drops={}", t.packets, t.bytes, t.drops);
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("workers: {msg}");
                ExitCode::from(1)
            }
        }
    }
}
