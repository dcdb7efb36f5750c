//! `refold trace`: the events that changed one document.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::StoreArgs;
use super::run::EngineArgs;
use crate::control;
use crate::deploy::CachedCode;
use crate::domain::Position;
use crate::projector::{CodeSource, Handler, behind_recorded};
use crate::store;
use crate::trace::{Mode, Trace};

/// Arguments of `refold trace` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The projection.
    projection: String,
    /// The logical collection, as the projection declares it.
    collection: String,
    /// The document's id.
    id: String,
    /// The generation to trace [default: the active one, else the newest].
    #[arg(long)]
    generation: Option<u32>,
    /// Replay with this component instead of the generation's code from the code cache (a
    /// note says when its code differs from the generation's).
    #[arg(long, value_name = "FILE")]
    component: Option<PathBuf>,
    /// Replay every event up to the generation's checkpoint, not only the batches recorded as
    /// writing the document.
    #[arg(long)]
    full: bool,
    /// Print the trace as JSON (the API's shape) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(super) async fn trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let generation =
        control::traced_generation(store.as_ref(), &args.projection, args.generation).await?;
    let engine = args.engine.engine()?;
    // Code a host published through the store, when this machine's cache lacks it.
    let recorded = std::iter::once(&generation.code_hash).chain(&generation.upcasters);
    for hash in recorded.skip(usize::from(args.component.is_some())) {
        crate::deploy::fetch(&engine, store.as_ref(), hash).await?;
    }
    let handler: Arc<dyn Handler> = match &args.component {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let handler = Arc::new(
                engine
                    .load(&bytes)
                    .with_context(|| format!("{} cannot be loaded", path.display()))?,
            );
            let code = CachedCode(Arc::clone(&engine));
            let upcasters = generation
                .upcasters
                .iter()
                .map(|hash| code.load_upcaster(hash))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| {
                    anyhow::anyhow!(
                        "an upcaster of generation {} is not in the code cache: {error}",
                        generation.number
                    )
                })?;
            behind_recorded(handler, upcasters, &generation.upcasters)
                .map_err(anyhow::Error::msg)?
        }
        None => CachedCode(Arc::clone(&engine))
            .load_generation(&generation)
            .map_err(|error| {
                anyhow::anyhow!(
                    "the code of generation {} of `{}` ({}) cannot be loaded from the code \
                     cache ({error}): run the trace where a host ran it, or give its component \
                     with --component FILE",
                    generation.number,
                    generation.projection,
                    generation.code_hash
                )
            })?,
    };
    anyhow::ensure!(
        handler.manifest().name == generation.projection,
        "the component is projection `{}`, not `{}`",
        handler.manifest().name,
        generation.projection
    );
    let shown = std::io::stderr().is_terminal() && !args.json;
    let progress = move |at: Position, of: Position| {
        if shown {
            eprint!("\rreplaying: {at} of {of}   ");
        }
    };
    let found = crate::trace::trace(
        store,
        handler,
        &generation,
        &args.collection,
        &args.id,
        args.full,
        &progress,
    )
    .await;
    if shown {
        eprint!("\r{:40}\r", "");
    }
    let found = found?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", render(&found));
    }
    Ok(ExitCode::SUCCESS)
}

/// The trace as text: one paragraph per event, its changes as `+ added`, `~ changed`,
/// `- removed`, its log lines, and the document after it.
fn render(trace: &Trace) -> String {
    use std::fmt::Write;
    let compact = |v: &Value| v.to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}/{} of projection {}, generation {} (checkpoint {}): {} event{} changed it\n",
        trace.collection,
        trace.id,
        trace.projection,
        trace.generation,
        trace.checkpoint,
        trace.steps.len(),
        if trace.steps.len() == 1 { "" } else { "s" }
    );
    for step in &trace.steps {
        let field = |name: &str| step.event.get(name).cloned().unwrap_or(Value::Null);
        let text = |name: &str| match field(name) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let _ = writeln!(
            out,
            "#{:<8} {}  {}  {} v{}",
            step.position,
            text("timestamp"),
            text("eventType"),
            text("aggregateId"),
            text("version"),
        );
        if let Some(failure) = &step.failure {
            let _ = writeln!(out, "          FAILED: {failure}");
        }
        for change in &step.changes {
            let line = match (&change.before, &change.after) {
                (None, Some(after)) => format!("+ {}: {}", change.path, compact(after)),
                (Some(before), None) => format!("- {}: {}", change.path, compact(before)),
                (Some(before), Some(after)) => format!(
                    "~ {}: {} -> {}",
                    change.path,
                    compact(before),
                    compact(after)
                ),
                (None, None) => continue,
            };
            let _ = writeln!(out, "          {line}");
        }
        for log in &step.logs {
            let _ = writeln!(out, "          log {}: {}", log.level, log.message);
        }
        match &step.document {
            Some(document) => {
                let _ = writeln!(out, "          = {}", compact(document));
            }
            None => {
                let _ = writeln!(out, "          = (deleted)");
            }
        }
    }
    let how = match trace.mode {
        Mode::Recorded => "the batches recorded as writing it",
        Mode::Full => "every event up to the checkpoint",
    };
    let _ = writeln!(
        out,
        "\nreplayed {} events ({how}); {}",
        trace.replayed,
        if trace.matches {
            "the replay ends with the document as stored"
        } else {
            "the replay does NOT end with the document as stored"
        }
    );
    for note in &trace.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
