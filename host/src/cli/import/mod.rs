//! `refold import`: an existing history into a store, from JSON Lines or from a MongoDB
//! collection in the seeds' shape.
//!
//! The source is read on one side and committed on the other, in batches: each batch is one
//! transaction of the store, so a crash leaves whole batches, and a second run skips the events
//! it finds stored (see [`crate::store::ImportedEvent`]) and stores the rest.

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
use crate::store::{self, ImportBatch, Imported, ImportedEvent};
pub(super) use event::{StreamOrder, event_of};
use event::{quick_event, read_event};

mod event;

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
    #[cfg_attr(not(feature = "mongodb"), allow(dead_code))]
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
                let event = read_event(
                    Value::Object(crate::domain::extjson::to_map(&document)),
                    origin,
                    keep,
                )?;
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
