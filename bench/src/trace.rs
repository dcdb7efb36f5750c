//! `refold trace` on the benchmark's history, the real binary timed whole: one payment (a few
//! events), one organization's counters (written by most batches), and the same payment with
//! `--full` (every event replayed), each after a first run that compiles the component.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

/// Trace documents of the payments guest's first generation in the store at `uri`.
pub fn documents(bin: &Path, db: &Path, uri: &str, component: &Path) -> anyhow::Result<Value> {
    let first = |table: &str| -> anyhow::Result<String> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(conn.query_row(
            &format!("SELECT id FROM \"payments__g1__{table}\" ORDER BY id LIMIT 1"),
            [],
            |r| r.get(0),
        )?)
    };
    let (payment, organization) = (first("payments")?, first("org_stats")?);
    let run = |collection: &str, id: &str, full: bool| -> anyhow::Result<(f64, Value)> {
        let mut command = std::process::Command::new(bin);
        command
            .args([
                "trace", "payments", collection, id, "--json", "--store", uri,
            ])
            .arg("--component")
            .arg(component)
            .env("REFOLD_LOG", "warn");
        if full {
            command.arg("--full");
        }
        let started = Instant::now();
        let output = command.output()?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            output.status.success(),
            "refold trace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((seconds, serde_json::from_slice(&output.stdout)?))
    };
    run("payments", &payment, false)?;
    let mut figures = Vec::new();
    for (what, collection, id, full) in [
        ("one payment", "payments", &payment, false),
        (
            "one organization's counters",
            "org_stats",
            &organization,
            false,
        ),
        ("one payment, --full", "payments", &payment, true),
    ] {
        let (seconds, trace) = run(collection, id, full)?;
        anyhow::ensure!(
            trace["matches"] == json!(true),
            "the trace of {collection}/{id} does not end with the stored document"
        );
        figures.push(json!({
            "document": what,
            "collection": collection,
            "id": id,
            "mode": trace["mode"],
            "events_replayed": trace["replayed"],
            "steps": trace["steps"].as_array().map_or(0, Vec::len),
            "seconds": seconds,
        }));
    }
    Ok(Value::Array(figures))
}
