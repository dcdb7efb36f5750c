//! The `refold` command line.

mod append;
mod demo;
pub mod demo_data;
mod deploy;
mod fixture;
mod generations;
mod import;
mod new;
mod progress;
mod run;
mod status;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code for a concurrency conflict on append.
pub const EXIT_CONFLICT: u8 = 3;

/// Refold: projections for event-sourced systems, written in any language that compiles to a
/// WebAssembly component.
///
/// The host owns the event store (embedded SQLite by default) and runs each projection found in
/// a folder of `.wasm` components: a new projection replays the whole history, then follows live
/// appends. Each batch of writes commits with the projection's checkpoint, so nothing is lost or
/// applied twice across crashes and restarts.
#[derive(Debug, Parser)]
#[command(name = "refold", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. `info`, `refold=debug`) [default: `info`; `off` for
    /// `refold test`, which reports every outcome itself; `warn` for `refold trace`].
    #[arg(long, global = true, env = "REFOLD_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: run the projections of a folder against a store and follow live appends.
    ///
    /// Run every projection component (`*.wasm`, recursively) of a folder against a store, and keep
    /// watching the folder: a new file deploys a new projection (it replays the whole history, then
    /// follows live appends); new code with the same declared version is swapped in place at a batch
    /// boundary; a higher version builds a new generation beside the active one and takes over
    /// atomically once it has caught up; a removed file stops its projection (its data stays). A
    /// component of the `upcaster` world reads old event shapes as new ones before any projection
    /// sees them; adding, changing or removing one rebuilds the projections it reaches into new
    /// generations the same way (docs/upcasting.md). A file that fails to compile or validate is
    /// refused and never replaces running code; the reason shows in the log and in `refold
    /// status`. The HTTP API and the console are served on
    /// `--http` (127.0.0.1:7070 by default). Ctrl-C or SIGTERM stop every projection at a batch
    /// boundary.
    Run(run::RunArgs),
    /// Zero set-up walkthrough: build the example projections, create an embedded store with a
    /// realistic history (payments, invoices, users), replay it, show the read models, then
    /// follow live appends.
    ///
    /// Build the example projections, create a fresh embedded store with a realistic history
    /// (payments, invoices and users across 25 organizations), replay it into every projection
    /// with progress bars, print sample read models and the replay rate, then append a live payment
    /// every second and show how fast it reaches the read model, while serving the console and
    /// the HTTP API on `--http` (127.0.0.1:7070 by default). Ctrl-C stops.
    ///
    /// The demo store file is recreated on every run.
    Demo(demo::DemoArgs),
    /// Append events to a stream, with optimistic concurrency.
    ///
    /// Append events to one stream. Give one event with `--event-type`/`--data`, or a JSON file
    /// (`--file`, `-` for standard input) holding one event object or an array of them:
    /// `{"aggregateType": "Payment", "eventType": "PaymentProcessed", "eventData": {...},
    /// "metadata": {...}}`. Prints the new positions and stream version as JSON. Exits with 3 on
    /// a concurrency conflict; nothing is stored then.
    Append(append::AppendArgs),
    /// Import an existing history from JSON Lines or a MongoDB collection, keeping ids, versions
    /// and times.
    ///
    /// Import an existing history into the store: from a JSON Lines file (one event a line; `-`
    /// reads standard input) or, with `--from URI --collection NAME`, from a MongoDB collection
    /// in the seeds' shape (read in `timestamp` order). A line or document is
    /// `{"aggregateId": "payment-123", "aggregateType": "Payment", "eventType":
    /// "PaymentProcessed", "eventData": {...}, "metadata": {...}, "version": 1, "timestamp":
    /// "2024-12-19T10:00:00Z"}`, with `_id` or `id` for its id and `timestampMs` instead of
    /// `timestamp` if you like; without `version`, a stream's events are numbered in the order
    /// they come. Ids, versions and times are kept; the events take the next positions in the
    /// order read. Each stream's versions must be consecutive from 1 (an event that comes before
    /// an earlier version of its stream waits for it): the error names the line or document that
    /// breaks this. Each batch is one transaction; run the same command again after a crash or
    /// an error and it continues where it stopped, storing nothing twice. On the embedded store
    /// the batches reach the disk together at the end (a power cut in the middle may take the
    /// last ones; the same command stores them again). `--dry-run` checks the whole source and
    /// stores nothing. Prints a summary as JSON.
    Import(import::ImportArgs),
    /// Run a projection's given-when-then fixtures through the real engine and a fresh store.
    ///
    /// Builds the projection folder as `refold build` does (or takes a built `.wasm`; a folder
    /// that also builds upcasters runs the cases behind them), then runs
    /// each case of the fixture files (default: the folder's `fixtures/*.json`) against an
    /// embedded store of its own: the case's events are stored in order (times 2024-01-01 and a
    /// second apart unless given), the projection folds them in, and its documents are compared
    /// with those expected. A fixture file is `{"cases": [{"name": "...", "given": [EVENT...],
    /// "then": {"COLLECTION": [{"_id": "...", FIELD: VALUE...}]}, "exactly": false, "fails":
    /// {"event": N, "kind": "invalid-event", "message": "..."}}]}`: an event is in the append
    /// shape with its `aggregateId`; `then` compares the fields given (all fields and documents
    /// with `exactly`); `fails` expects the N-th event to fail. Prints each case and a readable
    /// difference for each that fails; exits non-zero if one does. See docs/testing.md.
    Test(fixture::TestArgs),
    /// Show the events that changed one document, in order: what each changed, what the guest
    /// logged, and the document after each.
    ///
    /// Replays the projection's code (from the code cache, or `--component`) over the events
    /// that could have changed the document: each commit records which documents its batch
    /// wrote, so only those batches are replayed, against a scratch copy of the projection's
    /// documents (nothing in the store changes). The replay must end with the document as it is
    /// stored; when it does not (the projection's handling of it reads other documents, or the
    /// store predates the record), every event up to the generation's checkpoint is replayed
    /// instead, and the output says so. Each event that changed the document is printed with its
    /// changes (`+` added, `~` changed, `-` removed, by field path), the lines the guest logged,
    /// and the document after it; `--json` prints the API's shape. See docs/trace.md.
    Trace(trace::TraceArgs),
    /// Publish components to a MongoDB store, for every host that serves it.
    ///
    /// Checks each file (compiled, imports, exports, manifest) and publishes it in the store under
    /// its file name (or `--name`): every `refold run` on the store deploys it, as if it had been
    /// dropped into its folder, and runs it if its lease falls to that host. The same rules apply
    /// as for a folder: same version swaps in place, a higher one builds a new generation that
    /// takes over once caught up, a lower one or code rolled back from is refused (see `refold
    /// status`). A file refused here publishes nothing. A host's watched folder publishes its
    /// files the same way, named by their path under the folder; the last publication of a name
    /// wins. One published component at a time may declare a projection (or an upcaster):
    /// another name declaring it is refused, naming the one published. `--remove NAME`
    /// withdraws a component (every host stops it, its data stays); `--list` prints what is
    /// published. The embedded store has one host, whose folder is the
    /// deployment: use the folder there.
    Deploy(deploy::DeployArgs),
    /// Show every projection's generations, checkpoints, lag and errors, and refused components.
    ///
    /// Show every projection generation in the store: state, version, checkpoint, head, lag in
    /// events, and the error it stopped on; then the component files a host refused to deploy, with
    /// the reason.
    Status(status::StatusArgs),
    /// Rebuild a projection from position 0 into a new generation that takes over once caught up.
    ///
    /// Rebuild a projection from position 0 into a new generation, with the code of its active
    /// generation. The active generation keeps serving reads and following live events until the
    /// new one has caught up; then the new one takes over atomically. The projection's component
    /// must be deployed on a running host (or on the next `refold run`) for the build to progress.
    Rebuild(generations::RebuildArgs),
    /// Make a projection's previous generation active again.
    ///
    /// Make the previous generation of a projection active again (its stable names point back at
    /// it at once) and mark the current one, and any still building, rolled back: their code is
    /// not built again until different code is deployed. The restored generation resumes from
    /// its own checkpoint, so until it catches up, reads show its data as of when it was
    /// replaced.
    Rollback(generations::RollbackArgs),
    /// Pause a projection: its projectors stop; its read collections keep serving.
    ///
    /// Pause a projection on every host that runs it: its projectors stop at their next batch
    /// boundary (within a fraction of a second on a running host) and nothing more is folded in
    /// until `refold resume`; its read collections keep serving what they hold. A paused
    /// projection stays paused across restarts.
    Pause(generations::PauseArgs),
    /// Resume a paused projection from its checkpoints.
    ///
    /// Resume a paused projection: its generations continue from their checkpoints, so nothing
    /// appended meanwhile is missed.
    Resume(generations::PauseArgs),
    /// List, re-drive or discard the events projections skipped under a `skip` failure policy.
    ///
    /// A projection whose failure policy is `skip` (declared in its manifest, or
    /// `refold run --on-failure NAME=skip`) records an event it keeps failing on as a dead letter
    /// (position, event, error, attempts, the version of the code that failed) and goes on.
    /// `list` shows them; `retry` re-drives them with the projection's current code (deploy a fix
    /// first) on a running host; `discard` deletes them once dealt with.
    #[command(name = "dead-letters")]
    DeadLetters(generations::DeadLettersArgs),
    /// Scaffold a new projection in a new folder, ready to build and deploy.
    ///
    /// Scaffold a projection that handles one event type (`--event-type`, `ItemAdded` by
    /// default): it counts those events and sums their `amount` per stream and in total, with a
    /// test of its pure logic that runs natively (`cargo test`, `python3 -m unittest`,
    /// `node --test`, `make test`). The folder holds a copy of the language's SDK layer and of
    /// the WIT contract, so it builds without this repository with `refold build DIR`.
    /// Languages: rust, python, js, c (each needs its toolchain: see the README).
    New(new::NewArgs),
    /// Build a projection folder into components: Rust, Python, JavaScript or C.
    ///
    /// A folder with `Cargo.toml` is a Rust crate or workspace: every `cdylib` is built for
    /// wasm32-unknown-unknown (the target is installed with rustup if missing) and written as
    /// `OUT/<crate>.wasm`. A folder with `app.py` is built with componentize-py, one with
    /// `app.js` with componentize-qjs (the folder's own `node_modules` first), one with `app.c`
    /// with clang-19 and wasi-libc (`REFOLD_CLANG`, `WASI_SYSROOT`); these need the contract in
    /// `wit/` (as `refold new` writes it) and write `OUT/<folder>.wasm`.
    Build(BuildArgs),
}

/// Where the events and read models live.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URI: `sqlite://PATH` for the embedded store (a file, created if missing), or
    /// `mongodb://HOST:PORT/DATABASE?replicaSet=NAME` (also `mongodb+srv://`) for MongoDB, the
    /// production store (a replica set; one node is enough).
    #[arg(long, env = "REFOLD_STORE", default_value = "sqlite://refold.db")]
    pub store: String,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The projection folder (a Rust crate or workspace, or a folder with `app.py` or
    /// `app.js`).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the components.
    #[arg(long, default_value = "dist")]
    out: PathBuf,
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Test(_) => "off",
        Command::Trace(_) => "warn",
        _ => "info",
    };
    init_tracing(cli.log.as_deref().unwrap_or(default_log));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Append(args) => append::append(args).await,
            Command::Import(args) => import::import(args).await,
            Command::Test(args) => fixture::test(args).await,
            Command::Trace(args) => trace::trace(args).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::Status(args) => status::status(args).await,
            Command::Rebuild(args) => generations::rebuild(args).await,
            Command::Rollback(args) => generations::rollback(args).await,
            Command::Pause(args) => generations::pause(args, true).await,
            Command::Resume(args) => generations::pause(args, false).await,
            Command::DeadLetters(args) => generations::dead_letters(args).await,
            Command::New(args) => new::new(args),
            Command::Build(args) => build(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| {
        eprintln!("warning: invalid log filter `{filter}`; using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let components = crate::guest_build::build(&args.dir, &args.out)?;
    for component in components {
        println!("{}", component.display());
    }
    Ok(ExitCode::SUCCESS)
}
