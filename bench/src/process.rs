//! Measurements of the real `refold` binary: hot swap latency and resident memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refold::domain::GenerationState;
use refold::engine::code_hash;
use refold::store::Store;
use serde::Serialize;

/// A `refold run` process, killed on drop.
pub struct Host(Child);

impl Host {
    /// `refold run` watching `folder`, with its own code cache and no HTTP API.
    pub fn start(
        bin: &Path,
        uri: &str,
        folder: &Path,
        cache: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn(bin, uri, folder, cache, log, &["--no-http"])
    }

    /// Like [`Self::start`], serving the HTTP API on a loopback `port`, with `extra` arguments.
    pub fn serving(
        bin: &Path,
        uri: &str,
        folder: &Path,
        cache: &Path,
        log: &Path,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let address = format!("127.0.0.1:{port}");
        Self::spawn(
            bin,
            uri,
            folder,
            cache,
            log,
            &[&["--http", &address], extra].concat(),
        )
    }

    fn spawn(
        bin: &Path,
        uri: &str,
        folder: &Path,
        cache: &Path,
        log: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let child = Command::new(bin)
            .args(["run", "--store", uri, "--projections"])
            .arg(folder)
            .arg("--code-cache")
            .arg(cache)
            .args(extra)
            .env("REFOLD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Self(child))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// (resident, peak resident) memory in KiB, from `/proc`.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll (every millisecond) until `done` holds; the time it took. Fails after `limit`.
pub async fn time_until<F, Fut>(
    limit: Duration,
    what: &str,
    mut done: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    while !done().await? {
        anyhow::ensure!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(started.elapsed())
}

/// Whether every generation of every projection named is active at the head.
pub async fn all_active_at_head(store: &Arc<dyn Store>, names: usize) -> anyhow::Result<bool> {
    let head = store.head().await?;
    let generations = store.all_generations().await?;
    let active = generations
        .iter()
        .filter(|g| g.state == GenerationState::Active && g.checkpoint == head)
        .count();
    Ok(active >= names)
}

/// Copy `from` to `to` through a hidden temporary name and a rename, as a deploy tool would.
pub fn deploy_file(from: &Path, folder: &Path, name: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(from)?;
    let temp = folder.join(format!(".{name}.tmp"));
    std::fs::write(&temp, &bytes)?;
    std::fs::rename(&temp, folder.join(name))?;
    Ok(code_hash(&bytes))
}

/// Hot swap figures.
#[derive(Debug, Clone, Serialize)]
pub struct Swap {
    /// File renamed into place -> the new code recorded as the generation's code (its projector
    /// starts right after), same version, code never compiled before.
    pub in_place_compiling_ms: f64,
    /// Same, code in the code cache: median and worst of the runs.
    pub in_place_cached_median_ms: f64,
    /// Worst cached swap.
    pub in_place_cached_max_ms: f64,
    /// Cached swaps measured.
    pub in_place_cached_runs: usize,
    /// File renamed into place -> a new generation of a higher version built over the whole
    /// log and active.
    pub new_generation_ms: f64,
    /// Events in the log the new generation replayed.
    pub new_generation_events: u64,
}

/// The counter fixture's builds, swapped over one another in a running host.
pub struct Counters {
    /// Version 1, code a.
    pub v1: PathBuf,
    /// Version 1, code b.
    pub v1b: PathBuf,
    /// Version 2.
    pub v2: PathBuf,
}

/// Swap the counter fixture's code in a running host over a store whose log is already there.
pub async fn hot_swap(
    bin: &Path,
    store: &Arc<dyn Store>,
    uri: &str,
    dir: &Path,
    counters: &Counters,
    cached_runs: usize,
) -> anyhow::Result<Swap> {
    let folder = dir.join("swap-projections");
    std::fs::create_dir_all(&folder)?;
    deploy_file(&counters.v1, &folder, "counter.wasm")?;
    let _host = Host::start(
        bin,
        uri,
        &folder,
        &dir.join("swap-cache"),
        &dir.join("swap.log"),
    )?;
    let limit = Duration::from_secs(600);
    time_until(limit, "the counter to catch up", || {
        let store = Arc::clone(store);
        async move {
            let head = store.head().await?;
            let generations = store.generations("counter").await?;
            Ok(generations
                .iter()
                .any(|g| g.state == GenerationState::Active && g.checkpoint == head))
        }
    })
    .await?;

    let code_is = |hash: String| {
        let store = Arc::clone(store);
        move || {
            let (store, hash) = (Arc::clone(&store), hash.clone());
            async move {
                let generations = store.generations("counter").await?;
                Ok(generations
                    .iter()
                    .any(|g| g.state == GenerationState::Active && g.code_hash == hash))
            }
        }
    };
    let started = Instant::now();
    let hash = deploy_file(&counters.v1b, &folder, "counter.wasm")?;
    time_until(limit, "the first swap", code_is(hash)).await?;
    let in_place_compiling_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut cached = Vec::new();
    for run in 0..cached_runs {
        let file = if run % 2 == 0 {
            &counters.v1
        } else {
            &counters.v1b
        };
        let started = Instant::now();
        let hash = deploy_file(file, &folder, "counter.wasm")?;
        time_until(limit, "a cached swap", code_is(hash)).await?;
        cached.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    cached.sort_by(f64::total_cmp);

    let new_generation_events = store.head().await?;
    let started = Instant::now();
    deploy_file(&counters.v2, &folder, "counter.wasm")?;
    time_until(limit, "the new generation", || {
        let store = Arc::clone(store);
        async move {
            let generations = store.generations("counter").await?;
            Ok(generations
                .iter()
                .any(|g| g.version == 2 && g.state == GenerationState::Active))
        }
    })
    .await?;
    Ok(Swap {
        in_place_compiling_ms,
        in_place_cached_median_ms: cached.get(cached.len() / 2).copied().unwrap_or(0.0),
        in_place_cached_max_ms: cached.last().copied().unwrap_or(0.0),
        in_place_cached_runs: cached.len(),
        new_generation_ms: started.elapsed().as_secs_f64() * 1000.0,
        new_generation_events,
    })
}

/// Memory figures, in MiB.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// A host with no projection, idle.
    pub idle_host_mib: f64,
    /// A host with the payment projection, idle after its replay.
    pub one_projection_idle_mib: f64,
    /// Peak while replaying it.
    pub one_projection_peak_mib: f64,
    /// Events it replayed.
    pub one_projection_events: u64,
    /// A host with `many` no-op projections, idle after their replays.
    pub many_projections_mib: f64,
    /// How many.
    pub many: usize,
    /// (many - idle host) / many.
    pub per_extra_projection_mib: f64,
    /// Seconds for all of them to catch up with the log.
    pub many_catch_up_s: f64,
    /// Appended from another process at a fixed rate while they follow live: the time until
    /// every one of them has every event, after the last append.
    pub many_live_drain_ms: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A copy of the no-op component declaring the projection `noop-<seven digits of n>`.
pub fn renamed_noop(noop: &[u8], n: usize) -> Vec<u8> {
    let from = b"noop-0000000";
    let to = format!("noop-{n:07}");
    let mut out = noop.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// Resident memory of hosts with no projection, one, and `many`.
pub async fn memory(
    bin: &Path,
    open: impl AsyncFn(&str) -> anyhow::Result<(Arc<dyn Store>, String)>,
    dir: &Path,
    payments: &Path,
    noop: &Path,
    many: usize,
) -> anyhow::Result<Memory> {
    let settle = Duration::from_secs(1);
    let limit = Duration::from_secs(900);
    let cache = dir.join("memory-cache");

    let (_, uri) = open("idle").await?;
    let folder = dir.join("memory-idle");
    std::fs::create_dir_all(&folder)?;
    let idle = Host::start(bin, &uri, &folder, &cache, &dir.join("idle.log"))?;
    tokio::time::sleep(settle).await;
    let (idle_kib, _) = idle.memory_kib()?;
    drop(idle);

    let (store, uri) = open("one").await?;
    let folder = dir.join("memory-one");
    std::fs::create_dir_all(&folder)?;
    deploy_file(payments, &folder, "payments.wasm")?;
    let one = Host::start(bin, &uri, &folder, &cache, &dir.join("one.log"))?;
    time_until(limit, "the payment projection", || {
        all_active_at_head(&store, 1)
    })
    .await?;
    tokio::time::sleep(settle).await;
    let (one_kib, one_peak_kib) = one.memory_kib()?;
    let one_projection_events = store.head().await?;
    drop(one);

    let (store, uri) = open("many").await?;
    let folder = dir.join("memory-many");
    std::fs::create_dir_all(&folder)?;
    let bytes = std::fs::read(noop)?;
    for n in 1..=many {
        std::fs::write(
            folder.join(format!("noop-{n:07}.wasm")),
            renamed_noop(&bytes, n),
        )?;
    }
    let started = Instant::now();
    let host = Host::start(bin, &uri, &folder, &cache, &dir.join("many.log"))?;
    time_until(limit, "the no-op projections", || {
        all_active_at_head(&store, many)
    })
    .await?;
    let many_catch_up_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let (many_kib, _) = host.memory_kib()?;

    // A payment every 100 ms for 5 s from this process, then the time until every projection
    // has every event.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for n in 0..50 {
        tick.tick().await;
        let event = refold::domain::NewEvent {
            id: None,
            aggregate_type: "Payment".into(),
            event_type: "PaymentProcessed".into(),
            event_data: serde_json::json!({ "amount": 1.5, "currency": "EUR" }),
            metadata: serde_json::json!({ "organizationId": "org-001" }),
            timestamp_ms: None,
        };
        let stream = format!("payment-memory-live-{n}");
        store
            .append(
                &stream,
                refold::domain::ExpectedVersion::NoStream,
                vec![event],
            )
            .await?;
    }
    let drained = time_until(limit, "the live appends", || {
        all_active_at_head(&store, many)
    })
    .await?;
    Ok(Memory {
        idle_host_mib: mib(idle_kib),
        one_projection_idle_mib: mib(one_kib),
        one_projection_peak_mib: mib(one_peak_kib),
        one_projection_events,
        many_projections_mib: mib(many_kib),
        many,
        per_extra_projection_mib: (mib(many_kib) - mib(idle_kib)) / many as f64,
        many_catch_up_s,
        many_live_drain_ms: drained.as_secs_f64() * 1000.0,
    })
}
