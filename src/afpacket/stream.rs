//! Async receive: the capture as a `Stream` of owned zero-copy batches, or of owned packets.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use super::batch::{Batch, OwnedPacket};
use super::capture::{Capture, CaptureBuilder, Stats};
use super::ring::{NotReady, PacketWalker};
use crate::error::{Error, Result};
use crate::runtime::{Runtime, Trigger};

/// A [`Capture`] driven by an async runtime: a `Stream<Item = Result<Batch>>`.
///
/// Batches are the same owned zero-copy [`Batch`]es as in the blocking API: `Send`, movable into
/// spawned tasks, holdable while the stream goes on (up to the ring's block count). An idle stream
/// costs no CPU: it sleeps until the kernel retires a block (within the block timeout of the first
/// packet) or reports an error.
///
/// **Cancel safety:** `poll_next` (and so `StreamExt::next`) is cancel-safe. The cursor moves only
/// when a batch is returned, so dropping a pending `next()` future loses nothing.
///
/// **Errors:** when the interface is deleted or the socket fails, every block already retired is
/// delivered first, then the error, then the stream ends. [`Error::InterfaceDown`] does not end
/// it: the stream goes on if the interface comes back up.
///
/// ```no_run
/// use futures::StreamExt;
/// use netring::{AsyncCapture, Capture, runtime::Runtime};
///
/// // On tokio, R is `netring::runtime::Tokio` (feature `tokio`).
/// async fn serve<R: Runtime>() -> netring::Result<()> {
/// let mut rx: AsyncCapture<R> = Capture::builder("eth0").open_async()?;
/// while let Some(batch) = rx.next().await {
///     let batch = batch?;
///     tokio::spawn(async move {
///         // The batch (and its ring block) moves to another task.
///         for pkt in &batch {
///             let _ = pkt.data();
///         }
///     });
/// }
/// Ok(())
/// }
/// ```
pub struct AsyncCapture<R: Runtime> {
    // Both declared before the capture so they deregister before its descriptors close.
    /// The capture's epoll descriptor; for an edge-triggered runtime, the one that reports only
    /// socket errors and the timer.
    reg: R::Registration,
    /// For an edge-triggered runtime: the packet socket itself (one edge per retired block).
    socket: Option<R::Registration>,
    capture: Capture,
    ended: bool,
    /// A batch was returned since the capture's events were last collected.
    took: bool,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> AsyncCapture<R> {
    /// Registers `capture` with the runtime `R` (call from inside that runtime).
    pub fn new(mut capture: Capture) -> Result<Self> {
        let (reg, socket) = if R::TRIGGER == Trigger::Edge {
            let (socket, faults) = capture.edge_readiness_fds()?;
            (R::register(faults)?, Some(R::register(socket)?))
        } else {
            let fd = capture
                .readiness_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::os("dup", e))?;
            (R::register(fd)?, None)
        };
        Ok(Self {
            reg,
            socket,
            capture,
            ended: false,
            took: false,
            _runtime: PhantomData,
        })
    }

    /// Polls for the next batch: what `Stream::poll_next` does, without pinning.
    pub fn poll_next_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Batch>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            let reason = match self.capture.try_take() {
                Ok(batch) => {
                    self.took = true;
                    return Poll::Ready(Some(Ok(batch)));
                }
                Err(reason) => reason,
            };
            if let Some(err) = self.capture.due_fault() {
                self.ended = !matches!(err, Error::InterfaceDown { .. });
                return Poll::Ready(Some(Err(err)));
            }
            if reason == NotReady::HeldByUser && self.capture.register_release(cx.waker()) {
                continue;
            }
            // Wait for the kernel (a retired block, an error, the fault timer); while the user
            // holds the next block, also for its release (registered above).
            match self.poll_kernel(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// `Ready(Ok)` once the kernel may have something new (the caller checks the ring again),
    /// with the capture's events collected as far as needed; `Pending` with `cx`'s waker
    /// registered for the next readiness.
    fn poll_kernel(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let readable = |polled: Poll<std::io::Result<()>>| match polled {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(Error::os("runtime readiness", e)),
            Poll::Pending => Ok(false),
        };
        if let Some(socket) = &self.socket {
            // Edge-triggered: the socket's edge needs nothing collected. The other descriptor
            // signals only errors and the timer; it is looked at once the socket has nothing
            // new (which is also when a fault may be reported).
            if readable(R::poll_readable(socket, cx))? {
                return Poll::Ready(Ok(()));
            }
            if readable(R::poll_readable(&self.reg, cx))? {
                self.capture.consume_fault_events()?;
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
        if !readable(R::poll_readable(&self.reg, cx))? {
            return Poll::Pending;
        }
        let took = std::mem::take(&mut self.took);
        if R::TRIGGER == Trigger::Level && took && self.capture.newest_block_released() {
            // Most likely the wakeup for a block already returned. If anything else is pending
            // (an error, the timer, another block), the epoll instance is still readable when
            // the reactor re-arms it as this task waits again, and the next wakeup, with no
            // block taken in between, collects it.
            return Poll::Ready(Ok(()));
        }
        self.capture.consume_events()?;
        Poll::Ready(Ok(()))
    }

    /// The next batch; `None` once the stream has ended. Cancel-safe.
    pub async fn next_batch(&mut self) -> Option<Result<Batch>> {
        poll_fn(|cx| self.poll_next_batch(cx)).await
    }

    /// Flattens the stream into owned packets (no copy: each keeps its block alive).
    pub fn packets(self) -> PacketStream<R> {
        PacketStream {
            inner: self,
            current: None,
        }
    }

    /// Kernel counters since the previous call (see [`Capture::stats`]).
    pub fn stats(&mut self) -> Result<Stats> {
        self.capture.stats()
    }

    /// Kernel counters since the capture was opened (see [`Capture::cumulative_stats`]).
    pub fn cumulative_stats(&mut self) -> Result<Stats> {
        self.capture.cumulative_stats()
    }

    /// The underlying capture.
    pub fn get_ref(&self) -> &Capture {
        &self.capture
    }

    /// The underlying capture, mutably (e.g. for statistics).
    pub fn get_mut(&mut self) -> &mut Capture {
        &mut self.capture
    }

    /// Deregisters from the runtime and returns the blocking capture.
    pub fn into_inner(self) -> Capture {
        self.capture
    }
}

impl<R: Runtime> Stream for AsyncCapture<R> {
    type Item = Result<Batch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_batch(cx)
    }
}

impl<R: Runtime> fmt::Debug for AsyncCapture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCapture")
            .field("capture", &self.capture)
            .field("ended", &self.ended)
            .finish()
    }
}

impl CaptureBuilder {
    /// Opens the capture and registers it with the runtime `R` (call from inside that runtime).
    pub fn open_async<R: Runtime>(self) -> Result<AsyncCapture<R>> {
        AsyncCapture::new(self.open()?)
    }
}

/// A `Stream<Item = Result<OwnedPacket>>`: the packets of an [`AsyncCapture`], one at a time,
/// without copying. Each packet keeps its ring block alive until dropped. Cancel-safe like
/// [`AsyncCapture`].
///
/// ```no_run
/// use futures::StreamExt;
/// use netring::{Capture, runtime::Runtime};
///
/// // On smol, R is `netring::runtime::Smol` (feature `smol`).
/// async fn dump<R: Runtime>() -> netring::Result<()> {
/// let mut packets = Capture::builder("eth0").open_async::<R>()?.packets();
/// while let Some(pkt) = packets.next().await {
///     println!("{} bytes", pkt?.wire_len());
/// }
/// Ok(())
/// }
/// ```
pub struct PacketStream<R: Runtime> {
    inner: AsyncCapture<R>,
    current: Option<(Batch, PacketWalker)>,
}

impl<R: Runtime> PacketStream<R> {
    /// Polls for the next packet.
    pub fn poll_next_packet(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<OwnedPacket>>> {
        loop {
            if let Some((batch, walker)) = &mut self.current {
                if let Some(pkt) = batch.next_owned(walker) {
                    return Poll::Ready(Some(Ok(pkt)));
                }
                self.current = None;
            }
            match self.inner.poll_next_batch(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    let walker = batch.walker();
                    self.current = Some((batch, walker));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The underlying batch stream.
    pub fn get_mut(&mut self) -> &mut AsyncCapture<R> {
        &mut self.inner
    }
}

impl<R: Runtime> Stream for PacketStream<R> {
    type Item = Result<OwnedPacket>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_packet(cx)
    }
}

impl<R: Runtime> fmt::Debug for PacketStream<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketStream")
            .field("inner", &self.inner)
            .finish()
    }
}
