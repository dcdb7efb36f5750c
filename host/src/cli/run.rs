//! `refold run`: serve projections from a folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::StoreArgs;
use crate::deploy;
use crate::engine::{Engine, Limits};
use crate::projector::Supervisor;
use crate::store::{self, Store};

/// Run every projection component (`*.wasm`) of a folder against a store. New projections replay
/// the whole history first; all of them then follow live appends until Ctrl-C or SIGTERM, which
/// stop them at a batch boundary. A component that fails to load is reported and skipped.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Folder of projection components.
    #[arg(long, default_value = "projections")]
    projections: PathBuf,
    /// Exit once every projection has caught up with the head, instead of following live.
    #[arg(long)]
    exit_when_caught_up: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Sandbox limits for projection instances.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Memory cap per projection instance, in MiB.
    #[arg(long, env = "REFOLD_MEMORY_MIB", default_value_t = 128)]
    pub memory_mib: usize,
    /// Deadline of one batch, in milliseconds; a guest that runs longer fails its batch.
    #[arg(long, env = "REFOLD_BATCH_DEADLINE_MS", default_value_t = 10_000)]
    pub batch_deadline_ms: u64,
}

impl LimitArgs {
    pub(super) fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mib.saturating_mul(1024 * 1024),
            deadline: std::time::Duration::from_millis(self.batch_deadline_ms.max(1)),
            ..Limits::default()
        }
    }
}

/// Load a folder's components and start a projector for each. Refusals are reported; an
/// error only when nothing could start.
pub(super) async fn start_folder(
    store: Arc<dyn Store>,
    dir: &Path,
    limits: Limits,
) -> anyhow::Result<Supervisor> {
    let engine = Arc::new(Engine::new(limits)?);
    let loaded = {
        let (engine, dir) = (Arc::clone(&engine), dir.to_path_buf());
        tokio::task::spawn_blocking(move || deploy::load_folder(&engine, &dir)).await??
    };
    anyhow::ensure!(
        !loaded.is_empty(),
        "no projection components (*.wasm) in {}",
        dir.display()
    );
    let mut supervisor = Supervisor::new(store);
    for deploy::Loaded { path, result } in loaded {
        let started = match result {
            Ok(projection) => supervisor
                .start(Arc::new(projection))
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = started {
            tracing::error!(component = %path.display(), error = %format!("{error:#}"), "projection refused");
            eprintln!("refused {}: {error:#}", path.display());
        }
    }
    anyhow::ensure!(
        !supervisor.statuses().is_empty(),
        "no projection of {} could start",
        dir.display()
    );
    Ok(supervisor)
}

/// Resolve when Ctrl-C or SIGTERM arrives.
pub(super) async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let supervisor =
        start_folder(Arc::clone(&store), &args.projections, args.limits.limits()).await?;
    if args.exit_when_caught_up {
        let head = store.head().await?;
        supervisor.wait_for(head).await;
    } else {
        tracing::info!(store = %args.store.store, projections = %args.projections.display(), "serving; Ctrl-C to stop");
        stop_signal().await;
    }
    let mut failed = false;
    for (name, reason) in supervisor.shutdown().await {
        if reason != crate::projector::DropReason::Shutdown {
            failed = true;
            eprintln!("{name}: {reason}");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
