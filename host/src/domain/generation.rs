//! Generations: one build of a projection's read collections.
//!
//! Each time a projection is built from the origin (first deploy, a higher declared version, or
//! a forced rebuild) it gets a new generation number, and its documents go to physical
//! collections of their own, `<projection>__g<generation>__<collection>`. Readers use the
//! stable name `<projection>__<collection>`, which points at the active generation; a cut-over
//! repoints it atomically.

use serde::Serialize;

use crate::domain::Position;

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Replaying history; not visible under the stable names yet.
    Building,
    /// Serving reads under the stable names.
    Active,
    /// Replaced by a newer generation; kept for rollback.
    Retired,
    /// Left unfinished: its code was replaced by a different version before it caught up.
    /// Never served; kept until dropped.
    Abandoned,
    /// Was active, or still building, when an operator rolled back to an older generation. Its
    /// code is not built again automatically.
    RolledBack,
}

impl GenerationState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Abandoned => "abandoned",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "building" => Some(Self::Building),
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            "abandoned" => Some(Self::Abandoned),
            "rolled_back" => Some(Self::RolledBack),
            _ => None,
        }
    }
}

/// One generation of a projection, as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// Projection name.
    pub projection: String,
    /// Generation number, from 1, increasing per projection.
    pub number: u32,
    /// Declared version of the code that builds it.
    pub version: u32,
    /// SHA-256 of the component that builds it.
    pub code_hash: String,
    /// SHA-256 of each upcaster in front of it, sorted: other upcasters build another
    /// generation.
    pub upcasters: Vec<String>,
    /// Life-cycle state.
    pub state: GenerationState,
    /// Last position folded into its documents (0 before any).
    pub checkpoint: Position,
    /// The last error of its projector, if it stopped on one.
    pub last_error: Option<String>,
    /// The logical collections it writes (the stable names it serves when active).
    pub collections: Vec<String>,
}

impl Generation {
    /// Physical name of one of its collections.
    pub fn physical_name(&self, collection: &str) -> String {
        physical_name(&self.projection, self.number, collection)
    }
}

/// The generation a rollback of `generations` (one projection's, oldest first) returns to: the
/// newest retired one older than the active one. `None` when nothing is active or nothing
/// older was ever active.
pub fn rollback_target(generations: &[Generation]) -> Option<&Generation> {
    let active = generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active)?;
    generations
        .iter()
        .rfind(|g| g.state == GenerationState::Retired && g.number < active.number)
}

/// The generation that serves the projection's reads, or will: the active one, else the last
/// one building. `generations` are one projection's, in number order.
pub fn serving(generations: &[Generation]) -> Option<&Generation> {
    generations
        .iter()
        .rfind(|g| g.state == GenerationState::Active)
        .or_else(|| {
            generations
                .iter()
                .rfind(|g| g.state == GenerationState::Building)
        })
}

/// Share of the log a generation with this checkpoint has folded in, in percent, rounded down to
/// a tenth (100 for an empty log).
pub fn progress_percent(checkpoint: Position, head: Position) -> f64 {
    if head == 0 {
        100.0
    } else {
        (checkpoint.min(head) as f64 * 1000.0 / head as f64).floor() / 10.0
    }
}

/// `<projection>__g<generation>__<collection>`.
pub fn physical_name(projection: &str, generation: u32, collection: &str) -> String {
    format!("{projection}__g{generation}__{collection}")
}

/// `<projection>__<collection>`: the stable name readers use.
pub fn stable_name(projection: &str, collection: &str) -> String {
    format!("{projection}__{collection}")
}
