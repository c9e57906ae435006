//! TPACKET_V3 capture: the builder, the reader, and its statistics.

use std::ops::{Add, AddAssign};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::Batch;
use super::fanout::{Fanout, FanoutMode};
use super::ring::{Cursor, NotReady, RxRing};
use super::socket::PacketSocket;
use crate::bpf::BpfProgram;
use crate::error::{Error, GeometryError, Result};
use crate::iface::Interface;
use crate::sys::{self, Epoll};

/// Which link-layer protocols a capture receives.
///
/// ```
/// use netring::{Capture, Protocol};
/// let arp_only = Capture::builder("eth0").protocol(Protocol::EtherType(0x0806));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Every protocol (`ETH_P_ALL`), including outgoing frames.
    #[default]
    All,
    /// One ethertype (host order), e.g. `0x0800` for IPv4. Outgoing frames are not seen.
    EtherType(u16),
}

impl Protocol {
    fn raw(self) -> u16 {
        match self {
            Protocol::All => libc::ETH_P_ALL as u16,
            Protocol::EtherType(t) => t,
        }
    }
}

/// Which clock stamps received packets.
///
/// ```
/// use netring::{Capture, Timestamping};
/// let builder = Capture::builder("eth0").timestamping(Timestamping::Hardware);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timestamping {
    /// The kernel's software clock, nanosecond resolution.
    #[default]
    Software,
    /// The NIC's raw hardware clock where the device provides one (it must also be enabled on the
    /// device, e.g. with `hwstamp_ctl -r 1`); packets without one fall back to software time.
    /// [`Packet::timestamp_source`](super::Packet::timestamp_source) tells which each one carries.
    Hardware,
}

/// Kernel counters of a capture socket (`PACKET_STATISTICS`).
///
/// ```no_run
/// # fn f(cap: &mut netring::Capture) -> netring::Result<()> {
/// let delta = cap.stats()?; // since the previous call
/// let total = cap.cumulative_stats()?; // since open, 64-bit
/// println!("{} new drops, {} in all", delta.drops, total.drops);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Packets that reached the socket, including the dropped ones.
    pub packets: u64,
    /// Packets dropped because no block was free.
    pub drops: u64,
    /// Times the ring froze because the user held every block.
    pub freeze_count: u64,
}

impl Stats {
    /// Packets delivered into the ring (`packets - drops`).
    pub fn received(&self) -> u64 {
        self.packets.saturating_sub(self.drops)
    }
}

impl Add for Stats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            packets: self.packets + o.packets,
            drops: self.drops + o.drops,
            freeze_count: self.freeze_count + o.freeze_count,
        }
    }
}

impl AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

/// Configures and opens a [`Capture`]. Every setting has a documented default.
///
/// ```no_run
/// use std::time::Duration;
/// use netring::{Capture, Protocol};
///
/// let mut cap = Capture::builder("eth0")
///     .block_size(1 << 20)
///     .block_count(32)
///     .block_timeout(Duration::from_millis(5))
///     .protocol(Protocol::EtherType(0x0800))
///     .promiscuous(true)
///     .open()?;
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CaptureBuilder {
    interface: String,
    block_size: usize,
    block_count: usize,
    frame_size: usize,
    block_timeout: Duration,
    protocol: Protocol,
    promiscuous: bool,
    ignore_outgoing: bool,
    rx_hash: bool,
    timestamping: Timestamping,
    busy_poll: Option<Duration>,
    filter: Option<BpfProgram>,
    fanout: Option<Fanout>,
}

impl CaptureBuilder {
    /// Default block size: 256 KiB.
    pub const DEFAULT_BLOCK_SIZE: usize = 256 << 10;
    /// Default block count: 64 (a 16 MiB ring with the default block size).
    pub const DEFAULT_BLOCK_COUNT: usize = 64;
    /// Default nominal frame size: 2048 bytes. TPACKET_V3 packs packets of any size into a block,
    /// so this only has to satisfy the kernel's geometry checks.
    pub const DEFAULT_FRAME_SIZE: usize = 2048;
    /// Default block retire timeout: 10 ms, the most a packet waits on a quiet link.
    pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_millis(10);

    fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            block_size: Self::DEFAULT_BLOCK_SIZE,
            block_count: Self::DEFAULT_BLOCK_COUNT,
            frame_size: Self::DEFAULT_FRAME_SIZE,
            block_timeout: Self::DEFAULT_BLOCK_TIMEOUT,
            protocol: Protocol::All,
            promiscuous: false,
            ignore_outgoing: false,
            rx_hash: false,
            timestamping: Timestamping::Software,
            busy_poll: None,
            filter: None,
            fanout: None,
        }
    }

    /// Bytes per block: a positive multiple of the page size (default 256 KiB). A packet larger
    /// than a block (less its headers) is truncated.
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes;
        self
    }
    /// Number of blocks (default 64). This is also how many batches can be held at once.
    pub fn block_count(mut self, n: usize) -> Self {
        self.block_count = n;
        self
    }
    /// Nominal frame size: a multiple of 16, at least 80, at most the block size (default 2048).
    pub fn frame_size(mut self, bytes: usize) -> Self {
        self.frame_size = bytes;
        self
    }
    /// How long the kernel keeps a partly filled block before handing it over (default 10 ms;
    /// 1 ms to 60 s). Lower means lower latency on quiet links and more wake-ups.
    pub fn block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout;
        self
    }
    /// Protocol filter (default [`Protocol::All`]).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }
    /// Puts the interface into promiscuous mode while the capture is open (default off; needs
    /// `CAP_NET_RAW`).
    pub fn promiscuous(mut self, on: bool) -> Self {
        self.promiscuous = on;
        self
    }
    /// Skips packets this host sends (default off).
    pub fn ignore_outgoing(mut self, on: bool) -> Self {
        self.ignore_outgoing = on;
        self
    }
    /// Asks the kernel to fill in each packet's flow hash (default off).
    pub fn rx_hash(mut self, on: bool) -> Self {
        self.rx_hash = on;
        self
    }
    /// Timestamp source (default software, nanosecond resolution).
    pub fn timestamping(mut self, ts: Timestamping) -> Self {
        self.timestamping = ts;
        self
    }
    /// Busy-poll the device for up to this long on a blocking read (`SO_BUSY_POLL`; default off;
    /// needs `CAP_NET_ADMIN` to raise above the system default).
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = Some(budget);
        self
    }
    /// A classic BPF program run in the kernel on every packet before it reaches the ring
    /// (default none). It is attached before the socket is bound, so no packet it rejects is ever
    /// delivered.
    pub fn filter(mut self, program: BpfProgram) -> Self {
        self.filter = Some(program);
        self
    }
    /// Joins a kernel fanout group (default none). With [`FanoutMode::Cbpf`] or
    /// [`FanoutMode::Ebpf`], the program is set for the whole group once this socket has joined
    /// (replacing the group's previous one). To open every member of a group at once, in a known
    /// order, use [`FanoutGroup`](super::FanoutGroup).
    ///
    /// No packet reaches the socket before it is in the group: until then it holds a
    /// reject-all filter, so a packet the group gives another member is never delivered here
    /// too (the few the group hands it in the instant between joining and lifting that filter
    /// are dropped).
    pub fn fanout(mut self, fanout: Fanout) -> Self {
        self.fanout = Some(fanout);
        self
    }

    /// The same settings on another interface (for [`FanoutGroup`](super::FanoutGroup)'s
    /// template).
    pub(crate) fn with_interface(mut self, interface: &str) -> Self {
        interface.clone_into(&mut self.interface);
        self
    }

    /// Checks the ring geometry without touching the kernel.
    pub fn validate(&self) -> Result<(), GeometryError> {
        let page = sys::page_size();
        if self.block_count == 0 {
            return Err(GeometryError::Empty { what: "block" });
        }
        if self.block_size == 0 || self.block_size % page != 0 {
            return Err(GeometryError::BlockSizeNotPageMultiple {
                block_size: self.block_size,
                page_size: page,
            });
        }
        if self.frame_size % libc::TPACKET_ALIGNMENT != 0 {
            return Err(GeometryError::FrameSizeUnaligned {
                frame_size: self.frame_size,
            });
        }
        let min = libc::TPACKET3_HDRLEN.next_multiple_of(libc::TPACKET_ALIGNMENT);
        if self.frame_size < min {
            return Err(GeometryError::FrameSizeTooSmall {
                frame_size: self.frame_size,
                min,
            });
        }
        if self.frame_size > self.block_size {
            return Err(GeometryError::FrameLargerThanBlock {
                frame_size: self.frame_size,
                block_size: self.block_size,
            });
        }
        let bytes = self.block_size as u128 * self.block_count as u128;
        let limit = u32::MAX as u128;
        if bytes > limit {
            return Err(GeometryError::TooLarge { bytes, limit });
        }
        let ms = self.block_timeout.as_millis();
        if !(1..=60_000).contains(&ms) {
            return Err(GeometryError::BlockTimeout { ms });
        }
        Ok(())
    }

    /// Opens the capture.
    ///
    /// The socket is created bound to no protocol (so it receives nothing), then gets its ring,
    /// filter and options, and only then is bound to the interface: the first block holds only
    /// packets from this interface that passed the filter.
    pub fn open(self) -> Result<Capture> {
        self.open_member(true)
    }

    /// Opens the capture; in a fanout group with a program mode, sets the group's program if
    /// `set_program` (a [`FanoutGroup`](super::FanoutGroup) sets it once, after its last member).
    pub(crate) fn open_member(self, set_program: bool) -> Result<Capture> {
        self.validate()?;
        if let Some(fanout) = &self.fanout {
            fanout.validate()?;
        }
        let iface = Interface::by_name(&self.interface)?;
        let sock = PacketSocket::open()?;
        sock.set_version(libc::tpacket_versions::TPACKET_V3)?;
        if self.fanout.is_some() {
            // Bound but not yet in the group, the socket would get a copy of every packet.
            sock.attach_filter(&BpfProgram::reject_all())?;
        } else if let Some(prog) = &self.filter {
            sock.attach_filter(prog)?;
        }
        if self.ignore_outgoing {
            sock.set_ignore_outgoing()?;
        }
        if self.timestamping == Timestamping::Hardware {
            sock.set_timestamping(libc::SOF_TIMESTAMPING_RAW_HARDWARE)?;
        }
        if let Some(budget) = self.busy_poll {
            sock.set_busy_poll(budget)?;
        }
        let req = libc::tpacket_req3 {
            tp_block_size: self.block_size as u32,
            tp_block_nr: self.block_count as u32,
            tp_frame_size: self.frame_size as u32,
            tp_frame_nr: ((self.block_size / self.frame_size) * self.block_count) as u32,
            tp_retire_blk_tov: self.block_timeout.as_millis() as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: if self.rx_hash {
                libc::TP_FT_REQ_FILL_RXHASH
            } else {
                0
            },
        };
        sock.set_rx_ring(&req)?;
        let mem = sock.map_ring(self.block_size * self.block_count)?;
        let ring = Arc::new(RxRing::new(mem, self.block_size, self.block_count));
        sock.bind(iface.index(), self.protocol.raw())
            .map_err(|e| gone_or(e, &iface))?;
        if self.promiscuous {
            sock.set_promiscuous(iface.index())?;
        }
        if let Some(fanout) = &self.fanout {
            sock.join_fanout(fanout.raw())
                .map_err(|e| fanout.join_error(e))?;
            match &self.filter {
                Some(prog) => sock.attach_filter(prog)?,
                None => sock.detach_filter()?,
            }
        }
        let epoll = Epoll::watch(sock.as_fd(), (libc::EPOLLIN | libc::EPOLLERR) as u32)
            .map_err(|e| Error::os("epoll", e))?;
        let cap = Capture {
            drain_grace: self.block_timeout * 2 + Duration::from_millis(20),
            sock,
            epoll,
            ring,
            cursor: Cursor::default(),
            iface,
            stats_total: Stats::default(),
            stats_pending: Stats::default(),
            fault: None,
            gone: false,
            down: false,
            in_fanout: self.fanout.is_some(),
        };
        if let (Some(fanout), true) = (&self.fanout, set_program) {
            let id = cap.fanout_group_id().unwrap_or(fanout.group_id);
            cap.set_fanout_program(&fanout.mode, id)?;
        }
        Ok(cap)
    }
}

/// Turns ENODEV at bind time (the interface vanished since lookup) into `NoSuchInterface`.
fn gone_or(e: Error, iface: &Interface) -> Error {
    if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::ENXIO) {
        Error::NoSuchInterface {
            name: iface.name().to_owned(),
        }
    } else {
        e
    }
}

/// How often a capture whose interface is down checks whether it was deleted.
const DOWN_RECHECK: Duration = Duration::from_millis(200);

/// A socket error waiting to be reported once the ring is drained.
#[derive(Debug)]
struct Fault {
    error: Error,
    report_at: Instant,
}

/// A TPACKET_V3 capture on one interface.
///
/// Batches come out in ring order as owned [`Batch`]es. Up to `block_count` of them may be held at
/// once, and dropped in any order; while the user holds the block the reader would read next, the
/// reader waits for it rather than yield it twice (and the kernel counts drops meanwhile).
///
/// Dropping the capture while batches are still held is fine: they stay valid, and the ring's
/// memory goes away with the last of them. The socket stops taking packets at once (a reject-all
/// filter is attached); in a fanout group, the flows the group assigns to it are dropped until the
/// last batch is gone, so release batches promptly there.
///
/// ```no_run
/// use std::time::Duration;
/// let mut cap = netring::Capture::open("eth0")?;
/// while let Some(batch) = cap.next_batch(Some(Duration::from_secs(1)))? {
///     for pkt in &batch {
///         println!("{} bytes at {:?}", pkt.wire_len(), pkt.timestamp());
///     }
/// }
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct Capture {
    // Field order matters for Drop: the socket is closed before the ring may be unmapped (the
    // ring's Arc may be kept alive by batches anyway).
    sock: PacketSocket,
    epoll: Epoll,
    ring: Arc<RxRing>,
    cursor: Cursor,
    iface: Interface,
    stats_total: Stats,
    stats_pending: Stats,
    fault: Option<Fault>,
    gone: bool,
    /// The interface went down and no packet arrived since: it may yet turn out deleted (the
    /// kernel signals a deletion only as "down"; the socket loses its binding a little later).
    down: bool,
    drain_grace: Duration,
    /// Joined a fanout group at open (the kernel's answer cannot tell group 0 from no group).
    in_fanout: bool,
}

impl Capture {
    /// A builder for a capture on `interface`.
    pub fn builder(interface: &str) -> CaptureBuilder {
        CaptureBuilder::new(interface)
    }

    /// Opens a capture on `interface` with the default settings.
    pub fn open(interface: &str) -> Result<Self> {
        CaptureBuilder::new(interface).open()
    }

    /// The interface, as it was when the capture was opened.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// Number of blocks in the ring (the most batches that can be held at once).
    pub fn block_count(&self) -> usize {
        self.ring.block_count()
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.ring.block_size()
    }

    /// Waits for the next retired block, up to `timeout` (`None`: forever).
    ///
    /// Returns `Ok(None)` on timeout. On a quiet link a packet is delivered within the block
    /// timeout. If the interface goes down or is deleted, every block already retired is delivered
    /// first, then the error ([`Error::InterfaceDown`] or [`Error::InterfaceGone`]); batches
    /// already held stay valid. After `InterfaceDown` the capture goes on if the interface comes
    /// back up; after `InterfaceGone` every call returns that error once the ring is drained.
    pub fn next_batch(&mut self, timeout: Option<Duration>) -> Result<Option<Batch>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut waited = false;
        loop {
            let reason = match self.try_take() {
                Ok(batch) => return Ok(Some(batch)),
                Err(reason) => reason,
            };
            if let Some(err) = self.due_fault() {
                return Err(err);
            }
            let now = Instant::now();
            if waited && deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(now));
            match reason {
                NotReady::HeldByUser => {
                    if remaining != Some(Duration::ZERO) {
                        self.ring.wait_released(self.cursor.next_index(), remaining);
                    }
                    // Errors are still noticed while waiting for the user.
                    self.wait_events(Some(Duration::ZERO))?;
                }
                NotReady::Kernel => self.wait_events(remaining)?,
            }
            waited = true;
        }
    }

    /// Returns the next retired block if there is one, without blocking.
    pub fn try_next_batch(&mut self) -> Result<Option<Batch>> {
        self.next_batch(Some(Duration::ZERO))
    }

    /// Takes the block under the cursor if it is ready.
    pub(crate) fn try_take(&mut self) -> Result<Batch, NotReady> {
        let info = self.cursor.take(&self.ring)?;
        if self.fault.is_none() {
            // Packets flow again (blocks retire only with packets in them).
            self.down = false;
        }
        Ok(Batch::new(self.ring.clone(), info))
    }

    /// Registers `waker` for the release of the block under the cursor; true if it is free now.
    pub(crate) fn register_release(&self, waker: &std::task::Waker) -> bool {
        self.ring.register_release(self.cursor.next_index(), waker)
    }

    /// The descriptor that is readable while the capture has a pending event; async runtimes
    /// watch it, then call [`consume_events`](Self::consume_events).
    pub(crate) fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Collects pending events without blocking (turning socket errors into a pending fault).
    pub(crate) fn consume_events(&mut self) -> Result<()> {
        self.wait_events(Some(Duration::ZERO))
    }

    /// For an edge-triggered runtime, instead of [`readiness_fd`](Self::readiness_fd): owned
    /// duplicates of the socket (a new edge for every retired block, and nothing to collect
    /// afterwards) and of a descriptor readable only for socket errors and the timer (then call
    /// [`consume_fault_events`](Self::consume_fault_events)). The blocking API keeps working.
    pub(crate) fn edge_readiness_fds(
        &mut self,
    ) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
        let socket = self
            .sock
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::os("dup", e))?;
        let faults = self
            .epoll
            .faults(self.sock.as_fd())
            .map_err(|e| Error::os("epoll", e))?
            .try_clone_to_owned()
            .map_err(|e| Error::os("dup", e))?;
        Ok((socket, faults))
    }

    /// Collects the pending events of the faults descriptor of
    /// [`edge_readiness_fds`](Self::edge_readiness_fds) without blocking.
    pub(crate) fn consume_fault_events(&mut self) -> Result<()> {
        let events = self
            .epoll
            .wait_faults()
            .map_err(|e| Error::os("epoll_wait", e))?;
        self.handle_events(events)
    }

    /// True while the socket has nothing to report for the blocks taken so far: the block before
    /// the cursor (the newest taken) is back with the kernel. The kernel reports the socket
    /// readable while that block is not, so a runtime that re-checks readiness when it re-arms
    /// would report it again at once.
    pub(crate) fn newest_block_released(&self) -> bool {
        let count = self.ring.block_count();
        let newest = (self.cursor.next_index() + count - 1) % count;
        self.ring
            .status_word(newest)
            .load(std::sync::atomic::Ordering::Acquire)
            == libc::TP_STATUS_KERNEL
    }

    /// Waits for a socket or timer event and turns an error event into a pending fault.
    fn wait_events(&mut self, timeout: Option<Duration>) -> Result<()> {
        let events = self
            .epoll
            .wait(timeout)
            .map_err(|e| Error::os("epoll_wait", e))?;
        self.handle_events(events)
    }

    /// Turns an error event into a pending fault; re-arms the recheck timer of a down interface.
    fn handle_events(&mut self, events: sys::epoll::Events) -> Result<()> {
        if events.socket & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            self.check_socket_error()?;
        }
        if events.timer && self.down && !self.gone {
            // No event comes when a down interface is deleted: wake waiters now and then so
            // `due_fault` can look again.
            self.arm_recheck()?;
        }
        Ok(())
    }

    fn arm_recheck(&self) -> Result<()> {
        self.epoll
            .arm_timer(DOWN_RECHECK)
            .map_err(|e| Error::os("timerfd_settime", e))
    }

    fn check_socket_error(&mut self) -> Result<()> {
        let Some(err) = self.sock.take_error()? else {
            return Ok(());
        };
        let error = match err.raw_os_error() {
            Some(libc::ENETDOWN) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                if self.interface_still_exists() {
                    self.down = true;
                    Error::InterfaceDown {
                        name: self.iface.name().to_owned(),
                    }
                } else {
                    self.gone = true;
                    Error::InterfaceGone {
                        name: self.iface.name().to_owned(),
                        index: self.iface.index(),
                    }
                }
            }
            _ => Error::os("capture socket", err),
        };
        // Packets in the block the kernel had open are retired by its timer; the fault is reported
        // once they are delivered, or after the grace period at the latest (the epoll timer wakes
        // sync and async waiters alike).
        self.epoll
            .arm_timer(self.drain_grace)
            .map_err(|e| Error::os("timerfd_settime", e))?;
        self.fault = Some(Fault {
            error,
            report_at: Instant::now() + self.drain_grace,
        });
        Ok(())
    }

    fn interface_still_exists(&self) -> bool {
        self.sock.interface_exists(self.iface.index())
    }

    /// The pending fault, once nothing more can come before it: its grace period is over, or the
    /// block the kernel has open holds no packet (so no retire is coming).
    pub(crate) fn due_fault(&mut self) -> Option<Error> {
        if self.down && !self.gone && !self.interface_still_exists() {
            // "Down" was the first step of a deletion: report (or correct) it as gone.
            self.gone = true;
            let report_at = self
                .fault
                .as_ref()
                .map_or_else(Instant::now, |f| f.report_at);
            self.fault = Some(Fault {
                error: Error::InterfaceGone {
                    name: self.iface.name().to_owned(),
                    index: self.iface.index(),
                },
                report_at,
            });
        }
        let fault = self.fault.as_ref()?;
        let open_block_empty = self.ring.kernel_block_is_empty(self.cursor.next_index());
        // A down interface may be on its way out: give the deletion the grace period to show.
        let may_wait = !open_block_empty || matches!(fault.error, Error::InterfaceDown { .. });
        if Instant::now() < fault.report_at && may_wait {
            return None;
        }
        let fault = self.fault.take()?;
        if self.down && !self.gone {
            let _ = self.arm_recheck();
        }
        if self.gone {
            // Keep reporting it: nothing more will ever arrive.
            self.fault = Some(Fault {
                error: Error::InterfaceGone {
                    name: self.iface.name().to_owned(),
                    index: self.iface.index(),
                },
                report_at: Instant::now(),
            });
        }
        Some(fault.error)
    }

    fn fetch_stats(&mut self) -> Result<()> {
        let s = self.sock.statistics()?;
        let delta = Stats {
            packets: s.tp_packets.into(),
            drops: s.tp_drops.into(),
            freeze_count: s.tp_freeze_q_cnt.into(),
        };
        self.stats_total += delta;
        self.stats_pending += delta;
        Ok(())
    }

    /// Kernel counters since the previous call to `stats` (the kernel resets its own counters on
    /// every read; this keeps the delta and the cumulative total consistent however the two calls
    /// are mixed).
    pub fn stats(&mut self) -> Result<Stats> {
        self.fetch_stats()?;
        Ok(std::mem::take(&mut self.stats_pending))
    }

    /// Kernel counters since the capture was opened, as 64-bit totals.
    pub fn cumulative_stats(&mut self) -> Result<Stats> {
        self.fetch_stats()?;
        Ok(self.stats_total)
    }

    /// Blocks missing between consecutive batches' sequence numbers (should stay 0).
    pub fn sequence_gaps(&self) -> u64 {
        self.cursor.gaps
    }

    /// Blocks whose header failed validation and were handed straight back (should stay 0).
    pub fn malformed_blocks(&self) -> u64 {
        self.cursor.malformed
    }

    /// The kernel's id of the fanout group this capture is in, if any (useful with
    /// [`FanoutFlags::UNIQUE_ID`](super::FanoutFlags::UNIQUE_ID)).
    pub fn fanout_group_id(&self) -> Option<u16> {
        if !self.in_fanout {
            return None;
        }
        // The kernel answers `id | type << 16 | flags << 24`, or 0 when not in a group, which is
        // also the answer for group 0 in hash mode without flags: membership is tracked here.
        let v: libc::c_int =
            sys::getsockopt(self.sock.as_fd(), libc::SOL_PACKET, libc::PACKET_FANOUT).ok()?;
        Some(v as u32 as u16)
    }
}

impl Capture {
    /// Sets the program of the fanout group this capture is in, for the program modes (the
    /// kernel takes it only from a member: the group must exist).
    pub(crate) fn set_fanout_program(&self, mode: &FanoutMode, group_id: u16) -> Result<()> {
        let result = match mode {
            FanoutMode::Cbpf(prog) => self.sock.set_fanout_cbpf(prog),
            FanoutMode::Ebpf(prog) => self.sock.set_fanout_ebpf(prog.as_fd()),
            _ => return Ok(()),
        };
        result.map_err(|e| match (mode, e.raw_os_error()) {
            (FanoutMode::Cbpf(_), Some(libc::EINVAL)) => Error::InvalidFilter(format!(
                "the kernel refused the fanout program of group {group_id} ({e}): it has an \
                 invalid opcode, jump or memory access, or divides by a constant 0"
            )),
            (FanoutMode::Ebpf(prog), Some(libc::EINVAL)) => Error::Fanout {
                group_id,
                reason: format!(
                    "the kernel refused eBPF program {} as the group's program ({e}): it must be \
                     a BPF_PROG_TYPE_SOCKET_FILTER program",
                    prog.id()
                ),
            },
            _ => Error::os("PACKET_FANOUT_DATA (setting the fanout program)", e),
        })
    }
}

impl AsFd for Capture {
    /// The packet socket, e.g. for registering with an event loop (readable when a block retires).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Batches may keep the ring mapping (and with it the socket) alive after this; make the
        // socket stop taking packets now so it does not hold traffic nobody will read.
        let _ = self.sock.attach_filter(&BpfProgram::reject_all());
    }
}
