//! `refold rebuild` and `refold rollback`: operator commands on a projection's generations.
//!
//! Both only change the generation registry (and, for a rollback, the stable names); a running
//! host notices within a fraction of a second and starts or stops projectors to match, and a
//! host started later does the same at start.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::StoreArgs;
use crate::domain::generation::rollback_target;
use crate::domain::{CollectionSpec, Generation, GenerationState, Manifest};
use crate::store::{self, Store};

/// Arguments of `refold rebuild` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct RebuildArgs {
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

async fn generations_of(store: &dyn Store, name: &str) -> anyhow::Result<Vec<Generation>> {
    let generations = store.generations(name).await?;
    if generations.is_empty() {
        let mut known: Vec<String> = store
            .all_generations()
            .await?
            .into_iter()
            .map(|g| g.projection)
            .collect();
        known.dedup();
        bail!(
            "no projection named `{name}` in the store (known: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    Ok(generations)
}

pub(super) async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let generations = generations_of(store.as_ref(), &args.name).await?;
    if let Some(building) = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Building)
    {
        bail!(
            "{}: generation {} is already building (checkpoint {}); it takes over when it catches up",
            args.name,
            building.number,
            building.checkpoint
        );
    }
    let Some(active) = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active)
    else {
        bail!("{}: no active generation to rebuild", args.name);
    };
    // Indexes are not recorded with a generation; the host creates them from the component's
    // manifest when it starts the generation.
    let manifest = Manifest {
        name: active.projection.clone(),
        version: active.version,
        event_types: vec![],
        aggregate_types: vec![],
        collections: active
            .collections
            .iter()
            .map(|name| CollectionSpec {
                name: name.clone(),
                indexes: vec![],
            })
            .collect(),
        batch_size: None,
    };
    let generation = store
        .create_generation(&manifest, &active.code_hash)
        .await?;
    println!(
        "{}: generation {} (version {}) will build from position 0; generation {} keeps serving until it has caught up",
        args.name, generation.number, generation.version, active.number
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let store = store::open(&args.store.store).await?;
    let generations = generations_of(store.as_ref(), &args.name).await?;
    let Some(active) = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active)
    else {
        bail!("{}: no active generation to roll back", args.name);
    };
    let Some(target) = rollback_target(&generations) else {
        bail!(
            "{}: generation {} (version {}) is the only one that was ever active; nothing to roll back to",
            args.name,
            active.number,
            active.version
        );
    };
    store.activate(target, GenerationState::RolledBack).await?;
    let head = store.head().await?;
    println!(
        "{}: generation {} (version {}) is active again, from checkpoint {} of {head}; generation {} (version {}) is rolled back and its code will not be built again",
        args.name, target.number, target.version, target.checkpoint, active.number, active.version
    );
    Ok(ExitCode::SUCCESS)
}
