//! One async test scenario, three executors: tokio current-thread, tokio multi-thread, smol.
//!
//! A scenario is written once as `async fn name<R: Exec>()`; [`on_each_runtime!`] turns a list of
//! them into `#[test]`s in the modules `on_tokio_current_thread`, `on_tokio_multi_thread` and
//! `on_smol`. [`Exec`] (implemented for `netring::runtime::{Tokio, Smol}`) gives the scenario what
//! it needs from its executor: spawning tasks, timers and channels.
//!
//! Every scenario runs under an overall limit ([`SCENARIO_LIMIT`]), so a hang is a failure, not a
//! stuck test run.
#![allow(dead_code)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::{Either, select};
use netring::runtime::{Runtime, Smol, Tokio};

use super::frames::{ScapyFrames, scapy_frames};
use super::testnet::TestNet;

/// The longest a whole scenario may take.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

/// A spawned task's result (awaiting it re-raises the task's panic).
pub type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a scenario needs from the executor driving `Self`'s reactor.
pub trait Exec: Runtime + Sized {
    /// The executor, for messages (`tokio current-thread`, `tokio multi-thread`, `smol`).
    fn name() -> &'static str;

    /// Spawns `f` on the executor.
    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Task<T>;

    /// Sleeps for `d` on the executor's timer.
    fn sleep(d: Duration) -> impl Future<Output = ()> + Send;

    /// A bounded channel: tokio's mpsc under tokio, async-channel under smol.
    fn channel<T: Send + 'static>(capacity: usize) -> (ChanTx<T>, ChanRx<T>);
}

impl Exec for Tokio {
    fn name() -> &'static str {
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => "tokio current-thread",
            _ => "tokio multi-thread",
        }
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Task<T> {
        let handle = tokio::spawn(f);
        Box::pin(async move {
            match handle.await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn sleep(d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }

    fn channel<T: Send + 'static>(capacity: usize) -> (ChanTx<T>, ChanRx<T>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (ChanTx::Tokio(tx), ChanRx::Tokio(rx))
    }
}

impl Exec for Smol {
    fn name() -> &'static str {
        "smol"
    }

    fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Task<T> {
        // smol's global executor (its own thread(s)); the task's panic propagates to the awaiter.
        Box::pin(smol::spawn(f))
    }

    fn sleep(d: Duration) -> impl Future<Output = ()> + Send {
        futures::FutureExt::map(smol::Timer::after(d), |_| ())
    }

    fn channel<T: Send + 'static>(capacity: usize) -> (ChanTx<T>, ChanRx<T>) {
        let (tx, rx) = smol::channel::bounded(capacity);
        (ChanTx::Smol(tx), ChanRx::Smol(rx))
    }
}

/// Sending half of [`Exec::channel`].
pub enum ChanTx<T> {
    Tokio(tokio::sync::mpsc::Sender<T>),
    Smol(smol::channel::Sender<T>),
}

impl<T> ChanTx<T> {
    /// Sends, waiting for room; false if the receiver is gone.
    pub async fn send(&self, v: T) -> bool {
        match self {
            ChanTx::Tokio(tx) => tx.send(v).await.is_ok(),
            ChanTx::Smol(tx) => tx.send(v).await.is_ok(),
        }
    }
}

/// Receiving half of [`Exec::channel`].
pub enum ChanRx<T> {
    Tokio(tokio::sync::mpsc::Receiver<T>),
    Smol(smol::channel::Receiver<T>),
}

impl<T> ChanRx<T> {
    /// The next value; `None` once every sender is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<T> {
        match self {
            ChanRx::Tokio(rx) => rx.recv().await,
            ChanRx::Smol(rx) => rx.recv().await.ok(),
        }
    }
}

/// `f`, or `None` if `d` passes first (on `R`'s timer).
pub async fn timeout<R: Exec, F: Future>(d: Duration, f: F) -> Option<F::Output> {
    match select(pin!(f), pin!(R::sleep(d))).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// `f`, panicking with `what` if it takes longer than `d`.
#[track_caller]
pub fn within<R: Exec, F: Future>(
    d: Duration,
    what: &str,
    f: F,
) -> impl Future<Output = F::Output> {
    let what = what.to_owned();
    let caller = std::panic::Location::caller();
    async move {
        match timeout::<R, F>(d, f).await {
            Some(v) => v,
            None => panic!(
                "{caller}: {what}: no result within {d:?} under {}",
                R::name()
            ),
        }
    }
}

/// Runs blocking `f` (a child process, a sleep) on a thread of its own; the future completes
/// with its result without blocking the executor. A panic in `f` is re-raised by the awaiter.
pub fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = T> + Send {
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _done = done_tx; // dropped (completing the future) however `f` ends
        f()
    });
    async move {
        let _ = done_rx.await;
        match thread.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Builds a runtime and runs `scenario` to completion under [`SCENARIO_LIMIT`].
pub fn run_tokio_current<F: Future<Output = ()>>(scenario: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio current-thread runtime");
    rt.block_on(async {
        within::<Tokio, _>(SCENARIO_LIMIT, "the scenario", scenario()).await;
    });
}

/// As [`run_tokio_current`], on a 2-worker multi-thread runtime.
pub fn run_tokio_multi<F: Future<Output = ()>>(scenario: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio multi-thread runtime");
    rt.block_on(async {
        within::<Tokio, _>(SCENARIO_LIMIT, "the scenario", scenario()).await;
    });
}

/// As [`run_tokio_current`], with `smol::block_on` (spawned tasks go to smol's global executor).
pub fn run_smol<F: Future<Output = ()>>(scenario: impl FnOnce() -> F) {
    smol::block_on(async {
        within::<Smol, _>(SCENARIO_LIMIT, "the scenario", scenario()).await;
    });
}

/// Declares one `#[test]` per scenario and executor:
/// `on_each_runtime!(scenario_a, scenario_b);` with `async fn scenario_a<R: Exec>()`.
#[macro_export]
macro_rules! on_each_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod on_tokio_current_thread {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::asyncrt::run_tokio_current(
                        super::$scenario::<::netring::runtime::Tokio>,
                    );
                }
            )*
        }
        mod on_tokio_multi_thread {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::asyncrt::run_tokio_multi(
                        super::$scenario::<::netring::runtime::Tokio>,
                    );
                }
            )*
        }
        mod on_smol {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::asyncrt::run_smol(super::$scenario::<::netring::runtime::Smol>);
                }
            )*
        }
    };
}

/// The RX reference traffic, generated once per test binary by scapy: 3000 frames of 60..1514
/// bytes, every 5th 802.1Q-tagged and every 41st double-tagged (see `frames::scapy_frames`).
pub fn rx_frames() -> &'static ScapyFrames {
    FRAMES.get_or_init(|| {
        // A static is never dropped: remove the pcap when the test process exits.
        // SAFETY: registers a plain `extern "C" fn` with no preconditions.
        unsafe { libc::atexit(remove_rx_frames) };
        scapy_frames("async-rx", 3000, 7, 60, 1514, 0)
    })
}

static FRAMES: OnceLock<ScapyFrames> = OnceLock::new();

extern "C" fn remove_rx_frames() {
    if let Some(f) = FRAMES.get() {
        let _ = std::fs::remove_file(&f.file);
    }
}

/// Replays `file` on `dev` with tcpreplay at `pps` (pinned to one CPU, so frames arrive in order)
/// from a thread of its own; resolves to the number of packets tcpreplay sent.
pub fn replay(
    net: &Arc<TestNet>,
    dev: &str,
    file: &str,
    pps: u32,
) -> impl Future<Output = u64> + Send + use<> {
    let (net, dev, file) = (net.clone(), dev.to_owned(), file.to_owned());
    blocking(move || super::frames::tcpreplay(&net, &dev, &file, pps))
}

/// Asserts `got` is `want`, frame for frame, byte for byte, in order.
#[track_caller]
pub fn assert_frames(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        super::frames::assert_frame_eq(what, i, g, w);
    }
    assert_eq!(got.len(), want.len(), "{what}: number of frames");
}

/// A `Sink` wrapper that watches the one inside: how often `poll_ready` said `Pending`, and
/// (when `log` is on) a copy of every item `start_send` accepted, in order.
pub struct Probe<S> {
    pub inner: S,
    pub ready_pending: u64,
    pub accepted: u64,
    pub log: Option<Vec<Vec<u8>>>,
}

impl<S> Probe<S> {
    pub fn new(inner: S) -> Self {
        Probe {
            inner,
            ready_pending: 0,
            accepted: 0,
            log: None,
        }
    }

    /// Also keeps a copy of every accepted item.
    pub fn logging(inner: S) -> Self {
        Probe {
            log: Some(Vec::new()),
            ..Probe::new(inner)
        }
    }
}

impl<S: futures::Sink<B> + Unpin, B: AsRef<[u8]>> futures::Sink<B> for Probe<S> {
    type Error = S::Error;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        let p = Pin::new(&mut self.inner).poll_ready(cx);
        if p.is_pending() {
            self.ready_pending += 1;
        }
        p
    }

    fn start_send(mut self: Pin<&mut Self>, item: B) -> Result<(), S::Error> {
        let copy = self.log.as_ref().map(|_| item.as_ref().to_vec());
        Pin::new(&mut self.inner).start_send(item)?;
        self.accepted += 1;
        if let (Some(log), Some(copy)) = (self.log.as_mut(), copy) {
            log.push(copy);
        }
        Ok(())
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A counter of `/sys/class/net/DEV/statistics/` inside the test namespace.
pub fn link_stat(net: &TestNet, dev: &str, counter: &str) -> u64 {
    let out = super::testnet::run(
        net.cmd("cat")
            .arg(format!("/sys/class/net/{dev}/statistics/{counter}")),
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// Slows `dev`'s egress with a token bucket (`tc qdisc ... tbf`): the link then drains far slower
/// than a TX ring fills, so the ring really is full at times.
pub fn throttle(net: &TestNet, dev: &str, rate: &str) {
    super::testnet::run(net.cmd("tc").args([
        "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "4kb", "latency", "500ms",
    ]));
}
