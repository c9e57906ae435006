//! AF_XDP single-producer/single-consumer rings (fill, completion, RX, TX).
//!
//! Each ring is a power-of-two array of descriptors plus a producer and a consumer index, both
//! free-running `u32`s, shared with the kernel. We are the producer of the fill and TX rings and
//! the consumer of the RX and completion rings. The producer writes descriptors, then publishes
//! them with a release store of the producer index; the consumer reads the producer index with an
//! acquire load, reads descriptors, then gives the slots back with a release store of the consumer
//! index. Cached copies of the other side's index keep the shared cache lines cold.
//!
//! [`RingMemory`] can be backed by plain memory, so the index logic is unit-tested without a kernel.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::Mmap;

/// Where a ring's parts live inside its mapping (from `XDP_MMAP_OFFSETS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingOffsets {
    pub producer: usize,
    pub consumer: usize,
    pub flags: usize,
    pub desc: usize,
}

impl From<libc::xdp_ring_offset> for RingOffsets {
    fn from(o: libc::xdp_ring_offset) -> Self {
        Self {
            producer: o.producer as usize,
            consumer: o.consumer as usize,
            flags: o.flags as usize,
            desc: o.desc as usize,
        }
    }
}

/// A descriptor type a ring carries: `u64` UMEM addresses (fill, completion) or `xdp_desc` (RX, TX).
///
/// # Safety
/// Implementors must be plain data valid for any bit pattern, with the kernel's layout.
pub(crate) unsafe trait Desc: Copy {}
// SAFETY: a plain integer.
unsafe impl Desc for u64 {}
// SAFETY: repr(C) struct of integers (addr u64, len u32, options u32).
unsafe impl Desc for libc::xdp_desc {}

/// One mapped ring: the mapping and typed views of its indices and descriptors.
#[derive(Debug)]
pub(crate) struct RingMemory<T: Desc> {
    mem: Mmap,
    off: RingOffsets,
    size: u32,
    _desc: PhantomData<T>,
}

// SAFETY: the mapping is plain memory; access discipline is enforced by the owning ring type,
// which is used from one thread at a time (`&mut self` on every operation).
unsafe impl<T: Desc> Send for RingMemory<T> {}
// SAFETY: shared references only read the indices atomically.
unsafe impl<T: Desc> Sync for RingMemory<T> {}

impl<T: Desc> RingMemory<T> {
    /// Wraps a mapping holding a ring of `size` descriptors laid out as `off` says.
    pub(crate) fn new(mem: Mmap, off: RingOffsets, size: u32) -> Self {
        assert!(size.is_power_of_two());
        let desc_end = off.desc + size as usize * std::mem::size_of::<T>();
        assert!(
            desc_end <= mem.len(),
            "ring descriptors outside the mapping"
        );
        for o in [off.producer, off.consumer, off.flags] {
            assert!(
                o % 4 == 0 && o + 4 <= mem.len(),
                "ring index outside the mapping"
            );
        }
        assert!(off.desc % std::mem::align_of::<T>() == 0);
        Self {
            mem,
            off,
            size,
            _desc: PhantomData,
        }
    }

    /// A ring over plain memory, for tests: indices first, descriptors after.
    #[cfg(test)]
    pub(crate) fn anonymous(size: u32) -> Self {
        let off = RingOffsets {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        let len = off.desc + size as usize * std::mem::size_of::<T>();
        Self::new(Mmap::anonymous(len).unwrap(), off, size)
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        // SAFETY: `at` is one of the offsets checked in `new` (in bounds, 4-byte aligned) and the
        // word is only accessed atomically on our side.
        unsafe { &*(self.mem.as_ptr().add(at) as *const AtomicU32) }
    }

    pub(crate) fn producer(&self) -> &AtomicU32 {
        self.word(self.off.producer)
    }

    pub(crate) fn consumer(&self) -> &AtomicU32 {
        self.word(self.off.consumer)
    }

    pub(crate) fn flags(&self) -> &AtomicU32 {
        self.word(self.off.flags)
    }

    fn slot(&self, index: u32) -> *mut T {
        let i = (index & (self.size - 1)) as usize;
        // SAFETY: i < size and the descriptor array was checked to fit the mapping in `new`.
        unsafe {
            self.mem
                .as_ptr()
                .add(self.off.desc + i * std::mem::size_of::<T>())
                .cast::<T>()
        }
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }
}

/// Our side of a ring we produce into (fill, TX).
#[derive(Debug)]
pub(crate) struct Producer<T: Desc> {
    ring: RingMemory<T>,
    /// Next index we will write.
    cached_prod: u32,
    /// Consumer index + size, as last read: we may write up to (not including) this index.
    cached_limit: u32,
}

impl<T: Desc> Producer<T> {
    pub(crate) fn new(ring: RingMemory<T>) -> Self {
        let prod = ring.producer().load(Ordering::Relaxed);
        let cons = ring.consumer().load(Ordering::Acquire);
        let size = ring.size();
        Self {
            ring,
            cached_prod: prod,
            cached_limit: cons.wrapping_add(size),
        }
    }

    /// Free slots, re-reading the consumer index only when the cached view has fewer than `want`.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_limit.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // Acquire: the kernel's reads of the slots it released happen-before our rewrites.
        let cons = self.ring.consumer().load(Ordering::Acquire);
        self.cached_limit = cons.wrapping_add(self.ring.size());
        self.cached_limit.wrapping_sub(self.cached_prod)
    }

    /// Writes descriptors from `items` into free slots and publishes them. Returns how many were
    /// written (fewer than `items.len()` if the ring is short of room).
    pub(crate) fn produce(&mut self, items: &[T]) -> usize {
        let n = (self.free(items.len() as u32) as usize).min(items.len());
        for (k, item) in items[..n].iter().enumerate() {
            // SAFETY: the slot is between the producer index and the consumer's limit, so the
            // kernel is not reading it; `slot` keeps the pointer in bounds.
            unsafe {
                self.ring
                    .slot(self.cached_prod.wrapping_add(k as u32))
                    .write(*item)
            };
        }
        if n > 0 {
            self.cached_prod = self.cached_prod.wrapping_add(n as u32);
            // Release: the descriptors are visible before the kernel sees the new index.
            self.ring
                .producer()
                .store(self.cached_prod, Ordering::Release);
        }
        n
    }

    /// Descriptors published and not yet consumed by the kernel.
    pub(crate) fn outstanding(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// True if the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.ring.flags().load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Descriptors the ring holds.
    pub(crate) fn size(&self) -> u32 {
        self.ring.size()
    }

    #[cfg(test)]
    pub(crate) fn memory(&self) -> &RingMemory<T> {
        &self.ring
    }
}

/// Our side of a ring we consume from (RX, completion).
#[derive(Debug)]
pub(crate) struct Consumer<T: Desc> {
    ring: RingMemory<T>,
    /// Next index we will read.
    cached_cons: u32,
    /// Producer index as last read.
    cached_prod: u32,
}

impl<T: Desc> Consumer<T> {
    pub(crate) fn new(ring: RingMemory<T>) -> Self {
        let cons = ring.consumer().load(Ordering::Relaxed);
        let prod = ring.producer().load(Ordering::Acquire);
        Self {
            ring,
            cached_cons: cons,
            cached_prod: prod,
        }
    }

    /// Descriptors ready to read, re-reading the producer index when the cached view is empty.
    pub(crate) fn available(&mut self) -> u32 {
        let n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n > 0 {
            return n;
        }
        // Acquire: the kernel's descriptor (and frame) writes happen-before our reads.
        self.cached_prod = self.ring.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Reads up to `out.len()` descriptors into `out` and releases their slots. Returns how many.
    pub(crate) fn consume(&mut self, out: &mut [T]) -> usize {
        let n = (self.available() as usize).min(out.len());
        for (k, o) in out[..n].iter_mut().enumerate() {
            // SAFETY: the slot is between the consumer and producer indices: published by the
            // kernel, not yet released by us, so the kernel does not write it now.
            *o = unsafe {
                self.ring
                    .slot(self.cached_cons.wrapping_add(k as u32))
                    .read()
            };
        }
        if n > 0 {
            self.cached_cons = self.cached_cons.wrapping_add(n as u32);
            // Release: our reads of the descriptors happen-before the kernel reuses the slots.
            self.ring
                .consumer()
                .store(self.cached_cons, Ordering::Release);
        }
        n
    }

    /// True if the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`).
    #[allow(dead_code)]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.ring.flags().load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    #[cfg(test)]
    pub(crate) fn memory(&self) -> &RingMemory<T> {
        &self.ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the kernel's side of a ring we produce into: consume `n` descriptors.
    fn kernel_consume(ring: &RingMemory<u64>, n: u32) -> Vec<u64> {
        let cons = ring.consumer().load(Ordering::Acquire);
        let prod = ring.producer().load(Ordering::Acquire);
        let n = n.min(prod.wrapping_sub(cons));
        let out = (0..n)
            // SAFETY (test): published slots, read once.
            .map(|k| unsafe { ring.slot(cons.wrapping_add(k)).read() })
            .collect();
        ring.consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
        out
    }

    /// Plays the kernel's side of a ring we consume from: produce `items`.
    fn kernel_produce(ring: &RingMemory<u64>, items: &[u64]) {
        let prod = ring.producer().load(Ordering::Acquire);
        for (k, v) in items.iter().enumerate() {
            // SAFETY (test): slots beyond the producer index belong to the producer.
            unsafe { ring.slot(prod.wrapping_add(k as u32)).write(*v) };
        }
        ring.producer()
            .store(prod.wrapping_add(items.len() as u32), Ordering::Release);
    }

    #[test]
    fn producer_fills_up_to_size_and_reuses_released_slots() {
        let mut p = Producer::new(RingMemory::<u64>::anonymous(8));
        assert_eq!(p.free(1), 8);
        assert_eq!(p.produce(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 8);
        assert_eq!(p.produce(&[11]), 0);
        assert_eq!(p.outstanding(), 8);
        assert_eq!(kernel_consume(p.memory(), 3), vec![1, 2, 3]);
        assert_eq!(p.produce(&[11, 12, 13, 14]), 3);
        assert_eq!(
            kernel_consume(p.memory(), 100),
            vec![4, 5, 6, 7, 8, 11, 12, 13]
        );
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn consumer_sees_only_published_descriptors() {
        let mut c = Consumer::new(RingMemory::<u64>::anonymous(4));
        let mut out = [0u64; 8];
        assert_eq!(c.consume(&mut out), 0);
        kernel_produce(c.memory(), &[10, 20, 30]);
        assert_eq!(c.consume(&mut out[..2]), 2);
        assert_eq!(&out[..2], &[10, 20]);
        assert_eq!(c.consume(&mut out), 1);
        assert_eq!(out[0], 30);
        assert_eq!(c.memory().consumer().load(Ordering::Acquire), 3);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let ring = RingMemory::<u64>::anonymous(4);
        ring.producer().store(u32::MAX - 1, Ordering::Relaxed);
        ring.consumer().store(u32::MAX - 1, Ordering::Relaxed);
        let mut p = Producer::new(ring);
        for round in 0..5u64 {
            assert_eq!(p.produce(&[round, round + 100, round + 200]), 3);
            assert_eq!(
                kernel_consume(p.memory(), 3),
                vec![round, round + 100, round + 200]
            );
        }
        assert_eq!(p.memory().producer().load(Ordering::Relaxed), 13);
    }

    #[test]
    fn need_wakeup_flag_is_read_from_the_ring() {
        let p = Producer::new(RingMemory::<u64>::anonymous(4));
        assert!(!p.needs_wakeup());
        p.memory()
            .flags()
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Release);
        assert!(p.needs_wakeup());
    }

    /// A tiny deterministic PRNG (xorshift64*) for the randomized tests below.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform-ish in `0..n` (`n > 0`).
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A ring of `size` whose indices both start at a random point (often just before wrapping).
    fn random_ring<T: Desc>(rng: &mut XorShift, size: u32) -> (RingMemory<T>, u32) {
        let ring = RingMemory::<T>::anonymous(size);
        let start = match rng.below(3) {
            0 => 0,
            1 => u32::MAX - rng.below(2 * size as usize + 1) as u32,
            _ => rng.next() as u32,
        };
        ring.producer().store(start, Ordering::Relaxed);
        ring.consumer().store(start, Ordering::Relaxed);
        (ring, start)
    }

    /// Encodes a test value as a descriptor and back, so both descriptor types run the same test.
    trait TestDesc: Desc {
        fn enc(v: u64) -> Self;
        fn dec(self) -> u64;
    }
    impl TestDesc for u64 {
        fn enc(v: u64) -> Self {
            v
        }
        fn dec(self) -> u64 {
            self
        }
    }
    impl TestDesc for libc::xdp_desc {
        fn enc(v: u64) -> Self {
            libc::xdp_desc {
                addr: v,
                len: (v as u32) ^ 0x5a5a,
                options: (v >> 7) as u32,
            }
        }
        fn dec(self) -> u64 {
            assert_eq!(self.len, (self.addr as u32) ^ 0x5a5a, "torn descriptor");
            assert_eq!(self.options, (self.addr >> 7) as u32, "torn descriptor");
            self.addr
        }
    }

    /// Random produce / kernel-consume sequences on a ring we produce into, against a model queue.
    fn drive_producer<T: TestDesc>(seed: u64) -> [u64; 3] {
        let mut rng = XorShift::new(seed);
        let mut ops = [0u64; 3];
        for round in 0..200 {
            let size = 1u32 << rng.below(7);
            let (ring, start) = random_ring::<T>(&mut rng, size);
            let mut p = Producer::new(ring);
            let mut model = std::collections::VecDeque::new();
            let (mut next_val, mut produced, mut consumed) = (1u64, 0u32, 0u32);
            for step in 0..300 {
                let ctx = format!("seed {seed:#x} round {round} step {step} size {size}");
                match rng.below(5) {
                    0 | 1 => {
                        ops[0] += 1;
                        let k = rng.below(2 * size as usize + 1);
                        let items: Vec<T> = (0..k as u64).map(|i| T::enc(next_val + i)).collect();
                        let n = p.produce(&items);
                        assert_eq!(n, k.min(size as usize - model.len()), "{ctx}");
                        model.extend((0..n as u64).map(|i| next_val + i));
                        next_val += k as u64;
                        produced = produced.wrapping_add(n as u32);
                    }
                    2 | 3 => {
                        // The kernel consumes some (reads what is published, then frees slots).
                        ops[1] += 1;
                        let ring = p.memory();
                        let cons = ring.consumer().load(Ordering::Acquire);
                        let prod = ring.producer().load(Ordering::Acquire);
                        let avail = prod.wrapping_sub(cons);
                        assert!(
                            avail <= size,
                            "{ctx}: {avail} published in a ring of {size}"
                        );
                        let m = rng.below(size as usize + 2).min(avail as usize) as u32;
                        for k in 0..m {
                            // SAFETY (test): a published slot, read once by the "kernel".
                            let v = unsafe { ring.slot(cons.wrapping_add(k)).read() }.dec();
                            assert_eq!(Some(v), model.pop_front(), "{ctx}");
                        }
                        ring.consumer()
                            .store(cons.wrapping_add(m), Ordering::Release);
                        consumed = consumed.wrapping_add(m);
                    }
                    _ => {
                        ops[2] += 1;
                        let f = p.free(rng.below(size as usize + 2) as u32);
                        assert!(f <= size, "{ctx}");
                        // Asking for more than can ever be free forces a fresh look.
                        assert_eq!(p.free(size + 1), size - model.len() as u32, "{ctx}");
                    }
                }
                assert_eq!(p.outstanding() as usize, model.len(), "{ctx}");
                let ring = p.memory();
                assert_eq!(
                    ring.producer().load(Ordering::Relaxed),
                    start.wrapping_add(produced),
                    "{ctx}"
                );
                assert_eq!(
                    ring.consumer().load(Ordering::Relaxed),
                    start.wrapping_add(consumed),
                    "{ctx}"
                );
            }
        }
        ops
    }

    /// Random kernel-produce / consume sequences on a ring we consume from, against a model queue.
    fn drive_consumer<T: TestDesc>(seed: u64) -> [u64; 3] {
        let mut rng = XorShift::new(seed);
        let mut ops = [0u64; 3];
        for round in 0..200 {
            let size = 1u32 << rng.below(7);
            let (ring, start) = random_ring::<T>(&mut rng, size);
            let mut c = Consumer::new(ring);
            let mut model = std::collections::VecDeque::new();
            let (mut next_val, mut consumed) = (1u64, 0u32);
            let mut out: Vec<T> = vec![T::enc(0); 2 * size as usize];
            for step in 0..300 {
                let ctx = format!("seed {seed:#x} round {round} step {step} size {size}");
                match rng.below(5) {
                    0 | 1 => {
                        // The kernel produces into the free slots it sees.
                        ops[0] += 1;
                        let ring = c.memory();
                        let prod = ring.producer().load(Ordering::Acquire);
                        let cons = ring.consumer().load(Ordering::Acquire);
                        let used = prod.wrapping_sub(cons);
                        assert_eq!(used as usize, model.len(), "{ctx}");
                        let k = rng.below((size - used) as usize + 1) as u32;
                        for i in 0..k {
                            // SAFETY (test): slots past the producer index are the producer's.
                            unsafe {
                                ring.slot(prod.wrapping_add(i))
                                    .write(T::enc(next_val + i as u64))
                            };
                            model.push_back(next_val + i as u64);
                        }
                        next_val += k as u64;
                        ring.producer()
                            .store(prod.wrapping_add(k), Ordering::Release);
                    }
                    2 | 3 => {
                        ops[1] += 1;
                        let want = rng.below(out.len() + 1);
                        let n = c.consume(&mut out[..want]);
                        assert!(n <= want.min(model.len()), "{ctx}: {n}");
                        if want > 0 && !model.is_empty() {
                            assert!(n > 0, "{ctx}: nothing consumed from {}", model.len());
                        }
                        for d in &out[..n] {
                            assert_eq!(Some(d.dec()), model.pop_front(), "{ctx}");
                        }
                        consumed = consumed.wrapping_add(n as u32);
                    }
                    _ => {
                        ops[2] += 1;
                        let a = c.available() as usize;
                        assert!(a <= model.len(), "{ctx}");
                        assert_eq!(a == 0, model.is_empty(), "{ctx}");
                    }
                }
                assert_eq!(
                    c.memory().consumer().load(Ordering::Relaxed),
                    start.wrapping_add(consumed),
                    "{ctx}"
                );
            }
            // Whatever is left drains in a bounded number of calls.
            for _ in 0..=size {
                let n = c.consume(&mut out);
                for d in &out[..n] {
                    assert_eq!(Some(d.dec()), model.pop_front());
                }
                if n == 0 {
                    break;
                }
            }
            assert!(model.is_empty(), "round {round}: {} left", model.len());
        }
        ops
    }

    #[test]
    fn random_produce_sequences_match_a_model_queue() {
        let a = drive_producer::<u64>(0x5eed_0003);
        let b = drive_producer::<libc::xdp_desc>(0x5eed_0004);
        eprintln!("produce/kernel-consume/free: u64 {a:?}, xdp_desc {b:?}");
        assert!(a.iter().chain(&b).all(|&n| n > 1000));
    }

    #[test]
    fn random_consume_sequences_match_a_model_queue() {
        let a = drive_consumer::<u64>(0x5eed_0005);
        let b = drive_consumer::<libc::xdp_desc>(0x5eed_0006);
        eprintln!("kernel-produce/consume/available: u64 {a:?}, xdp_desc {b:?}");
        assert!(a.iter().chain(&b).all(|&n| n > 1000));
    }
}
