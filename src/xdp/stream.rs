//! Async AF_XDP: an [`XdpSocket`] as a `Stream` of owned zero-copy batches and a `Sink` of frames.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, Stream};

use super::batch::{XdpBatch, XdpFrame};
use super::xsk::{XdpSocket, XdpSocketBuilder};
use crate::error::{Error, Result};
use crate::runtime::{Runtime, poll_until};

/// An [`XdpSocket`] driven by an async runtime: a `Stream<Item = Result<XdpBatch>>` and a
/// `Sink<B: AsRef<[u8]>>`, with the same semantics as the AF_PACKET
/// [`AsyncCapture`](crate::AsyncCapture) and [`AsyncInjector`](crate::AsyncInjector).
///
/// **Cancel safety:** `poll_next`, `poll_ready` and `poll_flush` are cancel-safe: frames are
/// taken off the RX ring only when a batch is returned, and a frame is queued for TX exactly once,
/// in `start_send`.
///
/// ```no_run
/// use futures::StreamExt;
/// use netring::{runtime::Runtime, xdp::XdpSocket};
///
/// async fn count<R: Runtime>() -> netring::Result<()> {
/// let mut xsk = XdpSocket::builder("eth0").queue(0).open_async::<R>()?;
/// while let Some(batch) = xsk.next().await {
///     println!("{} frames", batch?.len());
/// }
/// Ok(())
/// }
/// ```
pub struct AsyncXdpSocket<R: Runtime> {
    // Declared first so it deregisters before the socket (and its epoll descriptor) closes.
    reg: R::Registration,
    socket: XdpSocket,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> AsyncXdpSocket<R> {
    /// Registers `socket` with the runtime `R` (call from inside that runtime).
    pub fn new(socket: XdpSocket) -> Result<Self> {
        let fd = socket
            .readiness_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("dup", e))?;
        Ok(Self {
            reg: R::register(fd)?,
            socket,
            _runtime: PhantomData,
        })
    }

    /// Waits for the runtime to report an event, then collects it. `Ready(Ok)` means "look again".
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match R::poll_readable(&self.reg, cx) {
            Poll::Ready(Ok(())) => Poll::Ready(self.socket.consume_events()),
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::os("runtime readiness", e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Polls for the next batch of received frames.
    pub fn poll_next_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<XdpBatch>> {
        loop {
            if let Some(b) = self.socket.try_next_batch()? {
                return Poll::Ready(Ok(b));
            }
            match self.poll_event(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Frames released elsewhere while parked must wake this task (the fill
                    // ring may be empty, and then no frame arrives to wake it).
                    self.socket.prepare_to_wait();
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next batch. Cancel-safe.
    pub async fn next_batch(&mut self) -> Result<XdpBatch> {
        poll_fn(|cx| self.poll_next_batch(cx)).await
    }

    /// `Ready` once a frame can be queued.
    pub fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_until::<R, _>(
            &self.reg,
            cx,
            &mut self.socket,
            |xsk| {
                if xsk.can_send() {
                    return Ok(true);
                }
                xsk.flush()?;
                Ok(xsk.can_send())
            },
            XdpSocket::consume_events,
        )
    }

    /// `Ready` once every queued frame has completed.
    pub fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        poll_until::<R, _>(
            &self.reg,
            cx,
            &mut self.socket,
            |xsk| {
                xsk.flush()?;
                Ok(xsk.in_flight() == 0)
            },
            XdpSocket::consume_events,
        )
    }

    /// Waits until every queued frame has completed. Cancel-safe.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_sent(cx)).await
    }

    /// Same as [`flush`](Self::flush); the socket stays usable.
    pub async fn close(&mut self) -> Result<()> {
        self.flush().await
    }

    /// Flattens the stream into owned frames, one at a time, without copying (each is taken out
    /// of its batch with [`XdpBatch::take`]): a `Stream<Item = Result<XdpFrame>>` for the
    /// packet combinators ([`PacketStreamExt`](crate::combinators::PacketStreamExt)).
    pub fn frames(self) -> XdpFrameStream<R> {
        XdpFrameStream {
            inner: self,
            current: None,
        }
    }

    /// The underlying socket.
    pub fn get_ref(&self) -> &XdpSocket {
        &self.socket
    }

    /// The underlying socket, mutably (e.g. to send an [`XdpFrame`](super::XdpFrame)).
    pub fn get_mut(&mut self) -> &mut XdpSocket {
        &mut self.socket
    }

    /// Deregisters from the runtime and returns the blocking socket.
    pub fn into_inner(self) -> XdpSocket {
        self.socket
    }
}

impl<R: Runtime> Stream for AsyncXdpSocket<R> {
    type Item = Result<XdpBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_batch(cx).map(Some)
    }
}

impl<R: Runtime, B: AsRef<[u8]>> Sink<B> for AsyncXdpSocket<R> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_send_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: B) -> Result<()> {
        if self.get_mut().socket.try_send(item.as_ref())? {
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

impl<R: Runtime> fmt::Debug for AsyncXdpSocket<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncXdpSocket")
            .field("socket", &self.socket)
            .finish()
    }
}

/// A `Stream<Item = Result<XdpFrame>>`: the frames of an [`AsyncXdpSocket`], one at a time,
/// without copying. Each [`XdpFrame`] owns its UMEM frame until dropped (then it goes back to the
/// fill ring) or sent with [`XdpSocket::send_frame`]. Cancel-safe like [`AsyncXdpSocket`]; like
/// it, the stream never ends by itself.
///
/// ```no_run
/// use futures::StreamExt;
/// use netring::combinators::PacketStreamExt;
/// use netring::{AsPacket, runtime::Runtime, xdp::XdpSocket};
///
/// async fn ipv6<R: Runtime>() -> netring::Result<()> {
///     let mut frames = XdpSocket::builder("eth0")
///         .open_async::<R>()?
///         .frames()
///         .filter_packets(|f| f.data().get(12..14) == Some(&[0x86, 0xdd][..]));
///     while let Some(frame) = frames.next().await {
///         println!("IPv6, {} bytes", frame?.data().len());
///     }
///     Ok(())
/// }
/// ```
pub struct XdpFrameStream<R: Runtime> {
    inner: AsyncXdpSocket<R>,
    /// The batch being handed out, and the next position in it.
    current: Option<(XdpBatch, usize)>,
}

impl<R: Runtime> XdpFrameStream<R> {
    /// Polls for the next frame.
    pub fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<XdpFrame>> {
        loop {
            if let Some((batch, next)) = &mut self.current {
                while *next < batch.len() {
                    let i = *next;
                    *next += 1;
                    if let Some(frame) = batch.take(i) {
                        return Poll::Ready(Ok(frame));
                    }
                }
                self.current = None;
            }
            match self.inner.poll_next_batch(cx) {
                Poll::Ready(Ok(batch)) => self.current = Some((batch, 0)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next frame. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<XdpFrame> {
        poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// The async socket (e.g. for its statistics, or to send).
    pub fn get_ref(&self) -> &AsyncXdpSocket<R> {
        &self.inner
    }

    /// The async socket, mutably.
    pub fn get_mut(&mut self) -> &mut AsyncXdpSocket<R> {
        &mut self.inner
    }
}

impl<R: Runtime> Stream for XdpFrameStream<R> {
    type Item = Result<XdpFrame>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_frame(cx).map(Some)
    }
}

impl<R: Runtime> fmt::Debug for XdpFrameStream<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpFrameStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl XdpSocketBuilder {
    /// [`open`](Self::open), then registers the socket with the runtime `R`.
    pub fn open_async<R: Runtime>(self) -> Result<AsyncXdpSocket<R>> {
        AsyncXdpSocket::new(self.open()?)
    }
}
