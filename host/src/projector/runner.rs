//! One projector's loop: read a page of the log after the cursor, fold it through the handler,
//! commit its writes with the checkpoint, and at the head wait for the change feed. The pieces
//! live beside it: the cursor ([`super::cursor`]), the failure policy ([`super::failure`]) and
//! dead-letter re-drive ([`super::redrive`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cursor::Cursor;
use super::failure::{FailedEvent, Failures, Verdict};
use super::{
    BatchContext, DEFAULT_BATCH_SIZE, DropReason, HandleFailure, Handler, ProjectorState,
    ProjectorStatus,
};
use crate::domain::{
    EventFilter, FailurePolicy, Generation, GenerationState, Manifest, Position, RecordedEvent,
};
use crate::metrics;
use crate::store::{Checkpoints, DeadLetters, EventLog, Generations, Page, Store, StoreError};

/// Most events read and committed together: a page is handed to the handler in calls of the
/// manifest's batch size, and their writes commit in one transaction (fewer commits, and a
/// document written by many events of the page written once).
pub(super) const COMMIT_GROUP: usize = 5_000;
/// Bytes of events (payloads and metadata) a group aims at, counted by the largest event of the
/// page before: a log of large events is read in smaller groups, never smaller than a batch.
const GROUP_BYTES: usize = 16 * 1024 * 1024;

/// How often the loop looks for dead letters an operator asked to re-drive.
pub(super) const REDRIVE_POLL: Duration = Duration::from_secs(1);

/// The store ports a projector uses, and nothing else of the store.
#[derive(Clone)]
pub struct ProjectorPorts {
    /// Reads the log and rings at appends.
    pub log: Arc<dyn EventLog>,
    /// Commits batches with their checkpoint; reads the generation's documents.
    pub checkpoints: Arc<dyn Checkpoints>,
    /// Activates the generation when it catches up; records the error it stopped on.
    pub generations: Arc<dyn Generations>,
    /// Records skipped events and finds those to re-drive.
    pub dead_letters: Arc<dyn DeadLetters>,
}

impl ProjectorPorts {
    /// The ports of one store.
    pub fn of(store: &Arc<dyn Store>) -> Self {
        Self {
            log: store.clone(),
            checkpoints: store.clone(),
            generations: store.clone(),
            dead_letters: store.clone(),
        }
    }
}

/// One projection generation's loop.
pub struct Projector {
    pub(super) ports: ProjectorPorts,
    handler: Arc<dyn Handler>,
    pub(super) generation: Generation,
    status: watch::Sender<ProjectorStatus>,
    pub(super) shutdown: watch::Receiver<bool>,
    policy: FailurePolicy,
}

/// The loop's state that outlives one batch.
pub(super) struct Run {
    manifest: Manifest,
    filter: EventFilter,
    batch_size: usize,
    /// Events to read at once while behind (see [`COMMIT_GROUP`]); a batch until a page has
    /// shown how large the events are.
    group: usize,
    feed: watch::Receiver<Position>,
    pub(super) cursor: Cursor,
    failures: Failures,
    pub(super) last_redrive: Instant,
    /// The last group's commit, while it runs beside the handling of the next group.
    pub(super) in_flight: Option<InFlight>,
    /// The next page's read, started while the page before it is handled.
    ahead: Option<ReadAhead>,
}

/// The read of the page after a group, started when the group's handling starts (while
/// catching up), so that the log is read while the handler works. It is used only for the very
/// read the loop then makes (the same first position and limit; the filter is the run's): a
/// page the cursor went back from, or read with another limit, is dropped unread.
struct ReadAhead {
    after: Position,
    limit: usize,
    task: tokio::task::JoinHandle<Result<Page, StoreError>>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a commit comes to: landed, refused (the projection's failure), or the projector stops.
type CommitOutcome = Result<Result<(), HandleFailure>, DropReason>;

/// A group's commit running on a task of its own while the next group is read and handled, so
/// the store's work and the handler's share the cores. Its writes are the group's alone (the
/// context hands them over and keeps the documents as clean cache), and it lands before anything
/// else is committed: the next group's commit, a checkpoint flush, a dead letter, a re-drive or
/// the generation's activation. When it does not land, what was handled since is dropped with
/// the context, and the log is read again from the checkpoint that stayed.
pub(super) struct InFlight {
    /// The commit's outcome, and when it came.
    task: tokio::task::JoinHandle<(CommitOutcome, Instant)>,
    /// The checkpoint it moves to.
    to: Position,
    /// The end of the page it came from (a failed group is read again a batch at a time up
    /// to there).
    until: Position,
    /// Events it holds the writes of, and when their page started being handled.
    handled: usize,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Only when the projector's own task is dropped (its loop settles every commit before
        // it ends): the commit goes as a dropped future would, and a transaction the store
        // already has completes or not.
        self.task.abort();
    }
}

impl Projector {
    /// A projector for a generation; `shutdown` turning true stops it at a batch boundary.
    pub fn new(
        ports: ProjectorPorts,
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
                ports,
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

    pub(super) fn name(&self) -> &str {
        &self.generation.projection
    }

    pub(super) fn publish(&self, f: impl FnOnce(&mut ProjectorStatus)) {
        self.status.send_modify(f);
    }

    pub(super) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Run until shut down or stopped by a failure.
    pub async fn run(mut self) -> DropReason {
        let reason = match self.run_loop().await {
            Err(reason) => reason,
            Ok(never) => match never {},
        };
        let error = match &reason {
            DropReason::Shutdown | DropReason::Superseded(_) => None,
            other => Some(other.to_string()),
        };
        if let Some(message) = &error {
            tracing::error!(projection = %self.generation.projection, generation = self.generation.number, error = %message, "projector stopped");
            if let Err(e) = self
                .ports
                .generations
                .set_error(&self.generation, Some(message))
                .await
            {
                tracing::warn!(error = %e, "cannot record the projector's error");
            }
        }
        self.publish(|s| {
            s.state = ProjectorState::Stopped;
            s.error = error;
        });
        reason
    }

    /// The loop; it ends only with the reason it stopped.
    async fn run_loop(&mut self) -> Result<Infallible, DropReason> {
        let manifest = self.handler.manifest().clone();
        let mut run = Run {
            filter: self.handler.filter(),
            batch_size: manifest.batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as usize,
            // A test holding commits at a position wants them mid-replay: a batch at a time.
            group: 0,
            feed: self.ports.log.feed(),
            cursor: Cursor::at(self.generation.checkpoint),
            failures: Failures::new(self.policy),
            last_redrive: Instant::now(),
            in_flight: None,
            ahead: None,
            manifest,
        };
        let mut context = self
            .open_context()
            .map_err(|error| DropReason::Store(error.to_string()))?;
        if self.generation.last_error.is_some() {
            let _ = self
                .ports
                .generations
                .set_error(&self.generation, None)
                .await;
        }
        loop {
            context = match self.turn(context, &mut run).await {
                Ok(context) => context,
                Err(reason) => {
                    // A commit still running lands, or not, before the projector is gone: the
                    // projector that replaces it starts from the checkpoint it leaves.
                    if let Some(mut flight) = run.in_flight.take() {
                        let _ = (&mut flight.task).await;
                    }
                    return Err(reason);
                }
            };
        }
    }

    /// One turn of the loop: a page read and acted on, or the stop.
    async fn turn(
        &mut self,
        mut context: BatchContext,
        run: &mut Run,
    ) -> Result<BatchContext, DropReason> {
        if self.stopping() {
            self.settle(&mut context, run).await?;
            self.flush_checkpoint(&mut run.cursor).await;
            return Err(DropReason::Shutdown);
        }
        self.confirm_flush(&mut context, &mut run.cursor).await?;
        context = self.redrive_due(context, run).await?;
        let page = self.read_page(run).await?;
        self.on_page(page, context, run).await
    }

    /// The next page after the cursor, retrying store failures: the one read ahead when it is
    /// that page.
    async fn read_page(&self, run: &mut Run) -> Result<Page, DropReason> {
        let limit = run.cursor.limit(run.batch_size, run.group);
        let ahead = run
            .ahead
            .take()
            .filter(|ahead| ahead.after == run.cursor.scanned && ahead.limit == limit);
        let read = match ahead {
            // A failed read ahead is made again below, retried as any read.
            Some(mut ahead) => match (&mut ahead.task).await {
                Ok(Ok(page)) => Some(page),
                Ok(Err(error)) => {
                    tracing::debug!(projection = %run.manifest.name, %error, "reading ahead failed; reading again");
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let page = match read {
            Some(page) => page,
            None => {
                self.read_retrying(run.cursor.scanned, limit, &run.filter)
                    .await?
            }
        };
        self.publish(|s| {
            s.head = s.head.max(page.scanned_to);
            if s.state == ProjectorState::Starting {
                s.state = ProjectorState::Replaying;
            }
        });
        Ok(page)
    }

    /// The page of at most `limit` events after `after`, retrying store failures until the
    /// projector stops.
    async fn read_retrying(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Page, DropReason> {
        let mut backoff = super::backoff::Backoff::new();
        loop {
            match self.ports.log.read_all(after, limit, filter).await {
                Ok(page) => return Ok(page),
                Err(error) => {
                    if !self.pause(&mut backoff, "read events", &error).await {
                        return Err(DropReason::Shutdown);
                    }
                }
            }
        }
    }

    /// Act on a page: nothing new (the head), a stretch without matching events, or events to
    /// fold.
    async fn on_page(
        &mut self,
        page: Page,
        mut context: BatchContext,
        run: &mut Run,
    ) -> Result<BatchContext, DropReason> {
        let head = page.scanned_to == run.cursor.scanned;
        if (head || page.events.is_empty()) && !self.settle(&mut context, run).await? {
            // The group before did not land: the log is read again from the checkpoint.
            return Ok(context);
        }
        if head {
            if run.cursor.flush_due() {
                self.flush_checkpoint(&mut run.cursor).await;
            }
            context.release_cache();
            if let Some(reason) = self.at_head(run).await {
                self.flush_checkpoint(&mut run.cursor).await;
                return Err(reason);
            }
            return Ok(context);
        }
        let Page { events, scanned_to } = page;
        if events.is_empty() {
            if run.cursor.passed_over(scanned_to) {
                let (from, to) = (run.cursor.stored, run.cursor.scanned);
                if let Err(refused) = self.commit(&mut context, from, to).await? {
                    // Only a checkpoint moves here: a store that refuses it is broken.
                    return Err(DropReason::Store(refused.to_string()));
                }
                run.cursor.committed(to);
            }
            return Ok(context);
        }
        self.fold(events, scanned_to, context, run).await
    }

    /// Fold a page of events, in calls of at most the manifest's batch size, and commit them
    /// together with the checkpoint at `scanned_to`, or apply the failure policy. A page whose
    /// writes grow past a share of the batch limits is committed early, up to the last event
    /// handled; the rest is read again.
    async fn fold(
        &mut self,
        events: Vec<RecordedEvent>,
        scanned_to: Position,
        mut context: BatchContext,
        run: &mut Run,
    ) -> Result<BatchContext, DropReason> {
        let single = match events.as_slice() {
            [event] => Some(FailedEvent::of(event)),
            _ => None,
        };
        let grouped = events.len() > run.batch_size;
        // The next page grows past a batch once this one shows its events are small: the
        // largest of them decides. A test holding commits at a position wants them mid-replay:
        // a batch at a time.
        let largest = events
            .iter()
            .map(|e| e.data.len() + e.metadata.len())
            .max()
            .unwrap_or(0);
        run.group = match super::commit::holding_for_test() {
            true => 0,
            false => (GROUP_BYTES / largest.max(1)).min(COMMIT_GROUP),
        };
        if grouped && !self.stopping() {
            // Catching up: the page after this one is read while this one is handled.
            let (log, filter) = (Arc::clone(&self.ports.log), run.filter.clone());
            let limit = run
                .cursor
                .limit_after(scanned_to, run.batch_size, run.group);
            run.ahead = Some(ReadAhead {
                after: scanned_to,
                limit,
                task: tokio::spawn(async move { log.read_all(scanned_to, limit, &filter).await }),
            });
        }
        let started = Instant::now();
        let events = Arc::new(events);
        let (mut handled, mut to) = (0, scanned_to);
        let mut result = Ok(());
        while handled < events.len() {
            let end = (handled + run.batch_size).min(events.len());
            let outcome = self
                .handle(Arc::clone(&events), handled..end, context)
                .await?;
            context = outcome.0;
            result = outcome.1;
            handled = end;
            if result.is_err() {
                break;
            }
            context.end_call(events[end - 1].position);
            if handled < events.len() && (context.nearly_full() || self.stopping()) {
                to = events[handled - 1].position;
                break;
            }
        }
        if !self.settle(&mut context, run).await? {
            // The group before did not land, and what this one handled built on it.
            return Ok(context);
        }
        if result.is_ok() && grouped && !self.stopping() && !super::commit::holding_for_test() {
            // Committed while the next group is handled; read on from `to`.
            let writes = context.take_writes();
            let commit = self.committer().commit(writes, run.cursor.stored, to);
            run.in_flight = Some(InFlight {
                task: tokio::spawn(async move { (commit.await, Instant::now()) }),
                to,
                until: scanned_to,
                handled,
                started,
            });
            run.cursor.scanned = to;
            return Ok(context);
        }
        if result.is_ok() {
            result = self.commit(&mut context, run.cursor.stored, to).await?;
        }
        match result {
            Ok(()) => self.landed(run, to, handled, started.elapsed()),
            Err(failure) => {
                metrics::global().error(&run.manifest.name);
                context.discard();
                if grouped && !failure.is_transient() {
                    // Read again a batch at a time: the failure is met in a batch of its own,
                    // and the batches before it commit.
                    tracing::warn!(projection = %run.manifest.name, %failure, "a group of batches failed; reading it again a batch at a time");
                    run.cursor.go_by_batches_until(scanned_to);
                } else {
                    self.failed(failure, single, scanned_to, &mut context, run)
                        .await?;
                }
            }
        }
        Ok(context)
    }

    /// Wait for the group commit in flight, if any. True when it landed or none was in flight;
    /// false when it did not: the context is discarded (it holds the group's writes and what
    /// was handled since) and the cursor goes back to the checkpoint, so the caller drops what
    /// it read or handled meanwhile. A group the store refused is then read again a batch at a
    /// time, as a group that fails in its handler is.
    pub(super) async fn settle(
        &mut self,
        context: &mut BatchContext,
        run: &mut Run,
    ) -> Result<bool, DropReason> {
        let Some(mut flight) = run.in_flight.take() else {
            return Ok(true);
        };
        let (outcome, ended) = match (&mut flight.task).await {
            Ok(ended) => ended,
            // It may have landed or not: the projector stops, and the one that replaces it
            // reads the checkpoint.
            Err(task) => (
                Err(DropReason::Store(format!(
                    "the commit up to position {} failed: {task}",
                    flight.to
                ))),
                Instant::now(),
            ),
        };
        let failure = match outcome {
            Ok(Ok(())) => {
                let took = ended.duration_since(flight.started);
                self.landed(run, flight.to, flight.handled, took);
                return Ok(true);
            }
            Ok(Err(failure)) => failure,
            Err(reason) => {
                context.discard();
                return Err(reason);
            }
        };
        metrics::global().error(&run.manifest.name);
        context.discard();
        run.cursor.scanned = run.cursor.stored;
        if failure.is_transient() {
            tracing::warn!(projection = %run.manifest.name, %failure, "a group's commit failed on the host side; reading it again");
            if self.stopping() {
                return Err(DropReason::Shutdown);
            }
            run.failures.wait_for_host().await;
        } else {
            tracing::warn!(projection = %run.manifest.name, %failure, "a group's commit was refused; reading it again a batch at a time");
            run.cursor.go_by_batches_until(flight.until);
        }
        Ok(false)
    }

    /// A commit of `handled` events up to `to` landed, `took` after their page started being
    /// handled.
    fn landed(&self, run: &mut Run, to: Position, handled: usize, took: Duration) {
        metrics::global().batch(&run.manifest.name, handled as u64, took);
        run.cursor.committed(to);
        run.failures.batch_committed();
        self.publish(|s| {
            s.checkpoint = to;
            s.handled += handled as u64;
        });
    }

    /// A batch failed: retry it on the host's failure, go carefully through a batch of several
    /// events, and apply the failure policy to a single event.
    async fn failed(
        &mut self,
        failure: HandleFailure,
        single: Option<FailedEvent>,
        scanned_to: Position,
        context: &mut BatchContext,
        run: &mut Run,
    ) -> Result<(), DropReason> {
        let name = &run.manifest.name;
        if failure.is_transient() {
            tracing::warn!(projection = %name, %failure, "batch failed on the host side; retrying it");
            if self.stopping() {
                return Err(DropReason::Shutdown);
            }
            run.failures.wait_for_host().await;
            return Ok(());
        }
        let Some(event) = single else {
            tracing::warn!(projection = %name, %failure, "batch failed; retrying it one event at a time");
            run.cursor.go_carefully_until(scanned_to);
            return Ok(());
        };
        let position = event.position;
        match run.failures.event_failed(position) {
            Verdict::Retry { attempt } => {
                let attempts = run.failures.policy().attempts;
                tracing::warn!(projection = %name, position, attempt, attempts, %failure, "event failed; trying it again");
                run.failures.wait_for_event().await;
                if self.stopping() {
                    return Err(DropReason::Shutdown);
                }
                Ok(())
            }
            Verdict::Stop => Err(DropReason::Failed {
                projection: name.clone(),
                position,
                failure,
            }),
            Verdict::Skip { attempts } => {
                self.skip(
                    context,
                    event,
                    attempts,
                    &failure,
                    run.cursor.stored,
                    scanned_to,
                )
                .await?;
                run.cursor.committed(scanned_to);
                self.publish(|s| s.checkpoint = scanned_to);
                Ok(())
            }
        }
    }

    fn open_context(&self) -> Result<BatchContext, StoreError> {
        let reader = self.ports.checkpoints.reader(&self.generation)?;
        Ok(BatchContext::new(self.handler.manifest(), reader))
    }

    /// Run the handler on `events[range]` off the async threads. If the handler's task itself
    /// fails (a panic in the host), its context is lost with it: a fresh one is opened, and the
    /// batch fails as a host failure so it is retried.
    pub(super) async fn handle(
        &self,
        events: Arc<Vec<RecordedEvent>>,
        range: std::ops::Range<usize>,
        context: BatchContext,
    ) -> Result<(BatchContext, Result<(), HandleFailure>), DropReason> {
        let handler = Arc::clone(&self.handler);
        let first = events
            .get(range.start)
            .map(|e| e.position)
            .unwrap_or_default();
        let last = range.end == events.len();
        let call = move || {
            let (mut context, outcome) = handler.handle(&events[range], context);
            if last {
                // No call of this page follows: an instance kept for one is freed here, on the
                // blocking thread, rather than at the commit.
                drop(context.take_instance());
            }
            (context, outcome)
        };
        match tokio::task::spawn_blocking(call).await {
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

    /// Caught up: activate a building generation, then wait for the feed to ring (or for the
    /// time to look for dead letters to re-drive).
    async fn at_head(&mut self, run: &mut Run) -> Option<DropReason> {
        let scanned = run.cursor.scanned;
        if self.generation.state == GenerationState::Building {
            if let Some(reason) = self.activate().await {
                return Some(reason);
            }
            tracing::info!(projection = %run.manifest.name, generation = self.generation.number, checkpoint = scanned, "generation caught up and is now active");
        }
        let generation_state = self.generation.state;
        self.publish(|s| {
            s.state = ProjectorState::Live;
            s.checkpoint = scanned;
            s.generation_state = generation_state;
        });
        loop {
            if *run.feed.borrow_and_update() > scanned {
                return None;
            }
            tokio::select! {
                changed = run.feed.changed() => {
                    if changed.is_err() {
                        return Some(DropReason::Shutdown);
                    }
                }
                _ = self.shutdown.changed() => return Some(DropReason::Shutdown),
                _ = tokio::time::sleep(REDRIVE_POLL) => return None,
            }
        }
    }

    /// Make the building generation the active one, retrying store failures; a generation the
    /// policy will not activate (abandoned meanwhile, or gone) stops the projector.
    async fn activate(&mut self) -> Option<DropReason> {
        let mut backoff = super::backoff::Backoff::new();
        loop {
            match self
                .ports
                .generations
                .activate(&self.generation, GenerationState::Retired)
                .await
            {
                Ok(()) => break,
                Err(error @ (StoreError::InvalidInput(_) | StoreError::NotFound(_))) => {
                    tracing::info!(projection = %self.generation.projection, generation = self.generation.number, %error, "the generation left building before it caught up; its projector stops");
                    return Some(DropReason::Superseded(error.to_string()));
                }
                Err(error) => {
                    if !self.pause(&mut backoff, "activate", &error).await {
                        return Some(DropReason::Shutdown);
                    }
                }
            }
        }
        self.generation.state = GenerationState::Active;
        None
    }

    /// Log a failed store call and wait before the next try; false when shutting down.
    pub(super) async fn pause(
        &self,
        backoff: &mut super::backoff::Backoff,
        what: &str,
        error: &StoreError,
    ) -> bool {
        tracing::warn!(projection = %self.generation.projection, %error, "{what} failed; retrying");
        if self.stopping() {
            return false;
        }
        backoff.wait().await;
        !self.stopping()
    }
}
