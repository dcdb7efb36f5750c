//! Sustained load: the real `refold run` with ten projections follows a fixed append rate
//! for minutes, while this process (a second one, on loopback) appends through the HTTP API.
//! Measured: the rate held, append latency, how far the projections fall behind (events and
//! time from the append's answer to every projection having folded it in), and the host's
//! resident memory over time (flat or growing). With hostile neighbours, six hostile fixtures
//! run beside the ten, a `Poison` event every 100 appends sets them off (each failure skipped
//! as a dead letter), and the same figures are taken for the ten.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use refold::cli::demo_data;
use refold::domain::{ExpectedVersion, GenerationState, NewEvent};
use refold::store::{self, Store, StreamAppend};
use serde_json::{Value, json};

use crate::process::{self, Host};
use crate::replay::percentile;

/// What the load run is given.
pub struct Load<'a> {
    /// The `refold` binary.
    pub bin: &'a Path,
    /// Built components: the four examples, `healthy`, `counter_v1` and `noop`.
    pub guests: &'a Path,
    /// A scratch folder.
    pub dir: &'a Path,
    /// Appends per second.
    pub rate: u32,
    /// How long to hold it.
    pub duration: Duration,
    /// Events in the log before the load starts.
    pub history: usize,
    /// Run the hostile fixtures beside the ten projections.
    pub hostile: bool,
}

/// The hostile fixtures run beside the ten with `Load::hostile`; each misbehaves on `Poison`.
const HOSTILE: [&str; 6] = [
    "looper",
    "memory-bomb",
    "trapper",
    "undeclared",
    "bad-json",
    "grower",
];

/// Ten projections: the four examples, two fixtures that write per event, four no-ops; and the
/// hostile fixtures when asked. Returns how many of the ten.
fn deploy(guests: &Path, folder: &Path, hostile: bool) -> anyhow::Result<usize> {
    std::fs::create_dir_all(folder)?;
    let files = [
        "payments.wasm",
        "invoice_billing.wasm",
        "invoice_analytics.wasm",
        "user_profiles.wasm",
        "healthy.wasm",
        "counter_v1.wasm",
    ];
    for file in files {
        process::deploy_file(&guests.join(file), folder, file)?;
    }
    let noop = std::fs::read(guests.join("noop.wasm"))?;
    for n in 1..=4 {
        std::fs::write(
            folder.join(format!("noop-{n:07}.wasm")),
            process::renamed_noop(&noop, n),
        )?;
    }
    if hostile {
        for name in HOSTILE {
            let file = format!("{}.wasm", name.replace('-', "_"));
            process::deploy_file(&guests.join(&file), folder, &file)?;
        }
    }
    Ok(files.len() + 4)
}

/// The lowest checkpoint of the active generations of the ten (not the hostile ones).
async fn slowest(store: &Arc<dyn Store>) -> anyhow::Result<u64> {
    Ok(store
        .all_generations()
        .await?
        .into_iter()
        .filter(|g| g.state == GenerationState::Active && !HOSTILE.contains(&g.projection.as_str()))
        .map(|g| g.checkpoint)
        .min()
        .unwrap_or(0))
}

/// Whether the ten have folded in the whole log.
async fn ten_at_head(store: &Arc<dyn Store>) -> anyhow::Result<bool> {
    Ok(slowest(store).await? >= store.head().await?)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Run the load and return its figures.
pub async fn sustained(load: Load<'_>) -> anyhow::Result<Value> {
    let total = (f64::from(load.rate) * load.duration.as_secs_f64()) as usize;
    let mut appends = demo_data::generate(load.history + total * 3, 1234);
    // The first `history` events are the log before the load; the rest arrive over HTTP.
    let mut counted = 0;
    let split = appends
        .iter()
        .position(|a| {
            counted += a.events.len();
            counted >= load.history
        })
        .map_or(appends.len(), |i| i + 1);
    let live = appends.split_off(split);
    let db = load.dir.join("load.db");
    let uri = format!("sqlite://{}", db.display());
    let store = store::open(&uri).await?;
    for chunk in appends.chunks(500) {
        store.append_all(chunk.to_vec()).await?;
    }
    let folder = load.dir.join("load-projections");
    let projections = deploy(load.guests, &folder, load.hostile)?;
    let port = free_port()?;
    let skip = ["--on-failure", "*=skip:1"];
    let host = Host::serving(
        load.bin,
        &uri,
        &folder,
        &load.dir.join("load-cache"),
        &load.dir.join("load.log"),
        port,
        if load.hostile { &skip } else { &[] },
    )?;
    process::time_until(Duration::from_secs(600), "the ten projections", || {
        process::all_active_at_head(&store, projections)
    })
    .await?;
    eprintln!(
        "  {projections} projections live over {} events; appending {} per second for {:?}",
        store.head().await?,
        load.rate,
        load.duration
    );

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/api/streams/");
    let mut tick = tokio::time::interval(Duration::from_secs(1) / load.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut append_ms = Vec::with_capacity(total);
    let mut lag_ms = Vec::with_capacity(total);
    let mut lag_events: Vec<u64> = Vec::new();
    let mut memory: Vec<(f64, f64)> = Vec::new();
    // Appends answered but not yet folded in by every projection: (last position, answered at).
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_sample = Instant::now();
    let mut next_memory = Instant::now();
    let mut sent = 0usize;
    let mut events = 0usize;
    let mut live = live.into_iter();
    while started.elapsed() < load.duration {
        tick.tick().await;
        // With hostile neighbours, every hundredth append is a poison event of its own.
        let append = if load.hostile && sent % 100 == 99 {
            StreamAppend {
                aggregate_id: format!("poison-{sent}"),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    id: None,
                    aggregate_type: "Thing".into(),
                    event_type: "Poison".into(),
                    event_data: json!({}),
                    metadata: json!({}),
                    timestamp_ms: None,
                }],
            }
        } else {
            let Some(append) = live.next() else { break };
            append
        };
        let body = json!({
            "expectedVersion": match append.expected {
                ExpectedVersion::Exact(version) => json!(version),
                other => json!(other.to_string()),
            },
            "events": append.events.iter().map(|e| {
                let mut e = e.clone();
                e.timestamp_ms = None;
                e
            }).collect::<Vec<_>>(),
        });
        let sent_at = Instant::now();
        let answer = client
            .post(format!("{base}{}", append.aggregate_id))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "append refused: {}",
            answer.text().await?
        );
        let result: Value = answer.json().await?;
        let answered = Instant::now();
        append_ms.push((answered - sent_at).as_secs_f64() * 1000.0);
        pending.push_back((result["lastPosition"].as_u64().unwrap_or(0), answered));
        sent += 1;
        events += append.events.len();

        if answered >= next_sample {
            next_sample = answered + Duration::from_millis(20);
            let checkpoint = slowest(&store).await?;
            let head = store.head().await?;
            lag_events.push(head.saturating_sub(checkpoint));
            let now = Instant::now();
            while let Some(&(position, at)) = pending.front() {
                if position > checkpoint {
                    break;
                }
                lag_ms.push((now - at).as_secs_f64() * 1000.0);
                pending.pop_front();
            }
        }
        if answered >= next_memory {
            next_memory = answered + Duration::from_secs(1);
            let (rss, _) = host.memory_kib()?;
            memory.push((started.elapsed().as_secs_f64(), rss as f64 / 1024.0));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let drained = process::time_until(Duration::from_secs(600), "the last appends", || {
        ten_at_head(&store)
    })
    .await?;
    let (rss_end, peak) = host.memory_kib()?;
    drop(host);

    // Memory after the first fifth (warm caches), its slope over the rest, by least squares.
    let warm: Vec<(f64, f64)> = memory
        .iter()
        .copied()
        .filter(|(t, _)| *t >= seconds / 5.0)
        .collect();
    let slope_mib_per_min = {
        let n = warm.len().max(1) as f64;
        let (mt, mm) = (
            warm.iter().map(|p| p.0).sum::<f64>() / n,
            warm.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let cov: f64 = warm.iter().map(|(t, m)| (t - mt) * (m - mm)).sum();
        let var: f64 = warm.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
        if var > 0.0 { cov / var * 60.0 } else { 0.0 }
    };
    append_ms.sort_by(f64::total_cmp);
    lag_ms.sort_by(f64::total_cmp);
    lag_events.sort_unstable();
    Ok(json!({
        "projections": projections,
        "hostile_neighbours": if load.hostile { json!(HOSTILE) } else { json!([]) },
        "history_events": load.history,
        "target_appends_per_s": load.rate,
        "seconds": seconds,
        "appends": sent,
        "events": events,
        "appends_per_s": sent as f64 / seconds,
        "append_ms": { "p50": percentile(&append_ms, 0.5), "p99": percentile(&append_ms, 0.99), "max": append_ms.last() },
        "lag_ms_until_all_folded": {
            "p50": percentile(&lag_ms, 0.5), "p99": percentile(&lag_ms, 0.99), "max": lag_ms.last(),
            "sampled_every_ms": 20,
        },
        "lag_events": { "p50": lag_events.get(lag_events.len() / 2), "p99": lag_events.get(lag_events.len() * 99 / 100), "max": lag_events.last() },
        "drain_after_load_ms": drained.as_secs_f64() * 1000.0,
        "rss_mib": {
            "after_first_fifth": warm.first().map(|p| p.1),
            "end": rss_end as f64 / 1024.0,
            "peak": peak as f64 / 1024.0,
            "slope_after_first_fifth_mib_per_min": slope_mib_per_min,
        },
        "rss_samples": memory.iter().step_by(10).map(|(t, m)| json!([t.round(), m])).collect::<Vec<_>>(),
    }))
}
