//! One projector's loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::{BatchContext, DEFAULT_BATCH_SIZE, HandleFailure, Handler};
use crate::domain::{
    EventFilter, FailurePolicy, Generation, GenerationState, OnFailure, Position, RecordedEvent,
};
use crate::metrics;
use crate::store::{DeadLetter, Page, Store, StoreError};

/// A non-matching stretch of the log this long is checkpointed even with nothing to write, so a
/// restart does not rescan it.
const IDLE_CHECKPOINT_DISTANCE: Position = 10_000;
/// At the head, a checkpoint that ran ahead over unsubscribed events is persisted at most this
/// often, so `refold status` shows no lag without a commit per unrelated append.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a projector looks for dead letters an operator asked to re-drive.
const REDRIVE_POLL: Duration = Duration::from_secs(1);
/// Longest pause between retries of a failing store call.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a projector is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorState {
    /// Loading; nothing read yet.
    Starting,
    /// Catching up with history.
    Replaying,
    /// At the head, following appends.
    Live,
    /// Stopped; see the drop reason.
    Stopped,
}

/// A projector's progress, published on every batch.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectorStatus {
    /// Projection name.
    pub projection: String,
    /// Generation number.
    pub generation: u32,
    /// Declared version.
    pub version: u32,
    /// The generation's life-cycle state, as this projector last set it.
    pub generation_state: GenerationState,
    /// What it is doing.
    pub state: ProjectorState,
    /// Last position folded in.
    pub checkpoint: Position,
    /// Head when last looked at.
    pub head: Position,
    /// Events handed to the projection since start.
    pub handled: u64,
    /// Why it stopped, if it did.
    pub error: Option<String>,
}

/// Why a projector stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Asked to stop.
    #[error("shut down")]
    Shutdown,
    /// The projection failed on an event; the failure policy parked it.
    #[error("{projection}: handle failed at position {position}: {failure}")]
    Failed {
        /// Projection name.
        projection: String,
        /// The failing event.
        position: Position,
        /// What failed.
        failure: HandleFailure,
    },
    /// Another writer moved the checkpoint: two hosts are running the same generation.
    #[error("{0}")]
    CheckpointMoved(String),
    /// The store could not give the projector what it needs to start.
    #[error("store: {0}")]
    Store(String),
}

/// One projection generation's loop.
pub struct Projector {
    store: Arc<dyn Store>,
    handler: Arc<dyn Handler>,
    generation: Generation,
    status: watch::Sender<ProjectorStatus>,
    shutdown: watch::Receiver<bool>,
    policy: FailurePolicy,
}

impl Projector {
    /// A projector for a generation; `shutdown` turning true stops it at a batch boundary.
    pub fn new(
        store: Arc<dyn Store>,
        handler: Arc<dyn Handler>,
        generation: Generation,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, watch::Receiver<ProjectorStatus>) {
        let status = ProjectorStatus {
            projection: generation.projection.clone(),
            generation: generation.number,
            version: generation.version,
            generation_state: generation.state,
            state: ProjectorState::Starting,
            checkpoint: generation.checkpoint,
            head: 0,
            handled: 0,
            error: None,
        };
        let (tx, rx) = watch::channel(status);
        (
            Self {
                policy: handler.manifest().failure_policy.unwrap_or_default(),
                store,
                handler,
                generation,
                status: tx,
                shutdown,
            },
            rx,
        )
    }

    /// Handle failing events with this policy instead of the manifest's.
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    fn publish(&self, f: impl FnOnce(&mut ProjectorStatus)) {
        self.status.send_modify(f);
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Run until shut down or stopped by a failure.
    pub async fn run(mut self) -> DropReason {
        let reason = self.run_inner().await;
        let error = match &reason {
            DropReason::Shutdown => None,
            other => Some(other.to_string()),
        };
        if let Some(message) = &error {
            tracing::error!(projection = %self.generation.projection, generation = self.generation.number, error = %message, "projector stopped");
            if let Err(e) = self.store.set_error(&self.generation, Some(message)).await {
                tracing::warn!(error = %e, "cannot record the projector's error");
            }
        }
        self.publish(|s| {
            s.state = ProjectorState::Stopped;
            s.error = error;
        });
        reason
    }

    async fn run_inner(&mut self) -> DropReason {
        let manifest = self.handler.manifest().clone();
        let filter = manifest.filter();
        let batch_size = manifest.batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as usize;
        let mut feed = self.store.feed();
        let mut context = match self.open_context() {
            Ok(context) => context,
            Err(error) => return DropReason::Store(error.to_string()),
        };
        if self.generation.last_error.is_some() {
            let _ = self.store.set_error(&self.generation, None).await;
        }
        // `stored` is the checkpoint in the store; `scanned` may run ahead of it over events
        // the projection does not subscribe to.
        let mut stored = self.generation.checkpoint;
        let mut scanned = stored;
        // After a failed batch, go one event at a time up to its end to name the failing event
        // and keep the effect of the good ones before it.
        let mut careful_until: Position = 0;
        let mut last_flush = Instant::now();
        let mut host_backoff = Backoff::new();
        // The event failing in careful mode, and the attempts made at it.
        let mut failing: (Position, u32) = (0, 0);
        let mut failure_backoff = Backoff::new();
        let mut last_redrive = Instant::now();
        loop {
            if self.stopping() {
                self.flush_checkpoint(stored, scanned).await;
                return DropReason::Shutdown;
            }
            if last_redrive.elapsed() >= REDRIVE_POLL && scanned >= careful_until {
                last_redrive = Instant::now();
                context = match self.redrive(context, stored).await {
                    Ok(context) => context,
                    Err(reason) => return reason,
                };
            }
            let limit = if scanned < careful_until {
                1
            } else {
                batch_size
            };
            let mut backoff = Backoff::new();
            let page = loop {
                match self.store.read_all(scanned, limit, &filter).await {
                    Ok(page) => break page,
                    Err(error) => {
                        if !self.pause(&mut backoff, "read events", &error).await {
                            return DropReason::Shutdown;
                        }
                    }
                }
            };
            self.publish(|s| {
                s.head = s.head.max(page.scanned_to);
                if s.state == ProjectorState::Starting {
                    s.state = ProjectorState::Replaying;
                }
            });
            if page.scanned_to == scanned {
                if scanned > stored && last_flush.elapsed() >= IDLE_CHECKPOINT_INTERVAL {
                    stored = self.flush_checkpoint(stored, scanned).await;
                    last_flush = Instant::now();
                }
                context.release_cache();
                if let Some(reason) = self.at_head(&manifest, scanned, &mut feed).await {
                    self.flush_checkpoint(stored, scanned).await;
                    return reason;
                }
                continue;
            }
            let Page { events, scanned_to } = page;
            if events.is_empty() {
                scanned = scanned_to;
                if scanned - stored >= IDLE_CHECKPOINT_DISTANCE {
                    match self.commit(&mut context, stored, scanned).await {
                        Ok(()) => stored = scanned,
                        Err(reason) => return reason,
                    }
                }
                continue;
            }
            let count = events.len();
            let single = match events.as_slice() {
                [event] => Some(FailedEvent::of(event)),
                _ => None,
            };
            let started = Instant::now();
            let (returned, result) = match self.handle(events, context).await {
                Ok(outcome) => outcome,
                Err(reason) => return reason,
            };
            context = returned;
            match result {
                Ok(()) => match self.commit(&mut context, stored, scanned_to).await {
                    Ok(()) => {
                        metrics::global().batch(&manifest.name, count as u64, started.elapsed());
                        stored = scanned_to;
                        scanned = scanned_to;
                        host_backoff = Backoff::new();
                        self.publish(|s| {
                            s.checkpoint = scanned_to;
                            s.handled += count as u64;
                        });
                    }
                    Err(reason) => return reason,
                },
                Err(failure) if failure.is_transient() => {
                    metrics::global().error(&manifest.name);
                    context.discard();
                    tracing::warn!(projection = %manifest.name, %failure, "batch failed on the host side; retrying it");
                    if self.stopping() {
                        return DropReason::Shutdown;
                    }
                    host_backoff.wait().await;
                }
                Err(failure) => {
                    metrics::global().error(&manifest.name);
                    context.discard();
                    let Some(event) = single else {
                        tracing::warn!(projection = %manifest.name, %failure, "batch failed; retrying it one event at a time");
                        careful_until = scanned_to;
                        continue;
                    };
                    let position = event.position;
                    failing = match failing {
                        (p, n) if p == position => (p, n + 1),
                        _ => {
                            failure_backoff = Backoff::new();
                            (position, 1)
                        }
                    };
                    if failing.1 < self.policy.attempts {
                        tracing::warn!(projection = %manifest.name, position, attempt = failing.1, attempts = self.policy.attempts, %failure, "event failed; trying it again");
                        failure_backoff.wait().await;
                        if self.stopping() {
                            return DropReason::Shutdown;
                        }
                        continue;
                    }
                    match self.policy.on_failure {
                        OnFailure::Stop => {
                            return DropReason::Failed {
                                projection: manifest.name.clone(),
                                position,
                                failure,
                            };
                        }
                        OnFailure::Skip => {
                            if !self.dead_letter(event, failing.1, &failure).await {
                                return DropReason::Shutdown;
                            }
                            match self.commit(&mut context, stored, scanned_to).await {
                                Ok(()) => {
                                    stored = scanned_to;
                                    scanned = scanned_to;
                                    self.publish(|s| s.checkpoint = scanned_to);
                                }
                                Err(reason) => return reason,
                            }
                        }
                    }
                }
            }
        }
    }

    /// Re-drive the generation's dead letters an operator asked for, in position order, with the
    /// code running now: each one's writes commit together with the deletion of its dead letter
    /// (the checkpoint stays at `at`), so it is applied exactly once. One that fails again stays
    /// a dead letter with the new error and one more attempt. Runs at a batch boundary.
    async fn redrive(
        &mut self,
        mut context: BatchContext,
        at: Position,
    ) -> Result<BatchContext, DropReason> {
        let letters = match self
            .store
            .dead_letters(Some(&self.generation.projection))
            .await
        {
            Ok(letters) => letters,
            Err(error) => {
                tracing::warn!(projection = %self.generation.projection, %error, "cannot read dead letters; trying again later");
                return Ok(context);
            }
        };
        let wanted = letters
            .into_iter()
            .filter(|l| l.generation == self.generation.number && l.retry_requested);
        for mut letter in wanted {
            let page = match self
                .store
                .read_all(letter.position - 1, 1, &EventFilter::default())
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(projection = %letter.projection, %error, "cannot read a dead letter's event; trying again later");
                    return Ok(context);
                }
            };
            let error: String = match page
                .events
                .into_iter()
                .find(|e| e.position == letter.position)
            {
                None => format!("event {} is not in the log", letter.position),
                Some(event) => {
                    let (returned, result) = self.handle(vec![event], context).await?;
                    context = returned;
                    match result {
                        Ok(()) => {
                            let mut writes = context.take_writes();
                            writes.resolved_dead_letters.push(letter.position);
                            self.commit_writes(&mut context, writes, at, at).await?;
                            metrics::global().batch(&letter.projection, 1, Duration::ZERO);
                            tracing::info!(projection = %letter.projection, generation = letter.generation, position = letter.position, "dead letter re-driven");
                            continue;
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
            tracing::warn!(projection = %letter.projection, position = letter.position, %error, "re-driven dead letter failed again");
            letter.error = error;
            letter.attempts += 1;
            letter.retry_requested = false;
            letter.at_ms = crate::domain::time::now_millis();
            if let Err(error) = self.store.record_dead_letter(&letter).await {
                tracing::warn!(projection = %letter.projection, %error, "cannot record the failed re-drive");
            }
        }
        Ok(context)
    }

    /// Record a skipped event, retrying store failures; false when shutting down.
    async fn dead_letter(
        &self,
        event: FailedEvent,
        attempts: u32,
        failure: &HandleFailure,
    ) -> bool {
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
        let mut backoff = Backoff::new();
        while let Err(error) = self.store.record_dead_letter(&letter).await {
            if !self
                .pause(&mut backoff, "record a dead letter", &error)
                .await
            {
                return false;
            }
        }
        metrics::global().dead_letter(&letter.projection);
        tracing::warn!(projection = %letter.projection, generation = letter.generation, position = letter.position, event_type = %letter.event_type, error = %letter.error, "event skipped after {attempts} attempts: recorded as a dead letter");
        true
    }

    fn open_context(&self) -> Result<BatchContext, StoreError> {
        let reader = self.store.reader(&self.generation)?;
        Ok(BatchContext::new(self.handler.manifest(), reader))
    }

    /// Run the handler off the async threads. If the handler's task itself fails (a panic in
    /// the host), its context is lost with it: a fresh one is opened, and the batch fails as a
    /// host failure so it is retried.
    async fn handle(
        &self,
        events: Vec<RecordedEvent>,
        context: BatchContext,
    ) -> Result<(BatchContext, Result<(), HandleFailure>), DropReason> {
        let handler = Arc::clone(&self.handler);
        let first = events.first().map(|e| e.position).unwrap_or_default();
        match tokio::task::spawn_blocking(move || handler.handle(&events, context)).await {
            Ok(outcome) => Ok(outcome),
            Err(task) => {
                let context = self
                    .open_context()
                    .map_err(|e| DropReason::Store(e.to_string()))?;
                let failure =
                    HandleFailure::Host(format!("handler task failed at position {first}: {task}"));
                Ok((context, Err(failure)))
            }
        }
    }

    /// Commit the context's writes and move the checkpoint from `from` to `to`, retrying store
    /// failures. A moved checkpoint stops the projector.
    async fn commit(
        &self,
        context: &mut BatchContext,
        from: Position,
        to: Position,
    ) -> Result<(), DropReason> {
        let writes = context.take_writes();
        self.commit_writes(context, writes, from, to).await
    }

    /// Commit writes taken from the context (see [`Self::commit`]).
    async fn commit_writes(
        &self,
        context: &mut BatchContext,
        writes: crate::store::BatchWrites,
        from: Position,
        to: Position,
    ) -> Result<(), DropReason> {
        let mut backoff = Backoff::new();
        loop {
            match self
                .store
                .commit(&self.generation, writes.clone(), from, to)
                .await
            {
                Ok(()) => return Ok(()),
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

    /// Persist a checkpoint that ran ahead over unsubscribed events, best effort; returns the
    /// checkpoint now stored.
    async fn flush_checkpoint(&self, stored: Position, scanned: Position) -> Position {
        if scanned > stored
            && self
                .store
                .commit(&self.generation, Default::default(), stored, scanned)
                .await
                .is_ok()
        {
            return scanned;
        }
        stored
    }

    /// Caught up: activate a building generation, then wait for the feed to ring.
    async fn at_head(
        &mut self,
        manifest: &crate::domain::Manifest,
        scanned: Position,
        feed: &mut watch::Receiver<Position>,
    ) -> Option<DropReason> {
        if self.generation.state == GenerationState::Building {
            let generation = self.generation.clone();
            let mut backoff = Backoff::new();
            while let Err(error) = self
                .store
                .activate(&generation, GenerationState::Retired)
                .await
            {
                if !self.pause(&mut backoff, "activate", &error).await {
                    return Some(DropReason::Shutdown);
                }
            }
            self.generation.state = GenerationState::Active;
            tracing::info!(projection = %manifest.name, generation = generation.number, checkpoint = scanned, "generation caught up and is now active");
        }
        let generation_state = self.generation.state;
        self.publish(|s| {
            s.state = ProjectorState::Live;
            s.checkpoint = scanned;
            s.generation_state = generation_state;
        });
        loop {
            if *feed.borrow_and_update() > scanned {
                return None;
            }
            tokio::select! {
                changed = feed.changed() => {
                    if changed.is_err() {
                        return Some(DropReason::Shutdown);
                    }
                }
                _ = self.shutdown.changed() => return Some(DropReason::Shutdown),
                // Back to the loop now and then, to pick up dead letters to re-drive.
                _ = tokio::time::sleep(REDRIVE_POLL) => return None,
            }
        }
    }

    /// Log a failed store call and wait before the next try; false when shutting down.
    async fn pause(&self, backoff: &mut Backoff, what: &str, error: &StoreError) -> bool {
        tracing::warn!(projection = %self.generation.projection, %error, "{what} failed; retrying");
        if self.stopping() {
            return false;
        }
        backoff.wait().await;
        !self.stopping()
    }
}

/// What a dead letter records of the event it stands for.
struct FailedEvent {
    position: Position,
    id: String,
    event_type: String,
    aggregate_id: String,
}

impl FailedEvent {
    fn of(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
        }
    }
}

/// Exponential backoff between retries of a store call, capped at [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(50))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}
