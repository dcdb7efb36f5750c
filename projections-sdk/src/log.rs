//! Structured logging into the host's log. Records are tagged by the host with the projection
//! and the position being handled.

use crate::wit::refold::projection::log::{Level, write};

/// Log at trace level.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Log at info level.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Log at error level.
pub fn error(message: &str) {
    write(Level::Error, message);
}
