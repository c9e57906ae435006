//! A bounded buffer between a packet source and a slow consumer, with an overflow policy.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::future::FusedFuture;
use futures::stream::FusedStream;
use futures::task::AtomicWaker;
use futures::{Stream, TryStream};

use crate::error::{Error, Result};

/// Items the pump moves in one poll before it lets other tasks run (it wakes itself and returns
/// `Pending`), so a flood cannot monopolise an executor thread (its consumer may share it).
const PUMP_BUDGET: usize = 1024;

/// What [`buffer`](super::PacketStreamExt::buffer) does with a packet that arrives while the
/// buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Stop reading the source until the consumer makes room. Nothing is lost in the buffer; the
    /// capture ring absorbs the backlog, and once it is full the kernel drops packets and counts
    /// them in [`Stats::drops`](crate::Stats::drops).
    Wait,
    /// Discard the packet that just arrived: the buffer keeps the oldest packets.
    DropNewest,
    /// Discard the oldest buffered packet to make room: the buffer keeps the newest packets.
    DropOldest,
}

/// Counters of a [`buffer`](super::PacketStreamExt::buffer), read with [`BufferHandle::stats`]
/// (or `stats()` on the pump or the receiver). Packets only; errors are counted apart and never
/// dropped.
///
/// They add up: `received == delivered + dropped_newest + dropped_oldest + dropped_unread +
/// queued`, in every snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Packets the pump took from the source.
    pub received: u64,
    /// Packets the receiver returned to its consumer.
    pub delivered: u64,
    /// Packets discarded on arrival under [`Policy::DropNewest`].
    pub dropped_newest: u64,
    /// Packets discarded from the head under [`Policy::DropOldest`].
    pub dropped_oldest: u64,
    /// Packets still buffered when the receiver was dropped.
    pub dropped_unread: u64,
    /// How many times an arriving packet found the buffer full (under [`Policy::Wait`]: how many
    /// times the pump stopped reading the source).
    pub full_events: u64,
    /// The most packets that were ever buffered at once.
    pub high_water: u64,
    /// Packets buffered now.
    pub queued: u64,
    /// Errors of the source passed on to the receiver.
    pub errors: u64,
}

impl BufferStats {
    /// Packets this buffer discarded, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_newest + self.dropped_oldest + self.dropped_unread
    }
}

struct State<P> {
    queue: VecDeque<Result<P>>,
    /// Packets (not errors) in `queue`.
    packets: usize,
    capacity: usize,
    policy: Policy,
    stats: BufferStats,
    /// The pump stopped reading because the buffer was full (Wait).
    pump_waiting: bool,
    /// The source ended (or the pump was dropped): the receiver ends once the queue is empty.
    source_done: bool,
    receiver_gone: bool,
}

struct Shared<P> {
    state: Mutex<State<P>>,
    pump: AtomicWaker,
    receiver: AtomicWaker,
}

impl<P> Shared<P> {
    fn lock(&self) -> MutexGuard<'_, State<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> BufferStats {
        let st = self.lock();
        BufferStats {
            queued: st.packets as u64,
            ..st.stats
        }
    }
}

trait StatsSource: Send + Sync {
    fn stats(&self) -> BufferStats;
}

impl<P: Send> StatsSource for Shared<P> {
    fn stats(&self) -> BufferStats {
        Shared::stats(self)
    }
}

/// A cloneable view of a buffer's counters, usable from anywhere (e.g. a metrics task).
#[derive(Clone)]
pub struct BufferHandle(Arc<dyn StatsSource>);

impl BufferHandle {
    /// A consistent snapshot of the counters.
    pub fn stats(&self) -> BufferStats {
        self.0.stats()
    }
}

impl fmt::Debug for BufferHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BufferHandle").field(&self.stats()).finish()
    }
}

pub(super) fn new<S>(
    source: S,
    capacity: usize,
    policy: Policy,
) -> Result<(BufferPump<S>, BufferReceiver<S::Ok>)>
where
    S: TryStream<Error = Error> + Unpin,
{
    if capacity == 0 {
        return Err(Error::InvalidConfig(
            "a buffer of 0 packets: the capacity must be at least 1".into(),
        ));
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity),
            packets: 0,
            capacity,
            policy,
            stats: BufferStats::default(),
            pump_waiting: false,
            source_done: false,
            receiver_gone: false,
        }),
        pump: AtomicWaker::new(),
        receiver: AtomicWaker::new(),
    });
    Ok((
        BufferPump {
            source: Arc::new(Mutex::new(Some(source))),
            done: false,
            shared: shared.clone(),
        },
        BufferReceiver {
            shared,
            done: false,
        },
    ))
}

/// The reading half of a [`buffer`](super::PacketStreamExt::buffer): a future that reads the
/// source into the buffer as fast as the source delivers, applying the [`Policy`] when full.
/// Spawn it on any executor (or `select!` it with the consumer).
///
/// It completes when the source ends or the [`BufferReceiver`] is dropped, and then hands the
/// source back, e.g. to read the capture's kernel counters at the end. While it runs, a
/// [`SourceHandle`] reaches the source from elsewhere. A completed pump stays pending if polled
/// again (it is a [`FusedFuture`]).
#[must_use = "the buffer is empty unless the pump runs"]
pub struct BufferPump<S: TryStream<Error = Error>> {
    /// Shared with [`SourceHandle`]s; locked by the pump for each poll.
    source: Arc<Mutex<Option<S>>>,
    done: bool,
    shared: Arc<Shared<S::Ok>>,
}

/// Access to the source a [`BufferPump`] is reading, from outside the pump's task: for the
/// capture's kernel counters next to the buffer's, while both run.
///
/// ```no_run
/// use netring::combinators::{PacketStreamExt, Policy};
/// use netring::{Capture, runtime::Runtime};
///
/// async fn report<R: Runtime>() -> netring::Result<()> {
///     let packets = Capture::builder("eth0").open_async::<R>()?.packets();
///     let (pump, rx) = packets.buffer(256, Policy::DropOldest)?;
///     let (source, buffer) = (pump.source(), pump.handle());
///     tokio::spawn(pump);
///     // ... consume `rx` in some task; meanwhile, from anywhere:
///     if let Some(kernel) = source.with(|p| p.get_mut().cumulative_stats()) {
///         let (kernel, ours) = (kernel?, buffer.stats());
///         println!(
///             "received {} | kernel dropped {} | buffer dropped {} (newest {}, oldest {}) | \
///              delivered {}",
///             kernel.packets, kernel.drops, ours.dropped(), ours.dropped_newest,
///             ours.dropped_oldest, ours.delivered
///         );
///     }
///     # drop(rx);
///     Ok(())
/// }
/// ```
pub struct SourceHandle<S>(Arc<Mutex<Option<S>>>);

impl<S> SourceHandle<S> {
    /// Runs `f` on the source while the pump holds it (waiting for the pump's current poll to
    /// finish); `None` once the pump has ended and handed the source back.
    pub fn with<T>(&self, f: impl FnOnce(&mut S) -> T) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(f)
    }
}

impl<S> Clone for SourceHandle<S> {
    fn clone(&self) -> Self {
        SourceHandle(self.0.clone())
    }
}

impl<S> fmt::Debug for SourceHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceHandle").finish_non_exhaustive()
    }
}

impl<S: TryStream<Error = Error>> BufferPump<S>
where
    S::Ok: Send + 'static,
{
    /// A handle to the buffer's counters.
    pub fn handle(&self) -> BufferHandle {
        BufferHandle(self.shared.clone())
    }
}

impl<S: TryStream<Error = Error>> BufferPump<S> {
    /// The buffer's counters now.
    pub fn stats(&self) -> BufferStats {
        self.shared.stats()
    }

    /// A handle to reach the source while the pump runs (see [`SourceHandle`]).
    pub fn source(&self) -> SourceHandle<S> {
        SourceHandle(self.source.clone())
    }

    /// Takes one item into the buffer (under the lock), applying the policy when full.
    fn put(st: &mut State<S::Ok>, item: Result<S::Ok>) {
        let packet = match item {
            Ok(p) => p,
            Err(e) => {
                st.stats.errors += 1;
                st.queue.push_back(Err(e));
                return;
            }
        };
        st.stats.received += 1;
        if st.packets >= st.capacity {
            st.stats.full_events += 1;
            match st.policy {
                Policy::DropNewest => {
                    st.stats.dropped_newest += 1;
                    return; // `packet` drops here
                }
                Policy::DropOldest | Policy::Wait => {
                    // (Wait never gets here full: the pump checks for room before reading.)
                    if let Some(at) = st.queue.iter().position(|i| i.is_ok()) {
                        st.queue.remove(at);
                        st.packets -= 1;
                        st.stats.dropped_oldest += 1;
                    }
                }
            }
        }
        st.queue.push_back(Ok(packet));
        st.packets += 1;
        st.stats.high_water = st.stats.high_water.max(st.packets as u64);
    }
}

impl<S: TryStream<Error = Error> + Unpin> Future for BufferPump<S> {
    type Output = S;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S> {
        let this = &mut *self;
        if this.done {
            return Poll::Pending; // completed before
        }
        this.shared.pump.register(cx.waker());
        let slot = this.source.clone();
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..PUMP_BUDGET {
            {
                let mut st = this.shared.lock();
                if st.receiver_gone {
                    drop(st);
                    return this.finish(held.take());
                }
                if st.policy == Policy::Wait && st.packets >= st.capacity {
                    if !st.pump_waiting {
                        st.pump_waiting = true;
                        st.stats.full_events += 1;
                    }
                    return Poll::Pending; // the receiver wakes us when it takes a packet
                }
                st.pump_waiting = false;
            }
            let Some(source) = held.as_mut() else {
                return this.finish(None); // (not reached: only `finish` takes the source)
            };
            match Pin::new(source).try_poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return this.finish(held.take()),
                Poll::Ready(Some(item)) => {
                    Self::put(&mut this.shared.lock(), item);
                    this.shared.receiver.wake();
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: TryStream<Error = Error>> BufferPump<S> {
    /// Ends the pump: the receiver ends after what is buffered; the source (taken out of the
    /// shared slot, so [`SourceHandle::with`] says `None` from now on) goes back.
    fn finish(&mut self, source: Option<S>) -> Poll<S> {
        self.done = true;
        self.shared.lock().source_done = true;
        self.shared.receiver.wake();
        source.map_or(Poll::Pending, Poll::Ready)
    }
}

impl<S: TryStream<Error = Error> + Unpin> FusedFuture for BufferPump<S> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<S: TryStream<Error = Error>> Drop for BufferPump<S> {
    fn drop(&mut self) {
        // Nothing more will come: the receiver ends after what is buffered.
        self.shared.lock().source_done = true;
        self.shared.receiver.wake();
    }
}

impl<S: TryStream<Error = Error>> fmt::Debug for BufferPump<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPump")
            .field("running", &!self.done)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The consuming half of a [`buffer`](super::PacketStreamExt::buffer): a
/// `Stream<Item = Result<P>>` of the buffered packets, in order, and the source's errors. Ends
/// after the source ended (or the pump was dropped) and the buffer is empty.
///
/// Dropping it stops the pump, which then hands the source back; packets still buffered are
/// counted in [`BufferStats::dropped_unread`].
pub struct BufferReceiver<P> {
    shared: Arc<Shared<P>>,
    done: bool,
}

impl<P: Send + 'static> BufferReceiver<P> {
    /// A handle to the buffer's counters.
    pub fn handle(&self) -> BufferHandle {
        BufferHandle(self.shared.clone())
    }
}

impl<P> BufferReceiver<P> {
    /// The buffer's counters now.
    pub fn stats(&self) -> BufferStats {
        self.shared.stats()
    }
}

impl<P> Stream for BufferReceiver<P> {
    type Item = Result<P>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<P>>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.shared.receiver.register(cx.waker());
        let mut st = self.shared.lock();
        let Some(item) = st.queue.pop_front() else {
            if st.source_done {
                drop(st);
                self.done = true;
                return Poll::Ready(None);
            }
            return Poll::Pending;
        };
        if item.is_ok() {
            st.packets -= 1;
            st.stats.delivered += 1;
        }
        if st.pump_waiting {
            drop(st);
            self.shared.pump.wake();
        }
        Poll::Ready(Some(item))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.shared.lock().queue.len(), None)
    }
}

impl<P> FusedStream for BufferReceiver<P> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<P> Drop for BufferReceiver<P> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_gone = true;
        st.stats.dropped_unread += st.packets as u64;
        st.queue.clear();
        st.packets = 0;
        drop(st);
        self.shared.pump.wake();
    }
}

impl<P> fmt::Debug for BufferReceiver<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferReceiver")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt, stream};

    use super::{BufferStats, Policy};
    use crate::combinators::PacketStreamExt;
    use crate::error::{Error, Result};

    /// Ten packets `[i]`, with an error after the fifth.
    fn burst() -> impl futures::Stream<Item = Result<Vec<u8>>> + Unpin {
        stream::iter((0..10u8).map(|i| Ok(vec![i])).collect::<Vec<_>>())
            .chain(stream::iter(vec![Err(Error::InvalidConfig("test".into()))]))
    }

    /// Pumps the whole burst into a 3-packet buffer, then reads it.
    fn run(policy: Policy) -> (Vec<u8>, usize, BufferStats) {
        let (pump, mut rx) = burst().buffer(3, policy).unwrap();
        let _source = pump
            .now_or_never()
            .expect("the pump never waits under drop policies");
        let (mut got, mut errors) = (Vec::new(), 0);
        while let Some(item) = rx.next().now_or_never().expect("all buffered") {
            match item {
                Ok(p) => got.push(p[0]),
                Err(_) => errors += 1,
            }
        }
        (got, errors, rx.stats())
    }

    #[test]
    fn drop_newest_keeps_the_first() {
        let (got, errors, s) = run(Policy::DropNewest);
        assert_eq!((got, errors), (vec![0, 1, 2], 1));
        assert_eq!(
            (s.received, s.delivered, s.dropped_newest, s.full_events),
            (10, 3, 7, 7)
        );
    }

    #[test]
    fn drop_oldest_keeps_the_last() {
        let (got, errors, s) = run(Policy::DropOldest);
        assert_eq!((got, errors), (vec![7, 8, 9], 1));
        assert_eq!(
            (s.received, s.delivered, s.dropped_oldest, s.high_water),
            (10, 3, 7, 3)
        );
    }

    /// Wait: the pump stops at 3 and goes on as the receiver takes packets; dropping the receiver
    /// ends the pump, which hands the source back, and counts what was left unread.
    #[test]
    fn wait_stops_the_pump_and_receiver_drop_ends_it() {
        let (mut pump, mut rx) = burst().buffer(3, Policy::Wait).unwrap();
        assert!((&mut pump).now_or_never().is_none());
        assert_eq!((rx.stats().received, rx.stats().full_events), (3, 1));
        assert_eq!(rx.next().now_or_never().unwrap().unwrap().unwrap(), [0]);
        assert!((&mut pump).now_or_never().is_none());
        assert_eq!(rx.stats().received, 4);
        let (handle, live) = (rx.handle(), pump.source());
        assert_eq!(live.with(|_| "running"), Some("running"));
        drop(rx);
        let mut source = pump
            .now_or_never()
            .expect("the pump ends with its receiver");
        assert_eq!(live.with(|_| "running"), None);
        assert_eq!(source.next().now_or_never().unwrap().unwrap().unwrap(), [4]);
        let s = handle.stats();
        assert_eq!(
            (s.received, s.delivered, s.dropped_unread, s.queued),
            (4, 1, 3, 0)
        );
        assert_eq!(s.dropped(), 3);
    }

    #[test]
    fn zero_capacity_is_an_error() {
        assert!(matches!(
            burst().buffer(0, Policy::Wait),
            Err(Error::InvalidConfig(_))
        ));
    }
}
