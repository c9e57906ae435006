//! Driving a `tower::Service` with packets: [`ServeExt::serve`] turns a packet stream and a
//! service into a stream of the service's responses.
//!
//! Backpressure goes all the way back: the next packet is taken from the stream only when the
//! service says it is ready (`poll_ready`) and fewer than `max_in_flight` calls are running. A
//! slow service therefore leaves packets in the ring, and when the ring is full the kernel drops
//! (and counts, in [`AsyncCapture::cumulative_stats`](crate::AsyncCapture::cumulative_stats))
//! the excess: nothing is queued or lost inside this adapter.
//!
//! ```no_run
//! use std::time::Duration;
//! use futures::StreamExt;
//! use netring::service::ServeExt;
//! use netring::{Capture, OwnedPacket, runtime::Runtime};
//! use tower::{ServiceBuilder, service_fn};
//!
//! async fn run<R: Runtime>() -> netring::Result<()> {
//!     let packets = Capture::builder("eth0").open_async::<R>()?.packets();
//!     // At most 8 calls at once (the service's own limit), at most 32 in flight here.
//!     let svc = ServiceBuilder::new()
//!         .concurrency_limit(8)
//!         .service(service_fn(|p: OwnedPacket| async move {
//!             Ok::<usize, netring::Error>(p.data().len()) // e.g. a lookup, a write to a database
//!         }));
//!     let mut responses = packets.serve(svc, 32);
//!     while let Some(r) = responses.next().await {
//!         match r {
//!             Ok(len) => println!("{len} bytes"),
//!             Err(e) => eprintln!("{e}"),
//!         }
//!     }
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use pin_project_lite::pin_project;
use tower_service::Service;

/// The calls in flight, in completion order or in call order.
enum Calls<F: Future> {
    Unordered(FuturesUnordered<F>),
    Ordered(FuturesOrdered<F>),
}

impl<F: Future> Calls<F> {
    fn len(&self) -> usize {
        match self {
            Calls::Unordered(q) => q.len(),
            Calls::Ordered(q) => q.len(),
        }
    }

    fn push(&mut self, f: F) {
        match self {
            Calls::Unordered(q) => q.push(f),
            Calls::Ordered(q) => q.push_back(f),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        match self {
            Calls::Unordered(q) => Pin::new(q).poll_next(cx),
            Calls::Ordered(q) => Pin::new(q).poll_next(cx),
        }
    }
}

pin_project! {
    /// The responses of a service called with each packet of a stream; made by
    /// [`ServeExt::serve`] (responses as they complete) or [`ServeExt::serve_ordered`]
    /// (responses in packet order, like tower's `CallAll`).
    ///
    /// Yields `Result<Svc::Response, Svc::Error>`: an error from a call is an item and the
    /// stream goes on; an error from the packet stream is converted (`Svc::Error: From<E>`) and
    /// yielded, and the stream goes on too (the packet stream decides whether it ends). An error
    /// from `poll_ready` means the service is broken (tower's contract): it is yielded, no more
    /// packets are taken, and the stream ends once the calls in flight have finished. The stream
    /// ends after the packet stream ends and every call has finished.
    #[must_use = "streams do nothing unless polled"]
    pub struct Serve<S, Svc, P>
    where
        Svc: Service<P>,
    {
        #[pin]
        stream: S,
        service: Svc,
        calls: Calls<Svc::Future>,
        max_in_flight: usize,
        intake_done: bool,
        _packet: PhantomData<fn(P)>,
    }
}

impl<S, Svc: Service<P>, P> Serve<S, Svc, P> {
    fn new(stream: S, service: Svc, max_in_flight: usize, ordered: bool) -> Self {
        Self {
            stream,
            service,
            calls: if ordered {
                Calls::Ordered(FuturesOrdered::new())
            } else {
                Calls::Unordered(FuturesUnordered::new())
            },
            max_in_flight: max_in_flight.max(1),
            intake_done: false,
            _packet: PhantomData,
        }
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// The most calls allowed in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The packet stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The packet stream, mutably (e.g. for the capture's statistics).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The service.
    pub fn service(&self) -> &Svc {
        &self.service
    }

    /// The service, mutably.
    pub fn service_mut(&mut self) -> &mut Svc {
        &mut self.service
    }
}

impl<S, Svc, P, E> Stream for Serve<S, Svc, P>
where
    S: Stream<Item = Result<P, E>>,
    Svc: Service<P>,
    Svc::Error: From<E>,
{
    type Item = Result<Svc::Response, Svc::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        // Take packets while there is room and the service is ready. Every way out of this loop
        // either returns or leaves a waker registered (the service's, the stream's) or calls
        // in flight, whose completion wakes us.
        while !*this.intake_done && this.calls.len() < *this.max_in_flight {
            match this.service.poll_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => {
                    *this.intake_done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(())) => {}
            }
            match this.stream.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => *this.intake_done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(packet))) => {
                    let call = this.service.call(packet);
                    this.calls.push(call);
                }
            }
        }
        match this.calls.poll_next(cx) {
            Poll::Ready(Some(response)) => Poll::Ready(Some(response)),
            Poll::Ready(None) if *this.intake_done => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.intake_done {
            (self.calls.len(), Some(self.calls.len()))
        } else {
            (self.calls.len(), None)
        }
    }
}

impl<S: fmt::Debug, Svc: Service<P> + fmt::Debug, P> fmt::Debug for Serve<S, Svc, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("stream", &self.stream)
            .field("service", &self.service)
            .field("in_flight", &self.calls.len())
            .field("max_in_flight", &self.max_in_flight)
            .field("intake_done", &self.intake_done)
            .finish()
    }
}

/// `.serve(service, max_in_flight)` on every stream of packets (`Stream<Item = Result<P, E>>`),
/// for any `tower::Service<P>` whose error converts from `E` (`netring::Error` for captures;
/// tower's `BoxError` and `std::io::Error` do).
///
/// ```
/// use futures::{StreamExt, executor::block_on, stream};
/// use netring::service::ServeExt;
/// use tower::service_fn;
///
/// let packets = stream::iter(vec![Ok::<_, netring::Error>(vec![0u8; 60]), Ok(vec![0u8; 90])]);
/// let lengths = service_fn(|p: Vec<u8>| async move { Ok::<_, netring::Error>(p.len()) });
/// let got: Vec<usize> =
///     block_on(packets.serve_ordered(lengths, 4).map(Result::unwrap).collect());
/// assert_eq!(got, [60, 90]);
/// ```
pub trait ServeExt<P, E>: Stream<Item = Result<P, E>> + Sized {
    /// Calls `service` with each packet, at most `max_in_flight` calls at once (at least 1),
    /// and yields the responses as they complete. See [`Serve`].
    fn serve<Svc>(self, service: Svc, max_in_flight: usize) -> Serve<Self, Svc, P>
    where
        Svc: Service<P>,
        Svc::Error: From<E>,
    {
        Serve::new(self, service, max_in_flight, false)
    }

    /// As [`serve`](Self::serve), yielding the responses in packet order (a slow call holds
    /// back the responses after it, and counts against `max_in_flight` until it is yielded).
    fn serve_ordered<Svc>(self, service: Svc, max_in_flight: usize) -> Serve<Self, Svc, P>
    where
        Svc: Service<P>,
        Svc::Error: From<E>,
    {
        Serve::new(self, service, max_in_flight, true)
    }
}

impl<S, P, E> ServeExt<P, E> for S where S: Stream<Item = Result<P, E>> {}
