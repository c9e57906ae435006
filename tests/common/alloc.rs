//! A counting global allocator: counts, per thread, the allocations made while a window is open.
//!
//! A test binary that counts declares it as its allocator itself:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: common::alloc::Counting = common::alloc::Counting;
//! ```
//!
//! [`allocations`] counts what one closure allocates. [`Window`] counts a stretch of code and,
//! within it, what runs "in the loop" ([`in_loop`], [`InLoop`]), keeping the backtrace of the
//! first allocation there in [`FIRST`].
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// Forwards to the system allocator, counting on the threads that have a [`Window`] open.
pub struct Counting;

thread_local! {
    /// A counting window is open on this thread.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// The receiving code is running (see [`InLoop`]).
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    static ALL: Cell<u64> = const { Cell::new(0) };
    static LOOP: Cell<u64> = const { Cell::new(0) };
    static LOOP_BYTES: Cell<u64> = const { Cell::new(0) };
    /// Keep the backtrace of this thread's next allocation in the loop in [`FIRST`].
    static TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Backtrace of the first allocation in the loop of a window (for the failure message; one
/// window at a time is expected to trace).
pub static FIRST: Mutex<Option<String>> = Mutex::new(None);

fn note(size: usize) {
    if !COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        return;
    }
    COUNTING.with(|c| c.set(false)); // what follows may allocate; don't count it
    ALL.with(|a| a.set(a.get() + 1));
    if IN_LOOP.with(|l| l.get()) {
        LOOP.with(|a| a.set(a.get() + 1));
        LOOP_BYTES.with(|b| b.set(b.get() + size as u64));
        if TRACE.with(|t| t.replace(false)) {
            if let Ok(mut first) = FIRST.try_lock() {
                *first = Some(format!(
                    "{size} bytes at\n{}",
                    std::backtrace::Backtrace::force_capture()
                ));
            }
        }
    }
    COUNTING.with(|c| c.set(true));
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting only touches
// const-initialized thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What a window counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Every allocation on the thread.
    pub all: u64,
    /// Allocations while the receiving code ran, and their bytes.
    pub in_loop: u64,
    pub in_loop_bytes: u64,
}

/// Counts this thread's allocations from here until `stop` (also keeping the backtrace of the
/// first one in the loop).
pub struct Window;

impl Window {
    pub fn start() -> Self {
        *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = None;
        TRACE.with(|t| t.set(true));
        ALL.with(|a| a.set(0));
        LOOP.with(|a| a.set(0));
        LOOP_BYTES.with(|b| b.set(0));
        COUNTING.with(|c| c.set(true));
        Window
    }

    pub fn stop(self) -> Counts {
        COUNTING.with(|c| c.set(false));
        TRACE.with(|t| t.set(false));
        Counts {
            all: ALL.with(|a| a.get()),
            in_loop: LOOP.with(|a| a.get()),
            in_loop_bytes: LOOP_BYTES.with(|b| b.get()),
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        COUNTING.with(|c| c.set(false));
    }
}

/// Allocations `f` makes on this thread.
pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let w = Window::start();
    let v = f();
    (v, w.stop().all)
}

/// Marks the receiving code as running on this thread until dropped.
pub struct LoopGuard(bool);

pub fn in_loop() -> LoopGuard {
    LoopGuard(IN_LOOP.with(|l| l.replace(true)))
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        IN_LOOP.with(|l| l.set(self.0));
    }
}

/// A future whose polls are "in the loop"; what the executor does between polls is not.
pub struct InLoop<F>(pub F);

impl<F: Future + Unpin> Future for InLoop<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _g = in_loop();
        Pin::new(&mut self.0).poll(cx)
    }
}
