//! The error a projection returns for an event, and how it crosses the WIT boundary.

use crate::wit::refold::projection::collections::CollectionError;
use crate::wit::refold::projection::types as wit;

/// What went wrong with an event, as the host will report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The event's data or metadata do not have the expected shape.
    InvalidEvent,
    /// The event does not fit the state of the read model.
    InvalidState,
    /// A host call (collection access) failed.
    Host,
    /// Anything else.
    Other,
}

/// A failure while handling an event. The host discards the batch's writes and applies its
/// failure policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Result of projection code.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The event could not be decoded.
    pub fn invalid_event(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidEvent, message)
    }

    /// The event does not fit the state of the read model.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// The category of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn into_wit(self, position: u64) -> wit::HandleError {
        let kind = match self.kind {
            ErrorKind::InvalidEvent => wit::ErrorKind::InvalidEvent,
            ErrorKind::InvalidState => wit::ErrorKind::InvalidState,
            ErrorKind::Host => wit::ErrorKind::Host,
            ErrorKind::Other => wit::ErrorKind::Other,
        };
        wit::HandleError {
            position: Some(position),
            kind,
            message: self.message,
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<CollectionError> for Error {
    fn from(error: CollectionError) -> Self {
        let message = match error {
            CollectionError::UnknownCollection(m) => format!("unknown collection: {m}"),
            CollectionError::InvalidId(m) => format!("invalid document id: {m}"),
            CollectionError::InvalidDocument(m) => format!("invalid document: {m}"),
            CollectionError::InvalidUpdate(m) => format!("invalid update: {m}"),
            CollectionError::LimitExceeded(m) => format!("limit exceeded: {m}"),
            CollectionError::Store(m) => format!("store error: {m}"),
        };
        Self::new(ErrorKind::Host, message)
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::invalid_state(format!("document does not decode: {error}"))
    }
}
