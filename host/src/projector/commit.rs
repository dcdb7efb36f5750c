//! What a projector writes: a batch's documents with its checkpoint, a checkpoint that ran ahead
//! over events the projection does not subscribe to, and the dead letter of a skipped event.
//! Store failures are retried; a checkpoint moved by another writer stops the projector.

use std::sync::Arc;

use tokio::sync::watch;

use super::backoff::Backoff;
use super::cursor::Cursor;
use super::failure::FailedEvent;
use super::runner::Projector;
use super::{BatchContext, DropReason, HandleFailure};
use crate::domain::{Generation, Position};
use crate::metrics;
use crate::store::{BatchWrites, Checkpoints, DeadLetter, StoreError};

/// For the failover tests only: while the file `REFOLD_TEST_HOLD_COMMITS` names exists, a batch
/// that would move a checkpoint past the position the file holds (any batch, when it holds no
/// number) waits before it commits, so a test can take a lease over, or kill a host, in that
/// window; the file `<path>.held` says a batch is held. Unset in any real deployment.
async fn hold_for_test(to: Position) {
    let Some(path) = hold_file() else {
        return;
    };
    let mut held = false;
    while let Ok(text) = std::fs::read_to_string(path) {
        if text.trim().parse::<Position>().is_ok_and(|past| to <= past) {
            return;
        }
        if !held {
            held = true;
            let _ = std::fs::write(format!("{}.held", path.display()), to.to_string());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn hold_file() -> Option<&'static std::path::PathBuf> {
    static HOLD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    HOLD.get_or_init(|| std::env::var_os("REFOLD_TEST_HOLD_COMMITS").map(Into::into))
        .as_ref()
}

/// Whether the failover tests' hook is set: a projector then reads a batch at a time, so a held
/// commit lands mid-replay, as before batches were committed in groups.
pub(super) fn holding_for_test() -> bool {
    hold_file().is_some()
}

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

    /// Commit writes taken from the context (see [`Self::commit`]); the context is discarded
    /// when they do not land.
    pub(super) async fn commit_writes(
        &self,
        context: &mut BatchContext,
        writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> Result<Result<(), HandleFailure>, DropReason> {
        let outcome = self.committer().commit(writes, from, to).await;
        if !matches!(outcome, Ok(Ok(()))) {
            context.discard();
        }
        outcome
    }

    /// What a commit needs, owned: a group's commit runs on a task of its own while the next
    /// group is handled (see [`super::runner::InFlight`]).
    pub(super) fn committer(&self) -> Committer {
        Committer {
            checkpoints: Arc::clone(&self.ports.checkpoints),
            generation: self.generation.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Persist a checkpoint that ran ahead over unsubscribed events, best effort. A flush the
    /// store gives no definite answer to may have landed: it is kept in the cursor, to be sent
    /// again with its id before the next commit ([`Self::confirm_flush`]).
    pub(super) async fn flush_checkpoint(&self, cursor: &mut Cursor) {
        let (stored, scanned) = (cursor.stored, cursor.scanned);
        if scanned <= stored {
            cursor.flushed(stored);
            return;
        }
        let id = fastrand::u64(1..);
        let writes = BatchWrites {
            commit_id: id,
            ..BatchWrites::default()
        };
        match self
            .ports
            .checkpoints
            .commit(&self.generation, writes, stored, scanned)
            .await
        {
            Ok(()) => cursor.flushed(scanned),
            // Another writer: the next commit meets it and stops the projector.
            Err(
                StoreError::CheckpointMoved { .. }
                | StoreError::NotFound(_)
                | StoreError::LeaseLost(_),
            ) => {
                cursor.flushed(stored);
            }
            Err(error) => {
                tracing::warn!(projection = %self.generation.projection, %error, "checkpoint flush failed; it is sent again before the next commit");
                cursor.unconfirmed = Some((scanned, id));
                cursor.flushed(stored);
            }
        }
    }

    /// Send a flush whose outcome is unknown again, with its id, until the store answers: it
    /// landed (the store recognises its id) or it is applied now. Only then may another commit
    /// start from the cursor's checkpoint, which would otherwise take the flush that landed for
    /// another writer's commit.
    pub(super) async fn confirm_flush(
        &self,
        context: &mut BatchContext,
        cursor: &mut Cursor,
    ) -> Result<(), DropReason> {
        let Some((to, id)) = cursor.unconfirmed.take() else {
            return Ok(());
        };
        let writes = BatchWrites {
            commit_id: id,
            ..BatchWrites::default()
        };
        if let Err(refused) = self
            .commit_writes(context, writes, cursor.stored, to)
            .await?
        {
            return Err(DropReason::Store(refused.to_string()));
        }
        cursor.committed(to);
        Ok(())
    }
}

/// Commits one generation's writes with its checkpoint, retrying store failures until they land,
/// the store refuses them, another writer has the generation, or the projector stops.
pub(super) struct Committer {
    checkpoints: Arc<dyn Checkpoints>,
    generation: Generation,
    shutdown: watch::Receiver<bool>,
}

impl Committer {
    /// Commit `writes` and move the checkpoint from `from` to `to`. Writes the store refuses as
    /// they are (a duplicate under a unique index...) come back as the projection's failure,
    /// for its failure policy: retrying them unchanged would never end.
    pub(super) async fn commit(
        self,
        mut writes: BatchWrites,
        from: Position,
        to: Position,
    ) -> Result<Result<(), HandleFailure>, DropReason> {
        // One id for every try of this commit (see `BatchWrites::commit_id`).
        if writes.commit_id == 0 {
            writes.commit_id = fastrand::u64(1..);
        }
        hold_for_test(to).await;
        let generation = &self.generation;
        let mut backoff = Backoff::new();
        loop {
            match self
                .checkpoints
                .commit(generation, writes.clone(), from, to)
                .await
            {
                Ok(()) => return Ok(Ok(())),
                Err(StoreError::Refused(message)) => {
                    return Ok(Err(HandleFailure::Refused(message)));
                }
                Err(StoreError::LeaseLost(message)) => {
                    // Another host runs the generation now: nothing of this batch landed, and
                    // this projector has nothing left to do. Not a failure of the projection.
                    tracing::warn!(projection = %generation.projection, generation = generation.number, %message, "lease lost: stopping this projector");
                    return Err(DropReason::Superseded(message));
                }
                Err(StoreError::CheckpointMoved { .. }) | Err(StoreError::NotFound(_)) => {
                    let message = format!(
                        "{}: generation {} was changed by another writer; stopping this projector",
                        generation.projection, generation.number
                    );
                    return Err(DropReason::CheckpointMoved(message));
                }
                Err(error) => {
                    if *self.shutdown.borrow() {
                        return Err(DropReason::Shutdown);
                    }
                    tracing::warn!(projection = %generation.projection, %error, "commit failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}
