//! Process-wide counters for `/metrics`, in the Prometheus text format.
//!
//! Projectors and the HTTP API count into one static registry (a handful of atomic adds per
//! batch, never per event); values that live in the store (head, checkpoints, lag, generations)
//! are read when `/metrics` is scraped and passed to [`render`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the batch duration histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Projection {
    handled: u64,
    batches: u64,
    errors: u64,
    dead_letters: u64,
    /// Per bucket (not cumulative), then the sum of durations in seconds.
    buckets: [u64; BUCKETS.len() + 1],
    seconds: f64,
}

/// The registry.
pub struct Metrics {
    appended: AtomicU64,
    refused: AtomicU64,
    projections: Mutex<BTreeMap<String, Projection>>,
}

static METRICS: Metrics = Metrics {
    appended: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    projections: Mutex::new(BTreeMap::new()),
};

/// The process's registry.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn with(&self, projection: &str, f: impl FnOnce(&mut Projection)) {
        if let Ok(mut map) = self.projections.lock() {
            match map.get_mut(projection) {
                Some(p) => f(p),
                None => f(map.entry(projection.to_owned()).or_default()),
            }
        }
    }

    /// Events appended through this process.
    pub fn appended(&self, events: u64) {
        self.appended.fetch_add(events, Ordering::Relaxed);
    }

    /// A component file refused.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch of `events` committed by a projection, read to commit in `took`.
    pub fn batch(&self, projection: &str, events: u64, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.with(projection, |p| {
            p.handled += events;
            p.batches += 1;
            p.buckets[bucket] += 1;
            p.seconds += seconds;
        });
    }

    /// A batch of a projection failed (guest or host side).
    pub fn error(&self, projection: &str) {
        self.with(projection, |p| p.errors += 1);
    }

    /// An event skipped into the dead letters.
    pub fn dead_letter(&self, projection: &str) {
        self.with(projection, |p| p.dead_letters += 1);
    }

    /// Events handled per projection since the process started.
    pub fn handled(&self) -> BTreeMap<String, u64> {
        self.projections
            .lock()
            .map(|map| map.iter().map(|(k, v)| (k.clone(), v.handled)).collect())
            .unwrap_or_default()
    }
}

/// Store-side values for one scrape.
#[derive(Debug, Default)]
pub struct StoreGauges {
    /// The head position.
    pub head: u64,
    /// Per generation: projection, number, state, checkpoint.
    pub generations: Vec<(String, u32, &'static str, u64)>,
    /// Paused projections.
    pub paused: Vec<String>,
    /// Per projection: lag of its serving generation in seconds.
    pub lag_seconds: Vec<(String, f64)>,
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The registry and the store's values, as Prometheus text.
pub fn render(gauges: &StoreGauges) -> String {
    let metrics = global();
    let projections = metrics
        .projections
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut out = String::new();
    header(
        &mut out,
        "refold_events_appended_total",
        "counter",
        "Events appended through this host.",
    );
    let _ = writeln!(
        out,
        "refold_events_appended_total {}",
        metrics.appended.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "refold_components_refused_total",
        "counter",
        "Component files this host refused to deploy.",
    );
    let _ = writeln!(
        out,
        "refold_components_refused_total {}",
        metrics.refused.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "refold_head_position",
        "gauge",
        "Position of the last event in the store.",
    );
    let _ = writeln!(out, "refold_head_position {}", gauges.head);

    header(
        &mut out,
        "refold_events_handled_total",
        "counter",
        "Events handed to a projection by this host.",
    );
    for (name, p) in &projections {
        let _ = writeln!(
            out,
            "refold_events_handled_total{{projection=\"{}\"}} {}",
            label(name),
            p.handled
        );
    }
    header(
        &mut out,
        "refold_projection_errors_total",
        "counter",
        "Failed batches of a projection (guest or host side).",
    );
    for (name, p) in &projections {
        let _ = writeln!(
            out,
            "refold_projection_errors_total{{projection=\"{}\"}} {}",
            label(name),
            p.errors
        );
    }
    header(
        &mut out,
        "refold_batch_duration_seconds",
        "histogram",
        "Time from reading a batch to committing it.",
    );
    for (name, p) in &projections {
        let name = label(name);
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(p.buckets.iter()) {
            cumulative += count;
            let _ = writeln!(
                out,
                "refold_batch_duration_seconds_bucket{{projection=\"{name}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "refold_batch_duration_seconds_bucket{{projection=\"{name}\",le=\"+Inf\"}} {}",
            p.batches
        );
        let _ = writeln!(
            out,
            "refold_batch_duration_seconds_sum{{projection=\"{name}\"}} {}",
            p.seconds
        );
        let _ = writeln!(
            out,
            "refold_batch_duration_seconds_count{{projection=\"{name}\"}} {}",
            p.batches
        );
    }

    header(
        &mut out,
        "refold_generation_checkpoint",
        "gauge",
        "Last position a generation has folded in.",
    );
    for (name, number, state, checkpoint) in &gauges.generations {
        let _ = writeln!(
            out,
            "refold_generation_checkpoint{{projection=\"{}\",generation=\"{number}\",state=\"{state}\"}} {checkpoint}",
            label(name)
        );
    }
    header(
        &mut out,
        "refold_generation_lag_events",
        "gauge",
        "Events between a generation's checkpoint and the head.",
    );
    for (name, number, state, checkpoint) in &gauges.generations {
        let _ = writeln!(
            out,
            "refold_generation_lag_events{{projection=\"{}\",generation=\"{number}\",state=\"{state}\"}} {}",
            label(name),
            gauges.head.saturating_sub(*checkpoint)
        );
    }
    header(
        &mut out,
        "refold_projection_lag_seconds",
        "gauge",
        "Age of the oldest event the serving generation has not folded in (0 when caught up).",
    );
    for (name, seconds) in &gauges.lag_seconds {
        let _ = writeln!(
            out,
            "refold_projection_lag_seconds{{projection=\"{}\"}} {seconds}",
            label(name)
        );
    }
    header(
        &mut out,
        "refold_generations",
        "gauge",
        "Generations per projection and state.",
    );
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (name, _, state, _) in &gauges.generations {
        *counts.entry((name, state)).or_default() += 1;
    }
    for ((name, state), count) in counts {
        let _ = writeln!(
            out,
            "refold_generations{{projection=\"{}\",state=\"{state}\"}} {count}",
            label(name)
        );
    }
    header(
        &mut out,
        "refold_projection_paused",
        "gauge",
        "1 for a paused projection.",
    );
    for name in &gauges.paused {
        let _ = writeln!(
            out,
            "refold_projection_paused{{projection=\"{}\"}} 1",
            label(name)
        );
    }
    out
}
