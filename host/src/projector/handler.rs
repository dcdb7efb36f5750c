//! The handler boundary: what the projector needs from a loaded projection, whatever runs it.

use std::time::Duration;

use crate::domain::{EventFilter, Manifest, Position, RecordedEvent};
use crate::projector::context::{BatchContext, CollectionFailure};

/// Why a batch failed in the handler. Guest-reported errors, traps and host refusals stay
/// distinct so that operators can tell a bug in the projection from a limit or an outage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleFailure {
    /// The projection returned an error.
    #[error("projection reported {kind} error{}: {message}", at(*position))]
    Guest {
        /// The event it failed on, when it said.
        position: Option<Position>,
        /// Its category (`invalid-event`, `invalid-state`, `host`, `other`).
        kind: String,
        /// Its message.
        message: String,
    },
    /// The projection broke the contract (undeclared collection, bad id or document, a batch
    /// limit), even if it then ignored the error it was given.
    #[error("projection broke the contract at position {position}: {failure}")]
    Contract {
        /// Where.
        position: Position,
        /// What.
        failure: CollectionFailure,
    },
    /// The code trapped (panic, unreachable, out-of-bounds access...).
    #[error("projection trapped: {0}")]
    Trap(String),
    /// The batch ran past its deadline (an endless loop, or far too much work).
    #[error("batch exceeded its deadline of {0:?}")]
    Deadline(Duration),
    /// The instance hit its memory cap.
    #[error("projection exceeded its memory limit of {0} bytes")]
    Memory(usize),
    /// The store refused the batch's writes as they are (a value already held under a unique
    /// index...): the projection's failure, since the same writes would be refused again.
    #[error("the store refused the batch's writes: {0}")]
    Refused(String),
    /// An upcaster failed on an event the projection receives, or returned what it may not:
    /// the event fails for the projection, under its failure policy.
    #[error("upcaster `{upcaster}` failed at position {position}: {message}")]
    Upcast {
        /// The upcaster's name.
        upcaster: String,
        /// The event it failed on.
        position: Position,
        /// What went wrong.
        message: String,
    },
    /// The host failed (store unreachable...), not the projection: worth retrying.
    #[error("host failure: {0}")]
    Host(String),
}

fn at(position: Option<Position>) -> String {
    position
        .map(|p| format!(" at position {p}"))
        .unwrap_or_default()
}

impl HandleFailure {
    /// Failures worth retrying unchanged: the projection's code is deterministic, so only a
    /// host failure can go away on its own.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Host(_))
    }

    /// The position the failure names, if any.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Guest { position, .. } => *position,
            Self::Contract { position, .. } | Self::Upcast { position, .. } => Some(*position),
            _ => None,
        }
    }
}

/// A loaded projection, ready to handle batches. Implemented by the wasm engine.
pub trait Handler: Send + Sync {
    /// Its manifest, validated.
    fn manifest(&self) -> &Manifest;

    /// Hash of its code.
    fn code_hash(&self) -> &str;

    /// The events to read from the store for it: the manifest's subscription, widened by the
    /// types upcasters turn into those it subscribes to.
    fn filter(&self) -> EventFilter {
        self.manifest().filter()
    }

    /// The code hashes of the upcasters in front of it, sorted (none by default).
    fn upcasters(&self) -> &[String] {
        &[]
    }

    /// Fold a batch (in position order, already filtered by [`Self::filter`]) into the context.
    fn handle(
        &self,
        events: &[RecordedEvent],
        context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>);
}
