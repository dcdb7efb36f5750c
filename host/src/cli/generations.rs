//! `refold rebuild`, `refold rollback`, `refold pause`, `refold resume` and
//! `refold dead-letters`: operator commands on a projection (see [`crate::control`]).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::StoreArgs;
use crate::control;
use crate::store;

/// Arguments of `refold rebuild` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The projection.
    name: String,
}

/// Arguments of `refold pause` and `refold resume` (documented on the subcommands).
#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The projection.
    name: String,
}

/// Arguments of `refold rollback` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The projection.
    name: String,
}

pub(super) async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let (generation, active) = control::rebuild(store.as_ref(), &args.name).await?;
    println!(
        "{}: generation {} (version {}) will build from position 0; generation {} keeps serving until it has caught up",
        args.name, generation.number, generation.version, active.number
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let (target, active) = control::rollback(store.as_ref(), &args.name).await?;
    let head = store.head().await?;
    println!(
        "{}: generation {} (version {}) is active again, from checkpoint {} of {head}; generation {} (version {}) is rolled back and its code will not be built again",
        args.name, target.number, target.version, target.checkpoint, active.number, active.version
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn pause(args: PauseArgs, paused: bool) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    control::set_paused(store.as_ref(), &args.name, paused).await?;
    if paused {
        println!(
            "{}: paused; its projectors stop at their next batch boundary and its read collections keep serving",
            args.name
        );
    } else {
        println!("{}: resumed from its checkpoints", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `refold dead-letters` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    action: DeadLettersAction,
}

#[derive(Debug, Subcommand)]
enum DeadLettersAction {
    /// List a projection's dead letters (every projection's without NAME).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// The projection.
        name: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive dead letters with the projection's current code: the ones at `--position`, or
    /// `--all`. A running host applies each within about a second, in position order; one that
    /// succeeds disappears, one that fails again stays with the new error.
    Retry(Selected),
    /// Delete dead letters: the ones at `--position`, or `--all` of the projection's.
    Discard(Selected),
}

/// The dead letters a `retry` or `discard` acts on.
#[derive(Debug, Args)]
struct Selected {
    #[command(flatten)]
    store: StoreArgs,
    /// The projection.
    name: String,
    /// Position of a dead letter; repeatable.
    #[arg(
        long = "position",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    positions: Vec<u64>,
    /// Every dead letter of the projection.
    #[arg(long)]
    all: bool,
}

impl Selected {
    fn positions(&self) -> Option<&[u64]> {
        (!self.all).then_some(self.positions.as_slice())
    }
}

pub(super) async fn dead_letters(args: DeadLettersArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        DeadLettersAction::List { store, name, json } => {
            let store = store::open(&store.store).await?;
            let letters = match &name {
                Some(name) => control::dead_letters(store.as_ref(), name).await?,
                None => store.dead_letters(None).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<24} {:>4} {:>7} {:>10} {:<24} {:<20} {:>8}  error",
                    "projection", "gen", "version", "position", "event type", "stream", "attempts"
                );
                for l in &letters {
                    println!(
                        "{:<24} {:>4} {:>7} {:>10} {:<24} {:<20} {:>8}  {}",
                        l.projection,
                        l.generation,
                        l.version,
                        l.position,
                        l.event_type,
                        l.aggregate_id,
                        l.attempts,
                        l.error
                    );
                }
            }
        }
        DeadLettersAction::Retry(selected) => {
            let store = store::open(&selected.store.store).await?;
            let marked =
                control::retry_dead_letters(store.as_ref(), &selected.name, selected.positions())
                    .await?;
            println!(
                "{}: {marked} dead letter(s) to re-drive; a running host applies them within about a second (see `refold dead-letters list`)",
                selected.name
            );
        }
        DeadLettersAction::Discard(selected) => {
            let store = store::open(&selected.store.store).await?;
            let deleted =
                control::discard_dead_letters(store.as_ref(), &selected.name, selected.positions())
                    .await?;
            println!("{}: {deleted} dead letter(s) discarded", selected.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
