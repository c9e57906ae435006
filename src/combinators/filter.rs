//! Zero-copy filters: per packet over packet streams, per batch over batch streams.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::AsPacket;
use crate::afpacket::{Batch, Packet, Packets};
use crate::error::Result;
use crate::xdp::{XdpBatch, XdpFrame, XdpPacket};

/// How many rejected items a filter looks at in one poll before it lets other tasks run (it wakes
/// itself and returns `Pending`): a flood of rejected traffic must not monopolise an executor
/// thread.
const REJECT_BUDGET: usize = 1024;

pin_project! {
    /// A packet stream keeping only the packets a predicate accepts; see
    /// [`PacketStreamExt::filter_packets`](super::PacketStreamExt::filter_packets).
    #[must_use = "streams do nothing unless polled"]
    pub struct FilterPackets<S, F> {
        #[pin]
        stream: S,
        predicate: F,
        rejected: u64,
    }
}

impl<S, F> FilterPackets<S, F> {
    pub(super) fn new(stream: S, predicate: F) -> Self {
        Self {
            stream,
            predicate,
            rejected: 0,
        }
    }

    /// How many packets the predicate has rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The stream being filtered.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream being filtered, mutably (e.g. for [`AsyncCapture::stats`](crate::AsyncCapture::stats)).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream being filtered.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S, F, P> Stream for FilterPackets<S, F>
where
    S: Stream<Item = Result<P>>,
    F: FnMut(&P) -> bool,
{
    type Item = Result<P>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<P>>> {
        let mut this = self.project();
        for _ in 0..REJECT_BUDGET {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(p)) if !(this.predicate)(&p) => *this.rejected += 1, // dropped here
                other => return Poll::Ready(other),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.stream.size_hint().1)
    }
}

impl<S: fmt::Debug, F> fmt::Debug for FilterPackets<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterPackets")
            .field("stream", &self.stream)
            .field("rejected", &self.rejected)
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Batch {}
    impl Sealed for crate::xdp::XdpBatch {}
}

/// A batch of received packets that [`BatchStreamExt::filter_batches`](super::BatchStreamExt::filter_batches)
/// can filter: [`Batch`] (AF_PACKET) and [`XdpBatch`] (AF_XDP).
///
/// Sealed: the filter relies on each packet keeping its position in the batch.
pub trait PacketBatch: sealed::Sealed + Send + 'static {
    /// The zero-copy view of one packet.
    type Packet<'a>: AsPacket
    where
        Self: 'a;

    /// Iterator over the packets with their positions.
    type Positions<'a>: Iterator<Item = (usize, Self::Packet<'a>)>
    where
        Self: 'a;

    /// Number of positions (packets when received).
    fn positions_len(&self) -> usize;

    /// The packets, with their positions in the batch.
    fn positions(&self) -> Self::Positions<'_>;
}

impl PacketBatch for Batch {
    type Packet<'a> = Packet<'a>;
    type Positions<'a> = std::iter::Enumerate<Packets<'a>>;

    fn positions_len(&self) -> usize {
        self.len()
    }

    fn positions(&self) -> Self::Positions<'_> {
        self.iter().enumerate()
    }
}

/// The packets of an [`XdpBatch`] with their indices (frames already taken out are skipped).
#[derive(Debug)]
pub struct XdpPositions<'a> {
    batch: &'a XdpBatch,
    next: usize,
}

impl<'a> Iterator for XdpPositions<'a> {
    type Item = (usize, XdpPacket<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.batch.len() {
            let i = self.next;
            self.next += 1;
            if let Some(p) = self.batch.get(i) {
                return Some((i, p));
            }
        }
        None
    }
}

impl PacketBatch for XdpBatch {
    type Packet<'a> = XdpPacket<'a>;
    type Positions<'a> = XdpPositions<'a>;

    fn positions_len(&self) -> usize {
        self.len()
    }

    fn positions(&self) -> XdpPositions<'_> {
        XdpPositions {
            batch: self,
            next: 0,
        }
    }
}

/// Bitmaps given back by dropped [`FilteredBatch`]es and reused: steady-state filtering allocates
/// nothing.
#[derive(Debug, Default)]
struct BitmapPool(Mutex<Vec<Vec<u64>>>);

impl BitmapPool {
    fn take(self: &Arc<Self>, bits: usize) -> Bitmap {
        let mut words = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        words.clear();
        words.resize(bits.div_ceil(64), 0);
        Bitmap {
            words,
            pool: self.clone(),
        }
    }
}

/// Which positions of a batch were accepted; goes back to its pool when dropped.
struct Bitmap {
    words: Vec<u64>,
    pool: Arc<BitmapPool>,
}

impl Bitmap {
    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

impl Drop for Bitmap {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        self.pool
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(words);
    }
}

/// A received batch with the packets a predicate accepted: iterating it yields only those, as
/// zero-copy views into the batch. The batch is owned (its block/frames stay held until this is
/// dropped), `Send`, and the accepted set is a bitmap computed once, when the batch came out of
/// the stream, and recycled when it is dropped (no allocation per batch in steady state).
///
/// Like [`Batch`], the packets borrow from it:
///
/// ```compile_fail,E0597
/// use futures::StreamExt;
/// use netring::combinators::BatchStreamExt;
/// # async fn f<R: netring::runtime::Runtime>(rx: netring::AsyncCapture<R>) -> netring::Result<()> {
/// let mut ipv4 = rx.filter_batches(|p| p.data().get(12..14) == Some(&[8, 0][..]));
/// let data: &[u8];
/// {
///     let batch = ipv4.next().await.unwrap()?;
///     data = batch.iter().next().unwrap().data();
/// } // the batch (and its ring block) is gone here...
/// println!("{}", data.len()); // ...so this does not compile
/// # Ok(()) }
/// ```
pub struct FilteredBatch<B: PacketBatch> {
    batch: B,
    accepted: Bitmap,
    count: usize,
}

impl<B: PacketBatch> FilteredBatch<B> {
    /// Number of accepted packets.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no packet is accepted (never the case for batches from
    /// [`filter_batches`](super::BatchStreamExt::filter_batches), which skips those).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The accepted packets, in order.
    pub fn iter(&self) -> FilteredPackets<'_, B> {
        FilteredPackets {
            inner: self.batch.positions(),
            accepted: &self.accepted,
            left: self.count,
        }
    }

    /// True if the packet at position `i` of the batch was accepted.
    pub fn is_accepted(&self, i: usize) -> bool {
        self.accepted.get(i)
    }

    /// Positions (in the whole batch) of the accepted packets.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.batch.positions_len()).filter(|&i| self.accepted.get(i))
    }

    /// The whole batch, rejected packets included.
    pub fn batch(&self) -> &B {
        &self.batch
    }

    /// The whole batch, rejected packets included.
    pub fn into_inner(self) -> B {
        self.batch
    }
}

impl FilteredBatch<XdpBatch> {
    /// Takes the accepted frame at position `i` out of the batch, e.g. to send it without a copy
    /// ([`XdpSocket::send_frame`](crate::xdp::XdpSocket::send_frame)); `None` if that position
    /// was rejected or already taken. The frame no longer counts as part of this batch.
    pub fn take(&mut self, i: usize) -> Option<XdpFrame> {
        if !self.accepted.get(i) {
            return None;
        }
        let frame = self.batch.take(i)?;
        self.accepted.clear(i);
        self.count -= 1;
        Some(frame)
    }
}

impl<B: PacketBatch + fmt::Debug> fmt::Debug for FilteredBatch<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilteredBatch")
            .field("batch", &self.batch)
            .field("accepted", &self.count)
            .finish()
    }
}

impl<'a, B: PacketBatch> IntoIterator for &'a FilteredBatch<B> {
    type Item = B::Packet<'a>;
    type IntoIter = FilteredPackets<'a, B>;
    fn into_iter(self) -> FilteredPackets<'a, B> {
        self.iter()
    }
}

/// Iterator over the accepted packets of a [`FilteredBatch`].
pub struct FilteredPackets<'a, B: PacketBatch> {
    inner: B::Positions<'a>,
    accepted: &'a Bitmap,
    left: usize,
}

impl<'a, B: PacketBatch> Iterator for FilteredPackets<'a, B> {
    type Item = B::Packet<'a>;

    fn next(&mut self) -> Option<B::Packet<'a>> {
        if self.left == 0 {
            return None; // nothing accepted further on: stop without walking the rest
        }
        for (i, p) in self.inner.by_ref() {
            if self.accepted.get(i) {
                self.left -= 1;
                return Some(p);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl<B: PacketBatch> fmt::Debug for FilteredPackets<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilteredPackets")
            .field("left", &self.left)
            .finish()
    }
}

pin_project! {
    /// A batch stream yielding [`FilteredBatch`]es; see
    /// [`BatchStreamExt::filter_batches`](super::BatchStreamExt::filter_batches).
    #[must_use = "streams do nothing unless polled"]
    pub struct FilterBatches<S, F> {
        #[pin]
        stream: S,
        predicate: F,
        pool: Arc<BitmapPool>,
        skipped: u64,
    }
}

impl<S, F> FilterBatches<S, F> {
    pub(super) fn new(stream: S, predicate: F) -> Self {
        Self {
            stream,
            predicate,
            pool: Arc::default(),
            skipped: 0,
        }
    }

    /// How many batches had no accepted packet and were dropped without being yielded.
    pub fn skipped_batches(&self) -> u64 {
        self.skipped
    }

    /// The stream being filtered.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream being filtered, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream being filtered.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S, F, B> Stream for FilterBatches<S, F>
where
    S: Stream<Item = Result<B>>,
    B: PacketBatch,
    F: for<'a> FnMut(&B::Packet<'a>) -> bool,
{
    type Item = Result<FilteredBatch<B>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        for _ in 0..REJECT_BUDGET {
            let batch = match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            };
            let mut accepted = this.pool.take(batch.positions_len());
            let mut count = 0;
            for (i, p) in batch.positions() {
                if i < batch.positions_len() && (this.predicate)(&p) {
                    accepted.set(i);
                    count += 1;
                }
            }
            if count > 0 {
                return Poll::Ready(Some(Ok(FilteredBatch {
                    batch,
                    accepted,
                    count,
                })));
            }
            *this.skipped += 1; // the batch drops here: its block/frames go back at once
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: fmt::Debug, F> fmt::Debug for FilterBatches<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterBatches")
            .field("stream", &self.stream)
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::{FutureExt, StreamExt, stream};

    use crate::afpacket::Batch;
    use crate::afpacket::ring::tests::kernel_fill;
    use crate::afpacket::ring::{Cursor, RxRing};
    use crate::combinators::BatchStreamExt;

    /// Kernel-free: four blocks, the second with nothing accepted. The filtered batches iterate
    /// exactly the accepted packets; the rejected block goes back at once; every bitmap after the
    /// first is a recycled one (no allocation per batch).
    #[test]
    fn filtered_batches_skip_release_and_recycle() {
        let ring = Arc::new(RxRing::anonymous(4096, 4));
        let blocks: [&[(&[u8], u32)]; 4] = [
            &[(b"keep-1", 6), (b"drop", 4), (b"keep-2", 6)],
            &[(b"drop", 4), (b"drop", 4)],
            &[(b"drop", 4), (b"keep-3", 6)],
            &[(b"keep-4", 6)],
        ];
        let mut cur = Cursor::default();
        let mut batches = Vec::new();
        for (i, pkts) in blocks.iter().enumerate() {
            kernel_fill(&ring, i, i as u64 + 1, pkts);
            batches.push(Ok(Batch::new(ring.clone(), cur.take(&ring).unwrap())));
        }
        let mut filtered = stream::iter(batches).filter_batches(|p| p.data().starts_with(b"keep"));
        let mut next = || filtered.next().now_or_never().unwrap().unwrap().unwrap();

        let first = next();
        let seen: Vec<&[u8]> = first.iter().map(|p| p.data()).collect();
        assert_eq!(seen, [&b"keep-1"[..], b"keep-2"]);
        assert_eq!(first.positions().collect::<Vec<_>>(), [0, 2]);
        assert_eq!((first.len(), first.batch().len()), (2, 3));
        let words = first.accepted.words.as_ptr();
        drop(first);
        assert_eq!(
            ring.holds(0),
            0,
            "a dropped filtered batch releases its block"
        );

        let third = next(); // the second block was skipped...
        assert_eq!(ring.holds(1), 0, "...and released");
        assert_eq!(third.batch().seq(), 3);
        assert_eq!(
            third.iter().map(|p| p.data().to_vec()).collect::<Vec<_>>(),
            [b"keep-3"]
        );
        assert_eq!(third.accepted.words.as_ptr(), words, "bitmap recycled");
        drop(third);
        let fourth = next();
        assert_eq!(fourth.accepted.words.as_ptr(), words, "bitmap recycled");
        drop(fourth);
        assert!(filtered.next().now_or_never().unwrap().is_none());
        assert_eq!(filtered.skipped_batches(), 1);
    }
}
