//! The `refold` binary.

fn main() -> std::process::ExitCode {
    refold::cli::main()
}
