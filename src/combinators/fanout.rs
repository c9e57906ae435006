//! In-process fanout: one packet stream split into N bounded streams by a key, with no task of
//! its own.
//!
//! The streams share the source under one lock. A stream whose queue is empty drives the source:
//! it takes packets and routes them by key, returning the first one that is its own and queueing
//! the others (waking their streams). A packet for a full queue is parked and the source is not
//! polled again until that queue's consumer makes room (backpressure "wait": the ring absorbs the
//! traffic meanwhile). The source's own waker wakes every stream, so whichever stream polls next
//! drives it; no stream depends on another one being polled, except to drain its own full queue.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use futures::{Stream, TryStream};

use crate::error::{Error, Result};

/// Packets one stream routes to the others in one poll before yielding to other tasks.
const ROUTE_BUDGET: usize = 1024;

/// Counters of one fanout stream (see [`FanoutStream::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Packets the stream returned to its consumer.
    pub delivered: u64,
    /// Errors the stream returned (every stream gets every error of the source).
    pub errors: u64,
    /// Packets for this stream that were discarded because the stream had been dropped (its
    /// queue at the time, and everything routed to it since).
    pub dropped: u64,
    /// How many times the source was stopped because this stream's queue was full.
    pub full_waits: u64,
    /// Items waiting in the queue now (packets, and an error copied to every stream if one is).
    pub queued: u64,
    /// The most packets that were ever waiting in the queue.
    pub high_water: u64,
}

/// One of the streams made by [`PacketStreamExt::fanout`](super::PacketStreamExt::fanout): a
/// `Stream<Item = Result<P>>` of the packets whose key maps to it, in source order, plus every
/// error of the source. `Send` (when the source, its packets and the key function are), meant to
/// be moved into a task of its own.
///
/// It ends when the source has ended and its queue is empty. Dropping it is safe at any time: its
/// queued packets and everything routed to it afterwards are dropped and counted in
/// [`FanoutStats::dropped`]; the other streams go on.
///
/// **A stream that is neither polled nor dropped stalls the others** once its queue is full:
/// that is the backpressure (the source is not read meanwhile, and the capture ring fills up, and
/// then the kernel drops and counts).
pub struct FanoutStream<S: TryStream<Error = Error>, K> {
    shared: Arc<Shared<S, K>>,
    index: usize,
}

struct Shared<S: TryStream<Error = Error>, K> {
    state: Mutex<State<S, K>>,
    wakers: Arc<LaneWakers>,
}

struct State<S: TryStream<Error = Error>, K> {
    source: Pin<Box<S>>,
    key: K,
    capacity: usize,
    lanes: Vec<Lane<S::Ok>>,
    /// A packet for a full lane: the source is not polled while it waits.
    blocked: Option<(usize, S::Ok)>,
    ended: bool,
    /// Wakes every lane (see [`LaneWakers`]); handed to the source on each poll.
    source_waker: Waker,
}

struct Lane<P> {
    queue: VecDeque<Result<P>>,
    /// Packets (not errors) in `queue`.
    packets: usize,
    alive: bool,
    stats: FanoutStats,
}

/// One waker slot per lane. As the source's waker it wakes them all: whichever lane polls next
/// drives the source, so no lane depends on the one that polled it last.
struct LaneWakers(Box<[AtomicWaker]>);

impl LaneWakers {
    fn wake_all(&self) {
        for w in self.0.iter() {
            w.wake();
        }
    }
}

impl Wake for LaneWakers {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

impl<S, K> FanoutStream<S, K>
where
    S: TryStream<Error = Error>,
    K: FnMut(&S::Ok) -> u64,
{
    pub(super) fn split(source: S, n: usize, capacity: usize, key: K) -> Result<Vec<Self>> {
        if n == 0 || capacity == 0 {
            return Err(Error::InvalidConfig(format!(
                "fanout into {n} streams of {capacity} packets each: both must be at least 1"
            )));
        }
        let wakers = Arc::new(LaneWakers((0..n).map(|_| AtomicWaker::new()).collect()));
        let lanes = (0..n)
            .map(|_| Lane {
                queue: VecDeque::with_capacity(capacity),
                packets: 0,
                alive: true,
                stats: FanoutStats::default(),
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                source: Box::pin(source),
                key,
                capacity,
                lanes,
                blocked: None,
                ended: false,
                source_waker: Waker::from(wakers.clone()),
            }),
            wakers,
        });
        Ok((0..n)
            .map(|index| FanoutStream {
                shared: shared.clone(),
                index,
            })
            .collect())
    }
}

impl<S: TryStream<Error = Error>, K> FanoutStream<S, K> {
    fn lock(&self) -> MutexGuard<'_, State<S, K>> {
        // A panic in the key function poisons the lock; the state itself stays consistent.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This stream's position among the streams `fanout` returned (keys map to `key % n`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// This stream's counters.
    pub fn stats(&self) -> FanoutStats {
        self.lock().lanes[self.index].stats()
    }

    /// The counters of every stream of this fanout, dropped ones included, by index.
    pub fn all_stats(&self) -> Vec<FanoutStats> {
        self.lock().lanes.iter().map(Lane::stats).collect()
    }
}

impl<S, K> Stream for FanoutStream<S, K>
where
    S: TryStream<Error = Error>,
    K: FnMut(&S::Ok) -> u64,
{
    type Item = Result<S::Ok>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = self.index;
        // Registered before looking, so a wake-up after the look is not lost.
        self.shared.wakers.0[me].register(cx.waker());
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(item) = st.lanes[me].queue.pop_front() {
            let lane = &mut st.lanes[me];
            match &item {
                Ok(_) => {
                    lane.packets -= 1;
                    lane.stats.delivered += 1;
                }
                Err(_) => lane.stats.errors += 1,
            }
            if matches!(st.blocked, Some((j, _)) if j == me) {
                // Room now: queue the parked packet and let the source be read again.
                if let Some((_, p)) = st.blocked.take() {
                    st.lanes[me].push(Ok(p));
                }
                self.shared.wakers.wake_all();
            }
            return Poll::Ready(Some(item));
        }
        if st.ended {
            return Poll::Ready(None);
        }
        if st.blocked.is_some() {
            return Poll::Pending; // woken when the full lane makes room
        }
        let n = st.lanes.len() as u64;
        for _ in 0..ROUTE_BUDGET {
            let mut source_cx = Context::from_waker(&st.source_waker);
            let packet = match st.source.as_mut().try_poll_next(&mut source_cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    st.ended = true;
                    self.shared.wakers.wake_all();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    for (j, lane) in st.lanes.iter_mut().enumerate() {
                        if j != me && lane.alive {
                            lane.push(Err(super::copy_error(&e)));
                            self.shared.wakers.0[j].wake();
                        }
                    }
                    st.lanes[me].stats.errors += 1;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(p))) => p,
            };
            let j = ((st.key)(&packet) % n) as usize;
            if j == me {
                st.lanes[me].stats.delivered += 1;
                return Poll::Ready(Some(Ok(packet)));
            }
            let lane = &mut st.lanes[j];
            if !lane.alive {
                lane.stats.dropped += 1; // dropped here, releasing its ring memory
            } else if lane.packets >= st.capacity {
                lane.stats.full_waits += 1;
                st.blocked = Some((j, packet));
                self.shared.wakers.0[j].wake();
                return Poll::Pending; // woken when lane j makes room
            } else {
                lane.push(Ok(packet));
                self.shared.wakers.0[j].wake();
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<P> Lane<P> {
    fn stats(&self) -> FanoutStats {
        FanoutStats {
            queued: self.queue.len() as u64,
            ..self.stats
        }
    }

    fn push(&mut self, item: Result<P>) {
        if item.is_ok() {
            self.packets += 1;
        }
        self.queue.push_back(item);
        self.stats.high_water = self.stats.high_water.max(self.packets as u64);
    }
}

impl<S: TryStream<Error = Error>, K> Drop for FanoutStream<S, K> {
    fn drop(&mut self) {
        let me = self.index;
        let mut guard = self.lock();
        let st = &mut *guard;
        let lane = &mut st.lanes[me];
        lane.alive = false;
        lane.stats.dropped += lane.packets as u64;
        lane.queue.clear();
        lane.packets = 0;
        if matches!(st.blocked, Some((j, _)) if j == me) {
            st.blocked = None;
            st.lanes[me].stats.dropped += 1;
        }
        drop(guard);
        // The others may have been waiting for this lane; let them look again.
        self.shared.wakers.wake_all();
    }
}

impl<S: TryStream<Error = Error>, K> fmt::Debug for FanoutStream<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanoutStream")
            .field("index", &self.index)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt, stream};

    use crate::combinators::PacketStreamExt;
    use crate::error::{Error, Result};

    fn gone() -> Error {
        Error::InterfaceGone {
            name: "veth9".into(),
            index: 9,
        }
    }

    /// Packets `[lane, seq]`; key = first byte.
    fn source(items: Vec<Result<Vec<u8>>>) -> impl futures::Stream<Item = Result<Vec<u8>>> + Unpin {
        stream::iter(items)
    }

    #[allow(clippy::ptr_arg)] // the key takes `&P`, and P is `Vec<u8>` here
    fn key(p: &Vec<u8>) -> u64 {
        u64::from(p[0])
    }

    /// Without a runtime: a lane is `Pending` exactly while the source waits for another lane's
    /// full queue; errors reach every lane in source order; the end reaches every lane after its
    /// queue.
    #[test]
    fn backpressure_errors_and_end() {
        let items = vec![
            Ok(vec![0, 0]),
            Ok(vec![1, 0]),
            Ok(vec![1, 1]),
            Ok(vec![1, 2]), // lane 1 full (capacity 2): parked, source stops
            Ok(vec![0, 1]),
            Err(gone()),
            Ok(vec![1, 3]),
            Ok(vec![0, 2]),
        ];
        let mut lanes = source(items).fanout(2, 2, key).unwrap();
        let (l0, l1) = lanes.split_at_mut(1);
        let (l0, l1) = (&mut l0[0], &mut l1[0]);
        let next = |l: &mut super::FanoutStream<_, _>| l.next().now_or_never();

        assert_eq!(next(l0).unwrap().unwrap().unwrap(), [0, 0]);
        assert!(next(l0).is_none(), "lane 0 must wait for full lane 1");
        assert_eq!(l1.stats().full_waits, 1);
        assert_eq!(l1.stats().queued, 2);
        assert_eq!(next(l1).unwrap().unwrap().unwrap(), [1, 0]); // makes room: [1, 2] queued
        assert_eq!(next(l0).unwrap().unwrap().unwrap(), [0, 1]);
        assert!(matches!(
            next(l0).unwrap().unwrap(),
            Err(Error::InterfaceGone { index: 9, .. })
        ));
        for want in [[1, 1], [1, 2]] {
            assert_eq!(next(l1).unwrap().unwrap().unwrap(), want);
        }
        assert!(matches!(
            next(l1).unwrap().unwrap(),
            Err(Error::InterfaceGone { .. })
        ));
        assert_eq!(next(l0).unwrap().unwrap().unwrap(), [0, 2]); // routes [1, 3] on the way
        assert!(next(l0).unwrap().is_none(), "source ended, lane 0 empty");
        assert_eq!(next(l1).unwrap().unwrap().unwrap(), [1, 3]);
        assert!(next(l1).unwrap().is_none());
        let s = l1.all_stats();
        assert_eq!(
            (s[0].delivered, s[0].errors, s[1].delivered, s[1].errors),
            (3, 1, 4, 1)
        );
        assert_eq!(s[1].high_water, 2);
    }

    /// Dropping a lane with a full queue and a parked packet frees the others at once; its
    /// share (queued, parked, and later) is counted as dropped.
    #[test]
    fn dropped_lane_releases_the_others() {
        let items = (0..6u8).map(|i| Ok(vec![1, i])).chain([Ok(vec![0, 0])]);
        let mut lanes = source(items.collect()).fanout(2, 2, key).unwrap();
        let l1 = lanes.pop().unwrap();
        let mut l0 = lanes.pop().unwrap();
        assert!(l0.next().now_or_never().is_none()); // parked on lane 1
        drop(l1);
        assert_eq!(l0.next().now_or_never().unwrap().unwrap().unwrap(), [0, 0]);
        assert!(l0.next().now_or_never().unwrap().is_none());
        let s = l0.all_stats();
        assert_eq!(s[1].dropped, 6, "{s:?}");
        assert_eq!(s[1].queued, 0);
    }

    #[test]
    fn zero_streams_or_capacity_is_an_error() {
        assert!(matches!(
            source(vec![]).fanout(0, 1, key),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            source(vec![]).fanout_flows(1, 0),
            Err(Error::InvalidConfig(_))
        ));
    }
}
