//! `refold rebuild`, `refold rollback`, `refold pause` and `refold resume`: operator commands
//! on a projection (see [`crate::control`]).

use std::process::ExitCode;

use clap::Args;

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
