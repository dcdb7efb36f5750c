//! What a trace asks of a batch context: the guest's log lines kept instead of logged, and one
//! document watched, its state recorded after each event that wrote it.

use std::sync::Arc;

use super::BatchContext;
use crate::domain::Position;
use crate::domain::document::Document;

/// A line a guest wrote (through the log interface, or to stdout or stderr), kept for a trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestLog {
    /// The event being handled when it was written.
    pub position: Position,
    /// `trace`, `debug`, `info`, `warn` or `error`; `stdout` or `stderr` for printed lines.
    pub level: &'static str,
    /// The line.
    pub message: String,
}

/// The state of a watched document after an event that wrote it ([`BatchContext::watch`]).
#[derive(Debug, Clone)]
pub struct Watched {
    /// The event.
    pub position: Position,
    /// The document after it; `None` when it deleted it.
    pub document: Option<Arc<Document>>,
    /// What the guest logged while handling it (when logs are kept).
    pub logs: Vec<GuestLog>,
}

/// A document whose every write a trace records, event by event.
#[derive(Debug)]
pub(super) struct Watch {
    collection: String,
    id: String,
    /// Its state after the last event that wrote it.
    last: Option<Arc<Document>>,
    seen: Vec<Watched>,
}

impl BatchContext {
    /// Record each write of one document, event by event: the engine then calls the guest once
    /// per event and [`BatchContext::event_handled`] after each. `current` is the document
    /// before the batch.
    pub fn watch(&mut self, collection: &str, id: &str, current: Option<Arc<Document>>) {
        self.watch = Some(Watch {
            collection: collection.to_owned(),
            id: id.to_owned(),
            last: current,
            seen: Vec::new(),
        });
    }

    /// Whether a document is watched.
    pub fn watches(&self) -> bool {
        self.watch.is_some()
    }

    /// The guest has handled the event at `position`: when it wrote the watched document, keep
    /// the document's new state and the event's log lines; otherwise drop the lines.
    pub fn event_handled(&mut self, position: Position) {
        if self.watch.is_none() {
            return;
        }
        let logs = self.take_logs();
        let Some(watch) = &mut self.watch else {
            return;
        };
        let Some(entry) = self
            .entries
            .get(&watch.collection)
            .and_then(|c| c.get(&watch.id))
        else {
            return;
        };
        let same = match (&entry.document, &watch.last) {
            (Some(now), Some(last)) => Arc::ptr_eq(now, last),
            (None, None) => true,
            _ => false,
        };
        if !same {
            watch.last = entry.document.clone();
            watch.seen.push(Watched {
                position,
                document: entry.document.clone(),
                logs,
            });
        }
    }

    /// The watched document's states recorded so far, in event order.
    pub fn take_watched(&mut self) -> Vec<Watched> {
        self.watch
            .as_mut()
            .map(|w| std::mem::take(&mut w.seen))
            .unwrap_or_default()
    }

    /// Keep the guest's log lines from now on, for [`BatchContext::take_logs`] (a trace does;
    /// a projector does not, its lines go to the host's log).
    pub fn keep_logs(&mut self) {
        self.logs.get_or_insert_with(Vec::new);
    }

    /// Whether log lines are kept.
    pub fn keeps_logs(&self) -> bool {
        self.logs.is_some()
    }

    /// Keep a log line, if lines are kept.
    pub fn log(&mut self, level: &'static str, message: &str) {
        let position = self.position;
        if let Some(logs) = &mut self.logs {
            logs.push(GuestLog {
                position,
                level,
                message: message.to_owned(),
            });
        }
    }

    /// The log lines kept since the last call.
    pub fn take_logs(&mut self) -> Vec<GuestLog> {
        self.logs.as_mut().map(std::mem::take).unwrap_or_default()
    }
}
