//! Async transmit: the TX ring as a `Sink` with backpressure, and an async in-place reserve.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Sink;

use super::tx::{Injector, InjectorBuilder, TxSlot};
use crate::error::{Error, Result};
use crate::runtime::{Runtime, poll_until};

/// An [`Injector`] driven by an async runtime: a `Sink<B>` for any `B: AsRef<[u8]>`.
///
/// - `poll_ready` is `Pending` while the ring is full and is woken when the kernel completes
///   frames: a producer faster than the link waits instead of failing or dropping.
/// - `start_send` copies the frame into the free slot and queues it.
/// - `poll_flush` hands queued frames to the kernel and completes once all of them are sent;
///   `poll_close` flushes.
///
/// **Cancel safety:** `poll_ready`, `poll_flush`, [`reserve`](Self::reserve) and
/// [`wait_sent`](Self::wait_sent) are cancel-safe. A frame is queued exactly once, in
/// `start_send` (or `TxSlot::commit`); dropping a pending `SinkExt::send` future after that point
/// leaves the frame queued, and it leaves with the next flush (or when the sink is dropped), never
/// twice.
///
/// ```no_run
/// use futures::{SinkExt, stream};
/// use netring::{AsyncInjector, Injector, runtime::Runtime};
///
/// // Any runtime: `netring::runtime::Tokio` (feature `tokio`) or `Smol` (feature `smol`).
/// async fn blast<R: Runtime>() -> netring::Result<()> {
/// let mut tx: AsyncInjector<R> = Injector::builder("eth0").open_async()?;
/// let frames = vec![vec![0u8; 60]; 1000];
/// tx.send_all(&mut stream::iter(frames.into_iter().map(Ok))).await?;
/// tx.close().await?;
/// Ok(())
/// }
/// ```
pub struct AsyncInjector<R: Runtime> {
    // Declared first so it deregisters before the injector (and its epoll descriptor) closes.
    reg: R::Registration,
    injector: Injector,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> AsyncInjector<R> {
    /// Registers `injector` with the runtime `R` (call from inside that runtime).
    pub fn new(injector: Injector) -> Result<Self> {
        let fd = injector
            .readiness_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("dup", e))?;
        Ok(Self {
            reg: R::register(fd)?,
            injector,
            _runtime: PhantomData,
        })
    }

    /// `Ready` once the next slot is free (queued frames are handed to the kernel meanwhile, since
    /// slots free up only once it has them).
    pub fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_until::<R, _>(
            &self.reg,
            cx,
            &mut self.injector,
            |tx| {
                if tx.next_slot_free() {
                    return Ok(true);
                }
                tx.flush()?;
                Ok(tx.next_slot_free())
            },
            Injector::consume_events,
        )
    }

    /// `Ready` once every queued frame has been sent.
    pub fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_until::<R, _>(
            &self.reg,
            cx,
            &mut self.injector,
            |tx| {
                tx.flush()?;
                Ok(tx.in_flight() == 0)
            },
            Injector::consume_events,
        )
    }

    /// Waits for a free slot and reserves it for a frame of `len` bytes, to be written in place
    /// and committed. Cancel-safe: nothing is queued until `commit`.
    pub async fn reserve(&mut self, len: usize) -> Result<TxSlot<'_>> {
        poll_fn(|cx| self.poll_slot(cx)).await?;
        self.injector.try_reserve(len)?.ok_or(Error::SinkNotReady)
    }

    /// Waits until every queued frame has been sent. Cancel-safe.
    pub async fn wait_sent(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_sent(cx)).await
    }

    /// Hands every queued frame to the kernel and waits until all are sent: `SinkExt::flush`
    /// without having to name the item type.
    pub async fn flush(&mut self) -> Result<()> {
        self.wait_sent().await
    }

    /// Flushes; the ring stays usable. `SinkExt::close` without having to name the item type.
    pub async fn close(&mut self) -> Result<()> {
        self.wait_sent().await
    }

    /// The underlying injector.
    pub fn get_ref(&self) -> &Injector {
        &self.injector
    }

    /// The underlying injector, mutably.
    pub fn get_mut(&mut self) -> &mut Injector {
        &mut self.injector
    }

    /// Deregisters from the runtime and returns the blocking injector.
    pub fn into_inner(self) -> Injector {
        self.injector
    }
}

impl<R: Runtime, B: AsRef<[u8]>> Sink<B> for AsyncInjector<R> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_slot(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: B) -> Result<()> {
        if self.get_mut().injector.try_send(item.as_ref())? {
            Ok(())
        } else {
            Err(Error::SinkNotReady)
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_sent(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_sent(cx)
    }
}

impl<R: Runtime> fmt::Debug for AsyncInjector<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncInjector")
            .field("injector", &self.injector)
            .finish()
    }
}

impl InjectorBuilder {
    /// Opens the TX ring and registers it with the runtime `R` (call from inside that runtime).
    pub fn open_async<R: Runtime>(self) -> Result<AsyncInjector<R>> {
        AsyncInjector::new(self.open()?)
    }
}
