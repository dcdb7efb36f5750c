//! What a projector tells the outside: its state and progress, published on every batch, and
//! the reason it stopped.

use serde::Serialize;

use super::HandleFailure;
use crate::domain::{GenerationState, Position};

/// What a projector is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorState {
    /// Loading; nothing read yet.
    Starting,
    /// Catching up with history.
    Replaying,
    /// At the head, following appends.
    Live,
    /// Stopped; see the drop reason.
    Stopped,
}

/// A projector's progress, published on every batch.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectorStatus {
    /// Projection name.
    pub projection: String,
    /// Generation number.
    pub generation: u32,
    /// Declared version.
    pub version: u32,
    /// The generation's life-cycle state, as this projector last set it.
    pub generation_state: GenerationState,
    /// What it is doing.
    pub state: ProjectorState,
    /// Last position folded in.
    pub checkpoint: Position,
    /// Head when last looked at.
    pub head: Position,
    /// Events handed to the projection since start.
    pub handled: u64,
    /// Why it stopped, if it did.
    pub error: Option<String>,
}

/// Why a projector stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Asked to stop.
    #[error("shut down")]
    Shutdown,
    /// The projection failed on an event; the failure policy parked it.
    #[error("{projection}: handle failed at position {position}: {failure}")]
    Failed {
        /// Projection name.
        projection: String,
        /// The failing event.
        position: Position,
        /// What failed.
        failure: HandleFailure,
    },
    /// Another writer moved the checkpoint: two hosts are running the same generation.
    #[error("{0}")]
    CheckpointMoved(String),
    /// The generation left building before it caught up (abandoned for different code, or
    /// rolled back): its projector has nothing left to do. Not a failure.
    #[error("{0}")]
    Superseded(String),
    /// The store could not give the projector what it needs to start.
    #[error("store: {0}")]
    Store(String),
}
