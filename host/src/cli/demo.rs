//! `refold demo`: the zero set-up walkthrough.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::run::{HostArgs, HttpArgs, apply_changes, start_folder, stop_signal, sync};
use super::{demo_data, progress};
use crate::deploy::{CachedCode, FolderWatcher};
use crate::domain::{ExpectedVersion, NewEvent, time};
use crate::guest_build;
use crate::projector::Supervisor;
use crate::store::{self, Store};

/// Arguments of `refold demo` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's store file (deleted and recreated).
    #[arg(long, default_value = "refold-demo.db")]
    db: PathBuf,
    /// Events in the generated history.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Seed of the generated history.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rust example projections to build (a cargo workspace).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../example-projections/rust"))]
    examples: PathBuf,
    /// Use the components already in this folder instead of building the examples.
    #[arg(long)]
    projections: Option<PathBuf>,
    /// Exit once the replay is done and the samples are printed, instead of following live.
    #[arg(long)]
    exit_when_caught_up: bool,
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    http: HttpArgs,
}

fn remove_store_files(db: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("removing the previous demo store {}", db.display()));
            }
        }
    }
    Ok(())
}

async fn import(store: &Arc<dyn Store>, events: usize, seed: u64) -> anyhow::Result<()> {
    let appends = demo_data::generate(events, seed);
    let bar = ProgressBar::new(events as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>20} [{bar:40}] {pos:>9}/{len} {per_sec:>12}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("appending history");
    let mut chunk = Vec::new();
    let mut in_chunk = 0;
    for append in appends {
        in_chunk += append.events.len();
        chunk.push(append);
        if in_chunk >= 2_000 {
            store.append_all(std::mem::take(&mut chunk)).await?;
            bar.inc(in_chunk as u64);
            in_chunk = 0;
        }
    }
    if !chunk.is_empty() {
        store.append_all(chunk).await?;
        bar.inc(in_chunk as u64);
    }
    bar.finish();
    Ok(())
}

async fn show_samples(store: &Arc<dyn Store>) {
    let samples = [
        ("payments", "payments", Some("payment-000001")),
        ("payments", "org_stats", Some("org-001")),
        ("invoice-billing", "invoices", Some("invoice-000001")),
        ("invoice-analytics", "monthly", None),
        ("user-profiles", "users", Some("user-000001")),
    ];
    for (projection, collection, id) in samples {
        let document = match id {
            Some(id) => store
                .get_document(projection, collection, id)
                .await
                .ok()
                .flatten(),
            None => store
                .list_documents(projection, collection, 1)
                .await
                .ok()
                .and_then(|mut d| d.pop()),
        };
        if let Some(document) = document {
            println!("\n{projection}__{collection}:");
            println!(
                "{}",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            );
        }
    }
}

/// Append one live payment and report when every projector has folded it in.
async fn live_payment(
    store: &Arc<dyn Store>,
    supervisor: &Supervisor,
    n: u64,
) -> anyhow::Result<()> {
    let id = format!("payment-live-{n:06}");
    let organization = format!("org-{:03}", 1 + n % 25);
    let event = NewEvent {
        id: None,
        aggregate_type: "Payment".into(),
        event_type: "PaymentProcessed".into(),
        event_data: json!({ "amount": 10.0 + n as f64, "currency": "EUR", "status": "completed", "method": "card" }),
        metadata: json!({ "userId": "user-000001", "organizationId": organization }),
        timestamp_ms: None,
    };
    let started = Instant::now();
    let result = store
        .append(&id, ExpectedVersion::NoStream, vec![event])
        .await?;
    supervisor.wait_for_serving(result.last_position).await;
    println!(
        "{}  appended {id} at position {} -> visible in every read model after {:.1} ms",
        time::iso8601_millis(time::now_millis()),
        result.last_position,
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

pub(super) async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let projections = match &args.projections {
        Some(dir) => dir.clone(),
        None => {
            let out = std::env::temp_dir()
                .join(format!("refold-demo-projections-{}", std::process::id()));
            println!(
                "building the example projections in {} (the first build takes a minute)...",
                args.examples.display()
            );
            let examples = args.examples.clone();
            let built = tokio::task::spawn_blocking({
                let out = out.clone();
                move || guest_build::build_rust(&examples, &out)
            })
            .await??;
            println!("built {} components", built.len());
            out
        }
    };
    // A host serving the file (an earlier demo, a `refold run`) keeps it: the demo is refused
    // rather than delete a store under it.
    let _lock = store::sqlite::lock_for_host(&args.db)?;
    remove_store_files(&args.db)?;
    let uri = format!("sqlite://{}", args.db.display());
    let store = store::open(&uri).await?;
    println!(
        "created the embedded store {}; appending {} events...",
        args.db.display(),
        args.events
    );
    import(&store, args.events, args.seed).await?;
    let head = store.head().await?;

    println!("replaying {head} events into the projections...");
    let started = Instant::now();
    let engine = args.host.engine()?;
    let mut deployer = start_folder(
        Arc::clone(&store),
        &projections,
        &args.host,
        Arc::clone(&engine),
    )
    .await?;
    let supervisor = &deployer.supervisor;
    progress::until_caught_up(supervisor.status_receivers(), head).await;
    supervisor.wait_for(head).await;
    let elapsed = started.elapsed();
    let count = supervisor.statuses().len();
    println!(
        "\nreplayed {head} events into {count} projections in {:.2} s: {:.0} events/s per projection, {:.0} events/s in all",
        elapsed.as_secs_f64(),
        head as f64 / elapsed.as_secs_f64(),
        (head * count as u64) as f64 / elapsed.as_secs_f64()
    );
    let failed: Vec<_> = supervisor
        .statuses()
        .into_iter()
        .filter_map(|s| s.error.map(|e| (s.projection, e)))
        .collect();
    for (projection, error) in &failed {
        eprintln!("{projection} stopped: {error}");
    }
    show_samples(&store).await;
    println!("\nstatus at any time: refold status --store {uri}");

    if !args.exit_when_caught_up {
        println!(
            "\nfollowing live appends (one payment per second; also try `refold append --store {uri} ...`);\n\
             drop a projection component into {} to deploy it live; Ctrl-C to stop",
            projections.display()
        );
        let mut watcher = FolderWatcher::new(&projections)
            .with_context(|| format!("watching {}", projections.display()))?;
        // The demo goes on without its console when the address is taken.
        let code = Arc::new(CachedCode(engine));
        let api = match args.http.start(Arc::clone(&store), code).await {
            Ok(api) => api,
            Err(error) => {
                eprintln!("warning: no console: {error:#}");
                None
            }
        };
        if let Some(api) = &api {
            api.publish(&deployer.supervisor);
            println!(
                "console: http://{0}/   API: http://{0}/api/projections   metrics: http://{0}/metrics",
                api.address
            );
        }
        let mut n = 0;
        let stop = stop_signal();
        tokio::pin!(stop);
        let mut payments = tokio::time::interval(Duration::from_secs(1));
        payments.tick().await;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(changes) = watcher.next() => apply_changes(&mut deployer, changes).await,
                _ = payments.tick() => {
                    n += 1;
                    sync(&mut deployer).await;
                    live_payment(&store, &deployer.supervisor, n).await?;
                }
            }
            if let Some(api) = &api {
                api.publish(&deployer.supervisor);
            }
        }
        if let Some(api) = api {
            api.shutdown().await;
        }
    }
    deployer.supervisor.shutdown().await;
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
