//! A counting wrapper around the system allocator, for measuring live heap bytes.
//!
//! `trunkguard-bench` installs [`CountingAlloc`] as its global allocator; the appliance does not
//! (it uses the system allocator, unwrapped). Counting is off until [`enable`] is called (by
//! the memory reading of `bench media`). When on, every allocation adds its size to a relaxed
//! atomic counter and every free subtracts it; [`live_bytes`] reads it.
//! Blocks allocated before counting was enabled and freed after make the counter lower than
//! the true total: only differences between two readings are meaningful.
//!
//! Memory allocated by C libraries with `malloc` (libopus state) does not go through Rust's
//! allocator and is not counted here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// [`System`], counting live bytes while enabled.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

#[inline]
fn count(delta: isize) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting only touches atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Starts counting. Returns whether [`CountingAlloc`] is really the global allocator (a probe
/// allocation moved the counter).
pub fn enable() -> bool {
    ENABLED.store(true, Ordering::Relaxed);
    let before = LIVE.load(Ordering::Relaxed);
    let probe = std::hint::black_box(vec![0u8; 4096]);
    let during = LIVE.load(Ordering::Relaxed);
    drop(probe);
    during - before >= 4096
}

/// Stops counting.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// The counter: bytes allocated minus bytes freed while counting was on.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}
