//! Reading MongoDB errors: server codes and labels the store branches on.

use mongodb::error::{Error, ErrorKind, WriteFailure};

/// Duplicate key.
pub const DUPLICATE_KEY: i32 = 11000;
/// An index of that name exists with other options or keys (`IndexOptionsConflict`,
/// `IndexKeySpecsConflict`).
pub const INDEX_CONFLICT: [i32; 2] = [85, 86];
/// The collection or view already exists.
pub const NAMESPACE_EXISTS: i32 = 48;

/// `IndexNotFound`: dropping an index that is not there.
pub const INDEX_NOT_FOUND: i32 = 27;

/// The server's error code, wherever the driver put it.
pub fn code(error: &Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => Some(concern.code),
        ErrorKind::InsertMany(insert) => insert
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| e.code),
        _ => None,
    }
}

/// The server's message for a failed write, without the driver's wrapping.
pub fn write_message(error: &Error) -> String {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.message.clone(),
        ErrorKind::InsertMany(insert) => insert
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map_or_else(|| error.to_string(), |e| e.message.clone()),
        _ => error.to_string(),
    }
}

/// "Not primary" and shutdown codes: an election is under way.
const NOT_PRIMARY: [i32; 6] = [10107, 13435, 11602, 189, 91, 11600];

/// The whole transaction may be retried. mongod labels these `TransientTransactionError`,
/// including "not primary" during an election; SecantusDB 0.7 returns `NotWritablePrimary`
/// without the label, so those codes count as transient too.
pub fn is_transient_transaction(error: &Error) -> bool {
    error.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
        || code(error).is_some_and(|c| NOT_PRIMARY.contains(&c))
}

/// The commit may have happened; retry the commit itself.
pub fn is_unknown_commit(error: &Error) -> bool {
    error.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT)
}

/// Whether opening a change stream failed because the oplog no longer holds its resume token
/// (`ChangeStreamHistoryLost`, `ChangeStreamFatalError`, an invalid token).
pub fn is_history_lost(error: &mongodb::error::Error) -> bool {
    matches!(code(error), Some(286 | 280 | 260))
}
