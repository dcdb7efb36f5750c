//! What can go wrong in a store, as an enum callers branch on: a conflict, bad input, a moved
//! checkpoint, something missing, or the backend failing (with its typed error kept).

use crate::domain::{ExpectedVersion, Position, StreamVersion};

/// Errors from a store, for callers to branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The expected version did not match the stream.
    #[error(
        "concurrency conflict on stream `{aggregate_id}`: expected version {expected}, stream is at {actual}"
    )]
    Conflict {
        /// The stream.
        aggregate_id: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version (0 when it does not exist).
        actual: StreamVersion,
    },
    /// The request itself is invalid (bad stream id, bad event, empty append...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The generation's checkpoint moved under us: another writer handled the same events.
    #[error(
        "checkpoint of {projection} generation {generation} is {found}, expected {expected}: another host is processing it"
    )]
    CheckpointMoved {
        /// Projection.
        projection: String,
        /// Generation number.
        generation: u32,
        /// The checkpoint the committer started from.
        expected: Position,
        /// The checkpoint found.
        found: Position,
    },
    /// The store refuses a batch's writes as they are, however often they are sent: a value
    /// already held by another document under a unique index, a document the store cannot
    /// keep. The projection's failure (its failure policy applies), never retried as the
    /// host's.
    #[error("the store refuses the batch's writes: {0}")]
    Refused(String),
    /// A query of a read model would cost more than the store allows (the embedded store's
    /// [`crate::store::sqlite::QueryBudget`]); the message says which bound and what to do.
    #[error("{message}")]
    OverBudget {
        /// Whether the same query may pass later (it ran out of time on a busy store), or
        /// never will as it is (it would hold too many documents to sort).
        transient: bool,
        /// Which bound it met, and what to do.
        message: String,
    },
    /// This host no longer holds the lease of the generation it commits to: another host took
    /// it over (the fencing token moved), so the commit changed nothing.
    #[error("{0}")]
    LeaseLost(String),
    /// A projection or generation that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The URI does not name a supported store.
    #[error(
        "unsupported store URI `{0}`: use sqlite://PATH or mongodb://HOST:PORT/DATABASE?replicaSet=NAME"
    )]
    UnsupportedUri(String),
    /// The backend failed. The backend's own error is kept as the source, so a caller can
    /// look at it (a driver's error labels, SQLite's error code).
    #[error("{context}: {source}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
}

/// A backend's own error, typed (`rusqlite::Error`, `mongodb::error::Error`...) or a message.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// A backend failure while doing `context`.
    pub fn backend(context: impl Into<String>, error: impl Into<BackendError>) -> Self {
        Self::Backend {
            context: context.into(),
            source: error.into(),
        }
    }

    /// The backend's error, if this is one, as its own type (for example
    /// `rusqlite::Error` to read SQLite's error code).
    pub fn backend_source<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Self::Backend { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;
