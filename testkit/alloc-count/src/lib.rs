//! A counting global allocator for the tests that prove a per-packet path allocates nothing
//! (STYLE.md R14). A test binary installs it and counts around the code under test:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: estuary_alloc_count::Counting = estuary_alloc_count::Counting;
//!
//! assert_eq!(estuary_alloc_count::count(|| relay_one_packet()), 0);
//! ```
//!
//! Counts are per thread, so what the test harness or another test's thread allocates meanwhile
//! is never charged to the code under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards every call unchanged to the system allocator; counts allocations and
/// reallocations made on the calling thread.
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn counted() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: every operation is the system allocator's, with the caller's arguments; counting
// touches only a const-initialised thread-local without a destructor, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations and reallocations made so far on the calling thread.
pub fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations and reallocations made on the calling thread while `f` ran.
pub fn count(f: impl FnOnce()) -> usize {
    let before = allocations();
    f();
    allocations() - before
}
