//! Operator commands on a projection, shared by the command line and the HTTP API: rebuild,
//! roll back, pause, resume, and dead letters.
//!
//! Each only changes the store (the generation registry, the stable names, the paused set); a
//! running host notices within a fraction of a second and starts or stops projectors to match,
//! and a host started later does the same at start.

use crate::domain::Position;
use crate::domain::generation::rollback_target;
use crate::domain::{Generation, GenerationState, Manifest};
use crate::store::{
    DeadLetter, DeadLetterKey, DeadLetters, Generations, OperatorState, StoreError,
};

/// Why an operator command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No generation of that projection exists.
    #[error("no projection named `{name}` in the store (known: {known})")]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated, or `none`.
        known: String,
    },
    /// The projection has no generation of that number.
    #[error("projection `{name}` has no generation {number} (it has: {known})")]
    UnknownGeneration {
        /// The projection.
        name: String,
        /// The number asked for.
        number: u32,
        /// Its generations' numbers, comma-separated.
        known: String,
    },
    /// The projection is not in a state that allows the command.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The generation a trace reads: the one numbered `number`, else the active one, else the
/// newest.
pub async fn traced_generation<S: Generations + ?Sized>(
    store: &S,
    name: &str,
    number: Option<u32>,
) -> Result<Generation, ControlError> {
    let generations = generations_of(store, name).await?;
    let found = match number {
        Some(number) => generations.iter().find(|g| g.number == number),
        None => generations
            .iter()
            .rfind(|g| g.state == GenerationState::Active)
            .or(generations.last()),
    };
    found
        .cloned()
        .ok_or_else(|| ControlError::UnknownGeneration {
            name: name.to_owned(),
            number: number.unwrap_or_default(),
            known: generations
                .iter()
                .map(|g| g.number.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A projection's generations, oldest first; an error naming the known projections when it has
/// none.
pub async fn generations_of<S: Generations + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Vec<Generation>, ControlError> {
    let generations = store.generations(name).await?;
    if generations.is_empty() {
        let mut known: Vec<String> = store
            .all_generations()
            .await?
            .into_iter()
            .map(|g| g.projection)
            .collect();
        known.dedup();
        return Err(ControlError::UnknownProjection {
            name: name.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        });
    }
    Ok(generations)
}

fn active(generations: &[Generation]) -> Option<&Generation> {
    generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active)
}

/// Register a new generation that builds from position 0 with the active generation's code.
/// Returns it and the active generation, which keeps serving until the new one has caught up.
pub async fn rebuild<S: Generations + ?Sized>(
    store: &S,
    name: &str,
) -> Result<(Generation, Generation), ControlError> {
    let generations = generations_of(store, name).await?;
    if let Some(building) = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Building)
    {
        return Err(ControlError::Conflict(format!(
            "{name}: generation {} is already building (checkpoint {}); it takes over when it catches up",
            building.number, building.checkpoint
        )));
    }
    let Some(active) = active(&generations) else {
        return Err(ControlError::Conflict(format!(
            "{name}: no active generation to rebuild"
        )));
    };
    // Indexes are not recorded with a generation; the host creates them from the component's
    // manifest when it starts the generation.
    let manifest = Manifest::new(&active.projection, active.version, &active.collections);
    let generation = store
        .create_generation(
            &manifest,
            &active.code_hash,
            &active.upcasters,
            Some(generations.iter().map(|g| g.number).max().unwrap_or(0)),
        )
        .await?;
    Ok((generation, active.clone()))
}

/// Make the previous generation active again and mark the current one rolled back. Returns the
/// restored generation and the one rolled back.
pub async fn rollback<S: Generations + ?Sized>(
    store: &S,
    name: &str,
) -> Result<(Generation, Generation), ControlError> {
    let generations = generations_of(store, name).await?;
    let Some(active) = active(&generations) else {
        return Err(ControlError::Conflict(format!(
            "{name}: no active generation to roll back"
        )));
    };
    let Some(target) = rollback_target(&generations) else {
        return Err(ControlError::Conflict(format!(
            "{name}: generation {} (version {}) is the only one that was ever active; nothing to roll back to",
            active.number, active.version
        )));
    };
    // A generation still building (a rebuild, or a newer version) would take over once caught
    // up and undo the rollback: it is rolled back first, so its activation is refused and its
    // code is not built again until different code is deployed. (One that caught up meanwhile
    // is active now, and the cut-over below rolls it back with the active one.)
    for building in generations
        .iter()
        .filter(|g| g.state == GenerationState::Building)
    {
        store
            .set_state(building, GenerationState::RolledBack)
            .await?;
    }
    store.activate(target, GenerationState::RolledBack).await?;
    Ok((target.clone(), active.clone()))
}

/// Pause (`true`) or resume (`false`) a projection that exists. Pausing stops its projectors at
/// a batch boundary on every host; its read collections keep serving. Resuming continues from
/// the checkpoints. Either is idempotent.
pub async fn set_paused<S: Generations + OperatorState + ?Sized>(
    store: &S,
    name: &str,
    paused: bool,
) -> Result<(), ControlError> {
    generations_of(store, name).await?;
    store.set_paused(name, paused).await?;
    Ok(())
}

/// The dead letters of a projection that exists, by generation and position.
pub async fn dead_letters<S: Generations + DeadLetters + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Vec<DeadLetter>, ControlError> {
    generations_of(store, name).await?;
    Ok(store.dead_letters(Some(name)).await?)
}

/// A page of the dead letters of a projection that exists (see
/// [`DeadLetters::dead_letter_page`]).
pub async fn dead_letter_page<S: Generations + DeadLetters + ?Sized>(
    store: &S,
    name: &str,
    after: Option<&DeadLetterKey>,
    limit: usize,
) -> Result<Vec<DeadLetter>, ControlError> {
    generations_of(store, name).await?;
    Ok(store.dead_letter_page(Some(name), after, limit).await?)
}

/// Check that each position names a dead letter of the projection, so a typo changes nothing.
async fn check_positions<S: Generations + DeadLetters + ?Sized>(
    store: &S,
    name: &str,
    positions: Option<&[Position]>,
) -> Result<(), ControlError> {
    let Some(positions) = positions else {
        // All of them: nothing to check but the projection.
        return generations_of(store, name).await.map(drop);
    };
    let letters = dead_letters(store, name).await?;
    let missing = positions
        .iter()
        .find(|p| !letters.iter().any(|l| l.position == **p));
    match missing {
        Some(position) => Err(ControlError::Conflict(format!(
            "{name} has no dead letter at position {position}"
        ))),
        None => Ok(()),
    }
}

/// Delete a projection's dead letters at these positions (all for `None`); returns how many
/// went. A position that has no dead letter is refused, and nothing is deleted.
pub async fn discard_dead_letters<S: Generations + DeadLetters + ?Sized>(
    store: &S,
    name: &str,
    positions: Option<&[Position]>,
) -> Result<u64, ControlError> {
    check_positions(store, name, positions).await?;
    Ok(store.discard_dead_letters(name, positions).await?)
}

/// Ask for a projection's dead letters at these positions (all for `None`) to be re-driven
/// with the code that runs now; returns how many were marked. The projector of each dead
/// letter's generation re-drives it within about a second, in position order, if a host runs
/// it; one that succeeds disappears, one that fails again stays with the new error.
pub async fn retry_dead_letters<S: Generations + DeadLetters + ?Sized>(
    store: &S,
    name: &str,
    positions: Option<&[Position]>,
) -> Result<u64, ControlError> {
    check_positions(store, name, positions).await?;
    Ok(store.request_dead_letter_retry(name, positions).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::store::sqlite::SqliteStore;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("refold.db"))
            .await
            .expect("open store")
    }

    #[tokio::test]
    async fn a_rollback_also_rolls_back_a_building_generation_so_it_cannot_undo_the_rollback() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = store(&dir).await;
        let manifest = Manifest::new("p", 1, ["docs"]);
        for _ in 0..2 {
            let generation = store
                .create_generation(&manifest, "h", &[], None)
                .await
                .expect("create");
            store
                .activate(&generation, GenerationState::Retired)
                .await
                .expect("cut over");
        }
        let (rebuilding, _) = rebuild(&store, "p").await.expect("rebuild");
        let (restored, rolled_back) = rollback(&store, "p").await.expect("rollback");
        assert_eq!((restored.number, rolled_back.number), (1, 2));
        // The rebuild's projector reaches the head and tries to take over.
        let refused = store.activate(&rebuilding, GenerationState::Retired).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidInput(_))),
            "{refused:?}"
        );
        let states: Vec<GenerationState> = store
            .generations("p")
            .await
            .expect("generations")
            .iter()
            .map(|g| g.state)
            .collect();
        use GenerationState::{Active, RolledBack};
        assert_eq!(states, [Active, RolledBack, RolledBack]);
    }
}
