//! What a projector writes: a batch's documents with its checkpoint, a checkpoint that ran ahead
//! over events the projection does not subscribe to, and the dead letter of a skipped event.
//! Store failures are retried; a checkpoint moved by another writer stops the projector.

use super::backoff::Backoff;
use super::cursor::Cursor;
use super::failure::FailedEvent;
use super::runner::Projector;
use super::{BatchContext, DropReason, HandleFailure};
use crate::domain::Position;
use crate::metrics;
use crate::store::{BatchWrites, DeadLetter, StoreError};

impl Projector {
    /// Skip an event: record its dead letter and move the checkpoint from `from` past it, to
    /// `to`, in one commit (retrying store failures), so the dead letter exists exactly when the
    /// checkpoint passed the event.
    pub(super) async fn skip(
        &self,
        context: &mut BatchContext,
        event: FailedEvent,
        attempts: u32,
        failure: &HandleFailure,
        from: Position,
        to: Position,
    ) -> Result<(), DropReason> {
        let letter = DeadLetter {
            projection: self.generation.projection.clone(),
            generation: self.generation.number,
            version: self.generation.version,
            position: event.position,
            event_id: event.id,
            event_type: event.event_type,
            aggregate_id: event.aggregate_id,
            error: failure.to_string(),
            attempts,
            at_ms: crate::domain::time::now_millis(),
            retry_requested: false,
        };
        let mut writes = context.take_writes();
        writes.dead_letters.push(letter.clone());
        if let Err(refused) = self.commit_writes(context, writes, from, to).await? {
            // Nothing of the event is written with its dead letter; a store that refuses the
            // letter alone cannot be worked around.
            return Err(DropReason::Store(refused.to_string()));
        }
        metrics::global().dead_letter(&letter.projection);
        tracing::warn!(projection = %letter.projection, generation = letter.generation, position = letter.position, event_type = %letter.event_type, error = %letter.error, "event skipped after {attempts} attempts: recorded as a dead letter");
        Ok(())
    }

    /// Commit the context's writes and move the checkpoint from `from` to `to`, retrying store
    /// failures. A moved checkpoint stops the projector. Writes the store refuses as they are
    /// (a duplicate under a unique index...) are discarded and come back as the projection's
    /// failure, for its failure policy: retrying them unchanged would never end.
    pub(super) async fn commit(
        &self,
        context: &mut BatchContext,
        from: Position,
        to: Position,
    ) -> Result<Result<(), HandleFailure>, DropReason> {
        let writes = context.take_writes();
        self.commit_writes(context, writes, from, to).await
    }

    /// Commit writes taken from the context (see [`Self::commit`]).
    pub(super) async fn commit_writes(
        &self,
        context: &mut BatchContext,
        mut writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> Result<Result<(), HandleFailure>, DropReason> {
        // One id for every try of this commit (see `BatchWrites::commit_id`).
        writes.commit_id = fastrand::u64(1..);
        let mut backoff = Backoff::new();
        loop {
            match self
                .ports
                .checkpoints
                .commit(&self.generation, writes.clone(), from, to)
                .await
            {
                Ok(()) => return Ok(Ok(())),
                Err(StoreError::Refused(message)) => {
                    context.discard();
                    return Ok(Err(HandleFailure::Refused(message)));
                }
                Err(StoreError::CheckpointMoved { .. }) | Err(StoreError::NotFound(_)) => {
                    context.discard();
                    let message = format!(
                        "{}: generation {} was changed by another writer; stopping this projector",
                        self.generation.projection, self.generation.number
                    );
                    return Err(DropReason::CheckpointMoved(message));
                }
                Err(error) => {
                    if self.stopping() {
                        context.discard();
                        return Err(DropReason::Shutdown);
                    }
                    tracing::warn!(projection = %self.generation.projection, %error, "commit failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Persist a checkpoint that ran ahead over unsubscribed events, best effort.
    pub(super) async fn flush_checkpoint(&self, cursor: &mut Cursor) {
        let (stored, scanned) = (cursor.stored, cursor.scanned);
        let moved = scanned > stored
            && self
                .ports
                .checkpoints
                .commit(&self.generation, BatchWrites::default(), stored, scanned)
                .await
                .is_ok();
        cursor.flushed(if moved { scanned } else { stored });
    }
}
