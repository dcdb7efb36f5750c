//! The writes of one batch, coalesced per document: whatever a guest did to a document during a
//! batch, the store receives only its final state (or its deletion).

use std::sync::Arc;

use crate::domain::document::Document;
use crate::store::DeadLetter;

/// The final state of every document a batch touched.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchWrites {
    /// `(collection, id, document)`, where `None` deletes the document. One entry per document.
    /// Documents are shared with the projector's cache, not copied.
    pub documents: Vec<(String, String, Option<Arc<Document>>)>,
    /// Positions of the generation's dead letters that this batch re-drove: deleted in the same
    /// transaction, so a re-driven event is applied exactly once.
    pub resolved_dead_letters: Vec<crate::domain::Position>,
    /// Events this batch skipped under a `skip` failure policy: recorded in the same
    /// transaction as the checkpoint that moves past them, so a crash can never leave a dead
    /// letter for an event the checkpoint did not pass (which a re-drive would apply twice).
    pub dead_letters: Vec<DeadLetter>,
    /// This commit's id, the same each time it is sent again (0: none). A store that cannot
    /// learn whether a commit landed (MongoDB, when every answer to it was lost) records the
    /// id with the checkpoint, so that the commit sent again finds its own checkpoint instead
    /// of taking it for another writer's.
    pub commit_id: u64,
    /// What each call of the handler wrote (see [`BatchWrites::segments`]): each call's last
    /// event and the [`written_key`]s of the documents it wrote. Empty when no call of a
    /// handler made the commit (a re-drive, a skipped event, a checkpoint moved alone).
    pub calls: Vec<(crate::domain::Position, Vec<String>)>,
}

impl BatchWrites {
    /// No writes.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
            && self.resolved_dead_letters.is_empty()
            && self.dead_letters.is_empty()
    }

    /// Number of documents written or deleted.
    pub fn len(&self) -> usize {
        self.documents.len()
    }
}

/// A committed batch that wrote a document, as recorded with the batch: which events it
/// handled, for `refold trace` to replay them alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritingBatch {
    /// The checkpoint the batch started from: it handled the generation's events after it...
    pub after: crate::domain::Position,
    /// ...up to this one (the checkpoint it moved to).
    pub upto: crate::domain::Position,
    /// Dead letters the batch re-drove (a re-drive keeps the checkpoint where it is).
    pub redriven: Vec<crate::domain::Position>,
}

/// How a written document is named in a batch's record: collection names have no `/`, so the
/// first one splits it.
pub fn written_key(collection: &str, id: &str) -> String {
    format!("{collection}/{id}")
}

impl BatchWrites {
    /// The stretches of the log a commit from `from` to `to` handled, each with the
    /// [`written_key`]s of the documents written while handling it: one per call of the handler
    /// (the last one reaching `to`), or the whole commit when no call is recorded. Recorded
    /// one by one, so `refold trace` replays only the calls that wrote a document.
    pub fn segments(
        &self,
        from: crate::domain::Position,
        to: crate::domain::Position,
    ) -> Vec<(
        crate::domain::Position,
        crate::domain::Position,
        Vec<String>,
    )> {
        if self.calls.is_empty() {
            return vec![(from, to, self.written_keys().collect())];
        }
        let mut after = from;
        let last = self.calls.len() - 1;
        self.calls
            .iter()
            .enumerate()
            .map(|(i, (end, keys))| {
                let upto = if i == last { to } else { (*end).min(to) };
                let segment = (after, upto, keys.clone());
                after = upto;
                segment
            })
            .collect()
    }

    /// The documents the batch writes, as [`written_key`]s.
    pub fn written_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.documents
            .iter()
            .map(|(collection, id, _)| written_key(collection, id))
    }
}
