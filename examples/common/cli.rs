//! Command-line pieces the examples share (`#[path]`-included): numbers and durations, the
//! `--runtime` and `--backend` values, `--netns` and `--write`, and a clean stop on SIGINT/SIGTERM.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufWriter;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netring::pcap::PcapWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Sync,
    Tokio,
    Smol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    AfPacket,
    Xdp,
}

/// Parses `flag`'s `value` as a number.
pub fn parse_number<T: FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid number"))
}

/// Parses `flag`'s `value` as a duration in seconds (fractions allowed).
pub fn parse_seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag}: `{value}` is not a number of seconds"))
}

/// Parses `--runtime`; a runtime this build lacks is an error that says which feature to add.
pub fn parse_runtime(value: &str) -> Result<RuntimeKind, String> {
    let (kind, built) = match value {
        "sync" => (RuntimeKind::Sync, true),
        "tokio" => (RuntimeKind::Tokio, cfg!(feature = "tokio")),
        "smol" => (RuntimeKind::Smol, cfg!(feature = "smol")),
        _ => {
            return Err(format!(
                "--runtime: unknown runtime `{value}` (sync, tokio, smol)"
            ));
        }
    };
    if !built {
        return Err(format!(
            "--runtime {value}: this build lacks the `{value}` feature (build with --features {value})"
        ));
    }
    Ok(kind)
}

/// Parses `--backend`.
pub fn parse_backend(value: &str) -> Result<Backend, String> {
    match value {
        "afpacket" => Ok(Backend::AfPacket),
        "xdp" => Ok(Backend::Xdp),
        _ => Err(format!(
            "--backend: unknown backend `{value}` (afpacket, xdp)"
        )),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM end the run cleanly (the final line is still printed).
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Parses `--runtime` for an example that only runs async: `sync` is refused with a message.
pub fn parse_async_runtime(value: &str) -> Result<RuntimeKind, String> {
    match parse_runtime(value)? {
        RuntimeKind::Sync => Err("--runtime sync: this example is async only (tokio, smol)".into()),
        kind => Ok(kind),
    }
}

/// The async runtime used without `--runtime`: tokio if this build has it, else smol.
pub fn default_async_runtime() -> Result<RuntimeKind, String> {
    if cfg!(feature = "tokio") {
        Ok(RuntimeKind::Tokio)
    } else if cfg!(feature = "smol") {
        Ok(RuntimeKind::Smol)
    } else {
        Err(
            "this build has no async runtime: build with --features tokio or --features smol"
                .into(),
        )
    }
}

/// Runs `open` inside the network namespace `netns` (`--netns`), or right here without one.
pub fn open_in_netns<T>(
    netns: Option<&str>,
    open: impl FnOnce() -> netring::Result<T>,
) -> Result<T, String> {
    match netns {
        Some(ns) => netring::netns::within(ns, open).and_then(|r| r),
        None => open(),
    }
    .map_err(|e| e.to_string())
}

/// The pcap file `--write` names, buffered.
pub type PcapFile = PcapWriter<BufWriter<File>>;

/// Creates the `--write` pcap file (`None` without `--write`).
pub fn create_pcap(path: Option<&str>) -> Result<Option<PcapFile>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?;
    PcapWriter::new(BufWriter::with_capacity(1 << 20, file))
        .map(Some)
        .map_err(|e| format!("{path}: {e}"))
}
