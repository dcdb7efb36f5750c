//! The payment replay on MongoDB: the raw store loop and the Rust guest, in one run. Against
//! SecantusDB (started here, a Python server) unless `REFOLD_BENCH_MONGODB_URI` names a real
//! replica set; the result says which.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refold::engine::Engine;
use refold::store;
use serde_json::{Value, json};

use crate::{fill, native, replay, warm};

/// A server started here, killed on drop.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server to measure: `REFOLD_BENCH_MONGODB_URI`, or a SecantusDB started here (kept
/// running while the first value lives); with its URI and what it is.
pub fn server() -> anyhow::Result<(Option<Server>, String, &'static str)> {
    Ok(match std::env::var("REFOLD_BENCH_MONGODB_URI") {
        Ok(uri) => (None, uri, "MongoDB (REFOLD_BENCH_MONGODB_URI)"),
        Err(_) => {
            let (server, uri) = start_secantus()?;
            (
                Some(server),
                uri,
                "SecantusDB 0.7.0b3 (a Python server, not mongod)",
            )
        }
    })
}

/// `uri` naming another database.
pub fn with_database(uri: &str, database: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("mongodb", uri));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    format!("{scheme}://{authority}/{database}?{query}")
}

/// Open the store, waiting up to 30 s for a server that is starting.
pub async fn open_when_up(uri: &str) -> anyhow::Result<Arc<dyn store::Store>> {
    let started = Instant::now();
    loop {
        match store::open(uri).await {
            Ok(store) => return Ok(store),
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn start_secantus() -> anyhow::Result<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("python3")
        .args(["-c", "import sys; from secantus.cli import main; sys.argv[0] = 'secantusd-py'; sys.exit(main())"])
        .args(["--port", &port.to_string(), "--storage-path", ":memory:", "--log-level", "WARNING"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((
        Server(child),
        format!("mongodb://127.0.0.1:{port}/refold_bench?replicaSet=secantus"),
    ))
}

/// Replay `events` events on MongoDB: the payment raw loop, the payment guest, the no-op guest.
pub async fn replay(
    engine: &Arc<Engine>,
    payments: &Path,
    noop: &Path,
    events: usize,
) -> anyhow::Result<Value> {
    let (_server, uri, server) = server()?;
    let store = open_when_up(&uri).await?;
    let append_per_s = fill(&store, events, 42).await?;
    warm(&store).await?;
    let started = Instant::now();
    let handled = native::raw_replay(&store, "payments_raw", 500).await?;
    let raw_seconds = started.elapsed().as_secs_f64();
    let head = store.head().await?;
    let load = |file: &Path| -> anyhow::Result<Arc<dyn refold::projector::Handler>> {
        Ok(Arc::new(engine.load(&std::fs::read(file)?)?))
    };
    let (guest, supervisor) =
        replay::replay(&store, load(payments)?, "payments, Rust guest").await?;
    supervisor.shutdown().await;
    let (noop, supervisor) = replay::replay(&store, load(noop)?, "no-op, Rust guest").await?;
    supervisor.shutdown().await;
    Ok(json!({
        "server": server,
        "events": head,
        "append_events_per_s": append_per_s,
        "raw_store_loop": { "seconds": raw_seconds, "handled": handled, "log_events_per_s": head as f64 / raw_seconds },
        "guest": guest,
        "noop_guest": noop,
        "ratio_guest_to_raw": guest.log_events_per_s / (head as f64 / raw_seconds),
    }))
}
