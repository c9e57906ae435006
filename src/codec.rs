//! tokio-util codecs on packets: a [`Decoder`] applied to every packet of a stream
//! ([`Decoded`]), and an [`Encoder`] in front of a TX sink ([`Encoded`]).
//!
//! This is what `tokio_util::udp::UdpFramed` does for datagrams, for frames: each packet is one
//! complete input. The decoder gets the packet's bytes (from the link-layer header on) and is
//! called with `decode_eof` until it returns `None`; whatever it leaves is discarded, so nothing
//! of one packet leaks into the next. Each encoded item is one frame.
//!
//! Errors: a decoder's `Error` must be `From<io::Error>` (tokio-util's rule) and, for
//! [`Decoded`], also `From` the packet stream's error (`netring::Error`; `io::Error` is, since
//! netring errors convert into it). A decoding error is yielded as an item and ends only the
//! current packet, not the stream: one malformed frame on a link must not stop a capture.
//!
//! ```no_run
//! use bytes::{Buf, BytesMut};
//! use futures::{SinkExt, StreamExt};
//! use netring::codec::{DecodeExt, EncodeExt};
//! use netring::{Capture, Injector, runtime::Runtime};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! /// The ethertype of each frame.
//! struct Ethertype;
//! impl Decoder for Ethertype {
//!     type Item = u16;
//!     type Error = std::io::Error;
//!     fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<u16>> {
//!         if buf.len() < 14 {
//!             return Ok(None); // an empty rest ends the packet; a short frame is an error
//!         }
//!         let t = u16::from_be_bytes([buf[12], buf[13]]);
//!         buf.clear(); // one item per frame
//!         Ok(Some(t))
//!     }
//! }
//!
//! /// Frames with a fixed header and a payload.
//! struct Frames;
//! impl Encoder<&[u8]> for Frames {
//!     type Error = std::io::Error;
//!     fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> std::io::Result<()> {
//!         dst.extend_from_slice(&[0xff; 12]);
//!         dst.extend_from_slice(&0x88b5u16.to_be_bytes());
//!         dst.extend_from_slice(payload);
//!         Ok(())
//!     }
//! }
//!
//! async fn run<R: Runtime>() -> std::io::Result<()> {
//!     let mut types = Capture::builder("eth0").open_async::<R>()?.packets().decode_with(Ethertype);
//!     while let Some(t) = types.next().await {
//!         match t {
//!             Ok(t) => println!("{t:#06x}"),
//!             Err(e) => eprintln!("bad frame: {e}"), // the stream goes on
//!         }
//!     }
//!
//!     let mut tx = Injector::builder("eth0").open_async::<R>()?.encode_with(Frames);
//!     tx.send(&b"hello"[..]).await?;
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use futures::{Sink, Stream};
use pin_project_lite::pin_project;
use tokio_util::codec::{Decoder, Encoder};

use crate::AsPacket;

pin_project! {
    /// A packet stream with a [`Decoder`] applied to each packet; made by
    /// [`DecodeExt::decode_with`].
    ///
    /// Yields `Result<D::Item, D::Error>`. Per packet: its bytes are copied into one reused
    /// buffer (no allocation per packet once the buffer has grown to the largest packet, as long
    /// as the decoder keeps no piece of it), then `decode_eof` is called until it returns `None`
    /// (each `Some` is yielded); the rest is discarded. A decoder error is yielded and ends that
    /// packet; a source error is yielded as it is (converted); the stream ends when the source
    /// ends. The packet is released (its ring block can go back to the kernel) as soon as its
    /// bytes are copied.
    ///
    /// If the source is also a `Sink` (an `AsyncXdpSocket`), so is this.
    #[must_use = "streams do nothing unless polled"]
    pub struct Decoded<S, D> {
        #[pin]
        stream: S,
        decoder: D,
        buf: BytesMut,
        in_packet: bool,
        ended: bool,
    }
}

impl<S, D> Decoded<S, D> {
    /// Applies `decoder` to each packet of `stream`.
    pub fn new(stream: S, decoder: D) -> Self {
        Self {
            stream,
            decoder,
            buf: BytesMut::new(),
            in_packet: false,
            ended: false,
        }
    }

    /// The decoder.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// The decoder, mutably.
    pub fn decoder_mut(&mut self) -> &mut D {
        &mut self.decoder
    }

    /// The packet stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The packet stream, mutably (e.g. for [`AsyncCapture::stats`](crate::AsyncCapture::stats)
    /// through `PacketStream::get_mut`).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The packet stream and the decoder. The rest of a packet being decoded is lost.
    pub fn into_parts(self) -> (S, D) {
        (self.stream, self.decoder)
    }
}

impl<S, D, P, E> Stream for Decoded<S, D>
where
    S: Stream<Item = Result<P, E>>,
    P: AsPacket,
    D: Decoder,
    D::Error: From<E>,
{
    type Item = Result<D::Item, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if *this.in_packet {
                match this.decoder.decode_eof(this.buf) {
                    Ok(Some(item)) => return Poll::Ready(Some(Ok(item))),
                    Ok(None) => {
                        *this.in_packet = false;
                        this.buf.clear();
                    }
                    Err(e) => {
                        *this.in_packet = false;
                        this.buf.clear();
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if *this.ended {
                return Poll::Ready(None);
            }
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(packet)) => {
                    let data = packet.data();
                    this.buf.clear();
                    this.buf.reserve(data.len());
                    this.buf.extend_from_slice(data);
                    *this.in_packet = true;
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    *this.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<S: Sink<B>, D, B> Sink<B> for Decoded<S, D> {
    type Error = S::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().stream.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: B) -> Result<(), S::Error> {
        self.project().stream.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().stream.poll_close(cx)
    }
}

impl<S: fmt::Debug, D: fmt::Debug> fmt::Debug for Decoded<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded")
            .field("stream", &self.stream)
            .field("decoder", &self.decoder)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

pin_project! {
    /// A TX sink with an [`Encoder`] in front; made by [`EncodeExt::encode_with`].
    ///
    /// A `Sink<I>` for every `I` the encoder encodes. `poll_ready` is the inner sink's, unchanged
    /// (a full TX ring holds the producer back); `start_send` encodes the item into one reused
    /// buffer and hands the bytes to the inner sink as one frame, which copies them (no
    /// allocation per frame once the buffer has grown); flush and close are the inner sink's.
    /// Errors are the encoder's (`E::Error: From<` the sink's error `>`).
    ///
    /// If the sink is also a `Stream` (an `AsyncXdpSocket`), so is this.
    #[must_use = "sinks do nothing unless polled"]
    pub struct Encoded<S, E> {
        #[pin]
        sink: S,
        encoder: E,
        buf: BytesMut,
    }
}

impl<S, E> Encoded<S, E> {
    /// Puts `encoder` in front of `sink`.
    pub fn new(sink: S, encoder: E) -> Self {
        Self {
            sink,
            encoder,
            buf: BytesMut::new(),
        }
    }

    /// The encoder.
    pub fn encoder(&self) -> &E {
        &self.encoder
    }

    /// The encoder, mutably.
    pub fn encoder_mut(&mut self) -> &mut E {
        &mut self.encoder
    }

    /// The sink.
    pub fn get_ref(&self) -> &S {
        &self.sink
    }

    /// The sink, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The sink and the encoder.
    pub fn into_parts(self) -> (S, E) {
        (self.sink, self.encoder)
    }
}

impl<S, E, I, SE> Sink<I> for Encoded<S, E>
where
    S: for<'a> Sink<&'a [u8], Error = SE>,
    E: Encoder<I>,
    E::Error: From<SE>,
{
    type Error = E::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E::Error>> {
        self.project().sink.poll_ready(cx).map_err(Into::into)
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), E::Error> {
        let this = self.project();
        this.buf.clear();
        this.encoder.encode(item, this.buf)?;
        let sent = this.sink.start_send(&this.buf[..]);
        this.buf.clear();
        sent.map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E::Error>> {
        self.project().sink.poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E::Error>> {
        self.project().sink.poll_close(cx).map_err(Into::into)
    }
}

impl<S: Stream, E> Stream for Encoded<S, E> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.project().sink.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.sink.size_hint()
    }
}

impl<S: fmt::Debug, E: fmt::Debug> fmt::Debug for Encoded<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("sink", &self.sink)
            .field("encoder", &self.encoder)
            .finish()
    }
}

/// `.decode_with(decoder)` on every stream of packets (`Stream<Item = Result<P, E>>` with
/// `P:` [`AsPacket`]): `AsyncCapture::packets()`, pcap streams, filtered streams, ...
///
/// ```
/// use bytes::BytesMut;
/// use futures::{StreamExt, executor::block_on, stream};
/// use netring::codec::DecodeExt;
/// use tokio_util::codec::BytesCodec;
///
/// // Plain buffers are packets too: each comes out whole, as one item.
/// let frames = vec![Ok::<_, netring::Error>(vec![1u8, 2, 3]), Ok(vec![4, 5])];
/// let items: Vec<BytesMut> =
///     block_on(stream::iter(frames).decode_with(BytesCodec::new()).map(Result::unwrap).collect());
/// assert_eq!(items, [&[1u8, 2, 3][..], &[4, 5][..]]);
/// ```
pub trait DecodeExt<P: AsPacket, E>: Stream<Item = Result<P, E>> + Sized {
    /// Applies `decoder` to each packet; see [`Decoded`].
    fn decode_with<D>(self, decoder: D) -> Decoded<Self, D>
    where
        D: Decoder,
        D::Error: From<E>,
    {
        Decoded::new(self, decoder)
    }
}

impl<S, P, E> DecodeExt<P, E> for S
where
    S: Stream<Item = Result<P, E>>,
    P: AsPacket,
{
}

/// `.encode_with(encoder)` on every TX sink taking byte slices (`AsyncInjector`,
/// `AsyncXdpSocket`, or any `Sink<&[u8]>`).
///
/// ```
/// use std::pin::Pin;
/// use std::task::{Context, Poll};
///
/// use bytes::{BufMut, BytesMut};
/// use futures::{SinkExt, executor::block_on};
/// use netring::codec::EncodeExt;
/// use tokio_util::codec::Encoder;
///
/// /// Numbers as 4-byte frames.
/// struct Be32;
/// impl Encoder<u32> for Be32 {
///     type Error = std::io::Error;
///     fn encode(&mut self, n: u32, dst: &mut BytesMut) -> std::io::Result<()> {
///         dst.put_u32(n);
///         Ok(())
///     }
/// }
///
/// // Any sink taking byte slices, like `AsyncInjector`; here one keeping copies.
/// #[derive(Default)]
/// struct Copies(Vec<Vec<u8>>);
/// impl<B: AsRef<[u8]>> futures::Sink<B> for Copies {
///     type Error = std::io::Error;
///     fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
///         Poll::Ready(Ok(()))
///     }
///     fn start_send(self: Pin<&mut Self>, frame: B) -> std::io::Result<()> {
///         self.get_mut().0.push(frame.as_ref().to_vec());
///         Ok(())
///     }
///     fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
///         Poll::Ready(Ok(()))
///     }
///     fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
///         Poll::Ready(Ok(()))
///     }
/// }
///
/// let mut tx = Copies::default().encode_with(Be32);
/// block_on(tx.send(7)).unwrap();
/// block_on(tx.send(0x0102_0304)).unwrap();
/// assert_eq!(tx.get_ref().0, [vec![0, 0, 0, 7], vec![1, 2, 3, 4]]);
/// ```
pub trait EncodeExt: Sized {
    /// Puts `encoder` in front of this sink; see [`Encoded`].
    fn encode_with<E>(self, encoder: E) -> Encoded<Self, E> {
        Encoded::new(self, encoder)
    }
}

impl<S, SE> EncodeExt for S where S: for<'a> Sink<&'a [u8], Error = SE> {}
