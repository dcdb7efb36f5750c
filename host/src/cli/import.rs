//! `refold import`: an existing history into a store, from JSON Lines or from a MongoDB
//! collection in the seeds' shape.
//!
//! The source is read on one side and committed on the other, in batches: each batch is one
//! transaction of the store, so a crash leaves whole batches, and a second run skips the events
//! it finds stored (see [`crate::store::ImportedEvent`]) and stores the rest.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::sync::mpsc;

use super::StoreArgs;
use crate::domain::json_object::JsonObject;
use crate::domain::{StreamVersion, extjson};
use crate::store::{self, FastMap, ImportBatch, Imported, ImportedEvent};

/// Arguments of `refold import` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A JSON Lines file, one event a line; `-` reads standard input.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    file: Option<PathBuf>,
    /// Read the events from a MongoDB collection instead:
    /// `mongodb://HOST:PORT/DATABASE?replicaSet=NAME`.
    #[arg(long)]
    from: Option<String>,
    /// The collection of `--from` that holds the events.
    #[arg(long, default_value = "events", requires = "from")]
    collection: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Check the whole source (each event's shape, each stream's versions) and store nothing;
    /// the store is not opened.
    #[arg(long)]
    dry_run: bool,
    /// Events per transaction (without it: 20000 on the embedded store, 1000 on MongoDB, the
    /// first few batches smaller so the store starts writing sooner).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: Option<u64>,
}

/// Most events held back, across all streams, waiting for an earlier version of their stream.
const MAX_HELD: usize = 100_000;

/// An event as read, before its stream's order is checked: the version the source gives, if
/// any, and the event (whose `version` is set once its stream's order is known).
pub(super) struct Read_ {
    version: Option<StreamVersion>,
    event: ImportedEvent,
}

/// The text of a number in Extended JSON or plain JSON, as a whole number.
fn whole_number(value: &Value) -> Option<i64> {
    match extjson::to_bson(value).ok()? {
        bson::Bson::Int32(v) => Some(i64::from(v)),
        bson::Bson::Int64(v) => Some(v),
        bson::Bson::Double(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(v as i64),
        _ => None,
    }
}

/// A time given as ISO 8601 text, `{"$date": ...}` or milliseconds since the Unix epoch.
fn time_of(value: &Value) -> Option<i64> {
    match value {
        // The common `...Z` form by a quick parser, any other offset by the full one.
        Value::String(text) => humantime::parse_rfc3339(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .or_else(|| {
                bson::DateTime::parse_rfc3339_str(text)
                    .ok()
                    .map(|d| d.timestamp_millis())
            }),
        Value::Object(_) => match extjson::to_bson(value).ok()? {
            bson::Bson::DateTime(date) => Some(date.timestamp_millis()),
            _ => None,
        },
        _ => whole_number(value),
    }
}

/// A line in the common form, read without building a [`Value`]: see [`quick_event`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickLine {
    #[serde(rename = "aggregateId")]
    aggregate_id: String,
    #[serde(rename = "aggregateType")]
    aggregate_type: String,
    #[serde(rename = "eventType")]
    event_type: String,
    #[serde(rename = "eventData", default, deserialize_with = "some_object")]
    event_data: Option<JsonObject>,
    #[serde(default, deserialize_with = "some_object")]
    metadata: Option<JsonObject>,
    #[serde(default)]
    version: Option<StreamVersion>,
    #[serde(default, deserialize_with = "present")]
    timestamp: Option<String>,
    #[serde(rename = "timestampMs", default, deserialize_with = "present")]
    timestamp_ms: Option<i64>,
    #[serde(rename = "_id", default, deserialize_with = "present")]
    underscore_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    position: Option<serde::de::IgnoredAny>,
}

fn some_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<JsonObject>, D::Error> {
    JsonObject::read(d).map(Some)
}

/// A field given with a value: `null` is left to the slow way, which says what it means.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A line read the quick way, straight from its text: the common form (string ids, a whole
/// version, an ISO `...Z` time or milliseconds, payloads that need no closer look). `None` for
/// anything else, which [`event_of`] reads, with the error that names what is wrong.
fn quick_event(line: &str, origin: &str) -> Option<Read_> {
    let quick: QuickLine = serde_json::from_str(line).ok()?;
    let timestamp_ms = match (&quick.timestamp, quick.timestamp_ms) {
        (Some(text), None) => humantime::parse_rfc3339(text)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())?,
        (None, Some(ms)) => ms,
        _ => return None,
    };
    let id = match (quick.underscore_id, quick.id) {
        (Some(id), None) | (None, Some(id)) => Some(id),
        (None, None) => None,
        (Some(_), Some(_)) => return None,
    };
    if quick
        .version
        .is_some_and(|v| v == 0 || i64::try_from(v).is_err())
    {
        return None;
    }
    Some(Read_ {
        version: quick.version,
        event: ImportedEvent {
            aggregate_id: quick.aggregate_id,
            version: 0,
            id,
            aggregate_type: quick.aggregate_type,
            event_type: quick.event_type,
            timestamp_ms,
            event_data: quick.event_data.unwrap_or_else(JsonObject::empty),
            metadata: quick.metadata.unwrap_or_else(JsonObject::empty),
            origin: origin.to_owned(),
        },
    })
}

/// One event of the source, in the seeds' shape (`aggregateId`, `aggregateType`, `eventType`,
/// `eventData`, `metadata`, `version`, `timestamp`; `_id` or `id`), or the shape
/// `refold append --file` reads with an `aggregateId` (`timestampMs`).
pub(super) fn event_of(value: Value, origin: String) -> anyhow::Result<Read_> {
    read_event(value, origin, false)
}

/// [`event_of`], keeping the payloads as parsed when `keep` (for MongoDB: see [`JsonObject`]).
fn read_event(value: Value, origin: String, keep: bool) -> anyhow::Result<Read_> {
    let Value::Object(mut fields) = value else {
        anyhow::bail!("{origin}: an event is a JSON object");
    };
    let mut take = |name: &str| fields.remove(name);
    let text = |value: Option<Value>, name: &str| -> anyhow::Result<String> {
        match value {
            Some(Value::String(text)) => Ok(text),
            Some(_) => anyhow::bail!("{origin}: `{name}` must be a string"),
            None => anyhow::bail!("{origin}: `{name}` is missing"),
        }
    };
    let aggregate_id = text(take("aggregateId"), "aggregateId")?;
    let aggregate_type = text(take("aggregateType"), "aggregateType")?;
    let event_type = text(take("eventType"), "eventType")?;
    let object = |value: Option<Value>, name: &str| -> anyhow::Result<JsonObject> {
        match value {
            None | Some(Value::Null) => Ok(JsonObject::empty()),
            Some(object @ Value::Object(_)) => if keep {
                JsonObject::keeping(object)
            } else {
                JsonObject::from_value(&object)
            }
            .map_err(|e| {
                anyhow::anyhow!("{origin}: stream `{aggregate_id}`: {event_type}: {name}: {e}")
            }),
            Some(_) => anyhow::bail!("{origin}: `{name}` must be an object"),
        }
    };
    let event_data = object(take("eventData"), "eventData")?;
    let metadata = object(take("metadata"), "metadata")?;
    let version = match take("version") {
        None | Some(Value::Null) => None,
        Some(value) => match whole_number(&value) {
            Some(v) if v >= 1 => Some(v as StreamVersion),
            _ => anyhow::bail!("{origin}: `version` must be a whole number, 1 or more"),
        },
    };
    let timestamp_ms = match (take("timestamp"), take("timestampMs")) {
        (Some(_), Some(_)) => anyhow::bail!("{origin}: give `timestamp` or `timestampMs`, not both"),
        (Some(value), None) => time_of(&value).with_context(|| {
            format!("{origin}: `timestamp` must be ISO 8601 text (`2024-12-19T10:00:00Z`) or {{\"$date\": ...}}")
        })?,
        (None, Some(value)) => whole_number(&value).with_context(|| {
            format!("{origin}: `timestampMs` must be milliseconds since the Unix epoch")
        })?,
        (None, None) => anyhow::bail!("{origin}: the event's time is missing (`timestamp` or `timestampMs`)"),
    };
    let id = match (take("_id"), take("id")) {
        (Some(_), Some(_)) => anyhow::bail!("{origin}: give `_id` or `id`, not both"),
        (Some(Value::String(id)), None) | (None, Some(Value::String(id))) => Some(id),
        (Some(Value::Object(oid)), None) if oid.len() == 1 => match oid.get("$oid") {
            Some(Value::String(hex)) => Some(hex.clone()),
            _ => anyhow::bail!("{origin}: `_id` must be a string or an ObjectId"),
        },
        (None, None) => None,
        _ => anyhow::bail!("{origin}: the event id must be a string or an ObjectId"),
    };
    // A position in the source says nothing here: the store gives the next ones, in order.
    take("position");
    if let Some(unknown) = fields.keys().next() {
        anyhow::bail!("{origin}: unknown field `{unknown}`");
    }
    Ok(Read_ {
        version,
        event: ImportedEvent {
            aggregate_id,
            version: 0,
            id,
            aggregate_type,
            event_type,
            timestamp_ms,
            event_data,
            metadata,
            origin,
        },
    })
}

/// Each stream's versions, checked consecutive from 1 as the source is read. An event that comes
/// before an earlier version of its stream (a source sorted by time, with clocks that differed)
/// is held until that version comes, then released in version order.
#[derive(Default)]
pub(super) struct StreamOrder {
    next: FastMap<String, StreamVersion>,
    held: FastMap<String, BTreeMap<StreamVersion, Read_>>,
    held_count: usize,
    streams: u64,
}

impl StreamOrder {
    /// The events ready for the store after `read`, in order.
    pub(super) fn push(
        &mut self,
        read: Read_,
        ready: &mut Vec<ImportedEvent>,
    ) -> anyhow::Result<()> {
        let next = match self.next.get_mut(&read.event.aggregate_id) {
            Some(next) => next,
            None => {
                self.streams += 1;
                self.next
                    .entry(read.event.aggregate_id.clone())
                    .or_insert(1)
            }
        };
        let version = read.version.unwrap_or(*next);
        if version < *next {
            anyhow::bail!(
                "{}: stream `{}` has version {version} twice",
                read.event.origin,
                read.event.aggregate_id
            );
        }
        if version > *next {
            let held = self
                .held
                .entry(read.event.aggregate_id.clone())
                .or_default();
            if let Some(first) = held.get(&version) {
                anyhow::bail!(
                    "{}: stream `{}` has version {version} twice (also {})",
                    read.event.origin,
                    read.event.aggregate_id,
                    first.event.origin
                );
            }
            anyhow::ensure!(
                self.held_count < MAX_HELD,
                "{}: more than {MAX_HELD} events wait for an earlier version of their stream; \
                 the first is stream `{}` version {version}, which waits for version {}",
                read.event.origin,
                read.event.aggregate_id,
                *next
            );
            held.insert(version, read);
            self.held_count += 1;
            return Ok(());
        }
        *next += 1;
        let stream = read.event.aggregate_id.clone();
        ready.push(imported(read, version));
        // Release what waited for this version.
        if let Some(held) = self.held.get_mut(&stream) {
            let next = self.next.get_mut(&stream).expect("stream seen");
            while let Some(read) = held.remove(next) {
                self.held_count -= 1;
                ready.push(imported(read, *next));
                *next += 1;
            }
            if held.is_empty() {
                self.held.remove(&stream);
            }
        }
        Ok(())
    }

    /// At the end of the source: an error naming the first event that still waits.
    pub(super) fn finish(&self) -> anyhow::Result<()> {
        let waiting = self
            .held
            .iter()
            .filter_map(|(stream, held)| held.iter().next().map(|(v, read)| (stream, *v, read)))
            .min_by(|a, b| a.2.event.origin.cmp(&b.2.event.origin));
        if let Some((stream, version, read)) = waiting {
            let missing = self.next.get(stream).copied().unwrap_or(1);
            anyhow::bail!(
                "{}: stream `{stream}` version {version} waits for version {missing}, which is \
                 missing: a stream's versions must be consecutive from 1",
                read.event.origin
            );
        }
        Ok(())
    }
}

fn imported(read: Read_, version: StreamVersion) -> ImportedEvent {
    ImportedEvent {
        version,
        ..read.event
    }
}

/// The size of each batch in turn. `--batch-size` is every batch's; without it, the first
/// batches are small, so the store starts writing while the source is still being read, and
/// each is twice the one before up to the default size.
#[derive(Clone, Copy)]
struct BatchSizes {
    next: usize,
    most: usize,
}

/// The first batch's size without `--batch-size`.
const FIRST_BATCH: usize = 1000;

impl BatchSizes {
    fn new(given: Option<u64>, default: usize) -> Self {
        match given {
            Some(size) => Self {
                next: size as usize,
                most: size as usize,
            },
            None => Self {
                next: default.min(FIRST_BATCH),
                most: default,
            },
        }
    }

    /// Whether a batch of `len` events is complete; if so, the next one may be larger.
    fn full(&mut self, len: usize) -> bool {
        if len < self.next {
            return false;
        }
        self.next = (self.next * 2).min(self.most);
        true
    }
}

/// What the reader sends the writer: a batch, with how far into the source it is.
struct Batch {
    events: ImportBatch,
    /// Events read into it (the events themselves are dropped on a dry run).
    count: u64,
    /// Bytes or documents of the source read so far.
    done: u64,
}

/// The source's size for the progress bar: bytes of a file, documents of a collection.
enum Size {
    Bytes(u64),
    Events(u64),
    Unknown,
}

/// Read JSON Lines, check each event and its stream's order, and send batches (`keep`: with each
/// payload as parsed, for MongoDB).
fn read_lines(
    input: Box<dyn Read + Send>,
    mut sizes: BatchSizes,
    keep: bool,
    dry_run: bool,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<StreamOrder> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut order = StreamOrder::default();
    let mut batch = Vec::with_capacity(sizes.most);
    let (mut line, mut number, mut bytes) = (String::new(), 0u64, 0u64);
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("line {}: cannot read", number + 1))?;
        if read == 0 {
            break;
        }
        number += 1;
        bytes += read as u64;
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("line {number}");
        let event = match quick_event(&line, &origin).filter(|_| !keep) {
            Some(event) => event,
            None => {
                let value: Value = serde_json::from_str(&line)
                    .with_context(|| format!("{origin}: not a JSON object"))?;
                read_event(value, origin, keep)?
            }
        };
        order.push(event, &mut batch)?;
        if sizes.full(batch.len()) {
            send(&tx, &mut batch, bytes, dry_run)?;
        }
    }
    order.finish()?;
    let last = checked(&mut batch, bytes, dry_run)?.last();
    tx.blocking_send(last)
        .map_err(|_| anyhow::anyhow!("the import stopped"))?;
    Ok(order)
}

/// A batch checked as the store will check it, for the writer (empty on a dry run).
fn checked(batch: &mut Vec<ImportedEvent>, done: u64, dry_run: bool) -> anyhow::Result<Batch> {
    let count = batch.len() as u64;
    let mut events = ImportBatch::new(std::mem::take(batch))?;
    if dry_run {
        events = ImportBatch::default();
    }
    Ok(Batch {
        events,
        count,
        done,
    })
}

impl Batch {
    /// Mark the import's last batch.
    fn last(mut self) -> Self {
        self.events = self.events.last();
        self
    }
}

/// Hand a batch to the writer; an error when the writer has stopped (its error is reported).
fn send(
    tx: &mpsc::Sender<Batch>,
    batch: &mut Vec<ImportedEvent>,
    done: u64,
    dry_run: bool,
) -> anyhow::Result<()> {
    tx.blocking_send(checked(batch, done, dry_run)?)
        .map_err(|_| anyhow::anyhow!("the import stopped"))
}

pub(super) async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mongodb_target = args.store.store.starts_with("mongodb");
    let sizes = BatchSizes::new(args.batch_size, if mongodb_target { 1000 } else { 20_000 });
    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    let dry_run = args.dry_run;
    // MongoDB stores values, not text: the payloads go as parsed from the source.
    let keep = mongodb_target && !dry_run;
    let (size, reader) = match (&args.file, &args.from) {
        (Some(file), _) => {
            let (input, size): (Box<dyn Read + Send>, Size) = if file.as_os_str() == "-" {
                (Box::new(std::io::stdin()), Size::Unknown)
            } else {
                let opened = std::fs::File::open(file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                let length = opened.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(opened), Size::Bytes(length))
            };
            let name = file.display().to_string();
            let reader =
                tokio::task::spawn_blocking(move || read_lines(input, sizes, keep, dry_run, tx));
            (size, Reader::Lines(reader, name))
        }
        (None, Some(uri)) => {
            let (size, reader) =
                mongo_source(uri, &args.collection, sizes, keep, dry_run, tx).await?;
            (size, Reader::Mongo(reader))
        }
        (None, None) => anyhow::bail!("give a JSON Lines file, or --from a MongoDB collection"),
    };
    let target = if dry_run {
        None
    } else {
        Some(store::open(&args.store.store).await?)
    };
    let bar = progress_bar(&size);
    let mut total = Imported::default();
    let mut seen = 0u64;
    let mut failure = None;
    while let Some(batch) = rx.recv().await {
        seen += batch.count;
        if let Some(target) = &target
            && (!batch.events.is_empty() || batch.events.is_last())
        {
            match target.import(batch.events).await {
                Ok(outcome) => total.add(outcome),
                Err(error) => {
                    failure = Some(error.into());
                    break;
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(match size {
            Size::Bytes(_) => batch.done,
            _ => seen,
        });
        bar.set_message(format!(
            "{seen} events, {:.0} events/s",
            seen as f64 / elapsed
        ));
    }
    drop(rx);
    let order = reader.finish().await;
    bar.finish_and_clear();
    let failure = failure.or(order.as_ref().err().map(|e| anyhow::anyhow!("{e:#}")));
    let elapsed = started.elapsed();
    if let Some(error) = failure {
        // What was committed before the error is made durable as the last batch would have
        // made it (an empty last batch); if the store is what failed, this may fail too.
        if let Some(target) = &target
            && total.stored > 0
            && let Err(flush) = target.import(ImportBatch::default().last()).await
        {
            tracing::warn!(error = %flush, "cannot flush the batches imported before the error");
        }
        if total.stored + total.present > 0 {
            eprintln!(
                "{} events were imported before the error ({} stored, {} already present); \
                 fix the source and run the same command again: it continues where it stopped",
                total.stored + total.present,
                total.stored,
                total.present
            );
        }
        return Err(error);
    }
    let streams = order.map(|o| o.streams).unwrap_or_default();
    let rate = seen as f64 / elapsed.as_secs_f64().max(1e-3);
    if dry_run {
        eprintln!("checked {seen} events in {streams} streams: the source can be imported");
        println!(
            "{}",
            serde_json::json!({ "events": seen, "streams": streams, "dryRun": true })
        );
    } else {
        eprintln!(
            "imported {seen} events in {streams} streams ({} stored, {} already present) in \
             {:.1} s, {rate:.0} events/s",
            total.stored,
            total.present,
            elapsed.as_secs_f64()
        );
        println!(
            "{}",
            serde_json::json!({
                "events": seen,
                "streams": streams,
                "stored": total.stored,
                "present": total.present,
                "lastPosition": total.last_position,
                "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The task that reads the source.
enum Reader {
    Lines(tokio::task::JoinHandle<anyhow::Result<StreamOrder>>, String),
    Mongo(tokio::task::JoinHandle<anyhow::Result<StreamOrder>>),
}

impl Reader {
    async fn finish(self) -> anyhow::Result<StreamOrder> {
        match self {
            Self::Lines(task, name) => task
                .await
                .context("the reader panicked")?
                .with_context(|| name.clone()),
            Self::Mongo(task) => task.await.context("the reader panicked")?,
        }
    }
}

fn progress_bar(size: &Size) -> ProgressBar {
    let (bar, template) = match size {
        Size::Bytes(length) => (
            ProgressBar::new(*length),
            "[{bar:40}] {bytes}/{total_bytes} {msg} ETA {eta}",
        ),
        Size::Events(count) => (
            ProgressBar::new(*count),
            "[{bar:40}] {pos}/{len} {msg} ETA {eta}",
        ),
        Size::Unknown => (ProgressBar::no_length(), "{spinner} {msg}"),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Read a MongoDB collection in the seeds' shape, in time order (`timestamp`, then `_id`).
#[cfg(feature = "mongodb")]
async fn mongo_source(
    uri: &str,
    collection: &str,
    mut sizes: BatchSizes,
    keep: bool,
    dry_run: bool,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<(Size, tokio::task::JoinHandle<anyhow::Result<StreamOrder>>)> {
    use futures_util::TryStreamExt;

    let client = mongodb::Client::with_uri_str(uri)
        .await
        .with_context(|| format!("--from {uri}: cannot connect"))?;
    let database = client.default_database().with_context(|| {
        format!("--from {uri}: name the database in the URI (mongodb://HOST/DATABASE)")
    })?;
    let source = database.collection::<bson::Document>(collection);
    let count = source
        .estimated_document_count()
        .await
        .with_context(|| format!("--from {uri}: cannot count `{collection}`"))?;
    let mut cursor = source
        .find(bson::doc! {})
        .sort(bson::doc! { "timestamp": 1, "version": 1, "_id": 1 })
        .allow_disk_use(true)
        .batch_size(1000)
        .await
        .with_context(|| format!("--from {uri}: cannot read `{collection}`"))?;
    let collection = collection.to_owned();
    let task = tokio::spawn(async move {
        let read = async {
            let mut order = StreamOrder::default();
            let mut batch = Vec::with_capacity(sizes.most);
            let mut done = 0u64;
            while let Some(document) = cursor
                .try_next()
                .await
                .with_context(|| format!("reading `{collection}`"))?
            {
                done += 1;
                let origin = match document.get("_id") {
                    Some(bson::Bson::ObjectId(oid)) => format!("document {oid}"),
                    Some(bson::Bson::String(id)) => format!("document \"{id}\""),
                    Some(other) => format!("document {other}"),
                    None => format!("document #{done}"),
                };
                let event = read_event(Value::Object(extjson::to_map(&document)), origin, keep)?;
                order.push(event, &mut batch)?;
                if sizes.full(batch.len()) {
                    let full = checked(&mut batch, done, dry_run)?;
                    tx.send(full)
                        .await
                        .map_err(|_| anyhow::anyhow!("the import stopped"))?;
                }
            }
            order.finish()?;
            let last = checked(&mut batch, done, dry_run)?.last();
            tx.send(last)
                .await
                .map_err(|_| anyhow::anyhow!("the import stopped"))?;
            Ok(order)
        };
        read.await
    });
    Ok((Size::Events(count), task))
}

#[cfg(not(feature = "mongodb"))]
async fn mongo_source(
    _uri: &str,
    _collection: &str,
    _sizes: BatchSizes,
    _keep: bool,
    _dry_run: bool,
    _tx: mpsc::Sender<Batch>,
) -> anyhow::Result<(Size, tokio::task::JoinHandle<anyhow::Result<StreamOrder>>)> {
    anyhow::bail!("this build has no MongoDB support")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(stream: &str, version: Option<u64>, line: u64) -> Read_ {
        event_of(
            json!({
                "aggregateId": stream,
                "aggregateType": "Payment",
                "eventType": "PaymentProcessed",
                "version": version,
                "timestampMs": 1_700_000_000_000i64,
            }),
            format!("line {line}"),
        )
        .expect("a well-formed event")
    }

    #[test]
    fn the_seeds_shape_reads_with_its_id_time_and_version() {
        let event = event_of(
            json!({
                "_id": { "$oid": "65a1b2c3d4e5f60718293a4b" },
                "aggregateId": "payment-123",
                "aggregateType": "Payment",
                "eventType": "PaymentProcessed",
                "eventData": { "amount": 100.0, "currency": "EUR" },
                "version": { "$numberLong": "1" },
                "timestamp": "2024-12-19T10:00:00Z",
                "metadata": { "userId": "user-456" },
            }),
            "line 1".into(),
        )
        .expect("seed shape");
        assert_eq!(event.event.id.as_deref(), Some("65a1b2c3d4e5f60718293a4b"));
        assert_eq!(event.version, Some(1));
        assert_eq!(event.event.timestamp_ms, 1_734_602_400_000);
        for (text, ms) in [
            ("2024-12-19T10:00:00.123Z", 1_734_602_400_123),
            ("2024-12-19T12:00:00.123+02:00", 1_734_602_400_123),
            ("2024-12-19T10:00:00.123456Z", 1_734_602_400_123),
        ] {
            assert_eq!(time_of(&json!(text)), Some(ms), "{text}");
        }
        assert_eq!(time_of(&json!("yesterday")), None);
        let unknown = event_of(
            json!({ "aggregateId": "a", "aggregateType": "A", "eventType": "E", "timestampMs": 1, "amount": 3 }),
            "line 9".into(),
        )
        .err()
        .expect("unknown field");
        assert_eq!(unknown.to_string(), "line 9: unknown field `amount`");
        let timeless = event_of(
            json!({ "aggregateId": "a", "aggregateType": "A", "eventType": "E" }),
            "line 4".into(),
        )
        .err()
        .expect("no time");
        assert!(
            timeless
                .to_string()
                .starts_with("line 4: the event's time is missing")
        );
    }

    #[test]
    fn the_quick_way_reads_a_line_as_the_slow_way_does_or_leaves_it_to_it() {
        let slow = |line: &str| {
            let value = serde_json::from_str(line).expect("JSON");
            event_of(value, "line 1".into()).expect("an event")
        };
        for line in [
            r#"{"_id": "e-1", "aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentProcessed", "eventData": {"amount": 100.5, "currency": "EUR", "tags": ["a", "b"]}, "version": 3, "timestamp": "2024-12-19T10:00:00.123Z", "metadata": {"userId": "u\u00e9"}}"#,
            r#"{"id": "e-2", "aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentFailed", "timestampMs": 1734602400000, "position": 17}"#,
            r#"{"aggregateId": "payment-1", "aggregateType": "Payment", "eventType": "PaymentFailed", "timestampMs": 1, "eventData": null, "metadata": {}}"#,
        ] {
            let quick = quick_event(line, "line 1").expect("the quick way");
            let slow = slow(line);
            assert_eq!(
                (quick.version, &quick.event),
                (slow.version, &slow.event),
                "{line}"
            );
        }
        for line in [
            // An ObjectId, an Extended JSON version, a time with an offset, a date in the
            // payload, a field given twice: read the slow way, to the same events.
            r#"{"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "version": {"$numberInt": "2"}, "timestampMs": 1}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestamp": "2024-12-19T12:00:00+02:00"}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "eventData": {"at": {"$date": "2024-12-19T10:00:00Z"}}}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "eventData": {"a": 1, "a": 2}}"#,
        ] {
            assert!(quick_event(line, "line 1").is_none(), "{line}");
            slow(line);
        }
        // A field given as null, and a version past the whole numbers the store keeps: left to
        // the slow way, which refuses them.
        for line in [
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestamp": null, "timestampMs": 1}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "_id": null, "id": "x"}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "_id": null}"#,
            r#"{"aggregateId": "p", "aggregateType": "P", "eventType": "E", "timestampMs": 1, "version": 9223372036854775808}"#,
        ] {
            assert!(quick_event(line, "line 1").is_none(), "{line}");
            let value = serde_json::from_str(line).expect("JSON");
            assert!(event_of(value, "line 1".into()).is_err(), "{line}");
        }
    }

    #[test]
    fn versions_come_out_consecutive_or_the_line_that_breaks_them_is_named() {
        let mut order = StreamOrder::default();
        let mut ready = Vec::new();
        // Version 2 before version 1 (time order with clocks that differed): held, then released.
        order.push(read("a", Some(2), 1), &mut ready).expect("held");
        assert!(ready.is_empty());
        order
            .push(read("a", Some(1), 2), &mut ready)
            .expect("released");
        order
            .push(read("b", None, 3), &mut ready)
            .expect("numbered");
        let got: Vec<(String, u64)> = ready
            .iter()
            .map(|e| (e.aggregate_id.clone(), e.version))
            .collect();
        assert_eq!(got, [("a".into(), 1), ("a".into(), 2), ("b".into(), 1)]);
        order.finish().expect("nothing waits");

        let twice = order
            .push(read("a", Some(2), 4), &mut ready)
            .expect_err("twice");
        assert_eq!(twice.to_string(), "line 4: stream `a` has version 2 twice");
        order.push(read("b", Some(3), 5), &mut ready).expect("held");
        let gap = order.finish().expect_err("a gap");
        assert!(
            gap.to_string()
                .starts_with("line 5: stream `b` version 3 waits for version 2, which is missing"),
            "{gap}"
        );
    }
}
