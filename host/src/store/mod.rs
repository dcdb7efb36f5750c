//! The storage boundary: what the host needs from an event store and a read-model store, as
//! narrow ports ([`ports`]), with one implementation per backend. Knows nothing of wasmtime.
//!
//! Terms:
//! - **head**: the highest position committed so far.
//! - **checkpoint**: the last position a generation has folded into its documents; it commits
//!   in the same transaction as the documents, so a batch takes effect exactly once.
//! - **change feed**: a doorbell that rings with the head after appends. The events stay the
//!   source of truth: a woken reader reads by position, so a missed ring loses nothing.

mod append;
pub mod batch;
mod error;
pub mod generations;
mod import;
#[cfg(feature = "mongodb")]
pub mod mongo;
mod ports;
pub mod sqlite;

use std::sync::Arc;

use tokio::sync::watch;

use crate::domain::Position;
pub use crate::domain::query::{Query, QueryError};
pub(crate) use append::StoredId;
pub use append::StreamAppend;
pub use batch::{BatchWrites, WritingBatch, written_key};
pub use error::{BackendError, StoreError, StoreResult};
pub(crate) use import::FastMap;
pub use import::{ImportBatch, Imported, ImportedEvent};
pub use ports::{
    Checkpoints, Components, DeadLetter, DeadLetterKey, DeadLetters, DocumentReader, Documents,
    EventLog, Generations, Host, Lease, Leases, MAX_DEAD_LETTER_PAGE, OperatorState, Page,
    Published, Refusal, WriteHistory,
};

/// Ring a change feed with a new head; a lower or equal position changes nothing, so rings from
/// several sources (this process's appends, a poller, a change stream) can race safely.
pub(crate) fn ring(feed: &watch::Sender<Position>, position: Position) {
    feed.send_if_modified(|head| {
        let moved = position > *head;
        *head = (*head).max(position);
        moved
    });
}

/// Every port of a store: what [`open`] returns, for the wiring that hands the ports out.
pub trait Store:
    EventLog
    + Checkpoints
    + Generations
    + Documents
    + DeadLetters
    + OperatorState
    + WriteHistory
    + Leases
    + Components
{
}

impl<T> Store for T where
    T: EventLog
        + Checkpoints
        + Generations
        + Documents
        + DeadLetters
        + OperatorState
        + WriteHistory
        + Leases
        + Components
{
}

/// What a host that serves projections holds beside its store: on MongoDB, the sequencer that
/// gives positions to events other applications insert; on the embedded store, the lock that
/// refuses a second host on the same file.
pub struct HostTasks {
    #[cfg(feature = "mongodb")]
    sequencer: Option<mongo::SequencerHandle>,
    /// On the embedded store, the lock that keeps a second host off the file.
    _lock: Option<sqlite::HostLock>,
}

impl HostTasks {
    /// Stop them (the sequencer gives its lease up, so another host takes over at once).
    pub async fn stop(self) {
        #[cfg(feature = "mongodb")]
        if let Some(sequencer) = self.sequencer {
            sequencer.stop().await;
        }
    }
}

/// Open the store a host serves projections from, as [`open`] does, with the tasks such a host
/// runs beside it (`owner` names the host in the sequencer's lease and in the generations'
/// leases, which last `lease` without renewal: see [`Leases`]).
pub async fn open_serving(
    uri: &str,
    owner: &str,
    lease: std::time::Duration,
) -> StoreResult<(Arc<dyn Store>, HostTasks)> {
    #[cfg(feature = "mongodb")]
    if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        let store = mongo::MongoStore::open(uri)
            .await?
            .with_leases(owner, lease);
        let sequencer = store.spawn_sequencer(owner.to_owned());
        let tasks = HostTasks {
            sequencer: Some(sequencer),
            _lock: None,
        };
        return Ok((Arc::new(store), tasks));
    }
    let _ = (owner, lease);
    // The lock first: a second host is refused before it touches the file.
    let lock = match uri.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Some(sqlite::lock_for_host(std::path::Path::new(path))?),
        _ => None,
    };
    let store = open(uri).await?;
    Ok((
        store,
        HostTasks {
            #[cfg(feature = "mongodb")]
            sequencer: None,
            _lock: lock,
        },
    ))
}

/// Open the store a URI names: `sqlite://PATH` (a file, created if missing) or
/// `mongodb://...` / `mongodb+srv://...` (a replica set; the database named in the path,
/// `refold` by default).
pub async fn open(uri: &str) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = uri.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::InvalidInput(
                "sqlite:// needs a file path, e.g. sqlite://refold.db".into(),
            ));
        }
        let store = sqlite::SqliteStore::open(std::path::Path::new(path)).await?;
        return Ok(Arc::new(store));
    }
    if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        #[cfg(feature = "mongodb")]
        return Ok(Arc::new(mongo::MongoStore::open(uri).await?));
        #[cfg(not(feature = "mongodb"))]
        return Err(StoreError::InvalidInput(format!(
            "`{uri}` names a MongoDB store, but this build of refold has no MongoDB support: \
             build it with the `mongodb` feature (on by default)"
        )));
    }
    Err(StoreError::UnsupportedUri(uri.to_owned()))
}
