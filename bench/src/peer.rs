//! The peer: `bench/peer/payments_eventsourcing.py` folds the same payment events into the same
//! read model with the Python `eventsourcing` library; its rate is reported beside Refold's
//! Rust guest from the same run, on the same machine, as a ratio.

use std::path::Path;

use serde_json::{Value, json};

use crate::replay::Replay;

/// Run the peer on the payment events of the embedded store `db` (by now including the live
/// latency run's); check it wrote as many payment documents as the Refold guest.
pub async fn eventsourcing(
    python: &str,
    root: &Path,
    db: &Path,
    work: &Path,
    refold: &Replay,
) -> anyhow::Result<Value> {
    let script = root.join("bench/peer/payments_eventsourcing.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg(db)
        .arg(work.join("peer"))
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{python} {}: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut result: Value = serde_json::from_slice(&output.stdout)?;
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let refold_payments: i64 =
        conn.query_row("SELECT count(*) FROM \"payments__g1__payments\"", [], |r| {
            r.get(0)
        })?;
    anyhow::ensure!(
        result["payments_documents"].as_i64() == Some(refold_payments),
        "the peer wrote {} payment documents, Refold {refold_payments}",
        result["payments_documents"]
    );
    let peer_rate = result["events_per_s"].as_f64().unwrap_or(0.0);
    result["refold_guest_handled_per_s"] = json!(refold.handled_per_s);
    result["ratio_refold_to_peer"] = json!(refold.handled_per_s / peer_rate.max(f64::MIN_POSITIVE));
    Ok(result)
}
