//! A projector's cursor over the log: the checkpoint in the store, how far it has looked (which
//! runs ahead over events the projection does not subscribe to), and the careful mode that
//! replays a failed batch one event at a time.

use std::time::{Duration, Instant};

use crate::domain::Position;

/// A non-matching stretch of the log this long is checkpointed even with nothing to write, so a
/// restart does not rescan it.
pub(super) const IDLE_CHECKPOINT_DISTANCE: Position = 10_000;
/// At the head, a checkpoint that ran ahead over unsubscribed events is persisted at most this
/// often, so `refold status` shows no lag without a commit per unrelated append.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Where a projector is in the log.
#[derive(Debug)]
pub(super) struct Cursor {
    /// The checkpoint in the store.
    pub(super) stored: Position,
    /// Every position up to this one has been looked at; at or ahead of `stored`.
    pub(super) scanned: Position,
    /// After a failed batch, events up to here are read one at a time, to name the failing
    /// event and keep the effect of the good ones before it.
    careful_until: Position,
    /// After a failed page read as a group, events up to here are read a batch at a time, as
    /// they were before pages were grouped: the failure is then met in a batch of its own.
    batches_until: Position,
    last_flush: Instant,
    /// A checkpoint flush the store gave no definite answer to (it may have landed): its
    /// target and commit id. It is sent again with that id, which the store recognises, before
    /// any other commit starts from `stored`.
    pub(super) unconfirmed: Option<(Position, u64)>,
}

impl Cursor {
    /// A cursor at the generation's checkpoint.
    pub(super) fn at(checkpoint: Position) -> Self {
        Self {
            stored: checkpoint,
            scanned: checkpoint,
            careful_until: 0,
            batches_until: 0,
            last_flush: Instant::now(),
            unconfirmed: None,
        }
    }

    /// Whether the cursor is going one event at a time through a failed batch.
    pub(super) fn careful(&self) -> bool {
        self.scanned < self.careful_until
    }

    /// Events to read next: one in careful mode, a batch after a failed group, a group
    /// otherwise.
    pub(super) fn limit(&self, batch_size: usize, group: usize) -> usize {
        self.limit_after(self.scanned, batch_size, group)
    }

    /// Events the read after `position` would ask for, were the cursor there.
    pub(super) fn limit_after(&self, position: Position, batch_size: usize, group: usize) -> usize {
        if position < self.careful_until {
            1
        } else if position < self.batches_until {
            batch_size
        } else {
            group.max(batch_size)
        }
    }

    /// Read a batch at a time up to `end` (the end of a group that failed).
    pub(super) fn go_by_batches_until(&mut self, end: Position) {
        self.batches_until = end;
    }

    /// Go one event at a time up to `end` (the end of a batch that failed).
    pub(super) fn go_carefully_until(&mut self, end: Position) {
        self.careful_until = end;
    }

    /// A page with no matching event was read up to `scanned_to`; true when the checkpoint has
    /// fallen so far behind that it should be committed with nothing to write.
    pub(super) fn passed_over(&mut self, scanned_to: Position) -> bool {
        self.scanned = scanned_to;
        self.scanned - self.stored >= IDLE_CHECKPOINT_DISTANCE
    }

    /// At the head: whether the checkpoint ran ahead long enough ago to be persisted.
    pub(super) fn flush_due(&self) -> bool {
        self.scanned > self.stored && self.last_flush.elapsed() >= IDLE_CHECKPOINT_INTERVAL
    }

    /// The checkpoint moved to `to` in the store.
    pub(super) fn committed(&mut self, to: Position) {
        self.stored = to;
        self.scanned = self.scanned.max(to);
    }

    /// A flush of the checkpoint was attempted now; `stored` is what the store holds.
    pub(super) fn flushed(&mut self, stored: Position) {
        self.stored = stored;
        self.last_flush = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn careful_mode_reads_one_event_until_the_failed_batch_ends() {
        let mut cursor = Cursor::at(10);
        assert_eq!(cursor.limit(500, 5_000), 5_000);
        cursor.go_by_batches_until(30);
        assert_eq!(cursor.limit(500, 5_000), 500);
        cursor.go_carefully_until(20);
        assert_eq!(cursor.limit(500, 5_000), 1);
        cursor.committed(20);
        assert!(!cursor.careful());
        assert_eq!((cursor.stored, cursor.scanned), (20, 20));
        assert_eq!(cursor.limit(500, 5_000), 500);
        cursor.committed(30);
        assert_eq!(cursor.limit(500, 5_000), 5_000);
    }

    #[test]
    fn a_long_stretch_without_matching_events_is_checkpointed() {
        let mut cursor = Cursor::at(0);
        assert!(!cursor.passed_over(IDLE_CHECKPOINT_DISTANCE - 1));
        assert!(cursor.passed_over(IDLE_CHECKPOINT_DISTANCE));
        assert_eq!(cursor.stored, 0);
    }
}
