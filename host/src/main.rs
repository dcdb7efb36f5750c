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
/// `mi_option_allow_thp` there, and its default.
const ALLOW_THP: c_int = 43;
const ALLOW_THP_DEFAULT: c_long = 1;

/// Memory the allocator frees goes back to the system, and stays there (BENCHMARKS.md, "Resident
/// memory after a replay", has the figures):
/// - mimalloc returns freed memory a second later, and only when the thread allocates or frees
///   again: a host that goes idle after a replay kept what the replay had freed. Returned at once
///   instead.
/// - mimalloc asks for transparent huge pages for its memory, which the kernel backs and keeps
///   2 MiB at a time: a host idle after a 50,000-event replay kept 80 to 96 MiB resident with
///   8 MiB in use, 52 to 54 MiB without them, and replayed no slower. Huge pages are turned off
///   for this process (and the compilers `refold build` starts, which inherit the setting).
///
/// Each is left alone when its option does not hold mimalloc's default (`MIMALLOC_PURGE_DELAY` or
/// `MIMALLOC_ALLOW_THP` set, or another mimalloc whose options differ).
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: plain calls into the allocator linked in above, made before any other thread runs.
    unsafe {
        if mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT {
            mi_option_set(PURGE_DELAY, 0);
        }
        if mi_option_get(ALLOW_THP) == ALLOW_THP_DEFAULT && !in_environment("MIMALLOC_ALLOW_THP") {
            mi_option_set(ALLOW_THP, 0);
            no_transparent_huge_pages();
        }
    }
}

/// Whether the environment names `name`, in any case (as mimalloc reads its options).
fn in_environment(name: &str) -> bool {
    std::env::vars_os().any(|(key, _)| key.to_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
}

/// Turn transparent huge pages off for the process (Linux); a failure is only a cost in memory.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
fn no_transparent_huge_pages() {
    let off: std::ffi::c_ulong = 1;
    // SAFETY: `prctl` with integer arguments, setting one flag of this process.
    let _ = unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            off,
            0 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
        )
    };
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn no_transparent_huge_pages() {}

fn main() -> std::process::ExitCode {
    return_freed_memory();
    refold::cli::main()
}
