//! Re-driving dead letters: an operator asked for events a failure policy skipped to be handled
//! again, by the code running now.

use std::sync::Arc;
use std::time::Duration;

use super::runner::{Projector, REDRIVE_POLL, Run};
use super::{BatchContext, DropReason};
use crate::domain::{EventFilter, Position, RecordedEvent};
use crate::metrics;
use crate::store::DeadLetter;

impl Projector {
    /// Re-drive the generation's dead letters an operator asked for, if it is time to look
    /// (never in careful mode, which is in the middle of a failed batch).
    pub(super) async fn redrive_due(
        &mut self,
        mut context: BatchContext,
        run: &mut Run,
    ) -> Result<BatchContext, DropReason> {
        if run.last_redrive.elapsed() < REDRIVE_POLL || run.cursor.careful() {
            return Ok(context);
        }
        run.last_redrive = std::time::Instant::now();
        // A re-drive commits at the checkpoint: the group commit in flight lands first.
        if !self.settle(&mut context, run).await? {
            return Ok(context);
        }
        self.redrive(context, run.cursor.stored).await
    }

    /// Re-drive the dead letters an operator asked for, in position order, with the code
    /// running now: each one's writes commit together with the deletion of its dead letter
    /// (the checkpoint stays at `at`), so it is applied exactly once. One that fails again stays
    /// a dead letter with the new error and one more attempt. Runs at a batch boundary.
    async fn redrive(
        &mut self,
        mut context: BatchContext,
        at: Position,
    ) -> Result<BatchContext, DropReason> {
        let wanted = match self
            .ports
            .dead_letters
            .dead_letters_to_redrive(self.name(), self.generation.number)
            .await
        {
            Ok(letters) => letters,
            Err(error) => {
                tracing::warn!(projection = %self.name(), %error, "cannot read dead letters; trying again later");
                return Ok(context);
            }
        };
        for letter in wanted {
            let event = match self.dead_letter_event(&letter).await {
                Ok(event) => event,
                Err(()) => return Ok(context),
            };
            let error = match event {
                None => format!("event {} is not in the log", letter.position),
                Some(event) => {
                    let (returned, result) =
                        self.handle(Arc::new(vec![event]), 0..1, context).await?;
                    context = returned;
                    match result {
                        Ok(()) => {
                            let mut writes = context.take_writes();
                            writes.resolved_dead_letters.push(letter.position);
                            match self.commit_writes(&mut context, writes, at, at).await? {
                                Ok(()) => {
                                    metrics::global().batch(&letter.projection, 1, Duration::ZERO);
                                    tracing::info!(projection = %letter.projection, generation = letter.generation, position = letter.position, "dead letter re-driven");
                                    continue;
                                }
                                Err(refused) => refused.to_string(),
                            }
                        }
                        Err(failure) if failure.is_transient() => {
                            context.discard();
                            return Ok(context);
                        }
                        Err(failure) => {
                            context.discard();
                            failure.to_string()
                        }
                    }
                }
            };
            self.failed_again(&mut context, letter, error, at).await?;
        }
        Ok(context)
    }

    /// The event a dead letter stands for (`None` when the log lacks it); `Err` when the store
    /// cannot say now.
    async fn dead_letter_event(&self, letter: &DeadLetter) -> Result<Option<RecordedEvent>, ()> {
        match self
            .ports
            .log
            .read_all(letter.position - 1, 1, &EventFilter::default())
            .await
        {
            Ok(page) => Ok(page
                .events
                .into_iter()
                .find(|e| e.position == letter.position)),
            Err(error) => {
                tracing::warn!(projection = %letter.projection, %error, "cannot read a dead letter's event; trying again later");
                Err(())
            }
        }
    }

    /// Record that a re-driven dead letter failed again, in a commit that keeps the checkpoint
    /// at `at`: like every commit, only while this projector still owns the generation (its
    /// checkpoint, and its lease where hosts share the store), so a host that lost the
    /// generation cannot bring back a dead letter its new owner re-drove.
    async fn failed_again(
        &self,
        context: &mut BatchContext,
        mut letter: DeadLetter,
        error: String,
        at: Position,
    ) -> Result<(), DropReason> {
        tracing::warn!(projection = %letter.projection, position = letter.position, %error, "re-driven dead letter failed again");
        letter.error = error;
        letter.attempts += 1;
        letter.retry_requested = false;
        letter.at_ms = crate::domain::time::now_millis();
        let mut writes = context.take_writes();
        writes.dead_letters.push(letter.clone());
        if let Err(refused) = self.commit_writes(context, writes, at, at).await? {
            tracing::warn!(projection = %letter.projection, error = %refused, "cannot record the failed re-drive");
        }
        Ok(())
    }
}
