//! Projectors: one task per projection generation that folds the log into its collections.
//!
//! A projector starts from its generation's checkpoint, catches up in batches read by position,
//! then waits on the change feed and reads again, so the hand-over from catch-up to live is the
//! same code path: nothing is skipped and nothing is applied twice. Each batch's writes and the
//! new checkpoint commit in one store transaction. Knows no wasmtime: it drives a [`Handler`].

mod backoff;
mod commit;
mod context;
mod cursor;
mod failure;
mod handler;
mod plan;
mod redrive;
mod runner;
mod status;
mod supervisor;
#[cfg(test)]
mod tests;
mod upcast;

pub use context::{BatchContext, CollectionFailure, GuestLog, Watched};
pub use handler::{HandleFailure, Handler};
pub use runner::{Projector, ProjectorPorts};
pub use status::{DropReason, ProjectorState, ProjectorStatus};
pub use supervisor::{CodeSource, HostView, Supervisor, SupervisorError};
pub use upcast::{
    Chain, ChainError, MAX_UPCAST_EVENTS, UpcastEvent, Upcasted, Upcaster, behind_recorded,
};

/// Events per batch when the manifest does not say.
pub const DEFAULT_BATCH_SIZE: u32 = 500;
