//! The `refold` binary.

use std::ffi::{c_int, c_long};

/// mimalloc instead of the system allocator: the replay path allocates many small, short-lived
/// documents, where glibc's malloc cost about a sixth of the replay time in profiles and kept
/// freed memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One of the host's two unsafe items (the other loads code from the code cache): the allocator's
// own C functions, declared here rather than through a feature of libmimalloc-sys that would
// rebuild it.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in mimalloc 3.3 (the sources libmimalloc-sys 0.1.49 builds; see
/// `MIMALLOC_VERBOSE=1 refold --version`), and its default there, in milliseconds.
const PURGE_DELAY: c_int = 15;
const PURGE_DELAY_DEFAULT: c_long = 1000;

/// mimalloc returns freed memory to the system a second later, and only when the thread
/// allocates or frees again: a host that goes idle after a replay kept what the replay had freed,
/// up to twice what it uses. Returned at once instead (BENCHMARKS.md has the figures). Left alone
/// when the option does not hold that default (`MIMALLOC_PURGE_DELAY` set, or another mimalloc
/// whose options differ).
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    // SAFETY: plain calls into the allocator linked in above, made before any other thread runs.
    unsafe {
        if mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT {
            mi_option_set(PURGE_DELAY, 0);
        }
    }
}

fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
    refold::cli::main()
}
