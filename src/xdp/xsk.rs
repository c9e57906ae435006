//! [`XdpSocket`]: one AF_XDP socket with its own UMEM, RX and TX.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::attach::{AttachMode, XdpAttachment, XdpProgram, XskMap};
use super::batch::{DescPool, Shared, XdpBatch, XdpFrame};
use super::program::Match;
use super::socket::{BindMode, KERNEL_TX_BUDGET, Rings, XskSocket};
use super::umem::{Umem, UmemLayout};
use crate::error::{Error, Result};
use crate::frame::check_tx_frame;
use crate::iface::Interface;
use crate::sys::Epoll;

/// The TX budget unless set: one system call per 256 frames instead of per 32, while one kick
/// still returns to user space after ~0.3 ms of kernel work (veth, copy mode).
const DEFAULT_TX_BUDGET: u32 = 256;

/// What the epoll set watches the socket for.
const SOCKET_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLERR) as u32;

/// AF_XDP counters (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpStats {
    /// Frames dropped for lack of a fill-ring frame or RX-ring room (`rx_dropped`).
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Times the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty.
    pub rx_fill_ring_empty: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty: u64,
}

/// Configures and opens an [`XdpSocket`].
#[derive(Debug, Clone)]
pub struct XdpSocketBuilder {
    pub(crate) interface: String,
    pub(crate) queue: u32,
    pub(crate) frame_size: u32,
    pub(crate) frame_count: u32,
    pub(crate) rx_frames: Option<u32>,
    pub(crate) ring_size: u32,
    pub(crate) bind_mode: BindMode,
    pub(crate) need_wakeup: bool,
    pub(crate) huge_pages: bool,
    pub(crate) batch_size: usize,
    pub(crate) rx_coalesce: Duration,
    pub(crate) busy_retry: Duration,
    pub(crate) filter: Option<Match>,
    pub(crate) attach_mode: AttachMode,
    pub(crate) user_map: Option<Arc<XskMap>>,
    pub(crate) share_umem: bool,
    pub(crate) tx_budget: Option<u32>,
    pub(crate) tx_flush_every: u32,
}

/// How frames reach the sockets: our program, or the user's.
#[derive(Debug)]
enum Redirect {
    /// The built-in program, attached by us; detached when the last socket using it drops.
    Builtin {
        // Declared first: detach before the program fd closes.
        attachment: XdpAttachment,
        program: XdpProgram,
    },
    /// An XSKMAP the user's own program redirects into.
    User(Arc<XskMap>),
}

impl Redirect {
    fn map(&self) -> &XskMap {
        match self {
            Redirect::Builtin { program, .. } => program.xsk_map(),
            Redirect::User(map) => map,
        }
    }
}

impl XdpSocketBuilder {
    pub(crate) fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            queue: 0,
            frame_size: 2048,
            frame_count: 4096,
            rx_frames: None,
            ring_size: 2048,
            bind_mode: BindMode::Auto,
            need_wakeup: true,
            huge_pages: false,
            batch_size: 64,
            rx_coalesce: Duration::ZERO,
            busy_retry: Duration::from_secs(3),
            filter: None,
            attach_mode: AttachMode::Auto,
            user_map: None,
            share_umem: false,
            tx_budget: None,
            tx_flush_every: 64,
        }
    }

    /// With [`open_queues`](Self::open_queues): one UMEM for all the sockets, registered once
    /// (`XDP_SHARED_UMEM`), each socket owning `frame_count` frames of it (default off: one UMEM
    /// per socket). Frames still cannot move between sockets: `send_frame` takes frames received
    /// on the same socket.
    pub fn share_umem(mut self, on: bool) -> Self {
        self.share_umem = on;
        self
    }

    /// Redirect only frames that match (one ethertype, IP protocol, destination port); the rest
    /// go on to the kernel stack (default: every frame of the queue is redirected).
    pub fn filter(mut self, filter: Match) -> Self {
        self.filter = Some(filter);
        self
    }
    /// How the built-in program is attached (default [`AttachMode::Auto`]: native, else generic).
    pub fn attach_mode(mut self, mode: AttachMode) -> Self {
        self.attach_mode = mode;
        self
    }
    /// Use the XSKMAP of a program the caller loaded and attached (e.g. with aya) instead of the
    /// built-in program: the socket is inserted at its queue index on open and removed on drop.
    pub fn xsk_map(mut self, map: Arc<XskMap>) -> Self {
        self.user_map = Some(map);
        self
    }

    /// Opens the socket and makes its queue's frames reach it: loads and attaches the built-in
    /// program (or uses the caller's XSKMAP).
    pub fn open(self) -> Result<XdpSocket> {
        let queue = self.queue;
        Ok(self.open_queues([queue])?.remove(0))
    }

    /// Opens one socket per queue, all fed by one program. Each socket has its own UMEM, or with
    /// [`share_umem`](Self::share_umem) its own region of one shared UMEM.
    pub fn open_queues(self, queues: impl IntoIterator<Item = u32>) -> Result<Vec<XdpSocket>> {
        let queues: Vec<u32> = queues.into_iter().collect();
        let Some(&max_queue) = queues.iter().max() else {
            return Err(Error::InvalidConfig("no queue to open".into()));
        };
        let redirect = Arc::new(match &self.user_map {
            Some(map) => Redirect::User(map.clone()),
            None => {
                let program = XdpProgram::load_redirect((max_queue + 1).max(64), self.filter)?;
                let attachment = program.attach(&self.interface, self.attach_mode)?;
                Redirect::Builtin {
                    attachment,
                    program,
                }
            }
        });
        let mut sockets: Vec<XdpSocket> = Vec::with_capacity(queues.len());
        let mut regions = if self.share_umem {
            let rx_frames = self.rx_frames.unwrap_or(self.frame_count / 2);
            UmemLayout::regions(
                self.frame_size,
                self.frame_count,
                rx_frames,
                queues.len() as u32,
            )?
            .into_iter()
        } else {
            Vec::new().into_iter()
        };
        for q in queues {
            let b = self.clone().queue(q);
            let mut sock = match (regions.next(), sockets.first()) {
                (Some(region), None) => b.open_on(Umem::new(region, self.huge_pages)?, None)?,
                (Some(region), Some(first)) => {
                    let umem = first.shared.umem.share(region);
                    b.open_on(umem, Some(first))?
                }
                (None, _) => b.open_socket()?,
            };
            redirect.map().insert(q, &sock)?;
            sock.redirect = Some(redirect.clone());
            sockets.push(sock);
        }
        Ok(sockets)
    }

    /// RX/TX queue of the interface to bind (default 0).
    pub fn queue(mut self, queue: u32) -> Self {
        self.queue = queue;
        self
    }
    /// UMEM frame size: 2048 (default) or 4096.
    pub fn frame_size(mut self, bytes: u32) -> Self {
        self.frame_size = bytes;
        self
    }
    /// UMEM frame count (default 4096).
    pub fn frame_count(mut self, n: u32) -> Self {
        self.frame_count = n;
        self
    }
    /// Frames reserved for reception (default: half the UMEM); the rest serve TX.
    pub fn rx_frames(mut self, n: u32) -> Self {
        self.rx_frames = Some(n);
        self
    }
    /// Size of each of the four rings, a power of two (default 2048).
    pub fn ring_size(mut self, n: u32) -> Self {
        self.ring_size = n;
        self
    }
    /// Copy or zero-copy (default [`BindMode::Auto`]: zero-copy where the driver can).
    pub fn bind_mode(mut self, mode: BindMode) -> Self {
        self.bind_mode = mode;
        self
    }
    /// Use `XDP_USE_NEED_WAKEUP` so the kernel asks for syscalls only when needed (default on).
    pub fn need_wakeup(mut self, on: bool) -> Self {
        self.need_wakeup = on;
        self
    }
    /// Most frames one kick may transmit in copy mode (`XDP_MAX_TX_SKB_BUDGET`; default 256, or
    /// the TX ring's size if smaller; the kernel's own default is 32). Between 32 and
    /// [`ring_size`](Self::ring_size), else `open` fails with [`Error::InvalidConfig`]. Kernels
    /// before 6.17 lack the option and transmit 32 frames per kick: the socket opens anyway,
    /// `flush` kicks as often as needed, and [`XdpSocket::tx_budget`] reports 32.
    ///
    /// A larger budget saves system calls when many frames are queued (a `flush` of 2048 frames:
    /// 8 kicks instead of 64); it does not change the kernel's per-frame work, and the kernel
    /// does not give up the CPU during a kick (~1 us per frame on a veth).
    ///
    /// ```no_run
    /// # fn main() -> netring::Result<()> {
    /// let xsk = netring::xdp::XdpSocket::builder("eth0").tx_budget(256).open()?;
    /// println!("up to {} frames per kick", xsk.tx_budget());
    /// # Ok(())
    /// # }
    /// ```
    pub fn tx_budget(mut self, frames: u32) -> Self {
        self.tx_budget = Some(frames);
        self
    }
    /// Kick the kernel from [`try_send`](XdpSocket::try_send) / [`send`](XdpSocket::send) /
    /// [`send_frame`](XdpSocket::send_frame) once this many frames are queued since the last
    /// kick (default 64; 0: only [`flush`](XdpSocket::flush) kicks). Frames then leave in
    /// batches while they are being queued, as the `Sink` needs; call `flush` for the last few.
    ///
    /// Why 64: a sender that lets the whole TX pool fill before kicking (2048 frames by default,
    /// 4 MiB of UMEM) cycles through all of it, and the kernel copies each frame out of a cold
    /// cache line; kicking every 64 frames reuses the same few frames (the free list is
    /// last-in-first-out). On a veth in copy mode that is ~0.1 us per frame less (~808 vs ~908 ns
    /// of CPU per frame, `cargo bench --bench capture`).
    ///
    /// ```no_run
    /// # fn main() -> netring::Result<()> {
    /// // Larger batches per system call, for a sender that flushes by itself:
    /// let mut xsk = netring::xdp::XdpSocket::builder("eth0").tx_flush_every(256).open()?;
    /// xsk.send(&[0u8; 60])?;
    /// xsk.flush()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tx_flush_every(mut self, frames: u32) -> Self {
        self.tx_flush_every = frames;
        self
    }
    /// Back the UMEM with huge pages (default off; needs reserved huge pages, `vm.nr_hugepages`).
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }
    /// Most packets per batch (default 64).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Latency bound for RX coalescing (default zero: off). When frames are waiting but fewer than
    /// a batch, the reader lets them accumulate for up to this long before draining, so one wakeup
    /// serves many frames. In copy mode the kernel wakes the reader for every few frames, so this
    /// is the main CPU lever. On a veth, the benchmark's reader loop that waits the same way
    /// (`cargo bench --bench capture`, "coalesce") cut CPU per packet from ~1.1-1.7 us (off) to
    /// ~0.5 us at 50 us, ~0.17 us at 200 us and ~0.05 us at 1 ms.
    pub fn rx_coalesce(mut self, bound: Duration) -> Self {
        self.rx_coalesce = bound;
        self
    }

    /// Opens the socket alone: it transmits, but receives only once an XDP program redirects the
    /// queue to it (insert it into an [`XskMap`]). [`open`](Self::open) does that part too.
    pub fn open_socket(self) -> Result<XdpSocket> {
        let rx_frames = self.rx_frames.unwrap_or(self.frame_count / 2);
        let layout = UmemLayout::new(self.frame_size, self.frame_count, rx_frames)?;
        let umem = Umem::new(layout, self.huge_pages)?;
        self.open_on(umem, None)
    }

    /// Opens a socket on `umem` (its region of it). With `shared_with`, the UMEM is already
    /// registered by that socket and this one binds with `XDP_SHARED_UMEM`, with fill and
    /// completion rings of its own (the kernel requires them for another queue).
    fn open_on(self, umem: Umem, shared_with: Option<&XdpSocket>) -> Result<XdpSocket> {
        let iface = Interface::by_name(&self.interface)?;
        if !self.ring_size.is_power_of_two() || self.ring_size < 8 {
            return Err(Error::InvalidConfig(format!(
                "ring size {} must be a power of two, at least 8",
                self.ring_size
            )));
        }
        // Rings of 32 or fewer slots: the kernel's own budget already covers the whole ring.
        let tx_budget = match self.tx_budget {
            None if self.ring_size <= KERNEL_TX_BUDGET => None,
            None => Some(self.ring_size.min(DEFAULT_TX_BUDGET)),
            Some(b) if (KERNEL_TX_BUDGET..=self.ring_size).contains(&b) => Some(b),
            Some(b) => {
                return Err(Error::InvalidConfig(format!(
                    "TX budget {b} must be between {KERNEL_TX_BUDGET} and the ring size ({}): \
                     raise ring_size or lower tx_budget",
                    self.ring_size
                )));
            }
        };
        let layout = umem.layout;
        let sock = XskSocket::open()?;
        if shared_with.is_none() {
            sock.register_umem(&umem)?;
        }
        // The fill ring holds every RX frame; the completion ring every TX frame.
        let fill_size = layout.rx_frames.next_power_of_two();
        let comp_size = layout.tx_frames.next_power_of_two();
        let mut rings = sock.setup_rings(fill_size, comp_size, self.ring_size, self.ring_size)?;
        let tx_budget = match tx_budget {
            Some(b) if sock.set_tx_budget(b)? => b,
            _ => KERNEL_TX_BUDGET,
        };
        let initial: Vec<u64> = layout.rx_pool().map(|f| layout.frame_addr(f)).collect();
        let filled = rings.fill.produce(&initial);
        debug_assert_eq!(filled, initial.len());
        let mode = match shared_with {
            None => sock.bind(
                &self.interface,
                iface.index(),
                self.queue,
                self.bind_mode,
                self.need_wakeup,
                self.busy_retry,
            )?,
            Some(first) => {
                sock.bind_shared(
                    &self.interface,
                    iface.index(),
                    self.queue,
                    first.sock.as_fd(),
                    self.busy_retry,
                )?;
                first.mode
            }
        };
        let epoll = Epoll::watch(sock.as_fd(), SOCKET_EVENTS).map_err(|e| Error::os("epoll", e))?;
        // Copy mode: off the epoll set until someone waits (see `XdpSocket::watch`).
        // Zero-copy completions wake per batch, not per frame: stay on it.
        let watched = mode == BindMode::ZeroCopy || sock.is_zero_copy();
        if !watched {
            epoll
                .unwatch_socket(sock.as_fd())
                .map_err(|e| Error::os("epoll_ctl", e))?;
        }
        let tx_free = layout.tx_pool().map(|f| layout.frame_addr(f)).collect();
        Ok(XdpSocket {
            shared: Arc::new(Shared {
                umem,
                pool: DescPool::default(),
                epoll,
                waiting: AtomicBool::new(false),
            }),
            rings,
            tx_free,
            scratch: Vec::with_capacity((layout.rx_frames + layout.tx_frames) as usize),
            tx_scratch: Vec::with_capacity(self.ring_size as usize),
            tx_in_flight: 0,
            tx_queued: 0,
            tx_budget,
            tx_flush_every: self.tx_flush_every,
            watched,
            keep_watched: watched,
            batch_size: self.batch_size,
            rx_coalesce: self.rx_coalesce,
            coalesce_until: None,
            mode,
            queue: self.queue,
            iface,
            redirect: None,
            lenders: Vec::new(),
            sock,
        })
    }
}

/// An AF_XDP socket on one queue of an interface, with its own UMEM.
///
/// RX comes out as owned zero-copy [`XdpBatch`]es whose frames return to the fill ring when they
/// drop; TX copies frames into free UMEM frames (or sends a received [`XdpFrame`] as it is).
#[derive(Debug)]
pub struct XdpSocket {
    sock: XskSocket,
    rings: Rings,
    shared: Arc<Shared>,
    /// Free TX-pool frames.
    tx_free: Vec<u64>,
    /// Recycled RX frames on their way to the fill ring / completions being sorted.
    scratch: Vec<u64>,
    /// TX descriptors waiting for room on the TX ring.
    tx_scratch: Vec<libc::xdp_desc>,
    /// Frames on the TX ring or in flight, not yet completed.
    tx_in_flight: u32,
    /// Frames put on the TX ring since the last kick.
    tx_queued: u32,
    /// Most frames one copy-mode kick transmits.
    tx_budget: u32,
    /// Kick once this many frames are queued (0: only `flush` kicks).
    tx_flush_every: u32,
    /// The socket is on the epoll set (see [`watch`](Self::watch)).
    watched: bool,
    /// It stays there: zero-copy, or someone waited for RX.
    keep_watched: bool,
    batch_size: usize,
    rx_coalesce: Duration,
    /// While coalescing: when the frames waiting on the RX ring must be drained at the latest.
    coalesce_until: Option<Instant>,
    mode: BindMode,
    queue: u32,
    iface: Interface,
    /// The program feeding this socket, shared with sockets on other queues.
    redirect: Option<Arc<Redirect>>,
    /// Sharing a UMEM: the owners of other regions whose RX frames this socket forwarded, by
    /// region, so each frame goes back to its owner's fill ring when its transmission completes.
    lenders: Vec<Option<Arc<Shared>>>,
}

impl XdpSocket {
    /// A builder for a socket on `interface`.
    pub fn builder(interface: &str) -> XdpSocketBuilder {
        XdpSocketBuilder::new(interface)
    }

    /// The bind mode in effect: [`BindMode::Copy`] or [`BindMode::ZeroCopy`].
    pub fn bind_mode(&self) -> BindMode {
        if self.sock.is_zero_copy() {
            BindMode::ZeroCopy
        } else {
            self.mode
        }
    }

    /// Most frames one copy-mode kick transmits: the [`tx_budget`](XdpSocketBuilder::tx_budget)
    /// in effect (32 on kernels without `XDP_MAX_TX_SKB_BUDGET`).
    pub fn tx_budget(&self) -> u32 {
        self.tx_budget
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The interface, as it was when the socket was opened.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// How the built-in program was attached (`Native` or `Generic`), if this socket uses it.
    pub fn attach_mode(&self) -> Option<AttachMode> {
        match self.redirect.as_deref()? {
            Redirect::Builtin { attachment, .. } => Some(attachment.mode()),
            Redirect::User(_) => None,
        }
    }

    /// Puts recycled RX frames back on the fill ring.
    fn refill(&mut self) {
        self.shared.umem.take_recycled(&mut self.scratch);
        if !self.scratch.is_empty() {
            let n = self.rings.fill.produce(&self.scratch);
            self.scratch.drain(..n);
        }
        // Only zero-copy drivers wait for a syscall to refill their queue; in copy mode the
        // kernel fills from the ring by itself, and the syscall would be pure overhead.
        if self.mode == BindMode::ZeroCopy && self.rings.fill.needs_wakeup() {
            self.sock.kick_rx();
        }
    }

    /// Takes up to one batch of received frames without blocking.
    pub fn try_next_batch(&mut self) -> Result<Option<XdpBatch>> {
        self.refill();
        if !self.ready_to_drain()? {
            return Ok(None);
        }
        let mut descs = self.shared.pool.take(self.batch_size);
        descs.resize(
            self.batch_size,
            libc::xdp_desc {
                addr: 0,
                len: 0,
                options: 0,
            },
        );
        let n = self.rings.rx.consume(&mut descs);
        descs.truncate(n);
        let layout = self.shared.umem.layout;
        // The kernel validated these, but a descriptor outside the UMEM would make the batch's
        // slices unsound: drop such a descriptor rather than trust it.
        descs.retain(|d| layout.check(d.addr, d.len));
        Ok(Some(XdpBatch::new(self.shared.clone(), descs)))
    }

    /// True if the RX ring should be drained now: it holds a batch, or frames whose coalescing
    /// bound has passed. Starts the bound (and the epoll timer that ends it) otherwise.
    fn ready_to_drain(&mut self) -> Result<bool> {
        let available = self.rings.rx.available() as usize;
        if available == 0 {
            return Ok(false);
        }
        if self.rx_coalesce.is_zero() || available >= self.batch_size {
            self.coalesce_until = None;
            return Ok(true);
        }
        let now = Instant::now();
        match self.coalesce_until {
            Some(until) if now >= until => {
                self.coalesce_until = None;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                self.coalesce_until = Some(now + self.rx_coalesce);
                self.arm_coalesce_timer()?;
                Ok(false)
            }
        }
    }

    /// (Re-)arms the epoll timer for the end of the coalescing bound, if one is running: the timer
    /// is shared with release wakeups, which may have used it meanwhile.
    fn arm_coalesce_timer(&self) -> Result<()> {
        if let Some(until) = self.coalesce_until {
            let left = until.saturating_duration_since(Instant::now());
            self.shared
                .epoll
                .arm_timer(left)
                .map_err(|e| Error::os("timerfd_settime", e))?;
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for received frames.
    pub fn next_batch(&mut self, timeout: Option<Duration>) -> Result<Option<XdpBatch>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(b) = self.try_next_batch()? {
                return Ok(Some(b));
            }
            let remaining = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    Some(d - now)
                }
                None => None,
            };
            self.prepare_to_wait();
            let waited = self.wait_events(remaining);
            self.shared.waiting.store(false, Ordering::SeqCst);
            waited?;
        }
    }

    /// Before waiting for RX events: asks batches and frames released from now on (on any
    /// thread) to wake the waiter, then puts those released until now on the fill ring.
    pub(crate) fn prepare_to_wait(&mut self) {
        if self.watch(true).is_err() {
            // Off the epoll set, only the timer ends a wait: make it end soon, and retry then.
            let _ = self.shared.epoll.arm_timer(Duration::from_millis(1));
        }
        self.shared.waiting.store(true, Ordering::SeqCst);
        self.refill();
        // Best effort: if re-arming fails, the next RX event still drains the ring.
        let _ = self.arm_coalesce_timer();
    }

    fn wait_events(&mut self, timeout: Option<Duration>) -> Result<()> {
        let ev = self
            .shared
            .epoll
            .wait(timeout)
            .map_err(|e| Error::os("epoll_wait", e))?;
        if ev.socket & libc::EPOLLERR as u32 != 0 {
            if let Some(e) = self.sock.take_error()? {
                return Err(Error::os("AF_XDP socket", e));
            }
        }
        Ok(())
    }

    /// The descriptor async runtimes watch (readable while an event is pending).
    pub(crate) fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.shared.epoll.as_fd()
    }

    /// Collects pending events without blocking.
    pub(crate) fn consume_events(&mut self) -> Result<()> {
        self.wait_events(Some(Duration::ZERO))
    }

    /// Sorts completed TX frames: TX-pool frames back to the free list, forwarded RX frames back
    /// to the fill ring.
    fn reclaim(&mut self) {
        // Called for every frame sent: most calls find nothing, and should cost no more than
        // this one load (not the zeroing of the buffer below).
        if self.rings.completion.available() == 0 {
            return;
        }
        let start = self.scratch.len();
        let mut buf = [0u64; 64];
        loop {
            let n = self.rings.completion.consume(&mut buf);
            if n == 0 {
                break;
            }
            self.tx_in_flight -= n as u32;
            let layout = self.shared.umem.layout;
            for &addr in &buf[..n] {
                let base = layout.frame_addr(layout.frame_of(addr));
                let region = layout.region_of(base);
                if region != layout.own_region() {
                    // Forwarded from a socket sharing the UMEM: back to that socket.
                    if let Some(Some(owner)) = self.lenders.get(region) {
                        owner.recycle(std::iter::once(base));
                    }
                } else if layout.is_rx_frame(base) {
                    self.scratch.push(base);
                } else {
                    self.tx_free.push(base);
                }
            }
        }
        if self.scratch.len() > start {
            let n = self.rings.fill.produce(&self.scratch);
            self.scratch.drain(..n);
        }
    }

    /// Moves pending descriptors onto the TX ring.
    fn push_tx(&mut self) {
        if !self.tx_scratch.is_empty() {
            let n = self.rings.tx.produce(&self.tx_scratch);
            self.tx_scratch.drain(..n);
            self.tx_queued += n as u32;
        }
    }

    /// Puts the socket on the epoll set before a wait; with `keep`, for good (RX waiters, whose
    /// wakeups must not depend on TX).
    ///
    /// Why it is not always there: while it is, every frame a copy-mode socket transmits runs a
    /// wakeup when its socket buffer is freed (`sock_wfree` -> `sk_write_space` -> the epoll
    /// callback, under two locks): ~0.1 us per frame, ~8% of the whole per-frame cost on a veth
    /// (measured with `perf`, `cargo bench --bench capture`). A socket that only transmits waits
    /// rarely, because copy mode completes frames within the kick.
    fn watch(&mut self, keep: bool) -> Result<()> {
        self.keep_watched |= keep;
        if !self.watched {
            self.shared
                .epoll
                .watch_socket(self.sock.as_fd(), SOCKET_EVENTS)
                .map_err(|e| Error::os("epoll_ctl", e))?;
            self.watched = true;
        }
        Ok(())
    }

    /// Takes the socket off the epoll set again after a TX wait, unless it must stay.
    fn unwatch(&mut self) {
        if self.watched
            && !self.keep_watched
            && self.shared.epoll.unwatch_socket(self.sock.as_fd()).is_ok()
        {
            self.watched = false;
        }
    }

    /// True if a frame can be queued now. If not, the caller may wait for a completion: the
    /// socket goes on the epoll set (an async sender parks on it).
    pub(crate) fn can_send(&mut self) -> bool {
        self.reclaim();
        let room = !self.tx_free.is_empty() && self.tx_scratch.len() < self.rings.tx_capacity();
        if room {
            if self.watched && !self.keep_watched {
                self.unwatch();
            }
        } else if self.watch(false).is_err() {
            // Unwatched, a waiter would depend on the timer alone: end its wait soon.
            let _ = self.shared.epoll.arm_timer(Duration::from_millis(1));
        }
        room
    }

    /// Copies `frame` into a free UMEM frame and queues it. `false` if no frame is free. Queued
    /// frames leave at the next [`flush`](Self::flush), or once
    /// [`tx_flush_every`](XdpSocketBuilder::tx_flush_every) frames are queued.
    pub fn try_send(&mut self, frame: &[u8]) -> Result<bool> {
        check_tx_frame(
            frame,
            frame.len(),
            self.shared.umem.layout.frame_size as usize,
            self.iface.mtu(),
        )?;
        if !self.can_send() {
            return Ok(false);
        }
        let addr = self.tx_free.pop().expect("checked above");
        // SAFETY: `addr` is a free TX-pool frame: on no kernel ring, referenced nowhere else.
        unsafe { self.shared.umem.slice_mut(addr, frame.len() as u32) }.copy_from_slice(frame);
        self.queue_desc(addr, frame.len() as u32);
        Ok(true)
    }

    fn queue_desc(&mut self, addr: u64, len: u32) {
        self.tx_scratch.push(libc::xdp_desc {
            addr,
            len,
            options: 0,
        });
        self.tx_in_flight += 1;
        self.push_tx();
        if self.tx_flush_every > 0 && self.tx_queued >= self.tx_flush_every {
            // Best effort: the frame is queued either way, and a failing kick fails again, with
            // its error, at the caller's next flush.
            let _ = self.flush();
        }
    }

    /// Transmits a received frame as it is, without a copy. It must come from this socket's UMEM
    /// or, with [`share_umem`](XdpSocketBuilder::share_umem), from any socket sharing it: the
    /// frame then goes back to its own socket's fill ring once its transmission completes here.
    pub fn send_frame(&mut self, frame: XdpFrame) -> Result<()> {
        let (shared, addr, len) = frame.into_raw();
        if !Arc::ptr_eq(&shared, &self.shared) {
            if !shared.umem.same_area(&self.shared.umem) {
                // Not in our UMEM: give it back to its owner and refuse.
                let layout = shared.umem.layout;
                shared.recycle(std::iter::once(layout.frame_addr(layout.frame_of(addr))));
                return Err(Error::InvalidConfig(
                    "the frame belongs to another socket's UMEM: copy it with send(), or open \
                     both sockets with share_umem(true)"
                        .into(),
                ));
            }
            let region = self.shared.umem.layout.region_of(addr);
            if self.lenders.len() <= region {
                self.lenders.resize(region + 1, None);
            }
            self.lenders[region].get_or_insert(shared);
        }
        self.queue_desc(addr, len);
        Ok(())
    }

    /// Copies `frame` into a free UMEM frame, waiting for one if needed, and queues it.
    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        loop {
            if self.try_send(frame)? {
                return Ok(());
            }
            self.flush()?;
            // Copy mode usually completes frames within the kick: no need to wait then.
            if !self.can_send() {
                self.wait_events(Some(Duration::from_millis(5)))?;
            }
        }
    }

    /// Kicks the kernel to transmit what is on the TX ring.
    pub fn flush(&mut self) -> Result<()> {
        self.push_tx();
        // Nothing queued since the last kick and nothing left on the ring: no syscall.
        if self.tx_queued > 0 || self.rings.tx.outstanding() > 0 {
            self.tx_queued = 0;
            // A copy-mode kick sends at most the socket's TX budget (`tx_budget`: the ring's
            // size, or 32 on kernels without `XDP_MAX_TX_SKB_BUDGET`) and leaves the rest on the
            // ring until the next kick: kick again while the kernel keeps taking frames.
            // (Zero-copy drivers send asynchronously: no progress shows, and the loop ends after
            // one kick.)
            let mut left = self.rings.tx.outstanding();
            loop {
                self.sock.kick_tx()?;
                let now = self.rings.tx.outstanding();
                if now == 0 || now >= left {
                    break;
                }
                left = now;
            }
        }
        self.reclaim();
        if self.tx_in_flight > 0 {
            // The caller may wait for these to complete (wait_sent, an async flush).
            self.watch(false)?;
        } else {
            self.unwatch();
        }
        Ok(())
    }

    /// Frames queued or in flight, not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.tx_in_flight
    }

    /// Flushes, then waits up to `timeout` until every queued frame has completed.
    pub fn wait_sent(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.flush()?;
            if self.tx_in_flight == 0 {
                return Ok(true);
            }
            let step = Duration::from_millis(5);
            let step = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    (d - now).min(step)
                }
                None => step,
            };
            self.wait_events(Some(step))?;
        }
    }

    /// Kernel counters (cumulative since the socket was opened).
    pub fn stats(&self) -> Result<XdpStats> {
        let s = self.sock.statistics()?;
        Ok(XdpStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
        })
    }
}

impl Drop for XdpSocket {
    fn drop(&mut self) {
        if let Some(r) = &self.redirect {
            // Frames for this queue go back to the kernel stack (XDP_PASS) from now on.
            let _ = r.map().remove(self.queue);
        }
    }
}

impl AsFd for XdpSocket {
    /// The AF_XDP socket (e.g. to insert into an XSKMAP).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
