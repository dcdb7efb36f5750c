//! Appends over the HTTP API from concurrent clients, one event per request, at full durability
//! on the embedded store: the case group commit is for (appends that arrive while a commit is
//! under way share the next one).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::free_port;
use crate::process::{self, Host};

/// `clients` clients appending one event per request, each to streams of its own, for
/// `duration`, against a host with no projection; every append must be answered 201.
pub async fn concurrent(
    bin: &Path,
    dir: &Path,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let db = dir.join("http-appends.db");
    let uri = format!("sqlite://{}", db.display());
    let folder = dir.join("http-appends-projections");
    std::fs::create_dir_all(&folder)?;
    let port = free_port()?;
    let _host = Host::serving(
        bin,
        &uri,
        &folder,
        &dir.join("http-appends-cache"),
        &dir.join("http-appends.log"),
        port,
        &[],
    )?;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    process::time_until(Duration::from_secs(60), "the host's API", || async {
        Ok(client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await?;
    let started = Instant::now();
    let appenders: Vec<_> = (0..clients)
        .map(|c| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let mut sent = 0u64;
                while started.elapsed() < duration {
                    let body = json!({ "expectedVersion": "no_stream", "events": [{
                        "aggregateType": "Thing", "eventType": "Tick",
                        "eventData": { "n": sent }, "metadata": {},
                    }] });
                    let answer = client
                        .post(format!("{base}/api/streams/client-{c}-{sent}"))
                        .json(&body)
                        .send()
                        .await?;
                    anyhow::ensure!(
                        answer.status() == reqwest::StatusCode::CREATED,
                        "append answered {}",
                        answer.status()
                    );
                    sent += 1;
                }
                anyhow::Ok(sent)
            })
        })
        .collect();
    let mut events = 0;
    for appender in appenders {
        events += appender.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "clients": clients,
        "events": events,
        "seconds": seconds,
        "events_per_s": events as f64 / seconds,
    }))
}
