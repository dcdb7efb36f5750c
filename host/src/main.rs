//! The `refold` binary.

use std::ffi::{c_int, c_long};

/// mimalloc instead of the system allocator: the replay path allocates many small, short-lived
/// documents, where glibc's malloc cost about a sixth of the replay time in profiles and kept
/// freed memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One of the host's two unsafe items (the other loads code from the code cache): the allocator's
// own C functions, declared here rather than through a feature of libmimalloc-sys that would
// rebuild it, and the process's memory settings.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in mimalloc 3.3 (the sources libmimalloc-sys 0.1.49 builds; see
/// `MIMALLOC_VERBOSE=1 refold --version`), and its default there, in milliseconds.
const PURGE_DELAY: c_int = 15;
const PURGE_DELAY_DEFAULT: c_long = 1000;
/// `mi_option_allow_thp` there.
const ALLOW_THP: c_int = 43;

/// Memory the allocator frees goes back to the system, and stays there (BENCHMARKS.md, "Resident
/// memory after a replay", has the figures):
/// - mimalloc returns freed memory a second later, and only when the thread allocates or frees
///   again: a host that goes idle after a replay kept what the replay had freed. Returned at once
///   instead; left alone when the option does not hold that default (`MIMALLOC_PURGE_DELAY` set,
///   or another mimalloc whose options differ).
/// - mimalloc asks for transparent huge pages for its memory, which the kernel backs and keeps
///   2 MiB at a time: a host idle after a 50,000-event replay kept 80 to 96 MiB resident with
///   8 MiB in use, 52 to 54 MiB without them, and replayed no slower. Huge pages are turned off
///   for this process (and the compilers `refold build` starts, which inherit the setting)
///   unless `MIMALLOC_ALLOW_THP` is set.
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: plain calls into the allocator linked in above, and a `prctl` that sets one flag of
    // this process, made before any other thread runs.
    unsafe {
        if mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT {
            mi_option_set(PURGE_DELAY, 0);
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            mi_option_set(ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() -> std::process::ExitCode {
    return_freed_memory();
    refold::cli::main()
}
