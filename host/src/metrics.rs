//! Process-wide counters for `/metrics`, in the Prometheus text format.
//!
//! Projectors and the HTTP API count into one static registry (a handful of atomic adds per
//! batch, never per event); values that live in the store (head, checkpoints, lag, generations)
//! are read when `/metrics` is scraped and passed to [`render`].
//!
//! What this host counts (appends, refusals, events handled, errors, batch durations) and the
//! generations whose lease it holds carry a `host` label, its name ([`set_host`]), so several
//! hosts on one store can be told apart; what the store holds (head, checkpoints, lag) is the
//! same from every host and carries none.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
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

static HOST: OnceLock<String> = OnceLock::new();

/// The process's registry.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Name this host in its metrics (once: later calls change nothing); `refold run` names it as
/// in its leases.
pub fn set_host(name: &str) {
    let _ = HOST.set(name.to_owned());
}

/// This host's name in its metrics: as set, else the machine's name and the process id.
pub fn host() -> &'static str {
    HOST.get_or_init(|| format!("{}:{}", crate::machine::name(), std::process::id()))
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
    /// This host's name.
    pub host: String,
    /// The generations whose lease this host holds, as (projection, number).
    pub owned: Vec<(String, u32)>,
}

/// A metric family. Its name (`refold_<noun>_<unit>`) is written once, here, and both its
/// `# HELP`/`# TYPE` header and every sample take it from the constant, so they cannot drift.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const EVENTS_APPENDED_TOTAL: Family = Family {
    name: "refold_events_appended_total",
    kind: "counter",
    help: "Events appended through this host.",
};
const COMPONENTS_REFUSED_TOTAL: Family = Family {
    name: "refold_components_refused_total",
    kind: "counter",
    help: "Component files this host refused to deploy.",
};
const HEAD_POSITION: Family = Family {
    name: "refold_head_position",
    kind: "gauge",
    help: "Position of the last event in the store.",
};
const EVENTS_HANDLED_TOTAL: Family = Family {
    name: "refold_events_handled_total",
    kind: "counter",
    help: "Events handed to a projection by this host.",
};
const PROJECTION_ERRORS_TOTAL: Family = Family {
    name: "refold_projection_errors_total",
    kind: "counter",
    help: "Failed batches of a projection (guest or host side).",
};
const DEAD_LETTERS_TOTAL: Family = Family {
    name: "refold_dead_letters_total",
    kind: "counter",
    help: "Events a projection skipped into the dead letters on this host.",
};
const BATCH_DURATION_SECONDS: Family = Family {
    name: "refold_batch_duration_seconds",
    kind: "histogram",
    help: "Time from reading a batch to committing it.",
};
const GENERATION_CHECKPOINT: Family = Family {
    name: "refold_generation_checkpoint",
    kind: "gauge",
    help: "Last position a generation has folded in.",
};
const GENERATION_LAG_EVENTS: Family = Family {
    name: "refold_generation_lag_events",
    kind: "gauge",
    help: "Events between a generation's checkpoint and the head.",
};
const PROJECTION_LAG_SECONDS: Family = Family {
    name: "refold_projection_lag_seconds",
    kind: "gauge",
    help: "Age of the oldest event the serving generation has not folded in (0 when caught up).",
};
const GENERATIONS: Family = Family {
    name: "refold_generations",
    kind: "gauge",
    help: "Generations per projection and state.",
};
const GENERATION_OWNED: Family = Family {
    name: "refold_generation_owned",
    kind: "gauge",
    help: "1 for each generation whose lease this host holds (several hosts on one store).",
};
const PROJECTION_PAUSED: Family = Family {
    name: "refold_projection_paused",
    kind: "gauge",
    help: "1 for a paused projection.",
};

impl Family {
    fn header(&self, out: &mut String) {
        let Self { name, kind, help } = self;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the family itself.
    fn sample(&self, out: &mut String, labels: &[(&str, &dyn Display)], value: impl Display) {
        self.series(out, "", labels, value);
    }

    /// One sample of the series `name` + `suffix` (a histogram's `_bucket`, `_sum`, `_count`).
    fn series(
        &self,
        out: &mut String,
        suffix: &str,
        labels: &[(&str, &dyn Display)],
        value: impl Display,
    ) {
        out.push_str(self.name);
        out.push_str(suffix);
        for (i, (key, text)) in labels.iter().enumerate() {
            let open = if i == 0 { '{' } else { ',' };
            let _ = write!(out, "{open}{key}=\"{}\"", label(&text.to_string()));
        }
        if !labels.is_empty() {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The registry and the store's values, as Prometheus text.
pub fn render(gauges: &StoreGauges) -> String {
    render_from(global(), gauges)
}

fn render_from(metrics: &Metrics, gauges: &StoreGauges) -> String {
    let projections = metrics
        .projections
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut text = String::new();
    let out = &mut text;
    let host: (&str, &dyn Display) = ("host", &gauges.host);
    EVENTS_APPENDED_TOTAL.header(out);
    EVENTS_APPENDED_TOTAL.sample(out, &[host], metrics.appended.load(Ordering::Relaxed));
    COMPONENTS_REFUSED_TOTAL.header(out);
    COMPONENTS_REFUSED_TOTAL.sample(out, &[host], metrics.refused.load(Ordering::Relaxed));
    HEAD_POSITION.header(out);
    HEAD_POSITION.sample(out, &[], gauges.head);

    EVENTS_HANDLED_TOTAL.header(out);
    for (name, p) in &projections {
        EVENTS_HANDLED_TOTAL.sample(out, &[("projection", name), host], p.handled);
    }
    PROJECTION_ERRORS_TOTAL.header(out);
    for (name, p) in &projections {
        PROJECTION_ERRORS_TOTAL.sample(out, &[("projection", name), host], p.errors);
    }
    DEAD_LETTERS_TOTAL.header(out);
    for (name, p) in &projections {
        DEAD_LETTERS_TOTAL.sample(out, &[("projection", name), host], p.dead_letters);
    }
    BATCH_DURATION_SECONDS.header(out);
    for (name, p) in &projections {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(p.buckets.iter()) {
            cumulative += count;
            BATCH_DURATION_SECONDS.series(
                out,
                "_bucket",
                &[("projection", name), ("le", bound), host],
                cumulative,
            );
        }
        BATCH_DURATION_SECONDS.series(
            out,
            "_bucket",
            &[("projection", name), ("le", &"+Inf"), host],
            p.batches,
        );
        let labels = [("projection", name as &dyn Display), host];
        BATCH_DURATION_SECONDS.series(out, "_sum", &labels, p.seconds);
        BATCH_DURATION_SECONDS.series(out, "_count", &labels, p.batches);
    }

    GENERATION_CHECKPOINT.header(out);
    for (name, number, state, checkpoint) in &gauges.generations {
        GENERATION_CHECKPOINT.sample(
            out,
            &[
                ("projection", name),
                ("generation", number),
                ("state", state),
            ],
            checkpoint,
        );
    }
    GENERATION_LAG_EVENTS.header(out);
    for (name, number, state, checkpoint) in &gauges.generations {
        GENERATION_LAG_EVENTS.sample(
            out,
            &[
                ("projection", name),
                ("generation", number),
                ("state", state),
            ],
            gauges.head.saturating_sub(*checkpoint),
        );
    }
    PROJECTION_LAG_SECONDS.header(out);
    for (name, seconds) in &gauges.lag_seconds {
        PROJECTION_LAG_SECONDS.sample(out, &[("projection", name)], seconds);
    }
    GENERATIONS.header(out);
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (name, _, state, _) in &gauges.generations {
        *counts.entry((name, state)).or_default() += 1;
    }
    for ((name, state), count) in counts {
        GENERATIONS.sample(out, &[("projection", &name), ("state", &state)], count);
    }
    PROJECTION_PAUSED.header(out);
    for name in &gauges.paused {
        PROJECTION_PAUSED.sample(out, &[("projection", name)], 1);
    }
    GENERATION_OWNED.header(out);
    for (name, number) in &gauges.owned {
        GENERATION_OWNED.sample(
            out,
            &[("projection", name), ("generation", number), host],
            1,
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::{Metrics, StoreGauges, render_from};

    /// The `/metrics` text for the registry and store below, byte for byte: scrapers and
    /// dashboards read it, so a change here is a change of the API.
    const EXPECTED: &str = r#"# HELP refold_events_appended_total Events appended through this host.
# TYPE refold_events_appended_total counter
refold_events_appended_total{host="box:7"} 7
# HELP refold_components_refused_total Component files this host refused to deploy.
# TYPE refold_components_refused_total counter
refold_components_refused_total{host="box:7"} 1
# HELP refold_head_position Position of the last event in the store.
# TYPE refold_head_position gauge
refold_head_position 20
# HELP refold_events_handled_total Events handed to a projection by this host.
# TYPE refold_events_handled_total counter
refold_events_handled_total{projection="a\"b\\c\nd",host="box:7"} 0
refold_events_handled_total{projection="payments",host="box:7"} 15
# HELP refold_projection_errors_total Failed batches of a projection (guest or host side).
# TYPE refold_projection_errors_total counter
refold_projection_errors_total{projection="a\"b\\c\nd",host="box:7"} 0
refold_projection_errors_total{projection="payments",host="box:7"} 1
# HELP refold_dead_letters_total Events a projection skipped into the dead letters on this host.
# TYPE refold_dead_letters_total counter
refold_dead_letters_total{projection="a\"b\\c\nd",host="box:7"} 1
refold_dead_letters_total{projection="payments",host="box:7"} 0
# HELP refold_batch_duration_seconds Time from reading a batch to committing it.
# TYPE refold_batch_duration_seconds histogram
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.0005",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.001",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.0025",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.005",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.01",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.025",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.05",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.1",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.25",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="0.5",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="1",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="5",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="a\"b\\c\nd",le="+Inf",host="box:7"} 0
refold_batch_duration_seconds_sum{projection="a\"b\\c\nd",host="box:7"} 0
refold_batch_duration_seconds_count{projection="a\"b\\c\nd",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="payments",le="0.0005",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="payments",le="0.001",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="payments",le="0.0025",host="box:7"} 0
refold_batch_duration_seconds_bucket{projection="payments",le="0.005",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="0.01",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="0.025",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="0.05",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="0.1",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="0.25",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="0.5",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="1",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="5",host="box:7"} 1
refold_batch_duration_seconds_bucket{projection="payments",le="+Inf",host="box:7"} 2
refold_batch_duration_seconds_sum{projection="payments",host="box:7"} 9.003
refold_batch_duration_seconds_count{projection="payments",host="box:7"} 2
# HELP refold_generation_checkpoint Last position a generation has folded in.
# TYPE refold_generation_checkpoint gauge
refold_generation_checkpoint{projection="payments",generation="1",state="active"} 15
refold_generation_checkpoint{projection="payments",generation="2",state="building"} 4
refold_generation_checkpoint{projection="a\"b\\c\nd",generation="1",state="active"} 20
# HELP refold_generation_lag_events Events between a generation's checkpoint and the head.
# TYPE refold_generation_lag_events gauge
refold_generation_lag_events{projection="payments",generation="1",state="active"} 5
refold_generation_lag_events{projection="payments",generation="2",state="building"} 16
refold_generation_lag_events{projection="a\"b\\c\nd",generation="1",state="active"} 0
# HELP refold_projection_lag_seconds Age of the oldest event the serving generation has not folded in (0 when caught up).
# TYPE refold_projection_lag_seconds gauge
refold_projection_lag_seconds{projection="payments"} 1.5
# HELP refold_generations Generations per projection and state.
# TYPE refold_generations gauge
refold_generations{projection="a\"b\\c\nd",state="active"} 1
refold_generations{projection="payments",state="active"} 1
refold_generations{projection="payments",state="building"} 1
# HELP refold_projection_paused 1 for a paused projection.
# TYPE refold_projection_paused gauge
refold_projection_paused{projection="a\"b\\c\nd"} 1
# HELP refold_generation_owned 1 for each generation whose lease this host holds (several hosts on one store).
# TYPE refold_generation_owned gauge
refold_generation_owned{projection="payments",generation="2",host="box:7"} 1
"#;

    #[test]
    fn renders_the_prometheus_text() {
        let metrics = Metrics {
            appended: AtomicU64::new(7),
            refused: AtomicU64::new(1),
            projections: Mutex::new(BTreeMap::new()),
        };
        metrics.batch("payments", 10, Duration::from_millis(3));
        metrics.batch("payments", 5, Duration::from_secs(9));
        metrics.error("payments");
        metrics.dead_letter("a\"b\\c\nd");
        let gauges = StoreGauges {
            head: 20,
            generations: vec![
                ("payments".into(), 1, "active", 15),
                ("payments".into(), 2, "building", 4),
                ("a\"b\\c\nd".into(), 1, "active", 20),
            ],
            paused: vec!["a\"b\\c\nd".into()],
            lag_seconds: vec![("payments".into(), 1.5)],
            host: "box:7".into(),
            owned: vec![("payments".into(), 2)],
        };
        assert_eq!(render_from(&metrics, &gauges), EXPECTED);
    }
}
