//! `refold import` of the benchmark's history, written out as JSON Lines in the seeds' shape,
//! into a new embedded store: the real binary, timed whole.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use refold::domain::EventFilter;
use refold::store::Store;
use serde_json::{Value, json};

/// Write every event of `store` as a line, then import the file into a new store file.
pub async fn jsonl(bin: &Path, store: &Arc<dyn Store>, dir: &Path) -> anyhow::Result<Value> {
    let file = dir.join("history.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, 10_000, &EventFilter::default())
            .await?;
        if page.events.is_empty() {
            break;
        }
        after = page.scanned_to;
        for event in page.events {
            let line = json!({
                "_id": event.id,
                "aggregateId": event.aggregate_id,
                "aggregateType": event.aggregate_type,
                "eventType": event.event_type,
                "eventData": serde_json::from_str::<Value>(&event.data)?,
                "version": event.version,
                "timestamp": refold::domain::time::iso8601_millis(event.timestamp_ms),
                "metadata": serde_json::from_str::<Value>(&event.metadata)?,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    drop(out);
    let bytes = std::fs::metadata(&file)?.len();
    let target = format!("sqlite://{}", dir.join("imported.db").display());
    let started = Instant::now();
    let output = std::process::Command::new(bin)
        .args(["import", &file.to_string_lossy(), "--store", &target])
        .env("REFOLD_LOG", "warn")
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        output.status.success(),
        "refold import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout)?;
    let events = summary["stored"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        events == after,
        "refold import stored {events} events of {after}"
    );
    Ok(json!({
        "events": events,
        "file_bytes": bytes,
        "seconds": seconds,
        "events_per_s": events as f64 / seconds,
    }))
}
