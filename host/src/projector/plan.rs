//! What should run for one projection, given its generations in the store and the code
//! deployed for it. A pure function, so every rule is unit-tested here.
//!
//! Rules, for deployed code of version `v` and hash `h` behind upcasters `u` (the code hashes
//! of the upcasters that reach it, see [`super::upcast`]):
//! - nothing deployed: nothing runs (the data stays);
//! - the active generation has a version above `v`: the code is refused (stored data is newer
//!   than the code), and what was running keeps running on its stored code;
//! - `h` behind `u` is the code of a generation an operator rolled back (and not the active
//!   code): refused the same way, so a rollback sticks until different code is deployed;
//! - otherwise, the newest building generation of version `v` behind `u` runs the deployed
//!   code, and any other building generation is abandoned; an active generation of version `v`
//!   behind `u` runs the deployed code (an in-place swap when the hash changed); an active
//!   generation of a lower version, or behind other upcasters, keeps running its stored code
//!   (and upcasters) while a generation of version `v` behind `u` builds beside it (created if
//!   none is building).

use crate::domain::{Generation, GenerationState};

/// Which code a generation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The deployed file's.
    Deployed,
    /// The code recorded for the generation (from the code cache).
    Stored,
}

/// Why deployed code does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The active generation has a higher version.
    LowerVersion {
        /// Version of the deployed code.
        declared: u32,
        /// Version of the active generation.
        active: u32,
    },
    /// An operator rolled back from this code.
    RolledBack {
        /// The generation rolled back from.
        generation: u32,
    },
}

/// What to do for one projection.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Why the deployed code is refused, if it is.
    pub refused: Option<Refused>,
    /// Building generations to abandon.
    pub abandon: Vec<u32>,
    /// Create a new building generation for the deployed code.
    pub create: bool,
    /// Generations to run, with their code.
    pub run: Vec<(u32, Code)>,
}

/// The code deployed for a projection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deployed<'a> {
    /// Its declared version.
    pub version: u32,
    /// Its code hash.
    pub hash: &'a str,
    /// The code hashes of the upcasters in front of it, sorted.
    pub upcasters: &'a [String],
}

impl Deployed<'_> {
    /// Whether `generation` was built by this code behind these upcasters.
    fn built(&self, generation: &Generation) -> bool {
        generation.code_hash == self.hash && generation.upcasters == self.upcasters
    }
}

/// The plan for one projection's generations (oldest first) and its deployed code.
pub(crate) fn plan(generations: &[Generation], deployed: Option<Deployed<'_>>) -> Plan {
    let Some(deployed) = deployed else {
        return Plan::default();
    };
    let (version, upcasters) = (deployed.version, deployed.upcasters);
    let active = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active);
    let building: Vec<&Generation> = generations
        .iter()
        .filter(|g| g.state == GenerationState::Building)
        .collect();
    let refused = match active {
        Some(a) if a.version > version => Some(Refused::LowerVersion {
            declared: version,
            active: a.version,
        }),
        _ => generations
            .iter()
            .rfind(|g| {
                g.state == GenerationState::RolledBack
                    && deployed.built(g)
                    && active.is_none_or(|a| !deployed.built(a))
            })
            .map(|g| Refused::RolledBack {
                generation: g.number,
            }),
    };
    if refused.is_some() {
        let run = active
            .into_iter()
            .chain(building.last().copied())
            .map(|g| (g.number, Code::Stored))
            .collect();
        return Plan {
            refused,
            run,
            ..Plan::default()
        };
    }
    let keep = building
        .last()
        .filter(|b| b.version == version && b.upcasters == upcasters)
        .copied();
    let mut plan = Plan {
        abandon: building
            .iter()
            .filter(|b| keep.is_none_or(|k| k.number != b.number))
            .map(|b| b.number)
            .collect(),
        ..Plan::default()
    };
    if let Some(active) = active {
        let current = active.version == version && active.upcasters == upcasters;
        let code = if current {
            Code::Deployed
        } else {
            Code::Stored
        };
        plan.run.push((active.number, code));
        plan.create = keep.is_none() && !current;
    } else {
        plan.create = keep.is_none();
    }
    if let Some(keep) = keep {
        plan.run.push((keep.number, Code::Deployed));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(number: u32, version: u32, hash: &str, state: GenerationState) -> Generation {
        Generation {
            projection: "p".into(),
            number,
            version,
            code_hash: hash.into(),
            upcasters: vec![],
            state,
            checkpoint: 0,
            last_error: None,
            collections: vec![],
        }
    }

    fn code(version: u32, hash: &str) -> Deployed<'_> {
        Deployed {
            version,
            hash,
            upcasters: &[],
        }
    }

    use GenerationState::{Abandoned, Active, Building, Retired, RolledBack};

    #[test]
    fn nothing_deployed_runs_nothing() {
        let gens = [generation(1, 1, "a", Active)];
        assert_eq!(plan(&gens, None), Plan::default());
    }

    #[test]
    fn a_new_projection_builds_its_first_generation() {
        let plan = plan(&[], Some(code(1, "a")));
        assert!(plan.create);
        assert!(plan.run.is_empty());
    }

    #[test]
    fn same_version_runs_the_deployed_code_in_place() {
        let gens = [generation(1, 1, "a", Active)];
        let plan = plan(&gens, Some(code(1, "b")));
        assert_eq!(plan.run, vec![(1, Code::Deployed)]);
        assert!(!plan.create);
    }

    #[test]
    fn a_higher_version_builds_beside_the_active_one() {
        let gens = [generation(1, 1, "a", Active)];
        let first = plan(&gens, Some(code(2, "b")));
        assert!(first.create);
        assert_eq!(first.run, vec![(1, Code::Stored)]);
        let gens = [
            generation(1, 1, "a", Active),
            generation(2, 2, "b", Building),
        ];
        let next = plan(&gens, Some(code(2, "c")));
        assert!(!next.create);
        assert_eq!(next.run, vec![(1, Code::Stored), (2, Code::Deployed)]);
    }

    #[test]
    fn a_building_generation_of_another_version_is_abandoned() {
        let gens = [
            generation(1, 1, "a", Active),
            generation(2, 2, "b", Building),
        ];
        let to_three = plan(&gens, Some(code(3, "c")));
        assert_eq!(to_three.abandon, vec![2]);
        assert!(to_three.create);
        let back_to_one = plan(&gens, Some(code(1, "a")));
        assert_eq!(back_to_one.abandon, vec![2]);
        assert!(!back_to_one.create);
        assert_eq!(back_to_one.run, vec![(1, Code::Deployed)]);
    }

    #[test]
    fn a_lower_version_is_refused_and_the_running_code_keeps_running() {
        let gens = [
            generation(1, 1, "a", Retired),
            generation(2, 2, "b", Active),
            generation(3, 3, "c", Building),
        ];
        let plan = plan(&gens, Some(code(1, "a")));
        assert_eq!(
            plan.refused,
            Some(Refused::LowerVersion {
                declared: 1,
                active: 2
            })
        );
        assert_eq!(plan.run, vec![(2, Code::Stored), (3, Code::Stored)]);
        assert!(!plan.create && plan.abandon.is_empty());
    }

    #[test]
    fn rolled_back_code_is_refused_until_different_code_arrives() {
        let gens = [
            generation(1, 1, "a", Active),
            generation(2, 2, "b", RolledBack),
        ];
        let same = plan(&gens, Some(code(2, "b")));
        assert_eq!(same.refused, Some(Refused::RolledBack { generation: 2 }));
        assert_eq!(same.run, vec![(1, Code::Stored)]);
        let fixed = plan(&gens, Some(code(2, "c")));
        assert_eq!(fixed.refused, None);
        assert!(fixed.create);
    }

    #[test]
    fn a_rebuild_of_the_same_version_runs_both_on_the_deployed_code() {
        let gens = [
            generation(1, 1, "a", Abandoned),
            generation(2, 1, "a", Active),
            generation(3, 1, "a", Building),
        ];
        let plan = plan(&gens, Some(code(1, "a")));
        assert_eq!(plan.run, vec![(2, Code::Deployed), (3, Code::Deployed)]);
        assert!(!plan.create && plan.abandon.is_empty());
    }

    #[test]
    fn other_upcasters_build_a_generation_of_the_same_version_beside_the_active_one() {
        let upcasters = vec!["u1".to_owned()];
        let behind = |hash| Deployed {
            version: 1,
            hash,
            upcasters: &upcasters,
        };
        let gens = [generation(1, 1, "a", Active)];
        let first = plan(&gens, Some(behind("a")));
        assert!(first.create);
        assert_eq!(first.run, vec![(1, Code::Stored)]);
        let mut building = generation(2, 1, "a", Building);
        building.upcasters = upcasters.clone();
        let gens = [generation(1, 1, "a", Active), building.clone()];
        let next = plan(&gens, Some(behind("b")));
        assert!(!next.create && next.abandon.is_empty());
        assert_eq!(next.run, vec![(1, Code::Stored), (2, Code::Deployed)]);
        // The upcaster removed again: the active generation's code is current once more.
        let back = plan(&gens, Some(code(1, "a")));
        assert_eq!(back.abandon, vec![2]);
        assert!(!back.create);
        assert_eq!(back.run, vec![(1, Code::Deployed)]);
        // Rolled back from the generation behind the upcaster: refused until something changes.
        building.state = RolledBack;
        let gens = [generation(1, 1, "a", Active), building];
        let same = plan(&gens, Some(behind("a")));
        assert_eq!(same.refused, Some(Refused::RolledBack { generation: 2 }));
        assert!(plan(&gens, Some(code(1, "a"))).refused.is_none());
    }
}
