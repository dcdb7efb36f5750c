//! The failure policy applied to a projector's failures: how many attempts an event gets, and
//! then whether it is skipped to the dead letters or stops the projection. Host failures (the
//! store, a lost handler task) are not the event's fault: they are retried without limit.

use super::backoff::Backoff;
use crate::domain::{FailurePolicy, OnFailure, Position, RecordedEvent};

/// What to do about an event that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Try it again, after a backoff; this was attempt `attempt`.
    Retry {
        /// Attempts made so far.
        attempt: u32,
    },
    /// Record it as a dead letter and go on.
    Skip {
        /// Attempts made.
        attempts: u32,
    },
    /// Park the projection on it.
    Stop,
}

/// The failures of one projector, against its policy.
#[derive(Debug)]
pub(super) struct Failures {
    policy: FailurePolicy,
    /// The event failing now, and the attempts made at it.
    failing: Option<(Position, u32)>,
    event_backoff: Backoff,
    host_backoff: Backoff,
}

impl Failures {
    pub(super) fn new(policy: FailurePolicy) -> Self {
        Self {
            policy,
            failing: None,
            event_backoff: Backoff::new(),
            host_backoff: Backoff::new(),
        }
    }

    /// The policy in force.
    pub(super) fn policy(&self) -> &FailurePolicy {
        &self.policy
    }

    /// The event at `position` failed (alone, in careful mode): one more attempt at it.
    pub(super) fn event_failed(&mut self, position: Position) -> Verdict {
        let attempt = match self.failing {
            Some((p, n)) if p == position => n + 1,
            _ => {
                self.event_backoff = Backoff::new();
                1
            }
        };
        self.failing = Some((position, attempt));
        if attempt < self.policy.attempts {
            return Verdict::Retry { attempt };
        }
        match self.policy.on_failure {
            OnFailure::Stop => Verdict::Stop,
            OnFailure::Skip => Verdict::Skip { attempts: attempt },
        }
    }

    /// Wait before the next attempt at the failing event.
    pub(super) async fn wait_for_event(&mut self) {
        self.event_backoff.wait().await;
    }

    /// A batch failed on the host's side: wait before trying it again.
    pub(super) async fn wait_for_host(&mut self) {
        self.host_backoff.wait().await;
    }

    /// A batch committed: the host works again.
    pub(super) fn batch_committed(&mut self) {
        self.host_backoff = Backoff::new();
    }
}

/// What a dead letter records of the event it stands for.
pub(super) struct FailedEvent {
    pub(super) position: Position,
    pub(super) id: String,
    pub(super) event_type: String,
    pub(super) aggregate_id: String,
}

impl FailedEvent {
    pub(super) fn of(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, on_failure: OnFailure) -> Failures {
        Failures::new(FailurePolicy {
            attempts,
            on_failure,
        })
    }

    #[test]
    fn an_event_gets_its_attempts_then_the_policy_decides() {
        let mut failures = policy(3, OnFailure::Skip);
        assert_eq!(failures.event_failed(7), Verdict::Retry { attempt: 1 });
        assert_eq!(failures.event_failed(7), Verdict::Retry { attempt: 2 });
        assert_eq!(failures.event_failed(7), Verdict::Skip { attempts: 3 });
        let mut failures = policy(1, OnFailure::Stop);
        assert_eq!(failures.event_failed(7), Verdict::Stop);
    }

    #[test]
    fn another_event_starts_its_own_count() {
        let mut failures = policy(2, OnFailure::Skip);
        assert_eq!(failures.event_failed(7), Verdict::Retry { attempt: 1 });
        assert_eq!(failures.event_failed(9), Verdict::Retry { attempt: 1 });
        assert_eq!(failures.event_failed(9), Verdict::Skip { attempts: 2 });
    }
}
