//! `refold-bench`: the benchmark suite. Run it with `scripts/bench` (`--full` for the full
//! size). It prints each step as it goes, a summary at the end, and writes every figure as JSON.
//!
//! What it measures, on one history in the seeds' domain:
//! 1. replay throughput of a new projection on the embedded store: the Rust payment guest, a
//!    no-op guest, the same two natively behind the same projector, and the raw store loop;
//! 2. guest overhead: microseconds per event, guest against native;
//! 3. live latency at a fixed append rate;
//! 4. hot swap: in place (compiling and cached) and a new generation over the log;
//! 5. resident memory: an idle host, one projection, many projections;
//! 6. the payment replay on MongoDB (SecantusDB, a Python server: not mongod), with the raw
//!    store loop beside it;
//! 7. `refold trace` of one document, the real binary: a payment, an organization's counters,
//!    and a payment with every event replayed;
//! 8. a peer in the same run: the Python `eventsourcing` library's projection runner folding
//!    the same payment events into the same read model (`bench/peer`).
//!
//! `--load` runs a different benchmark instead: a sustained append rate through the HTTP API
//! for minutes, with ten projections following (lag and memory over time; see `load.rs`).
//! `--languages` compares the payment example in Rust, C, JavaScript and Python (size, compile,
//! instantiate, replay; see `languages.rs`).

mod failover;
mod http_appends;
mod import;
mod languages;
mod load;
mod mongo;
mod native;
mod peer;
mod process;
mod replay;
mod shape;
mod trace;
mod upcasting;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use refold::engine::{Engine, Limits};
use refold::projector::Handler;
use refold::store::{self, Store};
use serde_json::{Value, json};

/// The Refold benchmark suite.
#[derive(Debug, Parser)]
struct Args {
    /// The full size: 1,000,000 events, longer live and memory runs.
    #[arg(long)]
    full: bool,
    /// Events in the history (overrides the size `--full` picks).
    #[arg(long)]
    events: Option<usize>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench-results.json")]
    out: PathBuf,
    /// Skip the MongoDB (SecantusDB) run.
    #[arg(long)]
    no_mongo: bool,
    /// Skip the Python `eventsourcing` peer.
    #[arg(long)]
    no_peer: bool,
    /// Run the several-hosts benchmark instead, on MongoDB (SecantusDB, or
    /// `REFOLD_BENCH_MONGODB_URI`): the cost of the lease checks on a replay, and the failover
    /// time (owner killed → another host committing); 10,000 events unless `--events` says
    /// otherwise.
    #[arg(long)]
    failover: bool,
    /// Lease time of the failover benchmark, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    lease_ms: u64,
    /// Python interpreter with `eventsourcing` installed (scripts/bench makes one in
    /// target/bench-venv).
    #[arg(long, env = "REFOLD_BENCH_PYTHON", default_value = "python3")]
    python: String,
    /// Run the sustained-load benchmark instead (ten projections, appends over HTTP); its
    /// results go to `--out` too.
    #[arg(long)]
    load: bool,
    /// Appends per second of the load.
    #[arg(long, default_value_t = 200)]
    load_rate: u32,
    /// With `--load`: run it twice, alone and with six hostile fixtures beside the ten
    /// projections (set off by a `Poison` event every 100 appends).
    #[arg(long)]
    load_hostile: bool,
    /// Minutes the load lasts.
    #[arg(long, default_value_t = 5.0)]
    load_minutes: f64,
    /// Run the language comparison instead: the payment example in Rust, C, JavaScript and
    /// Python (build, size, compile cold and cached, instantiate, replay); 50,000 events unless
    /// `--events` says otherwise.
    #[arg(long)]
    languages: bool,
    /// Run only the payment shape (every event a payment event, handled), with the naive
    /// rusqlite loop beside it, and the payment example in Rust, JavaScript and Python; part of
    /// the default run too.
    #[arg(long)]
    shape: bool,
    /// Run only the resident-memory step (an idle host, one payment projection, 100 no-op
    /// projections); part of the default run too.
    #[arg(long)]
    memory: bool,
    /// Run only the HTTP appends step (8 clients, one event per request, 10 s); part of the
    /// default run too.
    #[arg(long)]
    appends: bool,
    /// Run only the live-latency step (the payment guest caught up on a history of `--events`,
    /// then 100 appends/s, each timed until the read model has it); part of the default run too.
    #[arg(long)]
    live: bool,
}

/// The same allocator as the `refold` binary, so in-process figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `refold` binary beside this one.
fn refold_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("refold");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release` (scripts/bench does)",
        bin.display()
    );
    Ok(bin)
}

struct Steps {
    total: usize,
    done: usize,
    started: Instant,
}

impl Steps {
    fn next(&mut self, what: &str) {
        self.done += 1;
        eprintln!(
            "[{}/{}] {what} (at {:.0} s)",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn load(engine: &Arc<Engine>, file: &Path) -> anyhow::Result<Arc<dyn Handler>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(Arc::new(engine.load(&bytes)?))
}

async fn fill(store: &Arc<dyn Store>, events: usize, seed: u64) -> anyhow::Result<f64> {
    let history = refold::cli::demo_data::generate(events, seed);
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut size = 0;
    for append in history {
        size += append.events.len();
        batch.push(append);
        if size >= 2_000 {
            store.append_all(std::mem::take(&mut batch)).await?;
            size = 0;
        }
    }
    if !batch.is_empty() {
        store.append_all(batch).await?;
    }
    Ok(store.head().await? as f64 / started.elapsed().as_secs_f64())
}

/// Read the whole log once so every replay starts with the same warm page cache.
async fn warm(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = store.read_all(after, 5_000, &Default::default()).await?;
        if page.scanned_to == after {
            return Ok(());
        }
        after = page.scanned_to;
    }
}

/// The documents of a generation's table (SQLite), by id, to check that every variant of the
/// payment projection wrote the same read model.
fn table(db: &Path, table: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(&format!("SELECT id, body FROM \"{table}\" ORDER BY id"))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row?;
        out.push((id, serde_json::from_str(&body)?));
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = args
        .events
        .unwrap_or(if args.full { 1_000_000 } else { 200_000 });
    let (live_seconds, many) = if args.full { (30, 100) } else { (10, 100) };
    let mut steps = Steps {
        total: 16,
        done: 0,
        started: Instant::now(),
    };
    let bin = refold_bin()?;
    // `REFOLD_BENCH_KEEP=1` keeps the stores and components for a look afterwards.
    let (work, kept);
    let dir: &Path = if std::env::var_os("REFOLD_BENCH_KEEP").is_some() {
        kept = tempfile::tempdir()?.keep();
        eprintln!("keeping the benchmark's files in {}", kept.display());
        &kept
    } else {
        work = tempfile::tempdir()?;
        work.path()
    };
    let root = repo_root();
    if args.load {
        return sustained_load(&args, &bin, &root, dir).await;
    }
    if args.failover {
        let guests = dir.join("guests");
        refold::guest_build::build_rust(&root.join("example-projections/rust/payments"), &guests)?;
        let engine = Arc::new(Engine::new(Limits::default(), None)?);
        let figures = failover::measure(
            &bin,
            &engine,
            &guests.join("payments.wasm"),
            dir,
            args.events.unwrap_or(10_000),
            args.lease_ms,
        )
        .await?;
        let results = json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "failover": figures,
        });
        return write_results(&args.out, results);
    }
    if args.languages {
        let figures = languages::compare(&root, dir, args.events.unwrap_or(50_000)).await?;
        let results = json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "languages": figures,
        });
        return write_results(&args.out, results);
    }

    if args.appends {
        let figures = http_appends::concurrent(&bin, dir, 8, Duration::from_secs(10)).await?;
        let results = json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "http_appends": figures,
        });
        return write_results(&args.out, results);
    }

    steps.next("building the guest components");
    let guests = dir.join("guests");
    refold::guest_build::build_rust(&root.join("example-projections/rust/payments"), &guests)?;
    if args.shape {
        let engine = Arc::new(Engine::new(Limits::default(), None)?);
        let figures = payment_shape(&engine, &guests, dir, events).await?;
        let results = json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "payment_shape": figures,
        });
        return write_results(&args.out, results);
    }
    if args.live {
        let store = store::open(&format!("sqlite://{}", dir.join("live.db").display())).await?;
        fill(&store, events, 42).await?;
        warm(&store).await?;
        let engine = Arc::new(Engine::new(Limits::default(), None)?);
        let payments = load(&engine, &guests.join("payments.wasm"))?;
        let (_, supervisor) = replay::replay(&store, payments, "payments, Rust guest").await?;
        steps.next(&format!(
            "live latency: {live_seconds} s at 100 appends/s (payments guest)"
        ));
        let latency =
            replay::live_latency(&store, &supervisor, 100, Duration::from_secs(live_seconds))
                .await?;
        supervisor.shutdown().await;
        let results = json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "live_latency": latency,
        });
        return write_results(&args.out, results);
    }
    refold::guest_build::build_rust(&root.join("bench/guests"), &guests)?;
    if args.memory {
        let figures = memory(&bin, &guests, dir, args.full, many).await?;
        let results = json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "memory": figures,
        });
        return write_results(&args.out, results);
    }
    refold::guest_build::build_rust(&root.join("tests/fixtures"), &guests)?;

    steps.next(&format!("appending {events} events to the embedded store"));
    let db = dir.join("bench.db");
    let uri = format!("sqlite://{}", db.display());
    let store = store::open(&uri).await?;
    let append_per_s = fill(&store, events, 42).await?;
    warm(&store).await?;
    let engine = Arc::new(Engine::new(Limits::default(), None)?);

    steps.next("replay: the raw store loop (native payment logic, straight into the store)");
    let started = Instant::now();
    let raw_handled = native::raw_replay(&store, "payments_raw", 500).await?;
    let raw_seconds = started.elapsed().as_secs_f64();
    let head = store.head().await?;
    let raw = replay::Replay {
        name: "raw store loop, payments".into(),
        log_events: head,
        handled: raw_handled,
        seconds: raw_seconds,
        log_events_per_s: head as f64 / raw_seconds,
        handled_per_s: raw_handled as f64 / raw_seconds,
    };

    steps.next("replay: payments, native behind the projector");
    let native_payments = replay::replay_alone(
        &store,
        Arc::new(native::NativePayments::new("payments_native")),
        "payments, native",
    )
    .await?;
    steps.next("replay: payments, Rust guest");
    let payments = load(&engine, &guests.join("payments.wasm"))?;
    let (guest_payments, payments_supervisor) =
        replay::replay(&store, payments, "payments, Rust guest").await?;
    steps.next("replay: no-op, native and Rust guest");
    let native_noop = replay::replay_alone(
        &store,
        Arc::new(native::NativeNoop::new("noop_native")),
        "no-op, native",
    )
    .await?;
    let noop = load(&engine, &guests.join("noop.wasm"))?;
    let guest_noop = replay::replay_alone(&store, noop, "no-op, Rust guest").await?;

    let identical = ["payments", "org_stats"]
        .iter()
        .try_fold(true, |same, collection| {
            let guest = table(&db, &format!("payments__g1__{collection}"))?;
            let native = table(&db, &format!("payments_native__g1__{collection}"))?;
            let raw = table(&db, &format!("payments_raw__g1__{collection}"))?;
            anyhow::Ok(same && guest == native && guest == raw && !guest.is_empty())
        })?;
    anyhow::ensure!(
        identical,
        "the guest, native and raw payment read models differ"
    );

    steps.next(&format!(
        "the payment shape: {events} payment events, the naive rusqlite loop beside the replay"
    ));
    let shape = payment_shape(&engine, &guests, dir, events).await?;

    steps.next(&format!(
        "live latency: {live_seconds} s at 100 appends/s (payments guest)"
    ));
    let latency = replay::live_latency(
        &store,
        &payments_supervisor,
        100,
        Duration::from_secs(live_seconds),
    )
    .await?;
    payments_supervisor.shutdown().await;

    steps.next("hot swap (the real binary, counter fixture)");
    let counters = process::Counters {
        v1: guests.join("counter_v1.wasm"),
        v1b: guests.join("counter_v1b.wasm"),
        v2: guests.join("counter_v2b.wasm"),
    };
    let swap = process::hot_swap(&bin, &store, &uri, dir, &counters, 10).await?;

    steps.next("refold trace: one payment, one organization, one payment replaying everything");
    let trace = trace::documents(&bin, &db, &uri, &guests.join("payments.wasm"))?;

    steps.next("upcasting: settlements behind the upcaster, and over the same events as v2");
    let upcasting = upcasting::compare(&root, dir, &engine, (&store, &db)).await?;

    let clients = 8;
    steps.next(&format!(
        "appends over HTTP: {clients} clients, one event per request, 10 s"
    ));
    let http_appends =
        http_appends::concurrent(&bin, dir, clients, Duration::from_secs(10)).await?;

    steps.next(&format!("refold import: {events} events from JSON Lines"));
    let import = import::jsonl(&bin, &store, dir).await?;

    steps.next(&format!(
        "memory: idle host, one projection, {many} projections"
    ));
    let memory = memory(&bin, &guests, dir, args.full, many).await?;

    steps.next("MongoDB on SecantusDB (not mongod)");
    let mongo = if args.no_mongo {
        json!(null)
    } else {
        let events = if args.full { 50_000 } else { 10_000 };
        let (payments, noop) = (guests.join("payments.wasm"), guests.join("noop.wasm"));
        mongo::replay(&engine, &payments, &noop, events)
            .await
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
    };

    steps.next("peer: the Python eventsourcing library, same payment events, same read model");
    let peer = if args.no_peer {
        json!(null)
    } else {
        peer::eventsourcing(&args.python, &root, &db, dir, &guest_payments)
            .await
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
    };

    let overhead = |guest: &replay::Replay, native: &replay::Replay| {
        (guest.seconds - native.seconds) / guest.handled.max(1) as f64 * 1e6
    };
    let results = json!({
        "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
        "machine": machine(),
        "events": events,
        "append_events_per_s": append_per_s,
        "http_appends": http_appends,
        "import_jsonl": import,
        "replay": [raw, native_payments, guest_payments, native_noop, guest_noop],
        "replay_ratio_guest_to_raw": guest_payments.log_events_per_s / raw.log_events_per_s,
        "payment_shape": shape,
        "guest_overhead_us_per_event": {
            "payments": overhead(&guest_payments, &native_payments),
            "noop": overhead(&guest_noop, &native_noop),
        },
        "read_models_identical": identical,
        "live_latency": latency,
        "hot_swap": swap,
        "trace": trace,
        "upcasting": upcasting,
        "memory": memory,
        "mongodb_secantusdb": mongo,
        "peer_eventsourcing": peer,
    });
    write_results(&args.out, results)
}

/// Resident memory: an idle host, one payment projection, and `many` no-op projections, each
/// on a store of its own with the demo's history (50,000 events, 200,000 with `--full`).
async fn memory(
    bin: &Path,
    guests: &Path,
    dir: &Path,
    full: bool,
    many: usize,
) -> anyhow::Result<process::Memory> {
    let memory_events = if full { 200_000 } else { 50_000 };
    let open = async |name: &str| {
        let uri = format!(
            "sqlite://{}",
            dir.join(format!("memory-{name}.db")).display()
        );
        let store = store::open(&uri).await?;
        fill(&store, memory_events, 7).await?;
        anyhow::Ok((store, uri))
    };
    process::memory(
        bin,
        open,
        dir,
        &guests.join("payments.wasm"),
        &guests.join("noop.wasm"),
        many,
    )
    .await
}

/// The payment shape: its history on a store of its own, the naive rusqlite loop at 1,000 and
/// 10,000 events per transaction, the payment projection natively behind the projector and as
/// the Rust guest; the read models checked equal; the guest's ratio to the naive loop.
async fn payment_shape(
    engine: &Arc<Engine>,
    guests: &Path,
    dir: &Path,
    events: usize,
) -> anyhow::Result<Value> {
    let db = dir.join("shape.db");
    let store = store::open(&format!("sqlite://{}", db.display())).await?;
    let payments = shape::fill(&*store, events, 18).await?;
    warm(&store).await?;
    let mut naive = Vec::new();
    for per_transaction in [1_000, 10_000] {
        let out = dir.join(format!("shape-naive-{per_transaction}.db"));
        let db = db.clone();
        let run =
            tokio::task::spawn_blocking(move || shape::naive_loop(&db, &out, per_transaction))
                .await??;
        eprintln!("  {}: {:.0} handled events/s", run.name, run.handled_per_s);
        naive.push(run);
    }
    let native = replay::replay_alone(
        &store,
        Arc::new(native::NativePayments::new("shape_native")),
        "payments, native behind the projector",
    )
    .await?;
    let guest = load(engine, &guests.join("payments.wasm"))?;
    let guest = replay::replay_alone(&store, guest, "payments, Rust guest").await?;
    let naive_db = dir.join("shape-naive-10000.db");
    let same_as_naive = |db: &Path, tables: &[&str]| -> anyhow::Result<()> {
        for collection in ["payments", "org_stats"] {
            let expected = shape::documents(&naive_db, collection)?;
            for projection in tables {
                let table = format!("{projection}__g1__{collection}");
                anyhow::ensure!(
                    !expected.is_empty() && shape::documents(db, &table)? == expected,
                    "the payment shape: `{table}` in {} differs from the naive loop's `{collection}`",
                    db.display()
                );
            }
        }
        Ok(())
    };
    same_as_naive(&db, &["payments", "shape_native"])?;
    // The JavaScript and Python payment examples, each on a store of its own holding the same
    // events (their projection has the Rust one's name).
    let mut other_guests = Vec::new();
    for language in ["javascript", "python"] {
        eprintln!("  {language}: building the payment example");
        let (component, _) = languages::build(
            language,
            &repo_root(),
            &dir.join(format!("shape-{language}")),
        )?;
        let db = dir.join(format!("shape-{language}.db"));
        let store = store::open(&format!("sqlite://{}", db.display())).await?;
        shape::fill(&*store, events, 18).await?;
        warm(&store).await?;
        let label = format!("payments, {language} guest");
        let run = replay::replay_alone(&store, load(engine, &component)?, &label).await?;
        same_as_naive(&db, &["payments"])?;
        other_guests.push(run);
    }
    let naive_10000 = naive
        .iter()
        .find(|n| n.events_per_transaction == 10_000)
        .map_or(0.0, |n| n.handled_per_s);
    Ok(json!({
        "events": events,
        "payments": payments,
        "naive": naive,
        "replay": [native, guest.clone()],
        "ratio_guest_to_naive_10000": guest.handled_per_s / naive_10000,
        "other_guests": other_guests,
        "read_models_identical": true,
    }))
}

/// `--load`: build the components, run the load, write the figures.
async fn sustained_load(args: &Args, bin: &Path, root: &Path, dir: &Path) -> anyhow::Result<()> {
    eprintln!("building the guest components");
    let guests = dir.join("guests");
    refold::guest_build::build_rust(&root.join("example-projections/rust"), &guests)?;
    refold::guest_build::build_rust(&root.join("bench/guests"), &guests)?;
    refold::guest_build::build_rust(&root.join("tests/fixtures"), &guests)?;
    eprintln!(
        "sustained load: {} appends/s for {} min, ten projections",
        args.load_rate, args.load_minutes
    );
    let mut runs = vec![false];
    if args.load_hostile {
        runs.push(true);
    }
    let mut figures = Vec::new();
    for hostile in runs {
        let dir = dir.join(if hostile { "hostile" } else { "alone" });
        std::fs::create_dir_all(&dir)?;
        figures.push(
            load::sustained(load::Load {
                bin,
                guests: &guests,
                dir: &dir,
                rate: args.load_rate,
                duration: Duration::from_secs_f64(args.load_minutes * 60.0),
                history: args.events.unwrap_or(50_000),
                hostile,
            })
            .await?,
        );
    }
    write_results(
        &args.out,
        json!({
            "date": refold::domain::time::iso8601_millis(refold::domain::time::now_millis()),
            "machine": machine(),
            "sustained_load": figures,
        }),
    )
}

/// The machine the figures come from.
fn machine() -> Value {
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": memory_gib(),
    })
}

/// Print the results and write them as JSON to `out`.
fn write_results(out: &Path, results: Value) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&results)?)?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    eprintln!("results written to {}", out.display());
    Ok(())
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}
