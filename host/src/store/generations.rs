//! The generation policy, written once for every backend: which number a new generation gets,
//! what the checkpoint guard of a commit means, which states may be activated, and which stable
//! names a cut-over repoints or removes. A backend reads what the policy needs (inside its
//! transaction where it has one) and performs the storage operations the policy decides.

use super::{StoreError, StoreResult};
use crate::domain::{Generation, GenerationState, Manifest, Position};

/// The generation to register for `manifest` when the highest number the projection ever had
/// is `latest` (`None` for a new projection): the next number, building from the origin, with
/// the manifest's collections. Numbers are never reused, not even those of abandoned
/// generations, so a physical collection name always belongs to one build.
pub fn next(
    manifest: &Manifest,
    code_hash: &str,
    upcasters: &[String],
    latest: Option<u32>,
) -> Generation {
    Generation {
        projection: manifest.name.clone(),
        number: latest.unwrap_or(0) + 1,
        version: manifest.version,
        code_hash: code_hash.to_owned(),
        upcasters: upcasters.to_vec(),
        state: GenerationState::Building,
        checkpoint: 0,
        last_error: None,
        collections: manifest.collection_names(),
    }
}

/// A generation of `manifest`'s projection registered after `seen` (the newest number a caller
/// saw when it planned to register one, 0 for none) for the same version and code behind the
/// same upcasters, still building or already active: another writer (a host serving the same
/// published code, planning alike) registered the generation the caller meant to. The newest
/// such; none when the caller gives no `seen`.
pub fn registered_since<'a>(
    generations: &'a [Generation],
    seen: Option<u32>,
    manifest: &Manifest,
    code_hash: &str,
    upcasters: &[String],
) -> Option<&'a Generation> {
    let seen = seen?;
    generations.iter().rev().find(|g| {
        g.projection == manifest.name
            && g.number > seen
            && matches!(g.state, GenerationState::Building | GenerationState::Active)
            && g.version == manifest.version
            && g.code_hash == code_hash
            && g.upcasters == upcasters
    })
}

/// The checkpoint guard of a commit that starts from `from`, given the checkpoint stored for
/// the generation (`None`: the generation is not registered). Anything but `from` means another
/// writer handled the same events (or the generation was dropped): the commit must change
/// nothing, and its projector must stop rather than fold those events a second time.
pub fn guard_checkpoint(
    generation: &Generation,
    stored: Option<Position>,
    from: Position,
) -> StoreResult<()> {
    match stored {
        None => Err(StoreError::NotFound(format!(
            "{} generation {}",
            generation.projection, generation.number
        ))),
        Some(found) if found != from => Err(StoreError::CheckpointMoved {
            projection: generation.projection.clone(),
            generation: generation.number,
            expected: from,
            found,
        }),
        Some(_) => Ok(()),
    }
}

/// Whether a generation in this state may become the active one: a building generation that
/// caught up, a retired one an operator rolls back to, or the active one again (a repeated
/// cut-over changes nothing). An abandoned or rolled-back generation is never served again
/// without a rebuild.
pub fn may_activate(state: GenerationState) -> bool {
    matches!(
        state,
        GenerationState::Building | GenerationState::Retired | GenerationState::Active
    )
}

/// Whether a building generation may leave building for `to` through
/// [`super::Generations::set_state`]: abandoned (different code was deployed) or rolled back
/// (an operator rolled back while it was building). Only a building generation changes state
/// that way, so a generation activated meanwhile is never taken out of service by it.
pub fn may_leave_building(to: GenerationState) -> bool {
    matches!(to, GenerationState::Abandoned | GenerationState::RolledBack)
}

/// Refuse a state [`super::Generations::set_state`] does not set, naming it.
pub fn leaving_building(generation: &Generation, to: GenerationState) -> StoreResult<()> {
    if may_leave_building(to) {
        return Ok(());
    }
    Err(StoreError::InvalidInput(format!(
        "{} generation {}: a building generation can be abandoned or rolled back, not made {}",
        generation.projection,
        generation.number,
        to.as_str()
    )))
}

/// What a cut-over to one generation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutOver {
    /// Stable names to point at the target's collections: every collection it has.
    pub point: Vec<String>,
    /// Stable names to remove: collections the generations active until now served and the
    /// target lacks.
    pub remove: Vec<String>,
    /// Generations active until now, other than the target: they take the `previous` state.
    pub demote: Vec<u32>,
}

/// Plan the cut-over of `target`'s projection to it, from the projection's generations as
/// registered (`registered`, read inside the cut-over's transaction where there is one). The
/// target's registered record is authoritative: its state decides whether it may be
/// activated, and its collections are the names pointed. (The caller's copy of the target may
/// be older than the store's record: only the record counts.)
pub fn cut_over(registered: &[Generation], target: &Generation) -> StoreResult<CutOver> {
    let stored = registered
        .iter()
        .find(|g| g.projection == target.projection && g.number == target.number)
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "{} generation {}",
                target.projection, target.number
            ))
        })?;
    if !may_activate(stored.state) {
        return Err(StoreError::InvalidInput(format!(
            "{} generation {} is {} and cannot be activated",
            stored.projection,
            stored.number,
            stored.state.as_str()
        )));
    }
    let others: Vec<&Generation> = registered
        .iter()
        .filter(|g| {
            g.projection == target.projection
                && g.number != target.number
                && g.state == GenerationState::Active
        })
        .collect();
    let mut remove: Vec<String> = others
        .iter()
        .flat_map(|g| g.collections.iter())
        .filter(|c| !stored.collections.contains(c))
        .cloned()
        .collect();
    remove.sort();
    remove.dedup();
    Ok(CutOver {
        point: stored.collections.clone(),
        remove,
        demote: others.iter().map(|g| g.number).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(number: u32, state: GenerationState, collections: &[&str]) -> Generation {
        Generation {
            projection: "payments".into(),
            number,
            version: number,
            code_hash: String::new(),
            upcasters: vec![],
            state,
            checkpoint: 0,
            last_error: None,
            collections: collections.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn numbers_follow_the_highest_ever_registered() {
        let manifest = Manifest::new("payments", 3, ["payments"]);
        let first = next(&manifest, "h", &[], None);
        assert_eq!(
            (first.number, first.state, first.checkpoint),
            (1, GenerationState::Building, 0)
        );
        assert_eq!(next(&manifest, "h", &[], Some(7)).number, 8);
        assert_eq!(first.collections, ["payments"]);
    }

    #[test]
    fn a_generation_registered_alike_since_the_plan_is_the_one_to_build() {
        let manifest = Manifest::new("payments", 2, ["payments"]);
        let alike = |number, state| Generation {
            version: 2,
            code_hash: "h".into(),
            ..generation(number, state, &["payments"])
        };
        let generations = vec![
            generation(1, GenerationState::Active, &["payments"]),
            alike(2, GenerationState::Building),
        ];
        let found = registered_since(&generations, Some(1), &manifest, "h", &[]);
        assert_eq!(found.map(|g| g.number), Some(2));
        // Seen already (the caller planned with it), other code, other upcasters, no `seen`.
        assert!(registered_since(&generations, Some(2), &manifest, "h", &[]).is_none());
        assert!(registered_since(&generations, Some(1), &manifest, "other", &[]).is_none());
        assert!(registered_since(&generations, Some(1), &manifest, "h", &["u".into()]).is_none());
        assert!(registered_since(&generations, None, &manifest, "h", &[]).is_none());
        // Active already (it caught up at once); not once abandoned.
        let active = vec![alike(1, GenerationState::Active)];
        assert!(registered_since(&active, Some(0), &manifest, "h", &[]).is_some());
        let abandoned = vec![alike(1, GenerationState::Abandoned)];
        assert!(registered_since(&abandoned, Some(0), &manifest, "h", &[]).is_none());
    }

    #[test]
    fn the_guard_refuses_any_other_checkpoint_and_a_missing_generation() {
        let g = generation(1, GenerationState::Active, &[]);
        assert!(guard_checkpoint(&g, Some(40), 40).is_ok());
        assert!(matches!(
            guard_checkpoint(&g, Some(41), 40),
            Err(StoreError::CheckpointMoved {
                expected: 40,
                found: 41,
                ..
            })
        ));
        assert!(matches!(
            guard_checkpoint(&g, None, 40),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_cut_over_points_the_targets_names_and_removes_only_the_names_it_lacks() {
        let registered = [
            generation(1, GenerationState::Retired, &["old"]),
            generation(2, GenerationState::Active, &["payments", "totals"]),
            generation(3, GenerationState::Building, &["payments", "daily"]),
        ];
        let plan = cut_over(&registered, &registered[2]).expect("plan");
        assert_eq!(plan.point, ["payments", "daily"]);
        assert_eq!(plan.remove, ["totals"]);
        assert_eq!(plan.demote, [2]);
    }

    #[test]
    fn activating_the_active_generation_again_removes_nothing() {
        let registered = [generation(2, GenerationState::Active, &["payments"])];
        let plan = cut_over(&registered, &registered[0]).expect("plan");
        assert!(plan.remove.is_empty() && plan.demote.is_empty());
    }

    #[test]
    fn abandoned_rolled_back_and_unknown_generations_are_not_activated() {
        let registered = [
            generation(1, GenerationState::Abandoned, &[]),
            generation(2, GenerationState::RolledBack, &[]),
        ];
        for target in &registered {
            assert!(matches!(
                cut_over(&registered, target),
                Err(StoreError::InvalidInput(_))
            ));
        }
        let unknown = generation(9, GenerationState::Building, &[]);
        assert!(matches!(
            cut_over(&registered, &unknown),
            Err(StoreError::NotFound(_))
        ));
    }
}
