//! The global allocator of Manifold's server binaries (`manifold`,
//! `demo-provider`, `manifold-bench`).
//!
//! mimalloc, because sled allocates and copies nodes on every write and
//! glibc's `malloc` was a fifth of the switch's CPU under load
//! (tests/bench/PROFILING.md). Left at its defaults, mimalloc commits its
//! arenas eagerly on Linux, and memory it purges from a committed arena
//! still counts in the process's resident set: the switch held about
//! 130 MiB under load on an empty store against about 80 MiB with arenas
//! committed on demand, at the same throughput. [`ServerAllocator`] sets that
//! option before mimalloc reserves its first arena, which happens on the
//! process's first allocation, before `main`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// What [`ServerAllocator`] is, for reports that state the allocator.
pub const DESCRIPTION: &str =
    "mimalloc, arenas committed on demand (manifold_alloc::ServerAllocator)";

/// mimalloc, with its arenas committed on demand. Declare it with
/// `#[global_allocator] static ALLOCATOR: ServerAllocator = ServerAllocator;`.
pub struct ServerAllocator;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// `mi_option_arena_eager_commit` (mimalloc.h, v3's option order).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

#[cold]
fn configure() {
    // Two threads racing here both set the same value: harmless.
    // SAFETY: mi_option_set only stores a value in mimalloc's option table
    // (it overrides MIMALLOC_ARENA_EAGER_COMMIT from the environment).
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
    CONFIGURED.store(true, Ordering::Release);
}

#[inline]
fn ensure_configured() {
    if !CONFIGURED.load(Ordering::Acquire) {
        configure();
    }
}

// SAFETY: every call is passed to MiMalloc unchanged; `ensure_configured`
// does not allocate.
unsafe impl GlobalAlloc for ServerAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ensure_configured();
        MiMalloc.alloc(layout)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ensure_configured();
        MiMalloc.alloc_zeroed(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        MiMalloc.dealloc(ptr, layout)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MiMalloc.realloc(ptr, layout, new_size)
    }
}
