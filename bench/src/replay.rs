//! Replay and live latency, in process: a supervisor over the store runs one handler (a guest or
//! native code) from position 0 to the head, then follows appends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use refold::domain::{ExpectedVersion, NewEvent};
use refold::projector::{CodeSource, Handler, ProjectorState, Supervisor, Upcaster};
use refold::store::Store;
use serde::Serialize;
use serde_json::json;

/// Code by hash is never needed here: every run deploys its handler.
struct NoCode;

impl CodeSource for NoCode {
    fn load(&self, code_hash: &str) -> Result<Arc<dyn Handler>, String> {
        Err(format!("{code_hash}: not available in the benchmark"))
    }

    fn load_upcaster(&self, code_hash: &str) -> Result<Arc<dyn Upcaster>, String> {
        Err(format!("{code_hash}: not available in the benchmark"))
    }
}

/// One replay.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// What ran.
    pub name: String,
    /// Events in the log.
    pub log_events: u64,
    /// Events handed to the handler.
    pub handled: u64,
    /// Seconds from deploy to caught up.
    pub seconds: f64,
    /// Log events per second.
    pub log_events_per_s: f64,
    /// Handled events per second.
    pub handled_per_s: f64,
}

/// Deploy `handler` on a fresh supervisor and time its replay to the head.
pub async fn replay(
    store: &Arc<dyn Store>,
    handler: Arc<dyn Handler>,
    label: &str,
) -> anyhow::Result<(Replay, Supervisor)> {
    let head = store.head().await?;
    let mut supervisor = Supervisor::new(Arc::clone(store), Arc::new(NoCode));
    let started = Instant::now();
    supervisor.deploy(handler).await?;
    while !supervisor.caught_up(head) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let statuses = supervisor.statuses();
    if let Some(error) = statuses.iter().find_map(|s| s.error.clone()) {
        anyhow::bail!("{label} stopped: {error}");
    }
    let handled = statuses.iter().map(|s| s.handled).sum();
    Ok((
        Replay {
            name: label.to_owned(),
            log_events: head,
            handled,
            seconds,
            log_events_per_s: head as f64 / seconds,
            handled_per_s: handled as f64 / seconds,
        },
        supervisor,
    ))
}

/// [`replay`], then stop its supervisor; the figures are also printed.
pub async fn replay_alone(
    store: &Arc<dyn Store>,
    handler: Arc<dyn Handler>,
    label: &str,
) -> anyhow::Result<Replay> {
    let (run, supervisor) = replay(store, handler, label).await?;
    supervisor.shutdown().await;
    eprintln!("  {}: {:.0} handled events/s", run.name, run.handled_per_s);
    Ok(run)
}

/// Live latency figures.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Appends per second attempted.
    pub rate_per_s: u32,
    /// Samples.
    pub samples: usize,
    /// Milliseconds.
    pub p50_ms: f64,
    /// Milliseconds.
    pub p99_ms: f64,
    /// Milliseconds.
    pub max_ms: f64,
}

/// Append one payment every `1/rate` s for `duration`; for each, the time from the append call
/// to the supervisor's projectors having committed it.
pub async fn live_latency(
    store: &Arc<dyn Store>,
    supervisor: &Supervisor,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Latency> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let end = Instant::now() + duration;
    let mut receivers = supervisor.status_receivers();
    let mut n = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        n += 1;
        let event = NewEvent {
            id: None,
            aggregate_type: "Payment".into(),
            event_type: "PaymentProcessed".into(),
            event_data: json!({ "amount": 10.5, "currency": "EUR", "status": "completed", "method": "card" }),
            metadata: json!({ "userId": "user-000001", "organizationId": format!("org-{:03}", 1 + n % 25) }),
            timestamp_ms: None,
        };
        let started = Instant::now();
        let position = store
            .append(
                &format!("payment-bench-live-{n}-{}", std::process::id()),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await?
            .last_position;
        for receiver in &mut receivers {
            receiver
                .wait_for(|s| {
                    s.state == ProjectorState::Stopped
                        || (s.state == ProjectorState::Live && s.checkpoint >= position)
                })
                .await?;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok(Latency {
        rate_per_s: rate,
        samples: samples.len(),
        p50_ms: percentile(&samples, 0.5),
        p99_ms: percentile(&samples, 0.99),
        max_ms: percentile(&samples, 1.0),
    })
}

/// The `q` quantile (0 to 1) of sorted samples; 0 when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
