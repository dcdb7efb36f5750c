//! The host side of the WIT imports (`collections`, `log`) and the conversions across the
//! boundary. Every guest-supplied size is checked before use: ids, documents and updates by the
//! batch context, log lines here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::{WasiCtxView, WasiView};

use super::Limits;
use super::bindings::Projection;
use super::bindings::refold::projection::collections::{
    self, CollectionError, FieldUpdate, FieldValue, UpdateOperator,
};
use super::bindings::refold::projection::log::{self, Level};
use super::bindings::refold::projection::types::{self, ErrorKind};
pub(super) use super::bindings::refold::projection::types::{Event as WitEvent, HandleError};
use super::bindings::upcaster::refold::projection::upcast;
use super::limiter::GuestLimiter;
use super::sandbox::Sandbox;
use crate::domain::RecordedEvent;
use crate::domain::extjson;
use crate::domain::update::{self, Operator};
use crate::projector::{BatchContext, CollectionFailure, HandleFailure};

/// Longest log line kept from a guest; longer ones are cut.
pub(super) const MAX_LOG_BYTES: usize = 4096;
/// Most bytes of the guest's stderr quoted in an error.
const MAX_STDERR_TAIL: usize = 2048;
/// Most log lines one batch may write; the rest are counted and dropped.
const MAX_LOGS_PER_BATCH: u32 = 1000;

/// What a store carries while a guest runs.
pub(super) struct HostState {
    pub(super) context: BatchContext,
    /// Caps memories and tables, and records a refused growth; the store sets it.
    pub(super) limiter: GuestLimiter,
    projection: Arc<str>,
    logs: u32,
    /// The last panic message the guest logged (the Rust SDK logs one before aborting).
    pub(super) panic: Option<String>,
    /// The guest's WASI: no authority, event time, seeded randomness, captured output.
    pub(super) sandbox: Sandbox,
    /// The end of what the guest last wrote to stderr (a Python traceback, ...).
    pub(super) stderr_tail: Option<String>,
    /// The guest's own time against its deadline; the store sets it.
    pub(super) clock: GuestClock,
}

/// The time a guest has used of its deadline in one store: the wall time since the store was
/// made, less the time the host spent waiting on the store for the guest's reads (a slow or
/// failing-over store is the host's problem, never the guest's). The wall time is still capped
/// at [`WALL_FACTOR`] times the budget, and at least [`WALL_FLOOR`]: a guest that reads without
/// end cannot hold its thread for ever by waiting on the store.
pub(super) struct GuestClock {
    budget: Duration,
    started: Instant,
    blocked_before: Duration,
}

/// A call's wall time may be this many times its deadline, waiting on the store included.
const WALL_FACTOR: u32 = 10;
/// ... and at least this long, for store fail-overs under short deadlines.
const WALL_FLOOR: Duration = Duration::from_secs(60);

impl GuestClock {
    /// A clock with `budget` of guest time, starting now.
    pub(super) fn start(budget: Duration, context: &BatchContext) -> Self {
        Self {
            budget,
            started: Instant::now(),
            blocked_before: context.blocked(),
        }
    }

    /// The guest time left (zero once the deadline is passed).
    pub(super) fn left(&self, context: &BatchContext) -> Duration {
        let wall = self.started.elapsed();
        if wall >= (self.budget * WALL_FACTOR).max(WALL_FLOOR) {
            return Duration::ZERO;
        }
        let blocked = context.blocked().saturating_sub(self.blocked_before);
        self.budget.saturating_sub(wall.saturating_sub(blocked))
    }
}

impl HostState {
    /// The state of a guest call; the store sets `limiter` and `clock`.
    pub(super) fn new(context: BatchContext, projection: Arc<str>) -> Self {
        Self {
            context,
            limiter: GuestLimiter::default(),
            sandbox: Sandbox::new(&projection),
            projection,
            logs: 0,
            panic: None,
            stderr_tail: None,
            clock: GuestClock {
                budget: Duration::ZERO,
                started: Instant::now(),
                blocked_before: Duration::ZERO,
            },
        }
    }

    /// Get ready for another call in the same store: the deadline, the log count and what the
    /// guest's failures are told with start again.
    pub(super) fn next_call(&mut self, deadline: Duration) {
        self.clock = GuestClock::start(deadline, &self.context);
        self.logs = 0;
        self.panic = None;
        self.stderr_tail = None;
    }

    /// Get ready for the guest to handle this event: logs are tagged with its position, the
    /// clocks read its timestamp and the random streams are seeded for it.
    pub(super) fn enter_event(&mut self, event: &RecordedEvent) {
        self.context.set_position(event.position);
        self.sandbox.enter_event(event.position, event.timestamp_ms);
    }

    /// Write what the guest printed to stdout and stderr since the last call to the log, and
    /// keep the end of stderr for an error message.
    pub(super) fn flush_output(&mut self) {
        let (stdout, stderr) = self.sandbox.drain_output();
        if self.context.keeps_logs() {
            // Kept for a trace, which replays old events: not the host's log.
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                self.context.log("stdout", line);
            }
            for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
                self.context.log("stderr", line);
            }
        } else {
            let (projection, position) = (&*self.projection, self.context.position());
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(target: "refold::guest", projection, position, stream = "stdout", "{line}");
            }
            for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
                tracing::warn!(target: "refold::guest", projection, position, stream = "stderr", "{line}");
            }
        }
        let stderr = stderr.trim();
        if !stderr.is_empty() {
            let mut start = stderr.len().saturating_sub(MAX_STDERR_TAIL);
            while !stderr.is_char_boundary(start) {
                start += 1;
            }
            self.stderr_tail = Some(stderr[start..].to_owned());
        }
    }
}

/// The guest's WASI works on its sandbox alone.
impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.sandbox.ctx()
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Projection::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    upcast::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    super::sandbox::add_to_linker(linker)
}

pub(super) fn to_wit_event(event: &RecordedEvent) -> types::Event {
    types::Event {
        position: event.position,
        id: event.id.clone(),
        aggregate_id: event.aggregate_id.clone(),
        aggregate_type: event.aggregate_type.clone(),
        event_type: event.event_type.clone(),
        version: event.version,
        timestamp_ms: event.timestamp_ms,
        data: event.data.clone(),
        metadata: event.metadata.clone(),
    }
}

pub(super) fn guest_failure(error: HandleError) -> HandleFailure {
    let kind = match error.kind {
        ErrorKind::InvalidEvent => "invalid-event",
        ErrorKind::InvalidState => "invalid-state",
        ErrorKind::Host => "host",
        ErrorKind::Other => "other",
    };
    let message: String = error.message.chars().take(MAX_LOG_BYTES).collect();
    HandleFailure::Guest {
        position: error.position,
        kind: kind.to_owned(),
        message,
    }
}

/// Tell a deadline and a memory cap from other traps; a trap after a logged panic says what
/// panicked. `limiter` is the failed store's: a refused growth ends the call, so a store whose
/// limiter refused one failed on its memory cap, whatever the error says.
pub(super) fn classify_trap(
    error: &wasmtime::Error,
    limits: &Limits,
    limiter: &GuestLimiter,
    panic: Option<&str>,
) -> HandleFailure {
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return HandleFailure::Deadline(limits.deadline);
    }
    if limiter.memory_refused().is_some() {
        return HandleFailure::Memory(limits.memory_bytes);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        // A Rust guest's panic (with `panic = "abort"`) ends in `unreachable`.
        Some(trap @ wasmtime::Trap::UnreachableCodeReached) => match panic {
            Some(panic) => HandleFailure::Trap(format!("{trap}: the guest {panic}")),
            None => HandleFailure::Trap(format!("{trap} (a panic or abort in the guest)")),
        },
        Some(trap) => HandleFailure::Trap(trap.to_string()),
        // Not a trap of the guest's own code: the engine refused something at the boundary
        // (a string that is not UTF-8...). The root cause says what; the outer layers only
        // say where.
        None => HandleFailure::Trap(error.root_cause().to_string()),
    }
}

fn to_wit_error(failure: CollectionFailure) -> CollectionError {
    match failure {
        CollectionFailure::UnknownCollection(m) => CollectionError::UnknownCollection(m),
        CollectionFailure::InvalidId(m) => CollectionError::InvalidId(m),
        CollectionFailure::InvalidDocument(m) => CollectionError::InvalidDocument(m),
        CollectionFailure::InvalidUpdate(m) => CollectionError::InvalidUpdate(m),
        CollectionFailure::LimitExceeded(m) => CollectionError::LimitExceeded(m),
        CollectionFailure::Store(m) => CollectionError::Store(m),
    }
}

impl types::Host for HostState {}

impl upcast::Host for HostState {}

impl collections::Host for HostState {
    fn get(&mut self, collection: String, id: String) -> Result<Option<String>, CollectionError> {
        self.context.get(&collection, &id).map_err(to_wit_error)
    }

    fn put(
        &mut self,
        collection: String,
        id: String,
        document: String,
    ) -> Result<(), CollectionError> {
        self.context
            .put(&collection, &id, &document)
            .map_err(to_wit_error)
    }

    fn delete(&mut self, collection: String, id: String) -> Result<bool, CollectionError> {
        self.context.delete(&collection, &id).map_err(to_wit_error)
    }

    fn update(
        &mut self,
        collection: String,
        id: String,
        update: String,
        upsert: bool,
    ) -> Result<bool, CollectionError> {
        self.context
            .update(&collection, &id, &update, upsert)
            .map_err(to_wit_error)
    }

    fn update_fields(
        &mut self,
        collection: String,
        id: String,
        fields: Vec<FieldUpdate>,
        upsert: bool,
    ) -> Result<bool, CollectionError> {
        let fields = match from_wit_fields(fields) {
            Ok(fields) => fields,
            // A bad collection or id is refused first, as `update` refuses it.
            Err(error) => {
                self.context.check(&collection, &id).map_err(to_wit_error)?;
                return Err(error);
            }
        };
        self.context
            .update_fields(&collection, &id, fields, upsert)
            .map_err(to_wit_error)
    }
}

/// Typed update operators as the host applies them; a value that is no JSON value (a float
/// that is not finite, JSON text that does not parse) is refused, naming the field.
fn from_wit_fields(fields: Vec<FieldUpdate>) -> Result<Vec<update::FieldUpdate>, CollectionError> {
    fields
        .into_iter()
        .map(|field| {
            let operator = match field.operator {
                UpdateOperator::Set => Operator::Set,
                UpdateOperator::Unset => Operator::Unset,
                UpdateOperator::Inc => Operator::Inc,
                UpdateOperator::Push => Operator::Push,
                UpdateOperator::AddToSet => Operator::AddToSet,
                UpdateOperator::Pull => Operator::Pull,
            };
            let value = match field.value {
                FieldValue::Null => Value::Null,
                FieldValue::Boolean(b) => Value::Bool(b),
                FieldValue::Integer(n) => Value::from(n),
                FieldValue::Float(x) => match serde_json::Number::from_f64(x) {
                    Some(x) => Value::Number(x),
                    None => {
                        return Err(CollectionError::InvalidUpdate(format!(
                            "`{}` on `{}`: {x} is not a finite number",
                            operator.name(),
                            shown(&field.path),
                        )));
                    }
                },
                FieldValue::Text(text) => Value::String(text),
                FieldValue::Date(ms) => extjson::date_value(ms),
                FieldValue::Json(text) => serde_json::from_str(&text).map_err(|e| {
                    CollectionError::InvalidUpdate(format!(
                        "`{}` on `{}`: the value is not JSON: {e}",
                        operator.name(),
                        shown(&field.path),
                    ))
                })?,
            };
            Ok(update::FieldUpdate {
                operator,
                path: field.path,
                value,
            })
        })
        .collect()
}

/// A guest-supplied path as an error quotes it: at most 64 characters.
fn shown(path: &str) -> String {
    path.chars().take(64).collect()
}

impl log::Host for HostState {
    fn write(&mut self, level: Level, message: String) {
        self.logs += 1;
        if self.logs > MAX_LOGS_PER_BATCH {
            if self.logs == MAX_LOGS_PER_BATCH + 1 {
                tracing::warn!(projection = %self.projection, "guest log limit reached; further lines of this batch are dropped");
            }
            return;
        }
        let mut cut = message.len().min(MAX_LOG_BYTES);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let message = &message[..cut];
        if level == Level::Error && message.starts_with("panicked at ") {
            self.panic = Some(message.replace('\n', ": "));
        }
        if self.context.keeps_logs() {
            let name = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            self.context.log(name, message);
            return;
        }
        let (projection, position) = (&*self.projection, self.context.position());
        match level {
            Level::Trace => {
                tracing::trace!(target: "refold::guest", projection, position, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "refold::guest", projection, position, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "refold::guest", projection, position, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "refold::guest", projection, position, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "refold::guest", projection, position, "{message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(operator: UpdateOperator, path: &str, value: FieldValue) -> FieldUpdate {
        FieldUpdate {
            operator,
            path: path.into(),
            value,
        }
    }

    /// Typed values become the JSON values the same update as text has (a date the relaxed
    /// Extended JSON of its instant); a float that is not finite, or JSON text that does not
    /// parse, is refused naming the operator and field.
    #[test]
    fn typed_fields_become_the_values_their_json_has() {
        let fields = from_wit_fields(vec![
            field(UpdateOperator::Set, "a", FieldValue::Integer(-3)),
            field(UpdateOperator::Set, "b", FieldValue::Float(2.5)),
            field(UpdateOperator::Set, "c", FieldValue::Text("x\"y".into())),
            field(UpdateOperator::Set, "d", FieldValue::Boolean(true)),
            field(UpdateOperator::Set, "e", FieldValue::Null),
            field(
                UpdateOperator::Push,
                "f",
                FieldValue::Json(r#"{"$date": 5}"#.into()),
            ),
            field(UpdateOperator::AddToSet, "g", FieldValue::Float(12.0)),
            field(
                UpdateOperator::Set,
                "h",
                FieldValue::Date(1_734_602_400_123),
            ),
            field(UpdateOperator::Set, "i", FieldValue::Date(-1)),
        ])
        .expect("fields");
        let values: Vec<_> = fields.iter().map(|f| f.value.clone()).collect();
        assert_eq!(
            values,
            [
                json!(-3),
                json!(2.5),
                json!("x\"y"),
                json!(true),
                json!(null),
                json!({"$date": 5}),
                json!(12.0),
                json!({"$date": "2024-12-19T10:00:00.123Z"}),
                json!({"$date": {"$numberLong": "-1"}}),
            ]
        );
        assert_eq!(fields[5].operator, Operator::Push);
        assert_eq!(
            serde_json::to_string(&fields[6].value).ok().as_deref(),
            Some("12.0")
        );

        let refused = from_wit_fields(vec![field(
            UpdateOperator::Inc,
            "n",
            FieldValue::Float(f64::NAN),
        )]);
        assert!(
            matches!(&refused, Err(CollectionError::InvalidUpdate(m)) if m.contains("`$inc` on `n`") && m.contains("not a finite number")),
            "{refused:?}"
        );
        let refused = from_wit_fields(vec![field(
            UpdateOperator::Set,
            "o",
            FieldValue::Json("{".into()),
        )]);
        assert!(
            matches!(&refused, Err(CollectionError::InvalidUpdate(m)) if m.contains("`$set` on `o`: the value is not JSON")),
            "{refused:?}"
        );
    }
}
