//! The `refold` binary.

/// mimalloc instead of the system allocator: the replay path allocates many small, short-lived
/// documents, where glibc's malloc cost about a sixth of the replay time in profiles and kept
/// freed memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    refold::cli::main()
}
