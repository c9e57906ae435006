//! pcap files as async `Stream`s (optionally paced like the recording) and `Sink`s.
//!
//! Files are read and written with blocking I/O: a record is read when the stream is polled for
//! it, and a `PcapWriter` writes as soon as an item is sent. For files on local disks this is a
//! short wait; the pacing waits are the runtime's, through a [`Timer`].

use std::fmt;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::{Sink, Stream};

use super::{PcapReader, PcapRecord, PcapWriter};
use crate::afpacket::Timestamp;
use crate::error::{Error, Result};
use crate::packet::AsPacket;
use crate::runtime::{Runtime, Timer};

/// How fast a [`PcapStream`] hands out records.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Pace {
    /// Every record as soon as it is asked for.
    #[default]
    AsFastAsPossible,
    /// Each record at its recorded offset from the first record.
    Recorded,
    /// As recorded, `factor` times as fast: 2.0 halves the gaps, 0.5 doubles them. The factor
    /// must be finite and above 0.
    Scaled(f64),
}

impl Pace {
    /// The speed factor, `None` for [`Pace::AsFastAsPossible`]; checks [`Pace::Scaled`]'s.
    fn factor(self) -> Result<Option<f64>> {
        match self {
            Pace::AsFastAsPossible => Ok(None),
            Pace::Recorded => Ok(Some(1.0)),
            Pace::Scaled(f) if f.is_finite() && f > 0.0 => Ok(Some(f)),
            Pace::Scaled(f) => Err(Error::InvalidConfig(format!(
                "pace factor {f} must be a finite number above 0 (1.0 is the recorded pace, 2.0 \
                 twice as fast)"
            ))),
        }
    }
}

impl<Rd: Read> PcapReader<Rd> {
    /// The records as a `Stream`, handed out at `pace`, with `R`'s reactor for the waits.
    /// Fails only for an invalid [`Pace::Scaled`] factor.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use netring::pcap::{Pace, PcapReader};
    /// use netring::runtime::Runtime;
    ///
    /// async fn show<R: Runtime>() -> netring::Result<()> {
    ///     let file = std::io::BufReader::new(std::fs::File::open("in.pcap").unwrap());
    ///     let mut records = PcapReader::new(file)?.into_stream::<R>(Pace::Recorded)?;
    ///     while let Some(rec) = records.next().await {
    ///         println!("{} bytes", rec?.data.len());
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn into_stream<R: Runtime>(self, pace: Pace) -> Result<PcapStream<R, Rd>> {
        Ok(PcapStream {
            factor: pace.factor()?,
            pace,
            reader: self,
            start: None,
            next: None,
            timer: None,
            done: false,
            yielded: 0,
        })
    }
}

/// A pcap file's records as a `Stream<Item = Result<PcapRecord>>`, paced by a [`Pace`]
/// ([`PcapReader::into_stream`]).
///
/// With a recorded or scaled pace the first record comes at once and each later one when its
/// offset from the first record (its timestamp minus the first's, divided by the factor) has
/// passed since the first was handed out. Every deadline is computed from that one start instant,
/// so lateness (a busy machine, a slow sink) never accumulates into drift: a record that is
/// overdue comes at once and the ones after it are back on schedule. Records stamped earlier than
/// the first one (out-of-order files) come at once.
///
/// Reading is blocking and one record ahead at most: the next record is read from the file when
/// the stream is polled for it, then waited for (on `R`'s reactor, through a [`Timer`]) until it
/// is due. With [`Pace::AsFastAsPossible`] the stream is never `Pending`: whoever drives it
/// (`forward`, [`replay`]) yields only while its sink is full.
///
/// After an error (a truncated or corrupt record) the stream ends.
pub struct PcapStream<R: Runtime, Rd: Read> {
    pace: Pace,
    factor: Option<f64>,
    reader: PcapReader<Rd>,
    /// When the first record was handed out, and its timestamp.
    start: Option<(Instant, Timestamp)>,
    /// A record read but not yet due.
    next: Option<PcapRecord>,
    /// Created the first time a record has to wait (inside the runtime).
    timer: Option<Timer<R>>,
    done: bool,
    yielded: u64,
}

impl<R: Runtime, Rd: Read> PcapStream<R, Rd> {
    /// The pace this stream keeps.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Records handed out so far.
    pub fn records(&self) -> u64 {
        self.yielded
    }

    /// The reader (file header facts: link type, snapshot length, resolution).
    pub fn get_ref(&self) -> &PcapReader<Rd> {
        &self.reader
    }

    /// When `rec` is due: `None` if at once.
    fn due(&mut self, rec: &PcapRecord) -> Result<Option<Instant>> {
        let Some(factor) = self.factor else {
            return Ok(None);
        };
        let Some((start, first)) = self.start else {
            self.start = Some((Instant::now(), rec.timestamp));
            return Ok(None);
        };
        let offset_ns = rec.timestamp.as_nanos().saturating_sub(first.as_nanos());
        let offset = if factor == 1.0 {
            Some(Duration::from_nanos(offset_ns))
        } else {
            Duration::try_from_secs_f64(offset_ns as f64 / 1e9 / factor).ok()
        };
        match offset.and_then(|o| start.checked_add(o)) {
            Some(at) if at > Instant::now() => Ok(Some(at)),
            Some(_) => Ok(None),
            None => Err(Error::InvalidConfig(format!(
                "record {} is due {offset_ns} ns (recorded) after the first, which at pace factor \
                 {factor} is beyond the clock's range: use a larger factor",
                self.yielded
            ))),
        }
    }

    /// The next record once it is due, `None` at the end of the file.
    pub fn poll_next_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<PcapRecord>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let rec = match self.next.take() {
            Some(rec) => rec,
            None => match self.reader.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            },
        };
        let due = match self.due(&rec) {
            Ok(due) => due,
            Err(e) => {
                self.done = true;
                return Poll::Ready(Some(Err(e)));
            }
        };
        if let Some(at) = due {
            let armed = match self.timer.as_mut() {
                Some(t) if t.deadline() == at => Ok(()),
                Some(t) => t.reset(at),
                None => Timer::at(at).map(|t| self.timer = Some(t)),
            };
            let waited = match armed {
                Ok(()) => self.timer.as_mut().map(|t| t.poll_expired(cx)),
                Err(e) => Some(Poll::Ready(Err(e))),
            };
            match waited {
                Some(Poll::Pending) => {
                    self.next = Some(rec);
                    return Poll::Pending;
                }
                Some(Poll::Ready(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Poll::Ready(Ok(()))) | None => {}
            }
        }
        self.yielded += 1;
        Poll::Ready(Some(Ok(rec)))
    }
}

impl<R: Runtime, Rd: Read + Unpin> Stream for PcapStream<R, Rd> {
    type Item = Result<PcapRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_record(cx)
    }
}

impl<R: Runtime, Rd: Read> fmt::Debug for PcapStream<R, Rd> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcapStream")
            .field("pace", &self.pace)
            .field("records", &self.yielded)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// What [`replay`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records handed to the sink.
    pub records: u64,
    /// Their captured bytes.
    pub bytes: u64,
}

/// Sends every record of `reader` into `sink` (any TX sink: [`AsyncInjector`](crate::AsyncInjector),
/// [`AsyncXdpSocket`](crate::xdp::AsyncXdpSocket), ...) at `pace`, then flushes it.
///
/// The sink's `poll_ready` sets the speed when it is slower than the pace (nothing is dropped),
/// and while a record is not yet due the sink is flushed, so paced frames leave when they are due
/// rather than when the ring fills. This is `stream.forward(sink)` (which behaves the same way)
/// except that the sink is flushed but not closed and the records are counted. Records are not
/// checked here: one the sink refuses (too long for the link, say) ends the replay with the
/// sink's error, after the records before it were sent.
///
/// ```no_run
/// use netring::pcap::{Pace, PcapReader, replay};
/// use netring::{Injector, runtime::Runtime};
///
/// async fn resend<R: Runtime>() -> netring::Result<()> {
///     let mut tx = Injector::builder("eth0").open_async::<R>()?;
///     let file = std::io::BufReader::new(std::fs::File::open("in.pcap").unwrap());
///     let sent = replay::<R, _, _>(PcapReader::new(file)?, &mut tx, Pace::Recorded).await?;
///     println!("{} frames, {} bytes", sent.records, sent.bytes);
///     Ok(())
/// }
/// ```
pub async fn replay<R, Rd, S>(reader: PcapReader<Rd>, mut sink: S, pace: Pace) -> Result<Replayed>
where
    R: Runtime,
    Rd: Read + Unpin,
    S: Sink<PcapRecord> + Unpin,
    Error: From<S::Error>,
{
    let mut records = reader.into_stream::<R>(pace)?;
    let mut sent = Replayed::default();
    let mut held: Option<PcapRecord> = None;
    poll_fn(|cx| {
        loop {
            if held.is_some() {
                ready!(Pin::new(&mut sink).poll_ready(cx))?;
                if let Some(rec) = held.take() {
                    sent.records += 1;
                    sent.bytes += rec.data.len() as u64;
                    Pin::new(&mut sink).start_send(rec)?;
                }
            }
            match records.poll_next_record(cx) {
                Poll::Ready(Some(Ok(rec))) => held = Some(rec),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    ready!(Pin::new(&mut sink).poll_flush(cx))?;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {
                    ready!(Pin::new(&mut sink).poll_flush(cx))?;
                    return Poll::Pending;
                }
            }
        }
    })
    .await?;
    Ok(sent)
}

/// A pcap file as a `Sink` of received frames: any [`AsPacket`] (`OwnedPacket`, `XdpFrame`,
/// `PcapRecord`, `Bytes`, ...), written with [`PcapWriter::write`] (VLAN tags put back, the
/// current time for frames without a timestamp). Writes are blocking and buffered by `W`;
/// `poll_flush` and `poll_close` flush `W`.
///
/// ```no_run
/// use futures::StreamExt;
/// use netring::{Capture, pcap::PcapWriter, runtime::Runtime};
///
/// async fn record<R: Runtime>() -> netring::Result<()> {
///     let file = std::io::BufWriter::new(std::fs::File::create("out.pcap").unwrap());
///     let packets = Capture::builder("eth0").open_async::<R>()?.packets();
///     packets.take(1000).forward(PcapWriter::new(file)?).await
/// }
/// ```
impl<W: Write + Unpin, P: AsPacket> Sink<P> for PcapWriter<W> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: P) -> Result<()> {
        self.get_mut().write(&item)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(self.get_mut().flush())
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(self.get_mut().flush())
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use futures::SinkExt;
    use futures::executor::block_on;

    use super::*;
    use crate::afpacket::VlanTag;

    /// A runtime whose readiness never comes: enough for streams that never wait.
    struct NoWait;
    impl Runtime for NoWait {
        type Registration = std::os::fd::OwnedFd;
        fn register(fd: std::os::fd::OwnedFd) -> Result<Self::Registration> {
            Ok(fd)
        }
        fn poll_readable(_: &Self::Registration, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    /// A runtime that always says "readable": waits become busy loops on the clock.
    struct Spin;
    impl Runtime for Spin {
        type Registration = std::os::fd::OwnedFd;
        fn register(fd: std::os::fd::OwnedFd) -> Result<Self::Registration> {
            Ok(fd)
        }
        fn poll_readable(_: &Self::Registration, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn file(stamps: &[(u32, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = PcapWriter::new(&mut out).unwrap();
        for (i, &(sec, nsec)) in stamps.iter().enumerate() {
            w.write_frame(Timestamp { sec, nsec }, 60, &[i as u8; 60], None)
                .unwrap();
        }
        w.into_inner().unwrap();
        out
    }

    #[test]
    fn as_fast_as_possible_never_waits() {
        let f = file(&[(100, 0), (200, 0), (50, 0)]);
        let mut s = PcapReader::new(&f[..])
            .unwrap()
            .into_stream::<NoWait>(Pace::AsFastAsPossible)
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..3u8 {
            match s.poll_next_record(&mut cx) {
                Poll::Ready(Some(Ok(r))) => assert_eq!(r.data, vec![i; 60]),
                other => panic!("record {i}: {other:?}"),
            }
        }
        assert!(matches!(s.poll_next_record(&mut cx), Poll::Ready(None)));
        assert!(matches!(s.poll_next_record(&mut cx), Poll::Ready(None)));
        assert_eq!(s.records(), 3);
    }

    #[test]
    fn recorded_pace_waits_for_later_records_but_not_for_earlier_ones() {
        // The second record is an hour after the first: the stream waits on the timer (which
        // this runtime never reports). A record stamped before the first would come at once.
        let f = file(&[(100, 0), (50, 0), (3700, 0)]);
        let mut s = PcapReader::new(&f[..])
            .unwrap()
            .into_stream::<NoWait>(Pace::Scaled(2.0))
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(s.poll_next_record(&mut cx).is_pending());
        assert!(s.poll_next_record(&mut cx).is_pending());
        assert_eq!(s.records(), 2);
    }

    #[test]
    fn deadlines_count_from_the_first_record_not_from_the_previous_one() {
        // Records at 0, 100 ms and 200 ms; the consumer is 180 ms late for the second. The third
        // is still due 200 ms after the first (a stream that slept "the gap since the previous
        // record" would hand it out at 280 ms).
        let f = file(&[(10, 0), (10, 100_000_000), (10, 200_000_000)]);
        let mut s = PcapReader::new(&f[..])
            .unwrap()
            .into_stream::<Spin>(Pace::Recorded)
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let t0 = Instant::now();
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        std::thread::sleep(Duration::from_millis(180));
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        let third = t0.elapsed();
        assert!(
            third >= Duration::from_millis(200) && third < Duration::from_millis(270),
            "the third record came {third:?} after the first"
        );
    }

    #[test]
    fn bad_pace_factors_are_refused() {
        for f in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let file = file(&[]);
            let err = PcapReader::new(&file[..])
                .unwrap()
                .into_stream::<NoWait>(Pace::Scaled(f))
                .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{f}: {err}");
        }
    }

    #[test]
    fn a_truncated_file_yields_its_records_then_the_error_then_ends() {
        let mut f = file(&[(1, 0), (2, 0)]);
        f.truncate(f.len() - 3);
        let mut s = PcapReader::new(&f[..])
            .unwrap()
            .into_stream::<NoWait>(Pace::AsFastAsPossible)
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            s.poll_next_record(&mut cx),
            Poll::Ready(Some(Err(Error::Pcap(_))))
        ));
        assert!(matches!(s.poll_next_record(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn replay_into_a_sink_and_the_writer_as_a_sink() {
        let f = file(&[(1, 0), (1, 5), (1, 9)]);
        let mut copy = Vec::new();
        let sent = block_on(async {
            let mut w = PcapWriter::new(&mut copy).unwrap();
            let sent = replay::<NoWait, _, _>(
                PcapReader::new(&f[..]).unwrap(),
                &mut w,
                Pace::AsFastAsPossible,
            )
            .await
            .unwrap();
            // Frames with a stripped tag and without a timestamp, through the Sink.
            w.send(Tagged(vec![3u8; 60])).await.unwrap();
            w.send(bytes::Bytes::from_static(&[7u8; 20])).await.unwrap();
            w.flush().unwrap(); // inherent: `SinkExt::close` would have to name the item type
            sent
        });
        assert_eq!(
            sent,
            Replayed {
                records: 3,
                bytes: 180
            }
        );
        let back: Vec<PcapRecord> = PcapReader::new(&copy[..])
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let orig: Vec<PcapRecord> = PcapReader::new(&f[..])
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(&back[..3], &orig[..]);
        assert_eq!(back.len(), 5);
        // The tag is back after the MAC addresses; the time is now-ish.
        let mut want = vec![3u8; 12];
        want.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        want.extend_from_slice(&[3u8; 48]);
        assert_eq!(back[3].data, want);
        assert_eq!(back[3].wire_len, 64);
        assert_eq!(back[3].timestamp, Timestamp { sec: 9, nsec: 1 });
        assert_eq!(back[4].data, vec![7u8; 20]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(u64::from(back[4].timestamp.sec)) < 60);
    }

    /// A frame whose VLAN tag (VLAN 100) was stripped by the kernel.
    struct Tagged(Vec<u8>);
    impl AsPacket for Tagged {
        fn data(&self) -> &[u8] {
            &self.0
        }
        fn timestamp(&self) -> Option<Timestamp> {
            Some(Timestamp { sec: 9, nsec: 1 })
        }
        fn vlan(&self) -> Option<VlanTag> {
            Some(VlanTag {
                tpid: 0x8100,
                tci: 100,
            })
        }
    }
}
