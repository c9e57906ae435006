//! Command-line pieces the examples share (`#[path]`-included): the `--runtime` and `--backend`
//! values, and a clean stop on SIGINT/SIGTERM.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};

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
